//! A linearizability checker for key-value histories, used by the simulator and the tests to judge
//! what clients observed. Owns the history model (`Op`), the search, and a brute-force oracle to
//! test the search against. Must not depend on the rest of Zatt: it judges a history, whoever
//! produced it. Read more: Herlihy & Wing, "Linearizability" (1990); Wing & Gong, "Testing and
//! verifying concurrent objects" (1993); Lowe, "Testing for linearizability" (2017); Horn &
//! Kroening, "Faster linearizability checking via P-compositionality" (2015).
//!
//! # The model
//! Each key is a register holding a value or nothing. `Put` sets it, `Delete` clears it, `Get`
//! reads it, `Cas` sets it to `new` only when it holds `expect` (`None`: absent) and reports
//! whether it did. An op with `ret: Some(t)` took effect at one instant within `[call, t]`. An op
//! with `ret: None` (timed out, or never answered) may have taken effect at any instant after its
//! call, or never; its output is unknown. Real-time order: `a` precedes `b` iff
//! `a.ret < b.call` (strictly; equal times count as concurrent). An output of the wrong shape
//! (a `Get` answered `Done`), a `ret` before its `call`, or `ret` and `output` disagreeing on
//! whether the op returned, makes the history non-linearizable, with that named.
//!
//! # The search
//! Ops on different keys never constrain each other (linearizability is local: Herlihy & Wing
//! Theorem 1), so the history is split per key and each key checked alone, in key order.
//! Per key, a depth-first search in the style of Wing & Gong with Lowe's memoization: a node is
//! (set of linearized ops, register state), remembered as a 128-bit Zobrist fingerprint kept up to
//! date in O(1) per step; a node seen before is not expanded again.
//! At each node the ops that may go next are those not yet linearized whose call is no later than
//! the earliest return of any unlinearized completed op. Three reductions keep the branching low,
//! all complete: (1) a completed op that leaves the state unchanged wherever it is consistent (a
//! read, a failed CAS) and is consistent now is linearized at once without branching, since
//! moving it earlier in any valid order breaks no real-time constraint and changes no state;
//! (2) a pending op that would leave the state unchanged is never tried (that equals it never
//! taking effect), and pending reads are dropped up front; (3) pending ops with identical effects
//! are interchangeable, so only the earliest-called unlinearized one of each kind is tried (see
//! `Search`). The search succeeds once every completed op is linearized; pending ops left over
//! never took effect.
//!
//! # Unread timed-out writes
//! A pending op that writes a value no op observed (no get read it, no CAS expected it) can only
//! matter by making a CAS fail: while the register holds that value, nothing but a failed CAS
//! is consistent, until the next write. Without failed CASes on the key such ops are dropped
//! before the search (the verdict is the same); with them, the search first runs without them
//! (dropping a pending op is choosing that it never took effect, so success there is an
//! answer) on half the budget, and only a failure runs the full search. Each of them can be
//! slipped in right before any write, so a search that tries them meets every subset of them
//! as a node of its own: a few tens of them on one key made the simulator's long runs exhaust
//! the budget on valid histories.
//!
//! # The budget
//! The search counts every attempt to linearize an op. `check` allows `DEFAULT_BUDGET` attempts
//! over the whole history; when they run out it returns a `LinError` whose explanation starts
//! with "search budget exhausted". That verdict is not a proof of a violation: the simulator
//! treats it as a failure to investigate. Valid histories of a few thousand ops over tens of keys
//! take about one attempt per op (milliseconds); the budget is thousands of times that. An
//! attempt costs about 0.4 µs and at most one 16-byte memo entry, so an exhausted budget means
//! roughly 8 s and 420 MB on this project's machine before the answer comes back. Refuting an
//! invalid history with heavy overlap is where the search is exponential (the problem is
//! NP-complete: Gibbons & Korach 1997); `check_with_budget` lets a caller choose another bound.

use crate::rng::mix64;
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpInput {
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
        /// `None`: expect the key absent.
        expect: Option<Vec<u8>>,
        new: Vec<u8>,
    },
}

impl OpInput {
    pub fn key(&self) -> &[u8] {
        match self {
            OpInput::Put { key, .. }
            | OpInput::Get { key }
            | OpInput::Delete { key }
            | OpInput::Cas { key, .. } => key,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpOutput {
    /// A put or delete was acknowledged.
    Done,
    /// What a get read.
    Value(Option<Vec<u8>>),
    /// Whether a CAS took effect.
    Cas(bool),
}

/// One client operation as observed from outside: invoked at `call`, answered at `ret`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Op {
    pub client: u64,
    pub call: u64,
    /// `None`: timed out or never returned; it may or may not have taken effect, at any time
    /// after `call`.
    pub ret: Option<u64>,
    pub input: OpInput,
    /// `None` iff `ret` is `None`.
    pub output: Option<OpOutput>,
}

/// Why a history is not linearizable (or could not be shown to be within the budget).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinError {
    pub key: Vec<u8>,
    /// Which ops could not be ordered, and the longest order that was found.
    pub explanation: String,
}

impl fmt::Display for LinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "key {}: {}",
            show_bytes(Some(&self.key)),
            self.explanation
        )
    }
}

impl std::error::Error for LinError {}

/// Linearization attempts `check` allows over a whole history.
pub const DEFAULT_BUDGET: u64 = 20_000_000;

/// Checks a history with `DEFAULT_BUDGET`. See the top of this file for the model and search.
pub fn check(history: &[Op]) -> Result<(), LinError> {
    check_with_budget(history, DEFAULT_BUDGET)
}

/// Checks a history, giving up with "search budget exhausted" after `budget` attempts.
pub fn check_with_budget(history: &[Op], budget: u64) -> Result<(), LinError> {
    let mut by_key: BTreeMap<&[u8], Vec<usize>> = BTreeMap::new();
    for (i, op) in history.iter().enumerate() {
        by_key.entry(op.input.key()).or_default().push(i);
    }
    let mut budget_left = budget;
    for (key, ops) in by_key {
        check_key(history, &ops, &mut budget_left).map_err(|explanation| LinError {
            key: key.to_vec(),
            explanation,
        })?;
    }
    Ok(())
}

/// What an op does to one register; values are interned to small ids, 0 meaning absent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Effect {
    /// Put (value id) or Delete (0); `Done` when it returned.
    Write(u32),
    /// A completed get that read this value id.
    Read(u32),
    Cas {
        expect: u32,
        new: u32,
        /// `None` while pending.
        ok: Option<bool>,
    },
}

#[derive(Clone, Copy, Debug)]
struct KeyOp {
    call: u64,
    /// `u64::MAX` for a pending op.
    ret: u64,
    pending: bool,
    effect: Effect,
    /// Index in the caller's history.
    orig: usize,
}

impl KeyOp {
    /// True when the op, wherever it is consistent, leaves the state unchanged: a read, a
    /// failed CAS, a CAS that swaps a value for itself. (A write of the current value is not: at
    /// another point of the order it would change the state.)
    fn read_only(&self) -> bool {
        match self.effect {
            Effect::Write(_) => false,
            Effect::Read(_) => true,
            Effect::Cas { expect, new, ok } => ok == Some(false) || expect == new,
        }
    }

    /// The state after this op, if it is consistent with `state`.
    fn step(&self, state: u32) -> Option<u32> {
        match self.effect {
            Effect::Write(v) => Some(v),
            Effect::Read(v) => (v == state).then_some(state),
            Effect::Cas { expect, new, ok } => {
                let holds = expect == state;
                match ok {
                    Some(ok) if ok != holds => None,
                    _ => Some(if holds { new } else { state }),
                }
            }
        }
    }
}

/// Checks the shape of one op; the error names what is wrong.
fn malformed(op: &Op) -> Option<&'static str> {
    if op.ret.is_some() != op.output.is_some() {
        return Some("ret and output disagree on whether the op returned");
    }
    if op.ret.is_some_and(|r| r < op.call) {
        return Some("returns before its call");
    }
    match (&op.input, &op.output) {
        (_, None)
        | (OpInput::Put { .. } | OpInput::Delete { .. }, Some(OpOutput::Done))
        | (OpInput::Get { .. }, Some(OpOutput::Value(_)))
        | (OpInput::Cas { .. }, Some(OpOutput::Cas(_))) => None,
        _ => Some("output does not fit the operation"),
    }
}

struct Interner<'a> {
    ids: BTreeMap<&'a [u8], u32>,
    names: Vec<&'a [u8]>,
}

impl<'a> Interner<'a> {
    fn id(&mut self, v: &'a [u8]) -> u32 {
        let next = self.names.len() as u32 + 1;
        let id = *self.ids.entry(v).or_insert(next);
        if id == next {
            self.names.push(v);
        }
        id
    }
    fn name(&self, id: u32) -> Option<&'a [u8]> {
        (id != 0).then(|| self.names[id as usize - 1])
    }
}

fn check_key(history: &[Op], idx: &[usize], budget: &mut u64) -> Result<(), String> {
    let mut values = Interner {
        ids: BTreeMap::new(),
        names: Vec::new(),
    };
    let mut written: HashSet<u32> = HashSet::new();
    written.insert(0);
    let mut ops: Vec<KeyOp> = Vec::with_capacity(idx.len());
    for &i in idx {
        let op = &history[i];
        if let Some(why) = malformed(op) {
            return Err(format!("{}: {why}", show_op(history, i)));
        }
        let effect = match (&op.input, &op.output) {
            (OpInput::Get { .. }, None) => continue, // a pending read changes nothing
            (OpInput::Get { .. }, Some(OpOutput::Value(v))) => {
                Effect::Read(v.as_deref().map_or(0, |v| values.id(v)))
            }
            (OpInput::Put { value, .. }, _) => {
                let v = values.id(value);
                written.insert(v);
                Effect::Write(v)
            }
            (OpInput::Delete { .. }, _) => Effect::Write(0),
            (OpInput::Cas { expect, new, .. }, out) => {
                let new = values.id(new);
                written.insert(new);
                Effect::Cas {
                    expect: expect.as_deref().map_or(0, |v| values.id(v)),
                    new,
                    ok: match out {
                        Some(OpOutput::Cas(b)) => Some(*b),
                        _ => None,
                    },
                }
            }
            _ => unreachable!("malformed() accepted the op"),
        };
        ops.push(KeyOp {
            call: op.call,
            ret: op.ret.unwrap_or(u64::MAX),
            pending: op.ret.is_none(),
            effect,
            orig: i,
        });
    }
    for op in &ops {
        if let Effect::Read(v) = op.effect {
            if !written.contains(&v) {
                return Err(format!(
                    "{} read a value no op ever wrote",
                    show_op(history, op.orig)
                ));
            }
        }
    }
    // Pending ops whose value no op observed (see "Unread timed-out writes" at the top).
    let mut observed: HashSet<u32> = HashSet::new();
    let mut failed_cas = false;
    for op in &ops {
        match op.effect {
            Effect::Read(v) => {
                observed.insert(v);
            }
            Effect::Cas { expect, ok, .. } => {
                observed.insert(expect);
                failed_cas |= ok == Some(false);
            }
            Effect::Write(_) => {}
        }
    }
    let needed = |op: &KeyOp| match op.effect {
        _ if !op.pending => true,
        Effect::Write(v) | Effect::Cas { new: v, .. } => observed.contains(&v),
        Effect::Read(_) => true,
    };
    if !ops.iter().all(needed) {
        if !failed_cas {
            ops.retain(needed);
        } else {
            let mut quick_budget = *budget / 2;
            let granted = quick_budget;
            let mut quick = Search::new(ops.iter().copied().filter(needed).collect());
            let verdict = quick.run(&mut quick_budget);
            *budget -= granted - quick_budget;
            if verdict.is_ok() {
                return Ok(());
            }
        }
    }
    let mut search = Search::new(ops);
    match search.run(budget) {
        Ok(()) => Ok(()),
        Err(exhausted) => Err(search.explain(history, &values, exhausted)),
    }
}

/// The search over one key's ops. `ops` holds the completed ops first, sorted by call, then the
/// pending ops grouped into classes of identical effect, each class sorted by call.
///
/// Pending ops of one class are interchangeable, and the one called earliest can stand in for
/// any other (it may go wherever a later-called one may), so within a class only the earliest
/// unlinearized op is ever tried: the linearized ops of a class are always a prefix of it, and
/// a class is tracked by a count.
struct Search {
    ops: Vec<KeyOp>,
    /// `ops[..completed]` are the completed ops.
    completed: usize,
    /// Indexes of the completed ops in order of return.
    by_ret: Vec<usize>,
    /// Per class of pending ops: its range in `ops` and how many of it are linearized.
    class_start: Vec<usize>,
    class_len: Vec<usize>,
    class_used: Vec<usize>,
    /// `ops[i]`'s class, for pending ops (unused for completed ones).
    class_of: Vec<usize>,
    /// Bit `i` set: `ops[i]` is linearized on the current path.
    linearized: Vec<u64>,
    state: u32,
    completed_left: usize,
    /// Every completed op before this position (in call order) is linearized.
    first_open: usize,
    /// Every completed op before this position of `by_ret` is linearized.
    first_open_by_ret: usize,
    /// Fingerprints of the nodes already expanded (see `fingerprint`).
    memo: HashSet<u128, BuildHasherDefault<FoldHasher>>,
    /// XOR of `op_key(i)` over the linearized ops: the set's fingerprint, kept up to date by
    /// `flip` in O(1).
    set_key: u128,
    /// The current linearization: the op, and the state and cursors before it.
    path: Vec<Step>,
    /// The path that linearized the most completed ops, for the explanation.
    best_path: Vec<usize>,
    best_state: u32,
    best_left: usize,
    attempts: u64,
}

struct Step {
    op: usize,
    state_before: u32,
    first_open: usize,
    first_open_by_ret: usize,
}

impl Search {
    fn new(mut ops: Vec<KeyOp>) -> Search {
        ops.sort_by_key(|o| {
            (
                o.pending,
                if o.pending { Some(o.effect) } else { None },
                o.call,
                o.ret,
                o.orig,
            )
        });
        let completed = ops.iter().filter(|o| !o.pending).count();
        let mut by_ret: Vec<usize> = (0..completed).collect();
        by_ret.sort_by_key(|&i| (ops[i].ret, i));
        let (mut class_start, mut class_len) = (Vec::new(), Vec::new());
        let mut class_of = vec![usize::MAX; ops.len()];
        for i in completed..ops.len() {
            if i == completed || ops[i].effect != ops[i - 1].effect {
                class_start.push(i);
                class_len.push(0);
            }
            *class_len.last_mut().expect("pushed above") += 1;
            class_of[i] = class_start.len() - 1;
        }
        Search {
            linearized: vec![0u64; ops.len().div_ceil(64)],
            class_used: vec![0; class_start.len()],
            ops,
            completed,
            by_ret,
            class_start,
            class_len,
            class_of,
            state: 0,
            completed_left: completed,
            first_open: 0,
            first_open_by_ret: 0,
            memo: HashSet::default(),
            set_key: 0,
            path: Vec::new(),
            best_path: Vec::new(),
            best_state: 0,
            best_left: usize::MAX,
            attempts: 0,
        }
    }

    fn is_set(&self, i: usize) -> bool {
        self.linearized[i / 64] & (1 << (i % 64)) != 0
    }
    fn flip(&mut self, i: usize) {
        self.linearized[i / 64] ^= 1 << (i % 64);
        self.set_key ^= op_key(i);
    }

    /// The earliest return among unlinearized completed ops: no op called after it may go next.
    fn min_ret(&mut self) -> u64 {
        while self.first_open_by_ret < self.completed
            && self.is_set(self.by_ret[self.first_open_by_ret])
        {
            self.first_open_by_ret += 1;
        }
        self.by_ret
            .get(self.first_open_by_ret)
            .map_or(u64::MAX, |&i| self.ops[i].ret)
    }

    /// The ops that may be linearized next. If a completed op is consistent now and leaves the
    /// state as it is wherever it goes, it alone is returned (the top of this file says why that
    /// loses nothing). Pending ops that would change nothing now are left out.
    fn candidates(&mut self) -> Vec<usize> {
        let min_ret = self.min_ret();
        while self.first_open < self.completed && self.is_set(self.first_open) {
            self.first_open += 1;
        }
        let mut out = Vec::new();
        for i in self.first_open..self.completed {
            let op = &self.ops[i];
            if op.call > min_ret {
                break;
            }
            if self.is_set(i) {
                continue;
            }
            match op.step(self.state) {
                None => {}
                Some(next) if next == self.state && op.read_only() => return vec![i],
                Some(_) => out.push(i),
            }
        }
        for c in 0..self.class_start.len() {
            if self.class_used[c] == self.class_len[c] {
                continue;
            }
            let i = self.class_start[c] + self.class_used[c];
            let op = &self.ops[i];
            if op.call <= min_ret && op.step(self.state) != Some(self.state) {
                out.push(i);
            }
        }
        out
    }

    fn note_progress(&mut self) {
        if self.completed_left < self.best_left {
            self.best_left = self.completed_left;
            self.best_path = self.path.iter().map(|s| s.op).collect();
            self.best_state = self.state;
        }
    }

    /// Ok when every completed op is linearized; Err(exhausted) otherwise.
    fn run(&mut self, budget: &mut u64) -> Result<(), bool> {
        if self.completed_left == 0 {
            return Ok(());
        }
        self.note_progress();
        let first = self.candidates();
        let mut stack: Vec<(Vec<usize>, usize)> = vec![(first, 0)];
        while let Some((cands, next)) = stack.last_mut() {
            let Some(&i) = cands.get(*next) else {
                stack.pop();
                if let Some(step) = self.path.pop() {
                    self.undo(step);
                }
                continue;
            };
            *next += 1;
            if *budget == 0 {
                return Err(true);
            }
            *budget -= 1;
            self.attempts += 1;
            let Some(after) = self.ops[i].step(self.state) else {
                continue;
            };
            self.flip(i);
            if !self.memo.insert(self.set_key ^ state_key(after)) {
                self.flip(i);
                continue;
            }
            self.path.push(Step {
                op: i,
                state_before: self.state,
                first_open: self.first_open,
                first_open_by_ret: self.first_open_by_ret,
            });
            self.state = after;
            if i < self.completed {
                self.completed_left -= 1;
                if self.completed_left == 0 {
                    return Ok(());
                }
            } else {
                self.class_used[self.class_of[i]] += 1;
            }
            self.note_progress();
            let cands = self.candidates();
            stack.push((cands, 0));
        }
        Err(false)
    }

    fn undo(&mut self, step: Step) {
        self.flip(step.op);
        self.state = step.state_before;
        self.first_open = step.first_open;
        self.first_open_by_ret = step.first_open_by_ret;
        if step.op < self.completed {
            self.completed_left += 1;
        } else {
            self.class_used[self.class_of[step.op]] -= 1;
        }
    }

    fn explain(&self, history: &[Op], values: &Interner, exhausted: bool) -> String {
        const SHOW: usize = 8;
        let completed = self.ops.iter().filter(|o| !o.pending).count();
        let mut s = String::new();
        if exhausted {
            s.push_str(&format!(
                "search budget exhausted after {} attempts over {} ops; not proven \
                 non-linearizable. ",
                self.attempts,
                self.ops.len()
            ));
        } else {
            s.push_str("not linearizable. ");
        }
        s.push_str(&format!(
            "At best {} of {} completed ops could be ordered",
            completed - self.best_left,
            completed
        ));
        let skip = self.best_path.len().saturating_sub(SHOW);
        if !self.best_path.is_empty() {
            s.push_str(&format!(", ending {}[", if skip > 0 { "… " } else { "" }));
            for (n, &i) in self.best_path[skip..].iter().enumerate() {
                if n > 0 {
                    s.push_str(", ");
                }
                s.push_str(&show_op(history, self.ops[i].orig));
            }
            s.push(']');
        }
        s.push_str(&format!(
            " with the value then {}. None of these could go next: ",
            show_bytes(values.name(self.best_state))
        ));
        // The ops left over once the best path is linearized, earliest call first.
        let mut on_path = vec![false; self.ops.len()];
        for &i in &self.best_path {
            on_path[i] = true;
        }
        let min_ret = (0..self.ops.len())
            .filter(|&i| !self.ops[i].pending && !on_path[i])
            .map(|i| self.ops[i].ret)
            .min()
            .unwrap_or(u64::MAX);
        let stuck: Vec<usize> = (0..self.ops.len())
            .filter(|&i| !on_path[i] && self.ops[i].call <= min_ret)
            .collect();
        for (n, &i) in stuck.iter().take(SHOW).enumerate() {
            if n > 0 {
                s.push_str(", ");
            }
            s.push_str(&show_op(history, self.ops[i].orig));
        }
        if stuck.len() > SHOW {
            s.push_str(&format!(" and {} more", stuck.len() - SHOW));
        }
        s
    }
}

/// A fixed pseudo-random 128-bit key per op position (Zobrist hashing): a node's fingerprint is
/// the XOR of the keys of its linearized ops, XOR the key of its state. Two distinct nodes share
/// a fingerprint with probability about 2^-128 per pair, so even the whole budget's worth of
/// nodes (below 2^26) collides with probability below 2^-75. A collision can only make the search
/// skip a node it never expanded, so at worst (at those odds) refuse a linearizable history; it
/// can never make it accept a non-linearizable one.
fn op_key(i: usize) -> u128 {
    let i = i as u64;
    (u128::from(mix64(i.wrapping_mul(2))) << 64) | u128::from(mix64(i.wrapping_mul(2) + 1))
}

fn state_key(state: u32) -> u128 {
    let s = u64::from(state) | (1 << 40);
    (u128::from(mix64(s.wrapping_mul(2))) << 64) | u128::from(mix64(s.wrapping_mul(2) + 1))
}

/// The memo's keys are already uniformly random: hashing them again would only cost time.
#[derive(Default)]
struct FoldHasher(u64);

impl Hasher for FoldHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut a = [0u8; 8];
            a[..chunk.len()].copy_from_slice(chunk);
            self.0 = mix64(self.0 ^ u64::from_le_bytes(a));
        }
    }
    fn write_u128(&mut self, v: u128) {
        self.0 ^= (v as u64) ^ ((v >> 64) as u64);
    }
}

fn show_bytes(v: Option<&[u8]>) -> String {
    match v {
        None => "(absent)".to_string(),
        Some(v) if v.len() > 24 => format!("{:?}…", String::from_utf8_lossy(&v[..24])),
        Some(v) => format!("{:?}", String::from_utf8_lossy(v)),
    }
}

/// `#index c<client> [call,ret] operation → output`.
fn show_op(history: &[Op], i: usize) -> String {
    let op = &history[i];
    let ret = op.ret.map_or("∞".to_string(), |r| r.to_string());
    let input = match &op.input {
        OpInput::Put { value, .. } => format!("put {}", show_bytes(Some(value))),
        OpInput::Get { .. } => "get".to_string(),
        OpInput::Delete { .. } => "delete".to_string(),
        OpInput::Cas { expect, new, .. } => format!(
            "cas {}→{}",
            show_bytes(expect.as_deref()),
            show_bytes(Some(new))
        ),
    };
    let output = match &op.output {
        None => "timed out".to_string(),
        Some(OpOutput::Done) => "done".to_string(),
        Some(OpOutput::Value(v)) => show_bytes(v.as_deref()),
        Some(OpOutput::Cas(b)) => format!("{b}"),
    };
    format!("#{i} c{} [{},{ret}] {input} → {output}", op.client, op.call)
}

/// The oracle for tests: tries every order of the ops (over all keys at once, no partitioning,
/// no memo) that respects real time, leaving out any subset of the pending ops. Exponential: for
/// histories of about ten ops at most.
pub fn check_brute_force(history: &[Op]) -> bool {
    if history.iter().any(|op| malformed(op).is_some()) {
        return false;
    }
    let mut placed = vec![false; history.len()];
    let mut map = BTreeMap::new();
    brute(history, &mut placed, &mut map)
}

fn brute(history: &[Op], placed: &mut [bool], map: &mut BTreeMap<Vec<u8>, Vec<u8>>) -> bool {
    let all_completed_placed = history
        .iter()
        .zip(placed.iter())
        .all(|(op, &p)| p || op.ret.is_none());
    if all_completed_placed {
        return true;
    }
    for i in 0..history.len() {
        if placed[i] {
            continue;
        }
        let blocked = (0..history.len())
            .any(|j| j != i && !placed[j] && history[j].ret.is_some_and(|r| r < history[i].call));
        if blocked {
            continue;
        }
        let op = &history[i];
        let key = op.input.key().to_vec();
        let before = map.get(&key).cloned();
        let after: Option<Option<Vec<u8>>> = match (&op.input, &op.output) {
            (OpInput::Put { value, .. }, _) => Some(Some(value.clone())),
            (OpInput::Delete { .. }, _) => Some(None),
            (OpInput::Get { .. }, Some(OpOutput::Value(v))) => {
                (*v == before).then(|| before.clone())
            }
            (OpInput::Get { .. }, _) => Some(before.clone()),
            (OpInput::Cas { expect, new, .. }, out) => {
                let holds = *expect == before;
                match out {
                    Some(OpOutput::Cas(ok)) if *ok != holds => None,
                    _ => Some(if holds {
                        Some(new.clone())
                    } else {
                        before.clone()
                    }),
                }
            }
        };
        let Some(after) = after else { continue };
        set(map, &key, after);
        placed[i] = true;
        if brute(history, placed, map) {
            return true;
        }
        placed[i] = false;
        set(map, &key, before);
    }
    false
}

fn set(map: &mut BTreeMap<Vec<u8>, Vec<u8>>, key: &[u8], v: Option<Vec<u8>>) {
    match v {
        Some(v) => {
            map.insert(key.to_vec(), v);
        }
        None => {
            map.remove(key);
        }
    }
}
