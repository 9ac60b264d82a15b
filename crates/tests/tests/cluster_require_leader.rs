//! A member of a 3-member cluster whose two peers are killed (kill -9) loses its leader
//! (after an election timeout: a follower's leader goes silent, a leader steps down by
//! CheckQuorum). From then on, a client that requires a leader (`hasleader: true` metadata)
//! is refused with `etcdserver: no leader` (gRPC Unavailable) on a put, a range and a new
//! watch, and a require-leader watch opened while there was a leader is ended with the same
//! error (etcd ends it after a few election timeouts without a leader, so that its client can
//! go to a member that has one). Nothing sent to the lone member may succeed as a write or a
//! linearizable read. Once the peers restart, the same requests succeed again.
//!
//! Run once with the lone member a follower and once with it the leader.

use std::time::{Duration, Instant};

use cairn_tests::cluster::{Cluster, ClusterOptions};
use cairn_tests::first_watch_event;
use cairn_tests::workload::client_runtime;
use etcd_client::{Client, ConnectOptions, EventType, WatchStream};

const NO_LEADER: &str = "etcdserver: no leader";
/// Bound on each request: a put or linearizable read sent before the member notices it has
/// no leader waits for a quorum that is gone, and is retried.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the member may take to notice it has lost its leader, or to find one again.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(60);
const LEADER_TIMEOUT: Duration = Duration::from_secs(15);
const RETRY_BACKOFF: Duration = Duration::from_millis(200);

#[test]
fn a_follower_without_quorum_refuses_requests_that_require_a_leader() {
    member_without_quorum_refuses_requests_that_require_a_leader(Lone::Follower);
}

#[test]
fn a_leader_without_quorum_refuses_requests_that_require_a_leader() {
    member_without_quorum_refuses_requests_that_require_a_leader(Lone::Leader);
}

/// Which member is left alone.
#[derive(Clone, Copy, Debug)]
enum Lone {
    Follower,
    Leader,
}

fn member_without_quorum_refuses_requests_that_require_a_leader(lone: Lone) {
    let mut cluster = Cluster::start(ClusterOptions::default());
    let runtime = client_runtime();
    let leader = cluster.wait_for_leader(LEADER_TIMEOUT);
    let member = match lone {
        Lone::Follower => cluster.follower_of(leader),
        Lone::Leader => leader,
    };
    let others: Vec<usize> = (0..3).filter(|&i| i != member).collect();
    let url = cluster.member(member).url();
    let mut client = runtime.block_on(connect_requiring_leader(&url));

    // Served while there is a leader; this watch must be ended once there is none.
    // The watcher is kept: dropping it would half-close the stream.
    let (_old_watcher, mut old_watch) = runtime
        .block_on(within(client.watch("k", None)))
        .expect("a require-leader watch is created while there is a leader");
    runtime
        .block_on(within(client.put("k", "before", None)))
        .expect("a require-leader put is served while there is a leader");

    for &other in &others {
        cluster.kill9(other);
    }

    // A put and a linearizable read either wait (until the member notices) or are refused:
    // never served without a quorum.
    runtime.block_on(async {
        poll_until_refused("put", async || {
            within(client.put("k", "no quorum", None)).await.map(drop)
        })
        .await;
        poll_until_refused("range", async || {
            within(client.get("k", None)).await.map(drop)
        })
        .await;
        // The member has no leader now (it cannot get one alone): refused at once.
        let watch = within(client.watch("k", None)).await.map(drop);
        assert_no_leader("a new watch", &watch);
    });
    let ended = runtime.block_on(watch_end(&mut old_watch));
    assert_no_leader("the watch opened while there was a leader", &ended);

    for &other in &others {
        cluster.restart(other);
    }
    runtime.block_on(async {
        let put =
            poll_until_served("put", async || within(client.put("k", "after", None)).await).await;
        let revision = put.header().expect("header").revision();
        let got = poll_until_served("range", async || within(client.get("k", None)).await).await;
        assert_eq!(got.kvs()[0].value(), b"after");
        let (_watcher, mut stream) = poll_until_served("new watch", async || {
            within(client.watch(
                "k",
                Some(etcd_client::WatchOptions::new().with_start_revision(revision)),
            ))
            .await
        })
        .await;
        let event = first_watch_event(&mut stream, REFUSAL_TIMEOUT).await;
        assert_eq!(event.event_type(), EventType::Put);
        assert_eq!(event.kv().expect("kv").mod_revision(), revision);
    });
}

async fn connect_requiring_leader(url: &str) -> Client {
    // No per-request timeout in the options: it would also bound the watch streams.
    let options = ConnectOptions::new()
        .with_connect_timeout(REQUEST_TIMEOUT)
        .with_require_leader(true);
    Client::connect([url], Some(options))
        .await
        .expect("connect to the member")
}

/// `request`, or a timeout error after `REQUEST_TIMEOUT`.
async fn within<T>(
    request: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, etcd_client::Error> {
    tokio::time::timeout(REQUEST_TIMEOUT, request)
        .await
        .unwrap_or_else(|_| {
            Err(etcd_client::Error::IoError(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer within {REQUEST_TIMEOUT:?}"),
            )))
        })
}

/// Sends `request` until it is refused for want of a leader; panics if it is ever served,
/// or if the refusal has not come by the deadline.
async fn poll_until_refused(
    what: &str,
    mut request: impl AsyncFnMut() -> Result<(), etcd_client::Error>,
) {
    let deadline = Instant::now() + REFUSAL_TIMEOUT;
    loop {
        let result = request().await;
        match &result {
            Ok(()) => panic!("a require-leader {what} was served by a member without a quorum"),
            Err(etcd_client::Error::GRpcStatus(status)) if status.message() == NO_LEADER => {
                assert_no_leader(what, &result);
                return;
            }
            Err(error) => assert!(
                Instant::now() < deadline,
                "a require-leader {what} was not refused with `{NO_LEADER}` within \
                 {REFUSAL_TIMEOUT:?}; last answer: {error}"
            ),
        }
        tokio::time::sleep(RETRY_BACKOFF).await;
    }
}

/// Sends `request` until it is served; panics at the deadline.
async fn poll_until_served<T>(
    what: &str,
    mut request: impl AsyncFnMut() -> Result<T, etcd_client::Error>,
) -> T {
    let deadline = Instant::now() + REFUSAL_TIMEOUT;
    loop {
        match request().await {
            Ok(response) => return response,
            Err(error) => assert!(
                Instant::now() < deadline,
                "a require-leader {what} was not served within {REFUSAL_TIMEOUT:?} of the \
                 peers' restart; last answer: {error}"
            ),
        }
        tokio::time::sleep(RETRY_BACKOFF).await;
    }
}

/// The error that ends `stream`, skipping any responses before it.
async fn watch_end(stream: &mut WatchStream) -> Result<(), etcd_client::Error> {
    let ended = tokio::time::timeout(REFUSAL_TIMEOUT, async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => return Ok(()),
                Err(error) => return Err(error),
            }
        }
    })
    .await;
    ended.unwrap_or_else(|_| panic!("the watch was not ended within {REFUSAL_TIMEOUT:?}"))
}

/// `result` is etcd's refusal for want of a leader: Unavailable, `etcdserver: no leader`.
fn assert_no_leader<T: std::fmt::Debug>(what: &str, result: &Result<T, etcd_client::Error>) {
    match result {
        Err(etcd_client::Error::GRpcStatus(status)) => {
            assert_eq!(
                status.code(),
                tonic::Code::Unavailable,
                "{what}: {status:?}"
            );
            assert_eq!(status.message(), NO_LEADER, "{what}: {status:?}");
        }
        other => panic!("{what}: expected `{NO_LEADER}`, got {other:?}"),
    }
}
