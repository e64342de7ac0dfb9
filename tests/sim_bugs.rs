//! Each known-bug switch, of the Raft core (`raft::Bugs`) and of the host (`host::Bugs`), is
//! caught by the simulator within a bounded number of seeds of its fault profile, and by the
//! property it breaks; each profile passes with its switch off. Needs the `simbugs` feature (on
//! for tests through the self dev-dependency).

use zatt::sim::faults::{BugName, BUGS};
use zatt::sim::{describe_failures, run_seeds, Sim, SimOptions};

/// Runs seeds from 1 until the first failure (at most `max_seeds`) and asserts that it is one of
/// the failures this bug produces.
fn bug_is_caught(bug: BugName, voters: usize, max_seeds: u64) {
    bug_is_caught_with(bug, voters, 4, 15_000, max_seeds)
}

fn bug_is_caught_with(bug: BugName, voters: usize, clients: usize, steps: u64, max_seeds: u64) {
    for seed in 1..=max_seeds {
        let opts = SimOptions {
            voters: Some(voters),
            bug: Some(bug),
            steps,
            clients,
            ..SimOptions::new(seed)
        };
        let r = Sim::run(opts.clone());
        if let Some(f) = r.failure {
            assert!(
                bug.expected().contains(&f.kind),
                "bug {} was caught as {} (expected one of {:?}): {}\n  reproduce: {}",
                bug.name(),
                f.kind,
                bug.expected(),
                f.detail,
                opts.reproduce_command()
            );
            return;
        }
    }
    panic!("bug {} not caught within {max_seeds} seeds", bug.name());
}

// Goal: Figure 8 (committing an old term's entry by counting) is caught. Method: leader churn
// (new leaders crash within milliseconds) with one entry per message and eight writing clients,
// so that followers hold partial suffixes of several terms; caught as a lost committed entry.
#[test]
fn commit_old_term_by_count_is_caught() {
    bug_is_caught_with(BugName::CommitOldTermByCount, 3, 8, 30_000, 300);
}

// Goal: acknowledging before the sync is caught. Method: slow disks and crashes; the ack check
// compares every ack with the sender's durable state.
#[test]
fn ack_before_sync_is_caught() {
    bug_is_caught(BugName::AckBeforeSync, 3, 200);
}

// Goal: forgetting the vote on restart is caught. Method: crashes right after granting votes,
// with duplicated RequestVotes arriving after the restart.
#[test]
fn forget_vote_on_restart_is_caught() {
    bug_is_caught(BugName::ForgetVoteOnRestart, 3, 200);
}

// Goal: reads served without confirming leadership are caught. Method: partitions isolate the
// leader while clients still read from it; the history is not linearizable.
#[test]
fn read_without_confirmation_is_caught() {
    bug_is_caught(BugName::ReadWithoutConfirmation, 3, 300);
}

// Goal: concurrent membership changes are caught. Method: bursts of changes proposed at once.
#[test]
fn concurrent_conf_changes_are_caught() {
    bug_is_caught(BugName::ConcurrentConfChanges, 3, 200);
}

// Goal: a host that sends acknowledgements and votes (`messages_after_persist`) as their batch
// goes to disk, not once it is durable, is caught. Method: slow disks; the ack check compares
// every message with the sender's durable state as it leaves.
#[test]
fn host_send_after_persist_early_is_caught() {
    bug_is_caught(BugName::HostSendAfterPersistEarly, 3, 300);
}

// Goal: a leader that counts its own write as durable when it hands it to the disk, and so
// answers the client before its disk has it, is caught. Method: slow disks, one entry per
// message, leaders crashing right after answering and coming back quickly; caught when a node
// that never had the answered entry is elected.
#[test]
fn host_reply_before_durable_is_caught() {
    bug_is_caught(BugName::HostReplyBeforeDurable, 3, 300);
}

// Goal: a host that answers a linearizable read once its round is confirmed but before its
// dictionary has applied the read's index is caught. Method: a bigger dictionary snapshotted
// often a key per turn (committed entries held back meanwhile), frequent leadership transfers
// and read-mostly clients; caught as a stale read.
#[test]
fn host_read_before_applied_is_caught() {
    bug_is_caught(BugName::HostReadBeforeApplied, 3, 300);
}

// Goal: a host that lets a watcher behind an installed snapshot go on from the snapshot's
// index (skipping the changes it covers) instead of ending it with `Compacted` is caught.
// Method: nodes left behind by partitions and crashes catch up by snapshot while watched; the
// watch check finds the gap against the committed log.
#[test]
fn host_watch_skips_snapshot_is_caught() {
    bug_is_caught(BugName::HostWatchSkipsSnapshot, 3, 100);
}

// Goal: a host that starts a watch from a revision older than its history at the oldest
// change kept, instead of refusing it with `Compacted`, is caught. Method: small histories
// (some seeds keep 16 changes) and watch connections broken by lossy client links, so that
// watchers resume from revisions already trimmed.
#[test]
fn host_watch_starts_past_compaction_is_caught() {
    bug_is_caught(BugName::HostWatchStartsPastCompaction, 3, 100);
}

// Goal: a node that votes by a log whose damaged tail recovery cut, forgetting that it may
// have acknowledged the entries it lost, is caught. Method: followers lose their last synced
// records at restarts while leaders crash; caught when a leader without committed entries wins
// with such a vote.
#[test]
fn ignore_lost_entries_is_caught() {
    bug_is_caught(BugName::IgnoreLostEntries, 3, 300);
}

// Goal: a server whose disk was lost that comes back as the member it was (bootstrapping again
// without asking, and taken back by its peers) is caught. Method: voters lose their disks while
// leaders crash and followers sit at different points of the log; caught when the forgotten
// votes and acknowledgements elect a leader without committed entries.
#[test]
fn host_forget_lost_storage_is_caught() {
    bug_is_caught(BugName::HostForgetLostStorage, 3, 300);
}

// Goal: the failures above come from the bugs, not from their harsher fault profiles. Method: each
// bug's profile with the switch off (a control run) passes on 20 seeds.
#[test]
fn bug_profiles_pass_with_the_switch_off() {
    for bug in BUGS {
        let base = SimOptions {
            voters: Some(3),
            bug: Some(bug),
            control: true,
            steps: 15_000,
            ..SimOptions::new(1)
        };
        let failed = run_seeds(&base, 1, 20);
        assert!(
            failed.is_empty(),
            "control run of {} failed:\n{}",
            bug.name(),
            describe_failures(&failed)
        );
    }
}
