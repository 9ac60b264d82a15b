//! Durability across restarts: after a clean shutdown (SIGTERM) or a kill -9, the restarted
//! member has every acknowledged key with the same revisions, the same history, the same
//! compaction point, the same cluster and member ids, and continues at the next revision.

mod common;

use std::os::unix::process::ExitStatusExt;

use cairn_tests::{Server, assert_error, etcdctl, ok_stdout};
use common::{Ids, Kv, connect, header_of, kvs};
use etcd_client::{Client, DeleteOptions, GetOptions, Txn, TxnOp};

/// Everything a client can observe that must survive a restart.
#[derive(Debug, PartialEq)]
struct Observed {
    ids: (u64, u64),
    revision: i64,
    all: Vec<Kv>,
    /// The whole store at each uncompacted past revision since `from`.
    history: Vec<(i64, Vec<Kv>)>,
    etcdctl_all: String,
}

async fn observe(client: &mut Client, server: &Server, history_from: i64) -> Observed {
    let response = client
        .get("", Some(GetOptions::new().with_all_keys()))
        .await
        .expect("get all");
    let header = header_of(response.header());
    let ids = Ids::of(header);
    let revision = header.revision();
    let mut history = Vec::new();
    for rev in history_from..revision {
        let response = client
            .get(
                "",
                Some(GetOptions::new().with_all_keys().with_revision(rev)),
            )
            .await
            .unwrap_or_else(|e| panic!("get all at revision {rev}: {e}"));
        history.push((rev, kvs(response.kvs())));
    }
    Observed {
        ids: (ids.cluster_id, ids.member_id),
        revision,
        all: kvs(response.kvs()),
        history,
        etcdctl_all: ok_stdout(&etcdctl(
            &server.endpoint(),
            &["get", "--from-key", "", "-w", "fields"],
        ))
        .lines()
        // The raft term may change when a restarted member elects itself again.
        .filter(|line| !line.starts_with("\"RaftTerm\""))
        .collect::<Vec<_>>()
        .join("\n"),
    }
}

/// Puts, overwrites, deletes and a multi-key txn; returns the revision reached.
async fn write_some(client: &mut Client, round: usize) -> i64 {
    for i in 0..20 {
        let key = format!("r{round}/key{:02}", i % 7);
        client
            .put(key, format!("value {round}.{i}"), None)
            .await
            .expect("put");
    }
    client
        .delete(format!("r{round}/key03"), None)
        .await
        .expect("delete");
    client
        .delete(
            format!("r{round}/key05"),
            Some(DeleteOptions::new().with_range(format!("r{round}/key07"))),
        )
        .await
        .expect("delete range");
    let response = client
        .txn(Txn::new().and_then([
            TxnOp::put(format!("r{round}/txn-a"), "a", None),
            TxnOp::put(format!("r{round}/txn-b"), "b", None),
            TxnOp::delete(format!("r{round}/key00"), None),
        ]))
        .await
        .expect("txn");
    header_of(response.header()).revision()
}

#[tokio::test]
async fn clean_shutdown_and_restart_keep_every_key_and_revision() {
    let mut server = Server::start();
    let mut client = connect(&server).await;
    write_some(&mut client, 0).await;
    client.compact(10, None).await.expect("compact");
    let revision = write_some(&mut client, 1).await;
    assert_eq!(revision, 47);
    let before = observe(&mut client, &server, 10).await;
    drop(client);

    let status = server.terminate();
    assert!(
        status.success() || status.signal() == Some(15),
        "a clean shutdown exits 0 (or by SIGTERM itself), got {status}; log:\n{}",
        server.log()
    );
    server.restart();

    let mut client = connect(&server).await;
    let after = observe(&mut client, &server, 10).await;
    assert_eq!(after, before);
    assert_error(
        &etcdctl(&server.endpoint(), &["get", "r0/key01", "--rev", "9"]),
        "etcdserver: mvcc: required revision has been compacted",
    );
    let response = client.put("after", "restart", None).await.expect("put");
    assert_eq!(header_of(response.header()).revision(), revision + 1);
}

#[tokio::test]
async fn kill9_and_restart_keep_every_acknowledged_key_and_revision() {
    let mut server = Server::start();
    let mut expected_revision = 0;
    for round in 0..3 {
        let mut client = connect(&server).await;
        let revision = write_some(&mut client, round).await;
        assert!(revision > expected_revision);
        expected_revision = revision;
        if round == 1 {
            client.compact(revision - 5, None).await.expect("compact");
        }
        let history_from = if round >= 1 { expected_revision - 5 } else { 1 };
        let before = observe(&mut client, &server, history_from).await;
        drop(client);

        server.kill9();
        server.restart();

        let mut client = connect(&server).await;
        let after = observe(&mut client, &server, history_from).await;
        assert_eq!(after, before, "round {round}");
        assert_eq!(after.revision, expected_revision, "round {round}");
    }
    let mut client = connect(&server).await;
    let response = client.put("after", "restarts", None).await.expect("put");
    assert_eq!(
        header_of(response.header()).revision(),
        expected_revision + 1
    );
}
