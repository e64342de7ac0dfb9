//! Snapshots for backups (`zatt snapshot save`): a `SnapshotSave` request is a linearizable
//! read (its ReadIndex round confirms leadership, and it waits until the round's index is
//! applied), so the snapshot holds every write acknowledged before the request. Once it may be
//! served, the host encodes the dictionary a slice per turn like any snapshot (a compaction
//! snapshot in progress serves as well: it describes an index at least as recent), holds the
//! result, and answers `SnapshotBegin`; the client then pulls it with `SnapshotChunk` requests
//! to this same server, at most `SNAPSHOT_CHUNK_BYTES` per answer. A held snapshot shares its
//! bytes only with the compaction snapshot it may also be (read from that one's file once
//! storage has it), and is dropped `HOLD_FOR` after its last chunk request (or when `MAX_HELD`
//! newer ones push it out). Must not store a backup (it is not a compaction
//! snapshot) nor change the dictionary.

use super::*;
use crate::wire::client::{SnapshotInfo, SNAPSHOT_CHUNK_BYTES};

/// A held snapshot is dropped this long after it was last asked for.
const HOLD_FOR: Duration = Duration::from_secs(60);
/// Held snapshots at most; a newer one drops the oldest.
const MAX_HELD: usize = 2;

struct Held {
    info: SnapshotInfo,
    data: SnapshotData,
    last_used: Duration,
}

/// Backups waiting for a snapshot, and the snapshots held for their chunks.
pub(super) struct Backups {
    /// Confirmed saves waiting for the encoding in progress.
    pub waiting: Vec<ReplyTo>,
    held: VecDeque<Held>,
    next_id: u64,
}

impl Backups {
    pub fn new(seed: u64) -> Backups {
        Backups {
            waiting: Vec::new(),
            held: VecDeque::new(),
            // Ids from a random start: a chunk request that reaches another server, or this one
            // after a restart, finds no snapshot rather than another one's bytes.
            next_id: seed.rotate_left(17) | 1,
        }
    }
}

impl Host {
    /// A `SnapshotSave` whose read round is confirmed and whose index is applied.
    pub(super) fn snapshot_save_confirmed<O: Output>(&mut self, out: &mut O, to: ReplyTo) {
        let applied = self.kv.applied_index().0;
        if self.snapshot_job.is_none() {
            if let Some(h) = self.backups.held.back_mut() {
                if h.info.index == applied {
                    // Nothing applied since: the held snapshot is this one.
                    h.last_used = self.now.mono;
                    let info = h.info.clone();
                    self.metrics.snapshot_saves += 1;
                    return out.answer(to, &Response::SnapshotBegin(info));
                }
            }
        }
        self.backups.waiting.push(to);
        if self.snapshot_job.is_none() {
            self.start_snapshot_job(false);
        }
    }

    /// A snapshot encoding finished (`checksum`: its last four bytes): the saves waiting for
    /// it get it.
    pub(super) fn snapshot_for_saves<O: Output>(
        &mut self,
        out: &mut O,
        snapshot: &Snapshot,
        checksum: u32,
    ) {
        if self.backups.waiting.is_empty() {
            return;
        }
        let data = snapshot.data.clone();
        let id = self.backups.next_id;
        self.backups.next_id = self.backups.next_id.wrapping_add(1).max(1);
        let info = SnapshotInfo {
            id,
            cluster_id: self.cfg.cluster_id,
            index: snapshot.meta.index.0,
            term: snapshot.meta.term.0,
            size: data.len(),
            checksum,
            members: snapshot
                .meta
                .membership
                .members
                .iter()
                .map(|(id, m)| crate::wire::client::MemberInfo {
                    id: id.0,
                    addr: m.addr.clone(),
                    voter: m.role == MemberRole::Voter,
                })
                .collect(),
        };
        for to in std::mem::take(&mut self.backups.waiting) {
            self.metrics.snapshot_saves += 1;
            out.answer(to, &Response::SnapshotBegin(info.clone()));
        }
        if self.backups.held.len() >= MAX_HELD {
            self.backups.held.pop_front();
        }
        self.backups.held.push_back(Held {
            info,
            data,
            last_used: self.now.mono,
        });
    }

    /// A `SnapshotChunk` request: bytes of a held snapshot.
    pub(super) fn snapshot_chunk<O: Output>(
        &mut self,
        out: &mut O,
        to: ReplyTo,
        id: u64,
        offset: u64,
    ) {
        let now = self.now.mono;
        let Some(h) = self.backups.held.iter_mut().find(|h| h.info.id == id) else {
            let e = ErrorKind::Invalid(format!(
                "no snapshot {id} on this server: it was dropped ({}s after its last chunk) or \
                 the server restarted; save again",
                HOLD_FOR.as_secs()
            ));
            return out.answer(to, &Response::Error(e));
        };
        h.last_used = now;
        let size = h.data.len();
        if offset > size {
            let e = ErrorKind::Invalid(format!(
                "offset {offset} is past the snapshot's end ({size} bytes)"
            ));
            return out.answer(to, &Response::Error(e));
        }
        let end = offset.saturating_add(SNAPSHOT_CHUNK_BYTES as u64).min(size);
        match h.data.read(offset..end) {
            Ok(data) => out.answer(to, &Response::SnapshotChunk { offset, data }),
            Err(e) => {
                let e = ErrorKind::Unavailable(format!("cannot read snapshot {id}: {e}"));
                out.answer(to, &Response::Error(e))
            }
        }
    }

    /// Drops held snapshots nobody asked for in `HOLD_FOR` (housekeeping).
    pub(super) fn expire_held_snapshots(&mut self) {
        let now = self.now.mono;
        self.backups
            .held
            .retain(|h| now.saturating_sub(h.last_used) < HOLD_FOR);
    }
}
