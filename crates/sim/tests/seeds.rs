//! The simulation over a budget of seeds, as CI runs it. `CAIRN_SIM_SEEDS` sets how many
//! (default 10000) and `CAIRN_SIM_START` the first, e.g. to explore new seeds nightly:
//!
//! ```sh
//! CAIRN_SIM_SEEDS=20000 CAIRN_SIM_START=1000000 cargo test --release -p cairn-sim --test seeds
//! ```

use cairn_sim::{Options, Report, reproduce_command, run};

fn env_number(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(text) => text
            .parse()
            .unwrap_or_else(|e| panic!("{name}={text:?} is not a number: {e}")),
        Err(_) => default,
    }
}

#[test]
fn every_seed_stays_safe_settles_and_is_linearizable() {
    let seeds = env_number("CAIRN_SIM_SEEDS", 10_000);
    let start = env_number("CAIRN_SIM_START", 0);
    let options = Options::default();
    let mut total = Report::default();
    for seed in start..start + seeds {
        match run(seed, &options) {
            Ok(report) => total.accumulate(&report),
            Err(failure) => panic!(
                "{failure}\nreproduce: {}",
                reproduce_command(seed, &options)
            ),
        }
    }
    eprintln!("{seeds} seeds from {start}: {total:?}");
    // The runs must have been hard, or passing them means little.
    if seeds >= 50 {
        assert!(total.elections > seeds, "few elections: {total:?}");
        assert!(total.crashes > seeds, "few crashes: {total:?}");
        assert!(total.pauses > seeds / 2, "few pauses: {total:?}");
        assert!(
            total.membership_changes > seeds / 2,
            "few membership changes: {total:?}"
        );
        assert!(total.partitions > seeds / 2, "few partitions: {total:?}");
        assert!(
            total.leader_transfers > seeds / 10,
            "few leader transfers: {total:?}"
        );
        assert!(
            total.snapshots_installed > seeds / 10,
            "few snapshot installs: {total:?}"
        );
        assert!(total.messages_dropped > 0 && total.operations_unknown > 0);
        assert!(
            total.operations_checked > 20 * seeds,
            "short histories: {total:?}"
        );
    }
}

#[test]
fn a_seed_replays_exactly_and_another_seed_differs() {
    let options = Options::default();
    let first = run(11, &options).expect("seed 11 passes");
    let again = run(11, &options).expect("seed 11 passes");
    assert_eq!(first, again);
    let other = run(12, &options).expect("seed 12 passes");
    assert_ne!(first, other);
}

#[test]
fn three_and_five_member_clusters_both_run() {
    for members in [3, 5] {
        let options = Options {
            members: Some(members),
            ..Options::default()
        };
        let report = run(3, &options).expect("seed 3 passes");
        assert_eq!(report.members, members);
    }
}
