//! Roles and elections: timers, pre-vote (thesis §9.6), RequestVote (§5.2, §5.4.1), the
//! leader lease that shields a live leader (thesis §4.2.3), check-quorum (§6.2), and the
//! transitions between follower, pre-candidate, candidate, leader and learner.

use super::*;

impl Raft {
    // ------------------------------------------------------------------ internals: roles

    /// Whether this node may stand for election: a voter of its latest membership, or a voter
    /// removed by a Config entry it does not yet know committed. The thesis (§4.2.2, Figure 4.6)
    /// keeps such a server electable "as it might still be needed until the Cnew entry is
    /// committed": when its log is the most up to date, no one else can win. It counts votes by
    /// the latest membership (without itself) and steps down once the removal commits.
    pub(super) fn can_campaign(&self) -> bool {
        if self.membership.is_voter(self.id) {
            return true;
        }
        match self.config_indices.last() {
            Some(&ci) if ci > self.commit => self
                .membership_at(ci.prev())
                .is_some_and(|m| m.is_voter(self.id)),
            _ => false,
        }
    }

    /// Whether this node may start an election now: it may campaign, and it has not lost
    /// entries it may have acknowledged (its own vote would stand for a log it no longer has).
    pub(super) fn may_stand(&self) -> bool {
        self.lost.is_none() && self.can_campaign()
    }

    /// Whether this node's vote may count for a candidate with log `(li, lt)`: that log covers
    /// the entries this node may have lost, and this node has a log at all. A node with nothing
    /// (no entry, no snapshot: not even the initial membership) is a server started empty with
    /// `--join`, not yet caught up; if it was a voter before, it lost its storage and forgot
    /// every promise it made, so its vote is withheld until the log it holds stands for it
    /// (a learner is promoted only once caught up, so a real member never needs it).
    ///
    /// One exception to the bound: with two voters and no other server this node knows of
    /// (`lost_witnesses`), the only other voter holds every committed entry this node may
    /// have lost (committing one took both of them, under the membership this node knows
    /// committed: committing that very membership took both too, and every entry before it
    /// came with it; a lost change that added a voter was committed with a server this node
    /// would have heard from). Without it, a two-voter cluster whose one node tore its last
    /// write after moving to a new term would wait forever: the bound's term is that new
    /// term, which the other voter's log cannot reach without a leader.
    fn covers_lost(&self, from: NodeId, li: LogIndex, lt: Term) -> bool {
        if self.last_index().0 == 0 {
            return false;
        }
        let Some(b) = self.lost else {
            return true;
        };
        if (lt, li) >= self.lost_vote_bound.unwrap_or((b.term, b.index)) {
            return true;
        }
        let config_committed = self
            .config_indices
            .last()
            .map_or(true, |&c| c <= self.commit);
        let m = &self.membership;
        config_committed
            && m.voter_count() == 2
            && m.is_voter(self.id)
            && m.is_voter(from)
            && self.lost_witnesses() == [from]
    }

    /// The servers whose logs tell whether another server may hold an entry this node lost:
    /// every other voter of its membership, and every peer it heard from as a member before
    /// it started (`Boot::heard`). A lost entry may have made a server a voter (added it, or
    /// promoted a learner), but such a change counts only once committed, or once that
    /// server campaigns or leads with it; with this node among the voters, either takes a
    /// voter of the intact membership that then holds the change (and shows a log past the
    /// intact part), or an acknowledgement or vote between this node and the new voter, so
    /// this node heard from it. Without the peers, a voter left alone by the intact part of
    /// its log took itself for the whole cluster while the voters its lost entries added
    /// elected a leader of their own (found by the simulator). A learner never heard from is
    /// not asked: it may be gone for good, and waiting on it would stop the cluster.
    pub(super) fn lost_witnesses(&self) -> Vec<NodeId> {
        let mut w: BTreeSet<NodeId> = self.heard_at_start.clone();
        w.extend(self.membership.voters());
        w.remove(&self.id);
        w.into_iter().collect()
    }

    /// Remembers how far a voter's log reached when it showed it from a durable term past the
    /// bound's: it held none of the entries we lost beyond that, and never will through an
    /// acknowledgement that could count with ours. A lost entry was
    /// acknowledged in a term at most the bound's, and a node acknowledges only in its current
    /// term, so such a node, if it ever acknowledged one, did so before and lost it since to a
    /// leader without it. Without the term condition a voter could show a log without the
    /// entry, then take it from the leader that still counts our old acknowledgement, and the
    /// two make a quorum with a third that a candidate without the entry never asks.
    /// A PreVote carries its sender's term plus one (durable: `send_pre_votes`) or, from a
    /// node bounded alike, its term (then counted as one less: conservative), a RequestVote
    /// its sender's new, durable term, a refused PreVoteResponse the responder's durable term
    /// (`on_pre_vote`); a granted one carries the request's term, not the responder's, and is
    /// not counted. Whether the sender may campaign is remembered too, as last shown (a
    /// PreVote or RequestVote shows it may).
    pub(super) fn note_lost_report(&mut self, m: &Message) {
        let Some(b) = self.lost else {
            return;
        };
        let (li, lt, sender_term, voter) = match m.body {
            MessageBody::PreVote {
                last_log_index,
                last_log_term,
            } => (
                last_log_index,
                last_log_term,
                Term(m.term.0.saturating_sub(1)),
                true,
            ),
            MessageBody::RequestVote {
                last_log_index,
                last_log_term,
                ..
            } => (last_log_index, last_log_term, m.term, true),
            MessageBody::PreVoteResponse {
                granted: false,
                last_log_index,
                last_log_term,
                voter,
            } => (last_log_index, last_log_term, m.term, voter),
            _ => return,
        };
        if sender_term <= b.term {
            return;
        }
        let lowest = self.lost_report_positions.entry(m.from).or_insert((lt, li));
        *lowest = (*lowest).min((lt, li));
        if voter {
            self.lost_non_voters.remove(&m.from);
        } else {
            self.lost_non_voters.insert(m.from);
        }
    }

    /// Whether `w` showed it holds none of the lost entries that count: a log no more up to
    /// date than the intact part of ours (the lost entries all come after it in Raft's
    /// up-to-date order), or, for a server that is not a voter of our membership, that it
    /// may not campaign. Such a server's log may hold lost entries (a learner the lost
    /// entries were sent to), but by the latest change it holds it is no voter, and from a
    /// term past the bound's it takes no lost entry it does not already hold: no quorum forms
    /// around it. (An entry committed while it was a voter, and then held by no voter but this
    /// node once a later change left it out, is gone with this node's log, as a lone voter's
    /// would be.) Without this, a voter alone in its intact log waits for good on a learner
    /// that holds what it lost.
    fn lost_witness_cleared(&self, w: NodeId) -> bool {
        let Some(&p) = self.lost_report_positions.get(&w) else {
            return false;
        };
        p <= self.lost_intact || self.lost_shown_no_voter(w)
    }

    /// `w` is no voter of ours, and its latest report (from a term past the bound's) showed
    /// it may not campaign.
    fn lost_shown_no_voter(&self, w: NodeId) -> bool {
        self.lost_non_voters.contains(&w) && !self.membership.is_voter(w)
    }

    /// Clears `lost` once it no longer matters, for one of three reasons:
    /// - this node's commit index reached the bound: it holds (matching a leader) every entry the
    ///   bound covers that was committed;
    /// - its log is itself at least as up to date as the bound (the vote check then subsumes it);
    /// - every other voter, and every other server that may have become one
    ///   (`lost_witnesses`), showed a log that holds none of the lost entries, each from a term
    ///   past the bound's (`note_lost_report`): a committed entry is held by at least one voter
    ///   besides this node. Every one, not `n - q + 1` of them: the lost entries may have held
    ///   a membership change, committed by the quorum of its own membership, which for a
    ///   removal is smaller than that of the membership this node still knows (the simulator
    ///   found a 4-voter cluster electing a leader without the committed removal of a voter,
    ///   acknowledged by this node and one other only). With every other voter showing none,
    ///   such a change was on no quorum either (three or more voters; with two, an addition's
    ///   quorum can be this node and the new voter, whom it heard from). (With no other server
    ///   to ask, a lost entry was on no one else: nothing can bring it back, and withholding
    ///   votes would only stop the cluster.)
    pub(super) fn maybe_release_lost(&mut self) {
        self.maybe_lower_lost();
        let Some(b) = self.lost else {
            return;
        };
        let why = if self.commit >= b.index {
            format!("its commit index reached {:?}", self.commit)
        } else if (self.last_term(), self.last_index())
            >= self.lost_vote_bound.unwrap_or((b.term, b.index))
        {
            format!(
                "its log reached {:?} in {:?}",
                self.last_index(),
                self.last_term()
            )
        } else {
            let others = self.lost_witnesses();
            if self.membership.voter_count() == 0 {
                // The damage took the membership too: nobody to ask until a leader sends it.
                return;
            }
            let shown = others
                .iter()
                .filter(|&&w| self.lost_witness_cleared(w))
                .count();
            if others.is_empty() {
                "no other server could hold the lost entries".to_string()
            } else if shown == others.len() {
                format!("{shown} servers hold none of the lost entries")
            } else {
                return;
            }
        };
        log::info!(
            "n{} grants votes again: {why} (lost entries through {:?})",
            self.id,
            b.index
        );
        self.lost = None;
        self.lost_report_positions.clear();
        self.lost_non_voters.clear();
        self.lost_vote_bound = None;
    }

    /// Lowers the bound when every other voter, and every other server that may have become
    /// one (`lost_witnesses`), showed a log that ends before it (see `maybe_release_lost` for
    /// why every one): a lost entry beyond the most up-to-date log
    /// position they showed (each from a term past the bound's, `note_lost_report`) was on no
    /// other voter, and never will be: whoever of them acknowledged it did so before, and lost
    /// it since to a leader without it. So a candidate at that position holds every lost entry
    /// that can be committed (`lost_vote_bound`). When
    /// that position is in an earlier term than the bound's, the bound's term comes down to it,
    /// durably (its index stays: the commit index must still reach it). Without this, a bound
    /// whose term no other voter's log reaches (the torn write was the vote of a new term), or
    /// whose index lies past every voter's log, keeps this node from voting for anyone, and the
    /// cluster may need its vote.
    fn maybe_lower_lost(&mut self) {
        let Some(b) = self.lost else {
            return;
        };
        let witnesses = self.lost_witnesses();
        let others = witnesses.len();
        if others == 0 {
            return;
        }
        // Recomputed at every step, with the membership of now: none while a witness has shown
        // nothing. A server that showed it may not campaign, and is no voter of ours, holds no
        // lost entry that can be committed without the voters (`lost_witness_cleared`).
        let shown: Option<Vec<Option<(Term, LogIndex)>>> = witnesses
            .iter()
            .map(|&w| {
                let p = self.lost_report_positions.get(&w).copied()?;
                Some((!self.lost_shown_no_voter(w)).then_some(p))
            })
            .collect();
        let Some(p) = shown.and_then(|s| s.into_iter().flatten().max()) else {
            self.lost_vote_bound = None;
            return;
        };
        let lowered = if p.0 < b.term {
            LostEntries {
                term: p.0,
                index: b.index,
            }
        } else {
            b
        };
        let vote_bound = (p < (lowered.term, lowered.index)).then_some(p);
        if lowered != b || vote_bound.is_some_and(|v| Some(v) != self.lost_vote_bound) {
            log::info!(
                "n{}: {others} servers showed logs ending at or before {:?} in {:?}: lost \
                 entries beyond it were on no other voter",
                self.id,
                p.1,
                p.0
            );
        }
        self.lost = Some(lowered);
        self.lost_vote_bound = vote_bound;
    }

    /// Follower if this node may campaign, else Learner.
    pub(super) fn passive_role(&self) -> Role {
        if self.can_campaign() {
            Role::Follower
        } else {
            Role::Learner
        }
    }

    /// Heard from a current leader within the minimum election timeout (thesis §4.2.3).
    pub(super) fn in_lease(&self) -> bool {
        self.cfg.check_quorum
            && self.leader.is_some()
            && self.election_elapsed < self.cfg.election_ticks
    }

    pub(super) fn reset_election_timer(&mut self) {
        self.election_elapsed = 0;
        let e = self.cfg.election_ticks.max(1) as u64;
        self.randomized_timeout = (e + self.rng.next_u64() % e) as u32;
    }

    pub(super) fn log_role(&self, before: Role) {
        if before != self.role {
            let role = match self.role {
                Role::Follower => "follower",
                Role::PreCandidate => "pre-candidate",
                Role::Candidate => "candidate",
                Role::Leader => "leader",
                Role::Learner => "learner",
            };
            log::info!("n{} became {} at {:?}", self.id, role, self.term);
        }
    }

    pub(super) fn clear_leader_state(&mut self) {
        self.progress.clear();
        self.transfer = None;
        self.append_pending = false;
        self.read_round_wanted = false;
        self.reads_before_commit.clear();
        self.pending_reads.clear();
        self.noop_index = LogIndex(0);
    }

    /// Adopts `term` (forgetting the vote if it is newer) and follows `leader`.
    ///
    /// The election timer restarts only on hearing from a leader (or when a leader steps
    /// down): Figure 2 resets it on AppendEntries from the current leader or on granting a vote,
    /// not on merely seeing a higher term, or a node that keeps campaigning (a removed server
    /// without pre-vote or lease) could hold every timer back forever.
    pub(super) fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        let before = self.role;
        let reset = leader.is_some() || before == Role::Leader;
        if term > self.term {
            self.term = term;
            self.vote = None;
        }
        self.clear_leader_state();
        self.votes.clear();
        self.won_election = false;
        self.leader = leader;
        self.role = self.passive_role();
        if reset {
            self.reset_election_timer();
        }
        self.log_role(before);
    }

    /// A valid AppendEntries/InstallSnapshot from `from` in our term: it is the leader.
    pub(super) fn follow(&mut self, from: NodeId) {
        if (self.role != Role::Follower && self.role != Role::Learner) || self.leader != Some(from)
        {
            self.become_follower(self.term, Some(from));
        } else {
            self.election_elapsed = 0;
        }
    }

    pub(super) fn start_election(&mut self, transfer: bool) {
        if self.cfg.pre_vote && !transfer {
            self.become_pre_candidate();
        } else {
            self.become_candidate(transfer);
        }
    }

    pub(super) fn become_pre_candidate(&mut self) {
        let before = self.role;
        self.clear_leader_state();
        self.role = Role::PreCandidate;
        self.leader = None;
        self.votes.clear();
        self.won_election = false;
        self.reset_election_timer();
        self.log_role(before);
        self.send_pre_votes();
        self.record_vote(self.id, true);
    }

    /// PreVote requests to every other voter, carrying this node's log position.
    /// They leave once this node's term is durable: a node bounded by lost entries takes a
    /// PreVote as proof that its sender's term is past the bound (`note_lost_report`), which
    /// must still hold if the sender restarts.
    pub(super) fn send_pre_votes(&mut self) {
        for m in self.pre_votes(self.term.next(), &self.other_voters()) {
            self.send_once_term_durable(m);
        }
    }

    fn other_voters(&self) -> Vec<NodeId> {
        self.membership.voters().filter(|&v| v != self.id).collect()
    }

    /// A PreVote in `term` to each of `to`, carrying this node's log position.
    fn pre_votes(&self, term: Term, to: &[NodeId]) -> Vec<Message> {
        let (li, lt) = (self.last_index(), self.last_term());
        to.iter()
            .map(|&v| Message {
                from: self.id,
                to: v,
                term,
                body: MessageBody::PreVote {
                    last_log_index: li,
                    last_log_term: lt,
                },
            })
            .collect()
    }

    /// A node bounded by lost entries, with no leader, learns from the voters (and the other
    /// servers that may have become voters, `lost_witnesses`) where their logs end, in a way
    /// each answer can be counted by (`note_lost_report`): a RequestVote in its
    /// own term (past the bound's) brings every voter outside a leader's lease to that term
    /// (this node is not a candidate: the votes it may get are never counted, and cost the
    /// cluster that one term), and a PreVote in that same term is refused by a voter there,
    /// with its durable term and its log. A voter that never campaigns (a learner that does
    /// not yet know it was made a voter) shows its log only this way. The RequestVote is also
    /// what other nodes bounded alike count (a power loss that tore the same write
    /// everywhere). All leave once this node's term is durable.
    pub(super) fn send_lost_probes(&mut self) {
        let witnesses = self.lost_witnesses();
        self.send_request_votes(&witnesses, false);
        for m in self.pre_votes(self.term, &witnesses) {
            self.queue_after_persist(m);
        }
    }

    /// RequestVotes in this node's term to each of `to`, once that term (and a vote for
    /// itself, if any) is durable (§3.8).
    fn send_request_votes(&mut self, to: &[NodeId], transfer: bool) {
        let (li, lt) = (self.last_index(), self.last_term());
        for &v in to {
            self.send_after_persist(
                v,
                MessageBody::RequestVote {
                    last_log_index: li,
                    last_log_term: lt,
                    transfer,
                },
            );
        }
    }

    pub(super) fn become_candidate(&mut self, transfer: bool) {
        let before = self.role;
        self.clear_leader_state();
        self.term = self.term.next();
        self.vote = Some(self.id);
        self.role = Role::Candidate;
        self.leader = None;
        self.votes.clear();
        self.won_election = false;
        self.reset_election_timer();
        self.log_role(before);
        self.send_request_votes(&self.other_voters(), transfer);
        self.record_vote(self.id, true);
    }

    /// Counts a (pre-)vote from a voter of the latest membership and decides the campaign.
    pub(super) fn record_vote(&mut self, from: NodeId, granted: bool) {
        if !self.membership.is_voter(from) {
            return;
        }
        self.votes.entry(from).or_insert(granted);
        let yes = self.votes.values().filter(|&&g| g).count();
        let no = self.votes.len() - yes;
        let q = self.membership.quorum();
        if yes >= q {
            match self.role {
                Role::PreCandidate => self.become_candidate(false),
                Role::Candidate if self.term_durable() => self.become_leader(),
                Role::Candidate => self.won_election = true,
                _ => {}
            }
        } else if no > self.membership.voter_count() - q {
            self.become_follower(self.term, None);
        }
    }

    pub(super) fn become_leader(&mut self) {
        let before = self.role;
        self.clear_leader_state();
        self.role = Role::Leader;
        self.leader = Some(self.id);
        self.votes.clear();
        self.won_election = false;
        self.election_elapsed = 0;
        self.heartbeat_elapsed = 0;
        self.log_role(before);
        let next = self.last_index().next();
        let peers: Vec<NodeId> = self
            .membership
            .members
            .keys()
            .copied()
            .filter(|&p| p != self.id)
            .collect();
        for p in peers {
            self.progress.insert(p, Progress::new(next));
        }
        // §5.4.2 / §8: an entry of the new term lets the leader commit (and learn the commit
        // index) without counting replicas of older terms.
        let (idx, _) = self.append_as_leader(EntryKind::Noop, &[]);
        self.noop_index = idx;
        self.maybe_commit();
    }

    pub(super) fn tick_leader(&mut self) {
        self.heartbeat_elapsed += 1;
        if self.heartbeat_elapsed >= self.cfg.heartbeat_ticks.max(1) {
            self.heartbeat_elapsed = 0;
            self.broadcast_heartbeat();
        } else {
            self.announce_commit();
        }
        if let Some(t) = &mut self.transfer {
            t.elapsed_ticks += 1;
            if t.elapsed_ticks >= self.cfg.election_ticks {
                log::info!("n{} leadership transfer to n{} timed out", self.id, t.to);
                self.transfer = None;
            }
        }
        let last = self.last_index();
        let et = self.cfg.election_ticks.max(1);
        let ids: Vec<NodeId> = self.progress.keys().copied().collect();
        for id in ids {
            let Some(pr) = self.progress.get_mut(&id) else {
                continue;
            };
            if pr.match_index >= last && pr.state != ReplState::Snapshot {
                pr.stall_ticks = 0;
                continue;
            }
            pr.stall_ticks += 1;
            if pr.stall_ticks < et {
                continue;
            }
            pr.stall_ticks = 0;
            match pr.state {
                ReplState::Snapshot => {
                    if let Some(s) = &mut pr.snapshot {
                        s.sent = s.acked;
                        s.done_sent = false;
                        s.rewound_at = None;
                    }
                }
                _ => pr.become_probe(),
            }
            self.send_append(id, false);
        }
        if self.election_elapsed >= et {
            self.election_elapsed = 0;
            if self.cfg.check_quorum {
                let mut active = if self.membership.is_voter(self.id) {
                    1
                } else {
                    0
                };
                for v in self.membership.voters() {
                    if v != self.id && self.progress.get(&v).is_some_and(|p| p.recent_active) {
                        active += 1;
                    }
                }
                for pr in self.progress.values_mut() {
                    pr.recent_active = false;
                }
                if active < self.membership.quorum() {
                    log::info!(
                        "n{} lost contact with a quorum at {:?}; stepping down",
                        self.id,
                        self.term
                    );
                    self.become_follower(self.term, None);
                }
            }
        }
    }

    // ------------------------------------------------------------------ internals: voting

    /// §5.4.1: the candidate's log is at least as up to date as ours.
    pub(super) fn log_up_to_date(&self, last_index: LogIndex, last_term: Term) -> bool {
        last_term > self.last_term()
            || (last_term == self.last_term() && last_index >= self.last_index())
    }

    pub(super) fn on_pre_vote(&mut self, from: NodeId, term: Term, li: LogIndex, lt: Term) {
        let granted = term > self.term
            && !self.in_lease()
            && self.log_up_to_date(li, lt)
            && self.covers_lost(from, li, lt);
        let reply_term = if granted { term } else { self.term };
        let body = self.pre_vote_response(granted);
        let m = Message {
            from: self.id,
            to: from,
            term: reply_term,
            body,
        };
        if granted {
            self.msgs.push(m);
        } else {
            self.send_once_term_durable(m);
        }
    }

    pub(super) fn pre_vote_response(&self, granted: bool) -> MessageBody {
        MessageBody::PreVoteResponse {
            granted,
            last_log_index: self.last_index(),
            last_log_term: self.last_term(),
            voter: self.can_campaign(),
        }
    }

    pub(super) fn on_request_vote(&mut self, from: NodeId, li: LogIndex, lt: Term) {
        // Vote at most once per term (§5.2). The voter's own membership is not consulted
        // (thesis §4.2.3): a candidate asks only the voters of its configuration and counts only
        // them, so an answer can never hurt safety; refusing could deadlock when logs disagree
        // on an uncommitted change (a node whose uncommitted entry removes it would refuse the
        // only candidate that can win). Non-voters still never campaign.
        let can_vote = self.vote == Some(from) || (self.vote.is_none() && self.leader.is_none());
        let granted = can_vote
            && self.role != Role::Leader
            && self.log_up_to_date(li, lt)
            && self.covers_lost(from, li, lt);
        if granted {
            self.vote = Some(from);
            self.reset_election_timer();
        }
        log::debug!(
            "n{} {} vote for n{} at {:?}",
            self.id,
            if granted { "grants" } else { "refuses" },
            from,
            self.term
        );
        self.send_after_persist(from, MessageBody::RequestVoteResponse { granted });
    }
}
