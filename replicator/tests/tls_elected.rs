//! A cluster that elects its primary, with TLS on the replication link: three `Node`s in one
//! process on 127.0.0.1, each with a certificate for its node id from one CA. Vote requests and
//! replication both go through the TLS layer, each dialing node verifying the peer's
//! certificate for the member id the table gives that address; a primary is elected and commits
//! at `remote_durable` without a TLS failure. (Refusals of other CAs and wrong names are the
//! TLS layer's unit tests, `transport::tls`.)

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use logship_replicator::config::NodeConfig;
use logship_replicator::tls::generate::{parse_subject, write_tls_dir};
use logship_replicator::{DurabilityLevel, Node};

const KEY: &str = "0123456789abcdef0123456789abcdef";
/// Bound on an election and on a commit.
const BOUND: Duration = Duration::from_secs(20);

fn config(dir: &Path, id: &str, members: &str, tls: &Path) -> String {
    format!(
        "[node]\nid = \"{id}\"\ncluster_id = \"test\"\nkey_file = \"{}\"\ndata_dir = \"{}\"\ntransport = \"portable\"\n\
         [cluster]\nmembers = [{members}]\n\
         [tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\nca_file = \"{}\"\nclient_port = false\n",
        dir.join("key").display(),
        dir.join(id).display(),
        tls.join(format!("{id}.crt")).display(),
        tls.join(format!("{id}.key")).display(),
        tls.join("ca.crt").display(),
    )
}

fn start(text: &str, listener: TcpListener) -> Node {
    let mut config = NodeConfig::parse(text).expect("config parses");
    config.replication_listener = Some(Arc::new(listener));
    Node::start(config).expect("node starts")
}

fn primary_of(nodes: &[Node]) -> Option<&Node> {
    nodes
        .iter()
        .find(|n| n.status().primary.is_some_and(|p| p.serving))
}

#[test]
fn an_elected_cluster_over_tls_elects_and_commits() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("key"), KEY).expect("key");
    let good = dir.path().join("tls");
    let ids = ["n1", "n2", "n3"];
    let subjects = ids.map(|i| parse_subject(i).expect("subject"));
    write_tls_dir(&good, &subjects, &[]).expect("certificates");
    // Each member's listener is bound first (port 0), so the table names real ports.
    let listeners: Vec<TcpListener> = (0..3)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind"))
        .collect();
    let addrs: Vec<SocketAddr> = listeners
        .iter()
        .map(|l| l.local_addr().expect("addr"))
        .collect();
    let members: Vec<String> = (ids.iter().zip(&addrs))
        .map(|(id, a)| format!("{{ id = \"{id}\", replication = \"{a}\" }}"))
        .collect();
    let members = members.join(", ");
    let nodes: Vec<Node> = (ids.iter().zip(listeners))
        .map(|(id, l)| start(&config(dir.path(), id, &members, &good), l))
        .collect();

    let deadline = Instant::now() + BOUND;
    let primary = loop {
        if let Some(p) = primary_of(&nodes) {
            break p;
        }
        assert!(
            Instant::now() < deadline,
            "no primary elected within {BOUND:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(primary.status().transport.ends_with("+tls"));
    let lsn = primary
        .append(
            Bytes::from_static(b"elected over TLS"),
            DurabilityLevel::RemoteDurable,
        )
        .expect("append")
        .wait()
        .expect("acknowledged at remote_durable");
    assert!(lsn.0 >= 1);
    for n in &nodes {
        assert_eq!(n.tls_failures(), 0, "no TLS failure between members");
    }
    drop(nodes);
}
