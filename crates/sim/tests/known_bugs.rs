//! Bugs the simulation found in Cairn that are not fixed yet (issue #4). Each test turns one
//! on (`KnownBugs`) and pins the failure, so CI keeps showing it. When Cairn is fixed the
//! test fails: then the bug's switch goes, and every run covers the case.

use cairn_sim::{KnownBugs, Options, Violation, run};

/// A member crashes while installing a leader's backend, after `Store::install` renamed the
/// file into place and before `set_meta(META_INSTALLED_SNAPSHOT, index)` ran. The backend
/// now holds the leader's applied index (ahead of the snapshot's index, since the leader kept
/// applying before it exported) and the leader's own `installed_snapshot` metadata. On
/// restart `RaftLogStore::open` finds `applied` past the WAL's last index while
/// `installed_snapshot` does not name the WAL's snapshot, and refuses to start: "the WAL is
/// missing synced entries". The member stays down for good.
#[test]
fn a_crash_inside_a_backend_install_keeps_the_member_from_restarting() {
    let options = Options {
        known_bugs: KnownBugs {
            crash_inside_backend_install: true,
            ..KnownBugs::default()
        },
        ..Options::default()
    };
    let failure = (0..300)
        .find_map(|seed| run(seed, &options).err())
        .expect("some seed crashes inside an install whose backend is ahead of its snapshot");
    assert!(
        matches!(
            &failure.violation,
            Violation::CorruptLog { reason, .. } if reason.contains("missing synced entries")
        ),
        "{failure}"
    );
}

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
            ..KnownBugs::default()
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
