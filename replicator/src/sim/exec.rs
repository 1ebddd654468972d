//! The simulator as the replicas' executor: it carries out their actions on the model logs and
//! the simulated network with the node's semantics (`node/mod.rs`: `Inner::execute`,
//! `carry_out`, `append_replicated`, `truncate`, `read_job`, `serve_fetch`, `append`), and
//! turns what happens into their inputs.
//!
//! - Actions run in order. `Connect` dials and steps `Dialed` at once, its actions joining the
//!   list; a follower's `Append` or `Truncate` that fails (or a compare-and-cut that finds
//!   another record) steps `AppendFailed` / `Truncated` and drops the rest of the list.
//! - Reads (catch-up chunks, CRC lookups, peers' fetches, take-back appends) go to the node's
//!   disk queue and complete in order, reading the log as it is then (the node's reader).
//! - An admitted append goes to the log at the same instant, after the current action list
//!   (the client's thread); `Written` follows at once or with the writer's next batch
//!   (`flush_at`), never after a sync that covers it: syncs cover what was reported.
//! - A taken-back run is appended, then `Written` and `TakenBack` are stepped in either order
//!   (the writer's report and the reader's answer race on the node).

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use logship_engine::record;
use logship_engine::{Epoch, Lsn};

use super::clients::{Ack, ClientRef, Clients};
use super::cluster::Cluster;
use super::disk::{between, ReadJob};
use super::invariants::{followers_hold_only_primary_records, Violation};
use super::net::NetEvent;
use super::spec::node_at;
use crate::fetch::FETCH_CHUNK_BYTES;
use crate::protocol::{DurabilityLevel, Msg};
use crate::vocab::{Action, ConnId, Input, ReadError, ReplicaLog, StorageError, Tail, WaiterId};

/// Chance, per million frames, that a frame is sent in two pieces (the decoder must join them).
const SPLIT_PER_MILLION: u32 = 125_000;
/// The longest the writer waits before reporting a batch.
const WRITER_DELAY_MAX: Duration = Duration::from_micros(200);

impl Cluster {
    /// Steps node `n`'s replica with `input` and carries out what it returns.
    pub(super) fn step(&mut self, n: usize, input: Input) {
        if self.nodes[n].paused_until.is_some() {
            return self.nodes[n].held.push_back(input);
        }
        let actions = self.step_raw(n, input);
        self.execute(n, actions);
    }

    /// Steps node `n`'s replica with `input` (nothing if it is down); returns its actions.
    fn step_raw(&mut self, n: usize, input: Input) -> Vec<Action> {
        let now = self.now;
        let node = &mut self.nodes[n];
        let local = node.local(now);
        let Some(r) = node.replica.as_mut() else {
            return Vec::new();
        };
        let tick = matches!(input, Input::Tick);
        let event = self.trace.input_event(now, n, &input);
        let actions = r.step(local, input);
        r.check_invariants();
        self.trace.record(event, !(tick && actions.is_empty()));
        if r.as_primary().is_some() {
            let (epoch, committed) = (r.epoch(), r.committed());
            self.check_commit(n, epoch, committed);
        }
        actions
    }

    /// Carries out `actions` of node `n` in order (see the module documentation).
    fn execute(&mut self, n: usize, actions: Vec<Action>) {
        let mut todo = VecDeque::from(actions);
        while let Some(a) = todo.pop_front() {
            self.trace.action(self.now, n, &a);
            let go_on = match a {
                Action::Connect {
                    link,
                    addr,
                    timeout,
                } => {
                    let to = node_at(addr, self.nodes.len()).expect("every address is a node's");
                    let conn = self.net.dial(self.now, n, to, timeout);
                    self.conn_nodes.insert(conn, (n, to));
                    todo.extend(self.step_raw(n, Input::Dialed { link, conn }));
                    true
                }
                Action::ConnectVoter {
                    member,
                    addr,
                    timeout,
                } => {
                    let to = node_at(addr, self.nodes.len()).expect("every address is a node's");
                    let conn = self.net.dial(self.now, n, to, timeout);
                    self.conn_nodes.insert(conn, (n, to));
                    todo.extend(self.step_raw(n, Input::DialedVoter { member, conn }));
                    true
                }
                Action::Persist { seq, state } => {
                    let node = &mut self.nodes[n];
                    if seq > node.election_seq {
                        node.election_seq = seq;
                        node.election = state;
                    }
                    true
                }
                Action::AppendMarker { epoch } => self.append_marker(n, epoch),
                Action::ReadTail => {
                    let tail = self.follower_tail(n);
                    todo.extend(self.step_raw(n, Input::Tail(tail)));
                    true
                }
                Action::Append { records, .. } => self.append_replicated(n, records),
                Action::Truncate { after, expect_crc } => self.truncate(n, after, expect_crc),
                a => {
                    self.carry_out(n, a);
                    true
                }
            };
            if !go_on {
                return;
            }
        }
    }

    /// An action that touches neither the replica nor a follower's append path.
    fn carry_out(&mut self, n: usize, a: Action) {
        match a {
            Action::Send { conn, msg } => self.send(n, conn, &msg),
            Action::Close { conn, .. } => self.net.close(self.now, n, conn),
            Action::ReadChunk {
                link,
                conn,
                from,
                max_bytes,
            } => self.queue_job(
                n,
                ReadJob::Chunk {
                    link,
                    conn,
                    from,
                    max_bytes,
                },
            ),
            Action::LookupCrc { link, conn, lsn } => {
                self.queue_job(n, ReadJob::Crc { link, conn, lsn })
            }
            Action::ServeFetch {
                link,
                conn,
                request,
            } => self.queue_job(
                n,
                ReadJob::ServeFetch {
                    link,
                    conn,
                    request,
                },
            ),
            Action::AppendTakenBack {
                link,
                conn,
                records,
            } => self.queue_job(
                n,
                ReadJob::TakeBack {
                    link,
                    conn,
                    records,
                },
            ),
            Action::Admit { waiter } => self.nodes[n].admitted.push_back(waiter),
            Action::Committed(levels) => self.on_committed(n, levels),
            Action::RestartCommitted(levels) => self.clients.reset_node(n, levels),
            Action::FailWait { waiter, error } => {
                self.clients.fail(ClientRef(waiter.0), format!("{error:?}"));
            }
            Action::FailAll { cause } => self.fail_stop(n, &cause),
            Action::FailWaiting { error } => {
                self.nodes[n].admitted.clear();
                self.clients.fail_node(n, &format!("{error:?}"));
            }
            // Integrity work (repairs, digests, sealing): the simulator corrupts nothing, so
            // there is nothing to repair; and anything newer than this executor.
            _ => {}
        }
    }

    fn send(&mut self, n: usize, conn: ConnId, msg: &Msg) {
        let bytes = msg.encode();
        if let Some(&(a, b)) = self.conn_nodes.get(&conn) {
            let to = if a == n { b } else { a };
            self.note_sent(conn, to, bytes.len() as u64);
        }
        if bytes.len() > 1 && self.rng.chance(SPLIT_PER_MILLION) {
            let at = 1 + self.rng.below(bytes.len() as u64 - 1) as usize;
            self.net.send(self.now, n, conn, bytes.slice(..at));
            self.net.send(self.now, n, conn, bytes.slice(at..));
        } else {
            self.net.send(self.now, n, conn, bytes);
        }
    }

    /// What the network delivered, as the replica's input.
    pub(super) fn deliver(&mut self, e: NetEvent) {
        let n = e.node();
        if !self.is_up(n) {
            return;
        }
        let input = match e {
            NetEvent::Connected { conn, .. } => Input::Connected { conn },
            NetEvent::Accepted { conn, peer, .. } => Input::Accepted {
                conn,
                peer: std::net::SocketAddr::from(([10, 0, (peer >> 8) as u8, peer as u8], 0)),
            },
            NetEvent::Deliver { conn, bytes, .. } => {
                self.note_delivered(conn, n, bytes.len() as u64);
                let bytes = bytes::BytesMut::from(bytes);
                Input::Data { conn, bytes }
            }
            NetEvent::Closed { conn, why, .. } => Input::Closed {
                conn,
                why: why.to_string(),
            },
        };
        self.step(n, input);
    }

    fn queue_job(&mut self, n: usize, job: ReadJob) {
        let now = self.now;
        self.nodes[n].disk.queue(now, job, &mut self.disk_rng);
    }

    /// A follower appends replicated records; false (and the replica told) if that failed.
    fn append_replicated(&mut self, n: usize, records: Bytes) -> bool {
        if let Err(v) = followers_hold_only_primary_records(&self.history, n, &records) {
            self.fail(v);
        }
        match self.nodes[n].log.append_records(records.clone()) {
            Ok(_) => {
                for (lsn, bytes) in split_records(&records) {
                    self.history.received(n, lsn, &bytes);
                }
                true
            }
            Err(e) => {
                let tail = self.follower_tail(n);
                self.step(
                    n,
                    Input::AppendFailed {
                        reason: e.to_string(),
                        tail,
                    },
                );
                false
            }
        }
    }

    /// The follower's log tail, with its replica's applied LSN (`tail_of` on the node).
    fn follower_tail(&self, n: usize) -> Tail {
        let applied = (self.nodes[n].replica.as_ref())
            .and_then(|r| r.as_follower())
            .map_or(Lsn::ZERO, |f| f.applied());
        Tail {
            applied,
            ..self.nodes[n].tail()
        }
    }

    /// Compare-and-cut: cuts after `after` if the record there has `expect_crc` (not checked
    /// at 0); tells the replica either way. False if nothing was cut.
    fn truncate(&mut self, n: usize, after: Lsn, expect_crc: u32) -> bool {
        let log = &self.nodes[n].log;
        let found = log.record_meta(after).map(|r| r.map_or(0, |(crc, _)| crc));
        let result = found.and_then(|found_crc| {
            let done = after == Lsn::ZERO || found_crc == expect_crc;
            if done {
                log.truncate_after(after)?;
            }
            Ok((found_crc, done))
        });
        if let Ok((_, true)) = result {
            self.nodes[n].disk.truncated(after);
            self.checks.cut(n, after);
            self.check_survival();
        }
        let tail = self.follower_tail(n);
        match result {
            Ok((found_crc, done)) => {
                self.step(
                    n,
                    Input::Truncated {
                        after,
                        found_crc,
                        done,
                        tail,
                    },
                );
                done
            }
            Err(e) => {
                let reason = format!("truncating after {after}: {e}");
                self.step(n, Input::AppendFailed { reason, tail });
                false
            }
        }
    }

    /// A client's admitted append goes to the primary's log (`Inner::append` on the node).
    pub(super) fn client_write(&mut self, n: usize, waiter: WaiterId) {
        let c = ClientRef(waiter.0);
        let Some(op) = self.clients.get(c) else {
            return;
        };
        let (payload, level) = (op.payload.clone(), op.level);
        let Some(epoch) = (self.nodes[n].replica.as_ref())
            .filter(|r| r.as_primary().is_some())
            .map(|r| r.epoch())
        else {
            return self.clients.fail(c, "not the primary any more".into());
        };
        let lsn = match self.nodes[n].log.append(epoch, payload) {
            Ok(lsn) => lsn,
            Err(e) => {
                return self
                    .clients
                    .fail(c, format!("the log refused the append: {e}"))
            }
        };
        self.wrote(n, lsn);
        self.trace.note(
            self.now,
            n,
            "log append",
            &[("waiter", waiter.0), ("lsn", lsn.0)],
        );
        if let Some(ack) = self.clients.register(c, lsn) {
            self.on_ack(n, ack, false);
        }
        if level != DurabilityLevel::Local {
            self.step(n, Input::Appended { waiter, level, lsn });
        }
    }

    /// The primary's log took record `lsn`: the writer reports it at once or with its next
    /// batch.
    fn wrote(&mut self, n: usize, lsn: Lsn) {
        let bytes = self.nodes[n].log.record(lsn).expect("just appended");
        self.history.primary_wrote(lsn, &bytes);
        if self.rng.below(2) == 0 {
            self.flush_writer(n);
        } else if self.nodes[n].flush_at.is_none() {
            let at = self.now + between(&mut self.rng, Duration::ZERO, WRITER_DELAY_MAX);
            self.nodes[n].flush_at = Some(at);
        }
    }

    /// An elected primary's marker: every record before it was appended as a follower (the
    /// replica knows them), so the writer reports from the marker on.
    fn append_marker(&mut self, n: usize, epoch: Epoch) -> bool {
        let node = &mut self.nodes[n];
        node.reported = node.log.last_lsn();
        match node.log.append(epoch, Bytes::new()) {
            Ok(lsn) => {
                self.trace.note(
                    self.now,
                    n,
                    "epoch marker",
                    &[("epoch", epoch.0), ("lsn", lsn.0)],
                );
                self.wrote(n, lsn);
                true
            }
            Err(e) => {
                let cause = format!("appending the marker of epoch {epoch}: {e}");
                self.step(n, Input::LogFailed { cause });
                false
            }
        }
    }

    /// The writer reports to the primary's replica what its log holds past what it reported.
    pub(super) fn flush_writer(&mut self, n: usize) {
        let node = &mut self.nodes[n];
        node.flush_at = None;
        if node.log.last_lsn() <= node.reported || node.log.is_poisoned() {
            return;
        }
        let from = node.reported.next();
        let Ok(Some(chunk)) = node.log.read_chunk(from, usize::MAX, true) else {
            return;
        };
        node.reported = chunk.last;
        let input = Input::Written {
            first: chunk.first,
            last: chunk.last,
            records: chunk.bytes,
        };
        self.step(n, input);
    }

    /// A sync completed: the log is durable up to `target`, or the sync failed.
    pub(super) fn sync_done(&mut self, n: usize, target: Lsn) {
        if std::mem::take(&mut self.nodes[n].stall_reported) {
            self.step(n, Input::DiskStalled(false));
        }
        let input = match self.nodes[n].log.sync_up_to(target) {
            Ok(durable) => Input::Durable(durable),
            Err(e) => Input::LogFailed {
                cause: e.to_string(),
            },
        };
        self.step(n, input);
    }

    /// Starts a sync on every running node with something to sync and none in flight.
    pub(super) fn kick_syncs(&mut self) {
        for n in 0..self.nodes.len() {
            let node = &mut self.nodes[n];
            if !node.is_up() || node.disk.sync().is_some() || node.log.is_poisoned() {
                continue;
            }
            let primary = node
                .replica
                .as_ref()
                .is_some_and(|r| r.as_primary().is_some());
            let written = if primary {
                node.reported
            } else {
                node.log.last_lsn()
            };
            if written > node.log.durable_lsn() {
                node.disk.start_sync(self.now, written, &mut self.disk_rng);
            }
        }
    }

    /// A read job completed: it reads (or appends to) the log as it is now.
    pub(super) fn read_job(&mut self, n: usize, job: ReadJob) {
        let log = &self.nodes[n].log;
        let input = match job {
            ReadJob::Chunk {
                link,
                conn,
                from,
                max_bytes,
            } => {
                let result = log.read_chunk(from, max_bytes, true).map_err(|e| match e {
                    StorageError::Purged { first } => ReadError::Purged { first },
                    e => ReadError::Failed(e.to_string()),
                });
                Input::Chunk {
                    link,
                    conn,
                    from,
                    result,
                }
            }
            ReadJob::Crc { link, conn, lsn } => {
                let crc = log.record_meta(lsn).ok().flatten().map(|(crc, _)| crc);
                Input::Crc { link, conn, crc }
            }
            ReadJob::ServeFetch {
                link,
                conn,
                request,
            } => {
                let from = request.range.0;
                let prev_crc = match request.prev_crc {
                    Some(_) => log
                        .record_meta(from.prev())
                        .ok()
                        .flatten()
                        .map(|(crc, _)| crc),
                    None => None,
                };
                let bound = (request.max_bytes as usize).clamp(1, FETCH_CHUNK_BYTES as usize);
                let read = log
                    .read_chunk(from, bound, false)
                    .map_err(|e| e.to_string());
                Input::FetchRead {
                    link,
                    conn,
                    request,
                    prev_crc,
                    read,
                }
            }
            ReadJob::TakeBack {
                link,
                conn,
                records,
            } => return self.take_back(n, link, conn, records),
        };
        self.step(n, input);
    }

    /// The primary appends records taken back from a follower.
    fn take_back(&mut self, n: usize, link: usize, conn: ConnId, records: Bytes) {
        self.flush_writer(n);
        if let Err(v) = followers_hold_only_primary_records(&self.history, n, &records) {
            self.fail(Violation::new(
                "followers_hold_only_primary_records",
                format!("taken back: {}", v.message),
            ));
        }
        let first = self.nodes[n].log.last_lsn().next();
        let last = match self.nodes[n].log.append_records(records.clone()) {
            Ok(last) => last,
            Err(e) => {
                return self.step(
                    n,
                    Input::TakenBack {
                        link,
                        conn,
                        result: Err(e.to_string()),
                    },
                )
            }
        };
        for (lsn, bytes) in split_records(&records) {
            self.history.primary_wrote(lsn, &bytes);
        }
        self.nodes[n].reported = last;
        let written = Input::Written {
            first,
            last,
            records,
        };
        let answer = Input::TakenBack {
            link,
            conn,
            result: Ok(last),
        };
        let (a, b) = if self.rng.below(2) == 0 {
            (written, answer)
        } else {
            (answer, written)
        };
        self.step(n, a);
        self.step(n, b);
    }

    /// The primary's commit LSNs rose: the appends they satisfy are acknowledged.
    fn on_committed(&mut self, n: usize, levels: [Lsn; 4]) {
        let acks = self.clients.advance(n, levels);
        if acks.is_empty() {
            return;
        }
        let degraded = (self.nodes[n].replica.as_ref()).is_some_and(|r| r.committed_degraded());
        for ack in acks {
            self.on_ack(n, ack, degraded);
        }
    }

    /// The log failed: the node fails every waiting append and keeps running, refusing work,
    /// until it is restarted.
    fn fail_stop(&mut self, n: usize, cause: &str) {
        self.trace.note(self.now, n, "fail-stop", &[]);
        self.nodes[n].failed = true;
        self.nodes[n].admitted.clear();
        self.clients
            .fail_node(n, &format!("the log failed: {cause}"));
        if self.restart_at[n].is_none() {
            self.restart_after(n, self.spec.fail_stop_restart_after);
        }
    }

    /// Checks and records an acknowledgement.
    fn on_ack(&mut self, n: usize, ack: Ack, degraded: bool) {
        let Ack { level, lsn, client } = ack;
        self.trace.note(
            self.now,
            n,
            "ack",
            &[
                ("waiter", client.0),
                ("lsn", lsn.0),
                ("level", level as u64),
            ],
        );
        let bytes = self.nodes[n].log.record(lsn).unwrap_or_default();
        self.check_ack(n, level, lsn, &bytes, degraded);
        self.history.acked(lsn, bytes, level, degraded);
        debug_assert_eq!(Clients::waiter(client).0, client.0);
    }
}

/// Each record of a run of whole encoded records, with its LSN.
fn split_records(records: &Bytes) -> Vec<(Lsn, Bytes)> {
    record::run(records)
        .filter_map(Result::ok)
        .map(|(offset, r)| {
            (
                r.header.lsn,
                records.slice(offset..offset + r.encoded_len()),
            )
        })
        .collect()
}
