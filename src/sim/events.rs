//! The simulator's events and the trace hash: every processed event is folded into one FNV hash,
//! so two runs of a seed can be compared with one number. Must not carry anything that is not
//! decided by the seed (no addresses, no wall-clock time).

use super::checker::{digest, Fnv};
use crate::types::*;
use crate::wire::peer::Probe;

pub(super) enum Event {
    /// A Raft tick of node `.0` in its life `.1`.
    Tick(usize, u64),
    /// The host's housekeeping pass of node `.0` in its life `.1`.
    Housekeeping(usize, u64),
    /// Another loop turn of node `.0` in its life `.1` (a snapshot being encoded in slices).
    Turn(usize, u64),
    /// A Raft message, with the incarnations its datagram would carry: the sender's, and the
    /// receiver's as the sender knows it (0: unknown).
    Deliver {
        msg: Message,
        from_inc: u64,
        to_inc: u64,
    },
    /// A probe (or, `reply`, the answer to one) reaches node `to`.
    Probe {
        to: usize,
        probe: Probe,
        reply: bool,
    },
    /// Node `.0`, starting with an empty disk in its life `.1`, asks its peers again.
    ProbeTick(usize, u64),
    /// The operator's procedure for node `.0`, refused for its lost storage: remove it, then
    /// start it with `--join` and add it back.
    Replace(usize),
    /// Node `.0`'s syncer, in life `.1`, made the items up to number `.2` durable.
    SyncDone(usize, u64, u64),
    /// A request frame from client `conn` (or the fault injector) reaches `node`.
    ToNode {
        node: usize,
        conn: usize,
        frame: Vec<u8>,
    },
    /// A response frame reaches `client`.
    ToClient {
        client: usize,
        frame: Vec<u8>,
    },
    ClientTimeout(usize, u64, u64),
    ClientSend(usize, u64, u64),
    ClientNext(usize),
    Fault,
    Restart(usize),
    Heal(u64),
    /// A reactive crash (of the node's life `.1`), restarting after `.2` µs.
    Crash(usize, u64, u64),
    /// A watcher's request frame on its connection `conn` reaches `node`.
    WatchToNode {
        node: usize,
        watcher: usize,
        conn: u64,
        frame: Vec<u8>,
    },
    /// A frame of connection `conn` reaches `watcher`.
    ToWatcher {
        watcher: usize,
        conn: u64,
        frame: Vec<u8>,
    },
    /// A watcher looks at its connection's silence.
    WatchTick(usize),
}

pub(super) fn hash_event(h: &mut Fnv, now: u64, ev: &Event) {
    h.u64(now);
    match ev {
        Event::Tick(n, i) => {
            h.u64(1);
            h.u64(*n as u64);
            h.u64(*i);
        }
        Event::Deliver {
            msg: m,
            from_inc,
            to_inc,
        } => {
            h.u64(2);
            h.u64(*from_inc);
            h.u64(*to_inc);
            h.u64(m.from.0);
            h.u64(m.to.0);
            h.u64(m.term.0);
            h.bytes(m.body.name().as_bytes());
            match &m.body {
                MessageBody::AppendEntries {
                    prev_log_index,
                    prev_log_term,
                    entries,
                    leader_commit,
                    read_seq,
                } => {
                    h.u64(prev_log_index.0);
                    h.u64(prev_log_term.0);
                    h.u64(leader_commit.0);
                    h.u64(*read_seq);
                    for e in entries {
                        h.u64(digest(e));
                    }
                }
                MessageBody::AppendEntriesResponse {
                    success,
                    match_index,
                    ..
                } => {
                    h.u64(*success as u64);
                    h.u64(match_index.0);
                }
                MessageBody::RequestVoteResponse { granted }
                | MessageBody::PreVoteResponse { granted, .. } => h.u64(*granted as u64),
                MessageBody::InstallSnapshot { offset, total, .. } => {
                    h.u64(*offset);
                    h.u64(*total);
                }
                _ => {}
            }
        }
        Event::SyncDone(n, i, u) => {
            h.u64(3);
            h.u64(*n as u64);
            h.u64(*i);
            h.u64(*u);
        }
        Event::ToNode { node, conn, frame } => {
            h.u64(4);
            h.u64(*node as u64);
            h.u64(*conn as u64);
            h.bytes(frame);
        }
        Event::ToClient { client, frame } => {
            h.u64(5);
            h.u64(*client as u64);
            h.bytes(frame);
        }
        Event::ClientTimeout(c, o, a) | Event::ClientSend(c, o, a) => {
            h.u64(6);
            h.u64(*c as u64);
            h.u64(*o);
            h.u64(*a);
        }
        Event::ClientNext(c) => {
            h.u64(7);
            h.u64(*c as u64);
        }
        Event::Fault => h.u64(8),
        Event::Restart(n) => {
            h.u64(9);
            h.u64(*n as u64);
        }
        Event::Heal(g) => {
            h.u64(10);
            h.u64(*g);
        }
        Event::Crash(n, i, d) => {
            h.u64(11);
            h.u64(*n as u64);
            h.u64(*i);
            h.u64(*d);
        }
        Event::Housekeeping(n, i) => {
            h.u64(12);
            h.u64(*n as u64);
            h.u64(*i);
        }
        Event::Turn(n, i) => {
            h.u64(13);
            h.u64(*n as u64);
            h.u64(*i);
        }
        Event::Probe { to, probe, reply } => {
            h.u64(14);
            h.u64(*to as u64);
            h.u64(probe.from.0);
            h.u64(probe.incarnation);
            h.u64(probe.known_as);
            h.u64(probe.member as u64);
            h.u64(*reply as u64);
        }
        Event::ProbeTick(n, i) => {
            h.u64(15);
            h.u64(*n as u64);
            h.u64(*i);
        }
        Event::Replace(n) => {
            h.u64(16);
            h.u64(*n as u64);
        }
        Event::WatchToNode {
            node,
            watcher,
            conn,
            frame,
        } => {
            h.u64(17);
            h.u64(*node as u64);
            h.u64(*watcher as u64);
            h.u64(*conn);
            h.bytes(frame);
        }
        Event::ToWatcher {
            watcher,
            conn,
            frame,
        } => {
            h.u64(18);
            h.u64(*watcher as u64);
            h.u64(*conn);
            h.bytes(frame);
        }
        Event::WatchTick(w) => {
            h.u64(19);
            h.u64(*w as u64);
        }
    }
}
