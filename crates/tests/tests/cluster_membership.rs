//! Membership changes under load, driven by the real etcdctl: a learner is added, refused
//! promotion while it has not started, started, promoted once it has caught up, and then
//! the leader is removed. etcdctl's outputs (`member add`, `promote`, `remove`, and the
//! `member list` table) are checked at each step (the messages print IDs as `%16x`, padded
//! with spaces, the table as `%x`), and the clients' history, recorded
//! throughout, must stay linearizable with no acknowledged write lost.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use cairn_tests::cluster::{Cluster, ClusterOptions};
use cairn_tests::workload::{Workload, WorkloadOptions, client_runtime};
use cairn_tests::{assert_error, ok_stdout};
use serde_json::Value;

const NOT_IN_SYNC: &str =
    "etcdserver: can only promote a learner member which is in sync with leader";
const ACKS_PER_PHASE: usize = 40;
const PHASE_TIMEOUT: Duration = Duration::from_secs(30);
const LEADER_TIMEOUT: Duration = Duration::from_secs(15);

/// One row of `member list -w table`, cells trimmed.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Row {
    id: String,
    status: String,
    name: String,
    peer_addrs: String,
    client_addrs: String,
    is_learner: String,
}

/// Parses etcdctl's table, checking its frame and header on the way.
fn member_table(cluster: &Cluster) -> BTreeSet<Row> {
    let table = ok_stdout(&cluster.etcdctl(&["member", "list", "-w", "table"]));
    let lines: Vec<&str> = table.lines().collect();
    let border = lines[0];
    assert!(
        border.starts_with('+') && border.chars().all(|c| c == '+' || c == '-'),
        "table border: {table}"
    );
    assert_eq!(lines[2], border, "{table}");
    assert_eq!(lines.last(), Some(&border), "{table}");
    let cells = |line: &str| -> Vec<String> {
        let inner = line
            .strip_prefix('|')
            .and_then(|l| l.strip_suffix('|'))
            .unwrap_or_else(|| panic!("table row {line:?}"));
        inner.split('|').map(|c| c.trim().to_owned()).collect()
    };
    assert_eq!(
        cells(lines[1]),
        [
            "ID",
            "STATUS",
            "NAME",
            "PEER ADDRS",
            "CLIENT ADDRS",
            "IS LEARNER"
        ]
    );
    lines[3..lines.len() - 1]
        .iter()
        .map(|line| {
            let c = cells(line);
            assert_eq!(c.len(), 6, "{line}");
            Row {
                id: c[0].clone(),
                status: c[1].clone(),
                name: c[2].clone(),
                peer_addrs: c[3].clone(),
                client_addrs: c[4].clone(),
                is_learner: c[5].clone(),
            }
        })
        .collect()
}

/// The row a started member has.
fn started_row(cluster: &Cluster, index: usize, learner: bool) -> Row {
    let member = cluster.member(index);
    Row {
        id: format!("{:x}", member.id().expect("member ID known")),
        status: "started".to_owned(),
        name: member.name().to_owned(),
        peer_addrs: member.peer_url(),
        client_addrs: member.url(),
        is_learner: learner.to_string(),
    }
}

#[test]
fn a_learner_is_promoted_once_in_sync_and_the_leader_is_removed_under_load() {
    let started = Instant::now();
    let mut cluster = Cluster::start(ClusterOptions::default());
    let cluster_id = {
        let list: Value = serde_json::from_str(&ok_stdout(
            &cluster.etcdctl(&["member", "list", "-w", "json"]),
        ))
        .expect("member list JSON");
        list["header"]["cluster_id"].as_u64().expect("cluster_id")
    };
    let runtime = client_runtime();
    let urls: Vec<String> = (0..3).map(|i| cluster.member(i).url()).collect();
    let workload = Workload::start(runtime.handle(), &urls, WorkloadOptions::default());
    workload.wait_for_acks(ACKS_PER_PHASE, PHASE_TIMEOUT);

    // A learner that has not started cannot be in sync.
    let (learner, added) = cluster.announce_member(true);
    let learner_id = cluster.member(learner).id().expect("ID from add");
    let peer_url = cluster.member(learner).peer_url();
    let mut lines = added.lines();
    assert_eq!(
        lines.next(),
        Some(format!("Member {learner_id:16x} added to cluster {cluster_id:16x}").as_str()),
        "{added}"
    );
    assert_eq!(lines.next(), Some(""), "{added}");
    assert_eq!(lines.next(), Some("ETCD_NAME=\"m3\""), "{added}");
    let initial_cluster: BTreeSet<String> = lines
        .next()
        .and_then(|l| l.strip_prefix("ETCD_INITIAL_CLUSTER=\""))
        .and_then(|l| l.strip_suffix('"'))
        .unwrap_or_else(|| panic!("ETCD_INITIAL_CLUSTER line in {added}"))
        .split(',')
        .map(str::to_owned)
        .collect();
    let expected: BTreeSet<String> = (0..4)
        .map(|i| format!("m{i}={}", cluster.member(i).peer_url()))
        .collect();
    assert_eq!(initial_cluster, expected, "{added}");
    assert_eq!(
        lines.collect::<Vec<_>>(),
        [
            format!("ETCD_INITIAL_ADVERTISE_PEER_URLS=\"{peer_url}\""),
            "ETCD_INITIAL_CLUSTER_STATE=\"existing\"".to_owned(),
        ],
        "{added}"
    );
    let mut rows: BTreeSet<Row> = (0..3).map(|i| started_row(&cluster, i, false)).collect();
    rows.insert(Row {
        id: format!("{learner_id:x}"),
        status: "unstarted".to_owned(),
        name: String::new(),
        peer_addrs: peer_url.clone(),
        client_addrs: String::new(),
        is_learner: "true".to_owned(),
    });
    assert_eq!(member_table(&cluster), rows);
    assert_error(&cluster.promote_member(learner), NOT_IN_SYNC);
    workload.wait_for_acks(ACKS_PER_PHASE, PHASE_TIMEOUT);

    // Started, it publishes its name and client URL (etcd serves clients only after that),
    // catches up, and can then be promoted.
    cluster.start_member(learner);
    let mut rows: BTreeSet<Row> = (0..3).map(|i| started_row(&cluster, i, false)).collect();
    rows.insert(started_row(&cluster, learner, true));
    assert_eq!(member_table(&cluster), rows);
    let deadline = Instant::now() + PHASE_TIMEOUT;
    let promoted = loop {
        let output = cluster.promote_member(learner);
        if output.status.success() {
            break ok_stdout(&output);
        }
        assert_error(&output, NOT_IN_SYNC);
        assert!(
            Instant::now() < deadline,
            "the learner did not catch up within {PHASE_TIMEOUT:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        promoted,
        format!("Member {learner_id:16x} promoted in cluster {cluster_id:16x}\n")
    );
    let rows: BTreeSet<Row> = (0..4).map(|i| started_row(&cluster, i, false)).collect();
    assert_eq!(member_table(&cluster), rows);
    workload.wait_for_acks(ACKS_PER_PHASE, PHASE_TIMEOUT);

    // The leader goes; the other three carry on.
    let leader = cluster.wait_for_leader(LEADER_TIMEOUT);
    let leader_id = cluster.member(leader).id().expect("ID known");
    let removed = cluster.remove_member(leader);
    assert_eq!(
        removed,
        format!("Member {leader_id:16x} removed from cluster {cluster_id:16x}\n")
    );
    cluster.wait_for_new_leader(leader, LEADER_TIMEOUT);
    let rows: BTreeSet<Row> = (0..4)
        .filter(|&i| i != leader)
        .map(|i| started_row(&cluster, i, false))
        .collect();
    assert_eq!(member_table(&cluster), rows);
    workload.wait_for_acks(ACKS_PER_PHASE, PHASE_TIMEOUT);

    // Read back through the new member: it has everything.
    let report = workload.stop_and_read_back(&cluster.member(learner).url());
    cluster
        .wait_converged(PHASE_TIMEOUT)
        .expect("every member ends with the same data");
    report.assert_no_lost_writes();
    let summary = report.history.assert_linearizable();
    eprintln!("{summary:?}; {:?} in all", started.elapsed());
}
