//! The node's tiny HTTP/1.1 server for `/metrics`, `/health/live` and `/health/ready`, a
//! matching minimal client, and a Prometheus text-format builder.
//!
//! The server is deliberately small: one accept thread, and one short-lived thread per
//! connection, at most [`MAX_CONNECTIONS`] at once (more are answered `503` from the accept
//! thread) and at most [`MAX_CONNECTIONS_PER_ADDRESS`] from one remote address (more are closed
//! at accept, unanswered: a flood from one address neither fills the slots nor keeps the
//! accept thread busy). Every connection serves exactly one request and closes (`Connection: close`). The
//! request head must arrive within [`REQUEST_TIMEOUT`] in total and fit in [`MAX_HEAD_BYTES`];
//! only `GET` and `HEAD` are served. Bad input gets a status code (`400`, `405`, `408`, `431`),
//! never a panic; a panicking handler gets `500`. Request bodies, headers and keep-alive are
//! ignored: scrapers and probes need none of them.
//!
//! This module does I/O (it is not part of the sans-I/O core). It is a monitoring endpoint, not
//! a general web server: no TLS, no authentication; bind it to a trusted interface.
//!
//! [`HttpServer::shutdown`] stops the accept thread promptly (a flag, then a connection to
//! itself to wake the blocking `accept`) and joins it. Connection threads still running finish
//! on their own within their timeouts.

use std::collections::HashSet;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::slots::{NoSlot, Slots};

/// Most connections served at once; the next one is answered `503` and closed.
pub const MAX_CONNECTIONS: usize = 16;
/// Most connections served at once from one remote address; the next one from there is closed
/// at once, unanswered, so that one address can neither take every slot nor keep the accept
/// thread busy answering it (a probe from elsewhere still gets a slot, and promptly).
pub const MAX_CONNECTIONS_PER_ADDRESS: usize = 4;
/// The whole request head must arrive within this time, or the answer is `408`.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest time writing a response may take.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest accepted request head (request line and headers); longer gets `431`.
pub const MAX_HEAD_BYTES: usize = 8 * 1024;
/// Longest response body [`http_get`] accepts.
pub const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;
/// Content type of the Prometheus text exposition format.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4";
/// Content type of plain text responses.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; charset=utf-8";
/// Content type of JSON responses.
pub const JSON_CONTENT_TYPE: &str = "application/json";

/// After answering, how long to keep reading what the client still sends (see [`linger`]).
const LINGER: Duration = Duration::from_millis(200);
/// The same for a connection refused on the accept thread, which must not stall for long.
const REFUSE_LINGER: Duration = Duration::from_millis(50);
/// Most bytes read and discarded while lingering.
const LINGER_MAX_BYTES: usize = 64 * 1024;
/// How long [`HttpServer::shutdown`] tries to connect to the listener to wake it.
const WAKE_TIMEOUT: Duration = Duration::from_secs(1);
/// Pause after a failed `accept` (e.g. out of file descriptors), so the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);
/// Read buffer size for requests and responses.
const READ_CHUNK_BYTES: usize = 4096;

/// The request handler: gets the request path without the query string.
pub type Handler = Arc<dyn Fn(&str) -> HttpResponse + Send + Sync>;

/// A response to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// The `Content-Type` header.
    pub content_type: &'static str,
    /// The body (not sent for `HEAD`, but its length is).
    pub body: String,
}

impl HttpResponse {
    /// A response with the given parts.
    pub fn new(status: u16, content_type: &'static str, body: impl Into<String>) -> Self {
        HttpResponse {
            status,
            content_type,
            body: body.into(),
        }
    }

    /// `200` with a plain text body.
    pub fn ok_text(body: impl Into<String>) -> Self {
        Self::new(200, TEXT_CONTENT_TYPE, body)
    }

    /// `200` with a JSON body.
    pub fn ok_json(body: impl Into<String>) -> Self {
        Self::new(200, JSON_CONTENT_TYPE, body)
    }

    /// `200` with a Prometheus text exposition body (see [`PromText`]).
    pub fn ok_prometheus(body: impl Into<String>) -> Self {
        Self::new(200, PROMETHEUS_CONTENT_TYPE, body)
    }

    /// `503` with a plain text body: for a readiness check that fails.
    pub fn service_unavailable(body: impl Into<String>) -> Self {
        Self::new(503, TEXT_CONTENT_TYPE, body)
    }

    /// `404`.
    pub fn not_found() -> Self {
        Self::new(404, TEXT_CONTENT_TYPE, "not found\n")
    }

    /// `400`.
    pub fn bad_request() -> Self {
        Self::new(400, TEXT_CONTENT_TYPE, "bad request\n")
    }

    /// `405`; the server adds `Allow: GET, HEAD`.
    pub fn method_not_allowed() -> Self {
        Self::new(405, TEXT_CONTENT_TYPE, "method not allowed\n")
    }

    /// `500`.
    pub fn internal_error() -> Self {
        Self::new(500, TEXT_CONTENT_TYPE, "internal error\n")
    }

    fn timeout() -> Self {
        Self::new(408, TEXT_CONTENT_TYPE, "request timeout\n")
    }

    fn head_too_large() -> Self {
        Self::new(431, TEXT_CONTENT_TYPE, "request header fields too large\n")
    }

    fn overloaded() -> Self {
        Self::new(503, TEXT_CONTENT_TYPE, "too many connections\n")
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

/// The running server. Dropping it shuts it down.
pub struct HttpServer {
    local_addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accept_thread: Mutex<Option<JoinHandle<()>>>,
}

impl fmt::Debug for HttpServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpServer")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl HttpServer {
    /// Binds `addr` (port 0 picks a free port) and serves requests with `handler` on a new
    /// accept thread.
    ///
    /// # Errors
    /// Binding or starting the thread failed.
    pub fn start(addr: SocketAddr, handler: Handler) -> io::Result<HttpServer> {
        let listener = crate::transport::socket::bind_listener(addr).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("binding the http listener on {addr}: {e}"),
            )
        })?;
        let local_addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = Arc::clone(&stop);
        let accept_thread = thread::Builder::new()
            .name("logship-http".to_owned())
            .spawn(move || accept_loop(&listener, &handler, &thread_stop))?;
        Ok(HttpServer {
            local_addr,
            stop,
            accept_thread: Mutex::new(Some(accept_thread)),
        })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting and joins the accept thread; the listening socket is closed when this
    /// returns. Idempotent.
    pub fn shutdown(&self) {
        let Some(accept_thread) = self.accept_thread.lock().take() else {
            return;
        };
        self.stop.store(true, Ordering::SeqCst);
        if !accept_thread.is_finished() {
            if let Err(e) = TcpStream::connect_timeout(&wake_addr(self.local_addr), WAKE_TIMEOUT) {
                // Not joining: the thread exits at the next connection it accepts.
                tracing::warn!(addr = %self.local_addr, error = %e, "cannot wake the http accept thread");
                return;
            }
        }
        if accept_thread.join().is_err() {
            tracing::warn!(addr = %self.local_addr, "the http accept thread panicked");
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Where to connect to reach a listener: loopback when it listens on every interface.
fn wake_addr(local: SocketAddr) -> SocketAddr {
    let ip = match local.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, local.port())
}

fn accept_loop(listener: &TcpListener, handler: &Handler, stop: &AtomicBool) {
    let active = Slots::new(MAX_CONNECTIONS, MAX_CONNECTIONS_PER_ADDRESS);
    for stream in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        match stream {
            Ok(stream) => dispatch(stream, handler, &active),
            Err(e) => {
                tracing::warn!(error = %e, "http accept failed");
                thread::sleep(ACCEPT_ERROR_PAUSE);
            }
        }
    }
}

fn dispatch(stream: TcpStream, handler: &Handler, active: &Arc<Mutex<Slots>>) {
    let Ok(peer) = stream.peer_addr() else {
        return;
    };
    let guard = match Slots::take(active, peer.ip()) {
        Ok(guard) => guard,
        Err(NoSlot::Address) => return,
        Err(NoSlot::Full) => {
            refuse(stream);
            return;
        }
    };
    let handler = Arc::clone(handler);
    let spawned = thread::Builder::new()
        .name("logship-http-conn".to_owned())
        .spawn(move || {
            let _guard = guard;
            serve(stream, &handler);
        });
    // On failure the closure, and with it the guard and the stream, is dropped.
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start an http connection thread");
    }
}

/// Answers `503` without parsing the request, on the accept thread, so it is kept short: the
/// response fits in the socket buffer and the linger is brief.
fn refuse(mut stream: TcpStream) {
    if let Err(e) = stream.set_write_timeout(Some(REFUSE_LINGER)) {
        tracing::debug!(error = %e, "http: refusing a connection failed");
        return;
    }
    if let Err(e) = write_response(&mut stream, &HttpResponse::overloaded(), false) {
        tracing::debug!(error = %e, "http: refusing a connection failed");
        return;
    }
    linger(stream, REFUSE_LINGER);
}

fn serve(mut stream: TcpStream, handler: &Handler) {
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    let (response, head_only) = match read_head(&mut stream, deadline) {
        Ok(head) => respond(&head, handler),
        Err(HeadError::Closed) => return,
        Err(HeadError::Io(e)) => {
            tracing::debug!(error = %e, "http: reading a request failed");
            return;
        }
        Err(HeadError::TimedOut) => (HttpResponse::timeout(), false),
        Err(HeadError::TooLarge) => (HttpResponse::head_too_large(), false),
        Err(HeadError::Truncated) => (HttpResponse::bad_request(), false),
    };
    if let Err(e) = stream.set_write_timeout(Some(WRITE_TIMEOUT)) {
        tracing::debug!(error = %e, "http: setting the write timeout failed");
        return;
    }
    if let Err(e) = write_response(&mut stream, &response, head_only) {
        tracing::debug!(error = %e, "http: writing a response failed");
        return;
    }
    linger(stream, LINGER);
}

enum HeadError {
    /// The client closed without sending anything (a TCP probe, or the shutdown wake-up).
    Closed,
    /// The client closed in the middle of the head.
    Truncated,
    TimedOut,
    TooLarge,
    Io(io::Error),
}

/// Reads until the blank line ending the head; returns the head without it.
fn read_head(stream: &mut TcpStream, deadline: Instant) -> Result<Vec<u8>, HeadError> {
    let mut head = Vec::with_capacity(READ_CHUNK_BYTES);
    let mut chunk = [0u8; READ_CHUNK_BYTES];
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(HeadError::TimedOut);
        }
        stream
            .set_read_timeout(Some(remaining))
            .map_err(HeadError::Io)?;
        let n = match stream.read(&mut chunk) {
            Ok(0) if head.is_empty() => return Err(HeadError::Closed),
            Ok(0) => return Err(HeadError::Truncated),
            Ok(n) => n,
            Err(e) if is_timeout(&e) => return Err(HeadError::TimedOut),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(HeadError::Io(e)),
        };
        let searched = head.len().saturating_sub(3);
        head.extend_from_slice(&chunk[..n]);
        if let Some(end) = find_head_end(&head[searched..]) {
            let end = searched + end;
            if end > MAX_HEAD_BYTES {
                return Err(HeadError::TooLarge);
            }
            head.truncate(end);
            return Ok(head);
        }
        if head.len() >= MAX_HEAD_BYTES {
            return Err(HeadError::TooLarge);
        }
    }
}

/// Where the blank line ending a head starts: `\r\n\r\n`, or `\n\n` from lenient clients.
fn find_head_end(bytes: &[u8]) -> Option<usize> {
    let crlf = bytes.windows(4).position(|w| w == b"\r\n\r\n");
    let lf = bytes.windows(2).position(|w| w == b"\n\n");
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// The response to a complete head, and whether to leave the body out (`HEAD`).
fn respond(head: &[u8], handler: &Handler) -> (HttpResponse, bool) {
    let Some(request) = parse_request_line(head) else {
        return (HttpResponse::bad_request(), false);
    };
    let head_only = match request.method {
        "GET" => false,
        "HEAD" => true,
        _ => return (HttpResponse::method_not_allowed(), false),
    };
    let response = panic::catch_unwind(AssertUnwindSafe(|| handler(request.path)));
    match response {
        Ok(response) => (response, head_only),
        Err(_) => {
            tracing::warn!(path = request.path, "http handler panicked");
            (HttpResponse::internal_error(), head_only)
        }
    }
}

struct RequestLine<'a> {
    method: &'a str,
    path: &'a str,
}

/// `METHOD SP origin-form SP HTTP/1.x`; `None` for anything else.
fn parse_request_line(head: &[u8]) -> Option<RequestLine<'_>> {
    let line_end = head.iter().position(|&b| b == b'\n').unwrap_or(head.len());
    let line = std::str::from_utf8(&head[..line_end]).ok()?;
    let line = line.strip_suffix('\r').unwrap_or(line);
    let mut parts = line.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || !matches!(version, "HTTP/1.0" | "HTTP/1.1") {
        return None;
    }
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return None;
    }
    if !target.starts_with('/') || target.bytes().any(|b| b.is_ascii_control()) {
        return None;
    }
    let path = target.split(['?', '#']).next().unwrap_or(target);
    Some(RequestLine { method, path })
}

/// The fuzzing harness of the HTTP parsers (`logship_replicator::fuzzing::http_parse`):
/// arbitrary bytes as a request head, through the server's own parsing and dispatch, and as a
/// response, through the client's. Never panics on input; the properties below are findings.
///
/// # Panics
/// When a property fails.
#[doc(hidden)]
pub fn fuzz_parsers(data: &[u8]) {
    let head = &data[..find_head_end(data)
        .unwrap_or(data.len())
        .min(MAX_HEAD_BYTES)];
    let handler: Handler = Arc::new(|path: &str| match path {
        "/health/live" => HttpResponse::ok_text("ok"),
        _ => HttpResponse::not_found(),
    });
    let parsed = parse_request_line(head);
    if let Some(r) = &parsed {
        assert!(r.path.starts_with('/'), "path {:?}", r.path);
        assert!(!r.path.bytes().any(|b| b.is_ascii_control()));
        assert!(!r.method.is_empty() && r.method.bytes().all(|b| b.is_ascii_uppercase()));
    }
    let (response, head_only) = respond(head, &handler);
    let allowed: &[u16] = match &parsed {
        None => &[400],
        Some(r) if !matches!(r.method, "GET" | "HEAD") => &[405],
        Some(_) => &[200, 404],
    };
    assert!(
        allowed.contains(&response.status),
        "{} for {head:?}",
        response.status
    );
    assert!(!head_only || parsed.is_some_and(|r| r.method == "HEAD"));
    if let Ok((status, body)) = parse_response(data) {
        assert!(body.len() <= data.len(), "status {status}");
    }
}

fn write_response(
    stream: &mut TcpStream,
    response: &HttpResponse,
    head_only: bool,
) -> io::Result<()> {
    let allow = if response.status == 405 {
        "Allow: GET, HEAD\r\n"
    } else {
        ""
    };
    let head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n{allow}\r\n",
        response.status,
        reason(response.status),
        response.content_type,
        response.body.len(),
    );
    let mut bytes = head.into_bytes();
    if !head_only {
        bytes.extend_from_slice(response.body.as_bytes());
    }
    stream.write_all(&bytes)?;
    stream.flush()
}

/// Half-closes, then reads and discards what the client still sends (for at most `budget`, at
/// most [`LINGER_MAX_BYTES`]) before the socket is dropped: closing a socket with unread bytes
/// resets the connection, and the reset can destroy the response before the client reads it.
fn linger(mut stream: TcpStream, budget: Duration) {
    if stream.shutdown(Shutdown::Write).is_err() {
        return;
    }
    let deadline = Instant::now() + budget;
    let mut chunk = [0u8; READ_CHUNK_BYTES];
    let mut discarded = 0;
    while discarded < LINGER_MAX_BYTES {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => discarded += n,
        }
    }
}

/// Fetches `path` from the server at `addr`; everything (connecting, sending, reading) must
/// finish within `timeout`. Returns the status and the body.
///
/// # Errors
/// `InvalidInput` for a path that is not `/...` without whitespace; `TimedOut` past the
/// deadline; `InvalidData` for a malformed response, a non-UTF-8 body or one over
/// [`MAX_RESPONSE_BYTES`]; `UnexpectedEof` for a body shorter than its `Content-Length`;
/// otherwise the socket's error.
pub fn http_get(addr: SocketAddr, path: &str, timeout: Duration) -> io::Result<(u16, String)> {
    if !path.starts_with('/')
        || path
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad request path {path:?}"),
        ));
    }
    let deadline = Instant::now() + timeout;
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_write_timeout(Some(remaining(deadline)?))?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes())?;
    let mut response = Vec::new();
    let mut chunk = [0u8; READ_CHUNK_BYTES];
    loop {
        stream.set_read_timeout(Some(remaining(deadline)?))?;
        let n = match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if is_timeout(&e) => return Err(timed_out()),
            Err(e) => return Err(e),
        };
        response.extend_from_slice(&chunk[..n]);
        if response.len() > MAX_HEAD_BYTES + MAX_RESPONSE_BYTES {
            return Err(invalid_data("response too large"));
        }
    }
    parse_response(&response)
}

fn remaining(deadline: Instant) -> io::Result<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(timed_out());
    }
    Ok(left)
}

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "http request timed out")
}

fn invalid_data(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

fn parse_response(response: &[u8]) -> io::Result<(u16, String)> {
    let head_end =
        find_head_end(response).ok_or_else(|| invalid_data("response head incomplete"))?;
    let head = std::str::from_utf8(&response[..head_end])
        .map_err(|_| invalid_data("response head not UTF-8"))?;
    let body_start = if response[head_end..].starts_with(b"\r\n\r\n") {
        head_end + 4
    } else {
        head_end + 2
    };
    let mut lines = head.lines();
    let status_line = lines.next().unwrap_or("");
    let mut words = status_line.split(' ');
    let status = match (words.next(), words.next()) {
        (Some(version), Some(code)) if version.starts_with("HTTP/1.") => code.parse::<u16>().ok(),
        _ => None,
    };
    let status = status.ok_or_else(|| invalid_data("malformed response status line"))?;
    let mut body = &response[body_start..];
    if let Some(length) = content_length(lines)? {
        if body.len() < length {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "response body shorter than Content-Length",
            ));
        }
        body = &body[..length];
    }
    if body.len() > MAX_RESPONSE_BYTES {
        return Err(invalid_data("response too large"));
    }
    let body =
        String::from_utf8(body.to_vec()).map_err(|_| invalid_data("response body not UTF-8"))?;
    Ok((status, body))
}

fn content_length<'a>(headers: impl Iterator<Item = &'a str>) -> io::Result<Option<usize>> {
    for header in headers {
        if let Some((name, value)) = header.split_once(':') {
            if name.trim().eq_ignore_ascii_case("content-length") {
                let length = value
                    .trim()
                    .parse()
                    .map_err(|_| invalid_data("malformed Content-Length"))?;
                return Ok(Some(length));
            }
        }
    }
    Ok(None)
}

/// A Prometheus text exposition (format 0.0.4) under construction.
///
/// Call [`family`](Self::family) before a metric's samples and keep each metric's samples
/// together; the format requires it and this builder does not reorder. Metric and label names
/// are code constants and asserted valid; label values and help text are escaped.
#[derive(Debug, Default)]
pub struct PromText {
    out: String,
    families: HashSet<String>,
}

impl PromText {
    /// An empty exposition.
    pub fn new() -> Self {
        Self::default()
    }

    /// Writes the `# HELP` and `# TYPE` lines of metric `name`, once per name.
    ///
    /// # Panics
    /// If `name` is not a valid metric name or `kind` not a Prometheus metric type.
    pub fn family(&mut self, name: &str, help: &str, kind: &str) {
        assert!(is_metric_name(name), "invalid metric name {name:?}");
        assert!(
            matches!(
                kind,
                "gauge" | "counter" | "histogram" | "summary" | "untyped"
            ),
            "invalid metric type {kind:?} for {name}"
        );
        if !self.families.insert(name.to_owned()) {
            return;
        }
        self.out
            .push_str(&format!("# HELP {name} {}\n", escape_help(help)));
        self.out.push_str(&format!("# TYPE {name} {kind}\n"));
    }

    /// Writes one sample: `name{label="value",...} value`.
    ///
    /// # Panics
    /// If `name` or a label name is not valid.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        assert!(is_metric_name(name), "invalid metric name {name:?}");
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (label, label_value)) in labels.iter().enumerate() {
                assert!(
                    is_label_name(label),
                    "invalid label name {label:?} on {name}"
                );
                if i > 0 {
                    self.out.push(',');
                }
                self.out
                    .push_str(&format!("{label}=\"{}\"", escape_label_value(label_value)));
            }
            self.out.push('}');
        }
        self.out.push(' ');
        self.out.push_str(&format_value(value));
        self.out.push('\n');
    }

    /// The exposition text.
    pub fn finish(self) -> String {
        self.out
    }
}

fn is_metric_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_' || b == b':')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
}

fn is_label_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

fn escape_label_value(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn format_value(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_owned()
    } else if value == f64::INFINITY {
        "+Inf".to_owned()
    } else if value == f64::NEG_INFINITY {
        "-Inf".to_owned()
    } else {
        format!("{value}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);
    const METRICS_BODY: &str = "# HELP up Whether the node is up.\n# TYPE up gauge\nup 1\n";

    fn server() -> HttpServer {
        let handler: Handler = Arc::new(|path: &str| match path {
            "/health/live" => HttpResponse::ok_text("ok\n"),
            "/health/ready" => HttpResponse::service_unavailable("not ready\n"),
            "/metrics" => {
                let mut text = PromText::new();
                text.family("up", "Whether the node is up.", "gauge");
                text.sample("up", &[], 1.0);
                HttpResponse::ok_prometheus(text.finish())
            }
            "/panic" => panic!("handler panics on purpose"),
            _ => HttpResponse::not_found(),
        });
        HttpServer::start("127.0.0.1:0".parse().expect("addr"), handler).expect("start server")
    }

    /// Sends `request` as is, half-closes, and returns everything the server answered.
    fn raw(addr: SocketAddr, request: &[u8]) -> String {
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(CLIENT_TIMEOUT))
            .expect("timeout");
        stream.write_all(request).expect("send");
        stream.shutdown(Shutdown::Write).expect("half-close");
        let mut response = Vec::new();
        stream.read_to_end(&mut response).expect("read response");
        String::from_utf8_lossy(&response).into_owned()
    }

    #[test]
    fn get_routes_by_path() {
        let server = server();
        let addr = server.local_addr();
        let cases: &[(&str, u16, &str)] = &[
            ("/health/live", 200, "ok\n"),
            ("/health/live?verbose=1", 200, "ok\n"),
            ("/health/ready", 503, "not ready\n"),
            ("/metrics", 200, METRICS_BODY),
            ("/nope", 404, "not found\n"),
            ("/", 404, "not found\n"),
            ("/panic", 500, "internal error\n"),
        ];
        for &(path, status, body) in cases {
            let got =
                http_get(addr, path, CLIENT_TIMEOUT).unwrap_or_else(|e| panic!("{path}: {e}"));
            assert_eq!(got, (status, body.to_owned()), "{path}");
        }
    }

    #[test]
    fn response_headers() {
        let server = server();
        let request = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
        let response = raw(server.local_addr(), request);
        assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
        let headers = [
            "Content-Type: text/plain; version=0.0.4\r\n",
            "Content-Length: 55\r\n",
            "Connection: close\r\n",
        ];
        for header in headers {
            assert!(response.contains(header), "{header}: {response}");
        }
    }

    /// The status of a raw response, 0 when the server sent nothing.
    fn status_of(response: &str) -> u16 {
        let code = response
            .strip_prefix("HTTP/1.1 ")
            .and_then(|rest| rest.get(..3));
        code.map_or(0, |code| code.parse().expect("numeric status"))
    }

    fn get_status(addr: SocketAddr, path: &str) -> u16 {
        http_get(addr, path, CLIENT_TIMEOUT).expect("get").0
    }

    #[test]
    fn raw_requests() {
        let server = server();
        let addr = server.local_addr();
        let big = format!(
            "GET / HTTP/1.1\r\nX: {}\r\n\r\n",
            "a".repeat(MAX_HEAD_BYTES)
        );
        let cases: &[(&str, &[u8], u16)] = &[
            (
                "POST",
                b"POST /metrics HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi",
                405,
            ),
            ("PUT", b"PUT /metrics HTTP/1.1\r\n\r\n", 405),
            ("HEAD", b"HEAD /health/live HTTP/1.1\r\n\r\n", 200),
            (
                "HTTP/1.0, bare newlines",
                b"GET /health/live HTTP/1.0\n\n",
                200,
            ),
            ("oversized head", big.as_bytes(), 431),
            ("garbage bytes", b"\x00\xff\xfe\x80 garbage\r\n\r\n", 400),
            ("missing version", b"GET /metrics\r\n\r\n", 400),
            ("HTTP/2", b"GET /metrics HTTP/2.0\r\n\r\n", 400),
            (
                "absolute target",
                b"GET http://x/metrics HTTP/1.1\r\n\r\n",
                400,
            ),
            ("double space", b"GET  /metrics HTTP/1.1\r\n\r\n", 400),
            ("lowercase method", b"get /metrics HTTP/1.1\r\n\r\n", 400),
            ("truncated head", b"GET /metrics HTT", 400),
            ("nothing sent", b"", 0),
        ];
        for &(name, request, status) in cases {
            let response = raw(addr, request);
            assert_eq!(status_of(&response), status, "{name}: {response:?}");
        }
        let post = raw(addr, b"POST / HTTP/1.1\r\n\r\n");
        assert!(post.contains("Allow: GET, HEAD\r\n"), "{post}");
        let head = raw(addr, b"HEAD /health/live HTTP/1.1\r\n\r\n");
        let no_body = head.contains("Content-Length: 3\r\n") && head.ends_with("\r\n\r\n");
        assert!(no_body, "{head:?}");
        // Still serving after all that.
        assert_eq!(get_status(addr, "/health/live"), 200);
    }

    #[test]
    fn a_silent_client_does_not_block_others() {
        let server = server();
        let addr = server.local_addr();
        let _silent = TcpStream::connect(addr).expect("connect");
        let started = Instant::now();
        assert_eq!(get_status(addr, "/health/live"), 200);
        let elapsed = started.elapsed();
        assert!(elapsed < REQUEST_TIMEOUT, "{elapsed:?}");
    }

    #[test]
    fn a_silent_client_times_out() {
        let server = server();
        let mut silent = TcpStream::connect(server.local_addr()).expect("connect");
        silent
            .set_read_timeout(Some(CLIENT_TIMEOUT))
            .expect("timeout");
        let started = Instant::now();
        let mut response = String::new();
        silent.read_to_string(&mut response).expect("read");
        assert!(response.starts_with("HTTP/1.1 408 "), "{response:?}");
        assert!(started.elapsed() >= REQUEST_TIMEOUT - Duration::from_millis(100));
    }

    #[test]
    fn connections_beyond_the_per_address_limit_are_closed_unanswered() {
        let server = server();
        let addr = server.local_addr();
        let silent: Vec<TcpStream> = (0..MAX_CONNECTIONS_PER_ADDRESS)
            .map(|_| TcpStream::connect(addr).expect("connect"))
            .collect();
        // Closed at accept: the request may not even be taken, and no byte comes back.
        let mut extra = TcpStream::connect(addr).expect("connect");
        extra
            .set_read_timeout(Some(CLIENT_TIMEOUT))
            .expect("timeout");
        let _ = extra.write_all(b"GET /health/live HTTP/1.1\r\n\r\n");
        let mut response = Vec::new();
        let _ = extra.read_to_end(&mut response);
        assert!(response.is_empty(), "answered: {response:?}");
        drop(silent);
        // The silent connections' threads see the close and free their slots; until they do,
        // a new connection is closed unanswered like the extra one (an error here, not a
        // failure).
        let deadline = Instant::now() + CLIENT_TIMEOUT;
        loop {
            let answered = http_get(addr, "/health/live", CLIENT_TIMEOUT).map(|(status, _)| status);
            if answered.is_ok_and(|status| status == 200) {
                break;
            }
            assert!(Instant::now() < deadline, "slots never freed");
            thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn shutdown_is_prompt_and_closes_the_listener() {
        let server = server();
        let addr = server.local_addr();
        assert_eq!(get_status(addr, "/health/live"), 200);
        let started = Instant::now();
        server.shutdown();
        let elapsed = started.elapsed();
        assert!(elapsed < Duration::from_millis(500), "{elapsed:?}");
        assert!(http_get(addr, "/health/live", Duration::from_millis(500)).is_err());
        server.shutdown();
        drop(server);
    }

    #[test]
    fn wake_address_is_loopback_for_unspecified() {
        let cases: &[(&str, &str)] = &[
            ("0.0.0.0:80", "127.0.0.1:80"),
            ("[::]:81", "[::1]:81"),
            ("10.1.2.3:82", "10.1.2.3:82"),
        ];
        for &(local, expected) in cases {
            let local: SocketAddr = local.parse().expect("addr");
            assert_eq!(wake_addr(local).to_string(), expected);
        }
    }

    #[test]
    fn http_get_rejects_bad_paths() {
        let addr: SocketAddr = "127.0.0.1:9".parse().expect("addr");
        for path in ["metrics", "/a b", "/a\r\nX: y", ""] {
            let error = http_get(addr, path, CLIENT_TIMEOUT).expect_err(path);
            assert_eq!(error.kind(), io::ErrorKind::InvalidInput, "{path:?}");
        }
    }

    #[test]
    fn parse_response_cases() {
        use io::ErrorKind::{InvalidData, UnexpectedEof};
        type Expected = Result<(u16, &'static str), io::ErrorKind>;
        let cases: &[(&[u8], Expected)] = &[
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi",
                Ok((200, "hi")),
            ),
            (b"HTTP/1.0 404 Not Found\r\n\r\ngone", Ok((404, "gone"))),
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\nhi",
                Ok((200, "h")),
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhi",
                Err(UnexpectedEof),
            ),
            (b"HTTP/1.1 200 OK\r\n", Err(InvalidData)),
            (b"HTTP/1.1 abc OK\r\n\r\n", Err(InvalidData)),
            (b"SSH-2.0-OpenSSH\r\n\r\n", Err(InvalidData)),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
                Err(InvalidData),
            ),
            (b"HTTP/1.1 200 OK\r\n\r\n\xff", Err(InvalidData)),
        ];
        for &(bytes, expected) in cases {
            let got = parse_response(bytes).map_err(|e| e.kind());
            let expected = expected.map(|(status, body)| (status, body.to_owned()));
            assert_eq!(got, expected, "{}", String::from_utf8_lossy(bytes));
        }
    }

    #[test]
    fn prom_text() {
        let mut text = PromText::new();
        let lag = "logship_lag_bytes";
        text.family(lag, "Bytes behind.\nPer \\ follower.", "gauge");
        text.sample(lag, &[("follower", "a\"b\\c\nd"), ("zone", "z")], 42.0);
        text.family(lag, "written once", "gauge");
        text.sample(lag, &[("follower", "b")], 0.5);
        text.family("logship_opened_total", "Times opened.", "counter");
        text.sample("logship_opened_total", &[], 3.0);
        text.sample("logship_opened_total", &[("x", "nan")], f64::NAN);
        text.sample("logship_opened_total", &[("x", "inf")], f64::INFINITY);
        text.sample("logship_opened_total", &[("x", "-inf")], f64::NEG_INFINITY);
        text.sample("logship_opened_total", &[("x", "big")], 1e20);
        let expected = "\
# HELP logship_lag_bytes Bytes behind.\\nPer \\\\ follower.
# TYPE logship_lag_bytes gauge
logship_lag_bytes{follower=\"a\\\"b\\\\c\\nd\",zone=\"z\"} 42
logship_lag_bytes{follower=\"b\"} 0.5
# HELP logship_opened_total Times opened.
# TYPE logship_opened_total counter
logship_opened_total 3
logship_opened_total{x=\"nan\"} NaN
logship_opened_total{x=\"inf\"} +Inf
logship_opened_total{x=\"-inf\"} -Inf
logship_opened_total{x=\"big\"} 100000000000000000000
";
        assert_eq!(text.finish(), expected);
    }

    #[test]
    fn prom_text_names() {
        let cases: &[(&str, bool, bool)] = &[
            ("up", true, true),
            ("a:b_c9", true, false),
            ("_x", true, true),
            ("9x", false, false),
            ("a-b", false, false),
            ("", false, false),
        ];
        for &(name, metric, label) in cases {
            assert_eq!(is_metric_name(name), metric, "{name:?}");
            assert_eq!(is_label_name(name), label, "{name:?}");
        }
    }

    #[test]
    #[should_panic(expected = "invalid metric type")]
    fn prom_text_rejects_unknown_kinds() {
        PromText::new().family("up", "help", "gauges");
    }
}
