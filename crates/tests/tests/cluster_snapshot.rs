//! A member that falls far behind catches up from a snapshot. With `--snapshot-count 100`,
//! a follower is killed with SIGKILL, thousands of keys are written through the other two,
//! and the follower is restarted: it must end with every key, the same revision and the same
//! data as the others, and serve a linearizable read of a write made after it came back.
//!
//! etcd keeps 5,000 entries behind each snapshot for slow followers, so more than that are
//! written: the leader no longer has the entries the follower misses and must send a
//! snapshot. Against etcd the test checks the follower's log says so, proving the test takes
//! the snapshot path; Cairn may keep fewer entries, and its log is not etcd's, so against
//! Cairn only the data is checked.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cairn_tests::Target;
use cairn_tests::cluster::{Cluster, ClusterOptions};
use cairn_tests::workload::{client_runtime, connect_with_retry};
use etcd_client::GetOptions;

/// More than etcd's 5,000 catch-up entries plus a snapshot interval.
const KEYS: usize = 6_000;
const WRITERS: usize = 32;
const PREFIX: &str = "snap/";
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(40);
const LEADER_TIMEOUT: Duration = Duration::from_secs(15);

#[test]
fn a_follower_far_behind_catches_up_from_a_snapshot() {
    let started = Instant::now();
    let mut cluster = Cluster::start(ClusterOptions {
        extra_args: vec!["--snapshot-count".to_owned(), "100".to_owned()],
        ..ClusterOptions::default()
    });
    let leader = cluster.wait_for_leader(LEADER_TIMEOUT);
    let follower = cluster.follower_of(leader);
    let survivors: Vec<String> = (0..3)
        .filter(|&i| i != follower)
        .map(|i| cluster.member(i).url())
        .collect();
    cluster.kill9(follower);

    let runtime = client_runtime();
    let writing = Instant::now();
    let next_key = Arc::new(AtomicUsize::new(0));
    runtime.block_on(async {
        let mut writers = Vec::new();
        for writer in 0..WRITERS {
            let url = survivors[writer % survivors.len()].clone();
            let next_key = Arc::clone(&next_key);
            writers.push(tokio::spawn(async move {
                let mut client = connect_with_retry(&url, REQUEST_TIMEOUT).await;
                loop {
                    let n = next_key.fetch_add(1, Ordering::SeqCst);
                    if n >= KEYS {
                        return;
                    }
                    client
                        .put(format!("{PREFIX}{n:05}"), format!("value {n}"), None)
                        .await
                        .unwrap_or_else(|e| panic!("put {n} through {url}: {e}"));
                }
            }));
        }
        for writer in writers {
            writer.await.expect("a writer panicked");
        }
    });
    eprintln!("{KEYS} puts in {:?}", writing.elapsed());

    cluster.restart(follower);
    let url = cluster.member(follower).url();
    let deadline = Instant::now() + CATCH_UP_TIMEOUT;
    runtime.block_on(async {
        let mut client = connect_with_retry(&url, REQUEST_TIMEOUT).await;
        loop {
            let options = GetOptions::new()
                .with_prefix()
                .with_count_only()
                .with_serializable();
            let count = client
                .get(PREFIX, Some(options))
                .await
                .map_or(0, |r| r.count());
            if count == KEYS as i64 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the restarted follower has {count} of {KEYS} keys after {CATCH_UP_TIMEOUT:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        client
            .put("after-catch-up", "written through the follower", None)
            .await
            .expect("the caught-up follower accepts a write");
        let read = client
            .get("after-catch-up", None)
            .await
            .expect("the caught-up follower serves a linearizable read");
        assert_eq!(
            read.kvs().first().map(|kv| kv.value()),
            Some(b"written through the follower".as_slice())
        );
    });
    let converged = cluster
        .wait_converged(CATCH_UP_TIMEOUT)
        .expect("every member ends with the same data");
    assert_eq!(converged.keys, KEYS + 1);

    if cluster.target() == Target::Etcd {
        let log = cluster.member(follower).log();
        assert!(
            log.contains("incoming snapshot"),
            "etcd caught up without a snapshot: the test no longer covers that path"
        );
    }
    eprintln!("{converged:?}; {:?} in all", started.elapsed());
}
