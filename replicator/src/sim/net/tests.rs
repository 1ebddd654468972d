//! Tests of the simulated network: the stream and event contract, partitions, resets, crashes,
//! hostile faults, and replay from a seed.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bytes::Bytes;

use super::{CloseReason, HostileFaults, Net, NetConfig, NetEvent};
use crate::vocab::{ConnId, Rng};

const MS: Duration = Duration::from_millis(1);
const TIMEOUT: Duration = Duration::from_secs(1);

/// Runs the network until nothing is due at or before `until`; returns what was delivered.
fn run(net: &mut Net, until: Duration) -> Vec<NetEvent> {
    let mut out = Vec::new();
    while let Some(t) = net.next_delivery_time().filter(|&t| t <= until) {
        out.extend(net.pop_due(t));
    }
    out
}

fn net(seed: u64, config: NetConfig) -> Net {
    Net::new(3, config, Rng::new(seed))
}

/// A connection 0 → 1, established; returns it and the time it was.
fn connected(net: &mut Net) -> ConnId {
    let conn = net.dial(Duration::ZERO, 0, 1, TIMEOUT);
    let events = run(net, 100 * MS);
    assert_eq!(
        events,
        vec![
            NetEvent::Accepted {
                node: 1,
                conn,
                peer: 0
            },
            NetEvent::Connected { node: 0, conn },
        ]
    );
    conn
}

fn chunk(i: u32) -> Bytes {
    Bytes::copy_from_slice(&i.to_le_bytes())
}

fn delivered(events: &[NetEvent], to: usize) -> Vec<Bytes> {
    events
        .iter()
        .filter_map(|e| match e {
            NetEvent::Deliver { node, bytes, .. } if *node == to => Some(bytes.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn each_direction_is_fifo_whatever_the_delays() {
    let config = NetConfig {
        latency_max: 50 * MS,
        spike_per_million: 200_000,
        ..NetConfig::default()
    };
    let mut net = net(11, config);
    let conn = connected(&mut net);
    let start = 100 * MS;
    for i in 0..200 {
        let at = start + Duration::from_micros(u64::from(i) * 10);
        net.send(at, 0, conn, chunk(i));
        net.send(at, 1, conn, chunk(1000 + i));
    }
    let events = run(&mut net, Duration::from_secs(10));
    assert_eq!(
        delivered(&events, 1),
        (0..200).map(chunk).collect::<Vec<_>>()
    );
    assert_eq!(
        delivered(&events, 0),
        (1000..1200).map(chunk).collect::<Vec<_>>()
    );
}

#[test]
fn a_partition_holds_traffic_and_a_heal_delivers_it_in_order() {
    let mut net = net(3, NetConfig::default());
    let conn = connected(&mut net);
    net.send(100 * MS, 0, conn, chunk(1));
    net.partition(100 * MS, 0, 1, true);
    net.send(101 * MS, 0, conn, chunk(2));
    net.send(101 * MS, 1, conn, chunk(3));
    let events = run(&mut net, Duration::from_secs(2));
    assert_eq!(
        delivered(&events, 0),
        vec![chunk(3)],
        "the open direction stalled"
    );
    assert!(
        delivered(&events, 1).is_empty(),
        "the blocked direction delivered"
    );
    net.heal_all(Duration::from_secs(2));
    net.send(Duration::from_secs(2), 0, conn, chunk(4));
    let events = run(&mut net, Duration::from_secs(3));
    assert_eq!(delivered(&events, 1), vec![chunk(1), chunk(2), chunk(4)]);
}

#[test]
fn a_connection_stalled_by_a_partition_is_reset_and_new_ones_work_after_the_heal() {
    let mut net = net(5, NetConfig::default());
    let conn = connected(&mut net);
    net.partition(100 * MS, 1, 0, false);
    net.send(200 * MS, 0, conn, chunk(1));
    let events = run(&mut net, Duration::from_secs(10));
    let closed: Vec<_> = events
        .iter()
        .filter(|e| {
            matches!(
                e,
                NetEvent::Closed {
                    why: CloseReason::Stalled,
                    ..
                }
            )
        })
        .map(NetEvent::node)
        .collect();
    assert_eq!(closed.len(), 2, "{events:?}");
    assert_eq!(net.conn_count(), 0);
    let now = Duration::from_secs(10);
    let refused = net.dial(now, 1, 0, TIMEOUT);
    let events = run(&mut net, now + 2 * TIMEOUT);
    let expected = NetEvent::Closed {
        node: 1,
        conn: refused,
        why: CloseReason::ConnectTimeout,
    };
    assert_eq!(events, vec![expected], "a dial across the partition");
    let now = now + 2 * TIMEOUT;
    net.heal(now, 0, 1);
    let conn = net.dial(now, 1, 0, TIMEOUT);
    net.send(now, 1, conn, chunk(9));
    let events = run(&mut net, now + TIMEOUT);
    assert_eq!(delivered(&events, 0), vec![chunk(9)]);
}

#[test]
fn a_dial_to_a_node_that_does_not_listen_is_refused() {
    let mut net = net(1, NetConfig::default());
    net.set_listening(2, false);
    let conn = net.dial(Duration::ZERO, 0, 2, TIMEOUT);
    let events = run(&mut net, TIMEOUT);
    assert_eq!(
        events,
        vec![NetEvent::Closed {
            node: 0,
            conn,
            why: CloseReason::Refused
        }]
    );
    assert_eq!(net.conn_count(), 0);
}

#[test]
fn a_close_delivers_what_was_sent_then_closes_each_end_once() {
    let mut net = net(2, NetConfig::default());
    let conn = connected(&mut net);
    net.send(100 * MS, 0, conn, chunk(1));
    net.send(100 * MS, 1, conn, chunk(2));
    net.close(100 * MS, 0, conn);
    net.close(100 * MS, 0, conn);
    net.send(100 * MS, 0, conn, chunk(3));
    let events = run(&mut net, TIMEOUT);
    assert_eq!(
        events,
        vec![
            NetEvent::Closed {
                node: 0,
                conn,
                why: CloseReason::LocalClose
            },
            NetEvent::Deliver {
                node: 1,
                conn,
                bytes: chunk(1)
            },
            NetEvent::Closed {
                node: 1,
                conn,
                why: CloseReason::PeerClosed
            },
        ]
    );
    assert_eq!(net.conn_count(), 0);
}

#[test]
fn a_half_open_reset_closes_one_end_and_silences_the_other() {
    let mut net = net(4, NetConfig::default());
    let conn = connected(&mut net);
    net.reset(100 * MS, conn, true);
    let events = run(&mut net, TIMEOUT);
    assert_eq!(events.len(), 1, "{events:?}");
    let NetEvent::Closed {
        node: gone,
        why: CloseReason::Reset,
        ..
    } = events[0]
    else {
        panic!("not a reset: {events:?}");
    };
    let survivor = 1 - gone;
    assert_eq!(net.conns_of(survivor), vec![conn]);
    net.send(TIMEOUT, survivor, conn, chunk(1));
    assert!(
        run(&mut net, 2 * TIMEOUT).is_empty(),
        "a send to a reset end arrived"
    );
    net.close(2 * TIMEOUT, survivor, conn);
    assert_eq!(run(&mut net, 3 * TIMEOUT).len(), 1);
    assert_eq!(net.conn_count(), 0);
}

#[test]
fn a_crashed_node_hears_nothing_and_its_peers_hear_it_crashed() {
    let mut net = net(6, NetConfig::default());
    let conn = connected(&mut net);
    let other = net.dial(100 * MS, 2, 0, TIMEOUT);
    run(&mut net, 200 * MS);
    net.send(200 * MS, 1, conn, chunk(1));
    net.reset_node(200 * MS, 0);
    net.set_listening(0, false);
    let events = run(&mut net, TIMEOUT);
    let mut seen: Vec<_> = events
        .iter()
        .map(|e| (e.node(), e.conn(), e.clone()))
        .collect();
    seen.sort_by_key(|s| (s.0, s.1));
    let crashed = |node, conn| NetEvent::Closed {
        node,
        conn,
        why: CloseReason::PeerCrashed,
    };
    assert_eq!(
        seen.into_iter().map(|s| s.2).collect::<Vec<_>>(),
        vec![crashed(1, conn), crashed(2, other)]
    );
    assert_eq!(net.conn_count(), 0);
}

#[test]
fn hostile_faults_duplicate_reorder_and_drop_chunks() {
    let all = |hostile| NetConfig {
        hostile,
        ..NetConfig::default()
    };
    let duplicate = HostileFaults {
        duplicate_per_million: 1_000_000,
        ..HostileFaults::default()
    };
    let reorder = HostileFaults {
        reorder_per_million: 1_000_000,
        ..HostileFaults::default()
    };
    let lose = HostileFaults {
        drop_per_million: 1_000_000,
        ..HostileFaults::default()
    };
    let cases = [
        (duplicate, vec![chunk(1), chunk(1), chunk(2), chunk(2)]),
        (reorder, vec![chunk(2), chunk(1)]),
        (lose, vec![]),
    ];
    for (hostile, expected) in cases {
        let mut net = net(8, all(hostile));
        let conn = connected(&mut net);
        net.send(100 * MS, 0, conn, chunk(1));
        net.send(100 * MS, 0, conn, chunk(2));
        let events = run(&mut net, TIMEOUT);
        assert_eq!(delivered(&events, 1), expected, "{hostile:?}");
    }
}

/// What the nodes of a random run know, checked against the transport's contract.
#[derive(Default)]
struct Nodes {
    /// Ends each node holds: connection → whether it is established.
    ends: BTreeMap<(usize, ConnId), bool>,
    sent: BTreeMap<(usize, ConnId), Vec<u8>>,
    received: BTreeMap<(usize, ConnId), Vec<u8>>,
    trace: Vec<(Duration, NetEvent)>,
}

impl Nodes {
    fn take(&mut self, now: Duration, events: Vec<NetEvent>) {
        for e in events {
            let key = (e.node(), e.conn());
            match &e {
                NetEvent::Accepted { .. } => {
                    assert!(
                        self.ends.insert(key, true).is_none(),
                        "accepted twice: {e:?}"
                    )
                }
                NetEvent::Connected { .. } => {
                    assert_eq!(self.ends.insert(key, true), Some(false), "{e:?}")
                }
                NetEvent::Deliver { bytes, .. } => {
                    assert_eq!(
                        self.ends.get(&key),
                        Some(&true),
                        "data before or after: {e:?}"
                    );
                    self.received
                        .entry(key)
                        .or_default()
                        .extend_from_slice(bytes);
                }
                NetEvent::Closed { .. } => {
                    assert!(self.ends.remove(&key).is_some(), "closed twice: {e:?}")
                }
            }
            self.trace.push((now, e));
        }
    }

    fn pick(&self, rng: &mut Rng) -> Option<(usize, ConnId)> {
        let ends: Vec<_> = self.ends.keys().copied().collect();
        (!ends.is_empty()).then(|| ends[rng.below(ends.len() as u64) as usize])
    }
}

/// Short, so that dials across partitions time out before the next heal.
const CHAOS_CONNECT_TIMEOUT: Duration = Duration::from_millis(100);

/// One random step of a chaos run.
fn step(net: &mut Net, nodes: &mut Nodes, rng: &mut Rng, now: Duration, i: u32) {
    let n = 4;
    let (a, b) = (rng.below(n) as usize, rng.below(n) as usize);
    match rng.below(13) {
        0..=1 if a != b => {
            let conn = net.dial(now, a, b, CHAOS_CONNECT_TIMEOUT);
            nodes.ends.insert((a, conn), false);
        }
        2..=6 => {
            if let Some((node, conn)) = nodes.pick(rng) {
                let bytes = Bytes::from(format!("<{i}>").into_bytes());
                nodes
                    .sent
                    .entry((node, conn))
                    .or_default()
                    .extend_from_slice(&bytes);
                net.send(now, node, conn, bytes);
            }
        }
        7 => {
            if let Some((node, conn)) = nodes.pick(rng) {
                net.close(now, node, conn);
            }
        }
        8 => {
            if let Some((_, conn)) = nodes.pick(rng) {
                net.reset(now, conn, rng.chance(500_000));
            }
        }
        9 if a != b => net.partition(now, a, b, rng.chance(500_000)),
        10 => net.heal_all(now),
        11 => {
            net.reset_node(now, a);
            net.set_listening(a, false);
            nodes.ends.retain(|k, _| k.0 != a);
        }
        12 => net.set_listening(a, true),
        _ => {}
    }
}

/// A random run on four nodes, then a heal and every end closed. Returns the trace.
fn chaos(seed: u64, config: NetConfig) -> Nodes {
    let mut rng = Rng::new(seed);
    let mut net = Net::new(4, config, Rng::new(seed.rotate_left(17)));
    let mut nodes = Nodes::default();
    let mut now = Duration::ZERO;
    for i in 0..600 {
        step(&mut net, &mut nodes, &mut rng, now, i);
        now += Duration::from_micros(rng.below(20_000));
        let events = run(&mut net, now);
        nodes.take(now, events);
    }
    net.heal_all(now);
    net.set_config(NetConfig::default());
    for (node, conn) in nodes.ends.keys().copied().collect::<Vec<_>>() {
        net.close(now, node, conn);
    }
    let events = run(&mut net, now + 60 * TIMEOUT);
    nodes.take(now, events);
    assert!(nodes.ends.is_empty(), "ends never closed: {:?}", nodes.ends);
    assert_eq!(net.conn_count(), 0);
    assert_eq!(net.next_delivery_time(), None);
    nodes
}

fn faulty() -> NetConfig {
    NetConfig {
        latency_max: 20 * MS,
        spike_per_million: 50_000,
        stall_reset_after: 200 * MS,
        reset_per_million: 5_000,
        half_open_per_million: 300_000,
        ..NetConfig::default()
    }
}

#[test]
fn chaos_keeps_the_contract_and_every_stream_is_a_prefix_of_what_was_sent() {
    let mut reasons = BTreeSet::new();
    for seed in 0..40 {
        let nodes = chaos(seed, faulty());
        reasons.extend(nodes.trace.iter().filter_map(|(_, e)| match e {
            NetEvent::Closed { why, .. } => Some(*why),
            _ => None,
        }));
        let mut streams = 0;
        for ((node, conn), got) in &nodes.received {
            let sender = nodes.sent.iter().find(|((n, c), _)| c == conn && n != node);
            let sent = sender.map(|(_, s)| s.as_slice()).unwrap_or_default();
            assert!(
                sent.starts_with(got),
                "seed {seed}: conn {conn} to {node} is not a prefix"
            );
            streams += 1;
        }
        assert!(streams > 0, "seed {seed}: nothing delivered");
    }
    assert_eq!(
        reasons.len(),
        7,
        "some ends never closed this way: {reasons:?}"
    );
}

#[test]
fn chaos_with_hostile_faults_keeps_the_event_contract() {
    let config = NetConfig {
        hostile: HostileFaults {
            duplicate_per_million: 50_000,
            reorder_per_million: 50_000,
            drop_per_million: 50_000,
        },
        ..faulty()
    };
    for seed in 0..20 {
        chaos(seed, config);
    }
}

#[test]
fn the_same_seed_replays_the_same_events() {
    let config = NetConfig {
        hostile: HostileFaults {
            reorder_per_million: 20_000,
            ..HostileFaults::default()
        },
        ..faulty()
    };
    let a = chaos(42, config).trace;
    assert_eq!(a, chaos(42, config).trace);
    assert_ne!(a, chaos(43, config).trace);
    assert!(a.len() > 100, "a short run: {} events", a.len());
}
