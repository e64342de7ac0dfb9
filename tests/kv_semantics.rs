//! The replicated dictionary's behaviour as a client sees it: each command, CAS by value, absence
//! and revision, scan paging, and sessions (exactly-once retries, staleness, expiry by log time).
//! Entries are built the way the Raft core hands them over: encoded proposals in index order.

/// Named so that `cargo test kv` selects these tests.
mod kv_semantics {
    use zatt::kv::{Command, Expect, Kv, KvConfig, Proposal, Reply, SessionRef};
    use zatt::types::{Entry, EntryKind, LogIndex, Term};

    /// A replica plus the next index to apply, so tests read as a sequence of proposals.
    struct Replica {
        kv: Kv,
    }

    impl Replica {
        fn new(cfg: KvConfig) -> Replica {
            Replica { kv: Kv::new(cfg) }
        }
        fn next_index(&self) -> LogIndex {
            self.kv.applied_index().next()
        }
        fn propose(&mut self, session: Option<SessionRef>, now_ms: u64, command: Command) -> Reply {
            let p = Proposal {
                session,
                now_ms,
                command,
            };
            let e = Entry::new(Term(1), self.next_index(), EntryKind::Normal, &p.encoded());
            self.kv
                .apply(&e)
                .expect("a Normal entry always has a reply")
        }
        fn run(&mut self, command: Command) -> Reply {
            self.propose(None, 0, command)
        }
        fn register(&mut self, now_ms: u64) -> u64 {
            match self.propose(None, now_ms, Command::RegisterSession) {
                Reply::SessionRegistered { id } => id,
                r => panic!("register answered {r:?}"),
            }
        }
        fn noop(&mut self) {
            let e = Entry::new(Term(1), self.next_index(), EntryKind::Noop, &[]);
            assert_eq!(self.kv.apply(&e), None);
        }
    }

    fn put(k: &str, v: &str) -> Command {
        Command::Put {
            key: k.into(),
            value: v.into(),
        }
    }

    fn del(k: &str) -> Command {
        Command::Delete { key: k.into() }
    }

    fn cas(k: &str, expect: Expect, new: Option<&str>) -> Command {
        Command::Cas {
            key: k.into(),
            expect,
            new: new.map(Into::into),
        }
    }

    fn value(kv: &Kv, k: &str) -> Option<(Vec<u8>, u64)> {
        kv.get(k.as_bytes()).map(|(v, r)| (v.to_vec(), r.0))
    }

    #[test]
    fn put_sets_value_and_revision_is_its_log_index() {
        // Goal: a put stores the value with the index of its entry as revision, and overwrites.
        let mut r = Replica::new(KvConfig::default());
        r.noop();
        assert_eq!(
            r.run(put("a", "1")),
            Reply::Put {
                revision: LogIndex(2)
            }
        );
        assert_eq!(value(&r.kv, "a"), Some((b"1".to_vec(), 2)));
        r.run(put("a", "2"));
        assert_eq!(value(&r.kv, "a"), Some((b"2".to_vec(), 3)));
        assert_eq!(r.kv.len(), 1);
        assert_eq!(r.kv.applied_index(), LogIndex(3));
    }

    #[test]
    fn delete_reports_whether_the_key_existed() {
        // Goal: delete removes the key and says whether there was one to remove.
        let mut r = Replica::new(KvConfig::default());
        r.run(put("a", "1"));
        assert_eq!(
            r.run(del("a")),
            Reply::Deleted {
                revision: LogIndex(2),
                existed: true
            }
        );
        assert_eq!(value(&r.kv, "a"), None);
        assert_eq!(
            r.run(del("a")),
            Reply::Deleted {
                revision: LogIndex(3),
                existed: false
            }
        );
        assert!(r.kv.is_empty());
    }

    #[test]
    fn cas_by_value_swaps_only_on_a_match() {
        // Goal: CAS on a value succeeds only when the current value is exactly the expected one.
        let mut r = Replica::new(KvConfig::default());
        r.run(put("a", "old"));
        assert_eq!(
            r.run(cas("a", Expect::Value(b"other".to_vec()), Some("new"))),
            Reply::CasFailed {
                current: Some((b"old".to_vec(), LogIndex(1)))
            }
        );
        assert_eq!(
            r.run(cas("a", Expect::Value(b"old".to_vec()), Some("new"))),
            Reply::CasOk {
                revision: LogIndex(3)
            }
        );
        assert_eq!(value(&r.kv, "a"), Some((b"new".to_vec(), 3)));
        // Expecting a value of an absent key fails and reports absence.
        assert_eq!(
            r.run(cas("b", Expect::Value(b"x".to_vec()), Some("y"))),
            Reply::CasFailed { current: None }
        );
    }

    #[test]
    fn cas_absent_creates_only_when_missing() {
        // Goal: Expect::Absent is create-if-not-exists.
        let mut r = Replica::new(KvConfig::default());
        assert_eq!(
            r.run(cas("a", Expect::Absent, Some("1"))),
            Reply::CasOk {
                revision: LogIndex(1)
            }
        );
        assert_eq!(
            r.run(cas("a", Expect::Absent, Some("2"))),
            Reply::CasFailed {
                current: Some((b"1".to_vec(), LogIndex(1)))
            }
        );
        assert_eq!(value(&r.kv, "a"), Some((b"1".to_vec(), 1)));
    }

    #[test]
    fn cas_by_revision_and_cas_delete() {
        // Goal: CAS on a revision matches the index of the last change; revision 0 means absent;
        // `new: None` deletes.
        let mut r = Replica::new(KvConfig::default());
        assert!(matches!(
            r.run(cas("a", Expect::Revision(0), Some("1"))),
            Reply::CasOk { .. }
        ));
        r.run(put("a", "2")); // revision 2
        assert!(matches!(
            r.run(cas("a", Expect::Revision(1), Some("x"))),
            Reply::CasFailed { .. }
        ));
        assert!(matches!(
            r.run(cas("a", Expect::Revision(0), Some("x"))),
            Reply::CasFailed { .. }
        ));
        assert_eq!(
            r.run(cas("a", Expect::Revision(2), None)),
            Reply::CasOk {
                revision: LogIndex(5)
            }
        );
        assert_eq!(value(&r.kv, "a"), None);
        assert!(matches!(
            r.run(cas("a", Expect::Revision(2), Some("y"))),
            Reply::CasFailed { current: None }
        ));
    }

    #[test]
    fn scan_pages_cover_ten_thousand_keys_exactly_once_in_order() {
        // Goal: paging with start_after and limit visits every key under a prefix once, in order,
        // and nothing outside the prefix. Method: 10,000 keys under "p/" plus neighbours "o", "q".
        let mut r = Replica::new(KvConfig::default());
        r.run(put("o", "before"));
        r.run(put("q", "after"));
        r.run(put("p", "the prefix itself is not under p/"));
        for i in 0..10_000u32 {
            // Written in a scrambled order so that order comes from the map, not from insertion.
            let n = (i.wrapping_mul(7919)) % 10_000;
            r.run(put(&format!("p/{n:05}"), &n.to_string()));
        }
        let mut seen = Vec::new();
        let mut after: Option<Vec<u8>> = None;
        let mut pages = 0;
        loop {
            let (page, more) = r.kv.scan(b"p/", after.as_deref(), 333);
            pages += 1;
            assert!(page.len() <= 333);
            for (k, v, rev) in &page {
                assert_eq!(r.kv.get(k), Some((v.as_slice(), *rev)));
            }
            seen.extend(page.iter().map(|(k, _, _)| k.clone()));
            if !more {
                break;
            }
            after = Some(
                page.last()
                    .expect("more implies a non-empty page")
                    .0
                    .clone(),
            );
            assert!(pages < 100, "scan does not terminate");
        }
        let want: Vec<Vec<u8>> = (0..10_000)
            .map(|n| format!("p/{n:05}").into_bytes())
            .collect();
        assert_eq!(seen, want);
        assert_eq!(pages, 10_000usize.div_ceil(333));
    }

    #[test]
    fn scan_edge_cases() {
        // Goal: empty prefix scans everything; start_after before the prefix starts at the prefix;
        // a limit that ends exactly at the last key reports no more; limit 0 reports whether any.
        let mut r = Replica::new(KvConfig::default());
        for k in ["a1", "a2", "b1"] {
            r.run(put(k, "v"));
        }
        let keys = |v: Vec<(Vec<u8>, Vec<u8>, LogIndex)>| -> Vec<Vec<u8>> {
            v.into_iter().map(|(k, _, _)| k).collect()
        };
        let (all, more) = r.kv.scan(b"", None, 10);
        assert_eq!(
            keys(all),
            vec![b"a1".to_vec(), b"a2".to_vec(), b"b1".to_vec()]
        );
        assert!(!more);
        let (p, more) = r.kv.scan(b"a", Some(b"0"), 2);
        assert_eq!(keys(p), vec![b"a1".to_vec(), b"a2".to_vec()]);
        assert!(!more);
        let (p, more) = r.kv.scan(b"a", Some(b"a1"), 10);
        assert_eq!(keys(p), vec![b"a2".to_vec()]);
        assert!(!more);
        let (p, more) = r.kv.scan(b"", None, 0);
        assert!(p.is_empty() && more);
        let (p, more) = r.kv.scan(b"c", None, 5);
        assert!(p.is_empty() && !more);
        let it: Vec<&[u8]> = r.kv.iter().map(|(k, _, _)| k).collect();
        assert_eq!(it, vec![&b"a1"[..], b"a2", b"b1"]);
    }

    #[test]
    fn retried_write_is_applied_once_and_answered_the_same() {
        // Goal: exactly-once (thesis §6.3): the same (session, seq) committed twice changes nothing
        // the second time and returns the first reply.
        let mut r = Replica::new(KvConfig::default());
        let id = r.register(0);
        let s1 = Some(SessionRef { id, seq: 1 });
        let first = r.propose(s1, 1, put("a", "1"));
        assert_eq!(
            first,
            Reply::Put {
                revision: LogIndex(2)
            }
        );
        r.run(put("a", "someone else"));
        let state =
            r.kv.iter()
                .map(|(k, v, rev)| (k.to_vec(), v.to_vec(), rev))
                .collect::<Vec<_>>();
        // The retry, committed again by a new leader.
        assert_eq!(r.propose(s1, 2, put("a", "1")), first);
        let after =
            r.kv.iter()
                .map(|(k, v, rev)| (k.to_vec(), v.to_vec(), rev))
                .collect::<Vec<_>>();
        assert_eq!(after, state);
        // A CAS retried after it failed keeps its failure, even though it would now succeed.
        let s2 = Some(SessionRef { id, seq: 2 });
        let failed = r.propose(s2, 3, cas("b", Expect::Value(b"x".to_vec()), Some("y")));
        assert_eq!(failed, Reply::CasFailed { current: None });
        r.run(put("b", "x"));
        assert_eq!(
            r.propose(s2, 4, cas("b", Expect::Value(b"x".to_vec()), Some("y"))),
            failed
        );
        assert_eq!(value(&r.kv, "b").map(|(v, _)| v), Some(b"x".to_vec()));
    }

    #[test]
    fn older_seq_is_stale_and_unknown_session_is_expired() {
        // Goal: a seq below the last applied one is refused as stale; an unknown id as expired;
        // neither is applied; gaps in seq are allowed; seq 0 is refused.
        let mut r = Replica::new(KvConfig::default());
        let id = r.register(0);
        r.propose(Some(SessionRef { id, seq: 5 }), 0, put("a", "5"));
        assert_eq!(
            r.propose(Some(SessionRef { id, seq: 4 }), 0, put("a", "4")),
            Reply::StaleRequest
        );
        assert_eq!(
            r.propose(Some(SessionRef { id: 999, seq: 1 }), 0, put("a", "x")),
            Reply::SessionExpired
        );
        assert!(matches!(
            r.propose(Some(SessionRef { id, seq: 0 }), 0, put("a", "0")),
            Reply::Invalid(_)
        ));
        assert_eq!(value(&r.kv, "a").map(|(v, _)| v), Some(b"5".to_vec()));
        assert!(matches!(
            r.propose(Some(SessionRef { id, seq: 9 }), 0, put("a", "9")),
            Reply::Put { .. }
        ));
    }

    #[test]
    fn session_expires_by_log_time_not_wall_time() {
        // Goal: expiry follows the largest now_ms carried in applied proposals: no amount of real
        // time passing expires a session, and a proposal with an older now_ms cannot revive one.
        let cfg = KvConfig {
            session_ttl_ms: 1000,
            ..KvConfig::default()
        };
        let mut r = Replica::new(cfg);
        let id = r.register(10_000);
        // Activity within the TTL keeps it alive; the clock does not go back.
        let ok = r.propose(Some(SessionRef { id, seq: 1 }), 10_900, put("a", "1"));
        assert!(matches!(ok, Reply::Put { .. }));
        r.run(put("x", "clock stays at 10900")); // now_ms 0: the clock does not go back
        assert_eq!(r.kv.clock_ms(), 10_900);
        // Another client's proposal moves log time past the TTL: the sweep removes the session.
        r.propose(None, 11_901, put("other", "v"));
        assert_eq!(r.kv.session_count(), 0);
        assert_eq!(
            r.propose(Some(SessionRef { id, seq: 2 }), 11_901, put("a", "2")),
            Reply::SessionExpired
        );
        // Exactly at the TTL a session is still alive.
        let id2 = r.register(20_000);
        assert!(matches!(
            r.propose(Some(SessionRef { id: id2, seq: 1 }), 21_000, put("b", "1")),
            Reply::Put { .. }
        ));
        assert_eq!(r.kv.session_count(), 1);
    }

    #[test]
    fn registering_beyond_max_sessions_evicts_the_least_recently_active() {
        // Goal: the session table is bounded and eviction order is deterministic (LRU, then id).
        let cfg = KvConfig {
            max_sessions: 3,
            ..KvConfig::default()
        };
        let mut r = Replica::new(cfg);
        let a = r.register(1);
        let b = r.register(1);
        let c = r.register(1);
        // Touch a: b is now the least recently active (same time as c, lower id).
        r.propose(Some(SessionRef { id: a, seq: 1 }), 2, put("k", "v"));
        let d = r.register(3);
        assert_eq!(r.kv.session_count(), 3);
        assert_eq!(
            r.propose(Some(SessionRef { id: b, seq: 1 }), 3, put("k", "v")),
            Reply::SessionExpired
        );
        for id in [a, c, d] {
            assert!(!matches!(
                r.propose(Some(SessionRef { id, seq: 7 }), 3, put("k", "v")),
                Reply::SessionExpired
            ));
        }
    }

    #[test]
    fn session_id_is_the_registering_entry_index() {
        // Goal: ids are log indexes, so they are unique and identical on every replica.
        let mut r = Replica::new(KvConfig::default());
        r.noop();
        r.noop();
        assert_eq!(r.register(0), 3);
        assert_eq!(r.register(0), 4);
    }
}
