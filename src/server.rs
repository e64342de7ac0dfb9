//! Request handling: the glue between a decoded client request, the Raft core and the
//! dictionary. Writes become proposals (encoded straight from the frame's borrowed bytes into a
//! reused buffer), linearizable reads join the iteration's ReadIndex round, stale reads and
//! status are answered at once, membership requests become configuration changes answered when
//! their entry is applied. Must not touch sockets (answers go through `Server::answer` into the
//! connection's buffer) nor decide anything Raft decides.
//!
//! Limits: a frame over `--max-request-bytes` is answered `TooLarge{what: "frame", limit}` and
//! its bytes skipped (the connection stays open) unless its declared length is absurd (over
//! `client_conn::GARBAGE_FACTOR` times the limit), which closes the connection after the answer;
//! bytes that are not a frame at all are answered `Invalid` when a request id can be read, then
//! the connection is closed. Scans return at most `SCAN_MAX_ITEMS` items and about
//! `SCAN_MAX_BYTES` per page; the client continues with the last key as `start_after`.

use crate::client_conn::FrameEvent;
use crate::event_loop::{role_name, Query, ReadWaiter, ReplyTo, Server, WaitKind, Waiter};
use crate::kv::{self, CommandRef, ExpectRef, Reply, SessionRef};
use crate::raft::{ProposeError, Role};
use crate::types::*;
use crate::wire::client::{
    decode_request, encode_response, encode_value_response, Consistency, ErrorKind, ExpectView,
    MemberInfo, RequestView, Response, SessionTag,
};

/// Items returned by one scan page at most.
pub const SCAN_MAX_ITEMS: u32 = 1000;
/// Key and value bytes in one scan page at most (beyond its first item).
pub const SCAN_MAX_BYTES: usize = 1 << 20;
/// Items taken from kv per step while filling a page.
const SCAN_STEP_ITEMS: usize = 16;

/// Items of a scan page and whether more follow.
type ScanPage = (Vec<(Vec<u8>, Vec<u8>, u64)>, bool);

/// A write as it comes off the wire, borrowed from the frame.
#[derive(Clone, Copy, Debug)]
pub enum WriteView<'a> {
    Put {
        key: &'a [u8],
        value: &'a [u8],
    },
    Delete {
        key: &'a [u8],
    },
    Cas {
        key: &'a [u8],
        expect: ExpectView<'a>,
        new: Option<&'a [u8]>,
    },
    RegisterSession,
}

/// Encodes a proposal (kv's layout) from borrowed bytes into `out`, replacing its contents:
/// only the wire's shapes are translated here; the bytes come from `kv::encode_proposal`.
pub fn encode_proposal(out: &mut Vec<u8>, session: SessionTag, now_ms: u64, w: WriteView<'_>) {
    out.clear();
    let command = match w {
        WriteView::Put { key, value } => CommandRef::Put { key, value },
        WriteView::Delete { key } => CommandRef::Delete { key },
        WriteView::Cas { key, expect, new } => CommandRef::Cas {
            key,
            expect: match expect {
                ExpectView::Value(v) => ExpectRef::Value(v),
                ExpectView::Absent => ExpectRef::Absent,
                ExpectView::Revision(r) => ExpectRef::Revision(LogIndex(r)),
            },
            new,
        },
        WriteView::RegisterSession => CommandRef::RegisterSession,
    };
    let session = session.map(|(id, seq)| SessionRef { id, seq });
    kv::encode_proposal(out, session, now_ms, command);
}

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

impl Server {
    /// Handles every whole frame a connection holds, until backpressure says stop.
    pub(crate) fn handle_frames(&mut self, key: usize) {
        let mut scratch = std::mem::take(&mut self.frame_buf);
        while let Some(conn) = self.conns.get_mut(key) {
            conn.stalled = false;
            if conn.dead {
                break;
            }
            if conn.output_full() {
                conn.stalled = true;
                break;
            }
            match conn.next_frame(&self.limits) {
                FrameEvent::Incomplete => break,
                FrameEvent::TooLarge {
                    request_id,
                    declared,
                    close,
                } => {
                    log::debug!(
                        "n{}: client frame of {declared} bytes over --max-request-bytes {}{}",
                        self.id,
                        self.cfg.max_request_bytes,
                        if close { "; closing" } else { "; skipped" }
                    );
                    if let Some(id) = request_id {
                        let e = ErrorKind::TooLarge {
                            what: "frame".into(),
                            limit: self.cfg.max_request_bytes as u64,
                        };
                        encode_response(id, &Response::Error(e), conn.output());
                    }
                }
                FrameEvent::Malformed { request_id, why } => {
                    log::debug!("n{}: closing a client connection: {why}", self.id);
                    if let Some(id) = request_id {
                        let e = ErrorKind::Invalid(why.to_string());
                        encode_response(id, &Response::Error(e), conn.output());
                    }
                    conn.close_after_flush();
                    break;
                }
                FrameEvent::Frame { len } => {
                    scratch.clear();
                    scratch.extend_from_slice(&conn.input()[..len]);
                    conn.consume(len);
                    let request_id = crate::wire::client::frame_request_id(&scratch).unwrap_or(0);
                    if conn.inflight >= self.cfg.max_inflight_per_conn {
                        let e = ErrorKind::TooManyInFlight {
                            limit: self.cfg.max_inflight_per_conn as u64,
                        };
                        encode_response(request_id, &Response::Error(e), conn.output());
                        continue;
                    }
                    conn.inflight += 1;
                    let to = ReplyTo {
                        key,
                        generation: conn.generation,
                        request_id,
                    };
                    self.handle_request(to, &scratch);
                }
            }
        }
        self.frame_buf = scratch;
    }

    fn handle_request(&mut self, to: ReplyTo, frame: &[u8]) {
        let req = match decode_request(frame, &self.limits) {
            Ok((_, r)) => r,
            Err(e) => {
                // The frame was whole and its length right: a bad field. Answer, keep going.
                self.answer_error(to, e.to_error_kind());
                return;
            }
        };
        match req {
            RequestView::RegisterSession => {
                self.propose_write(to, None, WriteView::RegisterSession)
            }
            RequestView::Put {
                session,
                key,
                value,
            } => self.propose_write(to, session, WriteView::Put { key, value }),
            RequestView::Delete { session, key } => {
                self.propose_write(to, session, WriteView::Delete { key })
            }
            RequestView::Cas {
                session,
                key,
                expect,
                new,
            } => self.propose_write(to, session, WriteView::Cas { key, expect, new }),
            RequestView::Get { key, consistency } => match consistency {
                Consistency::Stale => self.answer_query_get(to, key),
                Consistency::Linearizable => self.queue_read(to, Query::Get(key.to_vec())),
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
                    Consistency::Stale => self.answer_query(to, &q),
                    Consistency::Linearizable => self.queue_read(to, q),
                }
            }
            RequestView::Len { consistency } => match consistency {
                Consistency::Stale => self.answer_query(to, &Query::Len),
                Consistency::Linearizable => self.queue_read(to, Query::Len),
            },
            RequestView::Status => {
                let s = self.status();
                self.answer(to, &Response::Status(s));
            }
            RequestView::Members => {
                let m = self.members_info();
                self.answer(to, &Response::Members(m));
            }
            RequestView::MemberAdd { id, addr, learner } => {
                if id == 0 {
                    return self.answer_error(to, ErrorKind::Invalid("node id 0".into()));
                }
                // Syntax only: resolving a host name here could stall the loop on DNS.
                if !is_host_port(addr) {
                    return self.answer_error(
                        to,
                        ErrorKind::Invalid(format!("address {addr:?} is not HOST:PORT")),
                    );
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
                self.propose_conf(to, cc, kind);
            }
            RequestView::MemberPromote { id } => self.propose_conf(
                to,
                ConfChange::Promote { id: NodeId(id) },
                WaitKind::ConfChange,
            ),
            RequestView::MemberRemove { id } => self.propose_conf(
                to,
                ConfChange::Remove { id: NodeId(id) },
                WaitKind::ConfChange,
            ),
            RequestView::TransferLeader { to: target } => self.transfer_leader(to, target),
        }
    }

    fn propose_write(&mut self, to: ReplyTo, session: SessionTag, w: WriteView<'_>) {
        if self.raft.role() != Role::Leader {
            let e = self.not_leader();
            return self.answer_error(to, e);
        }
        let mut buf = std::mem::take(&mut self.prop_buf);
        encode_proposal(&mut buf, session, self.now_ms, w);
        let r = self.raft.propose(&buf);
        self.prop_buf = buf;
        match r {
            Ok((index, term)) => self.wait_for(index, term, to, WaitKind::Command),
            Err(e) => {
                let err = self.propose_error(e);
                self.answer_error(to, err)
            }
        }
    }

    fn propose_conf(&mut self, to: ReplyTo, cc: ConfChange, kind: WaitKind) {
        if self.raft.role() != Role::Leader {
            let e = self.not_leader();
            return self.answer_error(to, e);
        }
        log::info!(
            "n{} t{} leader: proposing membership change {cc:?}",
            self.id,
            self.raft.term().0
        );
        match self.raft.propose_conf_change(cc) {
            Ok((index, term)) => self.wait_for(index, term, to, kind),
            Err(e) => {
                let err = self.conf_error(e);
                self.answer_error(to, err)
            }
        }
    }

    fn wait_for(&mut self, index: LogIndex, term: Term, to: ReplyTo, kind: WaitKind) {
        // This leader just put its own entry at `index`: whatever waited at or after it was
        // proposed in an earlier term and its entry is gone from the log, never applied.
        while matches!(self.writes.back(), Some(w) if w.index >= index) {
            let w = self.writes.pop_back().unwrap();
            let e = self.lost_proposal();
            self.answer_error(w.to, e);
        }
        self.writes.push_back(Waiter {
            index,
            term,
            to,
            kind,
            since: self.now,
        });
    }

    fn transfer_leader(&mut self, to: ReplyTo, target: Option<u64>) {
        if self.raft.role() != Role::Leader {
            let e = self.not_leader();
            return self.answer_error(to, e);
        }
        let target = match target {
            Some(t) => NodeId(t),
            None => {
                let m = self.raft.membership().clone();
                let best = self
                    .raft
                    .progress()
                    .into_iter()
                    .filter(|p| p.id != self.id && m.is_voter(p.id))
                    .max_by_key(|p| (p.match_index, std::cmp::Reverse(p.id)));
                match best {
                    Some(p) => p.id,
                    None => {
                        return self.answer_error(
                            to,
                            ErrorKind::ConfChange("no other voter to hand leadership to".into()),
                        )
                    }
                }
            }
        };
        log::info!(
            "n{} t{} leader: transferring leadership to n{target}",
            self.id,
            self.raft.term().0
        );
        match self.raft.transfer_leader(target) {
            Ok(()) => self.answer(to, &Response::Done),
            Err(e) => {
                let err = self.conf_error(e);
                self.answer_error(to, err)
            }
        }
    }

    fn queue_read(&mut self, to: ReplyTo, query: Query) {
        if self.raft.role() != Role::Leader {
            let e = self.not_leader();
            return self.answer_error(to, e);
        }
        self.new_reads.push(ReadWaiter { to, query });
    }

    fn answer_query_get(&mut self, to: ReplyTo, key: &[u8]) {
        let Some(conn) = self.conns.get_mut(to.key) else {
            return;
        };
        if conn.generation != to.generation {
            return;
        }
        conn.inflight = conn.inflight.saturating_sub(1);
        let applied = self.kv.applied_index().0;
        match self.kv.get(key) {
            Some((v, rev)) => {
                encode_value_response(to.request_id, Some(v), rev.0, applied, conn.output())
            }
            None => encode_value_response(to.request_id, None, 0, applied, conn.output()),
        }
        self.mark_dirty(to.key);
    }

    /// Answers a read from the local state (called once the read may be served).
    pub(crate) fn answer_query(&mut self, to: ReplyTo, q: &Query) {
        let applied = self.kv.applied_index().0;
        match q {
            Query::Get(key) => self.answer_query_get(to, key),
            Query::Scan {
                prefix,
                start_after,
                limit,
            } => {
                let (items, more) = self.scan_page(prefix, start_after.as_deref(), *limit);
                self.answer(
                    to,
                    &Response::ScanPage {
                        items,
                        more,
                        applied_index: applied,
                    },
                );
            }
            Query::Len => {
                let len = self.kv.len() as u64;
                self.answer(
                    to,
                    &Response::Len {
                        len,
                        applied_index: applied,
                    },
                );
            }
        }
    }

    /// One page of a scan: at most `limit` (capped at `SCAN_MAX_ITEMS`) items and, past the
    /// first, at most `SCAN_MAX_BYTES` of keys and values, so that an answer always fits a
    /// client's frame limit. Taken from kv in small steps so nothing large is copied in vain.
    fn scan_page(&self, prefix: &[u8], start_after: Option<&[u8]>, limit: u32) -> ScanPage {
        let want = limit.clamp(1, SCAN_MAX_ITEMS) as usize;
        let mut items: Vec<(Vec<u8>, Vec<u8>, u64)> = Vec::new();
        let mut bytes = 0usize;
        let mut after: Option<Vec<u8>> = start_after.map(|s| s.to_vec());
        loop {
            let step = (want - items.len()).min(SCAN_STEP_ITEMS);
            let (chunk, more) = self.kv.scan(prefix, after.as_deref(), step);
            for (k, v, r) in chunk {
                if !items.is_empty() && bytes + k.len() + v.len() > SCAN_MAX_BYTES {
                    return (items, true);
                }
                bytes += k.len() + v.len();
                after = Some(k.clone());
                items.push((k, v, r.0));
            }
            if !more {
                return (items, false);
            }
            if items.len() >= want {
                return (items, true);
            }
        }
    }

    pub(crate) fn propose_error(&self, e: ProposeError) -> ErrorKind {
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
            ProposeError::Invalid(why) => ErrorKind::Invalid(why.to_string()),
        }
    }

    fn conf_error(&self, e: ProposeError) -> ErrorKind {
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
            ProposeError::Busy => ErrorKind::Busy,
            ProposeError::Invalid(why) => ErrorKind::ConfChange(why.to_string()),
        }
    }

    /// Promotes learners added as voters once they have caught up (run on housekeeping and
    /// after commits).
    pub(crate) fn run_promotions(&mut self) {
        if self.promote_jobs.is_empty() || self.raft.role() != Role::Leader {
            return;
        }
        let jobs = std::mem::take(&mut self.promote_jobs);
        for job in jobs {
            match self
                .raft
                .propose_conf_change(ConfChange::Promote { id: job.id })
            {
                Ok((index, term)) => {
                    log::info!(
                        "n{} t{} leader: promoting n{} to voter",
                        self.id,
                        self.raft.term().0,
                        job.id
                    );
                    self.wait_for(index, term, job.to, WaitKind::ConfChange);
                }
                Err(ProposeError::NotCaughtUp) | Err(ProposeError::ConfChangeInProgress)
                    if self.now < job.deadline =>
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
                    self.answer_error(job.to, err);
                }
            }
        }
    }
}

impl Server {
    pub(crate) fn members_info(&self) -> Vec<MemberInfo> {
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

    pub(crate) fn status(&self) -> crate::wire::client::Status {
        let (p50, p99) = self
            .syncer
            .as_ref()
            .map(|s| s.fsync_latency_us())
            .unwrap_or((0, 0));
        let last = self.raft.last_index();
        let leader = self.raft.leader();
        let peers = if self.raft.role() == Role::Leader {
            self.raft
                .progress()
                .into_iter()
                .filter(|p| p.id != self.id)
                .map(|p| crate::wire::client::PeerStatus {
                    id: p.id.0,
                    match_index: p.match_index.0,
                    lag: last.0.saturating_sub(p.match_index.0),
                    snapshot_progress: p.snapshot_transfer,
                })
                .collect()
        } else {
            Vec::new()
        };
        let mut dropped: Vec<(String, u64)> = self
            .codec
            .drops()
            .iter()
            .map(|(r, n)| (r.to_string(), n))
            .collect();
        dropped.push(("SendFailed".to_string(), self.udp_send_drops));
        crate::wire::client::Status {
            id: self.id.0,
            role: role_name(self.raft.role()).to_string(),
            term: self.raft.term().0,
            leader: leader.map(|l| l.0),
            leader_addr: leader.and_then(|l| {
                self.raft
                    .membership()
                    .members
                    .get(&l)
                    .map(|m| m.addr.clone())
            }),
            commit_index: self.raft.commit_index().0,
            applied_index: self.kv.applied_index().0,
            last_index: last.0,
            members: self.members_info(),
            peers,
            wal_bytes: self.syncer.as_ref().map(|s| s.size_bytes()).unwrap_or(0),
            fsync_p50_us: p50,
            fsync_p99_us: p99,
            dropped_datagrams: dropped,
            sessions: self.kv.session_count() as u64,
            keys: self.kv.len() as u64,
            pid: std::process::id(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::{Command, Expect, Proposal, SessionRef};

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

    #[test]
    fn proposal_encoding_matches_kv() {
        // Goal: the zero-copy encoder writes exactly kv's bytes for every command.
        // Method: encode each write both ways and compare.
        let cases: Vec<(SessionTag, WriteView<'_>, Command)> = vec![
            (
                None,
                WriteView::Put {
                    key: b"k",
                    value: b"v",
                },
                Command::Put {
                    key: b"k".to_vec(),
                    value: b"v".to_vec(),
                },
            ),
            (
                Some((7, 9)),
                WriteView::Delete { key: b"key" },
                Command::Delete {
                    key: b"key".to_vec(),
                },
            ),
            (
                Some((1, 2)),
                WriteView::Cas {
                    key: b"a",
                    expect: ExpectView::Value(b"old"),
                    new: Some(b"new"),
                },
                Command::Cas {
                    key: b"a".to_vec(),
                    expect: Expect::Value(b"old".to_vec()),
                    new: Some(b"new".to_vec()),
                },
            ),
            (
                None,
                WriteView::Cas {
                    key: b"a",
                    expect: ExpectView::Absent,
                    new: None,
                },
                Command::Cas {
                    key: b"a".to_vec(),
                    expect: Expect::Absent,
                    new: None,
                },
            ),
            (
                None,
                WriteView::Cas {
                    key: b"a",
                    expect: ExpectView::Revision(42),
                    new: Some(b""),
                },
                Command::Cas {
                    key: b"a".to_vec(),
                    expect: Expect::Revision(LogIndex(42)),
                    new: Some(Vec::new()),
                },
            ),
            (None, WriteView::RegisterSession, Command::RegisterSession),
        ];
        let mut buf = vec![0xAA; 3];
        for (session, view, command) in cases {
            encode_proposal(&mut buf, session, 1234, view);
            let p = Proposal {
                session: session.map(|(id, seq)| SessionRef { id, seq }),
                now_ms: 1234,
                command,
            };
            assert_eq!(buf, p.encoded(), "{view:?}");
        }
    }
}
