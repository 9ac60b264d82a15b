//! A paused leader must not serve stale reads when it resumes. The leader is stopped with
//! SIGSTOP while clients keep working; the other two members elect a new leader and accept a
//! write of a marker key; the old leader gets SIGCONT and, at once, a linearizable read of the
//! marker through a connection it accepted before it was paused. That read must see the
//! write made meanwhile, or fail — never the value from before the pause. Twice, so the
//! second round pauses a leader that was itself elected after a pause. Everything, the
//! marker's writes and reads included, is recorded and checked for linearizability.

use std::time::{Duration, Instant};

use cairn_tests::cluster::{Cluster, ClusterOptions};
use cairn_tests::workload::{
    Workload, WorkloadOptions, client_runtime, connect_with_retry, recorded_get, recorded_put,
};

const ROUNDS: usize = 2;
const MARKER: &str = "pause/marker";
/// The history tag of the test's own marker operations (workload clients are 0, 1, 2).
const MARKER_CLIENT: usize = 100;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
const LEADER_TIMEOUT: Duration = Duration::from_secs(15);
const ACKS_BETWEEN_ROUNDS: usize = 60;
const PHASE_TIMEOUT: Duration = Duration::from_secs(30);

#[test]
fn a_resumed_leader_does_not_serve_a_stale_linearizable_read() {
    let started = Instant::now();
    let mut cluster = Cluster::start(ClusterOptions::default());
    let runtime = client_runtime();
    let urls: Vec<String> = (0..3).map(|i| cluster.member(i).url()).collect();
    let workload = Workload::start(runtime.handle(), &urls, WorkloadOptions::default());
    let history = workload.history().clone();
    workload.wait_for_acks(ACKS_BETWEEN_ROUNDS, PHASE_TIMEOUT);

    let mut reads_after_resume = Vec::new();
    for round in 0..ROUNDS {
        let old_leader = cluster.wait_for_leader(LEADER_TIMEOUT);
        let old_leader_url = cluster.member(old_leader).url();
        // Connected before the pause, as an application talking to that member would be.
        let mut on_old_leader =
            runtime.block_on(connect_with_retry(&old_leader_url, REQUEST_TIMEOUT));
        let before = format!("before-pause-{round}");
        runtime
            .block_on(recorded_put(
                &mut on_old_leader,
                &history,
                MARKER_CLIENT,
                MARKER,
                &before,
                REQUEST_TIMEOUT,
            ))
            .expect("the marker is written before the pause");

        cluster.pause(old_leader);
        let new_leader = cluster.wait_for_new_leader(old_leader, LEADER_TIMEOUT);
        let during = format!("during-pause-{round}");
        let new_leader_url = cluster.member(new_leader).url();
        runtime.block_on(async {
            let mut on_new_leader = connect_with_retry(&new_leader_url, REQUEST_TIMEOUT).await;
            let deadline = Instant::now() + PHASE_TIMEOUT;
            while let Err(error) = recorded_put(
                &mut on_new_leader,
                &history,
                MARKER_CLIENT,
                MARKER,
                &during,
                REQUEST_TIMEOUT,
            )
            .await
            {
                assert!(
                    Instant::now() < deadline,
                    "the majority accepts no write while the old leader is paused: {error}"
                );
            }
        });

        cluster.resume(old_leader);
        let read = runtime.block_on(recorded_get(
            &mut on_old_leader,
            &history,
            MARKER_CLIENT,
            MARKER,
            REQUEST_TIMEOUT,
        ));
        if let Ok(value) = &read {
            assert_eq!(
                value.as_deref(),
                Some(during.as_bytes()),
                "round {round}: the resumed old leader served a stale read"
            );
        }
        reads_after_resume.push(read.map(|v| v.map(|v| String::from_utf8_lossy(&v).into_owned())));
        workload.wait_for_acks(ACKS_BETWEEN_ROUNDS, PHASE_TIMEOUT);
    }

    let report = workload.stop_and_read_back(&urls[0]);
    cluster
        .wait_converged(PHASE_TIMEOUT)
        .expect("every member ends with the same data");
    report.assert_no_lost_writes();
    let summary = report.history.assert_linearizable();
    eprintln!(
        "reads on the resumed leader: {reads_after_resume:?}; {summary:?}; {:?} in all",
        started.elapsed()
    );
}
