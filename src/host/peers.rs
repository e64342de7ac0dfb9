//! Who the peers are: each is known by (node id, incarnation), the incarnation being the random
//! id of its data directory. A Raft message from a peer whose data directory is not the one
//! this node first heard from (its storage was lost or replaced), or addressed to a data
//! directory of this node that is gone, is dropped and counted: the votes and acknowledgements
//! of a server that forgot them are not the promises of the member this node knew. The first
//! message from a peer pins its incarnation, durably (through `Output::pin_peer`) before the
//! message is acted on; a member removed from the cluster is unpinned once the removal is
//! applied, so that a new server may take its id, and every pin goes when a leader's snapshot
//! replaces this node's state (it may hide a removal and a return). Probes (a server with an empty data directory
//! asking whether it is known, see `crate::bootstrap`) are answered with what this node knows.
//! Must not decide anything Raft decides; only which messages reach the core.

use super::*;
use crate::wire::peer::Probe;
use log::warn;

/// Actionable warnings about one peer's incarnation come at most this often.
const INCARNATION_WARN_EVERY: Duration = Duration::from_secs(10);

/// Why a message was dropped for its incarnation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IncarnationDrop {
    /// From a peer whose data directory differs from the one pinned for it.
    IncarnationChanged,
    /// Addressed to another data directory of this node.
    NotMyIncarnation,
}

impl IncarnationDrop {
    pub fn name(self) -> &'static str {
        match self {
            IncarnationDrop::IncarnationChanged => "IncarnationChanged",
            IncarnationDrop::NotMyIncarnation => "NotMyIncarnation",
        }
    }
}

/// The host's view of its peers' identities.
#[derive(Default)]
pub(super) struct Peers {
    /// This node's incarnation (0: none, and no checks: a node without identity, in tests).
    pub incarnation: u64,
    /// Each peer's incarnation as first heard (durable: the driver stores every pin).
    pub pins: BTreeMap<NodeId, u64>,
    /// Messages dropped, by reason: [IncarnationChanged, NotMyIncarnation].
    pub dropped: [u64; 2],
    /// When each (peer, reason) was last warned about.
    pub warned: BTreeMap<(NodeId, u8), Duration>,
}

impl Host {
    /// A Raft message from a peer, with the incarnations its datagram carried: the sender's,
    /// and this node's as the sender knows it (0: unknown).
    pub fn peer_message<O: Output>(
        &mut self,
        out: &mut O,
        msg: Message,
        from_incarnation: u64,
        to_incarnation: u64,
    ) {
        let from = msg.from;
        let check = self.peers.incarnation != 0 && !Bugs::on(self.cfg.bugs.forget_lost_storage);
        if check && to_incarnation != 0 && to_incarnation != self.peers.incarnation {
            self.drop_for_incarnation(
                IncarnationDrop::NotMyIncarnation,
                from,
                to_incarnation,
                self.peers.incarnation,
            );
            return;
        }
        let pinned = match self.peers.pins.get(&from).copied() {
            Some(pinned) if check && from_incarnation != pinned => {
                self.drop_for_incarnation(
                    IncarnationDrop::IncarnationChanged,
                    from,
                    from_incarnation,
                    pinned,
                );
                return;
            }
            Some(_) => true,
            // Durable before the message is acted on: a crash must not forget that this node
            // heard from this very data directory.
            None => self.pin_if_member(out, from, from_incarnation),
        };
        self.raft.step(msg);
        // A sender the message itself made a member (a leader whose entries carry the change
        // that added it) is pinned before anything this node answers leaves: if a damaged log
        // tail later takes that change, the pin still says a lost entry may have made it a
        // voter (`raft::Boot::heard`).
        if !pinned {
            self.pin_if_member(out, from, from_incarnation);
        }
    }

    /// Only a member is pinned: a removed server may go on talking for a while, and a pin of
    /// it would shut out the new server that may take its id later (a non-member's votes and
    /// acknowledgements count for nothing anyway). Returns whether `from` is pinned now.
    fn pin_if_member<O: Output>(
        &mut self,
        out: &mut O,
        from: NodeId,
        from_incarnation: u64,
    ) -> bool {
        if from_incarnation == 0 || !self.raft.membership().contains(from) {
            return false;
        }
        out.pin_peer(from, from_incarnation);
        self.peers.pins.insert(from, from_incarnation);
        true
    }

    /// A probe from a server that is starting with an empty data directory: say what this node
    /// knows it by (0: never heard of it) and that this node is a running member.
    pub fn probe<O: Output>(&mut self, out: &mut O, p: &Probe) {
        let known_as = self.peers.pins.get(&p.from).copied().unwrap_or(0);
        if known_as != 0 && known_as != p.incarnation {
            self.warn_once(
                p.from,
                2,
                format!(
                    "{}: n{} is starting with an empty data directory (incarnation {:016x}) but \
                     this node knows it as {:016x}: told it so, and it should refuse to start",
                    self.who(),
                    p.from,
                    p.incarnation,
                    known_as
                ),
            );
        }
        out.send_probe(p.from, known_as, true, true);
    }

    /// Forgets the incarnations of nodes the applied membership no longer holds: a server
    /// that takes a removed member's id later is a new member.
    pub(super) fn unpin_departed<O: Output>(&mut self, out: &mut O) {
        let gone: Vec<NodeId> = self
            .peers
            .pins
            .keys()
            .copied()
            .filter(|id| !self.applied_membership.contains(*id))
            .collect();
        for id in gone {
            self.peers.pins.remove(&id);
            out.unpin_peer(id);
        }
    }

    /// Forgets every pin when a leader's snapshot replaces this node's state: the snapshot
    /// may cover a member's removal and return with new storage, which this node then never
    /// applies as entries, and a stale pin would shut that member out for good. Peers are
    /// pinned again as they are next heard from.
    pub(super) fn unpin_all<O: Output>(&mut self, out: &mut O) {
        for id in std::mem::take(&mut self.peers.pins).into_keys() {
            out.unpin_peer(id);
        }
    }

    /// Incarnation drops so far, by reason name (for status and metrics).
    pub fn incarnation_drops(&self) -> [(&'static str, u64); 2] {
        [
            (
                IncarnationDrop::IncarnationChanged.name(),
                self.peers.dropped[0],
            ),
            (
                IncarnationDrop::NotMyIncarnation.name(),
                self.peers.dropped[1],
            ),
        ]
    }

    /// This node's incarnation (0: none).
    pub fn incarnation(&self) -> u64 {
        self.peers.incarnation
    }

    fn drop_for_incarnation(&mut self, why: IncarnationDrop, from: NodeId, got: u64, want: u64) {
        let k = match why {
            IncarnationDrop::IncarnationChanged => 0,
            IncarnationDrop::NotMyIncarnation => 1,
        };
        self.peers.dropped[k] += 1;
        let line = match why {
            IncarnationDrop::IncarnationChanged => format!(
                "{}: n{from} came back with another data directory (incarnation {got:016x}, \
                 this node knew {want:016x}): it is not the member that voted and acknowledged \
                 before, so its messages are dropped. If its storage was lost or replaced, \
                 remove it (zatt member remove {from}) and add it back as a new server (start \
                 it with --join, then zatt member add {from} ADDR)",
                self.who()
            ),
            IncarnationDrop::NotMyIncarnation => format!(
                "{}: n{from} knows this server by another data directory (incarnation \
                 {got:016x}; this one is {want:016x}): this server's storage was lost or \
                 replaced, so its messages are refused. Stop it, remove it (zatt member remove \
                 {}) and add it back as a new server (--join, then zatt member add)",
                self.who(),
                self.raft.id()
            ),
        };
        self.warn_once(from, k as u8, line);
    }

    fn warn_once(&mut self, from: NodeId, kind: u8, line: String) {
        let now = self.now.mono;
        let due = match self.peers.warned.get(&(from, kind)) {
            Some(&t) => now.saturating_sub(t) >= INCARNATION_WARN_EVERY || now < t,
            None => true,
        };
        if due {
            self.peers.warned.insert((from, kind), now);
            warn!("{line}");
        }
    }
}
