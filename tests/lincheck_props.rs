//! Tests of the linearizability checker: the memoized per-key search (`check`) must agree with the
//! brute-force oracle (`check_brute_force`) on thousands of small random histories, valid and
//! invalid, and hand-written cases pin the verdicts that matter to the simulator.

use std::collections::BTreeMap;

use zatt::lincheck::{check, check_brute_force, check_with_budget, Op, OpInput, OpOutput};
use zatt::rng::SplitMix64;

/// True once in `n` draws on average (test inputs come from a seeded `SplitMix64`, so every run
/// sees the same histories).
fn one_in(rng: &mut SplitMix64, n: u64) -> bool {
    rng.below(n) == 0
}

struct Shape {
    ops: usize,
    keys: u64,
    clients: u64,
    values: u64,
    /// Largest gap before a call and largest call→return duration, in time units.
    max_gap: u64,
    max_duration: u64,
    timeout_one_in: u64,
}

fn value(rng: &mut SplitMix64, values: u64) -> Vec<u8> {
    vec![b'a' + rng.below(values) as u8]
}

fn random_input(rng: &mut SplitMix64, s: &Shape) -> OpInput {
    let key = format!("k{}", rng.below(s.keys)).into_bytes();
    match rng.below(4) {
        0 => OpInput::Put {
            key,
            value: value(rng, s.values),
        },
        1 => OpInput::Get { key },
        2 => OpInput::Delete { key },
        _ => OpInput::Cas {
            key,
            expect: if one_in(rng, 3) {
                None
            } else {
                Some(value(rng, s.values))
            },
            new: value(rng, s.values),
        },
    }
}

fn random_output(rng: &mut SplitMix64, input: &OpInput, values: u64) -> OpOutput {
    match input {
        OpInput::Put { .. } | OpInput::Delete { .. } => OpOutput::Done,
        OpInput::Get { .. } => OpOutput::Value(if one_in(rng, 3) {
            None
        } else {
            Some(value(rng, values))
        }),
        OpInput::Cas { .. } => OpOutput::Cas(one_in(rng, 2)),
    }
}

/// A history produced by a real linearizable dictionary: each op takes effect at a random instant
/// inside its interval (a timed-out op: at a random instant after its call, or never), and its
/// output is what the dictionary gives at that instant. Clients issue ops one after another.
fn valid_history(rng: &mut SplitMix64, s: &Shape) -> Vec<Op> {
    let mut cursor = vec![0u64; s.clients as usize];
    // (instant ×4 so an instant can sit strictly inside an interval, tie-break, op index)
    let mut effects: Vec<(u64, u64, usize)> = Vec::new();
    let mut ops = Vec::new();
    for i in 0..s.ops {
        let c = rng.below(s.clients) as usize;
        let call = cursor[c] + rng.below(s.max_gap + 1);
        let input = random_input(rng, s);
        let timed_out = one_in(rng, s.timeout_one_in);
        let ret = if timed_out {
            cursor[c] = call + 1 + rng.below(s.max_gap + 1);
            if !one_in(rng, 3) {
                effects.push((
                    4 * call + rng.below(4 * s.max_duration * 3 + 1),
                    rng.next_u64(),
                    i,
                ));
            }
            None
        } else {
            let ret = call + rng.below(s.max_duration + 1);
            cursor[c] = ret + 1;
            effects.push((
                4 * call + rng.below(4 * (ret - call) + 1),
                rng.next_u64(),
                i,
            ));
            Some(ret)
        };
        ops.push(Op {
            client: c as u64,
            call,
            ret,
            input,
            output: None,
        });
    }
    effects.sort();
    let mut map: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    for (_, _, i) in effects {
        let out = match &ops[i].input {
            OpInput::Put { key, value } => {
                map.insert(key.clone(), value.clone());
                OpOutput::Done
            }
            OpInput::Delete { key } => {
                map.remove(key);
                OpOutput::Done
            }
            OpInput::Get { key } => OpOutput::Value(map.get(key).cloned()),
            OpInput::Cas { key, expect, new } => {
                let ok = map.get(key) == expect.as_ref();
                if ok {
                    map.insert(key.clone(), new.clone());
                }
                OpOutput::Cas(ok)
            }
        };
        if ops[i].ret.is_some() {
            ops[i].output = Some(out);
        }
    }
    ops
}

fn small_shape(rng: &mut SplitMix64) -> Shape {
    Shape {
        ops: 1 + rng.below(8) as usize,
        keys: 1 + rng.below(2),
        clients: 2 + rng.below(3),
        values: 3,
        max_gap: 3,
        max_duration: 5,
        timeout_one_in: 2 + rng.below(4),
    }
}

#[test]
fn check_agrees_with_brute_force_on_small_random_histories() {
    // Goal: the memoized per-key search gives the oracle's verdict. Method: 3,000 seeded histories
    // (valid by construction, with random outputs, or valid with one output changed); compare
    // verdicts, check that valid-by-construction ones pass, and that both verdicts are common.
    let mut rng = SplitMix64(0x5eed_1234);
    let (mut accepted, mut refused, mut timeouts) = (0, 0, 0);
    for case in 0..3000 {
        let shape = small_shape(&mut rng);
        let mut h = valid_history(&mut rng, &shape);
        let kind = case % 3;
        match kind {
            0 => {}
            1 => {
                for op in h.iter_mut().filter(|o| o.ret.is_some()) {
                    op.output = Some(random_output(&mut rng, &op.input, shape.values));
                }
            }
            _ => {
                let done: Vec<usize> = (0..h.len()).filter(|&i| h[i].ret.is_some()).collect();
                if !done.is_empty() {
                    let i = done[rng.below(done.len() as u64) as usize];
                    h[i].output = Some(random_output(&mut rng, &h[i].input, shape.values));
                }
            }
        }
        timeouts += (h.iter().filter(|o| o.ret.is_none()).count() >= 2) as u32;
        let fast = check(&h);
        let oracle = check_brute_force(&h);
        assert_eq!(
            fast.is_ok(),
            oracle,
            "case {case}: check says {fast:?}, brute force says {oracle}\n{h:#?}"
        );
        if kind == 0 {
            assert!(
                oracle,
                "case {case}: a history built linearizable was refused\n{h:#?}"
            );
        }
        if oracle {
            accepted += 1;
        } else {
            refused += 1;
        }
    }
    eprintln!("accepted {accepted}, refused {refused}, {timeouts} with two or more timeouts");
    assert!(
        timeouts >= 500,
        "only {timeouts} histories with several timed-out ops"
    );
    assert!(accepted >= 1000, "only {accepted} accepted");
    assert!(refused >= 500, "only {refused} refused");
}

fn op(client: u64, call: u64, ret: Option<u64>, input: OpInput, output: Option<OpOutput>) -> Op {
    Op {
        client,
        call,
        ret,
        input,
        output,
    }
}

fn put(v: &str) -> OpInput {
    OpInput::Put {
        key: b"x".to_vec(),
        value: v.into(),
    }
}

fn get() -> OpInput {
    OpInput::Get { key: b"x".to_vec() }
}

fn read(v: Option<&str>) -> Option<OpOutput> {
    Some(OpOutput::Value(v.map(|v| v.as_bytes().to_vec())))
}

fn cas(expect: Option<&str>, new: &str) -> OpInput {
    OpInput::Cas {
        key: b"x".to_vec(),
        expect: expect.map(|v| v.as_bytes().to_vec()),
        new: new.into(),
    }
}

const DONE: Option<OpOutput> = Some(OpOutput::Done);

#[test]
fn stale_read_after_acknowledged_write_is_refused() {
    // Goal: a read that starts after a write was acknowledged must see it (or something later).
    let h = [
        op(1, 0, Some(1), put("1"), DONE),
        op(1, 2, Some(3), put("2"), DONE),
        op(2, 4, Some(5), get(), read(Some("1"))),
    ];
    let err = check(&h).unwrap_err();
    assert_eq!(err.key, b"x");
    assert!(err.explanation.contains("#2"), "{}", err.explanation);
    assert!(!check_brute_force(&h));
}

#[test]
fn concurrent_writes_are_accepted_in_either_order() {
    // Goal: two overlapping writes may take effect in either order.
    for seen in ["a", "b"] {
        let h = [
            op(1, 0, Some(10), put("a"), DONE),
            op(2, 0, Some(10), put("b"), DONE),
            op(3, 11, Some(12), get(), read(Some(seen))),
        ];
        assert_eq!(check(&h), Ok(()), "reading {seen}");
    }
}

#[test]
fn timed_out_write_that_shows_up_later_is_accepted() {
    // Goal: a write that never returned may take effect long after its call, or never.
    let mut h = vec![
        op(1, 0, Some(1), put("a"), DONE),
        op(1, 2, None, put("b"), None),
        op(2, 10, Some(11), get(), read(Some("a"))),
        op(2, 12, Some(13), get(), read(Some("b"))),
    ];
    assert_eq!(check(&h), Ok(()));
    h.truncate(3); // never shows up
    assert_eq!(check(&h), Ok(()));
    // But once seen it cannot be unseen.
    h.push(op(2, 12, Some(13), get(), read(Some("b"))));
    h.push(op(2, 14, Some(15), get(), read(Some("a"))));
    assert!(check(&h).is_err());
}

#[test]
fn value_never_written_is_refused() {
    // Goal: a read of a value nobody wrote is refused, and the explanation says so.
    let h = [
        op(1, 0, Some(1), put("a"), DONE),
        op(2, 0, Some(1), get(), read(Some("zzz"))),
    ];
    let err = check(&h).unwrap_err();
    assert!(
        err.explanation.contains("no op ever wrote"),
        "{}",
        err.explanation
    );
}

#[test]
fn cas_outcome_must_match_the_register() {
    // Goal: a CAS's reported success is checked against the value it saw.
    let ok = [
        op(1, 0, Some(1), cas(None, "a"), Some(OpOutput::Cas(true))),
        op(1, 2, Some(3), cas(None, "b"), Some(OpOutput::Cas(false))),
        op(
            1,
            4,
            Some(5),
            cas(Some("a"), "c"),
            Some(OpOutput::Cas(true)),
        ),
        op(1, 6, Some(7), get(), read(Some("c"))),
    ];
    assert_eq!(check(&ok), Ok(()));
    let bad = [
        op(1, 0, Some(1), put("a"), DONE),
        op(1, 2, Some(3), cas(None, "b"), Some(OpOutput::Cas(true))),
    ];
    assert!(check(&bad).is_err());
}

#[test]
fn keys_are_checked_independently() {
    // Goal: a violation on one key is reported with that key, whatever other keys hold.
    let h = [
        op(1, 0, Some(1), put("a"), DONE),
        op(
            1,
            0,
            Some(1),
            OpInput::Put {
                key: b"y".to_vec(),
                value: b"q".to_vec(),
            },
            DONE,
        ),
        op(
            2,
            2,
            Some(3),
            OpInput::Get { key: b"y".to_vec() },
            Some(OpOutput::Value(None)),
        ),
    ];
    assert_eq!(check(&h).unwrap_err().key, b"y");
}

#[test]
fn malformed_output_is_refused_not_panicked_on() {
    // Goal: an output of the wrong shape or a return before the call is a named refusal.
    let h = [op(1, 0, Some(1), get(), DONE)];
    assert!(check(&h).unwrap_err().explanation.contains("does not fit"));
    let h = [op(1, 5, Some(1), put("a"), DONE)];
    assert!(check(&h)
        .unwrap_err()
        .explanation
        .contains("before its call"));
    assert!(!check_brute_force(&h));
}

#[test]
fn exhausted_budget_is_reported_as_such() {
    // Goal: the search stops at its budget with an error that says so instead of hanging.
    let mut rng = SplitMix64(7);
    let shape = Shape {
        ops: 200,
        keys: 1,
        clients: 10,
        values: 3,
        max_gap: 2,
        max_duration: 30,
        timeout_one_in: 10,
    };
    let h = valid_history(&mut rng, &shape);
    let err = check_with_budget(&h, 3).unwrap_err();
    assert!(
        err.explanation.starts_with("search budget exhausted"),
        "{}",
        err.explanation
    );
    assert_eq!(check(&h), Ok(()));
}

#[test]
fn large_concurrent_history_is_checked_within_the_default_budget() {
    // Goal: simulator-sized histories (thousands of ops, tens of keys, heavy overlap, timeouts)
    // are accepted when valid and refused when one read is made stale. No timing assertion: the
    // elapsed time is printed for the record.
    let mut rng = SplitMix64(42);
    let shape = Shape {
        ops: 4000,
        keys: 20,
        clients: 16,
        values: 5,
        max_gap: 3,
        max_duration: 40,
        timeout_one_in: 20,
    };
    let mut h = valid_history(&mut rng, &shape);
    let t = std::time::Instant::now();
    assert_eq!(check(&h), Ok(()));
    eprintln!("valid 4000-op history checked in {:?}", t.elapsed());
    // Append, after everything, two writes of fresh values and a read of the older one: only
    // this read can make the history invalid, and it must.
    let end = h.iter().map(|o| o.ret.unwrap_or(o.call)).max().unwrap_or(0) + 1;
    let key = b"k3".to_vec();
    for (i, v) in ["z1", "z2"].iter().enumerate() {
        let call = end + 2 * i as u64;
        h.push(op(
            99,
            call,
            Some(call + 1),
            OpInput::Put {
                key: key.clone(),
                value: v.as_bytes().to_vec(),
            },
            DONE,
        ));
    }
    h.push(op(
        99,
        end + 4,
        Some(end + 5),
        OpInput::Get { key },
        Some(OpOutput::Value(Some(b"z1".to_vec()))),
    ));
    let t = std::time::Instant::now();
    let err = check(&h).unwrap_err();
    eprintln!(
        "invalid 4003-op history refused in {:?}: {err}",
        t.elapsed()
    );
    assert_eq!(err.key, b"k3");
    assert!(!err.explanation.contains("budget"), "{}", err.explanation);
}

#[test]
fn heavily_concurrent_valid_histories_are_accepted() {
    // Goal: the search's reductions (greedy reads, interchangeable timed-out ops) keep heavy
    // overlap and many timeouts tractable: every history here is valid by construction and must
    // be accepted, not answered with an exhausted budget. Method: 12 seeded histories of up to
    // 5,000 ops, up to 100 clients, a single hot key, up to half the ops timed out.
    let shapes = [
        (2000, 1, 32, 100, 5),
        (3000, 10, 64, 300, 3),
        (1000, 1, 16, 1000, 2),
        (5000, 30, 100, 200, 4),
    ];
    for (ops, keys, clients, max_duration, timeout_one_in) in shapes {
        for seed in 0..3 {
            let mut rng = SplitMix64(seed);
            let shape = Shape {
                ops,
                keys,
                clients,
                values: 4,
                max_gap: 5,
                max_duration,
                timeout_one_in,
            };
            let h = valid_history(&mut rng, &shape);
            let t = std::time::Instant::now();
            let verdict = check(&h);
            eprintln!(
                "{ops} ops, {keys} keys, {clients} clients, 1 in {timeout_one_in} timed out: {:?}",
                t.elapsed()
            );
            assert_eq!(verdict, Ok(()), "shape {ops}/{keys}/{clients}, seed {seed}");
        }
    }
}

#[test]
fn timed_out_writes_nobody_read_do_not_blow_up_the_search() {
    // Goal: timed-out writes whose values no op observed cost the search nothing (the
    // simulator's long runs with 8 clients once exhausted the budget on valid histories through
    // them). Method: two overlapping writes, a read that only the second order explains (the
    // search tries the other first), and 16 timed-out writes nobody read: every subset of them
    // is a distinct dead end for a search that tries them, about a million attempts.
    let mut h = vec![
        op(1, 0, Some(100), put("a"), DONE),
        op(2, 0, Some(100), put("b"), DONE),
        op(3, 200, Some(300), get(), read(Some("a"))),
    ];
    for i in 0..16 {
        h.push(op(10 + i, 0, None, put(&format!("p{i}")), None));
    }
    assert_eq!(check_with_budget(&h, 1_000), Ok(()));
    // Made invalid (a read of a value written only before "a" and "b"), it is still refused.
    h.insert(0, op(4, 0, Some(1), put("c"), DONE));
    h.push(op(3, 301, Some(302), get(), read(Some("c"))));
    let err = check(&h).unwrap_err();
    assert!(
        err.explanation.starts_with("not linearizable"),
        "{}",
        err.explanation
    );
}

#[test]
fn timed_out_write_nobody_read_is_still_tried_when_needed() {
    // Goal: leaving unread timed-out writes out is only a first try: a failed CAS that only such
    // a write explains (the key held something, though no read saw what) is accepted.
    let h = [
        op(1, 0, None, put("unseen"), None),
        op(
            2,
            10,
            Some(20),
            cas(None, "mine"),
            Some(OpOutput::Cas(false)),
        ),
    ];
    assert_eq!(check(&h), Ok(()));
    assert!(check_brute_force(&h));
    // Without the timed-out write, the same CAS must have succeeded.
    assert!(check(&h[1..]).is_err());
}
