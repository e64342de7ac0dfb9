//! The clients' side of a run: starting each client's next operation, sending an attempt as a
//! request frame over a lossy client link, timing attempts out, and taking response frames
//! back into the client model and the history. Must not look at node state: it sees only the
//! frames that travel.

use super::client::{split_request_id, ClientOp, Current, Outcome};
use super::events::Event;
use super::*;
use crate::wire::client::{decode_response, FrameLimits};

impl World {
    /// Starts client `c`'s next operation (fault phase only: the liveness phase only finishes
    /// what is pending).
    pub(super) fn client_next(&mut self, c: usize) {
        if self.phase != Phase::Faults || self.clients[c].current.is_some() {
            return;
        }
        let (op, op_id) = self.clients[c].next_op(&mut self.rng);
        let seq = match op {
            ClientOp::Register | ClientOp::Get { .. } => 0,
            _ => {
                let s = self.clients[c].next_seq;
                self.clients[c].next_seq += 1;
                s
            }
        };
        let hist = self.clients[c].history_op(&op, self.now).map(|h| {
            self.history.push(h);
            self.history.len() - 1
        });
        self.clients[c].current = Some(Current {
            op,
            op_id,
            seq,
            attempt: 0,
            hist,
        });
        self.client_send(c);
    }

    /// Sends the next attempt of client `c`'s operation to its current target.
    fn client_send(&mut self, c: usize) {
        let cl = &mut self.clients[c];
        let Some(cur) = cl.current.as_mut() else {
            return;
        };
        cur.attempt += 1;
        let (op_id, attempt) = (cur.op_id, cur.attempt);
        let target = cl.target;
        let Some(frame) = cl.frame() else {
            return;
        };
        if let (true, Some(cur)) = (self.opts.verbose, &self.clients[c].current) {
            self.log(format_args!(
                "client {c} op {op_id} attempt {attempt} → n{}: {:?}",
                target + 1,
                cur.op
            ));
        }
        self.at(CLIENT_TIMEOUT_US, Event::ClientTimeout(c, op_id, attempt));
        let Some(d) = self.client_link_delay() else {
            return;
        };
        self.at(
            d,
            Event::ToNode {
                node: target,
                conn: c,
                frame,
            },
        );
    }

    /// An attempt got no answer in time: try the next node.
    pub(super) fn client_timeout(&mut self, c: usize, op_id: u64, attempt: u64) {
        let n = self.nodes.len();
        let cl = &mut self.clients[c];
        if let Some(cur) = &cl.current {
            if cur.op_id == op_id && cur.attempt == attempt {
                cl.target = cl.rotate(n);
                self.client_send(c);
            }
        }
    }

    /// A retry decided earlier is due.
    pub(super) fn client_resend(&mut self, c: usize, op_id: u64, attempt: u64) {
        if let Some(cur) = &self.clients[c].current {
            if cur.op_id == op_id && cur.attempt == attempt {
                self.client_send(c);
            }
        }
    }

    /// A response frame reached client `c`.
    pub(super) fn client_answer(&mut self, c: usize, frame: &[u8]) -> Check {
        let (id, resp) = decode_response(frame, &FrameLimits::default()).map_err(|e| {
            (
                FailureKind::Contract,
                format!("client {c} received an undecodable response: {e}"),
            )
        })?;
        let (op_id, attempt) = split_request_id(id);
        let n = self.nodes.len();
        let cl = &mut self.clients[c];
        let Some(cur) = &cl.current else {
            return Ok(());
        };
        if cur.op_id != op_id {
            return Ok(());
        }
        if Client::is_provisional(&resp) && cur.attempt != attempt {
            return Ok(());
        }
        let cur_attempt = cur.attempt;
        if self.opts.verbose {
            println!(
                "{:>10.3}ms client {c} op {op_id} attempt {attempt} ← {resp:?}",
                self.now as f64 / 1000.0
            );
        }
        match cl.on_answer(&resp, n, &mut self.rng) {
            Outcome::Done(out) => {
                let cur = cl.current.take().expect("current");
                cl.followed_hint = false;
                cl.completed += 1;
                if let Some(h) = cur.hist {
                    self.history[h].ret = Some(self.now);
                    self.history[h].output = out;
                }
                let think = if self.rng.chance(self.fp.client_pause) {
                    self.rng.between(1_000_000, 4_000_000)
                } else {
                    self.rng.between(0, 10_000)
                };
                self.at(think, Event::ClientNext(c));
            }
            Outcome::Retry { target, after_us } => {
                cl.target = target;
                self.at(after_us, Event::ClientSend(c, op_id, cur_attempt));
            }
            Outcome::Abandon => {
                cl.current = None;
                cl.hist_client = self.next_hist_client;
                self.next_hist_client += 1;
                self.log(format_args!(
                    "client {c} abandons op {op_id} after {resp:?}"
                ));
                let think = self.rng.between(0, 10_000);
                self.at(think, Event::ClientNext(c));
            }
            Outcome::Wrong(what) => {
                return Err((
                    FailureKind::Contract,
                    format!("client {c} op {op_id} attempt {attempt}: {what}"),
                ))
            }
        }
        Ok(())
    }
}
