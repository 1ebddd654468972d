//! Elections, sans-I/O: the election timer of a follower that may stand, its pre-vote and
//! vote rounds, and the voter's rule. The replica owns one [`Elector`] when failover is on and
//! turns its outcomes into role changes.
//!
//! The rules (docs/protocol.md, "Elections and epochs"): a sync voter that hears nothing from
//! a primary for a randomized election timeout asks every voter for a pre-vote for the epoch
//! after its own (etcd's pre-vote: nothing changes anywhere); with a majority it moves to it,
//! votes for itself, and asks for real votes. A voter grants at most one vote per epoch, only
//! to a candidate whose log is at least as up to date as its own, and none while it hears
//! from a primary (unless the primary hands over). Both the epoch and the vote are persisted
//! by the replica before anything that depends on them leaves the node.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use logship_engine::{Epoch, Lsn};

use crate::protocol::auth::{self, VoteRequestTranscript, VoteResponseTranscript, NONCE_LEN};
use crate::protocol::Msg;
use crate::vocab::{at_least_as_up_to_date, Action, ConnId, ElectionConfig, NodeId, Rng};

/// Counters for status and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ElectionCounters {
    /// Pre-vote rounds begun.
    pub pre_votes: u64,
    /// Vote rounds begun (pre-votes won).
    pub elections: u64,
    /// Elections won.
    pub won: u64,
    /// Votes granted to others.
    pub votes_granted: u64,
    /// Vote requests refused.
    pub votes_refused: u64,
}

/// One round of asking for votes.
#[derive(Debug)]
struct Round {
    pre: bool,
    /// A planned switchover: voters grant though they hear the primary.
    transfer: bool,
    /// The epoch asked for.
    epoch: Epoch,
    nonce: [u8; NONCE_LEN],
    granted: BTreeSet<usize>,
    conns: BTreeMap<ConnId, usize>,
    deadline: Duration,
}

/// What a step of the elector leads to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing for the replica to do.
    Nothing,
    /// A majority voted for this node in this epoch: it becomes primary.
    Won(Epoch),
}

/// A vote request, as the voter's rule reads it.
#[derive(Clone, Debug)]
pub struct VoteRequest {
    /// A pre-vote.
    pub pre_vote: bool,
    /// A planned switchover.
    pub transfer: bool,
    /// The epoch asked for.
    pub epoch: Epoch,
    /// The candidate's last record's epoch and LSN.
    pub last: (Epoch, Lsn),
    /// Its nonce.
    pub nonce: [u8; NONCE_LEN],
    /// Its proof.
    pub mac: [u8; auth::MAC_LEN],
    /// The cluster id.
    pub cluster_id: String,
    /// The candidate.
    pub candidate: String,
}

/// Where this node stands when it votes.
#[derive(Clone, Copy, Debug)]
pub struct VoterView {
    /// Its log's last record's epoch and LSN.
    pub last: (Epoch, Lsn),
    /// It heard from a primary within the shortest election timeout, or is the primary.
    pub leader_heard: bool,
    /// Its disk stalled: it does not vote.
    pub stalled: bool,
}

/// The election state and rules of one node. See the module documentation.
#[derive(Debug)]
pub struct Elector {
    config: ElectionConfig,
    epoch: Epoch,
    voted_for: Option<NodeId>,
    /// When the election timer fires (a follower that may stand).
    deadline: Duration,
    round: Option<Round>,
    rng: Rng,
    counters: ElectionCounters,
}

impl Elector {
    /// An elector in `epoch`, having voted for `voted_for` in it; its timer starts at `now`.
    pub fn new(
        config: ElectionConfig,
        epoch: Epoch,
        voted_for: Option<NodeId>,
        seed: u64,
        now: Duration,
    ) -> Elector {
        let mut e = Elector {
            config,
            epoch,
            voted_for,
            deadline: Duration::ZERO,
            round: None,
            rng: Rng::new(seed),
            counters: ElectionCounters::default(),
        };
        e.reset_timer(now);
        e
    }

    /// Replaces the cluster key ring of both roles this node may take (vote proofs and the
    /// sessions of a primary it becomes use it from now on).
    pub fn set_key_ring(&mut self, ring: crate::protocol::auth::KeyRing) {
        self.config.primary.key = ring.clone();
        self.config.follower.key = ring;
    }

    /// The configuration.
    pub fn config(&self) -> &ElectionConfig {
        &self.config
    }

    /// The newest epoch this node knows.
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// Its vote in that epoch.
    pub fn voted_for(&self) -> Option<&NodeId> {
        self.voted_for.as_ref()
    }

    /// A round is under way (pre-vote or vote).
    pub fn campaigning(&self) -> bool {
        self.round.is_some()
    }

    /// The counters.
    pub fn counters(&self) -> ElectionCounters {
        self.counters
    }

    /// This node's id.
    pub fn me(&self) -> &NodeId {
        &self.config.members[self.config.me].id
    }

    fn random_timeout(&mut self) -> Duration {
        let (lo, hi) = self.config.timeout;
        let span = hi.saturating_sub(lo).as_micros() as u64;
        lo + Duration::from_micros(self.rng.below(span.max(1)))
    }

    /// Heard from the primary (or just became a follower): the timer starts again.
    pub fn reset_timer(&mut self, now: Duration) {
        self.deadline = now + self.random_timeout();
    }

    /// Whether `conn` is one of this node's vote requests.
    pub fn owns(&self, conn: ConnId) -> bool {
        self.round
            .as_ref()
            .is_some_and(|r| r.conns.contains_key(&conn))
    }

    /// A newer epoch was seen: move to it (no vote yet), ending any round. Returns whether
    /// it was newer.
    pub fn adopt(&mut self, epoch: Epoch, out: &mut Vec<Action>) -> bool {
        if epoch <= self.epoch {
            return false;
        }
        tracing::info!(from = %self.epoch, to = %epoch, "a newer epoch was seen");
        self.epoch = epoch;
        self.voted_for = None;
        self.end_round(out, "a newer epoch was seen");
        true
    }

    /// Ends the round under way, closing its connections.
    pub fn end_round(&mut self, out: &mut Vec<Action>, why: &str) {
        if let Some(r) = self.round.take() {
            out.extend(r.conns.into_keys().map(|conn| Action::Close {
                conn,
                reason: why.to_string(),
            }));
        }
    }

    /// A follower's timer: stand when it fires (if this node may), and end a round that ran
    /// out of time. `nonce` is fresh randomness for a new round.
    pub fn tick(
        &mut self,
        now: Duration,
        last: (Epoch, Lsn),
        nonce: [u8; NONCE_LEN],
        out: &mut Vec<Action>,
    ) -> Outcome {
        if let Some(r) = &self.round {
            if now < r.deadline {
                return Outcome::Nothing;
            }
            let what = if r.pre { "pre-vote" } else { "election" };
            tracing::info!(epoch = %r.epoch, granted = r.granted.len(), "{what} round ran out of time");
            self.end_round(out, "the round ran out of time");
            self.reset_timer(now);
            return Outcome::Nothing;
        }
        if now < self.deadline || !self.config.may_stand() {
            return Outcome::Nothing;
        }
        tracing::info!(epoch = %self.epoch, "no primary heard within the election timeout: asking for pre-votes");
        self.start_round(now, (true, false), nonce, out);
        self.outcome_if_won(last, nonce, now, out)
    }

    fn start_round(
        &mut self,
        now: Duration,
        (pre, transfer): (bool, bool),
        nonce: [u8; NONCE_LEN],
        out: &mut Vec<Action>,
    ) {
        let epoch = if pre {
            self.epoch_after()
        } else {
            self.epoch = self.epoch_after();
            self.voted_for = Some(self.me().clone());
            self.epoch
        };
        if pre {
            self.counters.pre_votes += 1;
        } else {
            self.counters.elections += 1;
        }
        let deadline = now + self.random_timeout();
        let timeout = self.config.primary.timeouts.connect;
        let others: Vec<usize> = (self.config.voters())
            .filter(|&i| i != self.config.me)
            .collect();
        for &member in &others {
            let addr = self.config.members[member].addr;
            out.push(Action::ConnectVoter {
                member,
                addr,
                timeout,
            });
        }
        self.round = Some(Round {
            pre,
            transfer,
            epoch,
            nonce,
            granted: BTreeSet::from([self.config.me]),
            conns: BTreeMap::new(),
            deadline,
        });
    }

    fn epoch_after(&self) -> Epoch {
        Epoch(self.epoch.0.saturating_add(1))
    }

    /// The executor opened a connection for the vote request to `member`.
    pub fn dialed(&mut self, member: usize, conn: ConnId) {
        if let Some(r) = &mut self.round {
            r.conns.insert(conn, member);
        }
    }

    /// The primary handed over to this node (planned switchover): stand at once, without a
    /// pre-vote, asking voters to grant though they hear the primary.
    pub fn stand_now(
        &mut self,
        now: Duration,
        last: (Epoch, Lsn),
        nonce: [u8; NONCE_LEN],
        out: &mut Vec<Action>,
    ) -> Outcome {
        if !self.config.may_stand() {
            return Outcome::Nothing;
        }
        self.end_round(out, "the primary handed over");
        tracing::warn!(epoch = %self.epoch_after(), "the primary handed over: standing for election");
        self.start_round(now, (false, true), nonce, out);
        self.outcome_if_won(last, nonce, now, out)
    }

    /// A vote request's connection is up: ask.
    pub fn connected(&mut self, conn: ConnId, last: (Epoch, Lsn), out: &mut Vec<Action>) {
        let Some(r) = &self.round else { return };
        if !r.conns.contains_key(&conn) {
            return;
        }
        let (cluster_id, key) = (&self.config.follower.cluster_id, &self.config.follower.key);
        let t = VoteRequestTranscript {
            cluster_id,
            candidate: self.me().as_str(),
            epoch: r.epoch.0,
            last_epoch: last.0 .0,
            last_lsn: last.1 .0,
            pre_vote: r.pre,
            transfer: r.transfer,
            nonce: &r.nonce,
        };
        let mac = auth::prove_vote_request(key.current(), &t);
        let msg = Msg::VoteRequest {
            pre_vote: r.pre,
            transfer: r.transfer,
            epoch: r.epoch,
            last_epoch: last.0,
            last_lsn: last.1,
            nonce: r.nonce,
            mac,
            cluster_id: cluster_id.clone(),
            candidate: self.me().to_string(),
        };
        out.push(Action::Send { conn, msg });
    }

    /// A vote request's connection closed.
    pub fn closed(&mut self, conn: ConnId) {
        if let Some(r) = &mut self.round {
            r.conns.remove(&conn);
        }
    }

    /// An answer to this node's request on `conn`.
    #[allow(clippy::too_many_arguments)]
    pub fn on_response(
        &mut self,
        now: Duration,
        conn: ConnId,
        (pre_vote, granted, epoch): (bool, bool, Epoch),
        (mac, voter): ([u8; auth::MAC_LEN], String),
        last: (Epoch, Lsn),
        nonce: [u8; NONCE_LEN],
        out: &mut Vec<Action>,
    ) -> Outcome {
        let Some(r) = &mut self.round else {
            return Outcome::Nothing;
        };
        let Some(member) = r.conns.remove(&conn) else {
            return Outcome::Nothing;
        };
        out.push(Action::Close {
            conn,
            reason: "vote answered".into(),
        });
        let t = VoteResponseTranscript {
            cluster_id: &self.config.follower.cluster_id,
            candidate: self.config.members[self.config.me].id.as_str(),
            voter: &voter,
            epoch: epoch.0,
            pre_vote,
            granted,
            request_nonce: &r.nonce,
        };
        let genuine = self.config.members[member].id == *voter.as_str()
            && (self.config.follower.key).accepts(|k| auth::verify_vote_response(k, &t, &mac));
        if !genuine || pre_vote != r.pre {
            tracing::warn!(%voter, "a vote answer failed its proof or does not answer this round");
            return Outcome::Nothing;
        }
        if !granted {
            if epoch > self.epoch {
                self.adopt(epoch, out);
                self.reset_timer(now);
            }
            return Outcome::Nothing;
        }
        r.granted.insert(member);
        self.outcome_if_won(last, nonce, now, out)
    }

    /// With a majority: a pre-vote round becomes an election, an election is won.
    fn outcome_if_won(
        &mut self,
        _last: (Epoch, Lsn),
        nonce: [u8; NONCE_LEN],
        now: Duration,
        out: &mut Vec<Action>,
    ) -> Outcome {
        let Some(r) = &self.round else {
            return Outcome::Nothing;
        };
        if r.granted.len() < self.config.majority() {
            return Outcome::Nothing;
        }
        let (pre, epoch) = (r.pre, r.epoch);
        self.end_round(out, "the round is decided");
        if pre {
            tracing::info!(epoch = %epoch, "pre-vote won: asking for votes");
            self.start_round(now, (false, false), nonce, out);
            return self.outcome_if_won(_last, nonce, now, out);
        }
        self.counters.won += 1;
        tracing::warn!(epoch = %epoch, "elected primary");
        Outcome::Won(epoch)
    }

    /// The voter's rule: the answer to `req` (its epoch, whether granted), or `None` when the
    /// request is not genuine (wrong proof, another cluster, not a member that may stand).
    /// A real vote request of a newer epoch moves this node to it first (the replica steps
    /// down if it was primary); a granted vote is recorded.
    pub fn on_request(
        &mut self,
        req: &VoteRequest,
        view: VoterView,
        out: &mut Vec<Action>,
    ) -> Option<(Epoch, bool)> {
        if !self.genuine(req) {
            return None;
        }
        let up_to_date = at_least_as_up_to_date(req.last.0, req.last.1, view.last.0, view.last.1);
        let disturb = !view.leader_heard || req.transfer;
        let granted = if req.pre_vote {
            req.epoch > self.epoch && up_to_date && disturb && !view.stalled
        } else {
            if disturb && req.epoch > self.epoch {
                self.adopt(req.epoch, out);
            }
            let free = match &self.voted_for {
                None => true,
                Some(v) => *v == *req.candidate.as_str(),
            };
            let grant = req.epoch == self.epoch && free && up_to_date && disturb && !view.stalled;
            if grant {
                self.voted_for = Some(NodeId::from(req.candidate.as_str()));
            }
            grant
        };
        if granted {
            self.counters.votes_granted += 1;
        } else {
            self.counters.votes_refused += 1;
        }
        tracing::info!(candidate = %req.candidate, epoch = %req.epoch, pre_vote = req.pre_vote, granted, up_to_date, leader_heard = view.leader_heard, "vote request");
        Some((self.epoch, granted))
    }

    fn genuine(&self, req: &VoteRequest) -> bool {
        let Some(m) = self.config.member(&req.candidate) else {
            return false;
        };
        let member = &self.config.members[m];
        let t = VoteRequestTranscript {
            cluster_id: &req.cluster_id,
            candidate: &req.candidate,
            epoch: req.epoch.0,
            last_epoch: req.last.0 .0,
            last_lsn: req.last.1 .0,
            pre_vote: req.pre_vote,
            transfer: req.transfer,
            nonce: &req.nonce,
        };
        req.cluster_id == self.config.follower.cluster_id
            && member.voter
            && member.sync
            && m != self.config.me
            && (self.config.follower.key).accepts(|k| auth::verify_vote_request(k, &t, &req.mac))
    }

    /// The answer to send for `req`.
    pub fn response(&self, req: &VoteRequest, epoch: Epoch, granted: bool) -> Msg {
        let voter = self.me().to_string();
        let t = VoteResponseTranscript {
            cluster_id: &self.config.follower.cluster_id,
            candidate: &req.candidate,
            voter: &voter,
            epoch: epoch.0,
            pre_vote: req.pre_vote,
            granted,
            request_nonce: &req.nonce,
        };
        let mac = auth::prove_vote_response(self.config.follower.key.current(), &t);
        Msg::VoteResponse {
            pre_vote: req.pre_vote,
            granted,
            epoch,
            mac,
            voter,
        }
    }

    /// Asserts the elector's invariants: a vote only in the current epoch's round for itself,
    /// and a round asks for an epoch no older than the current one.
    pub fn check_invariants(&self) {
        if let Some(r) = &self.round {
            assert!(
                r.epoch >= self.epoch,
                "a round for {} in {}",
                r.epoch,
                self.epoch
            );
            if !r.pre {
                assert_eq!(
                    self.voted_for.as_ref(),
                    Some(self.me()),
                    "a candidate votes for itself"
                );
            }
        }
    }
}
