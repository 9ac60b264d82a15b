//! KV.Txn: compares on every target with every operator (also over ranges), the success and
//! failure branches, nested transactions, one revision per transaction, the --max-txn-ops
//! limit, duplicate keys, and etcdctl's `txn` script read from stdin.

mod common;

use cairn_tests::{Server, assert_error, assert_stdout, describe, etcdctl_stdin, ok_stdout};
use common::{Ids, Kv, assert_grpc_error, connect, grpc_code, grpc_message, header_of, keys, kvs};
use etcd_client::{
    Client, Compare, CompareOp, DeleteOptions, GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse,
};

async fn revision(client: &mut Client) -> i64 {
    let response = client.get("any", None).await.expect("get");
    header_of(response.header()).revision()
}

/// Which branch ran: the success branch has one Get, the failure branch two.
async fn branch(client: &mut Client, compares: Vec<Compare>) -> bool {
    let txn = Txn::new()
        .when(compares)
        .and_then([TxnOp::get("t", None)])
        .or_else([TxnOp::get("t", None), TxnOp::get("t", None)]);
    let response = client.txn(txn).await.expect("txn");
    let ran = response.op_responses().len();
    assert_eq!(
        ran,
        if response.succeeded() { 1 } else { 2 },
        "the branch that ran matches `succeeded`"
    );
    response.succeeded()
}

fn ops() -> [(CompareOp, &'static str); 4] {
    [
        (CompareOp::Equal, "="),
        (CompareOp::Greater, ">"),
        (CompareOp::Less, "<"),
        (CompareOp::NotEqual, "!="),
    ]
}

/// Whether `actual <op> operand` holds, where `ordering` is actual.cmp(operand).
fn holds(op: CompareOp, ordering: std::cmp::Ordering) -> bool {
    use std::cmp::Ordering::*;
    match op {
        CompareOp::Equal => ordering == Equal,
        CompareOp::Greater => ordering == Greater,
        CompareOp::Less => ordering == Less,
        CompareOp::NotEqual => ordering != Equal,
    }
}

#[tokio::test]
async fn txn_compares_value_version_create_mod_and_lease_with_every_operator() {
    let server = Server::start();
    let mut client = connect(&server).await;
    let lease = client
        .lease_grant(600, None)
        .await
        .expect("lease grant")
        .id();
    assert!(lease > 1);
    client.put("t", "v1", None).await.expect("put");
    client.put("filler", "f", None).await.expect("put");
    client
        .put("t", "v2", Some(PutOptions::new().with_lease(lease)))
        .await
        .expect("put");
    let kv = Kv::from(&client.get("t", None).await.expect("get").kvs()[0]);
    assert_eq!(
        (kv.create_revision, kv.mod_revision, kv.version, kv.lease),
        (2, 4, 2, lease)
    );

    // Every target x operator x (smaller, equal, larger) operand.
    for (op, op_name) in ops() {
        for (operand_name, ordering) in [
            ("smaller", std::cmp::Ordering::Greater),
            ("equal", std::cmp::Ordering::Equal),
            ("larger", std::cmp::Ordering::Less),
        ] {
            let pick = |smaller: i64, equal: i64, larger: i64| match operand_name {
                "smaller" => smaller,
                "equal" => equal,
                _ => larger,
            };
            let value = match operand_name {
                "smaller" => "v1",
                "equal" => "v2",
                _ => "v3",
            };
            let cases = [
                ("value", Compare::value("t", op, value)),
                ("version", Compare::version("t", op, pick(1, 2, 3))),
                ("create", Compare::create_revision("t", op, pick(1, 2, 3))),
                ("mod", Compare::mod_revision("t", op, pick(3, 4, 5))),
                (
                    "lease",
                    Compare::lease("t", op, pick(lease - 1, lease, lease + 1)),
                ),
            ];
            for (target, compare) in cases {
                assert_eq!(
                    branch(&mut client, vec![compare]).await,
                    holds(op, ordering),
                    "{target}(t) {op_name} {operand_name} operand"
                );
            }
        }
    }

    // A missing key compares as zero version, revisions and lease; a value compare on a
    // missing key always fails.
    let missing: [(&str, Compare, bool); 8] = [
        (
            "version = 0",
            Compare::version("nope", CompareOp::Equal, 0),
            true,
        ),
        (
            "create = 0",
            Compare::create_revision("nope", CompareOp::Equal, 0),
            true,
        ),
        (
            "mod = 0",
            Compare::mod_revision("nope", CompareOp::Equal, 0),
            true,
        ),
        (
            "lease = 0",
            Compare::lease("nope", CompareOp::Equal, 0),
            true,
        ),
        (
            "version > 0",
            Compare::version("nope", CompareOp::Greater, 0),
            false,
        ),
        (
            "value = \"\"",
            Compare::value("nope", CompareOp::Equal, ""),
            false,
        ),
        (
            "value != x",
            Compare::value("nope", CompareOp::NotEqual, "x"),
            false,
        ),
        (
            "value < x",
            Compare::value("nope", CompareOp::Less, "x"),
            false,
        ),
    ];
    for (name, compare, expected) in missing {
        assert_eq!(
            branch(&mut client, vec![compare]).await,
            expected,
            "missing key: {name}"
        );
    }

    // All compares must hold.
    let yes = || Compare::version("t", CompareOp::Equal, 2);
    let no = || Compare::value("t", CompareOp::Equal, "nope");
    assert!(branch(&mut client, vec![yes(), yes()]).await);
    assert!(!branch(&mut client, vec![yes(), no()]).await);
    assert!(!branch(&mut client, vec![no(), yes()]).await);
    assert!(branch(&mut client, vec![]).await, "no compares: success");

    // Compares over a range hold only if they hold for every key in it.
    client.put("r/1", "a", None).await.expect("put");
    client.put("r/2", "b", None).await.expect("put");
    client.put("r/2", "b", None).await.expect("put");
    client.put("r/3", "c", None).await.expect("put");
    let ranges: [(&str, Compare, bool); 10] = [
        (
            "prefix version > 0",
            Compare::version("r/", CompareOp::Greater, 0).with_prefix(),
            true,
        ),
        (
            "prefix version = 1",
            Compare::version("r/", CompareOp::Equal, 1).with_prefix(),
            false,
        ),
        (
            "prefix version < 3",
            Compare::version("r/", CompareOp::Less, 3).with_prefix(),
            true,
        ),
        (
            "[r/1, r/2) version = 1",
            Compare::version("r/1", CompareOp::Equal, 1).with_range("r/2"),
            true,
        ),
        (
            "[r/1, r/3) value < c",
            Compare::value("r/1", CompareOp::Less, "c").with_range("r/3"),
            true,
        ),
        (
            "[r/1, r/4) value < c",
            Compare::value("r/1", CompareOp::Less, "c").with_range("r/4"),
            false,
        ),
        (
            "from r/3 version > 0",
            Compare::version("r/3", CompareOp::Greater, 0).with_range(vec![0]),
            true,
        ),
        (
            "from r/3 version = 1",
            Compare::version("r/3", CompareOp::Equal, 1).with_range(vec![0]),
            false,
        ),
        (
            "empty prefix version = 0",
            Compare::version("zz/", CompareOp::Equal, 0).with_prefix(),
            true,
        ),
        (
            "empty prefix value = \"\"",
            Compare::value("zz/", CompareOp::Equal, "").with_prefix(),
            false,
        ),
    ];
    for (name, compare, expected) in ranges {
        assert_eq!(
            branch(&mut client, vec![compare]).await,
            expected,
            "range: {name}"
        );
    }
}

#[tokio::test]
async fn txn_runs_one_branch_in_one_revision_including_nested_txns() {
    let server = Server::start();
    let mut client = connect(&server).await;
    client.put("a", "1", None).await.expect("put");
    client.put("gone", "x", None).await.expect("put");
    assert_eq!(revision(&mut client).await, 3);

    // Success: several writes and reads, applied in order, all at one new revision.
    let txn = Txn::new()
        .when([Compare::value("a", CompareOp::Equal, "1")])
        .and_then([
            TxnOp::put("a", "2", Some(PutOptions::new().with_prev_key())),
            TxnOp::put("b", "1", None),
            TxnOp::get("a", None),
            TxnOp::delete("gone", Some(DeleteOptions::new().with_prev_key())),
            TxnOp::put("c", "1", None),
            TxnOp::get("", Some(GetOptions::new().with_all_keys())),
        ])
        .or_else([TxnOp::put("failed", "1", None)]);
    let response = client.txn(txn).await.expect("txn");
    assert!(response.succeeded());
    assert_eq!(
        header_of(response.header()).revision(),
        4,
        "one revision per txn"
    );
    let responses = response.op_responses();
    assert_eq!(responses.len(), 6);
    match &responses[0] {
        TxnOpResponse::Put(put) => {
            assert_eq!(
                put.prev_key().map(Kv::from),
                Some(Kv::new("a", "1", 2, 2, 1))
            );
        }
        other => panic!("expected a put response, got {other:?}"),
    }
    assert!(matches!(&responses[1], TxnOpResponse::Put(put) if put.prev_key().is_none()));
    match &responses[2] {
        TxnOpResponse::Get(get) => {
            assert_eq!(
                kvs(get.kvs()),
                [Kv::new("a", "2", 2, 4, 2)],
                "reads see earlier ops"
            );
        }
        other => panic!("expected a get response, got {other:?}"),
    }
    match &responses[3] {
        TxnOpResponse::Delete(delete) => {
            assert_eq!(delete.deleted(), 1);
            assert_eq!(kvs(delete.prev_kvs()), [Kv::new("gone", "x", 3, 3, 1)]);
        }
        other => panic!("expected a delete response, got {other:?}"),
    }
    match &responses[5] {
        TxnOpResponse::Get(get) => assert_eq!(
            kvs(get.kvs()),
            [
                Kv::new("a", "2", 2, 4, 2),
                Kv::new("b", "1", 4, 4, 1),
                Kv::new("c", "1", 4, 4, 1),
            ]
        ),
        other => panic!("expected a get response, got {other:?}"),
    }
    assert_eq!(revision(&mut client).await, 4);

    // Failure: only the failure branch runs.
    let txn = Txn::new()
        .when([Compare::value("a", CompareOp::Equal, "1")])
        .and_then([TxnOp::put("success", "1", None)])
        .or_else([TxnOp::put("failure", "1", None), TxnOp::put("b", "2", None)]);
    let response = client.txn(txn).await.expect("txn");
    assert!(!response.succeeded());
    assert_eq!(header_of(response.header()).revision(), 5);
    assert_eq!(response.op_responses().len(), 2);
    let all = client
        .get("", Some(GetOptions::new().with_all_keys()))
        .await
        .expect("get");
    assert_eq!(keys(all.kvs()), ["a", "b", "c", "failure"]);
    assert_eq!(
        kvs(all.kvs())[1],
        Kv::new("b", "2", 4, 5, 2),
        "the failure branch wrote b"
    );

    // Transactions that change nothing take no revision.
    let response = client
        .txn(Txn::new().and_then([TxnOp::get("a", None), TxnOp::get("b", None)]))
        .await
        .expect("read-only txn");
    assert!(response.succeeded());
    assert_eq!(header_of(response.header()).revision(), 5);
    let response = client.txn(Txn::new()).await.expect("empty txn");
    assert!(response.succeeded());
    assert_eq!(header_of(response.header()).revision(), 5);
    let response = client
        .txn(Txn::new().and_then([TxnOp::delete("nothing-here", None)]))
        .await
        .expect("txn deleting nothing");
    assert_eq!(header_of(response.header()).revision(), 5);
    assert_eq!(revision(&mut client).await, 5);

    // Nested txns: the inner compares see the store as it was before the outer txn, the
    // inner reads see the outer writes, and everything lands in one revision.
    client.put("x", "old", None).await.expect("put");
    let inner = Txn::new()
        .when([Compare::value("x", CompareOp::Equal, "old")])
        .and_then([TxnOp::put("y", "saw-old", None), TxnOp::get("x", None)])
        .or_else([TxnOp::put("y", "saw-new", None)]);
    let outer = Txn::new()
        .when([Compare::version("x", CompareOp::Equal, 1)])
        .and_then([
            TxnOp::put("x", "new", None),
            TxnOp::txn(inner),
            TxnOp::put("z", "1", None),
        ]);
    let response = client.txn(outer).await.expect("nested txn");
    assert!(response.succeeded());
    assert_eq!(header_of(response.header()).revision(), 7);
    let responses = response.op_responses();
    assert_eq!(responses.len(), 3);
    match &responses[1] {
        TxnOpResponse::Txn(inner) => {
            assert!(inner.succeeded(), "inner compare saw x = old");
            let inner_responses = inner.op_responses();
            assert_eq!(inner_responses.len(), 2);
            match &inner_responses[1] {
                TxnOpResponse::Get(get) => {
                    assert_eq!(kvs(get.kvs()), [Kv::new("x", "new", 6, 7, 2)]);
                }
                other => panic!("expected a get response, got {other:?}"),
            }
        }
        other => panic!("expected a txn response, got {other:?}"),
    }
    let all = client
        .get("x", Some(GetOptions::new().with_range("zz")))
        .await
        .expect("get");
    assert_eq!(
        kvs(all.kvs()),
        [
            Kv::new("x", "new", 6, 7, 2),
            Kv::new("y", "saw-old", 7, 7, 1),
            Kv::new("z", "1", 7, 7, 1),
        ]
    );
    // A nested txn whose compare fails runs its own failure branch.
    let inner = Txn::new()
        .when([Compare::value("x", CompareOp::Equal, "old")])
        .and_then([TxnOp::put("y", "saw-old", None)])
        .or_else([TxnOp::put("y", "saw-new", None)]);
    let response = client
        .txn(Txn::new().and_then([TxnOp::txn(inner)]))
        .await
        .expect("nested txn");
    assert!(matches!(&response.op_responses()[0], TxnOpResponse::Txn(inner) if !inner.succeeded()));
    let y = client.get("y", None).await.expect("get");
    assert_eq!(kvs(y.kvs()), [Kv::new("y", "saw-new", 7, 8, 2)]);
}

#[tokio::test]
async fn txn_op_limit_and_duplicate_keys_are_refused() {
    let server = Server::start_with_args(&["--max-txn-ops", "3"]);
    let ep = server.endpoint();
    let mut client = connect(&server).await;
    let puts = |n: usize| -> Vec<TxnOp> {
        (0..n)
            .map(|i| TxnOp::put(format!("k{i}"), "v", None))
            .collect()
    };

    let response = client
        .txn(Txn::new().and_then(puts(3)).or_else(puts(3)))
        .await
        .expect("3 ops per branch is within the limit");
    assert_eq!(header_of(response.header()).revision(), 2);
    for txn in [
        Txn::new().and_then(puts(4)),
        Txn::new().or_else(puts(4)),
        Txn::new().when(vec![Compare::version("k0", CompareOp::Greater, 0); 4]),
    ] {
        assert_grpc_error(
            client.txn(txn).await,
            "InvalidArgument",
            "etcdserver: too many operations in txn request",
        );
    }
    assert_error(
        &etcdctl_stdin(&ep, &["txn"], "\nput a 1\nput b 1\nput c 1\nput d 1\n\n\n"),
        "etcdserver: too many operations in txn request",
    );

    let duplicates: [(&str, Txn); 5] = [
        (
            "put, put",
            Txn::new().and_then([TxnOp::put("k", "1", None), TxnOp::put("k", "2", None)]),
        ),
        (
            "put, delete",
            Txn::new().and_then([TxnOp::put("k", "1", None), TxnOp::delete("k", None)]),
        ),
        (
            "delete prefix, put",
            Txn::new().and_then([
                TxnOp::delete("k", Some(DeleteOptions::new().with_prefix())),
                TxnOp::put("k1", "1", None),
            ]),
        ),
        (
            "failure branch put, put",
            Txn::new().or_else([TxnOp::put("k", "1", None), TxnOp::put("k", "2", None)]),
        ),
        (
            "outer put, nested put",
            Txn::new().and_then([
                TxnOp::put("k", "1", None),
                TxnOp::txn(Txn::new().and_then([TxnOp::put("k", "2", None)])),
            ]),
        ),
    ];
    for (name, txn) in duplicates {
        let result = client.txn(txn).await;
        assert!(
            matches!(&result, Err(e) if grpc_code(e) == "InvalidArgument"
                && grpc_message(e) == "etcdserver: duplicate key given in txn request"),
            "{name}: {result:?}"
        );
    }
    assert_error(
        &etcdctl_stdin(&ep, &["txn"], "\nput a 1\nput a 2\n\n\n"),
        "etcdserver: duplicate key given in txn request",
    );
    assert_eq!(
        revision(&mut client).await,
        2,
        "refused txns take no revision"
    );

    // The same key in both branches, or read and written, is fine.
    let response = client
        .txn(
            Txn::new()
                .and_then([TxnOp::get("k", None), TxnOp::put("k", "s", None)])
                .or_else([TxnOp::put("k", "f", None)]),
        )
        .await
        .expect("same key in both branches");
    assert!(response.succeeded());
    assert_eq!(header_of(response.header()).revision(), 3);
}

#[tokio::test]
async fn etcdctl_txn_reads_compares_and_branches_from_stdin() {
    let server = Server::start();
    let ep = server.endpoint();
    let mut client = connect(&server).await;
    client.put("t", "v1", None).await.expect("put");
    client.put("t", "v2", None).await.expect("put");
    let ids = Ids::of(header_of(
        client.put("u", "x", None).await.expect("put").header(),
    ));
    // t: create 2, mod 3, version 2, value v2; current revision 4.

    let txn = |script: &str| etcdctl_stdin(&ep, &["txn"], script);
    // Each compare form etcdctl knows, every operator.
    let compares = [
        ("ver(\"t\") = \"2\"", true),
        ("version(\"t\") > \"1\"", true),
        ("ver(\"t\") < \"2\"", false),
        ("ver(\"t\") != \"2\"", false),
        ("c(\"t\") = \"2\"", true),
        ("create(\"t\") < \"2\"", false),
        ("m(\"t\") = \"3\"", true),
        ("mod(\"t\") > \"3\"", false),
        ("val(\"t\") = \"v2\"", true),
        ("value(\"t\") != \"v2\"", false),
        ("value(\"t\") < \"v3\"", true),
        ("value(\"nope\") = \"\"", false),
        ("ver(\"nope\") = \"0\"", true),
    ];
    for (compare, holds) in compares {
        let expected = if holds {
            "SUCCESS\n\nt\nv2\n"
        } else {
            "FAILURE\n\nu\nx\n"
        };
        let out = txn(&format!("{compare}\n\nget t\n\nget u\n\n"));
        assert_eq!(
            ok_stdout(&out),
            expected,
            "compare {compare}:\n{}",
            describe(&out)
        );
    }

    // Several compares, then success ops of every kind, printed one after another.
    assert_stdout(
        &txn(
            "ver(\"t\") = \"2\"\nval(\"u\") = \"x\"\n\nput t v3\nput n 1\nget t\ndel u\n\nput f 1\n\n",
        ),
        "SUCCESS\n\nOK\n\nOK\n\nt\nv3\n\n1\n",
    );
    assert_eq!(revision(&mut client).await, 5);
    // The failure branch.
    assert_stdout(
        &txn("ver(\"t\") = \"2\"\n\nput never 1\n\nput f 1\nget --prefix t\ndel --prefix n\n\n"),
        "FAILURE\n\nOK\n\nt\nv3\n\n1\n",
    );
    // No compares: success; no ops: just the verdict.
    assert_stdout(&txn("\nput e 1\n\n\n"), "SUCCESS\n\nOK\n");
    assert_stdout(&txn("val(\"e\") = \"2\"\n\n\n\n"), "FAILURE\n");
    assert_eq!(revision(&mut client).await, 7);

    // -w json: the header and each response, as etcdctl prints them.
    let out = etcdctl_stdin(
        &ep,
        &["txn", "-w", "json"],
        "val(\"e\") = \"1\"\n\nput e 2\nget e\n\n\n",
    );
    assert_stdout(
        &out,
        &format!(
            "{{{},\"succeeded\":true,\"responses\":[\
             {{\"Response\":{{\"ResponsePut\":{{\"header\":{{\"revision\":8}}}}}}}},\
             {{\"Response\":{{\"ResponseRange\":{{\"header\":{{\"revision\":8}},\"kvs\":[{}],\"count\":1}}}}}}]}}\n",
            ids.header_json(8),
            Kv::new("e", "2", 7, 8, 2).json()
        ),
    );
    let all = client
        .get("", Some(GetOptions::new().with_all_keys().with_keys_only()))
        .await
        .expect("get");
    assert_eq!(keys(all.kvs()), ["e", "f", "t"]);
}
