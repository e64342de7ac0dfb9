//! Applying committed entries to the dictionary and answering whoever waits for them: writers
//! (with kv's reply), membership changes (`Done`), voters being added (promoted once their
//! learner phase caught up), and servers added back under a removed id (proposed once every
//! member holds the removal). Must not decide what is committed (the core does) nor apply
//! anything the core has not handed out in `Ready::committed`.

use super::*;
use crate::kv::Reply;
use crate::raft::{ProposeError, Role};
use log::info;

/// The client's answer for kv's reply to an applied write.
pub fn reply_to_response(r: &Reply) -> Response {
    match r {
        Reply::Put { revision } => Response::Written {
            revision: revision.0,
        },
        Reply::Deleted { revision, existed } => Response::Deleted {
            revision: revision.0,
            existed: *existed,
        },
        Reply::CasOk { revision } => Response::CasOk {
            revision: revision.0,
        },
        Reply::CasFailed { current } => Response::CasFailed {
            current: current.as_ref().map(|(v, r)| (v.clone(), r.0)),
        },
        Reply::SessionRegistered { id } => Response::SessionRegistered { id: *id },
        Reply::SessionExpired => Response::Error(ErrorKind::SessionExpired),
        Reply::StaleRequest => Response::Error(ErrorKind::StaleRequest),
        Reply::Invalid(why) => Response::Error(ErrorKind::Invalid((*why).to_string())),
    }
}

/// How many committed entries ahead of the one being applied have their records prefetched
/// (`Kv::prefetch`): enough for the cache misses of a batch to overlap, few enough that the
/// lines are still in the cache when their entry comes.
const PREFETCH_AHEAD: usize = 8;

impl Host {
    /// Applies committed entries in order (see `apply`), each key's record fetched into the
    /// cache a few entries before it is written.
    pub(super) fn apply_all<O: Output>(&mut self, out: &mut O, entries: &[Entry]) {
        for e in entries.iter().take(PREFETCH_AHEAD) {
            self.kv.prefetch(e);
        }
        for (i, e) in entries.iter().enumerate() {
            if let Some(ahead) = entries.get(i + PREFETCH_AHEAD) {
                self.kv.prefetch(ahead);
            }
            self.apply(out, e);
        }
    }

    /// Applies one committed entry to kv and answers whoever waits for it.
    pub(super) fn apply<O: Output>(&mut self, out: &mut O, e: &Entry) {
        if e.index <= self.kv.applied_index() {
            return; // covered by a snapshot already restored
        }
        if e.kind == EntryKind::Config {
            if let Ok((m, _)) = Membership::decode(&e.data) {
                self.applied_membership = m;
                self.unpin_departed(out);
            }
        }
        let history = &mut self.watches.history;
        let reply = self
            .kv
            .apply_observed(e, &mut |c| history.record(c, &e.data));
        self.applied_term = e.term;
        self.metrics.applied_entries += 1;
        out.applied(e);
        while let Some(front) = self.writes.front() {
            if front.index > e.index {
                break;
            }
            let w = self.writes.pop_front().expect("front exists");
            if w.index < e.index {
                // Its index was passed without being applied here (covered by a snapshot).
                out.answer(w.to, &Response::Error(ErrorKind::Timeout));
                continue;
            }
            if w.term != e.term {
                // Another leader's entry took this index: the proposal was lost, never applied.
                let err = self.lost_proposal();
                out.answer(w.to, &Response::Error(err));
                continue;
            }
            match w.kind {
                WaitKind::Command => match &reply {
                    Some(r) => out.answer(w.to, &reply_to_response(r)),
                    None => out.answer(w.to, &Response::Done),
                },
                WaitKind::ConfChange => out.answer(w.to, &Response::Done),
                WaitKind::AddVoter(id) => self.promote_jobs.push(PromoteJob {
                    id,
                    to: w.to,
                    deadline: self.now.mono + PROMOTE_TIMEOUT,
                    add: None,
                }),
            }
        }
    }

    /// Fails every write waiting at or below `index` (replaced by an installed snapshot: the
    /// outcome is unknown here, so `Timeout`, which says "applied: maybe").
    pub(super) fn fail_writes_through<O: Output>(&mut self, out: &mut O, index: LogIndex) {
        while matches!(self.writes.front(), Some(w) if w.index <= index) {
            let w = self.writes.pop_front().expect("front exists");
            out.answer(w.to, &Response::Error(ErrorKind::Timeout));
        }
    }

    /// Records a proposal at `(index, term)` to answer once applied.
    pub(super) fn wait_for<O: Output>(
        &mut self,
        out: &mut O,
        index: LogIndex,
        term: Term,
        to: ReplyTo,
        kind: WaitKind,
    ) {
        // This leader just put its own entry at `index`: whatever waited at or after it was
        // proposed in an earlier term and its entry is gone from the log, never applied.
        while matches!(self.writes.back(), Some(w) if w.index >= index) {
            let w = self.writes.pop_back().expect("back exists");
            let e = self.lost_proposal();
            out.answer(w.to, &Response::Error(e));
        }
        self.writes.push_back(Waiter {
            index,
            term,
            to,
            kind,
            since: self.now.mono,
        });
    }

    /// Promotes learners added as voters once they have caught up (run on housekeeping and
    /// after commits).
    pub(super) fn run_promotions<O: Output>(&mut self, out: &mut O) {
        if self.promote_jobs.is_empty() || self.raft.role() != Role::Leader {
            return;
        }
        let jobs = std::mem::take(&mut self.promote_jobs);
        for mut job in jobs {
            if let Some((addr, kind)) = job.add.take() {
                let cc = ConfChange::AddLearner {
                    id: job.id,
                    addr: addr.clone(),
                };
                match self.try_propose_conf(out, job.to, cc, kind) {
                    Ok(()) => {}
                    Err(ProposeError::RemovalNotReplicated { .. })
                        if self.now.mono < job.deadline =>
                    {
                        job.add = Some((addr, kind));
                        self.promote_jobs.push(job);
                    }
                    Err(e) => {
                        let err = self.conf_error(e);
                        out.answer(job.to, &Response::Error(err));
                    }
                }
                continue;
            }
            match self
                .raft
                .propose_conf_change(ConfChange::Promote { id: job.id })
            {
                Ok((index, term)) => {
                    info!("{}: promoting n{} to voter", self.who(), job.id);
                    self.wait_for(out, index, term, job.to, WaitKind::ConfChange);
                }
                Err(ProposeError::NotCaughtUp) | Err(ProposeError::ConfChangeInProgress)
                    if self.now.mono < job.deadline =>
                {
                    self.promote_jobs.push(job)
                }
                Err(e) => {
                    let err = match e {
                        ProposeError::NotCaughtUp | ProposeError::ConfChangeInProgress => {
                            ErrorKind::ConfChange(format!(
                                "n{} was added as a learner but did not catch up in time; promote it later",
                                job.id
                            ))
                        }
                        other => self.conf_error(other),
                    };
                    out.answer(job.to, &Response::Error(err));
                }
            }
        }
    }
}
