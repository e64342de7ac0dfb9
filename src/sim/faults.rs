//! Fault profiles and the known-bug catalogue. A profile bounds the chaos of a run (link loss,
//! duplication and delay, partitions, crashes, disk latency, membership churn, leadership
//! transfers, forced elections, snapshot frequency and slicing); the simulator draws concrete
//! faults from it with the run's generator. The catalogue names each known-bug switch, in the
//! core (`raft::Bugs`) or in the host (`host::Bugs`), with the profile that exposes it. Must not
//! act on the cluster itself: `inject.rs` executes the actions.

use super::checker::FailureKind;
use crate::rng::Rng;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    /// Short delays, rare faults: the protocol's common path.
    Calm,
    /// Loss up to 30 %, duplication up to 50 %, wide delays that reorder.
    Lossy,
    /// Partitions of every shape coming and going.
    Partitions,
    /// Crashes with pending writes lost or torn, slow disks.
    Crashes,
    /// Membership changes, frequent snapshots, leadership transfers.
    Membership,
    /// Everything at once.
    Chaos,
}

pub const PROFILES: [Profile; 6] = [
    Profile::Calm,
    Profile::Lossy,
    Profile::Partitions,
    Profile::Crashes,
    Profile::Membership,
    Profile::Chaos,
];

impl Profile {
    pub fn name(self) -> &'static str {
        match self {
            Profile::Calm => "calm",
            Profile::Lossy => "lossy",
            Profile::Partitions => "partitions",
            Profile::Crashes => "crashes",
            Profile::Membership => "membership",
            Profile::Chaos => "chaos",
        }
    }

    pub fn parse(s: &str) -> Option<Profile> {
        PROFILES.iter().copied().find(|p| p.name() == s)
    }

    /// The profile a seed gets when none is named: every profile in turn.
    pub fn for_seed(seed: u64) -> Profile {
        PROFILES[(seed % PROFILES.len() as u64) as usize]
    }
}

/// Concrete bounds and weights drawn from by the fault scheduler. Durations in µs of simulated time.
#[derive(Clone, Debug)]
pub struct FaultProfile {
    pub loss_max: f64,
    pub dup_max: f64,
    pub delay_us: (u64, u64),
    pub sync_us: (u64, u64),
    /// Gap between two fault actions.
    pub gap_us: (u64, u64),
    pub w_crash: u64,
    pub w_partition: u64,
    pub w_links: u64,
    pub w_conf: u64,
    pub w_transfer: u64,
    pub w_campaign: u64,
    /// A voter loses its whole disk and restarts with the same command line (a replaced disk,
    /// or one not mounted): it must refuse to rejoin as the member it was.
    pub w_wipe: u64,
    /// A node's last synced log records are damaged at a restart: recovery cuts them.
    pub w_damage: u64,
    /// The chance that the leader crashes shortly after a wipe or a damage (a second fault
    /// before the first is repaired: what a forgotten promise needs to matter).
    pub crash_leader_after_loss: f64,
    /// Bias of crashes towards the leader, in percent.
    pub crash_leader_pct: u64,
    pub down_us: (u64, u64),
    pub partition_us: (u64, u64),
    /// Each node compacts after this many applied entries.
    pub snapshot_every: u64,
    /// Keys a node encodes per loop turn while taking a snapshot (the server's 4096 would
    /// finish the simulator's small dictionaries at once; a few keys per turn make committed
    /// entries wait while other events come in, as in a server with a big dictionary).
    pub snapshot_keys_per_turn: usize,
    /// Simulated time between two loop turns of a node taking a snapshot.
    pub turn_gap_us: (u64, u64),
    /// Loss on client↔node links (forces retries, hence exercises exactly-once).
    pub client_loss: f64,
    /// Whether a crash may tear the last kept batch.
    pub torn: bool,
    /// Proposes several membership changes at once (only the concurrent-change bug accepts them).
    pub conf_burst: bool,
    /// Bounds of the per-run `max_append_bytes` (small values send one entry per message, so
    /// that followers hold partial suffixes) and of `max_inflight`.
    pub append_bytes: (u64, u64),
    pub inflight: (u64, u64),
    /// Reactive faults: the chance that a node crashes right after granting a vote (restarts in
    /// the middle of elections), and that a new leader crashes within `new_leader_crash_us` of
    /// winning (leader churn with partially replicated suffixes: Figure 8).
    pub crash_on_vote: f64,
    pub crash_new_leader: f64,
    pub new_leader_crash_us: (u64, u64),
    /// Restart delay after a reactive crash.
    pub quick_down_us: (u64, u64),
    /// The chance that a node crashes within `reply_crash_us` of answering a write: an
    /// acknowledged write must survive its leader's crash right after the answer.
    pub crash_after_reply: f64,
    pub reply_crash_us: (u64, u64),
    /// The state machine's session time-to-live (log-carried time); short values make idle
    /// sessions expire during a run, so that clients see `SessionExpired` and register again.
    pub session_ttl_ms: u64,
    /// The chance that a client pauses 1–4 s between two operations (long enough for a short
    /// session time-to-live to pass).
    pub client_pause: f64,
    /// Raft's check-quorum (a leader that hears from no quorum steps down). Off, a deposed
    /// leader cut off from its peers believes it leads for as long as the partition lasts.
    pub check_quorum: bool,
    /// How many of the clients are read-mostly.
    pub reader_clients: usize,
    /// Keys the clients write once at the start, besides the few their operations collide on:
    /// a bigger dictionary makes every snapshot take more turns.
    pub filler_keys: usize,
    /// Every partition isolates the current leader (instead of a random shape).
    pub isolate_leader: bool,
}

impl FaultProfile {
    pub fn of(p: Profile) -> FaultProfile {
        let base = FaultProfile {
            loss_max: 0.02,
            dup_max: 0.02,
            delay_us: (300, 3_000),
            sync_us: (100, 2_000),
            gap_us: (200_000, 800_000),
            w_crash: 1,
            w_partition: 1,
            w_links: 1,
            w_conf: 1,
            w_transfer: 1,
            w_campaign: 0,
            w_wipe: 0,
            w_damage: 0,
            crash_leader_after_loss: 0.0,
            crash_leader_pct: 30,
            down_us: (50_000, 1_500_000),
            partition_us: (100_000, 1_500_000),
            snapshot_every: 64,
            snapshot_keys_per_turn: 2,
            turn_gap_us: (50, 1_000),
            client_loss: 0.0,
            torn: true,
            conf_burst: false,
            append_bytes: (64, 16 * 1024),
            inflight: (1, 32),
            crash_on_vote: 0.0,
            crash_new_leader: 0.0,
            new_leader_crash_us: (1_000, 50_000),
            quick_down_us: (100, 5_000),
            crash_after_reply: 0.0,
            reply_crash_us: (0, 2_000),
            session_ttl_ms: 10 * 60 * 1000,
            client_pause: 0.0,
            check_quorum: true,
            reader_clients: 0,
            filler_keys: 0,
            isolate_leader: false,
        };
        match p {
            Profile::Calm => FaultProfile {
                gap_us: (1_000_000, 3_000_000),
                ..base
            },
            Profile::Lossy => FaultProfile {
                loss_max: 0.3,
                dup_max: 0.5,
                delay_us: (100, 20_000),
                w_links: 4,
                w_crash: 0,
                w_partition: 0,
                client_loss: 0.05,
                ..base
            },
            Profile::Partitions => FaultProfile {
                w_partition: 6,
                w_crash: 0,
                loss_max: 0.1,
                dup_max: 0.1,
                gap_us: (100_000, 600_000),
                ..base
            },
            Profile::Crashes => FaultProfile {
                w_crash: 6,
                w_partition: 1,
                w_wipe: 1,
                w_damage: 2,
                sync_us: (200, 15_000),
                crash_leader_pct: 50,
                gap_us: (100_000, 500_000),
                ..base
            },
            Profile::Membership => FaultProfile {
                w_conf: 6,
                w_transfer: 3,
                w_crash: 1,
                snapshot_every: 16,
                gap_us: (80_000, 400_000),
                ..base
            },
            Profile::Chaos => FaultProfile {
                loss_max: 0.3,
                dup_max: 0.5,
                delay_us: (100, 15_000),
                sync_us: (100, 10_000),
                gap_us: (60_000, 400_000),
                w_crash: 3,
                w_partition: 3,
                w_links: 2,
                w_conf: 3,
                w_transfer: 2,
                w_campaign: 1,
                w_wipe: 1,
                w_damage: 1,
                snapshot_every: 24,
                client_loss: 0.03,
                crash_on_vote: 0.02,
                crash_new_leader: 0.05,
                session_ttl_ms: 2_000,
                client_pause: 0.01,
                ..base
            },
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultAction {
    Crash,
    Partition,
    Links,
    Conf,
    Transfer,
    Campaign,
    Wipe,
    Damage,
}

impl FaultProfile {
    pub fn pick(&self, rng: &mut Rng) -> Option<FaultAction> {
        let w = [
            (self.w_crash, FaultAction::Crash),
            (self.w_partition, FaultAction::Partition),
            (self.w_links, FaultAction::Links),
            (self.w_conf, FaultAction::Conf),
            (self.w_transfer, FaultAction::Transfer),
            (self.w_campaign, FaultAction::Campaign),
            (self.w_wipe, FaultAction::Wipe),
            (self.w_damage, FaultAction::Damage),
        ];
        let total: u64 = w.iter().map(|x| x.0).sum();
        if total == 0 {
            return None;
        }
        let mut r = rng.below(total);
        for (weight, a) in w {
            if r < weight {
                return Some(a);
            }
            r -= weight;
        }
        None
    }
}

/// The known-bug switches, by name, each with the fault profile that exposes it: those of the
/// Raft core (`raft::Bugs`) and those of the host (`host::Bugs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BugName {
    CommitOldTermByCount,
    AckBeforeSync,
    ForgetVoteOnRestart,
    ReadWithoutConfirmation,
    ConcurrentConfChanges,
    HostReplyBeforeDurable,
    HostSendAfterPersistEarly,
    HostReadBeforeApplied,
    HostWatchSkipsSnapshot,
    HostWatchStartsPastCompaction,
    IgnoreLostEntries,
    HostForgetLostStorage,
}

pub const BUGS: [BugName; 12] = [
    BugName::CommitOldTermByCount,
    BugName::AckBeforeSync,
    BugName::ForgetVoteOnRestart,
    BugName::ReadWithoutConfirmation,
    BugName::ConcurrentConfChanges,
    BugName::HostReplyBeforeDurable,
    BugName::HostSendAfterPersistEarly,
    BugName::HostReadBeforeApplied,
    BugName::HostWatchSkipsSnapshot,
    BugName::HostWatchStartsPastCompaction,
    BugName::IgnoreLostEntries,
    BugName::HostForgetLostStorage,
];

impl BugName {
    pub fn name(self) -> &'static str {
        match self {
            BugName::CommitOldTermByCount => "commit_old_term_by_count",
            BugName::AckBeforeSync => "ack_before_sync",
            BugName::ForgetVoteOnRestart => "forget_vote_on_restart",
            BugName::ReadWithoutConfirmation => "read_without_confirmation",
            BugName::ConcurrentConfChanges => "concurrent_conf_changes",
            BugName::HostReplyBeforeDurable => "host_reply_before_durable",
            BugName::HostSendAfterPersistEarly => "host_send_after_persist_early",
            BugName::HostReadBeforeApplied => "host_read_before_applied",
            BugName::HostWatchSkipsSnapshot => "host_watch_skips_snapshot",
            BugName::HostWatchStartsPastCompaction => "host_watch_starts_past_compaction",
            BugName::IgnoreLostEntries => "ignore_lost_entries",
            BugName::HostForgetLostStorage => "host_forget_lost_storage",
        }
    }

    /// One line: what the switch does wrong.
    pub fn describe(self) -> &'static str {
        match self {
            BugName::CommitOldTermByCount => {
                "raft: commit an earlier term's entry by counting replicas (Figure 8)"
            }
            BugName::AckBeforeSync => "raft: acknowledge entries and grant votes before the sync",
            BugName::ForgetVoteOnRestart => "raft: forget the vote when restarting",
            BugName::ReadWithoutConfirmation => {
                "raft: serve a ReadIndex read without the leadership confirmation round"
            }
            BugName::ConcurrentConfChanges => {
                "raft: accept a membership change while another is uncommitted"
            }
            BugName::HostReplyBeforeDurable => {
                "host: a leader counts, applies and answers its write before its own disk has it"
            }
            BugName::HostSendAfterPersistEarly => {
                "host: send messages_after_persist before their batch is durable"
            }
            BugName::HostReadBeforeApplied => {
                "host: answer a ReadIndex read before its index is applied"
            }
            BugName::HostWatchSkipsSnapshot => {
                "host: a watcher behind a snapshot from the leader skips what it covers"
            }
            BugName::HostWatchStartsPastCompaction => {
                "host: a watch from before the history starts at its oldest change, not Compacted"
            }
            BugName::IgnoreLostEntries => {
                "raft: vote by a damaged log, forgetting the entries recovery cut"
            }
            BugName::HostForgetLostStorage => {
                "host: a server whose disk was lost bootstraps again and its peers take it back"
            }
        }
    }

    pub fn parse(s: &str) -> Option<BugName> {
        BUGS.iter().copied().find(|b| b.name() == s)
    }

    /// The core's switches this bug turns on.
    pub fn raft_bugs(self) -> crate::raft::Bugs {
        let mut b = crate::raft::Bugs::default();
        match self {
            BugName::CommitOldTermByCount => b.commit_old_term_by_count = true,
            BugName::AckBeforeSync => b.ack_before_sync = true,
            BugName::ForgetVoteOnRestart => b.forget_vote_on_restart = true,
            BugName::ReadWithoutConfirmation => b.read_without_confirmation = true,
            BugName::ConcurrentConfChanges => b.concurrent_conf_changes = true,
            BugName::IgnoreLostEntries => b.ignore_lost_entries = true,
            _ => {}
        }
        b
    }

    /// The host's switches this bug turns on.
    pub fn host_bugs(self) -> crate::host::Bugs {
        let mut b = crate::host::Bugs::default();
        match self {
            BugName::HostReplyBeforeDurable => b.reply_before_durable = true,
            BugName::HostSendAfterPersistEarly => b.send_after_persist_early = true,
            BugName::HostReadBeforeApplied => b.read_before_applied = true,
            BugName::HostWatchSkipsSnapshot => b.watch_skips_snapshot = true,
            BugName::HostWatchStartsPastCompaction => b.watch_starts_past_compaction = true,
            BugName::HostForgetLostStorage => b.forget_lost_storage = true,
            _ => {}
        }
        b
    }

    /// The faults that expose this bug (see each arm for why).
    pub fn profile(self) -> FaultProfile {
        // Storage losses only where a profile asks for them: each is a repair that takes the
        // cluster's margin for a while, which other bugs' profiles are not built around.
        let base = FaultProfile {
            w_wipe: 0,
            w_damage: 0,
            ..FaultProfile::of(Profile::Chaos)
        };
        match self {
            // Figure 8 needs leader churn: leaders crash or are deposed while their entries sit on
            // a minority, and new leaders of later terms come and go.
            BugName::CommitOldTermByCount => FaultProfile {
                w_crash: 4,
                w_partition: 3,
                w_campaign: 4,
                w_conf: 0,
                w_transfer: 1,
                crash_leader_pct: 70,
                append_bytes: (1, 1),
                inflight: (1, 1),
                crash_new_leader: 0.5,
                new_leader_crash_us: (500, 20_000),
                quick_down_us: (50_000, 300_000),
                loss_max: 0.3,
                dup_max: 0.1,
                down_us: (20_000, 400_000),
                partition_us: (50_000, 400_000),
                gap_us: (30_000, 150_000),
                ..base
            },
            // An ack that leaves before the sync only hurts when a crash then loses the write.
            BugName::AckBeforeSync => FaultProfile {
                w_crash: 6,
                w_partition: 0,
                w_conf: 0,
                sync_us: (2_000, 20_000),
                ..base
            },
            // A forgotten vote needs restarts in the middle of elections.
            BugName::ForgetVoteOnRestart => FaultProfile {
                w_crash: 6,
                w_campaign: 4,
                w_conf: 0,
                w_partition: 1,
                crash_leader_pct: 60,
                down_us: (1_000, 60_000),
                sync_us: (100, 1_000),
                crash_on_vote: 0.5,
                quick_down_us: (0, 2_000),
                delay_us: (2_000, 15_000),
                dup_max: 0.5,
                gap_us: (20_000, 120_000),
                ..base
            },
            // A stale read needs an old leader cut off from its peers while clients still ask it.
            BugName::ReadWithoutConfirmation => FaultProfile {
                w_crash: 0,
                w_partition: 6,
                w_conf: 0,
                w_links: 0,
                w_transfer: 1,
                w_campaign: 0,
                loss_max: 0.0,
                dup_max: 0.0,
                delay_us: (300, 2_000),
                partition_us: (300_000, 1_500_000),
                gap_us: (100_000, 500_000),
                client_loss: 0.0,
                // Without check-quorum an isolated old leader keeps answering reads for the
                // whole partition, while the majority elects a new leader and writes.
                check_quorum: false,
                reader_clients: 2,
                isolate_leader: true,
                ..base
            },
            // Concurrent changes need membership churn, with several changes proposed at once.
            BugName::ConcurrentConfChanges => FaultProfile {
                w_conf: 8,
                w_partition: 2,
                w_crash: 1,
                w_transfer: 0,
                w_campaign: 1,
                conf_burst: true,
                gap_us: (40_000, 200_000),
                ..base
            },
            // An answer given before the leader's own write is durable only hurts when the
            // leader then crashes and loses it, and comes back quickly enough to help elect a
            // node that never had it: slow disks, crashes right after answers, short downtimes.
            BugName::HostReplyBeforeDurable => FaultProfile {
                crash_after_reply: 0.02,
                append_bytes: (1, 1),
                inflight: (1, 1),
                w_crash: 6,
                w_partition: 1,
                w_conf: 0,
                w_transfer: 0,
                w_campaign: 0,
                crash_leader_pct: 80,
                sync_us: (10_000, 50_000),
                delay_us: (100, 2_000),
                down_us: (1_000, 50_000),
                gap_us: (30_000, 150_000),
                loss_max: 0.1,
                dup_max: 0.1,
                ..base
            },
            // Acknowledgements sent before their batch is durable: the ack check sees the first.
            BugName::HostSendAfterPersistEarly => FaultProfile {
                w_crash: 6,
                w_partition: 0,
                w_conf: 0,
                sync_us: (2_000, 20_000),
                ..base
            },
            // A vote by a log that lost acknowledged entries only hurts when that vote elects a
            // leader without them: a follower that helped commit loses its tail, the leader
            // crashes, and the other follower lagged behind (cut off, or slow).
            BugName::IgnoreLostEntries => FaultProfile {
                crash_leader_after_loss: 0.7,
                w_damage: 6,
                w_crash: 4,
                w_partition: 3,
                w_wipe: 0,
                w_conf: 0,
                w_transfer: 0,
                w_campaign: 2,
                w_links: 0,
                crash_leader_pct: 70,
                isolate_leader: false,
                loss_max: 0.05,
                dup_max: 0.0,
                down_us: (5_000, 100_000),
                partition_us: (50_000, 300_000),
                gap_us: (30_000, 120_000),
                ..base
            },
            // A server that comes back empty and is taken for the member it was hurts the same
            // way: its vote elects a leader without the writes only it and the old leader had.
            BugName::HostForgetLostStorage => FaultProfile {
                crash_leader_after_loss: 0.7,
                // One entry per message, one message in flight: followers sit at different
                // points of the log, so one may lack what the wiped one had.
                append_bytes: (1, 1),
                inflight: (1, 1),
                w_wipe: 6,
                w_crash: 4,
                w_partition: 3,
                w_damage: 0,
                w_conf: 0,
                w_transfer: 0,
                w_campaign: 2,
                w_links: 0,
                crash_leader_pct: 70,
                loss_max: 0.05,
                dup_max: 0.0,
                down_us: (5_000, 100_000),
                partition_us: (50_000, 300_000),
                gap_us: (30_000, 120_000),
                ..base
            },
            // A read served from a dictionary that lags its read index needs a new leader that
            // is still holding committed entries back for a snapshot: frequent snapshots taken
            // slowly, frequent leadership changes, and readers.
            BugName::HostReadBeforeApplied => FaultProfile {
                w_crash: 0,
                w_partition: 0,
                w_links: 0,
                w_conf: 0,
                w_campaign: 0,
                w_transfer: 6,
                loss_max: 0.0,
                dup_max: 0.0,
                client_loss: 0.0,
                snapshot_every: 4,
                snapshot_keys_per_turn: 1,
                filler_keys: 200,
                delay_us: (300, 3_000),
                turn_gap_us: (500, 2_000),
                gap_us: (30_000, 100_000),
                reader_clients: 2,
                ..base
            },
            // A follower installs a snapshot from the leader only when it has fallen behind the
            // leader's log: partitions and crashes that leave a node behind while snapshots are
            // taken often; a watcher on that node then has changes it was not sent.
            BugName::HostWatchSkipsSnapshot => FaultProfile {
                w_crash: 3,
                w_partition: 4,
                w_conf: 0,
                w_transfer: 0,
                w_campaign: 0,
                snapshot_every: 8,
                down_us: (300_000, 1_500_000),
                partition_us: (300_000, 1_500_000),
                gap_us: (100_000, 400_000),
                client_loss: 0.0,
                ..base
            },
            // A watcher resuming after a loss meets a history trimmed past it: lossy client
            // links break watch connections often.
            BugName::HostWatchStartsPastCompaction => FaultProfile {
                w_crash: 2,
                w_partition: 2,
                client_loss: 0.03,
                ..base
            },
        }
    }

    /// Failure kinds that count as catching this bug.
    pub fn expected(self) -> &'static [FailureKind] {
        use FailureKind::*;
        match self {
            BugName::CommitOldTermByCount => &[
                StateMachineSafety,
                LeaderCompleteness,
                LogMatching,
                Linearizability,
                CoreInvariant,
            ],
            BugName::AckBeforeSync => &[AckBeforeSync],
            BugName::ForgetVoteOnRestart => &[VoteSafety, ElectionSafety, CoreInvariant],
            BugName::ReadWithoutConfirmation => &[Linearizability],
            BugName::ConcurrentConfChanges => &[
                ConfChangeSafety,
                ElectionSafety,
                StateMachineSafety,
                LeaderCompleteness,
                CoreInvariant,
            ],
            BugName::HostReplyBeforeDurable => &[
                LeaderCompleteness,
                StateMachineSafety,
                LogMatching,
                Linearizability,
                CoreInvariant,
            ],
            BugName::HostSendAfterPersistEarly => &[AckBeforeSync],
            BugName::HostReadBeforeApplied => &[Linearizability],
            BugName::HostWatchSkipsSnapshot | BugName::HostWatchStartsPastCompaction => &[Watch],
            BugName::IgnoreLostEntries | BugName::HostForgetLostStorage => &[
                Linearizability,
                StateMachineSafety,
                LeaderCompleteness,
                LogMatching,
                VoteSafety,
                ElectionSafety,
                CoreInvariant,
            ],
        }
    }
}
