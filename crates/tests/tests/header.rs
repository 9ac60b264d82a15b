//! ResponseHeader: every KV response (range, put, delete, txn, compact) names the cluster and
//! the member, carries the store revision after the request, and a raft term of at least 1.

mod common;

use cairn_tests::{Server, assert_stdout, etcdctl, etcdctl_stdin};
use common::{Ids, connect, header_of};
use etcd_client::{Compare, CompareOp, GetOptions, ResponseHeader, Txn, TxnOp};

#[tokio::test]
async fn every_kv_response_carries_cluster_member_revision_and_raft_term() {
    let server = Server::start();
    let ep = server.endpoint();
    let mut client = connect(&server).await;

    let mut seen: Vec<(&str, ResponseHeader)> = Vec::new();
    let mut record = |what: &'static str, header: Option<&ResponseHeader>, revision: i64| {
        let header = header_of(header).clone();
        assert_eq!(
            header.revision(),
            revision,
            "revision in the header of {what}"
        );
        seen.push((what, header));
    };

    // A fresh store is at revision 1, so the first write gets revision 2.
    let response = client.get("a", None).await.expect("get");
    record("range on a fresh store", response.header(), 1);
    let response = client.put("a", "1", None).await.expect("put");
    record("put", response.header(), 2);
    let response = client.get("a", None).await.expect("get");
    record("range", response.header(), 2);
    let response = client
        .get("a", Some(GetOptions::new().with_revision(1)))
        .await
        .expect("historical get");
    record("historical range (current revision)", response.header(), 2);
    let response = client
        .get("a", Some(GetOptions::new().with_serializable()))
        .await
        .expect("serializable get");
    record("serializable range", response.header(), 2);
    let response = client.get("missing", None).await.expect("get");
    record("range of nothing", response.header(), 2);
    let response = client.put("b", "1", None).await.expect("put");
    record("second put", response.header(), 3);
    let response = client.delete("b", None).await.expect("delete");
    record("delete", response.header(), 4);
    let response = client.delete("b", None).await.expect("delete");
    record("delete of nothing", response.header(), 4);
    let response = client
        .txn(
            Txn::new()
                .when([Compare::version("a", CompareOp::Equal, 1)])
                .and_then([TxnOp::put("a", "2", None), TxnOp::put("c", "1", None)]),
        )
        .await
        .expect("txn");
    record("txn", response.header(), 5);
    let response = client
        .txn(Txn::new().and_then([TxnOp::get("a", None)]))
        .await
        .expect("read-only txn");
    record("read-only txn", response.header(), 5);
    let response = client
        .txn(
            Txn::new()
                .when([Compare::version("a", CompareOp::Equal, 1)])
                .and_then([TxnOp::put("a", "3", None)]),
        )
        .await
        .expect("failed txn");
    assert!(!response.succeeded());
    record("failed txn without failure ops", response.header(), 5);
    let response = client.compact(3, None).await.expect("compact");
    record("compact (current revision)", response.header(), 5);

    let (_, first) = &seen[0];
    let ids = Ids::of(first);
    assert_ne!(ids.cluster_id, 0, "cluster_id");
    assert_ne!(ids.member_id, 0, "member_id");
    assert!(ids.raft_term >= 1, "raft_term {}", ids.raft_term);
    for (what, header) in &seen {
        assert_eq!(Ids::of(header), ids, "cluster, member and term of {what}");
    }

    // etcdctl prints the same header for each kind of request.
    let header = |revision: i64| ids.header_json(revision);
    assert_stdout(
        &etcdctl(&ep, &["put", "d", "1", "-w", "json"]),
        &format!("{{{}}}\n", header(6)),
    );
    assert_stdout(
        &etcdctl(&ep, &["get", "nothing", "-w", "json"]),
        &format!("{{{}}}\n", header(6)),
    );
    assert_stdout(
        &etcdctl(&ep, &["del", "d", "-w", "json"]),
        &format!("{{{},\"deleted\":1}}\n", header(7)),
    );
    assert_stdout(
        &etcdctl(&ep, &["del", "d", "-w", "json"]),
        &format!("{{{}}}\n", header(7)),
    );
    assert_stdout(
        &etcdctl_stdin(&ep, &["txn", "-w", "json"], "val(\"a\") = \"nope\"\n\n\n\n"),
        &format!("{{{}}}\n", header(7)),
    );
    let fields = etcdctl(&ep, &["get", "a", "-w", "fields"]);
    let fields = String::from_utf8_lossy(&fields.stdout).into_owned();
    for line in [
        format!("\"ClusterID\" : {}", ids.cluster_id),
        format!("\"MemberID\" : {}", ids.member_id),
        "\"Revision\" : 7".to_owned(),
        format!("\"RaftTerm\" : {}", ids.raft_term),
    ] {
        assert!(
            fields.lines().any(|l| l == line),
            "`{line}` in get -w fields:\n{fields}"
        );
    }
}
