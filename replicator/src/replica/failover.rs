//! The replica's side of failover: turning the elector's outcomes into role changes, the
//! epoch rules on frames (a newer epoch is adopted and a primary steps down; an older one is
//! refused), answering vote requests, check-quorum, and persisting the election state before
//! anything that depends on it leaves the node.

use std::time::Duration;

use logship_engine::{Epoch, Lsn};

use super::{Replica, Role};
use crate::election::{Elector, Outcome, VoteRequest, VoterView};
use crate::follower::Follower;
use crate::primary::Primary;
use crate::protocol::{Msg, RejectCode};
use crate::vocab::{Action, ConnId, ElectionState, EpochHistory, Tail};

impl Replica {
    /// The election state as it must be on disk now.
    fn election_state(&self) -> Option<ElectionState> {
        let e = self.election.as_ref()?;
        let history = match &self.role {
            Role::Primary(p) => p.history().clone(),
            Role::Follower(f) => f.history().clone(),
        };
        Some(ElectionState {
            epoch: e.epoch(),
            voted_for: e.voted_for().cloned(),
            history,
        })
    }

    /// Asks the executor to persist the election state if it changed: before any action
    /// pushed after this one.
    pub(super) fn persist(&mut self, out: &mut Vec<Action>) {
        let Some(state) = self.election_state() else {
            return;
        };
        if self.persisted.as_ref() != Some(&state) {
            self.persist_seq += 1;
            let seq = self.persist_seq;
            out.push(Action::Persist {
                seq,
                state: state.clone(),
            });
            self.persisted = Some(state);
        }
    }

    /// The epoch and LSN of this log's last record, as votes compare them.
    pub(super) fn last_position(&self) -> (Epoch, Lsn) {
        match &self.role {
            Role::Primary(p) => (p.history().epoch_of(p.last_lsn()), p.last_lsn()),
            Role::Follower(f) => (f.history().epoch_of(f.written()), f.written()),
        }
    }

    /// The newest epoch this node knows (the primary's configured one without failover).
    pub fn epoch(&self) -> Epoch {
        match (&self.election, &self.role) {
            (Some(e), _) => e.epoch(),
            (None, Role::Primary(p)) => p.config().epoch,
            (None, Role::Follower(_)) => Epoch(0),
        }
    }

    /// The elector, when failover is on.
    pub fn elector(&self) -> Option<&Elector> {
        self.election.as_ref()
    }

    /// Frames the failover rules handle before the role sees them; the rest are returned.
    pub(super) fn intercept(
        &mut self,
        now: Duration,
        conn: ConnId,
        msg: Msg,
        out: &mut Vec<Action>,
    ) -> Option<Msg> {
        if self.election.is_none() {
            return Some(msg);
        }
        match msg {
            Msg::VoteRequest { .. } => self.on_vote_request(now, conn, msg, out),
            Msg::VoteResponse { .. } if self.owns_vote(conn) => {
                self.on_vote_response(now, conn, msg, out)
            }
            Msg::TimeoutNow { .. } => self.on_timeout_now(now, conn, out),
            Msg::Hello { epoch, .. } if self.as_follower().is_some() => {
                return self.on_hello_epoch(conn, epoch, out).then_some(msg);
            }
            Msg::Reject {
                code: RejectCode::StaleEpoch,
                detail,
                ..
            } if self.as_primary().is_some() && Epoch(detail) > self.epoch() => {
                // The refusal carries no proof: step down (a node at a follower's address can
                // refuse service anyway) but do not adopt its epoch; a proven one comes with the
                // new primary's Start or a vote.
                tracing::warn!(
                    epoch = detail,
                    "a follower follows a newer epoch: stepping down"
                );
                self.step_down(now, None, out);
            }
            _ if self.vote_conns.contains_key(&conn) => {
                self.vote_conns.remove(&conn);
                out.push(Action::Close {
                    conn,
                    reason: "this node is the primary".into(),
                });
            }
            other => return Some(other),
        }
        None
    }

    pub(super) fn owns_vote(&self, conn: ConnId) -> bool {
        self.election.as_ref().is_some_and(|e| e.owns(conn))
    }

    /// A Hello on a follower: an older epoch is refused (refusing is safe before any proof);
    /// a newer one is adopted only once its primary proves the key (see
    /// [`Replica::note_session_epoch`]). Returns whether the follower takes it.
    fn on_hello_epoch(&mut self, conn: ConnId, epoch: Epoch, out: &mut Vec<Action>) -> bool {
        let current = self.epoch();
        let refusal = if let Some(cause) = &self.failed {
            Some((
                RejectCode::Protocol,
                0,
                format!("this node's log failed ({cause}); it serves nothing until restarted"),
            ))
        } else if self.tail_pending {
            Some((
                RejectCode::Protocol,
                0,
                "this node is still reading its log's tail".to_string(),
            ))
        } else if epoch < current {
            let m =
                format!("this node follows epoch {current}; the primary's epoch {epoch} is over");
            Some((RejectCode::StaleEpoch, current.0, m))
        } else {
            None
        };
        let Some((code, detail, message)) = refusal else {
            return true;
        };
        if let Role::Follower(f) = &mut self.role {
            f.forget(conn);
        }
        out.push(Action::Send {
            conn,
            msg: Msg::Reject {
                code,
                detail,
                message: message.clone(),
            },
        });
        out.push(Action::Close {
            conn,
            reason: message,
        });
        false
    }

    /// After a follower's frames: a session whose primary proved the key in a newer epoch
    /// moves this node to that epoch; any session of the current epoch ends a candidacy.
    pub(super) fn note_session_epoch(&mut self, now: Duration, out: &mut Vec<Action>) {
        let (Some(e), Role::Follower(f)) = (self.election.as_mut(), &mut self.role) else {
            return;
        };
        let Some(epoch) = f.streaming_epoch() else {
            return;
        };
        if epoch < e.epoch() {
            // Its Hello came before this node moved to a newer epoch.
            f.end_streaming("the primary's epoch is over", out);
        } else {
            e.adopt(epoch, out);
            if e.campaigning() {
                e.end_round(out, "a primary of this epoch streams");
                e.reset_timer(now);
            }
        }
    }

    fn on_vote_request(&mut self, now: Duration, conn: ConnId, msg: Msg, out: &mut Vec<Action>) {
        let Msg::VoteRequest {
            pre_vote,
            transfer,
            epoch,
            last_epoch,
            last_lsn,
            nonce,
            mac,
            cluster_id,
            candidate,
        } = msg
        else {
            return;
        };
        let req = VoteRequest {
            pre_vote,
            transfer,
            epoch,
            last: (last_epoch, last_lsn),
            nonce,
            mac,
            cluster_id,
            candidate,
        };
        self.vote_conns.remove(&conn);
        if let Role::Follower(f) = &mut self.role {
            f.forget(conn);
        }
        let view = VoterView {
            last: self.last_position(),
            leader_heard: self.leader_heard(now),
            stalled: self.stalled || self.failed.is_some(),
        };
        let was = self.epoch();
        let e = self.election.as_mut().expect("failover is on");
        let answer = e.on_request(&req, view, out);
        let response = answer.map(|(epoch, granted)| e.response(&req, epoch, granted));
        self.after_epoch_change(now, was, out);
        if let Some(msg) = response {
            self.persist(out);
            out.push(Action::Send { conn, msg });
        }
        out.push(Action::Close {
            conn,
            reason: "vote request answered".into(),
        });
    }

    fn on_vote_response(&mut self, now: Duration, conn: ConnId, msg: Msg, out: &mut Vec<Action>) {
        let Msg::VoteResponse {
            pre_vote,
            granted,
            epoch,
            mac,
            voter,
        } = msg
        else {
            return;
        };
        let last = self.last_position();
        let nonce = self.nonces.next_nonce();
        let was = self.epoch();
        let e = self.election.as_mut().expect("failover is on");
        let outcome = e.on_response(
            now,
            conn,
            (pre_vote, granted, epoch),
            (mac, voter),
            last,
            nonce,
            out,
        );
        self.decoders.remove(&conn);
        self.after_epoch_change(now, was, out);
        self.on_outcome(now, outcome, out);
    }

    /// The epoch moved past `was`: a primary steps down; a follower ends its session with the
    /// older epoch's primary at once (acknowledging that primary's records after voting in a
    /// newer epoch could let it acknowledge what the new primary never had).
    fn after_epoch_change(&mut self, now: Duration, was: Epoch, out: &mut Vec<Action>) {
        if self.epoch() <= was {
            return;
        }
        match &mut self.role {
            Role::Primary(_) => self.step_down(now, None, out),
            Role::Follower(f) => f.end_streaming("a newer epoch began", out),
        }
    }

    fn on_outcome(&mut self, now: Duration, outcome: Outcome, out: &mut Vec<Action>) {
        match outcome {
            Outcome::Nothing => self.persist(out),
            Outcome::Won(epoch) => self.become_primary(now, epoch, out),
        }
    }

    /// A follower heard from its primary within the shortest election timeout (a primary
    /// always has).
    fn leader_heard(&self, now: Duration) -> bool {
        let Some(e) = &self.election else {
            return false;
        };
        match &self.role {
            Role::Primary(_) => true,
            Role::Follower(f) => f
                .last_heard()
                .is_some_and(|t| now.saturating_sub(t) < e.config().timeout.0),
        }
    }

    /// Won the election for `epoch`: become its primary, persist the history with the new
    /// epoch, and write the epoch's marker before anything else.
    fn become_primary(&mut self, now: Duration, epoch: Epoch, out: &mut Vec<Action>) {
        let (Some(e), Role::Follower(f)) = (&self.election, &self.role) else {
            return;
        };
        let (last, durable, history) = (f.written(), f.durable(), f.history().clone());
        let known = f.primary_commit();
        let config = e.config().primary_config(epoch);
        let n = self.nonces.next_nonce();
        let seed = u64::from_le_bytes(n[..8].try_into().expect("8 bytes"));
        let mut p = Primary::new(config, self.first_lsn, last, durable, seed);
        p.begin_epoch(history, known);
        out.extend(self.change_role(Role::Primary(Box::new(p))));
        self.primary_since = now;
        self.persist(out);
        out.push(Action::AppendMarker { epoch });
        tracing::warn!(%epoch, marker = %last.next(), "serving as the primary");
    }

    /// Stops being the primary (a newer epoch, or no majority heard): fail every waiting
    /// append, become a follower, and read the log's tail.
    pub(super) fn step_down(&mut self, now: Duration, newer: Option<Epoch>, out: &mut Vec<Action>) {
        let Some(e) = self.election.as_mut() else {
            return;
        };
        if let Some(epoch) = newer {
            e.adopt(epoch, out);
        }
        e.reset_timer(now);
        let follower_config = e.config().follower.clone();
        let Role::Primary(p) = &self.role else { return };
        let last = p.last_lsn();
        let history: EpochHistory = p.history().clone();
        let tail = Tail {
            last,
            last_epoch: history.epoch_of(last),
            last_crc: 0,
            durable: self.committed[0].min(last),
            applied: Lsn::ZERO,
        };
        let f = Follower::new(follower_config, tail).with_history(history);
        out.extend(self.change_role(Role::Follower(Box::new(f))));
        self.tail_pending = true;
        out.push(Action::ReadTail);
        self.persist(out);
    }

    /// The log's tail, read after a step-down.
    pub(super) fn on_tail(&mut self, tail: Tail) {
        if let Role::Follower(f) = &mut self.role {
            f.reset_tail(tail);
            self.tail_pending = false;
        }
    }

    /// Timer work of failover: a follower's election timer and rounds; a primary's
    /// check-quorum; vote connections that never spoke.
    pub(super) fn failover_tick(&mut self, now: Duration, out: &mut Vec<Action>) {
        if self.election.is_none() {
            return;
        }
        let idle: Vec<ConnId> = (self.vote_conns.iter())
            .filter(|(_, deadline)| now >= **deadline)
            .map(|(c, _)| *c)
            .collect();
        for conn in idle {
            self.vote_conns.remove(&conn);
            out.push(Action::Close {
                conn,
                reason: "nothing asked on the connection in time".into(),
            });
        }
        match &self.role {
            Role::Primary(_) => self.check_quorum(now, out),
            Role::Follower(f) => {
                if let Some(t) = f.last_heard().filter(|t| Some(*t) != self.heard) {
                    self.heard = Some(t);
                    self.election.as_mut().expect("on").reset_timer(t);
                }
                if self.failed.is_some() || self.tail_pending || self.stalled {
                    return;
                }
                let (last, nonce) = (self.last_position(), self.nonces.next_nonce());
                let was = self.epoch();
                let e = self.election.as_mut().expect("on");
                let outcome = e.tick(now, last, nonce, out);
                if outcome == Outcome::Nothing {
                    self.after_epoch_change(now, was, out);
                }
                self.on_outcome(now, outcome, out);
            }
        }
    }

    /// A primary that has not heard from a majority of voters within the longest election
    /// timeout steps down: another may have been elected behind a partition.
    fn check_quorum(&mut self, now: Duration, out: &mut Vec<Action>) {
        let (Some(e), Role::Primary(p)) = (&self.election, &self.role) else {
            return;
        };
        let window = e.config().timeout.1;
        if now < self.primary_since + window {
            return;
        }
        let c = e.config();
        let voters: Vec<&str> = (c.voters())
            .filter(|&i| i != c.me)
            .map(|i| c.members[i].id.as_str())
            .collect();
        let heard = 1 + p.heard_since(now.saturating_sub(window), &voters);
        if heard >= c.majority() {
            return;
        }
        tracing::warn!(heard, majority = c.majority(), window = ?window, "no majority of voters heard: stepping down");
        self.counters.step_downs += 1;
        self.step_down(now, None, out);
    }

    /// Whether a follower of this replica's epoch history and tail is where a step-down left
    /// it; used by the executors' checks.
    pub fn tail_pending(&self) -> bool {
        self.tail_pending
    }

    /// A new connection on a primary: it can only carry a vote request.
    pub(super) fn accept_on_primary(&mut self, now: Duration, conn: ConnId) {
        let handshake = self.timeouts.handshake;
        self.vote_conns.insert(conn, now + handshake);
    }

    /// The connection closed: forget it in the elector and among vote connections.
    pub(super) fn failover_closed(&mut self, conn: ConnId) -> bool {
        self.vote_conns.remove(&conn);
        match self.election.as_mut() {
            Some(e) if e.owns(conn) => {
                e.closed(conn);
                true
            }
            _ => false,
        }
    }
}

/// The follower a node with failover starts as: its log at `tail`, its history clipped to it.
pub fn failover_follower(
    config: &crate::vocab::ElectionConfig,
    tail: Tail,
    history: EpochHistory,
) -> Follower {
    Follower::new(config.follower.clone(), tail).with_history(history)
}

/// A planned switchover under way on the primary.
#[derive(Debug)]
pub(super) struct Handover {
    /// The target's node id.
    target: crate::vocab::NodeId,
    /// When it is given up.
    deadline: Duration,
}

impl Replica {
    /// An operator asks this primary to hand over to `target`.
    pub(super) fn on_promote(
        &mut self,
        now: Duration,
        target: crate::vocab::NodeId,
        out: &mut Vec<Action>,
    ) {
        let refusal = match (&self.election, &self.role) {
            (None, _) => Some(
                "this cluster does not elect its primary ([cluster] with failover)".to_string(),
            ),
            (_, Role::Follower(_)) => Some("this node is not the primary".to_string()),
            _ if self.handover.is_some() => Some("a switchover is under way already".to_string()),
            (Some(e), Role::Primary(p)) => {
                let stands = e
                    .config()
                    .member(target.as_str())
                    .map(|i| &e.config().members[i]);
                match stands {
                    Some(m) if m.voter && m.sync && p.links().iter().any(|l| l.name == target) => {
                        None
                    }
                    _ => Some(format!(
                        "{target} is not a sync voter this primary streams to"
                    )),
                }
            }
        };
        if let Some(why) = refusal {
            return out.push(Action::PromoteAnswer(Err(why)));
        }
        let window = self
            .election
            .as_ref()
            .map_or(Duration::ZERO, |e| e.config().timeout.1);
        tracing::warn!(%target, "planned switchover: appends wait until the target holds every record");
        self.handover = Some(Handover {
            target,
            deadline: now + window,
        });
    }

    /// A switchover under way: once the target holds every record of this log durably, tell
    /// it to stand and step down (nothing more is acknowledged here); past the deadline, give
    /// up and serve again.
    pub(super) fn try_hand_over(&mut self, now: Duration, out: &mut Vec<Action>) {
        let (Some(h), Role::Primary(p)) = (&self.handover, &self.role) else {
            return;
        };
        let link = p.links().iter().find(|l| l.name == h.target);
        let ready = link.filter(|l| l.healthy() && l.progress.durable >= p.last_lsn());
        if let Some(conn) = ready.and_then(|l| l.conn()) {
            let epoch = Epoch(self.epoch().0.saturating_add(1));
            let message = format!(
                "handed over to {} at LSN {}; it stands in epoch {epoch}",
                h.target,
                p.last_lsn()
            );
            out.push(Action::Send {
                conn,
                msg: Msg::TimeoutNow { epoch },
            });
            tracing::warn!(target = %h.target, last = %p.last_lsn(), "switchover: the target holds every record; handing over");
            self.handover = None;
            self.step_down(now, None, out);
            return out.push(Action::PromoteAnswer(Ok(message)));
        }
        if now >= h.deadline {
            let why = format!(
                "{} did not hold every record within {:?}; serving again",
                h.target,
                self.election.as_ref().map(|e| e.config().timeout.1)
            );
            tracing::warn!("switchover given up: {why}");
            self.handover = None;
            out.push(Action::PromoteAnswer(Err(why)));
        }
    }

    /// The primary told this follower to stand now (on its streaming session).
    pub(super) fn on_timeout_now(&mut self, now: Duration, conn: ConnId, out: &mut Vec<Action>) {
        let streaming = self.as_follower().is_some_and(|f| f.is_streaming(conn));
        if !streaming || self.failed.is_some() || self.tail_pending || self.stalled {
            return;
        }
        let (last, nonce) = (self.last_position(), self.nonces.next_nonce());
        let was = self.epoch();
        let e = self.election.as_mut().expect("failover is on");
        let outcome = e.stand_now(now, last, nonce, out);
        if outcome == Outcome::Nothing {
            self.after_epoch_change(now, was, out);
        }
        self.on_outcome(now, outcome, out);
    }

    /// The disk's fdatasync stalled past the limit (or recovered): a stalled node neither
    /// votes nor stands, and a stalled primary steps down so that a healthy node can serve.
    pub(super) fn on_disk_stalled(&mut self, now: Duration, stalled: bool, out: &mut Vec<Action>) {
        if self.stalled == stalled {
            return;
        }
        self.stalled = stalled;
        if stalled {
            tracing::warn!("fdatasync stalled past the limit: this node stops voting and standing");
            if self.as_primary().is_some() && self.election.is_some() {
                self.counters.step_downs += 1;
                self.step_down(now, None, out);
            }
        } else {
            tracing::warn!("fdatasync completes again: this node votes again");
        }
    }
}
