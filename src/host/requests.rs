//! Client requests: a whole frame is decoded in place (keys and values borrowed from it) and
//! becomes a proposal (writes, encoded straight from the borrowed bytes into a reused buffer),
//! a read queued for the turn's ReadIndex round (linearizable reads), an answer at once (stale
//! reads, status, members), or a configuration change answered when its entry is applied.
//! Followers answer writes and linearizable reads with `NotLeader` and the leader's address:
//! forwarding would double the hops and make exactly-once depend on two connections. Must not
//! decide anything Raft decides.

use super::reads::Query;
use super::*;
use crate::raft::{ProposeError, Role};
use crate::wire::client::{decode_request, Consistency, RequestView};
use log::info;

/// Whether `addr` looks like `HOST:PORT` (or `[IPv6]:PORT`) with a nonzero port.
pub fn is_host_port(addr: &str) -> bool {
    match addr.rsplit_once(':') {
        Some((host, port)) => {
            !host.is_empty()
                && !host.contains(char::is_whitespace)
                && matches!(port.parse::<u16>(), Ok(p) if p > 0)
        }
        None => false,
    }
}

impl Host {
    /// A whole client request frame (as delimited by `wire::client::split_frame`) arrived;
    /// the answer, now or later, goes to `to`.
    pub fn client_frame<O: Output>(&mut self, out: &mut O, now: Now, to: ReplyTo, frame: &[u8]) {
        self.now = now;
        let req = match decode_request(frame, &self.cfg.limits) {
            Ok((_, r)) => r,
            Err(e) => {
                // The frame was whole and its length right: a bad field. Answer, keep going.
                return out.answer(to, &Response::Error(e.to_error_kind()));
            }
        };
        match req {
            RequestView::RegisterSession
            | RequestView::Put { .. }
            | RequestView::Delete { .. }
            | RequestView::Cas { .. } => self.propose_write(out, to, &req),
            RequestView::Get { key, consistency } => match consistency {
                Consistency::Stale => self.answer_get(out, to, key),
                Consistency::Linearizable => self.queue_read(out, to, Query::Get(key.to_vec())),
            },
            RequestView::Scan {
                prefix,
                start_after,
                limit,
                consistency,
            } => {
                let q = Query::Scan {
                    prefix: prefix.to_vec(),
                    start_after: start_after.map(|s| s.to_vec()),
                    limit,
                };
                match consistency {
                    Consistency::Stale => self.answer_query(out, to, &q),
                    Consistency::Linearizable => self.queue_read(out, to, q),
                }
            }
            RequestView::Len { consistency } => match consistency {
                Consistency::Stale => self.answer_query(out, to, &Query::Len),
                Consistency::Linearizable => self.queue_read(out, to, Query::Len),
            },
            RequestView::Status => {
                let s = self.status(out);
                out.answer(to, &Response::Status(Box::new(s)));
            }
            RequestView::Members => out.answer(to, &Response::Members(self.members_info())),
            RequestView::MemberAdd { id, addr, learner } => {
                if id == 0 {
                    let e = ErrorKind::Invalid("node id 0".into());
                    return out.answer(to, &Response::Error(e));
                }
                // Syntax only: resolving a host name here could stall the loop on DNS.
                if !is_host_port(addr) {
                    let e = ErrorKind::Invalid(format!("address {addr:?} is not HOST:PORT"));
                    return out.answer(to, &Response::Error(e));
                }
                let cc = ConfChange::AddLearner {
                    id: NodeId(id),
                    addr: addr.to_string(),
                };
                let kind = if learner {
                    WaitKind::ConfChange
                } else {
                    WaitKind::AddVoter(NodeId(id))
                };
                if self.raft.role() != Role::Leader {
                    return self.propose_conf(out, to, cc, kind);
                }
                // Proposed by `run_promotions`, which holds it while a member lacks the
                // removal of this id (`ProposeError::RemovalNotReplicated`).
                self.promote_jobs.push(PromoteJob {
                    id: NodeId(id),
                    to,
                    deadline: self.now.mono + ADD_BACK_TIMEOUT,
                    add: Some((addr.to_string(), kind)),
                });
                self.run_promotions(out);
            }
            RequestView::MemberPromote { id } => self.propose_conf(
                out,
                to,
                ConfChange::Promote { id: NodeId(id) },
                WaitKind::ConfChange,
            ),
            RequestView::MemberRemove { id } => self.propose_conf(
                out,
                to,
                ConfChange::Remove { id: NodeId(id) },
                WaitKind::ConfChange,
            ),
            RequestView::TransferLeader { to: target } => self.transfer_leader(out, to, target),
            RequestView::Watch {
                prefix,
                from_revision,
            } => self.start_watch(out, to, prefix, from_revision),
            RequestView::CancelWatch { watch_id } => self.cancel_watch(out, to, watch_id),
            RequestView::SnapshotSave => self.queue_read(out, to, Query::SnapshotSave),
            RequestView::SnapshotChunk { id, offset } => self.snapshot_chunk(out, to, id, offset),
        }
    }

    fn propose_write<O: Output>(&mut self, out: &mut O, to: ReplyTo, req: &RequestView<'_>) {
        if self.raft.role() != Role::Leader {
            let e = self.not_leader();
            return out.answer(to, &Response::Error(e));
        }
        if self.disk.alarm && super::disk::adds_data(req) {
            let e = self.no_space();
            return out.answer(to, &Response::Error(e));
        }
        let mut buf = std::mem::take(&mut self.prop_buf);
        buf.clear();
        crate::kv::encode_proposal(&mut buf, self.now.wall_ms, req);
        let r = self.raft.propose(&buf);
        self.prop_buf = buf;
        match r {
            Ok((index, term)) => {
                self.metrics.proposals += 1;
                self.wait_for(out, index, term, to, WaitKind::Command)
            }
            Err(e) => {
                let err = self.propose_error(e);
                out.answer(to, &Response::Error(err))
            }
        }
    }

    fn propose_conf<O: Output>(
        &mut self,
        out: &mut O,
        to: ReplyTo,
        cc: ConfChange,
        kind: WaitKind,
    ) {
        if let Err(e) = self.try_propose_conf(out, to, cc, kind) {
            let err = self.conf_error(e);
            out.answer(to, &Response::Error(err))
        }
    }

    /// Proposes a membership change whose client then waits for `kind`; a refusal is returned,
    /// not answered.
    pub(super) fn try_propose_conf<O: Output>(
        &mut self,
        out: &mut O,
        to: ReplyTo,
        cc: ConfChange,
        kind: WaitKind,
    ) -> Result<(), ProposeError> {
        if self.raft.role() != Role::Leader {
            return Err(ProposeError::NotLeader { leader: None });
        }
        info!("{}: proposing membership change {cc:?}", self.who());
        let (index, term) = self.raft.propose_conf_change(cc)?;
        self.metrics.conf_proposals += 1;
        self.wait_for(out, index, term, to, kind);
        Ok(())
    }

    fn transfer_leader<O: Output>(&mut self, out: &mut O, to: ReplyTo, target: Option<u64>) {
        if self.raft.role() != Role::Leader {
            let e = self.not_leader();
            return out.answer(to, &Response::Error(e));
        }
        let target = match target {
            Some(t) => NodeId(t),
            None => {
                let m = self.raft.membership();
                let best = self
                    .raft
                    .progress()
                    .into_iter()
                    .filter(|p| p.id != self.raft.id() && m.is_voter(p.id))
                    .max_by_key(|p| (p.match_index, std::cmp::Reverse(p.id)));
                match best {
                    Some(p) => p.id,
                    None => {
                        let e =
                            ErrorKind::ConfChange("no other voter to hand leadership to".into());
                        return out.answer(to, &Response::Error(e));
                    }
                }
            }
        };
        info!("{}: transferring leadership to n{target}", self.who());
        match self.raft.transfer_leader(target) {
            Ok(()) => out.answer(to, &Response::Done),
            Err(e) => {
                let err = self.conf_error(e);
                out.answer(to, &Response::Error(err))
            }
        }
    }

    pub(super) fn not_leader(&self) -> ErrorKind {
        let leader = self.raft.leader().filter(|l| *l != self.raft.id());
        ErrorKind::NotLeader {
            leader: leader.map(|l| l.0),
            leader_addr: leader.and_then(|l| self.addr_of(l)),
        }
    }

    /// The answer for a proposal whose entry was replaced by another leader's (applied: no).
    pub(super) fn lost_proposal(&self) -> ErrorKind {
        if self.raft.role() == Role::Leader {
            ErrorKind::Unavailable(
                "leadership changed before the write committed; it was not applied".into(),
            )
        } else {
            self.not_leader()
        }
    }

    pub(super) fn propose_error(&self, e: ProposeError) -> ErrorKind {
        match e {
            ProposeError::NotLeader { .. } => self.not_leader(),
            ProposeError::TransferInProgress => {
                ErrorKind::Unavailable("leadership transfer in progress".into())
            }
            ProposeError::Busy => ErrorKind::Busy,
            ProposeError::ConfChangeInProgress => ErrorKind::Unavailable(
                "the leader has not committed an entry of its term yet".into(),
            ),
            ProposeError::NotCaughtUp => ErrorKind::Unavailable("not caught up".into()),
            ProposeError::RemovalNotReplicated { .. } => self.conf_error(e),
            ProposeError::Invalid(why) => ErrorKind::Invalid(why.to_string()),
        }
    }

    pub(super) fn conf_error(&self, e: ProposeError) -> ErrorKind {
        match e {
            ProposeError::NotLeader { .. } => self.not_leader(),
            ProposeError::ConfChangeInProgress => ErrorKind::ConfChange(
                "another membership change is not committed yet, or the leader is new".into(),
            ),
            ProposeError::NotCaughtUp => {
                ErrorKind::ConfChange("the learner has not caught up with the leader yet".into())
            }
            ProposeError::TransferInProgress => {
                ErrorKind::ConfChange("a leadership transfer is in progress".into())
            }
            ProposeError::RemovalNotReplicated { id, lagging } => ErrorKind::ConfChange(format!(
                "n{} does not hold the removal of n{} yet (it would refuse the new server's \
                 messages): wait until it catches up, or add the server under another id",
                lagging.0, id.0
            )),
            ProposeError::Busy => ErrorKind::Busy,
            // A change that can never be made as asked ("already a voter", "not a member",
            // "cannot remove the last voter"): an invalid request, not one to retry later.
            ProposeError::Invalid(why) => {
                ErrorKind::Invalid(format!("membership change refused: {why}"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_addresses_are_checked_for_syntax_only() {
        assert!(is_host_port("127.0.0.1:5254"));
        assert!(is_host_port("zatt-4.example:5254"));
        assert!(is_host_port("[::1]:5254"));
        for bad in [
            "",
            "host",
            "host:",
            ":5254",
            "host:0",
            "host:99999",
            "a b:1",
        ] {
            assert!(!is_host_port(bad), "{bad:?}");
        }
    }
}
