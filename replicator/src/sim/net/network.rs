//! The simulated network itself: dials, sends, closes, faults, and the delivery of what is
//! due. See the parent module for the model and its contract.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use bytes::Bytes;

use super::config::check_config;
use super::stream::{Conn, End, EndState, Entry, Item, Key, Side, Timeline};
use super::{CloseReason, NetConfig, NetEvent};
use crate::vocab::{ConnId, Rng};

/// The simulated network; its model and contract are [the module's](super).
///
/// Every call that takes `now` panics if `now` is before the time an earlier call gave: the
/// simulator's clock only moves forward. Node numbers outside `0..n` panic too. Both are bugs
/// of the simulator, never of the replicas; what a replica can cause (a send on a closed or
/// unknown connection, a second close) is ignored, as a transport ignores it.
#[derive(Debug)]
pub struct Net {
    nodes: usize,
    config: NetConfig,
    rng: Rng,
    next_conn: u64,
    timeline: Timeline,
    conns: BTreeMap<ConnId, Conn>,
    /// Blocked directions, `(from, to)`.
    blocked: BTreeSet<(usize, usize)>,
    /// Nodes that accept no connections (down).
    deaf: BTreeSet<usize>,
    /// The latest time a call gave: time never goes back.
    now: Duration,
}

impl Net {
    /// A network of `nodes` nodes numbered `0..nodes`, each listening, nothing blocked; every
    /// random choice is drawn from `rng`.
    ///
    /// # Panics
    /// If `config.latency_min > config.latency_max`.
    pub fn new(nodes: usize, config: NetConfig, rng: Rng) -> Net {
        check_config(&config);
        Net {
            nodes,
            config,
            rng,
            next_conn: 1,
            timeline: Timeline::default(),
            conns: BTreeMap::new(),
            blocked: BTreeSet::new(),
            deaf: BTreeSet::new(),
            now: Duration::ZERO,
        }
    }

    /// The behaviour in force.
    pub fn config(&self) -> &NetConfig {
        &self.config
    }

    /// Changes the behaviour from now on (items already scheduled keep their times).
    ///
    /// # Panics
    /// As [`Net::new`].
    pub fn set_config(&mut self, config: NetConfig) {
        check_config(&config);
        self.config = config;
    }

    /// `from` starts a connection to `to`. `from` hears [`NetEvent::Connected`] one round trip
    /// later, or [`NetEvent::Closed`] (refused, or timed out after `timeout`); `to` hears
    /// [`NetEvent::Accepted`] when the SYN arrives, if it listens.
    ///
    /// # Panics
    /// On a node dialing itself (and as every call, see [`Net`]).
    pub fn dial(&mut self, now: Duration, from: usize, to: usize, timeout: Duration) -> ConnId {
        self.advance(now);
        self.check_node(from);
        self.check_node(to);
        assert!(from != to, "node {from} dials itself");
        let conn = ConnId(self.next_conn);
        self.next_conn += 1;
        let ends = [End::new(from), End::new(to)];
        self.conns.insert(conn, Conn { ends });
        self.timeline
            .schedule(now + timeout, Entry::ConnectDeadline { conn });
        self.push(now, conn, Side::Acceptor, Item::Syn);
        conn
    }

    /// `node` sends `bytes` on `conn`, after everything it sent before. Bytes on a connection
    /// the node has no live end of are dropped, as a transport drops them.
    pub fn send(&mut self, now: Duration, node: usize, conn: ConnId, bytes: Bytes) {
        self.advance(now);
        let Some(side) = self.live_side(node, conn) else {
            return;
        };
        if bytes.is_empty() {
            return;
        }
        if self.roll(self.config.reset_per_million) {
            let half_open = self.roll(self.config.half_open_per_million);
            self.reset(now, conn, half_open);
            return;
        }
        let hostile = self.config.hostile;
        if self.roll(hostile.drop_per_million) {
            return;
        }
        let toward = side.other();
        let before = self.conns[&conn].end(toward).inbound.last_key;
        let key = self.push(now, conn, toward, Item::Data(bytes.clone()));
        if self.roll(hostile.duplicate_per_million) {
            self.push(now, conn, toward, Item::Data(bytes));
        }
        if self.roll(hostile.reorder_per_million) {
            self.swap_data(before, key);
        }
    }

    /// `node` closes its end of `conn`: it hears [`NetEvent::Closed`] now, and the peer hears
    /// it after everything already sent to it. Nothing else reaches `node` on `conn`.
    pub fn close(&mut self, now: Duration, node: usize, conn: ConnId) {
        self.advance(now);
        let Some(side) = self.live_side(node, conn) else {
            return;
        };
        let fin = Item::Close(CloseReason::PeerClosed);
        self.push(now, conn, side.other(), fin);
        self.end_with(conn, side, CloseReason::LocalClose, now);
        self.reap(conn);
    }

    /// Resets `conn` (a fault): both ends hear [`CloseReason::Reset`] after a delay, or, with
    /// `half_open`, only one of them, chosen at random, while the other hears nothing more.
    pub fn reset(&mut self, now: Duration, conn: ConnId, half_open: bool) {
        self.advance(now);
        self.reset_with(now, conn, half_open, CloseReason::Reset);
    }

    /// `node` crashed: its ends of every connection vanish without events; each peer hears
    /// [`CloseReason::PeerCrashed`] after what was already on its way to it (later, if a
    /// partition holds it). Whether `node` listens is left as it was
    /// ([`Net::set_listening`]).
    pub fn reset_node(&mut self, now: Duration, node: usize) {
        self.advance(now);
        self.check_node(node);
        let conns: Vec<(ConnId, Side)> = self
            .conns
            .iter()
            .filter_map(|(id, c)| c.side_of(node).map(|s| (*id, s)))
            .collect();
        for (conn, side) in conns {
            self.vanish(conn, side);
            let rst = Item::Close(CloseReason::PeerCrashed);
            self.push(now, conn, side.other(), rst);
            self.reap(conn);
        }
    }

    /// Whether `node` accepts connections; a SYN reaching a node that does not is refused.
    pub fn set_listening(&mut self, node: usize, listening: bool) {
        self.check_node(node);
        if listening {
            self.deaf.remove(&node);
        } else {
            self.deaf.insert(node);
        }
    }

    /// Blocks `a` → `b`, and `b` → `a` unless `one_way`. Items in flight on a blocked
    /// direction are held (to be retransmitted), as is everything sent on it from now on.
    ///
    /// # Panics
    /// On `a == b` (and as every call, see [`Net`]).
    pub fn partition(&mut self, now: Duration, a: usize, b: usize, one_way: bool) {
        self.advance(now);
        self.check_node(a);
        self.check_node(b);
        assert!(a != b, "partition of node {a} from itself");
        self.blocked.insert((a, b));
        if !one_way {
            self.blocked.insert((b, a));
        }
        for (conn, side) in self.streams(|net, c, s| net.is_blocked_toward(c, s)) {
            self.hold_in_flight(now, conn, side);
        }
    }

    /// Unblocks `a` ↔ `b` both ways; what the partition held is sent on now, in order.
    pub fn heal(&mut self, now: Duration, a: usize, b: usize) {
        self.advance(now);
        self.blocked.remove(&(a, b));
        self.blocked.remove(&(b, a));
        self.release_held(now);
    }

    /// Unblocks every direction; what partitions held is sent on now, in order.
    pub fn heal_all(&mut self, now: Duration) {
        self.advance(now);
        self.blocked.clear();
        self.release_held(now);
    }

    /// Whether `from` → `to` is blocked.
    pub fn is_blocked(&self, from: usize, to: usize) -> bool {
        self.blocked.contains(&(from, to))
    }

    /// The connections `node` has a live end of (established, or its own dial in progress).
    pub fn conns_of(&self, node: usize) -> Vec<ConnId> {
        self.conns
            .iter()
            .filter(|(_, c)| c.side_of(node).is_some_and(|s| c.end(s).live(s)))
            .map(|(id, _)| *id)
            .collect()
    }

    /// Connections not yet finished at both ends.
    pub fn conn_count(&self) -> usize {
        self.conns.len()
    }

    /// When the next scheduled item is due, if any. Popping it may produce no event (an
    /// internal timer, or an item for an end that has gone).
    pub fn next_delivery_time(&self) -> Option<Duration> {
        self.timeline.entries.keys().next().map(|k| k.0)
    }

    /// Everything due at or before `now`, in delivery order.
    pub fn pop_due(&mut self, now: Duration) -> Vec<NetEvent> {
        self.advance(now);
        let mut out = Vec::new();
        while let Some(entry) = self.pop_entry(now) {
            match entry {
                Entry::Item { conn, toward, item } => {
                    self.arrive(now, conn, toward, item, &mut out)
                }
                Entry::ConnectDeadline { conn } => self.connect_deadline(now, conn),
                Entry::StallCheck { conn } => self.stall_check(now, conn),
            }
        }
        if cfg!(debug_assertions) {
            self.check_invariants();
        }
        out
    }

    /// Checks the bookkeeping: finished connections are forgotten, ends that expect nothing
    /// more have nothing on the way, every scheduled entry belongs to a known connection.
    ///
    /// # Panics
    /// When one does not hold: a bug in this model.
    pub fn check_invariants(&self) {
        for (id, c) in &self.conns {
            let gone = |s: Side| c.end(s).state == EndState::Gone;
            assert!(
                !(gone(Side::Dialer) && gone(Side::Acceptor)),
                "conn {id} finished but kept"
            );
            for s in [Side::Dialer, Side::Acceptor] {
                let e = c.end(s);
                let quiet = matches!(e.state, EndState::Closing | EndState::Gone);
                assert!(
                    !quiet || e.inbound.held.is_empty(),
                    "conn {id}: {s:?} end is {:?} with {} items held",
                    e.state,
                    e.inbound.held.len()
                );
                assert_eq!(e.inbound.held.is_empty(), e.inbound.held_since.is_none());
            }
        }
        for e in self.timeline.entries.values() {
            assert!(
                self.conns.contains_key(&e.conn()),
                "entry for forgotten conn {}",
                e.conn()
            );
        }
    }
}

/// The machinery behind the public calls.
impl Net {
    /// Time moves forward only: a call from the past is a bug of the simulator's loop.
    fn advance(&mut self, now: Duration) {
        assert!(
            now >= self.now,
            "time went back from {:?} to {now:?}",
            self.now
        );
        self.now = now;
    }

    fn check_node(&self, node: usize) {
        assert!(node < self.nodes, "node {node} outside 0..{}", self.nodes);
    }

    /// A fault with this chance happens now (draws nothing when the chance is 0, so that
    /// faults switched off do not shift the other choices).
    fn roll(&mut self, per_million: u32) -> bool {
        per_million > 0 && self.rng.chance(per_million)
    }

    /// A one-way delay.
    fn delay(&mut self) -> Duration {
        let NetConfig {
            latency_min,
            latency_max,
            spike_per_million,
            spike_max,
            ..
        } = self.config;
        let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let span = nanos(latency_max - latency_min).saturating_add(1);
        let mut d = latency_min + Duration::from_nanos(self.rng.below(span));
        if self.roll(spike_per_million) {
            d += Duration::from_nanos(self.rng.below(nanos(spike_max).saturating_add(1)));
        }
        d
    }

    /// The side of `conn` that `node` holds, if that end is live.
    fn live_side(&self, node: usize, conn: ConnId) -> Option<Side> {
        let c = self.conns.get(&conn)?;
        let side = c.side_of(node)?;
        c.end(side).live(side).then_some(side)
    }

    /// Sends `item` toward one end through the network: after a delay, never before an earlier
    /// item toward that end, held while the direction is blocked. Returns its key if it was
    /// scheduled. Nothing reaches an end whose `Closed` is scheduled or delivered.
    fn push(&mut self, now: Duration, conn: ConnId, toward: Side, item: Item) -> Option<Key> {
        let delay = self.delay();
        let stall = self.config.stall_reset_after;
        let c = self.conns.get_mut(&conn)?;
        let from = c.end(toward.other()).node;
        let end = c.end_mut(toward);
        if matches!(end.state, EndState::Closing | EndState::Gone) {
            return None;
        }
        let inbound = &mut end.inbound;
        if self.blocked.contains(&(from, end.node)) || !inbound.held.is_empty() {
            if inbound.held_since.is_none() {
                inbound.held_since = Some(now);
                self.timeline
                    .schedule(now + stall, Entry::StallCheck { conn });
            }
            inbound.held.push_back(item);
            return None;
        }
        let at = (now + delay).max(inbound.tail_at);
        inbound.tail_at = at;
        let key = self
            .timeline
            .schedule(at, Entry::Item { conn, toward, item });
        inbound.last_key = Some(key);
        Some(key)
    }

    /// The reorder fault: the chunks at `earlier` and `later` (adjacent in one stream) trade
    /// places, if both are chunks still in flight.
    fn swap_data(&mut self, earlier: Option<Key>, later: Option<Key>) {
        let (Some(a), Some(b)) = (earlier, later) else {
            return;
        };
        let entries = &mut self.timeline.entries;
        let is_data = |e: Option<&Entry>| {
            matches!(
                e,
                Some(Entry::Item {
                    item: Item::Data(_),
                    ..
                })
            )
        };
        if !is_data(entries.get(&a)) || !is_data(entries.get(&b)) {
            return;
        }
        let first = entries.remove(&a).expect("checked above");
        let second = entries.remove(&b).expect("checked above");
        entries.insert(a, second);
        entries.insert(b, first);
    }

    /// Schedules `Closed` for one end at `at`, dropping whatever was on its way to it; an end
    /// whose node never heard of the connection just goes.
    fn end_with(&mut self, conn: ConnId, side: Side, why: CloseReason, at: Duration) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let end = c.end_mut(side);
        if matches!(end.state, EndState::Closing | EndState::Gone) {
            return;
        }
        let live = end.live(side);
        self.vanish(conn, side);
        if live {
            let c = self.conns.get_mut(&conn).expect("looked up above");
            c.end_mut(side).state = EndState::Closing;
            let item = Item::Close(why);
            self.timeline.schedule(
                at,
                Entry::Item {
                    conn,
                    toward: side,
                    item,
                },
            );
        }
    }

    /// One end goes without an event: nothing on its way to it arrives.
    fn vanish(&mut self, conn: ConnId, side: Side) {
        self.timeline.take_stream(conn, side);
        if let Some(c) = self.conns.get_mut(&conn) {
            let end = c.end_mut(side);
            end.state = EndState::Gone;
            end.inbound.held.clear();
            end.inbound.held_since = None;
            end.inbound.last_key = None;
        }
    }

    /// Forgets `conn` once both ends are gone.
    fn reap(&mut self, conn: ConnId) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let gone = |s: Side| c.end(s).state == EndState::Gone;
        if gone(Side::Dialer) && gone(Side::Acceptor) {
            self.conns.remove(&conn);
            self.timeline.forget(conn);
        }
    }

    fn reset_with(&mut self, now: Duration, conn: ConnId, half_open: bool, why: CloseReason) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let live: Vec<Side> = [Side::Dialer, Side::Acceptor]
            .into_iter()
            .filter(|&s| c.end(s).live(s))
            .collect();
        let survivor = if half_open && live.len() == 2 {
            Some(live[self.rng.below(2) as usize])
        } else {
            None
        };
        for side in [Side::Dialer, Side::Acceptor] {
            if Some(side) != survivor {
                let at = now + self.delay();
                self.end_with(conn, side, why, at);
            }
        }
        self.reap(conn);
    }
}

/// Partitions and arrivals.
impl Net {
    /// Every stream (connection, the end it goes toward) that `pick` picks.
    fn streams(&self, pick: impl Fn(&Net, &Conn, Side) -> bool) -> Vec<(ConnId, Side)> {
        let mut out = Vec::new();
        for (id, c) in &self.conns {
            for side in [Side::Dialer, Side::Acceptor] {
                if pick(self, c, side) {
                    out.push((*id, side));
                }
            }
        }
        out
    }

    /// Whether the direction toward `side`'s end is blocked.
    fn is_blocked_toward(&self, c: &Conn, side: Side) -> bool {
        self.is_blocked(c.end(side.other()).node, c.end(side).node)
    }

    /// A partition catches the items in flight toward one end: they are held, before anything
    /// held already.
    fn hold_in_flight(&mut self, now: Duration, conn: ConnId, side: Side) {
        let c = self
            .conns
            .get(&conn)
            .expect("streams lists known connections");
        if matches!(c.end(side).state, EndState::Closing | EndState::Gone) {
            return;
        }
        let moved = self.timeline.take_stream(conn, side);
        if moved.is_empty() {
            return;
        }
        let stall = self.config.stall_reset_after;
        let c = self.conns.get_mut(&conn).expect("looked up above");
        let inbound = &mut c.end_mut(side).inbound;
        let mut held: VecDeque<Item> = moved.into();
        held.append(&mut inbound.held);
        inbound.held = held;
        inbound.last_key = None;
        if inbound.held_since.is_none() {
            inbound.held_since = Some(now);
            self.timeline
                .schedule(now + stall, Entry::StallCheck { conn });
        }
    }

    /// Sends on, in order, what partitions held on directions no longer blocked.
    fn release_held(&mut self, now: Duration) {
        let streams = self
            .streams(|net, c, s| !c.end(s).inbound.held.is_empty() && !net.is_blocked_toward(c, s));
        for (conn, side) in streams {
            let c = self
                .conns
                .get_mut(&conn)
                .expect("streams lists known connections");
            let inbound = &mut c.end_mut(side).inbound;
            let held = std::mem::take(&mut inbound.held);
            inbound.held_since = None;
            for item in held {
                self.push(now, conn, side, item);
            }
        }
    }

    fn pop_entry(&mut self, now: Duration) -> Option<Entry> {
        let (&key, _) = self.timeline.entries.first_key_value()?;
        if key.0 > now {
            return None;
        }
        self.timeline.entries.remove(&key)
    }

    fn arrive(
        &mut self,
        now: Duration,
        conn: ConnId,
        toward: Side,
        item: Item,
        out: &mut Vec<NetEvent>,
    ) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let end = c.end_mut(toward);
        let (node, state) = (end.node, end.state);
        if state == EndState::Gone {
            return;
        }
        match item {
            Item::Syn => self.syn_arrived(now, conn, out),
            Item::SynAck => {
                assert_eq!(
                    state,
                    EndState::Pending,
                    "conn {conn}: SYN-ACK at a {state:?} dialer"
                );
                end.state = EndState::Open;
                out.push(NetEvent::Connected { node, conn });
            }
            Item::Data(bytes) => {
                assert_eq!(
                    state,
                    EndState::Open,
                    "conn {conn}: data at a {state:?} end"
                );
                out.push(NetEvent::Deliver { node, conn, bytes });
            }
            Item::Close(why) => {
                end.state = EndState::Gone;
                out.push(NetEvent::Closed { node, conn, why });
                self.reap(conn);
            }
        }
    }

    fn syn_arrived(&mut self, now: Duration, conn: ConnId, out: &mut Vec<NetEvent>) {
        let c = self.conns.get_mut(&conn).expect("arrive looked it up");
        let (dialer, acceptor) = (c.end(Side::Dialer).node, c.end_mut(Side::Acceptor));
        let node = acceptor.node;
        assert_eq!(
            acceptor.state,
            EndState::Pending,
            "conn {conn}: a second SYN"
        );
        if self.deaf.contains(&node) {
            self.vanish(conn, Side::Acceptor);
            self.push(now, conn, Side::Dialer, Item::Close(CloseReason::Refused));
            self.reap(conn);
            return;
        }
        acceptor.state = EndState::Open;
        out.push(NetEvent::Accepted {
            node,
            conn,
            peer: dialer,
        });
        self.push(now, conn, Side::Dialer, Item::SynAck);
    }

    fn connect_deadline(&mut self, now: Duration, conn: ConnId) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        if c.end(Side::Dialer).state != EndState::Pending {
            return;
        }
        let fin = Item::Close(CloseReason::PeerClosed);
        self.push(now, conn, Side::Acceptor, fin);
        self.end_with(conn, Side::Dialer, CloseReason::ConnectTimeout, now);
        self.reap(conn);
    }

    fn stall_check(&mut self, now: Duration, conn: ConnId) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let stall = self.config.stall_reset_after;
        let stalled = [Side::Dialer, Side::Acceptor].into_iter().any(|s| {
            c.end(s)
                .inbound
                .held_since
                .is_some_and(|since| since + stall <= now)
        });
        if stalled {
            self.reset_with(now, conn, false, CloseReason::Stalled);
        }
    }
}
