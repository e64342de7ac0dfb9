//! Watch streams in the simulator: every run has watchers (on every key, on the operation keys,
//! on one key) following the changes from whichever node they reach, resuming elsewhere when
//! their node crashes or their connection breaks, and every frame they receive is checked
//! against the committed log (order, no gap, no repeat, the committed change). The per-profile
//! runs in `sim_seeds.rs` fail on any such violation; this file shows the watchers are really
//! exercised under each profile: events checked, resumptions, and `Compacted` answers (some
//! runs keep a history of 16 changes).

use zatt::sim::faults::PROFILES;
use zatt::sim::{describe_failures, Sim, SimOptions};

// Goal: under every fault profile, watch streams are checked, resumed and compacted. Method:
// 12 seeds per profile; each must pass, and over them the watchers must have received events,
// resumed on other connections and met `Compacted`.
#[test]
fn watchers_are_exercised_and_checked_under_every_profile() {
    for profile in PROFILES {
        let (mut events, mut resumes, mut compacted) = (0, 0, 0);
        for seed in 1..=12 {
            let opts = SimOptions {
                profile: Some(profile),
                steps: 15_000,
                ..SimOptions::new(seed)
            };
            let r = Sim::run(opts.clone());
            if r.failure.is_some() {
                let failed = [(opts, r)];
                panic!("profile {}: {}", profile.name(), describe_failures(&failed));
            }
            events += r.watch_events;
            resumes += r.watch_resumes;
            compacted += r.watch_compacted;
        }
        assert!(events > 1000, "{}: {events} watch events", profile.name());
        assert!(resumes > 0, "{}: no watch resumed", profile.name());
        assert!(compacted > 0, "{}: no watch compacted", profile.name());
    }
}
