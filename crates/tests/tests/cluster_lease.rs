//! Leases in a cluster, where the leader alone keeps their clocks.
//!
//! Across a leader failover: a client keeps one lease alive through a follower (which must
//! pass keep-alives on to the leader) past its TTL, and lets another run out; then the leader
//! is killed with `kill -9`. The new leader takes over expiry: the lease kept alive must
//! outlive several more TTLs, with its key, and the other must be revoked, with its key
//! deleted.
//!
//! Time-to-live asked of a follower: the follower must ask the leader, as etcd's does, since
//! keep-alives renew only the leader's clock.

use std::time::{Duration, Instant};

use cairn_tests::cluster::{Cluster, ClusterOptions};
use cairn_tests::workload::{client_runtime, connect_with_retry};
use etcd_client::{Client, LeaseTimeToLiveOptions, PutOptions};

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
/// The lease whose time to live a follower is asked.
const ASKED_TTL_SECONDS: i64 = 20;
/// How long that lease runs down before the leader renews it: half its TTL, which is the
/// margin between a follower's own clock and the leader's renewed one.
const RUN_DOWN: Duration = Duration::from_secs(ASKED_TTL_SECONDS as u64 / 2);
const ASKED_KEY: &str = "lease/asked";

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

#[test]
fn time_to_live_asked_of_a_follower_is_the_leaders_renewed_ttl() {
    let cluster = Cluster::start(ClusterOptions::default());
    let runtime = client_runtime();
    let leader = cluster.wait_for_leader(LEADER_TIMEOUT);
    let follower = cluster.follower_of(leader);
    let (leader_url, follower_url) = (cluster.member(leader).url(), cluster.member(follower).url());

    runtime.block_on(async {
        let mut at_leader = connect_with_retry(&leader_url, REQUEST_TIMEOUT).await;
        let mut at_follower = connect_with_retry(&follower_url, REQUEST_TIMEOUT).await;
        let lease = at_leader
            .lease_grant(ASKED_TTL_SECONDS, None)
            .await
            .expect("grant")
            .id();
        at_leader
            .put(ASKED_KEY, "v", Some(PutOptions::new().with_lease(lease)))
            .await
            .expect("put with the lease");
        // The follower lists leases from its own state: once it lists this one it has applied
        // the grant, so a clock of its own would have started by now.
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        loop {
            let leases = at_follower.leases().await.expect("leases at the follower");
            if leases.leases().iter().any(|l| l.id() == lease) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the follower never listed the lease"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(RUN_DOWN).await;
        let renewed = keep_alive_once(&mut at_leader, lease)
            .await
            .expect("keep-alive at the leader");
        assert_eq!(
            renewed, ASKED_TTL_SECONDS,
            "a keep-alive renews the full TTL"
        );

        let asked = at_follower
            .lease_time_to_live(lease, Some(LeaseTimeToLiveOptions::new().with_keys()))
            .await
            .expect("time to live asked of a follower");
        // A follower's own clock would say at most TTL - RUN_DOWN by now; the leader's was
        // just renewed to the full TTL.
        let run_down_seconds = RUN_DOWN.as_secs() as i64;
        assert!(
            asked.ttl() > ASKED_TTL_SECONDS - run_down_seconds,
            "the follower answered TTL {} for a lease the leader renewed to {ASKED_TTL_SECONDS} \
             after it ran {run_down_seconds} s: not the leader's clock",
            asked.ttl()
        );
        assert_eq!(asked.granted_ttl(), ASKED_TTL_SECONDS);
        assert_eq!(asked.keys(), [ASKED_KEY.as_bytes().to_vec()]);

        at_leader.lease_revoke(lease).await.expect("revoke");
        let revoked = at_follower
            .lease_time_to_live(lease, None)
            .await
            .expect("time to live of a revoked lease, asked of a follower");
        assert_eq!(revoked.ttl(), -1, "a revoked lease reports TTL -1");
        assert_eq!(revoked.granted_ttl(), 0);
        let never_granted = at_follower
            .lease_time_to_live(lease + 1, Some(LeaseTimeToLiveOptions::new().with_keys()))
            .await
            .expect("time to live of an unknown lease, asked of a follower");
        assert_eq!(never_granted.ttl(), -1, "an unknown lease reports TTL -1");
        assert!(never_granted.keys().is_empty());
    });
}
