//! A removed member can never come back. Its peers keep its ID (etcd's `members_removed`) and
//! refuse its traffic; started again on its old data dir, it learns it was removed and stops
//! with etcd's words, while the two members left keep serving. Once with the member removed
//! while it runs (it may apply its own removal before it is killed), once with it removed
//! while it is down (it can only learn from its peers' refusal).

use std::collections::BTreeSet;
use std::process::ExitStatus;
use std::time::Duration;

use cairn_tests::cluster::{Cluster, ClusterOptions};
use cairn_tests::{Target, etcdctl, ok_stdout};
use serde_json::Value;

const LEADER_TIMEOUT: Duration = Duration::from_secs(15);
/// A bound on how long the removed member may run, not a measure: it stops within seconds.
const EXIT_TIMEOUT: Duration = Duration::from_secs(60);
const REMOVED_MESSAGE: &str = "the member has been permanently removed from the cluster";
const DATA_DIR_MESSAGE: &str = "the data-dir used by this member must be removed";

/// How each target ends when it finds itself removed.
fn assert_stopped_for_good(target: Target, status: ExitStatus, log: &str) {
    for message in [REMOVED_MESSAGE, DATA_DIR_MESSAGE] {
        assert!(
            log.contains(message),
            "{target:?}: {message:?} missing from the removed member's output:\n{log}"
        );
    }
    match target {
        // etcd 3.4 stops its server and leaves through its usual clean exit.
        Target::Etcd => assert!(status.success(), "etcd exited with {status}:\n{log}"),
        // cairn fails, so that a supervisor does not take the stop for a clean shutdown.
        Target::Cairn => assert_eq!(status.code(), Some(1), "{log}"),
    }
}

fn member_ids(cluster: &Cluster) -> BTreeSet<u64> {
    let list: Value = serde_json::from_str(&ok_stdout(
        &cluster.etcdctl(&["member", "list", "-w", "json"]),
    ))
    .expect("member list JSON");
    list["members"]
        .as_array()
        .expect("members array")
        .iter()
        .map(|m| m["ID"].as_u64().expect("member ID"))
        .collect()
}

fn removed_member_stops_when_restarted(removed_while_down: bool) {
    let mut cluster = Cluster::start(ClusterOptions::default());
    let target = cluster.target();
    let leader = cluster.wait_for_leader(LEADER_TIMEOUT);
    let removed = cluster.follower_of(leader);
    if removed_while_down {
        cluster.kill9(removed);
    }
    // Kills the member if it still runs.
    cluster.remove_member(removed);

    let (status, log) = cluster.run_until_exit(removed, EXIT_TIMEOUT);
    assert_stopped_for_good(target, status, &log);

    // The two left are the whole cluster, and serve linearizable writes and reads.
    let survivors = cluster.running();
    assert_eq!(survivors.len(), 2, "{survivors:?}");
    let expected: BTreeSet<u64> = survivors
        .iter()
        .map(|&i| cluster.member(i).id().expect("member ID known"))
        .collect();
    assert_eq!(member_ids(&cluster), expected);
    ok_stdout(&cluster.etcdctl(&["put", "after-removal", "v"]));
    for index in survivors {
        let value = ok_stdout(&etcdctl(
            &cluster.member(index).endpoint(),
            &["get", "after-removal", "--print-value-only"],
        ));
        assert_eq!(value, "v\n", "{}", cluster.member(index).name());
    }
}

#[test]
fn a_member_removed_while_running_stops_when_restarted_on_its_data_dir() {
    removed_member_stops_when_restarted(false);
}

#[test]
fn a_member_removed_while_down_is_refused_by_its_peers_and_stops() {
    removed_member_stops_when_restarted(true);
}
