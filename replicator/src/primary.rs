//! The primary's replication state machine: one [`Link`] per follower, the
//! [`CommitTracker`], the LSN→bytes index for lag, and retention.
//!
//! Pure: every method takes `now` and the event, and pushes [`Action`]s for the driver to carry
//! out (connect, send, close, read a catch-up chunk, look up a record's CRC). The driver reports
//! their outcomes back as events. Commit LSNs are read with [`Primary::committed`] after each
//! event; they only rise.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use logship_engine::{Chunk, Epoch, Lsn, RangeDigest};

use crate::backoff::Rng;
use crate::commit::{CommitTracker, DegradeChange, MemberProgress};
use crate::lag::{AckLevel, ByteIndex};
use crate::link::Ctx;
use crate::link::Link;
use crate::pacing::Pacer;
use crate::protocol::auth::NONCE_LEN;
use crate::protocol::{DurabilityLevel, FrameError, Msg, RejectCode};
use crate::status::PrimaryCounters;
use crate::status::{Behind, CommitLsns, FollowerStatus, LevelRpo, PrimaryStatus};
use crate::vocab::{Action, ConnId, EpochHistory, NodeId, PrimaryConfig, ReadError};

/// The primary's state machine.
#[derive(Debug)]
pub struct Primary {
    config: PrimaryConfig,
    links: Vec<Link>,
    retained: Vec<bool>,
    tracker: CommitTracker,
    index: ByteIndex,
    first_lsn: Lsn,
    local_durable: Lsn,
    truncated_at: Option<Lsn>,
    /// The last LSN when this primary began serving appends (at start, or when its start gate
    /// opened): a follower's records after it that differ from this log's are from a history
    /// this log lost, never acknowledged (the gate took back every acknowledged one).
    fence: Lsn,
    /// The fence was set when a closed start gate opened: every acknowledged record was taken
    /// back first, so even a fence at 0 is trusted (a primary serving at once from an empty
    /// log is not: it may be a new disk, and never empties a follower).
    gated: bool,
    /// The log was recovered at this start, not created: an empty one held nothing durable,
    /// so nothing was acknowledged, and its fence at 0 is trusted. A log created empty (a new
    /// disk, perhaps) is not: followers may hold the only copies of what a lost disk held.
    recovered_log: bool,
    /// Appends are served. Closed at start when the log may have lost records the quorum
    /// acknowledged, until enough sync followers were heard to hold every such record.
    serving: bool,
    /// The quorum as text, for status and errors (rendered once).
    quorum_text: String,
    rng: Rng,
    counters: PrimaryCounters,
    /// This log's epoch history.
    history: EpochHistory,
    /// While the start gate is closed: the quorum members heard, and where the logs of those
    /// that continue this one end (epoch, LSN).
    gate_heard: BTreeMap<NodeId, Option<(Epoch, Lsn)>>,
    /// An elected primary's epoch marker: no append is admitted before the log wrote it, so
    /// every record of the epoch follows it.
    marker: Option<Lsn>,
    /// The time of the last tick (for status).
    now: Duration,
    /// An elected primary's remote commit LSNs until its marker is committed: what it knew
    /// committed when elected (records of older epochs are committed by committing the
    /// marker, never by counting replicas of them).
    reign_floor: [Lsn; 4],
    /// Catch-up pacing, steered by foreground commit latency.
    pacer: Pacer,
}

impl Primary {
    /// A primary whose log holds `first..=last`, durable up to `durable`. `seed` drives the
    /// backoff jitter.
    pub fn new(config: PrimaryConfig, first: Lsn, last: Lsn, durable: Lsn, seed: u64) -> Primary {
        assert!(durable <= last, "durable {durable} beyond last {last}");
        let tracker = CommitTracker::new(config.quorum.clone(), config.policy, durable);
        let mut p = Primary {
            links: Vec::new(),
            retained: vec![true; config.followers.len()],
            tracker,
            index: ByteIndex::new(last),
            first_lsn: first,
            local_durable: durable,
            truncated_at: None,
            fence: last,
            gated: false,
            recovered_log: false,
            serving: true,
            quorum_text: config
                .quorum
                .as_ref()
                .map_or("none".to_string(), |q| q.to_string()),
            rng: Rng::new(seed),
            counters: PrimaryCounters::default(),
            history: EpochHistory::default(),
            gate_heard: BTreeMap::new(),
            marker: None,
            now: Duration::ZERO,
            reign_floor: [Lsn::ZERO; 4],
            pacer: Pacer::new(config.catch_up_pacing),
            config,
        };
        p.links = (p.config.followers.iter())
            .map(|f| Link::new(f.name.clone(), f.addr, f.sync, &p.config))
            .collect();
        p
    }

    fn with_ctx<T>(&mut self, i: usize, f: impl FnOnce(&mut Link, &mut Ctx<'_>) -> T) -> T {
        let taking_back = self.links.iter().any(Link::taking_back);
        let gate_needed = self.gate_needed();
        let commit_lsn = self.committed()[DurabilityLevel::RemoteDurable as usize];
        let fence = self.fence();
        let mut ctx = Ctx {
            serving: self.serving,
            taking_back,
            history: &mut self.history,
            gate_heard: &mut self.gate_heard,
            gate_needed,
            config: &self.config,
            link: i,
            first_lsn: self.first_lsn,
            last_lsn: self.index.last(),
            commit_lsn,
            truncated_at: self.truncated_at,
            fence,
            rng: &mut self.rng,
            counters: &mut self.counters,
            pacer: &mut self.pacer,
        };
        f(&mut self.links[i], &mut ctx)
    }

    fn link_of(&self, conn: ConnId) -> Option<usize> {
        self.links.iter().position(|l| l.conn() == Some(conn))
    }

    /// An elected primary: its log's history is `history`, and its epoch begins after the
    /// last record (with the marker the replica asks the executor to append).
    pub fn begin_epoch(&mut self, mut history: EpochHistory, known_committed: Lsn) {
        let marker = self.index.last().next();
        let floor = known_committed.min(self.local_durable);
        self.reign_floor = [self.local_durable, floor, floor, floor];
        history.begin(self.config.epoch, marker);
        self.history = history;
        self.marker = Some(marker);
    }

    /// A fixed primary whose log's epoch history is `history` (read from its records): its
    /// own records, from its last one on, are of its configured epoch.
    pub fn with_history(mut self, mut history: EpochHistory) -> Primary {
        history.clip(self.index.last());
        self.history = history;
        self.begin_fixed_epoch();
        self
    }

    /// A fixed primary serving appends writes them in its epoch, newer than every record it
    /// holds (its executor raised it at this start); nothing changes with epoch 0 (an
    /// executor that keeps no epochs) or for an elected primary (it began its epoch when
    /// elected).
    fn begin_fixed_epoch(&mut self) {
        let epoch = self.config.epoch;
        if self.config.failover || !self.serving || epoch == Epoch(0) {
            return;
        }
        let first = self.index.last().next();
        if epoch > self.history.epoch_of(first.prev()) {
            self.history.begin(epoch, first);
        }
    }

    /// In degraded mode: remote levels follow local durability.
    pub fn status_degraded(&self) -> bool {
        self.tracker.is_degraded()
    }

    /// The epoch history of its log.
    pub fn history(&self) -> &EpochHistory {
        &self.history
    }

    /// How many of these followers were heard from since `since`.
    pub fn heard_since(&self, since: Duration, names: &[&str]) -> usize {
        (self.links.iter())
            .filter(|l| names.contains(&l.name.as_str()) && l.last_heard() >= since)
            .count()
    }

    /// Replaces the cluster key ring: sessions that start from now on prove and verify with it;
    /// sessions already authenticated go on (a key proves a session at its start only).
    pub fn set_key_ring(&mut self, ring: crate::protocol::auth::KeyRing) {
        self.config.key = ring;
    }

    /// The configuration.
    pub fn config(&self) -> &PrimaryConfig {
        &self.config
    }

    /// The links, in configuration order.
    pub fn links(&self) -> &[Link] {
        &self.links
    }

    /// Commit LSN per level, weakest first.
    pub fn committed(&self) -> [Lsn; 4] {
        let mut c = self.tracker.all_committed();
        if let Some(m) = self.marker {
            for (level, floor) in c.iter_mut().zip(self.reign_floor).skip(1) {
                if *level < m {
                    *level = floor;
                }
            }
        }
        c
    }

    /// The last LSN the writer has batched.
    pub fn last_lsn(&self) -> Lsn {
        self.index.last()
    }

    /// Appends are served: the start gate is open.
    pub fn serving(&self) -> bool {
        self.serving && !matches!(self.marker, Some(m) if self.index.last() < m)
    }

    /// The LSN of this elected primary's epoch marker (the first record of its epoch).
    pub fn marker(&self) -> Option<Lsn> {
        self.marker
    }

    /// Closes the start gate: this primary's log may have lost records the quorum acknowledged
    /// (recovery cut or set aside records, or the log is new), so it serves no append until it
    /// has heard from enough sync followers that every acknowledged record is held by one of
    /// them (sync quorum members - k + 1), and has taken back what they hold beyond its log.
    /// Without a sync quorum nothing was acknowledged beyond this log, and the gate stays open.
    pub fn close_gate(&mut self) {
        if self.config.quorum.is_some() {
            self.serving = false;
            // No record of this start's epoch until the gate opens (records taken back keep
            // their own).
            self.history.clip(self.index.last());
            tracing::warn!(
                needed = self.gate_needed(),
                "serving no append until enough sync followers have been heard from"
            );
        }
    }

    /// This primary's log was recovered at its start, not created (see `fence`). Without this
    /// call an empty primary never empties a follower.
    pub fn mark_recovered_log(&mut self) {
        self.recovered_log = true;
    }

    /// Sync followers that must be heard before the gate opens.
    fn gate_needed(&self) -> usize {
        let Some(q) = &self.config.quorum else {
            return 0;
        };
        let members = self
            .links
            .iter()
            .filter(|l| l.sync && q.is_member(l.name.as_str()))
            .count();
        (members + 1).saturating_sub(q.k)
    }

    fn update_gate(&mut self) {
        if self.serving || self.links.iter().any(Link::taking_back) {
            return;
        }
        let q = self.config.quorum.as_ref();
        let heard = (self.links.iter())
            .filter(|l| l.sync && q.is_some_and(|q| q.is_member(l.name.as_str())) && l.settled())
            .count();
        if heard >= self.gate_needed() {
            self.serving = true;
            self.fence = self.index.last();
            self.gated = true;
            self.gate_heard.clear();
            self.begin_fixed_epoch();
            tracing::warn!(heard, last = %self.index.last(), "enough sync followers heard and their records taken back: serving appends");
        }
    }

    /// Starts a repair of `base..=last` (a damaged segment of this log) from a follower that
    /// holds the range; `prev_crc` is this log's CRC of record `base - 1`. Returns false when no
    /// follower can serve it now.
    pub fn start_repair(
        &mut self,
        now: Duration,
        (base, last): (Lsn, Lsn),
        prev_crc: Option<u32>,
        out: &mut Vec<Action>,
    ) -> bool {
        let pick = (self
            .links
            .iter()
            .position(|l| l.sync && l.can_serve_repair(last)))
        .or_else(|| self.links.iter().position(|l| l.can_serve_repair(last)));
        let Some(i) = pick else {
            return false;
        };
        self.with_ctx(i, |l, ctx| {
            l.start_repair(now, ctx, out, (base, last), prev_crc)
        });
        true
    }

    /// Sends this node's digests to every streaming follower.
    pub fn send_digests(&self, ranges: &[RangeDigest], out: &mut Vec<Action>) {
        for l in &self.links {
            if let (Some(conn), true) = (l.conn(), l.next_send().is_some()) {
                out.push(Action::Send {
                    conn,
                    msg: Msg::Digests {
                        ranges: ranges.to_vec(),
                    },
                });
            }
        }
    }

    /// The answer to a [`Action::ServeFetch`] is ready.
    pub fn send_answer(&self, link: usize, conn: ConnId, answer: Msg, out: &mut Vec<Action>) {
        if self.links.get(link).and_then(Link::conn) == Some(conn) {
            out.push(Action::Send { conn, msg: answer });
        }
    }

    /// The driver appended taken-back records up to `last` (or failed).
    pub fn on_taken_back(
        &mut self,
        now: Duration,
        link: usize,
        conn: ConnId,
        result: Result<Lsn, String>,
        out: &mut Vec<Action>,
    ) {
        self.with_ctx(link, |l, ctx| l.on_taken_back(now, conn, result, ctx, out));
        self.recompute(now);
    }

    /// Timer tick: connections, handshake and peer timeouts, heartbeats, quorum health.
    pub fn tick(&mut self, now: Duration, out: &mut Vec<Action>) {
        self.now = now;
        self.pacer.tick(now);
        for i in 0..self.links.len() {
            self.with_ctx(i, |l, ctx| l.tick(now, ctx, out));
        }
        self.recompute(now);
    }

    /// The driver started the connect of `link` as `conn`.
    pub fn connect_started(&mut self, link: usize, conn: ConnId) {
        self.links[link].connect_started(conn);
    }

    /// An outgoing connection is up; `nonce` is fresh randomness for the handshake.
    pub fn on_connected(
        &mut self,
        now: Duration,
        conn: ConnId,
        nonce: [u8; NONCE_LEN],
        out: &mut Vec<Action>,
    ) {
        match self.link_of(conn) {
            Some(i) => self.with_ctx(i, |l, ctx| l.on_connected(now, conn, nonce, ctx, out)),
            None => out.push(Action::Close {
                conn,
                reason: "no link waits for it".into(),
            }),
        }
    }

    /// A connection failed, closed, or could not be established.
    pub fn on_closed(&mut self, now: Duration, conn: ConnId, why: String, out: &mut Vec<Action>) {
        if let Some(i) = self.link_of(conn) {
            self.with_ctx(i, |l, ctx| l.on_closed(now, conn, why, ctx, out));
            self.recompute(now);
        }
    }

    /// A decoded frame arrived on `conn`.
    pub fn on_frame(&mut self, now: Duration, conn: ConnId, msg: Msg, out: &mut Vec<Action>) {
        let Some(i) = self.link_of(conn) else {
            out.push(Action::Close {
                conn,
                reason: format!("{} frame on an unknown connection", msg.name()),
            });
            return;
        };
        self.with_ctx(i, |l, ctx| l.on_frame(now, conn, msg, ctx, out));
        self.recompute(now);
    }

    /// Bytes on `conn` were not a valid frame: refuse and close.
    pub fn on_frame_error(
        &mut self,
        now: Duration,
        conn: ConnId,
        error: &FrameError,
        out: &mut Vec<Action>,
    ) {
        out.push(Action::Send {
            conn,
            msg: Msg::Reject {
                code: RejectCode::Protocol,
                detail: 0,
                message: error.to_string(),
            },
        });
        *self
            .counters
            .rejected
            .entry(RejectCode::Protocol.as_str())
            .or_default() += 1;
        self.on_closed(now, conn, format!("malformed frame: {error}"), out);
        out.push(Action::Close {
            conn,
            reason: format!("malformed frame: {error}"),
        });
    }

    /// The writer formed a batch; it goes to live followers before its fdatasync completes.
    pub fn on_batch(
        &mut self,
        now: Duration,
        first: Lsn,
        last: Lsn,
        records: &Bytes,
        out: &mut Vec<Action>,
    ) {
        if first != self.index.last().next() {
            self.on_truncated(now, first.prev(), out);
        }
        self.index.push(last, records.len() as u64);
        for i in 0..self.links.len() {
            self.with_ctx(i, |l, ctx| l.on_batch(now, first, last, records, ctx, out));
        }
    }

    /// The log took a client's append ending at `last`, and the client waits for a remote
    /// level: a sample of foreground commit latency for the catch-up pacer.
    pub fn on_client_appended(&mut self, now: Duration, last: Lsn) {
        self.pacer.appended(now, last);
    }

    /// The log was cut after `last` by its owner (`Input::LogCut`, before any batch after it):
    /// everything past it is taken back now, so that no append after the cut finds its LSN
    /// already durable or committed by the record cut.
    pub fn on_log_cut(&mut self, now: Duration, last: Lsn, out: &mut Vec<Action>) {
        if last < self.index.last() {
            self.on_truncated(now, last, out);
            self.recompute(now);
        }
    }

    /// The log was truncated after `last` (by its owner): followers that have more must be
    /// truncated too, so every link starts a new session, whose handshake does that.
    fn on_truncated(&mut self, now: Duration, last: Lsn, out: &mut Vec<Action>) {
        assert!(
            last < self.index.last(),
            "batches skip from {} to {}",
            self.index.last(),
            last.next()
        );
        tracing::warn!(after = %last, "the primary's log was truncated: followers resynchronize");
        self.index = ByteIndex::new(last);
        self.truncated_at = Some(self.truncated_at.map_or(last, |t| t.min(last)));
        // The LSNs after `last` will name new records: none of them is durable, replicated or
        // committed yet, whatever the old records that had those LSNs were.
        self.local_durable = self.local_durable.min(last);
        self.tracker.truncate(last);
        self.pacer.truncated(last);
        for l in &mut self.links {
            l.progress.truncate(last);
        }
        for i in 0..self.links.len() {
            self.with_ctx(i, |l, ctx| {
                l.restart(now, ctx, out, "the primary's log was truncated")
            });
        }
    }

    /// The primary's own log is durable up to `lsn`.
    pub fn on_local_durable(&mut self, now: Duration, lsn: Lsn) {
        self.local_durable = self.local_durable.max(lsn);
        self.recompute(now);
    }

    /// The log was purged: it now starts at `first`.
    pub fn on_purged(&mut self, first: Lsn) {
        self.first_lsn = self.first_lsn.max(first);
    }

    /// The CRC of record `lsn` was looked up (`None`: not found).
    pub fn on_crc(
        &mut self,
        now: Duration,
        link: usize,
        conn: ConnId,
        crc: Option<u32>,
        out: &mut Vec<Action>,
    ) {
        self.with_ctx(link, |l, ctx| l.on_crc(now, conn, crc, ctx, out));
        self.recompute(now);
    }

    /// A catch-up read finished.
    pub fn on_chunk(
        &mut self,
        now: Duration,
        link: usize,
        conn: ConnId,
        from: Lsn,
        result: Result<Option<Chunk>, ReadError>,
        out: &mut Vec<Action>,
    ) {
        self.with_ctx(link, |l, ctx| l.on_chunk(now, conn, from, result, ctx, out));
        self.recompute(now);
    }

    fn recompute(&mut self, now: Duration) {
        let members: Vec<MemberProgress<'_>> = (self.links.iter())
            .filter(|l| l.sync)
            .map(|l| MemberProgress {
                name: l.name.as_str(),
                healthy: l.healthy(),
                progress: l.progress,
            })
            .collect();
        let was_available = self.tracker.quorum_available();
        let change = self.tracker.update(now, self.local_durable, &members);
        self.log_quorum_change(was_available);
        match change {
            Some(DegradeChange::Entered) => {
                self.counters.degraded_entered += 1;
                tracing::warn!(
                    quorum = %self.quorum_text,
                    "sync quorum unavailable: acknowledging remote durability levels at local durability (degraded)"
                );
            }
            Some(DegradeChange::Left) => {
                tracing::warn!("sync quorum caught up: degraded mode over")
            }
            None => {}
        }
        self.update_retention();
        self.update_gate();
        let committed = self.committed()[DurabilityLevel::RemoteDurable as usize];
        self.pacer.committed(now, committed);
    }

    /// Quorum lost and regained are `warn!`, under either policy, naming the missing sync
    /// followers (once per change, so they need no rate limit).
    fn log_quorum_change(&self, was_available: bool) {
        match (was_available, self.tracker.quorum_available()) {
            (true, false) => tracing::warn!(
                quorum = %self.quorum_text,
                missing = %self.missing_sync_followers().join(", "),
                "sync quorum unavailable: remote durability levels wait (policy block) or degrade"
            ),
            (false, true) => {
                tracing::warn!(quorum = %self.quorum_text, "sync quorum available again")
            }
            _ => {}
        }
    }

    fn update_retention(&mut self) {
        let Some(max) = self.config.max_retained_bytes else {
            return;
        };
        for (i, l) in self.links.iter().enumerate() {
            let behind = self.index.bytes_after(l.progress.durable);
            let keep = l.sync || behind <= max;
            if keep != self.retained[i] {
                self.retained[i] = keep;
                if keep {
                    tracing::info!(follower = %l.name, "follower back within max_retained_bytes: its records are kept again");
                } else {
                    self.counters.retention_drops += 1;
                    tracing::error!(
                        follower = %l.name, behind_bytes = behind, max_retained_bytes = max,
                        "async follower dropped from retention: its records may be purged and it may need a restore"
                    );
                }
            }
        }
    }

    /// Records at and after this LSN must be kept: some retained follower has not made them
    /// durable yet, or (its last durable record) needs it to be checked at reconnect.
    pub fn retention_lsn(&self) -> Lsn {
        (self.links.iter().zip(&self.retained))
            .filter(|(_, keep)| **keep)
            .map(|(l, _)| l.progress.durable.max(Lsn::FIRST))
            .min()
            .unwrap_or(self.index.last().next())
    }

    /// The sync quorum as written (`none` without one).
    pub fn quorum_text(&self) -> &str {
        &self.quorum_text
    }

    /// The sync followers that are not healthy now, by name.
    pub fn missing_sync_followers(&self) -> Vec<String> {
        (self.links.iter())
            .filter(|l| l.sync && !l.healthy())
            .map(|l| l.name.to_string())
            .collect()
    }

    /// Counters.
    pub fn counters(&self) -> &PrimaryCounters {
        &self.counters
    }

    /// Once serving: the last LSN when this primary began to (its fence). A follower's
    /// records after it that differ from this log's are cut back to it; a follower that
    /// diverged below it is refused (`diverged`) until epochs tell where histories split.
    pub fn fence(&self) -> Option<Lsn> {
        let trusted = self.fence > Lsn::ZERO || self.gated || self.recovered_log;
        (self.serving && trusted).then_some(self.fence)
    }

    /// Asserts the primary's invariants: the commit tracker's, and that what is durable and
    /// held lies within what was written.
    pub fn check_invariants(&self) {
        self.tracker.check_invariants();
        self.pacer.check_invariants();
        let last = self.index.last();
        assert!(
            self.local_durable <= last,
            "durable {} past last {last}",
            self.local_durable
        );
        assert!(
            self.first_lsn.0 <= last.0 + 1,
            "first {} past last {last} + 1",
            self.first_lsn
        );
        let committed = self.tracker.all_committed();
        assert!(
            committed.iter().all(|c| *c <= last),
            "committed {committed:?} past the last record {last}"
        );
    }

    /// A snapshot for status, the API and metrics.
    pub fn status(&self) -> PrimaryStatus {
        let c = self.committed();
        PrimaryStatus {
            last_lsn: self.index.last().0,
            first_lsn: self.first_lsn.0,
            commit: CommitLsns {
                local: c[0].0,
                remote_write: c[1].0,
                remote_durable: c[2].0,
                remote_applied: c[3].0,
            },
            quorum: self.quorum_text.clone(),
            quorum_available: self.tracker.quorum_available(),
            degraded: self.tracker.is_degraded(),
            serving: self.serving,
            catch_up_pacing: self.pacer.status(),
            degraded_entered: self.counters.degraded_entered,
            retention_lsn: self.retention_lsn().0,
            rejected: self
                .counters
                .rejected
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
            refused_by_peer: (self.counters.refused_by_peer.iter())
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
            followers: (self.links.iter().zip(&self.retained))
                .map(|(l, r)| self.follower_status(l, *r))
                .collect(),
        }
    }

    fn follower_status(&self, l: &Link, retained: bool) -> FollowerStatus {
        let last = self.index.last();
        let behind = |lsn: Lsn| Behind {
            records: last.0.saturating_sub(lsn.0),
            bytes: self.index.bytes_after(lsn),
        };
        let ms = |d: Option<Duration>| d.map(|d| d.as_secs_f64() * 1e3);
        FollowerStatus {
            name: l.name.to_string(),
            addr: l.addr.to_string(),
            mode: if l.sync { "sync" } else { "async" }.into(),
            phase: l.phase(),
            healthy: l.healthy(),
            breaker: l.breaker.state().as_str().into(),
            breaker_opened: l.breaker.times_opened(),
            write_lsn: l.progress.write.0,
            durable_lsn: l.progress.durable.0,
            applied_lsn: l.progress.applied.0,
            write_behind: behind(l.progress.write),
            durable_behind: behind(l.progress.durable),
            applied_behind: behind(l.progress.applied),
            write_lag_ms: ms(l.lag.lag(AckLevel::Write)),
            flush_lag_ms: ms(l.lag.lag(AckLevel::Durable)),
            replay_lag_ms: ms(l.lag.lag(AckLevel::Applied)),
            retained,
            purged: l.purged,
            last_error: l.last_error.clone(),
            counters: l.counters,
            rpo: self.rpo(l),
        }
    }

    /// The RPO of failing over to `l` now, at each level: the acknowledged records it does not
    /// hold durably, their bytes, and how long ago the oldest was sent.
    fn rpo(&self, l: &Link) -> Vec<LevelRpo> {
        let have = l.progress.durable;
        let committed = self.committed();
        (DurabilityLevel::ALL.iter().zip(committed))
            .map(|(level, c)| {
                let lacking = c.0.saturating_sub(have.0);
                let seconds = (lacking > 0)
                    .then(|| l.lag.sent_after(have))
                    .flatten()
                    .map(|t| self.now.saturating_sub(t).as_secs_f64());
                LevelRpo {
                    level: level.as_str().to_string(),
                    records: lacking,
                    bytes: self
                        .index
                        .bytes_after(have)
                        .saturating_sub(self.index.bytes_after(c)),
                    seconds,
                }
            })
            .collect()
    }
}
