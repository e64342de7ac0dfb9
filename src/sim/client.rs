//! Simulated clients: each registers a session, then issues one operation at a time (put, get,
//! cas, delete over a small key space), retries through timeouts, lost replies and leader changes
//! with the *same* session sequence number (so a retried write applies once), follows NotLeader
//! hints or tries nodes in turn, and records every operation as a history for `lincheck`.
//! Clients speak the real client protocol: each attempt is a request frame encoded by
//! `wire::client`, and each answer a response frame the host wrote, decoded the same way.
//! Must not peek at node state: a client learns only from replies. Values are unique per write so
//! that the linearizability check can tell writes apart.

use crate::lincheck::{Op, OpInput, OpOutput};
use crate::rng::Rng;
use crate::wire::client::{encode_request, Consistency, ErrorKind, Expect, Request, Response};

/// What a client asks a node.
#[derive(Clone, PartialEq, Eq)]
pub enum ClientOp {
    Register,
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Get {
        key: Vec<u8>,
    },
    Delete {
        key: Vec<u8>,
    },
    Cas {
        key: Vec<u8>,
        expect: Option<Vec<u8>>,
        new: Vec<u8>,
    },
}

impl std::fmt::Debug for ClientOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        match self {
            ClientOp::Register => write!(f, "register"),
            ClientOp::Put { key, value } => write!(f, "put {} {}", s(key), s(value)),
            ClientOp::Get { key } => write!(f, "get {}", s(key)),
            ClientOp::Delete { key } => write!(f, "delete {}", s(key)),
            ClientOp::Cas { key, expect, new } => write!(
                f,
                "cas {} {} → {}",
                s(key),
                expect.as_deref().map_or("absent".to_string(), s),
                s(new)
            ),
        }
    }
}

/// A request id names the operation and the attempt, so an answer to an earlier attempt is
/// still recognised as the operation's.
pub fn request_id(op_id: u64, attempt: u64) -> u64 {
    (op_id << 32) | (attempt & 0xffff_ffff)
}

/// The operation and attempt a request id names.
pub fn split_request_id(id: u64) -> (u64, u64) {
    (id >> 32, id & 0xffff_ffff)
}

pub struct Current {
    pub op: ClientOp,
    pub op_id: u64,
    pub seq: u64,
    pub attempt: u64,
    /// Index of this operation in the history (None for session registration).
    pub hist: Option<usize>,
}

pub struct Client {
    pub index: usize,
    /// The id under which this client's operations enter the history; a new one after an
    /// abandoned operation, so every history client stays sequential.
    pub hist_client: u64,
    pub session: Option<u64>,
    pub next_seq: u64,
    pub next_op_id: u64,
    pub target: usize,
    pub current: Option<Current>,
    /// The last value this client saw per key, to make compare-and-swap succeed now and then.
    pub seen: Vec<Option<Vec<u8>>>,
    pub completed: u64,
    /// The cursor of the round-robin over nodes, and whether the last retry followed a hint.
    pub cursor: usize,
    pub followed_hint: bool,
    /// A read-mostly client (90 % gets): it stays with whichever node answers its reads.
    pub reader: bool,
    /// Puts of distinct filler keys still to make before the ordinary mix: they make the
    /// dictionary, hence each snapshot, bigger without diluting the keys operations collide on.
    pub filler: usize,
}

/// The key space: small, so that operations collide.
pub const KEYS: usize = 6;

pub fn key(k: usize) -> Vec<u8> {
    format!("k{k}").into_bytes()
}

/// What the client does once an answer arrives.
pub enum Outcome {
    /// The operation finished: record it and move on.
    Done(Option<OpOutput>),
    /// Try again, at this node index, after this many µs.
    Retry { target: usize, after_us: u64 },
    /// The outcome is unknown for good (session expired, stale): leave ret None and move on.
    Abandon,
    /// An answer no correct server gives to this request (the wrong kind, or `Invalid`).
    Wrong(String),
}

impl Client {
    pub fn new(index: usize, nodes: usize, hist_client: u64) -> Client {
        Client {
            index,
            hist_client,
            session: None,
            next_seq: 1,
            next_op_id: 1,
            target: index % nodes.max(1),
            current: None,
            seen: vec![None; KEYS],
            filler: 0,
            completed: 0,
            cursor: index % nodes.max(1),
            followed_hint: false,
            reader: false,
        }
    }

    /// The next node in turn (after a timeout or a NotLeader without a usable hint).
    pub fn rotate(&mut self, nodes: usize) -> usize {
        self.cursor = (self.cursor + 1) % nodes.max(1);
        self.followed_hint = false;
        self.cursor
    }

    /// Picks the next operation (a registration first if there is no session).
    pub fn next_op(&mut self, rng: &mut Rng) -> (ClientOp, u64) {
        let op_id = self.next_op_id;
        self.next_op_id += 1;
        if self.session.is_none() {
            return (ClientOp::Register, op_id);
        }
        let value = format!("c{}.{}", self.hist_client, op_id).into_bytes();
        if self.filler > 0 {
            self.filler -= 1;
            let key = format!("f{}.{}", self.index, self.filler).into_bytes();
            return (ClientOp::Put { key, value }, op_id);
        }
        let k = rng.index(KEYS);
        let r = if self.reader && rng.chance(0.9) {
            50 // a Get
        } else {
            rng.below(100)
        };
        let op = if r < 35 {
            ClientOp::Put { key: key(k), value }
        } else if r < 65 {
            ClientOp::Get { key: key(k) }
        } else if r < 85 {
            let expect = if rng.chance(0.7) {
                self.seen[k].clone()
            } else {
                None
            };
            ClientOp::Cas {
                key: key(k),
                expect,
                new: value,
            }
        } else {
            ClientOp::Delete { key: key(k) }
        };
        (op, op_id)
    }

    pub fn history_op(&self, op: &ClientOp, call_us: u64) -> Option<Op> {
        let input = match op {
            ClientOp::Register => return None,
            ClientOp::Put { key, value } => OpInput::Put {
                key: key.clone(),
                value: value.clone(),
            },
            ClientOp::Get { key } => OpInput::Get { key: key.clone() },
            ClientOp::Delete { key } => OpInput::Delete { key: key.clone() },
            ClientOp::Cas { key, expect, new } => OpInput::Cas {
                key: key.clone(),
                expect: expect.clone(),
                new: new.clone(),
            },
        };
        Some(Op {
            client: self.hist_client,
            call: call_us,
            ret: None,
            input,
            output: None,
        })
    }

    fn key_index(key: &[u8]) -> Option<usize> {
        std::str::from_utf8(key.get(1..)?).ok()?.parse().ok()
    }

    /// The request frame for the current operation's current attempt.
    pub fn frame(&self) -> Option<Vec<u8>> {
        let cur = self.current.as_ref()?;
        let session = self.session.map(|id| (id, cur.seq));
        let req = match cur.op.clone() {
            ClientOp::Register => Request::RegisterSession,
            ClientOp::Get { key } => Request::Get {
                key,
                consistency: Consistency::Linearizable,
            },
            ClientOp::Put { key, value } => Request::Put {
                session,
                key,
                value,
            },
            ClientOp::Delete { key } => Request::Delete { session, key },
            ClientOp::Cas { key, expect, new } => Request::Cas {
                session,
                key,
                expect: match expect {
                    Some(v) => Expect::Value(v),
                    None => Expect::Absent,
                },
                new: Some(new),
            },
        };
        let mut out = Vec::new();
        encode_request(request_id(cur.op_id, cur.attempt), &req, &mut out);
        Some(out)
    }

    /// Whether an answer only says "not now, not here" (so it is stale unless it answers the
    /// attempt in flight), rather than giving the operation's outcome.
    pub fn is_provisional(resp: &Response) -> bool {
        match resp {
            Response::Error(e) => !matches!(e, ErrorKind::SessionExpired | ErrorKind::StaleRequest),
            _ => false,
        }
    }

    /// Interprets an answer for the current operation.
    pub fn on_answer(&mut self, resp: &Response, nodes: usize, rng: &mut Rng) -> Outcome {
        let Some(cur) = &self.current else {
            return Outcome::Abandon;
        };
        let op = cur.op.clone();
        let wrong = || Outcome::Wrong(format!("answered {op:?} with {resp:?}"));
        match resp {
            Response::Error(ErrorKind::NotLeader { leader, .. }) => {
                // Follow a hint once; if the hinted node does not lead either, go back to trying
                // nodes in turn, so that two nodes with stale hints cannot bounce us for ever.
                match leader {
                    Some(h)
                        if !self.followed_hint
                            && (*h as usize) >= 1
                            && (*h as usize) <= nodes
                            && *h as usize - 1 != self.target =>
                    {
                        self.followed_hint = true;
                        Outcome::Retry {
                            target: *h as usize - 1,
                            after_us: 1_000,
                        }
                    }
                    _ => Outcome::Retry {
                        target: self.rotate(nodes),
                        after_us: rng.between(2_000, 10_000),
                    },
                }
            }
            // Not applied (Busy, Unavailable) or maybe applied (Timeout): the same request with
            // the same session sequence number is safe either way.
            Response::Error(ErrorKind::Busy | ErrorKind::Unavailable(_) | ErrorKind::Timeout) => {
                Outcome::Retry {
                    target: self.target,
                    after_us: rng.between(5_000, 20_000),
                }
            }
            Response::Error(ErrorKind::SessionExpired) => {
                self.session = None;
                Outcome::Abandon
            }
            // The session moved past this write: its outcome is unknown for good.
            Response::Error(ErrorKind::StaleRequest) => Outcome::Abandon,
            Response::Error(_) => wrong(),
            Response::Value { value, .. } => match &op {
                ClientOp::Get { key } => {
                    if let Some(k) = Self::key_index(key) {
                        if let Some(seen) = self.seen.get_mut(k) {
                            *seen = value.clone();
                        }
                    }
                    Outcome::Done(Some(OpOutput::Value(value.clone())))
                }
                _ => wrong(),
            },
            Response::SessionRegistered { id } => match &op {
                ClientOp::Register => {
                    self.session = Some(*id);
                    Outcome::Done(None)
                }
                _ => wrong(),
            },
            Response::Written { .. } => match &op {
                ClientOp::Put { key, value } => {
                    if let Some(k) = Self::key_index(key) {
                        if let Some(seen) = self.seen.get_mut(k) {
                            *seen = Some(value.clone());
                        }
                    }
                    Outcome::Done(Some(OpOutput::Done))
                }
                _ => wrong(),
            },
            Response::Deleted { .. } => match &op {
                ClientOp::Delete { .. } => Outcome::Done(Some(OpOutput::Done)),
                _ => wrong(),
            },
            Response::CasOk { .. } => match &op {
                ClientOp::Cas { key, new, .. } => {
                    if let Some(k) = Self::key_index(key) {
                        if let Some(seen) = self.seen.get_mut(k) {
                            *seen = Some(new.clone());
                        }
                    }
                    Outcome::Done(Some(OpOutput::Cas(true)))
                }
                _ => wrong(),
            },
            Response::CasFailed { current } => match &op {
                ClientOp::Cas { key, .. } => {
                    if let Some(k) = Self::key_index(key) {
                        if let Some(seen) = self.seen.get_mut(k) {
                            *seen = current.as_ref().map(|(v, _)| v.clone());
                        }
                    }
                    Outcome::Done(Some(OpOutput::Cas(false)))
                }
                _ => wrong(),
            },
            _ => wrong(),
        }
    }
}
