//! Clients that require a leader (`hasleader: true` metadata, which clientv3 sends for watches
//! and etcd-client for every call when asked) are served normally while there is one, on every
//! service. The refusal while leaderless needs a member without a leader: see
//! cluster_require_leader.rs.

use cairn_tests::{Server, first_watch_event};
use etcd_client::{Client, ConnectOptions, EventType};

#[tokio::test]
async fn requests_that_require_a_leader_are_served_by_every_service() {
    let server = Server::start();
    let options = ConnectOptions::new().with_require_leader(true);
    let mut client = Client::connect([server.endpoint()], Some(options))
        .await
        .expect("connect");

    let (mut watcher, mut stream) = client.watch("k", None).await.expect("watch");
    let lease = client
        .lease_grant(60, None)
        .await
        .expect("lease grant")
        .id();
    let put = client.put("k", "v", None).await.expect("put");
    let revision = put.header().expect("header").revision();
    let got = client.get("k", None).await.expect("get");
    assert_eq!(got.kvs()[0].value(), b"v");
    let members = client.member_list().await.expect("member list");
    assert_eq!(members.members().len(), 1);
    let status = client.status().await.expect("status");
    assert!(status.raft_term() >= 1);

    let event = first_watch_event(&mut stream, std::time::Duration::from_secs(10)).await;
    assert_eq!(event.event_type(), EventType::Put);
    assert_eq!(event.kv().expect("kv").mod_revision(), revision);
    watcher.cancel().await.expect("cancel");
    client.lease_revoke(lease).await.expect("lease revoke");
}
