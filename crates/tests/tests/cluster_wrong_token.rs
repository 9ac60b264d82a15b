//! A member started with another `--initial-cluster-token` than its two peers (the same
//! `--initial-cluster`) derives other member IDs and another cluster ID from it, so its peers
//! refuse its traffic (and it refuses theirs): it never joins. The two right members make a
//! quorum of three and serve writes. The odd member never publishes itself (their member list
//! keeps it unstarted, with no client URLs), never becomes healthy, never reports a leader
//! and never gets their data; each right member logs the cluster ID mismatch.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cairn_tests::cluster::{Cluster, ClusterOptions};
use cairn_tests::etcdctl;
use cairn_tests::workload::{client_runtime, connect_with_retry};
use serde_json::Value;

/// The member with the other token.
const ODD: usize = 2;
const RIGHT: [usize; 2] = [0, 1];
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the right members may take to log the refusal.
const LOG_TIMEOUT: Duration = Duration::from_secs(30);
/// What etcd and cairn both log when a peer's cluster ID is not theirs (etcd on both sides
/// of a refused request, cairn where a peer's refusal reaches the member that dialed it).
const MISMATCH: &str = "cluster ID mismatch";

#[test]
fn a_member_with_another_cluster_token_is_refused_and_never_joins() {
    let cluster = Cluster::start(ClusterOptions {
        token_overrides: BTreeMap::from([(ODD, "another-cluster".to_owned())]),
        ..ClusterOptions::default()
    });
    let runtime = client_runtime();

    // The right members serve writes: each acknowledges one, and each reads both back.
    for index in RIGHT {
        let mut client = runtime.block_on(connect_with_retry(
            &cluster.member(index).url(),
            REQUEST_TIMEOUT,
        ));
        let key = format!("written-through/m{index}");
        runtime
            .block_on(client.put(key.as_str(), "v", None))
            .unwrap_or_else(|e| panic!("a put through m{index}: {e}"));
    }
    for index in RIGHT {
        let mut client = runtime.block_on(connect_with_retry(
            &cluster.member(index).url(),
            REQUEST_TIMEOUT,
        ));
        let got = runtime
            .block_on(client.get(
                "written-through/",
                Some(etcd_client::GetOptions::new().with_prefix()),
            ))
            .unwrap_or_else(|e| panic!("a read through m{index}: {e}"));
        assert_eq!(got.count(), 2, "m{index} has both writes");
    }
    let statuses = cluster.statuses();
    let cluster_id = statuses
        .get(&RIGHT[0])
        .expect("the status of a right member")
        .cluster_id;
    assert_ne!(cluster_id, 0, "the status header carries the cluster ID");

    // Each right member refuses the odd one's cluster, naming its own.
    let cluster_id_hex = format!("{cluster_id:x}");
    for index in RIGHT {
        let deadline = Instant::now() + LOG_TIMEOUT;
        while !cluster
            .member(index)
            .log()
            .lines()
            .any(|line| line.contains(MISMATCH) && line.contains(&cluster_id_hex))
        {
            assert!(
                Instant::now() < deadline,
                "m{index} logged no `{MISMATCH}` naming its cluster {cluster_id_hex} within \
                 {LOG_TIMEOUT:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    // The right members know the odd one only from `--initial-cluster`: it never published
    // its client URLs to them.
    let list = cluster.etcdctl(&["member", "list", "-w", "json"]);
    assert!(list.status.success(), "member list: {list:?}");
    let list: Value = serde_json::from_slice(&list.stdout).expect("member list JSON");
    let members = list["members"].as_array().expect("members");
    assert_eq!(members.len(), 3, "{list}");
    for (index, member) in cluster_members(&cluster, members) {
        let client_urls = member["clientURLs"].as_array().map_or(0, Vec::len);
        if index == ODD {
            assert_eq!(client_urls, 0, "the odd member was never started: {member}");
        } else {
            assert_eq!(client_urls, 1, "m{index} is started: {member}");
        }
    }

    // The odd member itself: not healthy, no leader, none of the data. etcd serves no client
    // request before it has joined, so an answer may be missing, but never wrong.
    assert!(
        !cluster.is_healthy(ODD),
        "the odd member reports itself healthy"
    );
    if let Some(status) = cluster.statuses().get(&ODD) {
        assert_eq!(
            status.leader_id, 0,
            "the odd member reports a leader: {status:?}"
        );
        assert_ne!(
            status.cluster_id, cluster_id,
            "the odd member is in the cluster: {status:?}"
        );
    }
    let read = etcdctl(
        &cluster.member(ODD).endpoint(),
        &[
            "--command-timeout=2s",
            "get",
            "written-through/",
            "--prefix",
            "--consistency=s",
            "-w",
            "json",
        ],
    );
    if read.status.success() {
        let read: Value = serde_json::from_slice(&read.stdout).expect("get JSON");
        assert!(
            read.get("kvs").is_none(),
            "the odd member has the data: {read}"
        );
    }
}

/// Each entry of `member list`, with the index of the member whose peer URL it lists.
fn cluster_members<'a>(cluster: &Cluster, members: &'a [Value]) -> Vec<(usize, &'a Value)> {
    members
        .iter()
        .map(|member| {
            let peer_url = member["peerURLs"][0].as_str().unwrap_or_default();
            let index = (0..cluster.len())
                .find(|&i| cluster.member(i).peer_url() == peer_url)
                .unwrap_or_else(|| panic!("a member list entry of no member: {member}"));
            (index, member)
        })
        .collect()
}
