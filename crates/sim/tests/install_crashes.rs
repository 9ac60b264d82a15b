//! A crash inside the install of a leader's backend (issue #4). Cairn used to rename the
//! received file into place and record its snapshot index after; a crash in between left a
//! backend ahead of the WAL with no record of why, and the member never restarted (the
//! simulation found it: seed 11). The stamp now travels inside the file, so a member that
//! crashes right after the rename restarts and rejoins.

use cairn_sim::{Options, run};

#[test]
fn members_that_crash_inside_every_backend_install_restart_and_rejoin() {
    let options = Options {
        crash_inside_installs: true,
        ..Options::default()
    };
    let mut installs = 0;
    for seed in 0..300 {
        let report = run(seed, &options).unwrap_or_else(|failure| panic!("{failure}"));
        installs += report.snapshots_installed;
    }
    assert!(installs > 0, "some runs crash inside an install");
}
