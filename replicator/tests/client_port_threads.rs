//! The event-driven client port serves many connections on a bounded number of threads: with
//! io_uring (the port's transport with `transport = "auto"`, when the kernel gives it), 200
//! connections add no thread to the node. Alone in its test binary, so that no other test's
//! threads come and go while it counts.
//!
//! Run: `cargo test -p logship-replicator --test client_port_threads`.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use logship_replicator::config::NodeConfig;
use logship_replicator::{Client, DurabilityLevel, Node};

const KEY: &str = "0123456789abcdef0123456789abcdef";
const WITHIN: Duration = Duration::from_secs(10);
const CONNECTIONS: usize = 200;

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

fn node(dir: &Path, name: &str, role: &str, rest: &str) -> Node {
    let key = dir.join("key");
    std::fs::write(&key, KEY).unwrap();
    let text = format!(
        "[node]\ntransport = \"auto\"\nid = \"{name}\"\nrole = \"{role}\"\ncluster_id = \"test\"\nkey_file = \"{}\"\ndata_dir = \"{}\"\nlisten_client = \"127.0.0.1:0\"\nmax_client_connections_per_address = {CONNECTIONS}\n{rest}",
        key.display(),
        dir.join(name).display()
    );
    Node::start(NodeConfig::parse(&text).unwrap()).unwrap()
}

#[test]
fn two_hundred_connections_are_served_without_a_thread_each() {
    let dir = tempfile::tempdir().unwrap();
    let a = node(
        dir.path(),
        "a",
        "follower",
        "listen_replication = \"127.0.0.1:0\"\n",
    );
    let follower = a.replication_addr().unwrap();
    let p = node(
        dir.path(),
        "p",
        "primary",
        &format!("[replication]\nfollowers = [{{ name = \"a\", addr = \"{follower}\", mode = \"sync\" }}]\nquorum = \"ANY 1 (a)\"\n"),
    );
    let transport = p.client_transport().unwrap();
    if !transport.starts_with("io_uring") {
        println!("skipping: the client port runs on {transport} (io_uring unavailable here)");
        return;
    }
    let addr = p.client_addr().unwrap();
    // Settle: the nodes' threads are up once a first client was served.
    Client::connect(addr, WITHIN).unwrap().status().unwrap();
    let before = threads();
    let mut clients: Vec<Client> = (0..CONNECTIONS)
        .map(|_| Client::connect(addr, WITHIN).unwrap())
        .collect();
    for (i, c) in clients.iter_mut().enumerate() {
        c.status().unwrap();
        let payload = Bytes::from(format!("connection {i}"));
        c.append(payload, DurabilityLevel::RemoteDurable).unwrap();
    }
    let during = threads();
    assert!(
        during <= before + 4,
        "{CONNECTIONS} connections took the process from {before} to {during} threads"
    );
    drop(clients);
}
