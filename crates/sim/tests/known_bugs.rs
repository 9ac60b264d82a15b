//! Bugs the simulation found in Cairn and that are not fixed yet (issue #4). Each test pins
//! the failure, so CI keeps showing it; when the bug is fixed the test fails, and the fault
//! that exposes it should then be switched on in every run.

use cairn_sim::{Options, Violation, run};

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
        crash_inside_backend_install: true,
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
