//! Bugs the simulation found in Cairn, fixed there since (issue #4). Where it can, a test
//! brings the old behaviour back (`KnownBugs`) and pins the failure it caused, so the check
//! that caught it is shown to still catch it, and checks the fixed behaviour passes on the
//! same seed.

use cairn_sim::{KnownBugs, Options, Violation, run};

/// node.rs hands committed entries over twice per Ready: before the sync, and after it, from
/// the light ready. A membership change in the second batch is applied to raft and recorded
/// in the WAL (`set_conf_state`) after the sync, so the record waits for the next Ready's
/// sync, up to a tick away. Meanwhile the apply loop may persist the backend past the
/// change. A crash then loses the record but not the backend; on restart raft starts from
/// the backend's applied index, never hands the change over again, and this member keeps the
/// old membership for good: it counts votes and quorums over the wrong voters (two leaders
/// in a term become possible) and waits on removed members.
///
/// Seed 1419 shows it (found with `cargo run --release -p cairn-sim -- --seeds 30000
/// --keep-going --known-bug unsynced-membership`; search again if the simulation changes).
#[test]
fn a_membership_change_recorded_after_the_sync_is_lost_in_a_crash() {
    let seed = 1419;
    let buggy = Options {
        known_bugs: KnownBugs {
            unsynced_membership: true,
        },
        ..Options::default()
    };
    let failure = run(seed, &buggy).expect_err("seed 1419 loses a membership change");
    assert!(
        matches!(failure.violation, Violation::MembershipDiverged { .. }),
        "{failure}"
    );
    run(seed, &Options::default()).expect("syncing the record at once fixes it");
}

/// A snapshot keeps every WAL segment holding an entry past it, even a stale one a later
/// leader overwrote, and `RaftLogStore` replayed such a log as corrupt ("entry 4 precedes the
/// first entry 5"): the member could not restart. The fix lives in the store the simulation
/// runs, so there is no switch to bring the old behaviour back; these seeds, which found it,
/// stay as a regression check, and log_store.rs pins the case in a unit test.
#[test]
fn members_restart_on_a_log_rewritten_below_entries_a_snapshot_kept() {
    for seed in [1375, 3943] {
        run(seed, &Options::default()).unwrap_or_else(|failure| panic!("{failure}"));
    }
}
