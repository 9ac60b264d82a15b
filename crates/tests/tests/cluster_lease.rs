//! Leases across a leader failover. A client keeps one lease alive through a follower (which
//! must pass keep-alives on to the leader) past its TTL, and lets another run out; then the
//! leader is killed with `kill -9`. The new leader takes over expiry: the lease kept alive
//! must outlive several more TTLs, with its key, and the other must be revoked, with its key
//! deleted.

use std::time::{Duration, Instant};

use cairn_tests::cluster::{Cluster, ClusterOptions};
use cairn_tests::workload::{client_runtime, connect_with_retry};
use etcd_client::{Client, PutOptions};

const TTL_SECONDS: i64 = 4;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
const LEADER_TIMEOUT: Duration = Duration::from_secs(15);
const KEEP_ALIVE_EVERY: Duration = Duration::from_millis(500);
/// How long the kept lease must stay alive after the failover: several of its TTLs.
const KEPT_FOR: Duration = Duration::from_secs(3 * TTL_SECONDS as u64);
/// Keep-alives stop this long after the new leader is seen: well within one TTL.
const CLIENT_RECONNECT_PAUSE: Duration = Duration::from_millis(1500);
const KEPT_KEY: &str = "lease/kept";
const EXPIRING_KEY: &str = "lease/expiring";

/// Sends one keep-alive for `lease` and waits for its answer; a new stream each time, so a
/// stream broken by the failover does not end the keeping.
async fn keep_alive_once(client: &mut Client, lease: i64) -> Result<i64, etcd_client::Error> {
    let (mut keeper, mut responses) = client.lease_keep_alive(lease).await?;
    keeper.keep_alive().await?;
    match responses.message().await? {
        Some(response) => Ok(response.ttl()),
        None => Err(etcd_client::Error::InvalidArgs(
            "keep-alive stream closed".into(),
        )),
    }
}

async fn key_exists(client: &mut Client, key: &str) -> bool {
    !client
        .get(key, None)
        .await
        .expect("linearizable get")
        .kvs()
        .is_empty()
}

#[test]
fn a_lease_kept_alive_through_a_follower_outlives_a_leader_failover_and_others_expire() {
    let mut cluster = Cluster::start(ClusterOptions::default());
    let runtime = client_runtime();
    let leader = cluster.wait_for_leader(LEADER_TIMEOUT);
    let follower = cluster.follower_of(leader);
    let follower_url = cluster.member(follower).url();

    let (kept, expiring) = runtime.block_on(async {
        let mut client = connect_with_retry(&follower_url, REQUEST_TIMEOUT).await;
        let mut leases = Vec::new();
        for key in [KEPT_KEY, EXPIRING_KEY] {
            let lease = client
                .lease_grant(TTL_SECONDS, None)
                .await
                .expect("grant through a follower")
                .id();
            client
                .put(key, "v", Some(PutOptions::new().with_lease(lease)))
                .await
                .expect("put with the lease");
            leases.push(lease);
        }
        // Kept alive past its first TTL before the failover: only the leader's clock moved,
        // so whoever leads next must start the lease afresh rather than trust its own.
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(2 * TTL_SECONDS as u64) {
            let ttl = keep_alive_once(&mut client, leases[0])
                .await
                .expect("a keep-alive through a follower reaches the leader");
            assert_eq!(ttl, TTL_SECONDS, "a keep-alive renews the full TTL");
            tokio::time::sleep(KEEP_ALIVE_EVERY).await;
        }
        (leases[0], leases[1])
    });

    cluster.kill9(leader);
    let new_leader = cluster.wait_for_new_leader(leader, LEADER_TIMEOUT);
    // The leader answers time-to-live from the clock it keeps; a follower's is not kept.
    let new_leader_url = cluster.member(new_leader).url();

    runtime.block_on(async {
        // Clients take a moment to find the new leader: it must give every lease a fresh TTL
        // when it takes over, not expire the ones whose keep-alives went to its predecessor.
        tokio::time::sleep(CLIENT_RECONNECT_PAUSE).await;
        let mut through_follower = connect_with_retry(&follower_url, REQUEST_TIMEOUT).await;
        let mut observer = connect_with_retry(&new_leader_url, REQUEST_TIMEOUT).await;
        let started = Instant::now();
        let mut renewed = 0;
        let mut expiring_gone = false;
        while started.elapsed() < KEPT_FOR {
            if let Ok(ttl) = keep_alive_once(&mut through_follower, kept).await {
                assert!(ttl > 0, "the kept lease was lost (TTL {ttl})");
                renewed += 1;
            }
            expiring_gone = expiring_gone || !key_exists(&mut observer, EXPIRING_KEY).await;
            tokio::time::sleep(KEEP_ALIVE_EVERY).await;
        }
        assert!(renewed > 0, "no keep-alive went through after the failover");
        assert!(
            key_exists(&mut observer, KEPT_KEY).await,
            "the key of the lease kept alive was deleted"
        );
        assert!(
            expiring_gone,
            "the lease left to run out was not revoked within {KEPT_FOR:?} of the failover"
        );
        let kept_ttl = observer
            .lease_time_to_live(kept, None)
            .await
            .expect("time to live of the kept lease")
            .ttl();
        assert!(kept_ttl > 0, "the kept lease reports TTL {kept_ttl}");
        let expired_ttl = observer
            .lease_time_to_live(expiring, None)
            .await
            .expect("time to live of the revoked lease")
            .ttl();
        assert_eq!(expired_ttl, -1, "a revoked lease reports TTL -1");
    });
}
