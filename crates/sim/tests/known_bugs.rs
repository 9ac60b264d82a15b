//! Bugs the simulation found in Cairn, fixed there since (issue #4). Each test brings the old
//! behaviour back (`KnownBugs`) and pins the failure it caused, so the check that caught it
//! is shown to still catch it, and checks the fixed behaviour passes on the same seed.

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
/// Seed 924 shows it (found with `cargo run --release -p cairn-sim -- --seeds 30000
/// --keep-going --known-bug unsynced-membership`; search again if the simulation changes).
#[test]
fn a_membership_change_recorded_after_the_sync_is_lost_in_a_crash() {
    let seed = 924;
    let buggy = Options {
        known_bugs: KnownBugs {
            unsynced_membership: true,
        },
        ..Options::default()
    };
    let failure = run(seed, &buggy).expect_err("seed 924 loses a membership change");
    assert!(
        matches!(failure.violation, Violation::MembershipDiverged { .. }),
        "{failure}"
    );
    run(seed, &Options::default()).expect("syncing the record at once fixes it");
}
