//! What a node says about itself: the status answer (`zatt status`) and the member list. The
//! storage and network figures come from the driver (`Output::io_status`). Must not change any
//! state.

use super::*;
use crate::raft::Role;
use crate::wire::client::{MemberInfo, PeerStatus, Status};

impl Host {
    pub(super) fn members_info(&self) -> Vec<MemberInfo> {
        self.raft
            .membership()
            .members
            .iter()
            .map(|(id, m)| MemberInfo {
                id: id.0,
                addr: m.addr.clone(),
                voter: m.role == MemberRole::Voter,
            })
            .collect()
    }

    /// A member's address as the membership in force records it.
    pub(super) fn addr_of(&self, id: NodeId) -> Option<String> {
        self.raft
            .membership()
            .members
            .get(&id)
            .map(|m| m.addr.clone())
    }

    pub(super) fn status<O: Output>(&self, out: &O) -> Status {
        let io = out.io_status();
        let last = self.raft.last_index();
        let peers = if self.raft.role() == Role::Leader {
            self.raft
                .progress()
                .into_iter()
                .filter(|p| p.id != self.raft.id())
                .map(|p| PeerStatus {
                    id: p.id.0,
                    match_index: p.match_index.0,
                    lag: last.0.saturating_sub(p.match_index.0),
                    snapshot_progress: p.snapshot_transfer,
                })
                .collect()
        } else {
            Vec::new()
        };
        let leader = self.raft.leader();
        Status {
            id: self.raft.id().0,
            role: role_name(self.raft.role()).to_string(),
            term: self.raft.term().0,
            leader: leader.map(|l| l.0),
            leader_addr: leader.and_then(|l| self.addr_of(l)),
            commit_index: self.raft.commit_index().0,
            applied_index: self.kv.applied_index().0,
            last_index: last.0,
            members: self.members_info(),
            peers,
            wal_bytes: io.wal_bytes,
            fsync_p50_us: io.fsync_p50_us,
            fsync_p99_us: io.fsync_p99_us,
            dropped_datagrams: {
                let mut d = io.dropped_datagrams;
                d.extend(self.incarnation_drops().map(|(n, c)| (n.to_string(), c)));
                d
            },
            sessions: self.kv.session_count() as u64,
            keys: self.kv.len() as u64,
            pid: std::process::id(),
            incarnation: self.incarnation(),
            lost_entries: self.raft.lost_entries().map(|l| (l.term.0, l.index.0)),
            cluster_id: self.cfg.cluster_id,
            disk_free_bytes: self.disk.free,
            disk_min_free_bytes: self.disk.min,
            disk_alarm: self.disk.alarm,
        }
    }
}
