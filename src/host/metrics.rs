//! What the host counts for `/metrics`, and its answers to `/health` and `/ready`. The counters
//! are plain fields bumped where the event happens (a proposal, an applied entry, a snapshot);
//! the gauges (role, term, indexes, per-peer lag) are read from the core at scrape time. The
//! driver adds its own figures (client requests, connections, datagrams, fsync) and serves the
//! text. Must not change any state but its counters.

use super::*;
use crate::metrics::{Exposition, Histogram, LONG_BOUNDS_US};
use crate::raft::Role;

/// `/health` fails when the applied index trails the known commit index by more than this:
/// the node is not keeping up (a snapshot taken a slice per turn lags by far less).
pub const HEALTH_MAX_APPLY_LAG: u64 = 10_000;

/// The host's counters.
#[derive(Clone, Debug)]
pub struct HostMetrics {
    /// Dictionary commands this node proposed as leader.
    pub proposals: u64,
    /// Membership changes and promotions this node proposed as leader.
    pub conf_proposals: u64,
    /// Committed entries applied to the dictionary.
    pub applied_entries: u64,
    /// Times this node saw a new leader (itself included).
    pub leader_changes: u64,
    /// Snapshots this node took of its own dictionary and stored (log compaction).
    pub snapshots_taken: u64,
    /// Snapshots received from a leader and installed.
    pub snapshots_installed: u64,
    /// From the start of a snapshot's encoding until storage holds it.
    pub snapshot_duration: Histogram,
    /// Snapshots handed out for `SnapshotSave` (backups).
    pub snapshot_saves: u64,
}

impl Default for HostMetrics {
    fn default() -> HostMetrics {
        HostMetrics {
            proposals: 0,
            conf_proposals: 0,
            applied_entries: 0,
            leader_changes: 0,
            snapshots_taken: 0,
            snapshots_installed: 0,
            snapshot_duration: Histogram::new(LONG_BOUNDS_US),
            snapshot_saves: 0,
        }
    }
}

const ROLES: [Role; 5] = [
    Role::Follower,
    Role::PreCandidate,
    Role::Candidate,
    Role::Leader,
    Role::Learner,
];

impl Host {
    /// The host's counters.
    pub fn metrics(&self) -> &HostMetrics {
        &self.metrics
    }

    /// Writes the host's families: Raft state, replication, the dictionary, snapshots and the
    /// disk alarm.
    pub fn write_metrics(&self, e: &mut Exposition) {
        let m = &self.metrics;
        let role = self.raft.role();
        e.family(
            "zatt_raft_role",
            "gauge",
            "1 for the Raft role this server has now, 0 for the others.",
        );
        for r in ROLES {
            let v = if r == role { 1.0 } else { 0.0 };
            e.sample("zatt_raft_role", &[("role", role_name(r))], v);
        }
        e.gauge(
            "zatt_raft_term",
            "The current Raft term.",
            self.raft.term().0 as f64,
        );
        e.gauge(
            "zatt_raft_has_leader",
            "1 when this server knows a leader (itself included).",
            if self.raft.leader().is_some() {
                1.0
            } else {
                0.0
            },
        );
        e.gauge(
            "zatt_raft_commit_index",
            "The highest log index this server knows to be committed.",
            self.raft.commit_index().0 as f64,
        );
        e.gauge(
            "zatt_raft_applied_index",
            "The highest log index applied to the dictionary.",
            self.kv.applied_index().0 as f64,
        );
        e.gauge(
            "zatt_raft_last_index",
            "The index of the last entry in this server's log.",
            self.raft.last_index().0 as f64,
        );
        // What the log costs in memory: it is dropped at each compaction (--snapshot-entries
        // entries, or 64 MiB, after the last).
        e.gauge(
            "zatt_raft_log_entries",
            "Entries this server's log holds in memory, since its last snapshot.",
            (self.raft.last_index().0 - self.raft.first_index().0 + 1) as f64,
        );
        e.gauge(
            "zatt_raft_log_bytes",
            "Bytes those entries hold.",
            self.raft.log_bytes() as f64,
        );
        let members = self.raft.membership();
        e.family(
            "zatt_raft_members",
            "gauge",
            "Members of the cluster as this server knows them, by role.",
        );
        e.sample(
            "zatt_raft_members",
            &[("role", "voter")],
            members.voter_count() as f64,
        );
        e.sample(
            "zatt_raft_members",
            &[("role", "learner")],
            members.learners().count() as f64,
        );
        e.family(
            "zatt_raft_proposals_total",
            "counter",
            "Entries this server proposed as leader, by kind.",
        );
        e.sample(
            "zatt_raft_proposals_total",
            &[("kind", "command")],
            m.proposals as f64,
        );
        e.sample(
            "zatt_raft_proposals_total",
            &[("kind", "membership")],
            m.conf_proposals as f64,
        );
        e.counter(
            "zatt_raft_applied_entries_total",
            "Committed entries applied to the dictionary.",
            m.applied_entries,
        );
        e.counter(
            "zatt_raft_leader_changes_total",
            "Times this server learned of a new leader.",
            m.leader_changes,
        );
        // Replication progress: only a leader knows it.
        let last = self.raft.last_index().0;
        let peers: Vec<_> = self
            .raft
            .progress()
            .into_iter()
            .filter(|p| p.id != self.raft.id())
            .collect();
        e.family(
            "zatt_raft_peer_lag_entries",
            "gauge",
            "On the leader: entries each peer is behind the leader's last index.",
        );
        for p in &peers {
            let id = p.id.0.to_string();
            let lag = last.saturating_sub(p.match_index.0);
            e.sample("zatt_raft_peer_lag_entries", &[("peer", &id)], lag as f64);
        }
        e.family(
            "zatt_raft_peer_match_index",
            "gauge",
            "On the leader: the highest log index known to be stored on each peer.",
        );
        for p in &peers {
            let id = p.id.0.to_string();
            e.sample(
                "zatt_raft_peer_match_index",
                &[("peer", &id)],
                p.match_index.0 as f64,
            );
        }
        e.gauge(
            "zatt_kv_keys",
            "Keys in the dictionary.",
            self.kv.len() as f64,
        );
        e.gauge(
            "zatt_kv_sessions",
            "Live client sessions.",
            self.kv.session_count() as f64,
        );
        e.gauge(
            "zatt_writes_waiting",
            "Writes proposed and not yet applied or answered.",
            self.writes.len() as f64,
        );
        e.gauge(
            "zatt_watchers",
            "Watches open on this server.",
            self.watcher_count() as f64,
        );
        e.gauge(
            "zatt_watch_history_changes",
            "Changes kept in this server's history for watches.",
            self.watches.history.len() as f64,
        );
        e.gauge(
            "zatt_watch_history_bytes",
            "Bytes of the history kept for watches, as counted against --watch-history-bytes.",
            self.watches.history.bytes() as f64,
        );
        e.gauge(
            "zatt_watch_history_oldest_revision",
            "The oldest revision a watch can start from on this server.",
            self.watch_oldest().0 as f64,
        );
        e.counter(
            "zatt_snapshots_taken_total",
            "Snapshots this server took of its dictionary and stored (log compaction).",
            m.snapshots_taken,
        );
        e.counter(
            "zatt_snapshots_installed_total",
            "Snapshots received from a leader and installed.",
            m.snapshots_installed,
        );
        e.histogram(
            "zatt_snapshot_duration_seconds",
            "Time from the start of a snapshot's encoding until storage held it.",
            &m.snapshot_duration,
        );
        e.counter(
            "zatt_snapshot_saves_total",
            "Snapshots handed out to `zatt snapshot save` (backups).",
            m.snapshot_saves,
        );
        e.gauge(
            "zatt_disk_free_bytes",
            "Bytes free for this server on its data directory's file system, as last measured.",
            self.disk.free as f64,
        );
        e.gauge(
            "zatt_disk_min_free_bytes",
            "The --min-free-disk threshold, in bytes (0: none).",
            self.disk.min as f64,
        );
        e.gauge(
            "zatt_disk_space_alarm",
            "1 while free disk space is below --min-free-disk: as leader, this server refuses writes that add data.",
            if self.disk.alarm { 1.0 } else { 0.0 },
        );
    }

    /// `/health`: this node knows a leader, and has applied within `HEALTH_MAX_APPLY_LAG`
    /// entries of the commit index it knows. `Err` says why not.
    pub fn health(&self) -> Result<(), String> {
        if self.raft.leader().is_none() {
            return Err(format!(
                "no leader known ({}, term {})",
                role_name(self.raft.role()),
                self.raft.term().0
            ));
        }
        let commit = self.raft.commit_index().0;
        let applied = self.kv.applied_index().0;
        let lag = commit.saturating_sub(applied);
        if lag > HEALTH_MAX_APPLY_LAG {
            return Err(format!(
                "applied index {applied} is {lag} entries behind the commit index {commit} \
                 (more than {HEALTH_MAX_APPLY_LAG})"
            ));
        }
        Ok(())
    }

    /// `/ready`: this node serves client requests: it is a member of the cluster it knows (a
    /// `--join` server not yet added, or a removed one, is not) and it is healthy.
    pub fn readiness(&self) -> Result<(), String> {
        if !self.raft.membership().contains(self.raft.id()) {
            return Err(
                "not a member of the cluster (a --join server not added yet, or removed)".into(),
            );
        }
        self.health()
    }
}
