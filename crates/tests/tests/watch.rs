//! Watch: which keys a watcher sees (key, prefix, range, from-key), start revisions in the
//! past, now and the future, compacted start revisions, filters and prev_kv, many watchers on
//! one stream (client-chosen ids, duplicates, progress, cancel), server-chosen ids never
//! reused, empty ranges refused and the empty key, one response per revision (txn, lease
//! revoke), fragmentation of a revision beyond the request limit, and `etcdctl watch`'s
//! output. Every wait is bounded; nothing asserts by sleeping.

mod common;
#[path = "common/watching.rs"]
mod watching;

use std::collections::BTreeMap;

use cairn_tests::{Server, assert_error, describe, etcdctl};
use common::{Kv, connect};
use etcd_client::{
    Client, DeleteOptions, PutOptions, Txn, TxnOp, WatchFilterType, WatchOptions, WatchStream,
    Watcher,
};
use watching::{
    CtlProcess, Ev, STEP, collect, connect_streaming, events, header_revision, is_fragment,
    next_response,
};

async fn watch(client: &mut Client, key: &str, options: WatchOptions) -> (Watcher, WatchStream) {
    tokio::time::timeout(STEP, client.watch(key, Some(options)))
        .await
        .expect("watch created in time")
        .expect("watch")
}

async fn put(client: &mut Client, key: &str, value: &str) -> i64 {
    let response = client.put(key, value, None).await.expect("put");
    response.header().expect("header").revision()
}

async fn delete(client: &mut Client, key: &str) -> i64 {
    let response = client.delete(key, None).await.expect("delete");
    response.header().expect("header").revision()
}

fn flat(groups: Vec<Vec<Ev>>) -> Vec<Ev> {
    groups.into_iter().flatten().collect()
}

#[tokio::test]
async fn watchers_on_a_key_a_prefix_a_range_and_from_a_key_see_exactly_their_events() {
    let server = Server::start();
    let mut client = connect(&server).await;
    let mut streams = connect_streaming(&server).await;
    assert_eq!(put(&mut client, "a", "0").await, 2);

    let mut watchers = Vec::new();
    for (name, key, options) in [
        ("key b", "b", WatchOptions::new()),
        ("prefix b", "b", WatchOptions::new().with_prefix()),
        ("range [b, d)", "b", WatchOptions::new().with_range("d")),
        ("from key c", "c", WatchOptions::new().with_from_key()),
    ] {
        watchers.push((name, watch(&mut streams, key, options).await));
    }

    assert_eq!(put(&mut client, "b", "1").await, 3);
    assert_eq!(put(&mut client, "ba", "2").await, 4);
    assert_eq!(put(&mut client, "c", "3").await, 5);
    assert_eq!(put(&mut client, "d", "4").await, 6);
    assert_eq!(put(&mut client, "b", "5").await, 7);
    assert_eq!(delete(&mut client, "b").await, 8);
    assert_eq!(delete(&mut client, "ba").await, 9);
    assert_eq!(put(&mut client, "a", "not watched").await, 10);
    // The closing write every watcher sees: anything unexpected would arrive before it.
    let closing = Txn::new().and_then([TxnOp::put("b", "end", None), TxnOp::put("z", "end", None)]);
    client.txn(closing).await.expect("txn");

    let b3 = Ev::put("b", "1", 3, 3, 1);
    let ba4 = Ev::put("ba", "2", 4, 4, 1);
    let c5 = Ev::put("c", "3", 5, 5, 1);
    let d6 = Ev::put("d", "4", 6, 6, 1);
    let b7 = Ev::put("b", "5", 3, 7, 2);
    let del_b8 = Ev::delete("b", 8);
    let del_ba9 = Ev::delete("ba", 9);
    let b11 = Ev::put("b", "end", 11, 11, 1);
    let z11 = Ev::put("z", "end", 11, 11, 1);
    let expected = [
        vec![b3.clone(), b7.clone(), del_b8.clone(), b11.clone()],
        vec![
            b3.clone(),
            ba4.clone(),
            b7.clone(),
            del_b8.clone(),
            del_ba9.clone(),
            b11.clone(),
        ],
        vec![b3, ba4, c5.clone(), b7, del_b8, del_ba9, b11],
        vec![c5, d6, z11],
    ];
    for ((name, (watcher, mut stream)), expected) in watchers.into_iter().zip(expected) {
        let mut seen = Vec::new();
        while seen.len() < expected.len() {
            let response = next_response(&mut stream).await;
            assert_eq!(response.watch_id(), watcher.watch_id(), "{name}");
            let group = events(&response);
            assert!(!group.is_empty(), "{name}: event-free {response:?}");
            // Live events come one revision per response, the header at that revision.
            for event in &group {
                assert_eq!(event.revision(), header_revision(&response), "{name}");
            }
            seen.extend(group);
        }
        assert_eq!(seen, expected, "{name}");
    }
}

#[tokio::test]
async fn start_revisions_replay_the_past_zero_means_now_and_the_future_waits() {
    let server = Server::start();
    let mut client = connect(&server).await;
    let mut streams = connect_streaming(&server).await;
    put(&mut client, "k", "1").await; // 2
    put(&mut client, "k", "2").await; // 3
    put(&mut client, "other", "x").await; // 4
    assert_eq!(delete(&mut client, "k").await, 5);

    let (from_2, mut from_2_stream) = watch(
        &mut streams,
        "k",
        WatchOptions::new().with_start_revision(2),
    )
    .await;
    let (from_3, mut from_3_stream) = watch(
        &mut streams,
        "k",
        WatchOptions::new().with_start_revision(3).with_prev_key(),
    )
    .await;
    let (now, mut now_stream) = watch(&mut streams, "k", WatchOptions::new()).await;
    let (future, mut future_stream) = watch(
        &mut streams,
        "k",
        WatchOptions::new().with_start_revision(7),
    )
    .await;

    let history = [
        Ev::put("k", "1", 2, 2, 1),
        Ev::put("k", "2", 2, 3, 2),
        Ev::delete("k", 5),
    ];
    assert_eq!(
        flat(collect(&mut from_2_stream, from_2.watch_id(), 3).await),
        history
    );
    assert_eq!(
        flat(collect(&mut from_3_stream, from_3.watch_id(), 2).await),
        [
            Ev::put("k", "2", 2, 3, 2).with_prev(Kv::new("k", "1", 2, 2, 1)),
            Ev::delete("k", 5).with_prev(Kv::new("k", "2", 2, 3, 2)),
        ]
    );

    assert_eq!(put(&mut client, "k", "3").await, 6);
    assert_eq!(put(&mut client, "k", "4").await, 7);
    assert_eq!(put(&mut client, "k", "5").await, 8);
    let new = [
        Ev::put("k", "3", 6, 6, 1),
        Ev::put("k", "4", 6, 7, 2),
        Ev::put("k", "5", 6, 8, 3),
    ];
    assert_eq!(flat(collect(&mut now_stream, now.watch_id(), 3).await), new);
    assert_eq!(
        flat(collect(&mut future_stream, future.watch_id(), 2).await),
        new[1..],
        "a watch from a future revision starts exactly there"
    );
    // The older watchers kept going live after their replay.
    assert_eq!(
        flat(collect(&mut from_2_stream, from_2.watch_id(), 3).await),
        new
    );
}

#[tokio::test]
async fn a_watch_from_a_compacted_revision_is_canceled_with_the_compact_revision() {
    let server = Server::start();
    let ep = server.endpoint();
    let mut client = connect(&server).await;
    let mut streams = connect_streaming(&server).await;
    for value in ["1", "2", "3", "4"] {
        put(&mut client, "k", value).await; // 2..=5
    }
    client.compact(4, None).await.expect("compact");

    // Below the compacted revision: created, then canceled with compact_revision.
    let (mut watcher, mut stream) = watch(
        &mut streams,
        "k",
        WatchOptions::new().with_start_revision(3),
    )
    .await;
    let response = next_response(&mut stream).await;
    assert!(response.canceled(), "{response:?}");
    assert!(!response.created(), "{response:?}");
    assert_eq!(response.watch_id(), watcher.watch_id(), "{response:?}");
    assert_eq!(response.compact_revision(), 4, "{response:?}");
    assert_eq!(response.cancel_reason(), "", "{response:?}");
    assert!(response.events().is_empty(), "{response:?}");

    // The stream itself stays open: a new watcher on it, at the compacted revision itself,
    // replays from there.
    watcher
        .watch("k", Some(WatchOptions::new().with_start_revision(4)))
        .await
        .expect("send create");
    let created = next_response(&mut stream).await;
    assert!(created.created() && !created.canceled(), "{created:?}");
    let id = created.watch_id();
    assert_ne!(id, watcher.watch_id());
    assert_eq!(
        flat(collect(&mut stream, id, 2).await),
        [Ev::put("k", "3", 2, 4, 3), Ev::put("k", "4", 2, 5, 4)]
    );

    // etcdctl reports the cancellation on stderr and exits.
    let output = etcdctl(&ep, &["watch", "k", "--rev", "2"]);
    assert_error(&output, "watch is canceled by the server");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.lines().any(|line| line
            == "watch was canceled (etcdserver: mvcc: required revision has been compacted)"),
        "{}",
        describe(&output)
    );
}

#[tokio::test]
async fn filters_drop_puts_or_deletes_and_prev_kv_carries_the_value_before() {
    let server = Server::start();
    let mut client = connect(&server).await;
    let mut streams = connect_streaming(&server).await;
    let prefix = || WatchOptions::new().with_prefix();
    let (no_put, mut no_put_stream) = watch(
        &mut streams,
        "f/",
        prefix().with_filters([WatchFilterType::NoPut]),
    )
    .await;
    let (no_delete, mut no_delete_stream) = watch(
        &mut streams,
        "f/",
        prefix().with_filters([WatchFilterType::NoDelete]),
    )
    .await;
    let (prev, mut prev_stream) = watch(&mut streams, "f/", prefix().with_prev_key()).await;

    put(&mut client, "f/a", "1").await; // 2
    put(&mut client, "f/a", "2").await; // 3
    delete(&mut client, "f/a").await; // 4
    put(&mut client, "f/b", "1").await; // 5
    delete(&mut client, "f/b").await; // 6
    put(&mut client, "f/c", "1").await; // 7
    delete(&mut client, "f/c").await; // 8
    assert_eq!(put(&mut client, "f/d", "1").await, 9);

    // Each filtered watcher ends on an event of the kind it keeps, after the last event of
    // the kind it drops: a dropped kind leaking through would show up before it.
    assert_eq!(
        flat(collect(&mut no_put_stream, no_put.watch_id(), 3).await),
        [
            Ev::delete("f/a", 4),
            Ev::delete("f/b", 6),
            Ev::delete("f/c", 8)
        ]
    );
    assert_eq!(
        flat(collect(&mut no_delete_stream, no_delete.watch_id(), 5).await),
        [
            Ev::put("f/a", "1", 2, 2, 1),
            Ev::put("f/a", "2", 2, 3, 2),
            Ev::put("f/b", "1", 5, 5, 1),
            Ev::put("f/c", "1", 7, 7, 1),
            Ev::put("f/d", "1", 9, 9, 1),
        ]
    );
    // prev_kv: none when the key did not exist, else the key-value just before the event.
    assert_eq!(
        flat(collect(&mut prev_stream, prev.watch_id(), 8).await),
        [
            Ev::put("f/a", "1", 2, 2, 1),
            Ev::put("f/a", "2", 2, 3, 2).with_prev(Kv::new("f/a", "1", 2, 2, 1)),
            Ev::delete("f/a", 4).with_prev(Kv::new("f/a", "2", 2, 3, 2)),
            Ev::put("f/b", "1", 5, 5, 1),
            Ev::delete("f/b", 6).with_prev(Kv::new("f/b", "1", 5, 5, 1)),
            Ev::put("f/c", "1", 7, 7, 1),
            Ev::delete("f/c", 8).with_prev(Kv::new("f/c", "1", 7, 7, 1)),
            Ev::put("f/d", "1", 9, 9, 1),
        ]
    );
}

#[tokio::test]
async fn one_stream_carries_many_watchers_with_chosen_ids_progress_and_cancel() {
    let server = Server::start();
    let mut client = connect(&server).await;
    let mut streams = connect_streaming(&server).await;
    assert_eq!(put(&mut client, "x", "0").await, 2);

    let (mut watcher, mut stream) =
        watch(&mut streams, "x", WatchOptions::new().with_watch_id(100)).await;
    assert_eq!(watcher.watch_id(), 100, "the client-chosen id is used");

    // More watchers on the same stream: each answered by a `created` response first.
    watcher
        .watch("y", Some(WatchOptions::new().with_watch_id(7)))
        .await
        .expect("send create");
    let created = next_response(&mut stream).await;
    assert!(created.created() && !created.canceled(), "{created:?}");
    assert_eq!(created.watch_id(), 7);
    assert_eq!(header_revision(&created), 2);
    assert!(created.events().is_empty());

    // An id already in use on the stream is refused.
    watcher
        .watch("y", Some(WatchOptions::new().with_watch_id(100)))
        .await
        .expect("send create");
    let refused = next_response(&mut stream).await;
    assert!(refused.created() && refused.canceled(), "{refused:?}");
    assert_eq!(refused.watch_id(), -1, "{refused:?}");
    assert_eq!(
        refused.cancel_reason(),
        "mvcc: duplicate watch ID provided on the WatchStream"
    );

    // Without an id the server picks the lowest free one.
    watcher.watch("z", None).await.expect("send create");
    let created = next_response(&mut stream).await;
    assert!(created.created() && !created.canceled(), "{created:?}");
    assert_eq!(created.watch_id(), 0, "{created:?}");

    // One write touching all three keys: one response per watcher, each with its own event.
    let txn = Txn::new().and_then([
        TxnOp::put("x", "1", None),
        TxnOp::put("y", "1", None),
        TxnOp::put("z", "1", None),
    ]);
    client.txn(txn).await.expect("txn");
    let mut by_id = BTreeMap::new();
    for _ in 0..3 {
        let response = next_response(&mut stream).await;
        assert!(!response.created() && !response.canceled(), "{response:?}");
        assert_eq!(header_revision(&response), 3);
        by_id.insert(response.watch_id(), events(&response));
    }
    assert_eq!(
        by_id,
        BTreeMap::from([
            (0, vec![Ev::put("z", "1", 3, 3, 1)]),
            (7, vec![Ev::put("y", "1", 3, 3, 1)]),
            (100, vec![Ev::put("x", "1", 2, 3, 2)]),
        ])
    );

    // A progress request is answered for the whole stream (watch id -1) with the current
    // revision and no events.
    watcher.request_progress().await.expect("send progress");
    let progress = next_response(&mut stream).await;
    assert_eq!(progress.watch_id(), -1, "{progress:?}");
    assert!(!progress.created() && !progress.canceled(), "{progress:?}");
    assert!(progress.events().is_empty(), "{progress:?}");
    assert_eq!(header_revision(&progress), 3);

    // Cancel is answered with `canceled`; canceling an unknown id gets no answer at all.
    watcher.cancel_by_id(7).await.expect("send cancel");
    let canceled = next_response(&mut stream).await;
    assert!(canceled.canceled() && !canceled.created(), "{canceled:?}");
    assert_eq!(canceled.watch_id(), 7);
    assert!(canceled.events().is_empty());
    watcher.cancel_by_id(555).await.expect("send cancel");

    // After that only the remaining watchers hear of writes.
    let txn = Txn::new().and_then([TxnOp::put("x", "2", None), TxnOp::put("y", "2", None)]);
    client.txn(txn).await.expect("txn"); // 4
    put(&mut client, "z", "2").await; // 5
    let mut by_id = BTreeMap::new();
    for _ in 0..2 {
        let response = next_response(&mut stream).await;
        assert!(!response.created() && !response.canceled(), "{response:?}");
        by_id.insert(response.watch_id(), events(&response));
    }
    assert_eq!(
        by_id,
        BTreeMap::from([
            (0, vec![Ev::put("z", "2", 3, 5, 2)]),
            (100, vec![Ev::put("x", "2", 2, 4, 3)]),
        ])
    );
}

/// Sends a create request on the stream and returns the answer to it.
async fn create_on(
    watcher: &mut Watcher,
    stream: &mut WatchStream,
    key: &str,
    options: WatchOptions,
) -> etcd_client::WatchResponse {
    watcher
        .watch(key, Some(options))
        .await
        .expect("send create");
    let response = next_response(stream).await;
    assert!(
        response.created(),
        "a create is answered first: {response:?}"
    );
    response
}

#[tokio::test]
async fn server_chosen_watch_ids_count_up_and_are_never_reused_on_a_stream() {
    let server = Server::start();
    let mut client = connect(&server).await;
    let mut streams = connect_streaming(&server).await;
    let (mut watcher, mut stream) = watch(&mut streams, "k", WatchOptions::new()).await;
    assert_eq!(watcher.watch_id(), 0);
    let mut ids = Vec::new();
    for _ in 0..2 {
        let created = create_on(&mut watcher, &mut stream, "k", WatchOptions::new()).await;
        assert!(!created.canceled(), "{created:?}");
        ids.push(created.watch_id());
    }
    assert_eq!(ids, [1, 2]);

    // A canceled id is not handed out again on the stream (a late event for the old watcher
    // could not be told apart): the next ids are 3 and 4.
    for canceled in [2, 0] {
        watcher.cancel_by_id(canceled).await.expect("send cancel");
        let response = next_response(&mut stream).await;
        assert!(response.canceled(), "{response:?}");
        assert_eq!(response.watch_id(), canceled);
        let created = create_on(&mut watcher, &mut stream, "k", WatchOptions::new()).await;
        assert!(!created.canceled(), "{created:?}");
        ids.push(created.watch_id());
    }
    assert_eq!(ids, [1, 2, 3, 4], "ids after canceling 2, then 0");

    // The live watchers (1, 3, 4) each get the next write; the canceled ones do not.
    let revision = put(&mut client, "k", "v").await;
    let mut got = Vec::new();
    for _ in 0..3 {
        let response = next_response(&mut stream).await;
        assert_eq!(
            events(&response),
            [Ev::put("k", "v", revision, revision, 1)],
            "{response:?}"
        );
        got.push(response.watch_id());
    }
    got.sort();
    assert_eq!(got, [1, 3, 4]);
}

#[tokio::test]
async fn an_empty_range_is_refused_and_an_empty_key_watches_the_key_nul() {
    let server = Server::start();
    let mut streams = connect_streaming(&server).await;
    let (mut watcher, mut stream) = watch(&mut streams, "k", WatchOptions::new()).await;
    // A range whose end is not after its key is empty: refused like a duplicate id, and the
    // stream stays usable.
    let refused = create_on(
        &mut watcher,
        &mut stream,
        "k",
        WatchOptions::new().with_range("a"),
    )
    .await;
    assert!(
        refused.canceled(),
        "a watch on [k, a) must be refused (created and canceled): {refused:?}"
    );
    assert_eq!(refused.watch_id(), -1, "{refused:?}");
    assert_eq!(refused.cancel_reason(), "mvcc: watcher range is empty");

    let created = create_on(&mut watcher, &mut stream, "k", WatchOptions::new()).await;
    assert!(!created.canceled(), "{created:?}");
    assert_eq!(created.watch_id(), 1, "the refused watch took no id");

    // An empty key without a range end watches the smallest key, "\0".
    let (nul, mut nul_stream) = watch(&mut streams, "", WatchOptions::new()).await;
    let mut client = connect(&server).await;
    assert_eq!(put(&mut client, "a", "not watched").await, 2);
    assert_eq!(put(&mut client, "\0", "nul").await, 3);
    assert_eq!(
        flat(collect(&mut nul_stream, nul.watch_id(), 1).await),
        [Ev::put("\0", "nul", 3, 3, 1)]
    );
}

#[tokio::test]
async fn a_txn_and_a_lease_revoke_each_arrive_as_one_response() {
    let server = Server::start();
    let mut client = connect(&server).await;
    let mut streams = connect_streaming(&server).await;
    let (watcher, mut stream) = watch(
        &mut streams,
        "t/",
        WatchOptions::new().with_prefix().with_prev_key(),
    )
    .await;
    let id = watcher.watch_id();

    let txn = Txn::new().and_then([
        TxnOp::put("t/c", "1", None),
        TxnOp::put("t/a", "1", None),
        TxnOp::put("t/b", "1", None),
        TxnOp::delete("t/none", None),
    ]);
    client.txn(txn).await.expect("txn"); // 2
    let txn = Txn::new().and_then([
        TxnOp::put("t/a", "2", None),
        TxnOp::delete("t/b", None),
        TxnOp::put("outside", "1", None),
    ]);
    client.txn(txn).await.expect("txn"); // 3

    let lease = client.lease_grant(600, None).await.expect("grant").id();
    for key in ["t/l2", "t/l1", "t/l3"] {
        client
            .put(key, "v", Some(PutOptions::new().with_lease(lease)))
            .await
            .expect("put with lease"); // 4, 5, 6
    }
    client.lease_revoke(lease).await.expect("revoke"); // 7

    let groups = collect(&mut stream, id, 3 + 2 + 3 + 3).await;
    let at = |key: &str, value: &str, create, modified, version| {
        Kv::new(key, value, create, modified, version)
    };
    let leased = |key: &str, revision| {
        let mut kv = at(key, "v", revision, revision, 1);
        kv.lease = lease;
        kv
    };
    assert_eq!(
        groups,
        [
            // A txn's events arrive in one response, in the order of its operations.
            vec![
                Ev::put("t/c", "1", 2, 2, 1),
                Ev::put("t/a", "1", 2, 2, 1),
                Ev::put("t/b", "1", 2, 2, 1),
            ],
            vec![
                Ev::put("t/a", "2", 2, 3, 2).with_prev(at("t/a", "1", 2, 2, 1)),
                Ev::delete("t/b", 3).with_prev(at("t/b", "1", 2, 2, 1)),
            ],
            vec![Ev::put("t/l2", "v", 4, 4, 1).with_lease(lease)],
            vec![Ev::put("t/l1", "v", 5, 5, 1).with_lease(lease)],
            vec![Ev::put("t/l3", "v", 6, 6, 1).with_lease(lease)],
            // A revoke deletes all the lease's keys at one revision, in key order.
            vec![
                Ev::delete("t/l1", 7).with_prev(leased("t/l1", 5)),
                Ev::delete("t/l2", 7).with_prev(leased("t/l2", 4)),
                Ev::delete("t/l3", 7).with_prev(leased("t/l3", 6)),
            ],
        ]
    );
}

#[tokio::test]
async fn a_revision_beyond_the_request_limit_is_fragmented_only_for_watchers_that_ask() {
    // etcd fragments a watch response when it is larger than --max-request-bytes plus its
    // 512 KiB gRPC allowance and holds more than one event. Delete events carry no value, so
    // the size here comes from the prev_kv values: 160 x 3.9 KB, each put within 4096 bytes.
    const KEYS: usize = 160;
    let server = Server::start_with_args(&["--max-request-bytes", "4096"]);
    let mut client = connect(&server).await;
    let mut streams = connect_streaming(&server).await;
    let value = |i: usize| format!("{i:03}{}", "v".repeat(3900));
    for i in 0..KEYS {
        client
            .put(format!("big/{i:03}"), value(i), None)
            .await
            .expect("put"); // 2..=101
    }
    let prefix = || WatchOptions::new().with_prefix().with_prev_key();
    let (fragmenting, mut fragmenting_stream) =
        watch(&mut streams, "big/", prefix().with_fragment()).await;
    let (whole, mut whole_stream) = watch(&mut streams, "big/", prefix()).await;

    let deleted = client
        .delete("big/", Some(DeleteOptions::new().with_prefix()))
        .await
        .expect("delete prefix");
    assert_eq!(deleted.deleted(), KEYS as i64);
    let revision = deleted.header().expect("header").revision();
    assert_eq!(revision, 2 + KEYS as i64);
    let expected: Vec<Ev> = (0..KEYS)
        .map(|i| {
            let key = format!("big/{i:03}");
            let created = 2 + i as i64;
            Ev::delete(&key, revision).with_prev(Kv::new(&key, &value(i), created, created, 1))
        })
        .collect();

    let mut fragments = Vec::new();
    let mut seen = Vec::new();
    while seen.len() < KEYS {
        let response = next_response(&mut fragmenting_stream).await;
        assert_eq!(response.watch_id(), fragmenting.watch_id());
        assert_eq!(header_revision(&response), revision);
        fragments.push(is_fragment(&response));
        seen.extend(events(&response));
    }
    assert!(
        fragments.len() >= 2,
        "the revision was split: {fragments:?}"
    );
    let last = fragments.pop();
    assert_eq!(
        last,
        Some(false),
        "the last piece is not marked as a fragment"
    );
    assert!(
        fragments.iter().all(|&f| f),
        "every earlier piece is marked as a fragment"
    );
    assert!(
        seen == expected,
        "fragments reassemble to the revision's events in order"
    );

    let response = next_response(&mut whole_stream).await;
    assert_eq!(response.watch_id(), whole.watch_id());
    assert!(!is_fragment(&response));
    assert!(
        events(&response) == expected,
        "without `fragment` the revision arrives whole"
    );
}

#[tokio::test]
async fn etcdctl_watch_prints_each_event_from_its_start_revision() {
    let server = Server::start();
    let ep = server.endpoint();
    let mut client = connect(&server).await;
    put(&mut client, "w/a", "1").await; // 2
    put(&mut client, "w/a", "2").await; // 3

    // Start revisions make the output independent of when etcdctl's watch is established.
    let mut key = CtlProcess::spawn(&ep, &["watch", "w/a", "--rev", "2"]);
    let mut prefix = CtlProcess::spawn(&ep, &["watch", "w/", "--prefix", "--rev", "4"]);
    let mut prev = CtlProcess::spawn(&ep, &["watch", "w/a", "--prev-kv", "--rev", "2"]);
    let mut hex = CtlProcess::spawn(&ep, &["watch", "w/b", "--rev", "4", "--hex"]);

    put(&mut client, "w/b", "3").await; // 4
    delete(&mut client, "w/a").await; // 5
    let txn = Txn::new().and_then([TxnOp::put("w/a", "end", None), TxnOp::delete("w/b", None)]);
    client.txn(txn).await.expect("txn"); // 6

    assert_eq!(
        key.read_through("end").await,
        "PUT\nw/a\n1\nPUT\nw/a\n2\nDELETE\nw/a\n\nPUT\nw/a\nend\n"
    );
    // A txn's events are printed in the order of its operations.
    prefix.read_through("end").await;
    assert_eq!(
        prefix.read_through("w/b").await,
        "PUT\nw/b\n3\nDELETE\nw/a\n\nPUT\nw/a\nend\nDELETE\nw/b\n"
    );
    // With --prev-kv the previous key and value come first.
    assert_eq!(
        prev.read_through("end").await,
        "PUT\nw/a\n1\n\
         PUT\nw/a\n1\nw/a\n2\n\
         DELETE\nw/a\n2\nw/a\n\n\
         PUT\nw/a\nend\n"
    );
    hex.read_through("DELETE").await;
    assert_eq!(
        hex.read_through("\\x77\\x2f\\x62").await,
        "PUT\n\\x77\\x2f\\x62\n\\x33\nDELETE\n\\x77\\x2f\\x62\n"
    );
    for ctl in [key, prefix, prev, hex] {
        ctl.kill().await;
    }
}

#[tokio::test]
async fn a_stream_whose_client_stops_sending_keeps_delivering_events() {
    let server = Server::start();
    let mut client = connect(&server).await;
    let mut streams = connect_streaming(&server).await;
    let (watcher, mut stream) = watch(&mut streams, "k", WatchOptions::new()).await;
    // Dropping the watcher half-closes the stream: no more requests, but the watchers on it
    // stay (etcd stops reading the stream, not serving it).
    drop(watcher);
    let revision = put(&mut client, "k", "v").await;
    let response = next_response(&mut stream).await;
    assert_eq!(
        events(&response),
        vec![Ev::put("k", "v", revision, revision, 1)],
        "{response:?}"
    );
}
