//! KV.Put and KV.DeleteRange: prev_kv, ignore_value, ignore_lease, leases, deleting single
//! keys, ranges, prefixes and from-key, and the errors etcd gives for bad requests.

mod common;

use cairn_tests::{Server, assert_error, assert_stdout, etcdctl};
use common::{Ids, Kv, assert_grpc_error, connect, header_of, keys, kvs};
use etcd_client::{Client, DeleteOptions, GetOptions, PutOptions, Txn, TxnOp};

async fn revision(client: &mut Client) -> i64 {
    let response = client.get("any", None).await.expect("get");
    header_of(response.header()).revision()
}

async fn get_kv(client: &mut Client, key: impl Into<Vec<u8>>) -> Option<Kv> {
    let response = client.get(key, None).await.expect("get");
    response.kvs().first().map(Kv::from)
}

#[tokio::test]
async fn etcdctl_put_prints_ok_prev_kv_and_etcds_errors() {
    let server = Server::start();
    let ep = server.endpoint();
    let mut client = connect(&server).await;

    assert_stdout(&etcdctl(&ep, &["put", "foo", "bar"]), "OK\n");
    assert_stdout(
        &etcdctl(&ep, &["put", "foo", "baz", "--prev-kv"]),
        "OK\nfoo\nbar\n",
    );
    assert_stdout(&etcdctl(&ep, &["put", "new", "v", "--prev-kv"]), "OK\n");
    assert_eq!(
        get_kv(&mut client, "foo").await,
        Some(Kv::new("foo", "baz", 2, 3, 2))
    );

    // --ignore-value keeps the value but is still a modification.
    assert_stdout(&etcdctl(&ep, &["put", "foo", "--ignore-value"]), "OK\n");
    assert_eq!(
        get_kv(&mut client, "foo").await,
        Some(Kv::new("foo", "baz", 2, 5, 3))
    );
    assert_error(
        &etcdctl(&ep, &["put", "nokey", "--ignore-value"]),
        "etcdserver: key not found",
    );
    assert_error(
        &etcdctl(&ep, &["put", "foo", "x", "--lease=1234"]),
        "etcdserver: requested lease not found",
    );
    assert_error(
        &etcdctl(&ep, &["put", "", "v"]),
        "etcdserver: key is not provided",
    );
    assert_error(
        &etcdctl(&ep, &["get", ""]),
        "etcdserver: key is not provided",
    );
    assert_eq!(
        revision(&mut client).await,
        5,
        "refused puts take no revision"
    );

    // -w json of a put with --prev-kv.
    let ids = Ids::of(header_of(
        client.get("foo", None).await.expect("get").header(),
    ));
    assert_stdout(
        &etcdctl(&ep, &["put", "foo", "qux", "--prev-kv", "-w", "json"]),
        &format!(
            "{{{},\"prev_kv\":{}}}\n",
            ids.header_json(6),
            Kv::new("foo", "baz", 2, 5, 3).json()
        ),
    );
    assert_stdout(
        &etcdctl(&ep, &["put", "other", "1", "-w", "json"]),
        &format!("{{{}}}\n", ids.header_json(7)),
    );

    // Leases: --lease attaches, --ignore-lease keeps the attached lease, a plain put drops it.
    let lease = client
        .lease_grant(600, None)
        .await
        .expect("lease grant")
        .id();
    let lease_hex = format!("{lease:x}");
    assert_stdout(
        &etcdctl(
            &ep,
            &["put", "leased", "v1", &format!("--lease={lease_hex}")],
        ),
        "OK\n",
    );
    assert_eq!(
        get_kv(&mut client, "leased").await.map(|kv| kv.lease),
        Some(lease)
    );
    assert_stdout(
        &etcdctl(&ep, &["put", "leased", "v2", "--ignore-lease"]),
        "OK\n",
    );
    let kv = get_kv(&mut client, "leased").await.expect("leased");
    assert_eq!((kv.value.as_str(), kv.lease, kv.version), ("v2", lease, 2));
    assert_stdout(&etcdctl(&ep, &["put", "leased", "v3"]), "OK\n");
    let kv = get_kv(&mut client, "leased").await.expect("leased");
    assert_eq!((kv.value.as_str(), kv.lease, kv.version), ("v3", 0, 3));
}

#[tokio::test]
async fn etcd_client_put_options_prev_kv_ignore_value_ignore_lease_and_errors() {
    let server = Server::start();
    let mut client = connect(&server).await;

    // prev_kv: absent for a new key, the whole previous key-value otherwise.
    let response = client
        .put("k", "v1", Some(PutOptions::new().with_prev_key()))
        .await
        .expect("put");
    assert!(response.prev_key().is_none());
    assert_eq!(header_of(response.header()).revision(), 2);
    let response = client
        .put("k", "v2", Some(PutOptions::new().with_prev_key()))
        .await
        .expect("put");
    assert_eq!(
        response.prev_key().map(Kv::from),
        Some(Kv::new("k", "v1", 2, 2, 1))
    );
    assert_eq!(header_of(response.header()).revision(), 3);
    let response = client.put("k", "v3", None).await.expect("put");
    assert!(response.prev_key().is_none(), "prev_kv only when asked for");

    // ignore_value: the value stays, version and mod_revision move.
    let response = client
        .put(
            "k",
            "",
            Some(PutOptions::new().with_ignore_value().with_prev_key()),
        )
        .await
        .expect("put ignore_value");
    assert_eq!(
        response.prev_key().map(Kv::from),
        Some(Kv::new("k", "v3", 2, 4, 3))
    );
    assert_eq!(
        get_kv(&mut client, "k").await,
        Some(Kv::new("k", "v3", 2, 5, 4))
    );
    assert_grpc_error(
        client
            .put("missing", "", Some(PutOptions::new().with_ignore_value()))
            .await,
        "InvalidArgument",
        "etcdserver: key not found",
    );
    assert_grpc_error(
        client
            .put("k", "x", Some(PutOptions::new().with_ignore_value()))
            .await,
        "InvalidArgument",
        "etcdserver: value is provided",
    );

    // Leases.
    assert_grpc_error(
        client
            .put("k", "x", Some(PutOptions::new().with_lease(0x1234)))
            .await,
        "NotFound",
        "etcdserver: requested lease not found",
    );
    let lease = client
        .lease_grant(600, None)
        .await
        .expect("lease grant")
        .id();
    assert_ne!(lease, 0);
    client
        .put("l", "v1", Some(PutOptions::new().with_lease(lease)))
        .await
        .expect("put with lease");
    assert_eq!(
        get_kv(&mut client, "l").await.map(|kv| kv.lease),
        Some(lease)
    );
    client
        .put("l", "v2", Some(PutOptions::new().with_ignore_lease()))
        .await
        .expect("put ignore_lease");
    let kv = get_kv(&mut client, "l").await.expect("l");
    assert_eq!((kv.value.as_str(), kv.lease, kv.version), ("v2", lease, 2));
    client
        .put(
            "l",
            "",
            Some(PutOptions::new().with_ignore_lease().with_ignore_value()),
        )
        .await
        .expect("put ignore_lease ignore_value");
    let kv = get_kv(&mut client, "l").await.expect("l");
    assert_eq!((kv.value.as_str(), kv.lease, kv.version), ("v2", lease, 3));
    assert_grpc_error(
        client
            .put(
                "l",
                "v",
                Some(PutOptions::new().with_ignore_lease().with_lease(lease)),
            )
            .await,
        "InvalidArgument",
        "etcdserver: lease is provided",
    );
    client
        .put("l", "v4", None)
        .await
        .expect("put without lease");
    assert_eq!(get_kv(&mut client, "l").await.map(|kv| kv.lease), Some(0));
    client
        .put("l", "v5", Some(PutOptions::new().with_ignore_lease()))
        .await
        .expect("ignore_lease on a key without lease");
    assert_eq!(
        get_kv(&mut client, "l").await,
        Some(Kv::new("l", "v5", 6, 10, 5))
    );
    // Like ignore_value, ignore_lease needs an existing key.
    assert_grpc_error(
        client
            .put("nolease", "v", Some(PutOptions::new().with_ignore_lease()))
            .await,
        "InvalidArgument",
        "etcdserver: key not found",
    );

    // Keys and values are bytes: empty values and arbitrary bytes round-trip.
    client
        .put("empty", "", None)
        .await
        .expect("put empty value");
    let response = client.get("empty", None).await.expect("get");
    assert_eq!((response.count(), response.kvs()[0].value()), (1, &b""[..]));
    let key = b"\xffbin\x00key".to_vec();
    let value = b"\x00\x01\xfe\xff".to_vec();
    client
        .put(key.clone(), value.clone(), None)
        .await
        .expect("put bytes");
    let response = client.get(key.clone(), None).await.expect("get bytes");
    assert_eq!(response.kvs()[0].key(), &key[..]);
    assert_eq!(response.kvs()[0].value(), &value[..]);
    // A prefix of 0xff bytes has no upper bound: it reads from the key on.
    client
        .put(b"\xff\xff".to_vec(), "x", None)
        .await
        .expect("put");
    let response = client
        .get(
            b"\xff".to_vec(),
            Some(GetOptions::new().with_prefix().with_keys_only()),
        )
        .await
        .expect("get prefix 0xff");
    let found: Vec<&[u8]> = response.kvs().iter().map(|kv| kv.key()).collect();
    assert_eq!(found, [&key[..], &b"\xff\xff"[..]]);

    // Large values: 1 MiB is fine under the default --max-request-bytes (1.5 MiB); 1.75 MiB
    // is refused by the server (not by the gRPC transport limit, which is 512 KiB higher).
    let large = vec![b'x'; 1024 * 1024];
    client
        .put("large", large.clone(), None)
        .await
        .expect("put 1 MiB");
    let response = client.get("large", None).await.expect("get 1 MiB");
    assert!(
        response.kvs()[0].value() == &large[..],
        "1 MiB value round-trips"
    );
    let before = revision(&mut client).await;
    assert_grpc_error(
        client.put("larger", vec![b'y'; 1792 * 1024], None).await,
        "InvalidArgument",
        "etcdserver: request is too large",
    );
    assert_eq!(revision(&mut client).await, before);

    // An empty key is refused, and refused requests take no revision.
    assert_grpc_error(
        client.put("", "v", None).await,
        "InvalidArgument",
        "etcdserver: key is not provided",
    );
    assert_grpc_error(
        client.get("", None).await,
        "InvalidArgument",
        "etcdserver: key is not provided",
    );
    assert_grpc_error(
        client.delete("", None).await,
        "InvalidArgument",
        "etcdserver: key is not provided",
    );
    assert_eq!(revision(&mut client).await, before);
}

#[tokio::test]
async fn deletes_of_keys_ranges_prefixes_and_from_key_report_deleted_and_prev_kvs() {
    let server = Server::start();
    let ep = server.endpoint();
    let mut client = connect(&server).await;
    let seed = [
        ("a", "1"),
        ("b", "2"),
        ("c", "3"),
        ("d/1", "4"),
        ("d/2", "5"),
        ("e", "6"),
        ("f", "7"),
        ("g", "8"),
    ];
    for (key, value) in seed {
        client.put(key, value, None).await.expect("put");
    }
    let ids = Ids::of(header_of(
        client.get("a", None).await.expect("get").header(),
    ));
    assert_eq!(revision(&mut client).await, 9);

    // etcdctl prints the number deleted, then the previous key-values if asked.
    assert_stdout(&etcdctl(&ep, &["del", "a"]), "1\n");
    assert_stdout(&etcdctl(&ep, &["del", "a"]), "0\n");
    assert_eq!(
        revision(&mut client).await,
        10,
        "deleting nothing takes no revision"
    );
    assert_stdout(&etcdctl(&ep, &["del", "b", "c", "--prev-kv"]), "1\nb\n2\n");
    assert_stdout(
        &etcdctl(&ep, &["del", "--prefix", "d/", "--prev-kv", "-w", "json"]),
        &format!(
            "{{{},\"deleted\":2,\"prev_kvs\":[{},{}]}}\n",
            ids.header_json(12),
            Kv::new("d/1", "4", 5, 5, 1).json(),
            Kv::new("d/2", "5", 6, 6, 1).json()
        ),
    );
    assert_stdout(&etcdctl(&ep, &["del", "--from-key", "f"]), "2\n");
    assert_error(
        &etcdctl(&ep, &["del", ""]),
        "etcdserver: key is not provided",
    );
    assert_stdout(&etcdctl(&ep, &["get", "--from-key", ""]), "c\n3\ne\n6\n");
    assert_eq!(
        revision(&mut client).await,
        13,
        "one revision per delete request"
    );
    // History before the deletes is still there.
    assert_stdout(
        &etcdctl(&ep, &["get", "--prefix", "d/", "--rev", "11"]),
        "d/1\n4\nd/2\n5\n",
    );

    // The same through etcd-client.
    for key in ["x/1", "x/2", "x/3", "x/4", "x/5", "y", "z"] {
        client.put(key, key, None).await.expect("put");
    }
    let rev = revision(&mut client).await;
    assert_eq!(rev, 20);
    let response = client
        .delete("x/1", Some(DeleteOptions::new().with_prev_key()))
        .await
        .expect("delete");
    assert_eq!(response.deleted(), 1);
    assert_eq!(kvs(response.prev_kvs()), [Kv::new("x/1", "x/1", 14, 14, 1)]);
    assert_eq!(header_of(response.header()).revision(), 21);

    let response = client.delete("x/1", None).await.expect("delete");
    assert_eq!((response.deleted(), response.prev_kvs().len()), (0, 0));
    assert_eq!(header_of(response.header()).revision(), 21);

    let response = client
        .delete(
            "x/2",
            Some(DeleteOptions::new().with_range("x/4").with_prev_key()),
        )
        .await
        .expect("delete range");
    assert_eq!(response.deleted(), 2);
    assert_eq!(keys(response.prev_kvs()), ["x/2", "x/3"]);
    assert_eq!(header_of(response.header()).revision(), 22);

    let response = client
        .delete("x/", Some(DeleteOptions::new().with_prefix()))
        .await
        .expect("delete prefix");
    assert_eq!((response.deleted(), response.prev_kvs().len()), (2, 0));
    assert_eq!(header_of(response.header()).revision(), 23);

    let response = client
        .delete(
            "y",
            Some(DeleteOptions::new().with_from_key().with_prev_key()),
        )
        .await
        .expect("delete from key");
    assert_eq!(response.deleted(), 2);
    assert_eq!(
        kvs(response.prev_kvs()),
        [Kv::new("y", "y", 19, 19, 1), Kv::new("z", "z", 20, 20, 1)]
    );
    assert_eq!(header_of(response.header()).revision(), 24);

    // Deleted keys are gone now but readable in history; a new put starts a new generation.
    assert_eq!(get_kv(&mut client, "x/3").await, None);
    let response = client
        .get(
            "x/",
            Some(GetOptions::new().with_prefix().with_revision(21)),
        )
        .await
        .expect("get history");
    assert_eq!(keys(response.kvs()), ["x/2", "x/3", "x/4", "x/5"]);
    client.put("x/3", "again", None).await.expect("put");
    assert_eq!(
        get_kv(&mut client, "x/3").await,
        Some(Kv::new("x/3", "again", 25, 25, 1))
    );

    // All keys at once.
    let response = client
        .delete(
            "",
            Some(DeleteOptions::new().with_all_keys().with_prev_key()),
        )
        .await
        .expect("delete all");
    assert_eq!(response.deleted(), 3);
    assert_eq!(keys(response.prev_kvs()), ["c", "e", "x/3"]);
    assert_eq!(header_of(response.header()).revision(), 26);
    let response = client
        .get("", Some(GetOptions::new().with_all_keys()))
        .await
        .expect("get all");
    assert_eq!(
        (response.count(), header_of(response.header()).revision()),
        (0, 26)
    );
}

#[tokio::test]
async fn requests_larger_than_max_request_bytes_are_refused() {
    let server = Server::start_with_args(&["--max-request-bytes", "1024"]);
    let ep = server.endpoint();
    let mut client = connect(&server).await;

    let small = "s".repeat(512);
    let big = "b".repeat(2048);
    assert_stdout(&etcdctl(&ep, &["put", "small", &small]), "OK\n");
    assert_error(
        &etcdctl(&ep, &["put", "big", &big]),
        "etcdserver: request is too large",
    );
    assert_grpc_error(
        client.put("big", big.clone(), None).await,
        "InvalidArgument",
        "etcdserver: request is too large",
    );
    // Many small operations that add up to too much are refused as a whole.
    let ops: Vec<TxnOp> = (0..4)
        .map(|i| TxnOp::put(format!("t{i}"), small.clone(), None))
        .collect();
    assert_grpc_error(
        client.txn(Txn::new().and_then(ops)).await,
        "InvalidArgument",
        "etcdserver: request is too large",
    );
    assert_eq!(
        revision(&mut client).await,
        2,
        "refused requests take no revision"
    );
    let response = client
        .get("", Some(GetOptions::new().with_all_keys().with_keys_only()))
        .await
        .expect("get");
    assert_eq!(keys(response.kvs()), ["small"]);
}
