//! The `logship` binary end to end on real directories: append/dump/verify round trips, the
//! JSON-lines format, refusals of directories that are not logs (one error line, exit 2),
//! `verify` finding a flipped byte (exit 1), and `logship node` serving a replication listener
//! it inherited (or refusing a descriptor that is not one, or not on its address).

mod common;

use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;
use common::{bin, run_cli};

const FIRST_SEGMENT: &str = "00000000000000000001.seg";
const SEGMENT_HEADER_BYTES: usize = 64;
const RECORD_HEADER_BYTES: usize = 32;

/// Runs `logship append <dir> <extra>` with `input` on stdin; returns (code, stdout, stderr).
fn append(dir: &Path, extra: &[&str], input: &[u8]) -> (i32, String, String) {
    let mut child = Command::new(bin())
        .arg("append")
        .arg(dir)
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn logship append");
    let mut stdin = child.stdin.take().expect("piped stdin");
    let input = input.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().expect("wait for logship append");
    feeder.join().expect("feeder thread");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn cli(args: &[&str], dir: &Path) -> (i32, String, String) {
    let mut all: Vec<&OsStr> = vec![OsStr::new(args[0]), dir.as_os_str()];
    all.extend(args[1..].iter().map(OsStr::new));
    run_cli(&all)
}

/// Exit code 2 and exactly one line on stderr, `logship: error: ...` containing `needle`.
#[track_caller]
fn assert_refused(result: (i32, String, String), needle: &str) {
    let (code, stdout, stderr) = result;
    assert_eq!(
        code, 2,
        "expected exit 2; stdout={stdout:?} stderr={stderr:?}"
    );
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "expected one error line, got {stderr:?}");
    assert!(
        lines[0].starts_with("logship: error: "),
        "bad error line {:?}",
        lines[0]
    );
    assert!(
        lines[0].to_lowercase().contains(&needle.to_lowercase()),
        "error line {:?} does not mention {needle:?}",
        lines[0]
    );
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
}

fn new_log(tmp: &tempfile::TempDir, lines: &[u8]) -> PathBuf {
    let dir = tmp.path().join("log");
    let (code, _, stderr) = append(&dir, &["--create"], lines);
    assert_eq!(code, 0, "append --create failed: {stderr}");
    dir
}

#[test]
fn append_dump_verify_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let input = "hello\n\nw\u{f6}rld\twith tab\r\nback\\slash\nno newline at end";
    let (code, stdout, stderr) = append(&dir, &["--create"], input.as_bytes());
    assert_eq!(code, 0, "stderr: {stderr}");
    assert_eq!(stdout, "1\n2\n3\n4\n5\n");

    let (code, stdout, stderr) = cli(&["dump"], &dir);
    assert_eq!(code, 0, "stderr: {stderr}");
    let want = "1\t0\t5\thello\n\
                2\t0\t0\t\n\
                3\t0\t16\tw\u{f6}rld\\twith tab\\r\n\
                4\t0\t10\tback\\\\slash\n\
                5\t0\t17\tno newline at end\n";
    assert_eq!(stdout, want);

    // Appending again continues the LSNs; an empty stdin appends nothing.
    let (code, stdout, _) = append(&dir, &[], b"six\nseven\n");
    assert_eq!((code, stdout.as_str()), (0, "6\n7\n"));
    let (code, stdout, _) = append(&dir, &["--durability", "buffered"], b"eight\n");
    assert_eq!((code, stdout.as_str()), (0, "8\n"));
    let (code, stdout, _) = append(&dir, &["--backend", "portable"], b"");
    assert_eq!((code, stdout.as_str()), (0, ""));

    let (code, stdout, _) = cli(&["dump", "--from", "6", "--limit", "2"], &dir);
    assert_eq!(code, 0);
    assert_eq!(stdout, "6\t0\t3\tsix\n7\t0\t5\tseven\n");

    let (code, stdout, stderr) = cli(&["verify"], &dir);
    assert_eq!(code, 0, "stdout: {stdout} stderr: {stderr}");
    assert!(stdout.contains("records:       8"), "{stdout}");
    assert!(stdout.contains("lsn range:     1..=8"), "{stdout}");
    assert!(stdout.contains("status:        clean"), "{stdout}");
}

#[test]
fn dump_jsonl_has_every_field_and_exact_payload_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let payloads: [&[u8]; 3] = [b"alpha", b"", b"\x00\x01\xff\xfe binary \x7f"];
    let mut input = Vec::new();
    for p in payloads {
        input.extend_from_slice(p);
        input.push(b'\n');
    }
    let dir = new_log(&tmp, &input);
    let (code, stdout, stderr) = cli(&["dump", "--format", "jsonl"], &dir);
    assert_eq!(code, 0, "stderr: {stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), payloads.len());
    for (i, (line, want)) in lines.iter().zip(payloads).enumerate() {
        let v: serde_json::Value = serde_json::from_str(line).expect("valid JSON");
        assert_eq!(v["lsn"], i as u64 + 1);
        assert_eq!(v["epoch"], 0);
        assert_eq!(v["len"], want.len());
        let payload = base64::engine::general_purpose::STANDARD
            .decode(v["payload_b64"].as_str().expect("payload_b64 is a string"))
            .expect("valid base64");
        assert_eq!(payload, want);
        assert_eq!(v["crc"], u64::from(record_crc(i as u64 + 1, want)));
    }
}

/// The record CRC as docs/format.md defines it: header bytes 0..4 and 8..32, then the payload.
fn record_crc(lsn: u64, payload: &[u8]) -> u32 {
    let mut header = [0u8; RECORD_HEADER_BYTES];
    header[0..4].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    header[8..16].copy_from_slice(&lsn.to_le_bytes());
    let mut h = crc32fast::Hasher::new();
    h.update(&header[0..4]);
    h.update(&header[8..]);
    h.update(payload);
    h.finalize()
}

#[test]
fn missing_directory_is_refused_by_every_command() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("does-not-exist");
    assert_refused(append(&dir, &[], b"x\n"), "does-not-exist");
    assert_refused(cli(&["dump"], &dir), "does-not-exist");
    assert_refused(cli(&["verify"], &dir), "does-not-exist");
    assert!(!dir.exists(), "a refused command created the directory");
}

#[test]
fn foreign_directory_is_refused_even_with_create() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("foreign");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("notes.txt"), b"not a log").unwrap();
    assert_refused(append(&dir, &[], b"x\n"), "not a logship log");
    assert_refused(append(&dir, &["--create"], b"x\n"), "foreign");
    assert_refused(cli(&["dump"], &dir), "not a logship log");
    assert_refused(cli(&["verify"], &dir), "not a logship log");
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        names,
        vec![OsStr::new("notes.txt")],
        "a refused command wrote files"
    );
}

#[test]
fn empty_directory_needs_create() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("empty");
    std::fs::create_dir(&dir).unwrap();
    assert_refused(append(&dir, &[], b"x\n"), "not a logship log");
    let (code, stdout, _) = append(&dir, &["--create"], b"x\n");
    assert_eq!((code, stdout.as_str()), (0, "1\n"));
}

/// Overwrites `len` bytes of `file` at `offset`.
fn patch(file: &Path, offset: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(file).unwrap();
    f.write_all_at(bytes, offset).unwrap();
    f.sync_all().unwrap();
}

/// Sets a u32 field of a header and fixes the header's CRC (stored at `crc_at`, covering
/// `0..crc_at`), so that only the field is wrong.
fn patch_u32_with_crc(file: &Path, at: usize, value: u32, crc_at: usize) {
    let mut bytes = std::fs::read(file).unwrap();
    bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
    let crc = crc32fast::hash(&bytes[..crc_at]);
    bytes[crc_at..crc_at + 4].copy_from_slice(&crc.to_le_bytes());
    patch(file, 0, &bytes[..crc_at + 4]);
}

fn every_command_refuses(dir: &Path, needle: &str) {
    assert_refused(append(dir, &[], b"x\n"), needle);
    assert_refused(cli(&["dump"], dir), needle);
    assert_refused(cli(&["verify"], dir), needle);
}

#[test]
fn wrong_magic_in_marker_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = new_log(&tmp, b"a\nb\n");
    patch(&dir.join("logship.meta"), 0, b"NOTALOG!");
    every_command_refuses(&dir, "logship.meta");
}

#[test]
fn unsupported_version_in_marker_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = new_log(&tmp, b"a\nb\n");
    patch_u32_with_crc(&dir.join("logship.meta"), 8, 99, 28);
    every_command_refuses(&dir, "version 99");
}

#[test]
fn truncated_marker_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = new_log(&tmp, b"a\nb\n");
    let meta = dir.join("logship.meta");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&meta)
        .unwrap()
        .set_len(10)
        .unwrap();
    every_command_refuses(&dir, "logship.meta");
}

#[test]
fn a_segment_header_naming_an_unknown_version_is_corruption() {
    // The log's marker is of a version this build reads, so a segment header naming another is
    // damaged, not a file from the future.
    let tmp = tempfile::tempdir().unwrap();
    let dir = new_log(&tmp, b"a\nb\n");
    patch_u32_with_crc(&dir.join(FIRST_SEGMENT), 8, 7, 60);
    assert_refused(append(&dir, &[], b"x\n"), "version 7");
    assert_refused(cli(&["dump"], &dir), "version 7");
    let (code, stdout, _) = cli(&["verify"], &dir);
    assert_eq!(code, 1, "{stdout}");
    assert!(
        stdout.contains("format version 7") && stdout.contains("damaged"),
        "{stdout}"
    );
}

#[test]
fn wrong_magic_or_truncated_segment_header_is_refused() {
    for damage in ["magic", "truncate"] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = new_log(&tmp, b"a\nb\n");
        let seg = dir.join(FIRST_SEGMENT);
        match damage {
            "magic" => patch(&seg, 0, b"XXXXXXXX"),
            _ => std::fs::OpenOptions::new()
                .write(true)
                .open(&seg)
                .unwrap()
                .set_len(20)
                .unwrap(),
        }
        assert_refused(append(&dir, &[], b"x\n"), FIRST_SEGMENT);
        assert_refused(cli(&["dump"], &dir), FIRST_SEGMENT);
        // verify may call a damaged header corruption (exit 1) or refuse the directory (2).
        let (code, stdout, stderr) = cli(&["verify"], &dir);
        assert!(
            code == 1 || code == 2,
            "{damage}: verify exit {code}: {stdout} {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn unreadable_directory_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = new_log(&tmp, b"a\n");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o000)).unwrap();
    // Root ignores permissions: run the commands as `nobody` then.
    let as_user = |args: &[&str]| {
        let mut cmd = Command::new(bin());
        cmd.arg(args[0])
            .arg(&dir)
            .args(&args[1..])
            .stdin(Stdio::null());
        if common::is_root() {
            cmd.uid(65534).gid(65534);
        }
        let out = cmd.output().expect("run logship");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    assert_refused(as_user(&["verify"]), "permission denied");
    assert_refused(as_user(&["dump"]), "permission denied");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn usage_errors_exit_2() {
    let (code, _, stderr) = run_cli(&[OsStr::new("append")]);
    assert_eq!(code, 2, "{stderr}");
    let (code, _, _) = run_cli(&[OsStr::new("frobnicate")]);
    assert_eq!(code, 2);
    let tmp = tempfile::tempdir().unwrap();
    let (code, _, _) = cli(&["append", "--durability", "sometimes"], tmp.path());
    assert_eq!(code, 2);
    let (code, _, stderr) = append(
        &tmp.path().join("log"),
        &["--create", "--segment-size", "100"],
        b"",
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("segment_size_bytes"), "{stderr}");
}

/// Offset of record `lsn` in a segment's bytes, walking its frames from the header.
fn record_offset(segment: &[u8], lsn: u64) -> usize {
    let mut off = SEGMENT_HEADER_BYTES;
    loop {
        match logship::record::decode_frame(&segment[off..]).expect("a valid frame") {
            logship::record::Frame::Record(r) if r.header.lsn.get() == lsn => return off,
            f => off += f.encoded_len(),
        }
    }
}

#[test]
fn verify_reports_flipped_payload_byte_with_exit_1() {
    const PAYLOAD_BYTES: usize = 200;
    const RECORDS: usize = 1000;
    let tmp = tempfile::tempdir().unwrap();
    let mut input = Vec::new();
    for n in 0..RECORDS {
        let mut p = format!("record-{n:06}-").into_bytes();
        p.resize(PAYLOAD_BYTES, b'x');
        input.extend_from_slice(&p);
        input.push(b'\n');
    }
    let dir = tmp.path().join("log");
    let (code, stdout, stderr) = append(&dir, &["--create", "--segment-size", "65536"], &input);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.lines().count(), RECORDS);
    let segments = std::fs::read_dir(&dir)
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            let name = name.to_string_lossy();
            name.ends_with(".seg") && !name.starts_with("free-")
        })
        .count();
    assert!(segments >= 3, "expected several segments, found {segments}");
    assert_eq!(cli(&["verify"], &dir).0, 0);

    // Find record k + 1 of the first segment by walking its frames (records, and the write
    // markers after each write), and flip a byte in its payload.
    let k = 100;
    let seg = dir.join(FIRST_SEGMENT);
    let record_offset = record_offset(&std::fs::read(&seg).unwrap(), k as u64 + 1);
    let offset = record_offset + RECORD_HEADER_BYTES + 50;
    let mut byte = [0u8; 1];
    {
        use std::os::unix::fs::FileExt;
        std::fs::File::open(&seg)
            .unwrap()
            .read_exact_at(&mut byte, offset as u64)
            .unwrap();
    }
    assert_eq!(
        byte[0], b'x',
        "the layout is not the one docs/format.md describes"
    );
    patch(&seg, offset as u64, &[byte[0] ^ 0x01]);

    let (code, stdout, stderr) = cli(&["verify"], &dir);
    assert_eq!(code, 1, "stdout: {stdout} stderr: {stderr}");
    let line = stdout
        .lines()
        .find(|l| l.starts_with("corruption:"))
        .unwrap_or_else(|| panic!("no corruption line in {stdout}"));
    assert!(line.contains(FIRST_SEGMENT), "{line}");
    assert!(line.contains(&format!("LSN {}", k + 1)), "{line}");
    assert!(line.contains(&format!("offset {record_offset}")), "{line}");
    assert!(stdout.contains("CORRUPT"), "{stdout}");

    // Reading reaches the damaged record and stops with an error naming the file. (Opening to
    // append checks only the last segment, where crashes leave damage, so append still works.)
    assert_refused(cli(&["dump"], &dir), FIRST_SEGMENT);
}

#[test]
fn a_log_in_use_is_refused_to_append_but_dumped_read_only() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = new_log(&tmp, b"one\ntwo\n");
    let log = logship::Log::open(&dir, logship::Options::default()).expect("open");
    log.append(logship::Bytes::from_static(b"three"))
        .expect("append")
        .wait()
        .expect("durable");
    assert_refused(append(&dir, &[], b"four\n"), "in use by another process");
    let (code, stdout, stderr) = cli(&["dump"], &dir);
    assert_eq!(code, 0, "dump beside a writer failed: {stderr}");
    assert_eq!(stdout, "1\t0\t3\tone\n2\t0\t3\ttwo\n3\t0\t5\tthree\n");
    drop(log);
    let (code, _, stderr) = append(&dir, &[], b"four\n");
    assert_eq!(code, 0, "append after the writer closed: {stderr}");
}

/// A follower config in `dir` (with its key) that listens for replication on `replication`,
/// with the replication transport `transport`.
fn follower_config(dir: &Path, replication: std::net::SocketAddr, transport: &str) -> PathBuf {
    let key = dir.join("cluster.key");
    if !key.exists() {
        let (code, _, stderr) = run_cli(&[OsStr::new("keygen"), key.as_os_str()]);
        assert_eq!(code, 0, "keygen: {stderr}");
    }
    let config = dir.join("f1.toml");
    let text = format!(
        "[node]\nid = \"f1\"\nrole = \"follower\"\ncluster_id = \"t\"\nkey_file = \"cluster.key\"\n\
         data_dir = \"data\"\nlisten_replication = \"{replication}\"\nlisten_client = \"127.0.0.1:0\"\n\
         transport = \"{transport}\"\n"
    );
    std::fs::write(&config, text).expect("config");
    config
}

/// `logship node --config CONFIG` with `fd` as its descriptor 3, named in
/// `LOGSHIP_REPLICATION_FD`; the test's copy of `fd` is closed once the child started.
fn node_with_fd(config: &Path, fd: std::os::fd::OwnedFd) -> std::process::Child {
    let mut command = Command::new(bin());
    command
        .args(["node", "--config"])
        .arg(config)
        .env("LOGSHIP_REPLICATION_FD", "3")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    logship::replication::transport::handover::pass_fd(&mut command, fd, 3);
    command.spawn().expect("start logship node")
}

#[test]
fn a_node_serves_the_replication_listener_it_inherits() {
    for transport in ["portable", "io_uring"] {
        serves_inherited_listener(transport);
    }
}

/// A node on `transport` serves the listener it inherits, and holds its only copy (says why it
/// skips io_uring where the kernel refuses it).
fn serves_inherited_listener(transport: &str) {
    use std::io::{BufRead, Read};
    let tmp = tempfile::tempdir().expect("tempdir");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    let addr = listener.local_addr().expect("address");
    let config = follower_config(tmp.path(), addr, transport);
    let mut node = node_with_fd(&config, listener.into());
    let mut stderr = std::io::BufReader::new(node.stderr.take().expect("stderr"));
    let mut line = String::new();
    while !line.contains(" up: ") {
        line.clear();
        if stderr.read_line(&mut line).expect("read the node's stderr") == 0 {
            let _ = node.wait();
            if transport == "io_uring" {
                println!("skipping io_uring: the node did not start on it");
                return;
            }
            panic!("the node ended before it was up");
        }
    }
    assert!(line.contains(&format!("replication {addr}")), "{line}");
    // The node accepts there and reads: bytes that are no frame make it close the connection
    // (a socket nobody served would keep it open, the connection waiting in the backlog).
    let mut peer = std::net::TcpStream::connect(addr).expect("connect");
    peer.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .expect("timeout");
    peer.write_all(&[0xff; 64]).expect("write");
    let mut buf = [0u8; 256];
    let closed = loop {
        match peer.read(&mut buf) {
            Ok(0) => break true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break false,
        }
    };
    assert!(
        closed,
        "{transport}: the node did not serve its inherited listener"
    );
    node.kill().expect("kill");
    node.wait().expect("wait");
    // The node held the only copy: with it gone, nothing listens there (io_uring lets go of
    // the socket shortly after the process, once the kernel has torn its ring down).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::net::TcpStream::connect(addr).is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "{transport}: still listening"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn a_node_refuses_an_inherited_descriptor_that_is_not_its_listener() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let configured = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    let address = configured.local_addr().expect("address");
    let config = follower_config(tmp.path(), address, "portable");
    let refused = |child: std::process::Child| {
        let out = child.wait_with_output().expect("wait");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.code().unwrap_or(-1), String::new(), stderr)
    };
    let other = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    let needle = format!(
        "LOGSHIP_REPLICATION_FD hands node f1 a replication listener on {}, but its replication \
         address is {}",
        other.local_addr().expect("address"),
        configured.local_addr().expect("address")
    );
    assert_refused(refused(node_with_fd(&config, other.into())), &needle);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    let stream =
        std::net::TcpStream::connect(listener.local_addr().expect("address")).expect("connect");
    let connected = refused(node_with_fd(&config, stream.into()));
    assert_refused(
        connected,
        "LOGSHIP_REPLICATION_FD=3: descriptor 3 is a TCP socket, but not listening",
    );
    let file = std::fs::File::open(&config).expect("open");
    let file = refused(node_with_fd(&config, file.into()));
    assert_refused(file, "descriptor 3 is not a socket");
    // Named but never passed (far above what a test process has open).
    let out = Command::new(bin())
        .args(["node", "--config"])
        .arg(&config)
        .env("LOGSHIP_REPLICATION_FD", "1000")
        .output()
        .expect("run logship node");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_refused(
        (out.status.code().unwrap_or(-1), String::new(), stderr),
        "LOGSHIP_REPLICATION_FD=1000: descriptor 1000 is not open",
    );
}

/// `logship keygen --client` writes a client key line; a node with `[clients]` answers
/// `logship status --client-key` with that key, and refuses it without one.
#[test]
fn client_keys_from_keygen_admit_status_and_strangers_are_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let key_file = dir.path().join("ops.key");
    let args = ["keygen", "--client", "ops", "--grants", "read,admin"];
    let mut argv: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
    argv.push(key_file.as_os_str());
    let (code, _, stderr) = run_cli(&argv);
    assert_eq!(code, 0, "keygen --client: {stderr}");
    let line = std::fs::read_to_string(&key_file).expect("key line");
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(fields[..2], ["ops", "read,admin"], "{line}");
    assert_eq!(fields[2].len(), 64, "{line}");
    let bad = run_cli(&[
        OsStr::new("keygen"),
        OsStr::new("--client"),
        OsStr::new("x"),
        OsStr::new("--grants"),
        OsStr::new("write"),
        dir.path().join("x.key").as_os_str(),
    ]);
    assert!(
        bad.0 != 0 && bad.2.contains("unknown grant \"write\""),
        "{bad:?}"
    );

    let (code, _, stderr) = run_cli(&[
        OsStr::new("keygen"),
        dir.path().join("cluster.key").as_os_str(),
    ]);
    assert_eq!(code, 0, "keygen: {stderr}");
    std::fs::write(dir.path().join("clients.keys"), &line).expect("clients file");
    let config = dir.path().join("p.toml");
    let text =
        "[node]\nid = \"p\"\nrole = \"primary\"\ncluster_id = \"t\"\nkey_file = \"cluster.key\"\n\
                data_dir = \"data\"\nlisten_client = \"127.0.0.1:0\"\ntransport = \"portable\"\n\
                [clients]\nkeys_file = \"clients.keys\"\n";
    std::fs::write(&config, text).expect("config");
    let mut node = Command::new(bin())
        .args(["node", "--config"])
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start logship node");
    let client = client_port_of(&mut node);
    let status = |extra: &[&OsStr]| {
        let mut argv = vec![
            OsStr::new("status"),
            OsStr::new("--addr"),
            OsStr::new(&client),
        ];
        argv.extend_from_slice(extra);
        run_cli(&argv)
    };
    let with_key = status(&[OsStr::new("--client-key"), key_file.as_os_str()]);
    let without = status(&[]);
    let _ = node.kill();
    let _ = node.wait();
    assert_eq!(with_key.0, 0, "status with the key: {with_key:?}");
    assert!(with_key.1.contains("node p (primary"), "{with_key:?}");
    assert!(
        without.0 != 0
            && without
                .2
                .contains("the node refused this client (protocol)"),
        "{without:?}"
    );
}

/// The client address a `logship node` child prints on its "up" line (stderr), within 15 s.
fn client_port_of(node: &mut std::process::Child) -> String {
    use std::io::BufRead;
    let stderr = node.stderr.take().expect("piped stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if let Some((_, rest)) = line.split_once(", client ") {
                let addr = rest.split(',').next().unwrap_or_default().to_string();
                let _ = tx.send(addr);
            }
        }
    });
    rx.recv_timeout(std::time::Duration::from_secs(15))
        .expect("the node's up line")
}
