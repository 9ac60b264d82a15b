//! Crashes under load: six clients (two per member) put, read, delete and compare-and-set a
//! few keys while the leader is killed with SIGKILL and restarted, then a follower. The
//! history must be linearizable, every acknowledged write must be there at the end, and all
//! members must end with the same revision and the same data.

use std::time::{Duration, Instant};

use cairn_tests::cluster::{Cluster, ClusterOptions};
use cairn_tests::workload::{Workload, WorkloadOptions, client_runtime};

/// Operations acknowledged in each phase before the next fault: enough that every fault hits
/// requests in flight, few enough that the history stays quick to check.
const ACKS_PER_PHASE: usize = 60;
const PHASE_TIMEOUT: Duration = Duration::from_secs(30);
const LEADER_TIMEOUT: Duration = Duration::from_secs(15);
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(20);

#[test]
fn kill_9_of_the_leader_then_of_a_follower_loses_no_acknowledged_write() {
    let started = Instant::now();
    let mut cluster = Cluster::start(ClusterOptions::default());
    let runtime = client_runtime();
    let urls: Vec<String> = (0..6).map(|i| cluster.member(i % 3).url()).collect();
    let workload = Workload::start(runtime.handle(), &urls, WorkloadOptions::default());
    workload.wait_for_acks(ACKS_PER_PHASE, PHASE_TIMEOUT);

    let old_leader = cluster.wait_for_leader(LEADER_TIMEOUT);
    cluster.kill9(old_leader);
    let leader = cluster.wait_for_new_leader(old_leader, LEADER_TIMEOUT);
    // The two survivors carry on alone.
    workload.wait_for_acks(ACKS_PER_PHASE, PHASE_TIMEOUT);
    cluster.restart(old_leader);
    workload.wait_for_acks(ACKS_PER_PHASE, PHASE_TIMEOUT);

    let leader = cluster.leader().unwrap_or(leader);
    let follower = cluster.follower_of(leader);
    cluster.kill9(follower);
    workload.wait_for_acks(ACKS_PER_PHASE, PHASE_TIMEOUT);
    cluster.restart(follower);
    workload.wait_for_acks(ACKS_PER_PHASE, PHASE_TIMEOUT);

    // Read back through the member that was killed first: it must have everything.
    let report = workload.stop_and_read_back(&cluster.member(old_leader).url());
    let converged = cluster
        .wait_converged(CONVERGE_TIMEOUT)
        .expect("every member ends with the same data");
    report.assert_no_lost_writes();
    let summary = report.history.assert_linearizable();
    eprintln!(
        "{} acknowledged ledger writes, all there; {converged:?}; {summary:?}; {:?} in all",
        report.ledger_acknowledged(),
        started.elapsed()
    );
}
