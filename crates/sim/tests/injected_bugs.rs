//! A check that cannot fail proves nothing: each test plants one bug in the simulated
//! cluster and expects some seed to fail, with the violation that bug must cause, and the
//! failure to replay exactly from its seed.

use cairn_sim::{Failure, InjectedBug, Options, Violation, run};

/// Runs seeds from 0 until one fails; panics if none of the first `seeds_max` does.
fn first_failure(bug: InjectedBug, seeds_max: u64) -> Failure {
    let options = Options {
        injected_bug: Some(bug),
        ..Options::default()
    };
    for seed in 0..seeds_max {
        if let Err(failure) = run(seed, &options) {
            let replayed = run(seed, &options).expect_err("a failing seed fails again");
            assert_eq!(replayed, failure, "seed {seed} replays differently");
            return failure;
        }
    }
    panic!("with {bug:?}, none of seeds 0..{seeds_max} failed");
}

/// A member that loses what it acknowledged: raft-rs trips over it (a leader's commit index
/// past the follower's log, a forgotten term), `RaftLogStore::open` finds the backend ahead
/// of the WAL, or the log changes under a committed index.
fn is_lost_acknowledged_write(violation: &Violation) -> bool {
    match violation {
        Violation::RaftPanicked { .. } => true,
        Violation::CorruptLog { reason, .. } => reason.contains("missing synced entries"),
        Violation::CommittedEntryChanged { .. }
        | Violation::TwoLeaders { .. }
        | Violation::StateMachinesDiverged { .. }
        | Violation::NotLinearizable { .. } => true,
        _ => false,
    }
}

#[test]
fn a_disk_that_forgets_synced_writes_is_caught() {
    let failure = first_failure(InjectedBug::DiskForgetsSyncedWrites, 100);
    assert!(is_lost_acknowledged_write(&failure.violation), "{failure}");
}

#[test]
fn acknowledging_before_the_sync_is_caught() {
    let failure = first_failure(InjectedBug::AcknowledgeBeforeSync, 300);
    assert!(is_lost_acknowledged_write(&failure.violation), "{failure}");
}

#[test]
fn followers_reading_their_own_state_are_caught_by_the_checker() {
    let failure = first_failure(InjectedBug::StaleFollowerReads, 100);
    assert!(
        matches!(failure.violation, Violation::NotLinearizable { .. }),
        "{failure}"
    );
}

#[test]
fn a_member_whose_state_machine_diverges_is_caught() {
    let failure = first_failure(InjectedBug::StateMachineDivergence, 10);
    assert!(
        matches!(failure.violation, Violation::StateMachinesDiverged { .. }),
        "{failure}"
    );
}

#[test]
fn a_doctored_history_is_refused_by_the_checker() {
    let failure = first_failure(InjectedBug::ForgedReadInHistory, 10);
    assert!(
        matches!(failure.violation, Violation::NotLinearizable { .. }),
        "{failure}"
    );
}
