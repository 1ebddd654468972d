//! In-process clusters on 127.0.0.1: a primary and followers as `Node`s in one process, real
//! logs in temporary directories, real TCP.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use logship_engine::Lsn;
use logship_replicator::config::{LogBackend, NodeConfig};
use logship_replicator::{DurabilityLevel, Node};

const KEY: &str = "0123456789abcdef0123456789abcdef";

fn write_key(dir: &Path, key: &str) -> std::path::PathBuf {
    let p = dir.join(format!("key-{}", key.len()));
    std::fs::write(&p, key).unwrap();
    p
}

/// The transport under test: `LOGSHIP_TEST_TRANSPORT` (`portable` by default, `io_uring`).
fn transport() -> String {
    std::env::var("LOGSHIP_TEST_TRANSPORT").unwrap_or_else(|_| "portable".into())
}

/// Starts the node `text` configures, on the log backend under test: `LOGSHIP_TEST_BACKEND`
/// (`portable` by default, `io_uring`, `io_uring_direct`).
fn start(text: &str) -> Node {
    let mut config = NodeConfig::parse(text).unwrap();
    config.log.backend = match std::env::var("LOGSHIP_TEST_BACKEND").as_deref() {
        Err(_) | Ok("portable") => LogBackend::Portable,
        Ok("io_uring") => LogBackend::IoUring,
        Ok("io_uring_direct") => LogBackend::IoUringDirect,
        Ok(other) => panic!("LOGSHIP_TEST_BACKEND={other}: not a log backend"),
    };
    Node::start(config).unwrap()
}

fn follower(dir: &Path, name: &str, key: &str) -> Node {
    let text = format!(
        "[node]\ntransport = \"{}\"\nid = \"{name}\"\nrole = \"follower\"\ncluster_id = \"test\"\nkey_file = \"{}\"\ndata_dir = \"{}\"\nlisten_replication = \"127.0.0.1:0\"\n",
        transport(),
        write_key(dir, key).display(),
        dir.join(name).display()
    );
    start(&text)
}

fn primary(dir: &Path, followers: &[(&str, SocketAddr, &str)], extra: &str) -> Node {
    let list: Vec<String> = followers
        .iter()
        .map(|(n, a, m)| format!("{{ name = \"{n}\", addr = \"{a}\", mode = \"{m}\" }}"))
        .collect();
    let text = format!(
        "[node]\ntransport = \"{}\"\nid = \"p\"\nrole = \"primary\"\ncluster_id = \"test\"\nkey_file = \"{}\"\ndata_dir = \"{}\"\nlisten_http = \"127.0.0.1:0\"\n[replication]\nfollowers = [{}]\n{extra}",
        transport(),
        write_key(dir, KEY).display(),
        dir.join("p").display(),
        list.join(", ")
    );
    start(&text)
}

/// A primary whose one follower `a` is a sync follower, with `extra` in its configuration;
/// returns (primary, follower).
fn with_sync_follower(dir: &Path, extra: &str) -> (Node, Node) {
    let a = follower(dir, "a", KEY);
    let p = primary(dir, &[("a", a.replication_addr().unwrap(), "sync")], extra);
    (p, a)
}

fn all_bytes(node: &Node, upto: Lsn) -> Vec<u8> {
    let mut r = node.log().read_from(Lsn::ZERO).unwrap();
    let mut out = Vec::new();
    while let Some(c) = r.next_chunk(1 << 20) {
        let c = c.unwrap();
        // The records, without the write markers of the log they were read from.
        for item in logship_engine::record::run(&c.bytes) {
            let (at, r) = item.unwrap();
            out.extend_from_slice(&c.bytes[at..at + r.encoded_len()]);
        }
        if c.last >= upto {
            break;
        }
    }
    out
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn records_reach_sync_and_async_followers_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let a = follower(dir.path(), "a", KEY);
    let b = follower(dir.path(), "b", KEY);
    let p = primary(
        dir.path(),
        &[
            ("a", a.replication_addr().unwrap(), "sync"),
            ("b", b.replication_addr().unwrap(), "async"),
        ],
        "quorum = \"ANY 1 (a)\"\n",
    );
    let mut last = Lsn::ZERO;
    for i in 0..500u32 {
        let c = p
            .append(
                Bytes::from(format!("record {i}")),
                DurabilityLevel::RemoteDurable,
            )
            .unwrap();
        last = c.wait().unwrap();
    }
    assert_eq!(last, Lsn(500));
    assert!(
        a.log().durable_lsn() >= last,
        "remote_durable: the sync follower has it durably"
    );
    wait_until("the async follower", Duration::from_secs(10), || {
        b.log().durable_lsn() >= last
    });
    let want = all_bytes(&p, last);
    assert_eq!(all_bytes(&a, last), want);
    assert_eq!(all_bytes(&b, last), want);
    let s = p.status();
    let pr = s.primary.unwrap();
    assert_eq!(pr.commit.remote_durable, 500);
    assert!(pr.followers.iter().all(|f| f.healthy), "{:?}", pr.followers);
    // One commit at a time leaves the sync follower's writer idle when the next record
    // arrives: its receiving thread writes it (`Log::append_replicated_here`). On the primary
    // the thread that waits for the commit writes its record (`Commit::wait`).
    let (fa, fp) = (a.log().stats(), p.log().stats());
    assert!(fa.caller_writes > 0, "follower: {fa:?}");
    assert!(fp.caller_writes > 0, "primary: {fp:?}");
    // Such a write is durable before the follower's written acknowledgement, queued behind it,
    // would go: the durable one sent from the write covers it, and it is not sent. So may the
    // writer thread's durable one, when it goes first: at most one superseded per record.
    let superseded = a.status().acks_superseded;
    assert!(superseded > 0, "no acknowledgement superseded");
    assert!(superseded <= fa.records, "{superseded} superseded: {fa:?}");
}

/// Caller-runs on the primary, the other ways a commit can go: one awaited (polled) or
/// dropped hands its record to the log's writer thread at once, and one held without waiting
/// has it taken when the writer thread's idle wait ends. Nothing is lost either way, and no
/// such record is written on the appending thread.
#[test]
fn a_commit_polled_dropped_or_held_leaves_its_record_to_the_writer_thread() {
    use std::future::Future;
    use std::task::{Context, Poll, Waker};
    let dir = tempfile::tempdir().unwrap();
    let (p, _a) = with_sync_follower(dir.path(), "quorum = \"ANY 1 (a)\"\n");
    let record = |i: u32| Bytes::from(format!("record {i}"));
    let before = p.log().stats().caller_writes;
    let mut cx = Context::from_waker(Waker::noop());
    for i in 0..20u32 {
        let mut polled = p.append(record(i), DurabilityLevel::Local).unwrap();
        let lsn = polled.lsn();
        if let Poll::Ready(r) = std::pin::Pin::new(&mut polled).poll(&mut cx) {
            assert_eq!(r.unwrap(), lsn);
        }
        wait_until("a polled commit's record", Duration::from_secs(10), || {
            p.log().durable_lsn() >= lsn
        });
        let dropped = p.append(record(100 + i), DurabilityLevel::Local).unwrap();
        let lsn = dropped.lsn();
        drop(dropped);
        wait_until("a dropped commit's record", Duration::from_secs(10), || {
            p.log().durable_lsn() >= lsn
        });
        let held = p.append(record(200 + i), DurabilityLevel::Local).unwrap();
        wait_until("a held commit's record", Duration::from_secs(10), || {
            p.log().durable_lsn() >= held.lsn()
        });
        assert_eq!(held.wait().unwrap().get(), 3 * u64::from(i) + 3);
    }
    assert_eq!(
        p.log().stats().caller_writes,
        before,
        "{:?}",
        p.log().stats()
    );
}

#[test]
fn a_follower_with_the_wrong_key_gets_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let bad = follower(dir.path(), "a", "another key of enough length!!");
    let p = primary(
        dir.path(),
        &[("a", bad.replication_addr().unwrap(), "sync")],
        "[timeouts]\ncommit_ms = 300\n",
    );
    // The primary's log is new: until its sync follower is heard, it cannot know that the
    // follower holds nothing it lacks, so it assigns no LSN, at any level.
    for level in [DurabilityLevel::RemoteDurable, DurabilityLevel::Local] {
        let e = p
            .append(Bytes::from_static(b"secret"), level)
            .and_then(|c| c.wait())
            .unwrap_err();
        assert!(
            matches!(e, logship_replicator::Error::QuorumUnavailable { .. }),
            "{e}"
        );
    }
    assert_eq!(
        bad.log().last_lsn(),
        Lsn::ZERO,
        "no record reached the follower"
    );
    assert_eq!(p.log().last_lsn(), Lsn::ZERO, "nor the primary's log");
    let s = p.status().primary.unwrap();
    assert!(!s.serving);
    assert!(
        s.rejected.iter().any(|(r, n)| r == "auth_failed" && *n > 0),
        "{:?}",
        s.rejected
    );
}

#[test]
fn a_restarted_follower_catches_up_from_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let a = follower(dir.path(), "a", KEY);
    let addr = a.replication_addr().unwrap();
    let p = primary(dir.path(), &[("a", addr, "async")], "");
    for i in 0..100u32 {
        p.append(Bytes::from(vec![i as u8; 1000]), DurabilityLevel::Local)
            .unwrap()
            .wait()
            .unwrap();
    }
    wait_until("first records", Duration::from_secs(10), || {
        a.log().durable_lsn() >= Lsn(100)
    });
    a.shutdown();
    for i in 0..3000u32 {
        drop(
            p.append(Bytes::from(vec![i as u8; 1000]), DurabilityLevel::Local)
                .unwrap(),
        );
    }
    let last = p.log().sync().unwrap();
    // Same directory, same address.
    let text = format!(
        "[node]\nid = \"a\"\nrole = \"follower\"\ncluster_id = \"test\"\nkey_file = \"{}\"\ndata_dir = \"{}\"\nlisten_replication = \"{addr}\"\n",
        write_key(dir.path(), KEY).display(),
        dir.path().join("a").display()
    );
    let a = start(&text);
    wait_until("catch-up", Duration::from_secs(20), || {
        a.log().durable_lsn() >= last
    });
    assert_eq!(all_bytes(&a, last), all_bytes(&p, last));
    let f = &p.status().primary.unwrap().followers[0];
    assert!(
        f.counters.chunks_sent > 0,
        "caught up from the log: {:?}",
        f.counters
    );
}

#[test]
fn purging_keeps_what_followers_need_until_an_async_follower_falls_too_far_behind() {
    let dir = tempfile::tempdir().unwrap();
    let a = follower(dir.path(), "a", KEY);
    let b = follower(dir.path(), "b", KEY);
    let b_addr = b.replication_addr().unwrap();
    let p = primary(
        dir.path(),
        &[("a", a.replication_addr().unwrap(), "sync"), ("b", b_addr, "async")],
        "max_retained_bytes = 1000000\n[log]\nsegment_size_bytes = 262144\nmax_record_bytes = 65536\n",
    );
    for i in 0..50u32 {
        p.append(
            Bytes::from(vec![i as u8; 1000]),
            DurabilityLevel::RemoteDurable,
        )
        .unwrap()
        .wait()
        .unwrap();
    }
    wait_until("b has the first records", Duration::from_secs(10), || {
        b.log().durable_lsn() >= Lsn(50)
    });
    b.shutdown();
    // Within max_retained_bytes: b's records are kept.
    for i in 0..500u32 {
        p.append(
            Bytes::from(vec![i as u8; 1000]),
            DurabilityLevel::RemoteDurable,
        )
        .unwrap()
        .wait()
        .unwrap();
    }
    let r = p.purge_before(p.log().last_lsn()).unwrap();
    assert!(r.first_lsn <= Lsn(51), "b still needs 51: {r:?}");
    // Past it: b is dropped from retention and the log is purged beyond what b has.
    for i in 0..2000u32 {
        drop(
            p.append(
                Bytes::from(vec![i as u8; 1000]),
                DurabilityLevel::RemoteDurable,
            )
            .unwrap(),
        );
    }
    let last = p.log().sync().unwrap();
    wait_until("a has everything", Duration::from_secs(10), || {
        a.log().durable_lsn() >= last
    });
    std::thread::sleep(Duration::from_millis(50));
    let s = p.status().primary.unwrap();
    assert!(
        !s.followers[1].retained,
        "b dropped from retention: {:?}",
        s.followers[1]
    );
    let r = p.purge_before(last).unwrap();
    assert!(r.first_lsn > Lsn(51), "purged past b: {r:?}");
    // b comes back and is told its records are gone.
    let text = format!(
        "[node]\nid = \"b\"\nrole = \"follower\"\ncluster_id = \"test\"\nkey_file = \"{}\"\ndata_dir = \"{}\"\nlisten_replication = \"{b_addr}\"\n",
        write_key(dir.path(), KEY).display(),
        dir.path().join("b").display()
    );
    let b = start(&text);
    wait_until("b told it was purged", Duration::from_secs(10), || {
        p.status().primary.unwrap().followers[1].purged
    });
    let s = p.status().primary.unwrap();
    assert!(
        s.rejected.iter().any(|(r, _)| r == "purged"),
        "{:?}",
        s.rejected
    );
    assert_eq!(
        b.log().last_lsn(),
        Lsn(50),
        "b got nothing it could not continue from"
    );
}

#[test]
fn truncating_the_primary_resynchronizes_its_followers() {
    let dir = tempfile::tempdir().unwrap();
    let (p, a) = with_sync_follower(dir.path(), "");
    for i in 0..100u32 {
        p.append(
            Bytes::from(format!("first {i}")),
            DurabilityLevel::RemoteDurable,
        )
        .unwrap()
        .wait()
        .unwrap();
    }
    p.log().truncate_after(Lsn(50)).unwrap();
    let mut last = Lsn::ZERO;
    for i in 0..100u32 {
        last = p
            .append(Bytes::from(format!("second {i}")), DurabilityLevel::Local)
            .unwrap()
            .wait()
            .unwrap();
    }
    assert_eq!(last, Lsn(150));
    wait_until("a resynchronized", Duration::from_secs(10), || {
        a.log().durable_lsn() >= last && all_bytes(&a, last) == all_bytes(&p, last)
    });
}

/// After its owner cuts a running primary's log, the LSNs past the cut name new records: one of
/// them must not be acknowledged at `remote_durable` on the strength of the old record that had
/// its LSN (which the follower held), only once the follower holds the new one.
#[test]
fn a_record_after_a_truncation_is_not_acknowledged_for_the_old_record_at_its_lsn() {
    let dir = tempfile::tempdir().unwrap();
    let (p, a) = with_sync_follower(dir.path(), "[timeouts]\ncommit_ms = 300\n");
    for i in 0..20u32 {
        p.append(
            Bytes::from(format!("old {i}")),
            DurabilityLevel::RemoteDurable,
        )
        .unwrap()
        .wait()
        .unwrap();
    }
    a.shutdown();
    p.log().truncate_after(Lsn(10)).unwrap();
    // Taken back before `truncate_after` returns, so before any later append is admitted.
    let commit = p.status().primary.expect("primary").commit;
    assert_eq!(
        (commit.local, commit.remote_durable),
        (10, 10),
        "levels still name records that were cut"
    );
    let e = p
        .append(
            Bytes::from_static(b"new 11"),
            DurabilityLevel::RemoteDurable,
        )
        .and_then(|c| c.wait())
        .expect_err("acknowledged at remote_durable with the only sync follower gone");
    assert!(
        matches!(e, logship_replicator::Error::QuorumUnavailable { .. }),
        "{e}"
    );
    let local = p
        .append(Bytes::from_static(b"new 12"), DurabilityLevel::Local)
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(local, Lsn(12));
    assert!(
        p.log().durable_lsn() >= Lsn(12),
        "acknowledged before it was durable"
    );
}

#[test]
fn remote_applied_waits_for_the_followers_application() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[node]\ntransport = \"{}\"\nid = \"a\"\nrole = \"follower\"\ncluster_id = \"test\"\nkey_file = \"{}\"\ndata_dir = \"{}\"\nlisten_replication = \"127.0.0.1:0\"\n[follower]\nauto_apply = false\n",
        transport(),
        write_key(dir.path(), KEY).display(),
        dir.path().join("a").display()
    );
    let a = start(&text);
    let p = primary(
        dir.path(),
        &[("a", a.replication_addr().unwrap(), "sync")],
        "",
    );
    // remote_durable does not wait for the application.
    let durable = p
        .append(Bytes::from_static(b"one"), DurabilityLevel::RemoteDurable)
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(durable, Lsn(1));
    let applied = p
        .append(Bytes::from_static(b"two"), DurabilityLevel::RemoteApplied)
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        p.status().primary.unwrap().commit.remote_applied,
        0,
        "nothing applied yet"
    );
    // The application reads the records in order, applies them, and says so.
    let mut stream = a.apply_stream(Lsn::FIRST).unwrap();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let r = stream
            .next_timeout(Duration::from_secs(5))
            .expect("a record")
            .unwrap();
        seen.push((r.lsn, r.payload.clone()));
        a.report_applied(r.lsn);
    }
    assert_eq!(
        seen,
        vec![
            (Lsn(1), Bytes::from_static(b"one")),
            (Lsn(2), Bytes::from_static(b"two"))
        ]
    );
    assert_eq!(applied.wait().unwrap(), Lsn(2));
    let f = &p.status().primary.unwrap().followers[0];
    assert_eq!(f.applied_lsn, 2);
    assert!(
        stream.next_timeout(Duration::from_millis(50)).is_none(),
        "nothing more yet"
    );
}
