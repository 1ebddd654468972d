//! TLS end to end with real processes: a primary and a sync follower (`logship node` children
//! on 127.0.0.1, tests/common/cluster.rs) with TLS on the replication link and on the client
//! port, client certificates required (mutual TLS), certificates written by
//! `logship keygen --tls-dir`. Checks that appends through a TLS client are acknowledged at
//! `remote_durable` and read back from both nodes; that a plaintext client, a client trusting
//! another CA and a client without a certificate are refused with a clear error while the node
//! stays up; and that SIGHUP after the node's certificate files were replaced by ones of a new
//! CA makes new connections use the new certificate while the cluster keeps committing (and a
//! reload from a broken key file keeps the certificate in use).

#[path = "common/cluster.rs"]
mod cluster;

use std::path::{Path, PathBuf};
use std::time::Duration;

use cluster::{args, metric, run, signal, wait_until, Cluster, FollowerSpec, Spec, PRIMARY};
use logship::replication::client::ClientTls;
use logship::{Bytes, Client, DurabilityLevel};

/// Bound on the cluster converging or a reload taking effect.
const BOUND: Duration = Duration::from_secs(15);
/// Bound on one `logship keygen` run.
const KEYGEN_BOUND: Duration = Duration::from_secs(20);
/// Timeout of the test's clients.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(3);

/// Writes a CA with certificates for `p`, `f1` and client `c1` into `dir` with the CLI.
fn keygen(dir: &Path) {
    let dir = dir.to_str().expect("a UTF-8 path");
    let a = args(&[
        "keygen",
        "--tls-dir",
        dir,
        "--nodes",
        "p,f1",
        "--clients",
        "c1",
    ]);
    let (code, out, err) = run(&a, KEYGEN_BOUND);
    assert_eq!(code, 0, "keygen: {out}{err}");
    assert!(out.contains("ca.crt") && out.contains("c1.key"), "{out}");
}

/// A client trusting the CA of `dir` and presenting its `c1` certificate.
fn client_tls(dir: &Path) -> ClientTls {
    let (cert, key) = (dir.join("c1.crt"), dir.join("c1.key"));
    ClientTls::from_files(&dir.join("ca.crt"), Some((&cert, &key))).expect("client TLS")
}

/// `name`'s `[tls]` table: its certificate in `live` (replaced by the reload test), the bundle
/// of both CAs (so replication survives the change of the primary's CA), mTLS required.
fn tls_table(live: &Path, name: &str, bundle: &Path) -> String {
    format!(
        "[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\nca_file = \"{}\"\nclient_auth = \"required\"\n",
        live.join(format!("{name}.crt")).display(),
        live.join(format!("{name}.key")).display(),
        bundle.display()
    )
}

fn copy_identity(from: &Path, to: &Path, name: &str) {
    for ext in ["crt", "key"] {
        let file = format!("{name}.{ext}");
        std::fs::copy(from.join(&file), to.join(&file)).expect("copy a certificate file");
    }
}

struct Dirs {
    old: PathBuf,
    new: PathBuf,
    live: PathBuf,
}

/// Two CAs, the bundle of both, and each node's live files from the old CA.
fn certificates(cluster: &mut Cluster) -> Dirs {
    let base = cluster.dir.path().to_path_buf();
    let d = Dirs {
        old: base.join("tls-old"),
        new: base.join("tls-new"),
        live: base.join("tls-live"),
    };
    keygen(&d.old);
    keygen(&d.new);
    std::fs::create_dir_all(&d.live).expect("live dir");
    let bundle = base.join("bundle.crt");
    let cas = [&d.old, &d.new].map(|dir| std::fs::read_to_string(dir.join("ca.crt")).expect("CA"));
    std::fs::write(&bundle, cas.concat()).expect("bundle");
    for name in [PRIMARY, "f1"] {
        copy_identity(&d.old, &d.live, name);
        cluster.add_config(name, &tls_table(&d.live, name, &bundle));
    }
    cluster.tls = Some(client_tls(&d.old));
    d
}

fn append(c: &mut Client, text: &str) -> u64 {
    let lsn = c
        .append(
            Bytes::from(text.to_string()),
            DurabilityLevel::RemoteDurable,
        )
        .unwrap_or_else(|e| panic!("appending {text:?}: {e}"));
    lsn.0
}

/// Refusals: each with a clear error, the node still serving TLS clients after them.
fn check_refusals(cluster: &Cluster, dirs: &Dirs) {
    let addr = cluster.node(PRIMARY).client;
    let plain = Client::connect(addr, CLIENT_TIMEOUT).and_then(|mut c| c.status());
    let e = plain
        .expect_err("a plaintext client is refused")
        .to_string();
    assert!(e.contains("speaks TLS"), "plaintext client: {e}");

    let stranger = ClientTls::from_files(&dirs.new.join("ca.crt"), None).expect("TLS");
    let other_ca =
        Client::connect_with(addr, CLIENT_TIMEOUT, Some(&stranger)).and_then(|mut c| c.status());
    let e = other_ca
        .expect_err("the old certificate is refused")
        .to_string();
    assert!(e.contains("certificate"), "client of another CA: {e}");

    let anonymous = ClientTls::from_files(&dirs.old.join("ca.crt"), None).expect("TLS");
    let no_cert =
        Client::connect_with(addr, CLIENT_TIMEOUT, Some(&anonymous)).and_then(|mut c| c.status());
    let e = no_cert
        .expect_err("mTLS requires a certificate")
        .to_string();
    assert!(
        e.to_lowercase().contains("certificate"),
        "client without one: {e}"
    );

    cluster
        .status(PRIMARY)
        .expect("the primary serves after the refusals");
    let failures = metric(&cluster.metrics(PRIMARY), "logship_tls_failures_total", &[]);
    assert!(failures.is_some_and(|n| n >= 3.0), "{failures:?}");
}

/// Replaces the primary's certificate with one of the new CA and sends SIGHUP: a client that
/// trusts only the new CA gets in, while the existing client keeps committing.
fn check_reload(cluster: &Cluster, dirs: &Dirs, c: &mut Client) {
    let addr = cluster.node(PRIMARY).client;
    let only_new = client_tls(&dirs.new);
    copy_identity(&dirs.new, &dirs.live, PRIMARY);
    signal(cluster.pid(PRIMARY), "-HUP");
    wait_until("a client of the new CA connects", BOUND, || {
        Client::connect_with(addr, CLIENT_TIMEOUT, Some(&only_new))
            .and_then(|mut c| c.status())
            .is_ok()
    });
    let lsn = append(c, "after the reload");
    let mut fresh = Client::connect_with(addr, CLIENT_TIMEOUT, Some(&only_new)).expect("connect");
    assert!(append(&mut fresh, "through the new certificate") > lsn);

    // A broken key file: the reload fails and the certificate in use stays.
    std::fs::write(dirs.live.join("p.key"), "not a key\n").expect("break the key");
    signal(cluster.pid(PRIMARY), "-HUP");
    let log = &cluster.node(PRIMARY).log;
    wait_until("the failed reload is logged", BOUND, || {
        std::fs::read_to_string(log).is_ok_and(|t| t.contains("TLS reload failed"))
    });
    let mut after = Client::connect_with(addr, CLIENT_TIMEOUT, Some(&only_new)).expect("connect");
    append(&mut after, "after a failed reload");
}

#[test]
fn tls_on_both_ports_with_mutual_tls_and_reload() {
    let spec = Spec::new("ANY 1 (f1)", vec![FollowerSpec::sync("f1")]);
    let mut cluster = Cluster::new(&spec);
    let dirs = certificates(&mut cluster);
    cluster.start_all();
    cluster.wait_healthy(BOUND);

    let mut c = cluster.client(PRIMARY);
    let first = append(&mut c, "one");
    let second = append(&mut c, "two");
    assert!(second > first);
    for name in [PRIMARY, "f1"] {
        let texts: Vec<Vec<u8>> = (cluster.records(name).into_iter())
            .filter(|r| r.lsn.0 >= first)
            .map(|r| r.payload.to_vec())
            .collect();
        assert_eq!(texts, [b"one".to_vec(), b"two".to_vec()], "{name}");
    }

    check_refusals(&cluster, &dirs);
    check_reload(&cluster, &dirs, &mut c);
    // The helpers' clients trust the new CA from now on.
    cluster.tls = Some(client_tls(&dirs.new));
    let log = std::fs::read_to_string(&cluster.node(PRIMARY).log).expect("log");
    assert!(log.contains("TLS certificates reloaded"), "{log}");
    let status = cluster.status(PRIMARY).expect("status");
    assert_eq!(status.transport, "portable+tls");
}
