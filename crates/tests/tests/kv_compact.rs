//! KV.Compact: reads below the compacted revision are refused, reads above the current
//! revision are refused, current values and the revision counter are untouched, and compacting
//! again at or below the compacted revision (or in the future) fails as in etcd.

mod common;

use cairn_tests::{Server, assert_error, assert_stdout, etcdctl};
use common::{Kv, assert_grpc_error, connect, header_of, kvs};
use etcd_client::{Client, CompactionOptions, GetOptions, Txn, TxnOp};

const COMPACTED: &str = "etcdserver: mvcc: required revision has been compacted";
const FUTURE: &str = "etcdserver: mvcc: required revision is a future revision";

async fn all_kvs(client: &mut Client) -> Vec<Kv> {
    let response = client
        .get("", Some(GetOptions::new().with_all_keys()))
        .await
        .expect("get all");
    kvs(response.kvs())
}

#[tokio::test]
async fn compacted_and_future_revisions_are_refused_and_current_values_stay() {
    let server = Server::start();
    let ep = server.endpoint();
    let mut client = connect(&server).await;
    for value in ["v1", "v2", "v3", "v4", "v5"] {
        client.put("k", value, None).await.expect("put");
    }
    client.put("gone", "x", None).await.expect("put");
    client.delete("gone", None).await.expect("delete");
    client.put("other", "o", None).await.expect("put");
    // k: revisions 2..=6; gone: put at 7, deleted at 8; other: 9.
    let before = all_kvs(&mut client).await;
    assert_eq!(
        before,
        [Kv::new("k", "v5", 2, 6, 5), Kv::new("other", "o", 9, 9, 1)]
    );

    assert_stdout(&etcdctl(&ep, &["compact", "4"]), "compacted revision 4\n");

    // Below the compacted revision: refused. At it and above: the old state.
    for rev in ["1", "3"] {
        assert_error(&etcdctl(&ep, &["get", "k", "--rev", rev]), COMPACTED);
    }
    assert_stdout(&etcdctl(&ep, &["get", "k", "--rev", "4"]), "k\nv3\n");
    assert_stdout(&etcdctl(&ep, &["get", "gone", "--rev", "7"]), "gone\nx\n");
    assert_error(&etcdctl(&ep, &["get", "k", "--rev", "10"]), FUTURE);
    assert_grpc_error(
        client
            .get("k", Some(GetOptions::new().with_revision(3)))
            .await,
        "OutOfRange",
        COMPACTED,
    );
    assert_grpc_error(
        client
            .get("k", Some(GetOptions::new().with_revision(10)))
            .await,
        "OutOfRange",
        FUTURE,
    );
    let response = client
        .get("k", Some(GetOptions::new().with_revision(5)))
        .await
        .expect("get at an uncompacted revision");
    assert_eq!(kvs(response.kvs()), [Kv::new("k", "v4", 2, 5, 4)]);
    // A read inside a txn is refused the same way.
    assert_grpc_error(
        client
            .txn(Txn::new().and_then([TxnOp::get("k", Some(GetOptions::new().with_revision(2)))]))
            .await,
        "OutOfRange",
        COMPACTED,
    );

    // The latest state is untouched, and compaction takes no revision.
    assert_eq!(all_kvs(&mut client).await, before);

    // Compacting again at or below the compacted revision, or beyond the current one, fails.
    assert_error(&etcdctl(&ep, &["compact", "4"]), COMPACTED);
    assert_error(&etcdctl(&ep, &["compact", "3"]), COMPACTED);
    assert_error(&etcdctl(&ep, &["compact", "10"]), FUTURE);
    assert_grpc_error(client.compact(4, None).await, "OutOfRange", COMPACTED);
    assert_grpc_error(client.compact(100, None).await, "OutOfRange", FUTURE);

    // --physical waits for the compaction to be applied to the backend.
    assert_stdout(
        &etcdctl(&ep, &["compact", "7", "--physical"]),
        "compacted revision 7\n",
    );
    assert_stdout(&etcdctl(&ep, &["get", "gone", "--rev", "7"]), "gone\nx\n");
    let response = client
        .compact(8, Some(CompactionOptions::new().with_physical()))
        .await
        .expect("physical compaction");
    assert_eq!(header_of(response.header()).revision(), 9);
    assert_stdout(&etcdctl(&ep, &["get", "gone", "--rev", "8"]), "");
    assert_error(&etcdctl(&ep, &["get", "gone", "--rev", "7"]), COMPACTED);
    assert_eq!(all_kvs(&mut client).await, before);

    // Compacting up to the current revision is allowed; writes go on from there.
    assert_stdout(&etcdctl(&ep, &["compact", "9"]), "compacted revision 9\n");
    assert_stdout(&etcdctl(&ep, &["get", "k", "--rev", "9"]), "k\nv5\n");
    let response = client.put("k", "v6", None).await.expect("put");
    assert_eq!(header_of(response.header()).revision(), 10);
    assert_eq!(
        all_kvs(&mut client).await,
        [Kv::new("k", "v6", 2, 10, 6), Kv::new("other", "o", 9, 9, 1)]
    );
    assert_error(&etcdctl(&ep, &["get", "k", "--rev", "8"]), COMPACTED);
}
