//! Handler tests of the sans-I/O replica: each feeds inputs to a `Replica` and asserts the
//! exact actions it returns. Whole clusters under faults are the simulator's (`sim`).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use logship_engine::record::encode_into;
use logship_engine::{Epoch, Lsn};
use logship_replicator::backoff::BackoffConfig;
use logship_replicator::breaker::BreakerConfig;
use logship_replicator::commit::QuorumPolicy;
use logship_replicator::follower::Follower;
use logship_replicator::primary::Primary;
use logship_replicator::protocol::auth::ClusterKey;
use logship_replicator::protocol::{DurabilityLevel, Msg, RejectCode};
use logship_replicator::replica::{Replica, Role};
use logship_replicator::vocab::{
    Action, ConnId, FollowerConfig, FollowerLink, Input, NonceSource, PrimaryConfig, Tail,
    Timeouts, WaitError, WaiterId,
};

const KEY: &str = "a cluster key of some length";
const MS: Duration = Duration::from_millis(1);

fn key() -> ClusterKey {
    ClusterKey::from_bytes(KEY.as_bytes()).expect("long enough")
}

fn addr() -> SocketAddr {
    "127.0.0.1:9".parse().expect("an address")
}

/// A primary with one sync follower `f` (`FIRST 1 (f)`) or none.
fn primary_config(with_follower: bool) -> PrimaryConfig {
    PrimaryConfig {
        cluster_id: "c".into(),
        node_id: "p".into(),
        key: key().into(),
        epoch: Epoch(0),
        followers: (with_follower.then(|| FollowerLink {
            name: "f".into(),
            addr: addr(),
            sync: true,
        }))
        .into_iter()
        .collect(),
        quorum: with_follower.then(|| "FIRST 1 (f)".parse().expect("a quorum")),
        policy: QuorumPolicy::Block,
        timeouts: Timeouts::default(),
        backoff: BackoffConfig::default(),
        breaker: BreakerConfig::default(),
        max_inflight_bytes: 1 << 20,
        catch_up_chunk_bytes: 4096,
        catch_up_pacing: None,
        max_retained_bytes: None,
        failover: false,
    }
}

fn primary(with_follower: bool) -> Replica {
    let p = Primary::new(
        primary_config(with_follower),
        Lsn(1),
        Lsn::ZERO,
        Lsn::ZERO,
        7,
    );
    Replica::primary(p, NonceSource::from_u64(1))
}

fn follower() -> Replica {
    let fc = FollowerConfig {
        cluster_id: "c".into(),
        node_id: "f".into(),
        key: key().into(),
        timeouts: Timeouts::default(),
        auto_apply: true,
    };
    Replica::new_follower(fc, Tail::default(), NonceSource::from_u64(2))
}

/// One encoded record at `lsn`.
fn record(lsn: u64) -> Bytes {
    let mut b = Vec::new();
    encode_into(
        &mut b,
        Lsn(lsn),
        Epoch(0),
        format!("record {lsn}").as_bytes(),
    );
    Bytes::from(b)
}

const W: WaiterId = WaiterId(1);

#[test]
fn a_serving_primary_admits_an_append_at_once() {
    let mut p = primary(false);
    let level = DurabilityLevel::RemoteDurable;
    assert_eq!(
        p.step(MS, Input::ClientAppend { waiter: W, level }),
        vec![Action::Admit { waiter: W }]
    );
}

#[test]
fn a_follower_refuses_appends_as_not_primary() {
    let mut f = follower();
    let level = DurabilityLevel::Local;
    assert_eq!(
        f.step(MS, Input::ClientAppend { waiter: W, level }),
        vec![Action::FailWait {
            waiter: W,
            error: WaitError::NotPrimary
        }]
    );
}

#[test]
fn without_followers_every_level_follows_local_durability() {
    let mut p = primary(false);
    let written = Input::Written {
        first: Lsn(1),
        last: Lsn(1),
        records: record(1),
    };
    assert_eq!(p.step(MS, written), vec![]);
    assert_eq!(
        p.step(2 * MS, Input::Durable(Lsn(1))),
        vec![Action::Committed([Lsn(1); 4])]
    );
    assert_eq!(p.step(3 * MS, Input::Durable(Lsn(1))), vec![], "no news");
}

#[test]
fn a_closed_gate_holds_an_append_until_the_commit_timeout() {
    let mut gated = Primary::new(primary_config(true), Lsn(1), Lsn::ZERO, Lsn::ZERO, 7);
    gated.close_gate();
    let mut p = Replica::primary(gated, NonceSource::from_u64(1));
    let level = DurabilityLevel::RemoteDurable;
    assert_eq!(p.step(MS, Input::ClientAppend { waiter: W, level }), vec![]);
    let commit = Timeouts::default().commit;
    let waits = |out: Vec<Action>| -> Vec<Action> {
        out.into_iter()
            .filter(|a| matches!(a, Action::FailWait { .. } | Action::Admit { .. }))
            .collect()
    };
    assert_eq!(waits(p.step(commit, Input::Tick)), vec![]);
    let out = waits(p.step(MS + commit, Input::Tick));
    let [Action::FailWait {
        waiter: W,
        error:
            WaitError::QuorumUnavailable {
                lsn: Lsn::ZERO,
                waited,
                quorum,
                ..
            },
    }] = out.as_slice()
    else {
        panic!("expected the gate's timeout, got {out:?}");
    };
    assert_eq!(*waited, commit);
    assert!(quorum.contains("not serving yet"), "{quorum}");
    assert_eq!(p.waiting(), 0);
}

#[test]
fn a_remote_level_fails_exactly_at_its_commit_deadline() {
    let mut p = primary(true);
    p.step(
        MS,
        Input::ClientAppend {
            waiter: W,
            level: DurabilityLevel::RemoteDurable,
        },
    );
    let written = Input::Written {
        first: Lsn(1),
        last: Lsn(1),
        records: record(1),
    };
    p.step(MS, written);
    let appended = Input::Appended {
        waiter: W,
        level: DurabilityLevel::RemoteDurable,
        lsn: Lsn(1),
    };
    assert_eq!(p.step(MS, appended), vec![]);
    let local = p.step(MS, Input::Durable(Lsn(1)));
    assert_eq!(
        local,
        vec![Action::Committed([Lsn(1), Lsn::ZERO, Lsn::ZERO, Lsn::ZERO])],
        "local only: the follower has nothing"
    );
    let commit = Timeouts::default().commit;
    let fails = |out: Vec<Action>| -> Vec<Action> {
        (out.into_iter())
            .filter(|a| matches!(a, Action::FailWait { .. }))
            .collect()
    };
    assert_eq!(fails(p.step(MS + commit - MS, Input::Tick)), vec![]);
    let out = fails(p.step(MS + commit, Input::Tick));
    assert!(
        matches!(
            out.as_slice(),
            [Action::FailWait {
                waiter: W,
                error: WaitError::QuorumUnavailable { lsn: Lsn(1), level: DurabilityLevel::RemoteDurable, waited, .. }
            }] if *waited == commit
        ),
        "{out:?}"
    );
    assert_eq!(p.counters().quorum_timeouts, 1);
}

#[test]
fn a_failed_log_fails_everything_and_refuses_later_appends() {
    let mut p = primary(false);
    let out = p.step(
        MS,
        Input::LogFailed {
            cause: "fdatasync: EIO".into(),
        },
    );
    assert_eq!(
        out,
        vec![Action::FailAll {
            cause: "fdatasync: EIO".into()
        }]
    );
    assert!(!p.serving());
    let level = DurabilityLevel::Local;
    assert_eq!(
        p.step(2 * MS, Input::ClientAppend { waiter: W, level }),
        vec![Action::FailWait {
            waiter: W,
            error: WaitError::Poisoned {
                cause: "fdatasync: EIO".into()
            }
        }]
    );
}

#[test]
fn a_malformed_frame_refuses_the_session_and_is_counted() {
    let mut f = follower();
    let c = ConnId(4);
    assert_eq!(
        f.step(
            MS,
            Input::Accepted {
                conn: c,
                peer: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            }
        ),
        vec![]
    );
    let garbage = BytesMut::from(&[0xff; 64][..]);
    let out = f.step(
        2 * MS,
        Input::Data {
            conn: c,
            bytes: garbage,
        },
    );
    assert!(
        matches!(
            out.as_slice(),
            [
                Action::Send { conn, msg: Msg::Reject { code: RejectCode::Protocol, .. } },
                Action::Close { conn: closed, .. },
            ] if *conn == c && *closed == c
        ),
        "{out:?}"
    );
    assert_eq!(f.counters().malformed_frames, 1);
    let more = BytesMut::from(&[0; 8][..]);
    assert_eq!(
        f.step(
            3 * MS,
            Input::Data {
                conn: c,
                bytes: more
            }
        ),
        vec![],
        "nothing more is decoded on a refused connection"
    );
}

/// Delivers every `Send` in `out` on `conn` to `to` as bytes, returning what `to` did.
fn deliver(to: &mut Replica, now: Duration, out: &[Action]) -> Vec<Action> {
    let mut next = Vec::new();
    for a in out {
        if let Action::Send { conn, msg } = a {
            let input = Input::Data {
                conn: *conn,
                bytes: msg.encode().into(),
            };
            next.extend(to.step(now, input));
        }
    }
    next
}

#[test]
fn a_follower_acknowledges_records_only_after_handing_them_to_the_log() {
    let (mut p, mut f) = (primary(true), follower());
    let c = ConnId(1);
    let dial = p.step(MS, Input::Tick);
    assert!(
        matches!(dial.as_slice(), [Action::Connect { link: 0, .. }]),
        "{dial:?}"
    );
    assert_eq!(p.step(MS, Input::Dialed { link: 0, conn: c }), vec![]);
    f.step(
        MS,
        Input::Accepted {
            conn: c,
            peer: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        },
    );
    let hello = p.step(MS, Input::Connected { conn: c });
    let reply = deliver(&mut f, MS, &hello);
    let start = deliver(&mut p, MS, &reply);
    let ack = deliver(&mut f, MS, &start);
    deliver(&mut p, MS, &ack);
    let batch = p.step(
        2 * MS,
        Input::Written {
            first: Lsn(1),
            last: Lsn(1),
            records: record(1),
        },
    );
    let out = deliver(&mut f, 2 * MS, &batch);
    assert!(
        matches!(
            out.as_slice(),
            [
                Action::Append {
                    first: Lsn(1),
                    last: Lsn(1),
                    ..
                },
                Action::Send {
                    msg: Msg::Ack {
                        write: Lsn(1),
                        durable: Lsn::ZERO,
                        ..
                    },
                    ..
                },
            ]
        ),
        "the Append comes before the Ack that reports it: {out:?}"
    );
    let durable = f.step(3 * MS, Input::Durable(Lsn(1)));
    assert!(
        matches!(
            durable.as_slice(),
            [Action::Send {
                msg: Msg::Ack {
                    durable: Lsn(1),
                    ..
                },
                ..
            }]
        ),
        "{durable:?}"
    );
    p.step(3 * MS, Input::Durable(Lsn(1)));
    let committed = deliver(&mut p, 3 * MS, &durable);
    assert!(
        committed.contains(&Action::Committed([Lsn(1); 4])),
        "remote durable once the follower's sync is reported: {committed:?}"
    );
}

#[test]
fn a_primary_that_becomes_a_follower_closes_its_sessions_and_fails_its_waiters() {
    let mut p = primary(true);
    let c = ConnId(3);
    p.step(MS, Input::Tick);
    p.step(MS, Input::Dialed { link: 0, conn: c });
    p.step(MS, Input::Connected { conn: c });
    let level = DurabilityLevel::RemoteDurable;
    assert_eq!(
        p.step(MS, Input::ClientAppend { waiter: W, level }),
        vec![Action::Admit { waiter: W }]
    );
    let fc = FollowerConfig {
        cluster_id: "c".into(),
        node_id: "p".into(),
        key: key().into(),
        timeouts: Timeouts::default(),
        auto_apply: true,
    };
    let role = Role::Follower(Box::new(Follower::new(fc, Tail::default())));
    assert_eq!(
        p.change_role(role),
        vec![
            Action::Close {
                conn: c,
                reason: "this node's role changed".into()
            },
            Action::FailWaiting {
                error: WaitError::NotPrimary
            },
        ]
    );
    assert!(p.as_follower().is_some() && !p.serving());
    assert_eq!(
        p.step(
            2 * MS,
            Input::ClientAppend {
                waiter: WaiterId(2),
                level
            }
        ),
        vec![Action::FailWait {
            waiter: WaiterId(2),
            error: WaitError::NotPrimary
        }]
    );
}
