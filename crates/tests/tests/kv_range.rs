//! KV.Range: single keys, ranges, prefixes, from-key, limits and counts, historical
//! revisions, sorting, serializable reads, keys-only, count-only and revision filters,
//! through the real etcdctl and through the etcd-client crate.

mod common;

use cairn_tests::{Server, assert_error, assert_stdout, etcdctl};
use common::{Ids, Kv, connect, header_of, keys, kvs};
use etcd_client::{Client, GetOptions, PutOptions, SortOrder, SortTarget};

/// Writes the fixture below and returns the header ids. Each put is checked to get the next
/// revision, starting from 2 on a fresh store.
///
/// Final state at revision 14 (the four `k/` keys differ in every sort target):
///
/// | key   | value | create | mod | version |
/// |-------|-------|--------|-----|---------|
/// | j     | z     | 14     | 14  | 1       |
/// | k/a   | 4     | 3      | 9   | 3       |
/// | k/b   | 2     | 5      | 5   | 1       |
/// | k/c   | 3     | 2      | 11  | 2       |
/// | k/d   | 1     | 4      | 10  | 4       |
/// | k0    | y     | 12     | 12  | 1       |
/// | other | x     | 13     | 13  | 1       |
async fn seed(client: &mut Client) -> Ids {
    let puts = [
        ("k/c", "old"),
        ("k/a", "old"),
        ("k/d", "old"),
        ("k/b", "2"),
        ("k/d", "old"),
        ("k/a", "old"),
        ("k/d", "old"),
        ("k/a", "4"),
        ("k/d", "1"),
        ("k/c", "3"),
        ("k0", "y"),
        ("other", "x"),
        ("j", "z"),
    ];
    let mut ids = None;
    for (i, (key, value)) in puts.into_iter().enumerate() {
        let response = client.put(key, value, None).await.expect("put");
        let header = header_of(response.header());
        assert_eq!(
            header.revision(),
            i as i64 + 2,
            "revision of put #{i} {key}"
        );
        ids = Some(Ids::of(header));
    }
    ids.expect("at least one put")
}

fn final_kv(key: &str) -> Kv {
    match key {
        "j" => Kv::new("j", "z", 14, 14, 1),
        "k/a" => Kv::new("k/a", "4", 3, 9, 3),
        "k/b" => Kv::new("k/b", "2", 5, 5, 1),
        "k/c" => Kv::new("k/c", "3", 2, 11, 2),
        "k/d" => Kv::new("k/d", "1", 4, 10, 4),
        "k0" => Kv::new("k0", "y", 12, 12, 1),
        "other" => Kv::new("other", "x", 13, 13, 1),
        _ => panic!("no such key in the fixture: {key}"),
    }
}

fn final_kvs(keys: &[&str]) -> Vec<Kv> {
    keys.iter().map(|k| final_kv(k)).collect()
}

/// etcdctl's simple output for these keys: `key\nvalue\n` per key.
fn simple(keys: &[&str]) -> String {
    keys.iter()
        .map(|k| format!("{k}\n{}\n", final_kv(k).value))
        .collect()
}

/// The `k/` keys in ascending order of each sort target (etcdctl's --sort-by name first).
const SORTED_ASCENDING: [(&str, SortTarget, [&str; 4]); 5] = [
    ("KEY", SortTarget::Key, ["k/a", "k/b", "k/c", "k/d"]),
    ("VERSION", SortTarget::Version, ["k/b", "k/c", "k/a", "k/d"]),
    ("CREATE", SortTarget::Create, ["k/c", "k/a", "k/d", "k/b"]),
    ("MODIFY", SortTarget::Mod, ["k/b", "k/a", "k/d", "k/c"]),
    ("VALUE", SortTarget::Value, ["k/d", "k/b", "k/c", "k/a"]),
];

#[tokio::test]
async fn etcdctl_get_prints_single_keys_ranges_prefixes_history_and_sorted_results() {
    let server = Server::start();
    let mut client = connect(&server).await;
    let ids = seed(&mut client).await;
    let ep = server.endpoint();
    let get = |args: &[&str]| etcdctl(&ep, &[&["get"], args].concat());

    // A single key, a missing key, and a key that only prefixes others.
    assert_stdout(&get(&["k/a"]), "k/a\n4\n");
    assert_stdout(&get(&["missing"]), "");
    assert_stdout(&get(&["k/"]), "");
    // [key, range_end)
    assert_stdout(&get(&["k/b", "k/d"]), &simple(&["k/b", "k/c"]));
    assert_stdout(
        &get(&["k/", "k1"]),
        &simple(&["k/a", "k/b", "k/c", "k/d", "k0"]),
    );
    assert_stdout(&get(&["k/d", "k/a"]), "");
    // --prefix
    assert_stdout(
        &get(&["--prefix", "k/"]),
        &simple(&["k/a", "k/b", "k/c", "k/d"]),
    );
    assert_stdout(
        &get(&["--prefix", "k"]),
        &simple(&["k/a", "k/b", "k/c", "k/d", "k0"]),
    );
    // --from-key (range_end "\0"); from the empty key means every key.
    assert_stdout(&get(&["--from-key", "k0"]), &simple(&["k0", "other"]));
    assert_stdout(
        &get(&["--from-key", ""]),
        &simple(&["j", "k/a", "k/b", "k/c", "k/d", "k0", "other"]),
    );
    assert_stdout(&get(&["--from-key", "p"]), "");
    // --print-value-only and --keys-only
    assert_stdout(
        &get(&["--prefix", "k/", "--print-value-only"]),
        "4\n2\n3\n1\n",
    );
    assert_stdout(
        &get(&["--prefix", "k/", "--keys-only"]),
        "k/a\n\nk/b\n\nk/c\n\nk/d\n\n",
    );
    // Serializable reads see the same data on a single member.
    assert_stdout(
        &get(&["--prefix", "k/", "--consistency=s"]),
        &simple(&["k/a", "k/b", "k/c", "k/d"]),
    );

    // --limit: `more` is set and `count` is the total number of matching keys.
    let kv_json = |keys: &[&str]| {
        final_kvs(keys)
            .iter()
            .map(Kv::json)
            .collect::<Vec<_>>()
            .join(",")
    };
    assert_stdout(
        &get(&["--prefix", "k/", "--limit", "2", "-w", "json"]),
        &format!(
            "{{{},\"kvs\":[{}],\"more\":true,\"count\":4}}\n",
            ids.header_json(14),
            kv_json(&["k/a", "k/b"])
        ),
    );
    assert_stdout(
        &get(&["--prefix", "k/", "--limit", "4", "-w", "json"]),
        &format!(
            "{{{},\"kvs\":[{}],\"count\":4}}\n",
            ids.header_json(14),
            kv_json(&["k/a", "k/b", "k/c", "k/d"])
        ),
    );
    assert_stdout(
        &get(&["k/c", "-w", "json"]),
        &format!(
            "{{{},\"kvs\":[{}],\"count\":1}}\n",
            ids.header_json(14),
            kv_json(&["k/c"])
        ),
    );
    // A range with no keys: no kvs, count 0 (omitted).
    assert_stdout(
        &get(&["missing", "-w", "json"]),
        &format!("{{{}}}\n", ids.header_json(14)),
    );

    // --rev: the store as it was; the header still carries the current revision.
    assert_stdout(&get(&["k/b", "--rev", "4"]), "");
    assert_stdout(&get(&["k/b", "--rev", "5"]), "k/b\n2\n");
    assert_stdout(
        &get(&["--prefix", "k/", "--rev", "5"]),
        "k/a\nold\nk/b\n2\nk/c\nold\nk/d\nold\n",
    );
    assert_stdout(
        &get(&["--prefix", "k/", "--rev", "8", "-w", "json"]),
        &format!(
            "{{{},\"kvs\":[{},{},{},{}],\"count\":4}}\n",
            ids.header_json(14),
            Kv::new("k/a", "old", 3, 7, 2).json(),
            final_kv("k/b").json(),
            Kv::new("k/c", "old", 2, 2, 1).json(),
            Kv::new("k/d", "old", 4, 8, 3).json(),
        ),
    );
    assert_stdout(
        &get(&["--from-key", "", "--rev", "14"]),
        &simple(&["j", "k/a", "k/b", "k/c", "k/d", "k0", "other"]),
    );
    assert_error(
        &get(&["k/a", "--rev", "15"]),
        "etcdserver: mvcc: required revision is a future revision",
    );

    // --sort-by every target, both orders; --order alone sorts by key.
    for (name, _, ascending) in SORTED_ASCENDING {
        let descending: Vec<&str> = ascending.iter().rev().copied().collect();
        assert_stdout(
            &get(&["--prefix", "k/", "--sort-by", name]),
            &simple(&ascending),
        );
        assert_stdout(
            &get(&["--prefix", "k/", "--sort-by", name, "--order", "ASCEND"]),
            &simple(&ascending),
        );
        assert_stdout(
            &get(&["--prefix", "k/", "--sort-by", name, "--order", "DESCEND"]),
            &simple(&descending),
        );
    }
    assert_stdout(
        &get(&["--prefix", "k/", "--order", "DESCEND"]),
        &simple(&["k/d", "k/c", "k/b", "k/a"]),
    );
    // With an explicit order, sorting applies to the whole range before the limit.
    assert_stdout(
        &get(&[
            "--prefix",
            "k/",
            "--sort-by",
            "VALUE",
            "--order",
            "ASCEND",
            "--limit",
            "2",
            "-w",
            "json",
        ]),
        &format!(
            "{{{},\"kvs\":[{}],\"more\":true,\"count\":4}}\n",
            ids.header_json(14),
            kv_json(&["k/d", "k/b"])
        ),
    );
    assert_stdout(
        &get(&[
            "--prefix",
            "k/",
            "--sort-by",
            "MODIFY",
            "--order",
            "DESCEND",
            "--limit",
            "1",
        ]),
        &simple(&["k/c"]),
    );
}

#[tokio::test]
async fn etcd_client_range_options_limit_count_revision_sort_and_filters() {
    let server = Server::start();
    let mut client = connect(&server).await;
    let ids = seed(&mut client).await;

    let reader = client.clone();
    let get = |key: &str, options: GetOptions| {
        let mut client = reader.clone();
        let key = key.to_owned();
        async move { client.get(key, Some(options)).await.expect("get") }
    };

    // Single key, with every field of the key-value.
    let response = client.get("k/d", None).await.expect("get");
    assert_eq!(kvs(response.kvs()), final_kvs(&["k/d"]));
    assert_eq!((response.count(), response.more()), (1, false));
    let header = header_of(response.header());
    assert_eq!((Ids::of(header), header.revision()), (ids, 14));
    let response = client.get("missing", None).await.expect("get");
    assert_eq!(
        (response.kvs().len(), response.count(), response.more()),
        (0, 0, false)
    );

    // range_end, prefix, from-key, all keys.
    let response = get("k/b", GetOptions::new().with_range("k/d")).await;
    assert_eq!(kvs(response.kvs()), final_kvs(&["k/b", "k/c"]));
    assert_eq!(response.count(), 2);
    let response = get("k/", GetOptions::new().with_prefix()).await;
    assert_eq!(
        kvs(response.kvs()),
        final_kvs(&["k/a", "k/b", "k/c", "k/d"])
    );
    let response = get("k0", GetOptions::new().with_from_key()).await;
    assert_eq!(keys(response.kvs()), ["k0", "other"]);
    let response = get("", GetOptions::new().with_all_keys()).await;
    assert_eq!(
        kvs(response.kvs()),
        final_kvs(&["j", "k/a", "k/b", "k/c", "k/d", "k0", "other"])
    );
    assert_eq!(response.count(), 7);
    let response = get("k/d", GetOptions::new().with_range("k/a")).await;
    assert_eq!((response.kvs().len(), response.count()), (0, 0));

    // limit: `more` tells whether keys were left out; `count` is always the total.
    for (limit, expected, more) in [
        (1, &["k/a"][..], true),
        (3, &["k/a", "k/b", "k/c"][..], true),
        (4, &["k/a", "k/b", "k/c", "k/d"][..], false),
        (10, &["k/a", "k/b", "k/c", "k/d"][..], false),
        (0, &["k/a", "k/b", "k/c", "k/d"][..], false),
    ] {
        let response = get("k/", GetOptions::new().with_prefix().with_limit(limit)).await;
        assert_eq!(keys(response.kvs()), expected, "limit {limit}");
        assert_eq!(
            (response.more(), response.count()),
            (more, 4),
            "limit {limit}"
        );
    }

    // revision: the store as of that revision; the header has the current revision.
    let response = get("k/", GetOptions::new().with_prefix().with_revision(8)).await;
    assert_eq!(
        kvs(response.kvs()),
        [
            Kv::new("k/a", "old", 3, 7, 2),
            final_kv("k/b"),
            Kv::new("k/c", "old", 2, 2, 1),
            Kv::new("k/d", "old", 4, 8, 3),
        ]
    );
    assert_eq!(header_of(response.header()).revision(), 14);
    let response = get("k/", GetOptions::new().with_prefix().with_revision(4)).await;
    assert_eq!(keys(response.kvs()), ["k/a", "k/c", "k/d"]);
    assert_eq!(response.count(), 3);
    let response = get("", GetOptions::new().with_all_keys().with_revision(1)).await;
    assert_eq!((response.kvs().len(), response.count()), (0, 0));
    let response = get("", GetOptions::new().with_all_keys().with_revision(14)).await;
    assert_eq!(response.count(), 7);

    // sort_target x sort_order; sorting happens before the limit.
    for (name, target, ascending) in SORTED_ASCENDING {
        let descending: Vec<&str> = ascending.iter().rev().copied().collect();
        for (order, expected) in [
            (SortOrder::Ascend, ascending.to_vec()),
            (SortOrder::Descend, descending),
        ] {
            let response = get(
                "k/",
                GetOptions::new().with_prefix().with_sort(target, order),
            )
            .await;
            assert_eq!(keys(response.kvs()), expected, "sort by {name} {order:?}");
            assert_eq!(response.count(), 4);
            let response = get(
                "k/",
                GetOptions::new()
                    .with_prefix()
                    .with_sort(target, order)
                    .with_limit(2),
            )
            .await;
            assert_eq!(
                keys(response.kvs()),
                expected[..2],
                "sort by {name} {order:?} limit 2"
            );
            assert_eq!((response.more(), response.count()), (true, 4));
        }
    }
    // SortOrder::None with a target other than KEY sorts ascending (etcd's default).
    let response = get(
        "k/",
        GetOptions::new()
            .with_prefix()
            .with_sort(SortTarget::Value, SortOrder::None),
    )
    .await;
    assert_eq!(keys(response.kvs()), ["k/d", "k/b", "k/c", "k/a"]);
    let response = get(
        "k/",
        GetOptions::new()
            .with_prefix()
            .with_sort(SortTarget::Key, SortOrder::None),
    )
    .await;
    assert_eq!(keys(response.kvs()), ["k/a", "k/b", "k/c", "k/d"]);

    // serializable, keys_only, count_only.
    let response = get("k/", GetOptions::new().with_prefix().with_serializable()).await;
    assert_eq!(
        kvs(response.kvs()),
        final_kvs(&["k/a", "k/b", "k/c", "k/d"])
    );
    assert_eq!(header_of(response.header()).revision(), 14);
    let response = get("k/", GetOptions::new().with_prefix().with_keys_only()).await;
    let mut expected = final_kvs(&["k/a", "k/b", "k/c", "k/d"]);
    for kv in &mut expected {
        kv.value.clear();
    }
    assert_eq!(
        kvs(response.kvs()),
        expected,
        "keys_only keeps every field but the value"
    );
    let response = get("k/", GetOptions::new().with_prefix().with_count_only()).await;
    assert_eq!(
        (response.kvs().len(), response.count(), response.more()),
        (0, 4, false)
    );
    let response = get("", GetOptions::new().with_all_keys().with_count_only()).await;
    assert_eq!((response.kvs().len(), response.count()), (0, 7));

    // min/max mod and create revision filters (bounds are inclusive).
    let filters: [(&str, GetOptions, &[&str]); 9] = [
        (
            "min_mod 10",
            GetOptions::new().with_min_mod_revision(10),
            &["k/c", "k/d"],
        ),
        (
            "min_mod 9",
            GetOptions::new().with_min_mod_revision(9),
            &["k/a", "k/c", "k/d"],
        ),
        (
            "max_mod 9",
            GetOptions::new().with_max_mod_revision(9),
            &["k/a", "k/b"],
        ),
        ("max_mod 4", GetOptions::new().with_max_mod_revision(4), &[]),
        (
            "min_create 4",
            GetOptions::new().with_min_create_revision(4),
            &["k/b", "k/d"],
        ),
        (
            "max_create 3",
            GetOptions::new().with_max_create_revision(3),
            &["k/a", "k/c"],
        ),
        (
            "min_mod 6, max_create 4",
            GetOptions::new()
                .with_min_mod_revision(6)
                .with_max_create_revision(4),
            &["k/a", "k/c", "k/d"],
        ),
        (
            "min_create 3, max_create 4",
            GetOptions::new()
                .with_min_create_revision(3)
                .with_max_create_revision(4),
            &["k/a", "k/d"],
        ),
        (
            "min_mod 5, max_mod 10",
            GetOptions::new()
                .with_min_mod_revision(5)
                .with_max_mod_revision(10),
            &["k/a", "k/b", "k/d"],
        ),
    ];
    for (name, options, expected) in filters {
        let response = get("k/", options.with_prefix()).await;
        assert_eq!(keys(response.kvs()), expected, "filter {name}");
        // As in etcd, `count` is the number of keys in the range before the filters.
        assert_eq!(
            (response.count(), response.more()),
            (4, false),
            "filter {name}"
        );
        assert_eq!(
            kvs(response.kvs()),
            final_kvs(expected),
            "filter {name} returns whole key-values"
        );
    }
    // Filters combine with sorting and limits.
    let response = get(
        "k/",
        GetOptions::new()
            .with_prefix()
            .with_min_create_revision(3)
            .with_sort(SortTarget::Mod, SortOrder::Descend)
            .with_limit(2),
    )
    .await;
    assert_eq!(keys(response.kvs()), ["k/d", "k/a"]);
    assert!(response.more());

    // A put with prev_kv after all this does not disturb history.
    let response = client
        .put("k/b", "5", Some(PutOptions::new().with_prev_key()))
        .await
        .expect("put");
    assert_eq!(response.prev_key().map(Kv::from), Some(final_kv("k/b")));
    let response = get("k/b", GetOptions::new().with_revision(14)).await;
    assert_eq!(kvs(response.kvs()), final_kvs(&["k/b"]));
}
