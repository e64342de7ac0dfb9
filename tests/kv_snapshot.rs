//! Snapshots and hostile bytes: a snapshot restores to an equal state machine that then evolves
//! exactly like the original; `Proposal::decode` and `Kv::restore` refuse random, truncated and
//! bit-flipped bytes with a typed error and never panic. Method: seeded random workloads
//! (`zatt::rng`'s splitmix64, so every run sees the same bytes).

/// Named so that `cargo test kv` selects these tests.
mod kv_snapshot {
    use zatt::kv::{Command, Expect, Kv, KvConfig, Proposal, SessionRef};
    use zatt::rng::SplitMix64;
    use zatt::types::{Entry, EntryKind, LogIndex, Term};

    fn small_cfg() -> KvConfig {
        KvConfig {
            session_ttl_ms: 500,
            max_sessions: 8,
            max_key_bytes: 16,
            max_value_bytes: 64,
        }
    }

    /// A random workload of `n` entries from index `first`: every command kind, sessions with
    /// retries and stale seqs, advancing time, no-ops, and undecodable payloads.
    fn workload(
        rng: &mut SplitMix64,
        first: u64,
        n: u64,
        sessions: &mut Vec<(u64, u64)>,
    ) -> Vec<Entry> {
        let mut out = Vec::new();
        for index in first..first + n {
            let now_ms = index * 7;
            let key = format!("k{}", rng.below(20)).into_bytes();
            let value = rng.bytes_up_to(8);
            let entry = |kind, data: &[u8]| Entry::new(Term(1), LogIndex(index), kind, data);
            let command = match rng.below(10) {
                0 => {
                    out.push(entry(EntryKind::Noop, &[]));
                    continue;
                }
                1 => {
                    out.push(entry(EntryKind::Normal, &rng.bytes_up_to(12)));
                    continue;
                }
                2 => {
                    sessions.push((index, 0));
                    Command::RegisterSession
                }
                3 | 4 => Command::Put { key, value },
                5 => Command::Delete { key },
                _ => Command::Cas {
                    key,
                    expect: match rng.below(3) {
                        0 => Expect::Absent,
                        1 => Expect::Value(rng.bytes_up_to(2)),
                        _ => Expect::Revision(rng.below(index + 1)),
                    },
                    new: if rng.below(4) == 0 { None } else { Some(value) },
                },
            };
            let session = match (&command, sessions.is_empty(), rng.below(3)) {
                (Command::RegisterSession, _, _) | (_, true, _) | (_, _, 0) => None,
                _ => {
                    let i = rng.below(sessions.len() as u64) as usize;
                    let (id, seq) = &mut sessions[i];
                    // Mostly the next seq; sometimes a retry of the last one, sometimes a stale one.
                    match rng.below(4) {
                        0 => {}
                        1 => *seq = seq.saturating_sub(1),
                        _ => *seq += 1,
                    }
                    Some(SessionRef {
                        id: *id,
                        seq: (*seq).max(1),
                    })
                }
            };
            let p = Proposal {
                session,
                now_ms,
                command,
            };
            out.push(entry(EntryKind::Normal, &p.encoded()));
        }
        out
    }

    #[test]
    fn snapshot_round_trip_equals_original_and_evolves_identically() {
        // Goal: restore(snapshot) == original, and both replicas, fed the same later entries, give
        // the same replies and reach the same state. Method: snapshot at several points of random
        // workloads.
        let mut with_sessions = 0;
        for seed in 0..20 {
            let mut rng = SplitMix64(seed);
            let mut sessions = Vec::new();
            let mut a = Kv::new(small_cfg());
            for e in workload(&mut rng, 1, 300, &mut sessions) {
                a.apply(&e);
            }
            with_sessions += (a.session_count() > 0) as u32;
            let snap = a.snapshot_bytes();
            let mut b = Kv::restore(&snap, small_cfg()).expect("own snapshot restores");
            assert_eq!(a, b, "seed {seed}");
            assert_eq!(b.snapshot_bytes(), snap);
            assert_eq!(b.applied_index(), LogIndex(300));
            for e in workload(&mut rng, 301, 300, &mut sessions) {
                assert_eq!(a.apply(&e), b.apply(&e), "seed {seed} entry {e:?}");
            }
            assert_eq!(a, b, "seed {seed}");
            assert_eq!(a.digest(), b.digest());
            assert!(a.session_count() <= small_cfg().max_sessions);
        }
        eprintln!("{with_sessions} of 20 snapshots held sessions");
        assert!(
            with_sessions >= 10,
            "the workload should leave live sessions in snapshots"
        );
    }

    #[test]
    fn snapshot_of_empty_state_round_trips() {
        // Goal: the smallest snapshot is valid too.
        let kv = Kv::new(KvConfig::default());
        let snap = kv.snapshot_bytes();
        assert_eq!(Kv::restore(&snap, KvConfig::default()).unwrap(), kv);
    }

    #[test]
    fn restore_refuses_truncation_trailing_bytes_and_flipped_bits() {
        // Goal: every cut, every appended byte and every single flipped bit is refused, typed.
        let mut rng = SplitMix64(99);
        let mut sessions = Vec::new();
        let mut kv = Kv::new(small_cfg());
        for e in workload(&mut rng, 1, 60, &mut sessions) {
            kv.apply(&e);
        }
        let snap = kv.snapshot_bytes();
        for cut in 0..snap.len() {
            assert!(Kv::restore(&snap[..cut], small_cfg()).is_err(), "cut {cut}");
        }
        let mut long = snap.clone();
        long.push(0);
        assert!(Kv::restore(&long, small_cfg()).is_err());
        for bit in 0..snap.len() * 8 {
            let mut bad = snap.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(Kv::restore(&bad, small_cfg()).is_err(), "bit {bit}");
        }
    }

    /// Replaces the trailing CRC so that the parser behind the checksum is exercised.
    fn reseal(body: &[u8]) -> Vec<u8> {
        let mut v = body.to_vec();
        v.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
        v
    }

    #[test]
    fn restore_never_panics_on_hostile_bytes_behind_a_valid_checksum() {
        // Goal: the parser behind the CRC is itself robust. Method: mutate, cut and splice the body
        // of real snapshots, recompute the CRC, and restore with tight limits; also pure random
        // bodies. Whatever restores must round-trip to the same bytes.
        let mut rng = SplitMix64(7);
        let mut sessions = Vec::new();
        let mut kv = Kv::new(small_cfg());
        for e in workload(&mut rng, 1, 80, &mut sessions) {
            kv.apply(&e);
        }
        let snap = kv.snapshot_bytes();
        let body = &snap[..snap.len() - 4];
        let (mut accepted, mut refused) = (0, 0);
        for _ in 0..20_000 {
            let mut b = body.to_vec();
            match rng.below(4) {
                0 => {
                    for _ in 0..1 + rng.below(4) {
                        let i = rng.below(b.len() as u64) as usize;
                        b[i] = rng.next_u64() as u8;
                    }
                }
                1 => b.truncate(rng.below(b.len() as u64) as usize),
                2 => {
                    let i = rng.below(b.len() as u64) as usize;
                    let extra = rng.bytes_up_to(16);
                    b.splice(i..i, extra);
                }
                _ => {
                    b = b"ZKVS\x01".to_vec();
                    b.extend(rng.bytes_up_to(64));
                }
            }
            match Kv::restore(&reseal(&b), small_cfg()) {
                Ok(r) => {
                    accepted += 1;
                    let again = Kv::restore(&r.snapshot_bytes(), small_cfg()).unwrap();
                    assert_eq!(again, r);
                }
                Err(_) => refused += 1,
            }
        }
        eprintln!("hostile snapshots: refused {refused}, accepted {accepted}");
        assert!(refused > 10_000, "refused {refused}, accepted {accepted}");
    }

    #[test]
    fn restore_refuses_more_sessions_than_configured() {
        // Goal: a snapshot cannot bring in more sessions than this replica's limit allows.
        let mut kv = Kv::new(KvConfig::default());
        for i in 1..=5 {
            let p = Proposal {
                session: None,
                now_ms: 0,
                command: Command::RegisterSession,
            };
            kv.apply(&Entry::new(
                Term(1),
                LogIndex(i),
                EntryKind::Normal,
                &p.encoded(),
            ));
        }
        let cfg = KvConfig {
            max_sessions: 4,
            ..KvConfig::default()
        };
        assert!(Kv::restore(&kv.snapshot_bytes(), cfg).is_err());
    }

    #[test]
    fn proposal_decode_never_panics_on_hostile_bytes() {
        // Goal: random, truncated, bit-flipped and spliced proposals are refused or decoded, never
        // panic; whatever decodes re-encodes to the same bytes (the format has one encoding).
        let cfg = small_cfg();
        let mut rng = SplitMix64(3);
        let mut sessions = Vec::new();
        let valid: Vec<Vec<u8>> = workload(&mut rng, 1, 200, &mut sessions)
            .into_iter()
            .filter(|e| e.kind == EntryKind::Normal)
            .map(|e| e.data.to_vec())
            .filter(|d| Proposal::decode(d, &cfg).is_ok())
            .collect();
        assert!(valid.len() > 100);
        let (mut ok, mut refused) = (0, 0);
        for round in 0..50_000 {
            let base = &valid[round % valid.len()];
            let mut b = base.clone();
            match rng.below(5) {
                0 => {
                    let bit = rng.below(b.len() as u64 * 8) as usize;
                    b[bit / 8] ^= 1 << (bit % 8);
                }
                1 => b.truncate(rng.below(b.len() as u64) as usize),
                2 => {
                    let i = rng.below(b.len() as u64 + 1) as usize;
                    let extra = rng.bytes_up_to(6);
                    b.splice(i..i, extra);
                }
                3 => b = rng.bytes_up_to(40),
                _ => {
                    let i = rng.below(b.len() as u64) as usize;
                    b[i] = 0xff;
                }
            }
            match Proposal::decode(&b, &cfg) {
                Ok(p) => {
                    ok += 1;
                    assert_eq!(p.encoded(), b);
                }
                Err(_) => refused += 1,
            }
        }
        assert!(refused > 20_000 && ok > 100, "ok {ok}, refused {refused}");
    }

    #[test]
    fn length_field_larger_than_the_bytes_present_is_refused_without_allocating() {
        // Goal: a key length of 4 GiB claimed in a 30-byte proposal is refused by the limit check.
        let p = Proposal {
            session: None,
            now_ms: 0,
            command: Command::Delete { key: b"k".to_vec() },
        };
        let mut b = p.encoded();
        let len_at = 1 + 1 + 8 + 1;
        b[len_at..len_at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        let unlimited = KvConfig {
            max_key_bytes: usize::MAX,
            ..KvConfig::default()
        };
        assert!(Proposal::decode(&b, &unlimited).is_err());
        assert!(Proposal::decode(&b, &KvConfig::default()).is_err());
    }
}
