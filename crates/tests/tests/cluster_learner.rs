//! What a learner serves. etcd refuses every gRPC call on a learner in its interceptors,
//! before any handler runs, with `etcdserver: rpc not supported for learner` (gRPC
//! Unavailable): every unary RPC but `Maintenance.Status` and a serializable `KV.Range`, and
//! every stream (Watch, LeaseKeepAlive, Snapshot) when it is opened. So the refusal comes first
//! even for an RPC the member would refuse anyway, or does not implement. The plain-HTTP
//! endpoints (`/health`, `/version`, `/metrics`) keep working.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use cairn_tests::cluster::{Cluster, ClusterOptions};
use cairn_tests::workload::client_runtime;
use etcd_client::{
    AlarmAction, AlarmType, Client, Compare, CompareOp, GetOptions, Txn, TxnOp, WatchOptions,
};

const REFUSED: &str = "Unavailable: etcdserver: rpc not supported for learner";
/// Bound on each request, and on the wait for the learner to catch up.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(30);

/// An answer as `ok` or `<gRPC code>: <message>`, so that one table shows every mismatch.
fn answer<T>(result: Result<T, etcd_client::Error>) -> String {
    match result {
        Ok(_) => "ok".to_owned(),
        Err(etcd_client::Error::GRpcStatus(status)) => {
            format!("{:?}: {}", status.code(), status.message())
        }
        Err(other) => format!("not a gRPC status: {other}"),
    }
}

/// `request`, or a timeout error after `REQUEST_TIMEOUT`.
async fn within<T>(
    request: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, etcd_client::Error> {
    tokio::time::timeout(REQUEST_TIMEOUT, request)
        .await
        .unwrap_or_else(|_| Err(etcd_client::Error::InvalidArgs("timed out".to_owned())))
}

/// GET over HTTP/1.0; returns the status code and the body.
fn http_get(endpoint: &str, path: &str) -> (String, String) {
    let mut stream = TcpStream::connect(endpoint).expect("connect");
    stream
        .set_read_timeout(Some(REQUEST_TIMEOUT))
        .expect("timeout");
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {endpoint}\r\n\r\n").expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    let (head, body) = response.split_once("\r\n\r\n").expect("a head and a body");
    let status = head
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    (status, body.to_owned())
}

#[test]
fn a_learner_refuses_every_rpc_but_status_and_serializable_range() {
    let mut cluster = Cluster::start(ClusterOptions {
        members: 1,
        ..ClusterOptions::default()
    });
    let runtime = client_runtime();
    let voter_url = cluster.member(0).url();
    let voter_id = cluster.member(0).id().expect("voter ID");
    let lease = runtime.block_on(async {
        let mut voter = Client::connect([&voter_url], None)
            .await
            .expect("connect to the voter");
        within(voter.put("k", "v", None)).await.expect("put");
        within(voter.lease_grant(600, None))
            .await
            .expect("grant")
            .id()
    });
    let learner = cluster.add_member(true);
    let learner_id = cluster.member(learner).id().expect("learner ID");
    let learner_url = cluster.member(learner).url();
    let learner_peer_url = cluster.member(learner).peer_url();

    runtime.block_on(async {
        let mut client = Client::connect([&learner_url], None)
            .await
            .expect("connect to the learner");
        let serializable = || Some(GetOptions::new().with_serializable());

        // Served: a serializable range (once the learner has caught up) and the status.
        let deadline = Instant::now() + CATCH_UP_TIMEOUT;
        loop {
            let got = within(client.get("k", serializable())).await;
            if got
                .as_ref()
                .is_ok_and(|r| r.kvs().first().is_some_and(|kv| kv.value() == b"v"))
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the learner did not serve k=v within {CATCH_UP_TIMEOUT:?}: {}",
                answer(got)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let status = within(client.status())
            .await
            .expect("status on the learner");
        assert!(status.is_learner(), "{status:?}");

        let read_only_txn = || {
            Txn::new()
                .when([Compare::version("k", CompareOp::Greater, 0)])
                .and_then([TxnOp::get("k", serializable())])
        };
        let answers = vec![
            (
                "KV.Range serializable",
                answer(within(client.get("k", serializable())).await),
            ),
            (
                "KV.Range linearizable",
                answer(within(client.get("k", None)).await),
            ),
            ("KV.Put", answer(within(client.put("k", "w", None)).await)),
            (
                "KV.DeleteRange",
                answer(within(client.delete("k", None)).await),
            ),
            (
                "KV.Txn serializable read-only",
                answer(within(client.txn(read_only_txn())).await),
            ),
            ("KV.Compact", answer(within(client.compact(1, None)).await)),
            (
                "Lease.LeaseGrant",
                answer(within(client.lease_grant(60, None)).await),
            ),
            (
                "Lease.LeaseRevoke",
                answer(within(client.lease_revoke(lease)).await),
            ),
            (
                "Lease.LeaseKeepAlive",
                answer(within(client.lease_keep_alive(lease)).await),
            ),
            (
                "Lease.LeaseTimeToLive",
                answer(within(client.lease_time_to_live(lease, None)).await),
            ),
            ("Lease.LeaseLeases", answer(within(client.leases()).await)),
            (
                "Watch.Watch",
                answer(within(client.watch("k", Some(WatchOptions::new()))).await),
            ),
            (
                "Cluster.MemberAdd",
                answer(within(client.member_add(["http://127.0.0.1:9"], None)).await),
            ),
            (
                "Cluster.MemberRemove",
                answer(within(client.member_remove(learner_id)).await),
            ),
            (
                "Cluster.MemberUpdate",
                answer(within(client.member_update(learner_id, [learner_peer_url.clone()])).await),
            ),
            (
                "Cluster.MemberList",
                answer(within(client.member_list()).await),
            ),
            (
                "Cluster.MemberPromote",
                answer(within(client.member_promote(learner_id)).await),
            ),
            (
                "Maintenance.Alarm",
                answer(within(client.alarm(AlarmAction::Get, AlarmType::None, None)).await),
            ),
            ("Maintenance.Status", answer(within(client.status()).await)),
            (
                "Maintenance.Defragment",
                answer(within(client.defragment()).await),
            ),
            ("Maintenance.Hash", answer(within(client.hash()).await)),
            (
                "Maintenance.HashKV",
                answer(within(client.hash_kv(0)).await),
            ),
            (
                "Maintenance.Snapshot",
                answer(within(client.snapshot()).await),
            ),
            (
                "Maintenance.MoveLeader",
                answer(within(client.move_leader(voter_id)).await),
            ),
            // Services Cairn does not serve yet: the learner refusal still comes first.
            ("Auth.UserList", answer(within(client.user_list()).await)),
            ("Lock.Lock", answer(within(client.lock("l", None)).await)),
            ("Election.Leader", answer(within(client.leader("e")).await)),
        ];
        let expected: Vec<(&str, String)> = answers
            .iter()
            .map(|&(rpc, _)| {
                let served = matches!(rpc, "KV.Range serializable" | "Maintenance.Status");
                (rpc, if served { "ok" } else { REFUSED }.to_owned())
            })
            .collect();
        assert_eq!(answers, expected, "answers of the learner");
    });

    // etcd's HTTP endpoints serve a learner as any member.
    let endpoint = cluster.member(learner).endpoint();
    let (status, body) = http_get(&endpoint, "/health");
    assert_eq!(
        (status.as_str(), body.trim()),
        ("200", r#"{"health":"true"}"#)
    );
    for path in ["/version", "/metrics"] {
        let (status, body) = http_get(&endpoint, path);
        assert_eq!(status, "200", "{path}: {body}");
    }
}
