//! Lease: grant (given and generated ids, the minimum TTL, duplicates, too-large TTLs),
//! revoke (every attached key deleted at one revision), keep-alive and expiry, time-to-live
//! with and without keys, attaching, moving, detaching and ignore_lease on put, leases across
//! a restart, and etcdctl's `lease` commands' exact output.

mod common;
#[path = "common/watching.rs"]
mod watching;

use std::time::{Duration, Instant};

use cairn_tests::{Server, assert_error, assert_stdout, describe, etcdctl, ok_stdout};
use common::{Kv, assert_grpc_error, connect, header_of};
use etcd_client::{
    Client, Error, GetOptions, LeaseGrantOptions, LeaseTimeToLiveOptions, PutOptions, WatchOptions,
};
use watching::{CtlProcess, Ev, STEP, collect, connect_streaming};

/// etcd raises TTLs below its minimum (1.5 election timeouts, rounded up: 2 s by default).
const MIN_TTL: i64 = 2;
const NOT_FOUND: &str = "etcdserver: requested lease not found";

async fn revision(client: &mut Client) -> i64 {
    header_of(client.get("any", None).await.expect("get").header()).revision()
}

/// The lease ids `leases()` lists, sorted.
async fn lease_ids(client: &mut Client) -> Vec<i64> {
    let mut ids: Vec<i64> = client
        .leases()
        .await
        .expect("leases")
        .leases()
        .iter()
        .map(|l| l.id())
        .collect();
    ids.sort();
    ids
}

/// (ttl, granted_ttl, attached keys sorted) of a lease; keys only when `with_keys`.
async fn time_to_live(client: &mut Client, id: i64, with_keys: bool) -> (i64, i64, Vec<String>) {
    let options = with_keys.then(|| LeaseTimeToLiveOptions::new().with_keys());
    let response = client
        .lease_time_to_live(id, options)
        .await
        .expect("time to live");
    assert_eq!(response.id(), id);
    let mut keys: Vec<String> = response
        .keys()
        .iter()
        .map(|k| String::from_utf8(k.clone()).expect("UTF-8 key"))
        .collect();
    keys.sort();
    (response.ttl(), response.granted_ttl(), keys)
}

/// (value, lease) of a key, None when absent.
async fn value_and_lease(client: &mut Client, key: &str) -> Option<(String, i64)> {
    let response = client.get(key, None).await.expect("get");
    response.kvs().first().map(|kv| {
        (
            String::from_utf8(kv.value().to_vec()).expect("UTF-8"),
            kv.lease(),
        )
    })
}

async fn put_with_lease(client: &mut Client, key: &str, value: &str, lease: i64) -> i64 {
    let response = client
        .put(key, value, Some(PutOptions::new().with_lease(lease)))
        .await
        .expect("put with lease");
    header_of(response.header()).revision()
}

#[tokio::test]
async fn grant_takes_a_given_id_or_makes_one_raises_small_ttls_and_refuses_duplicates() {
    let server = Server::start();
    let mut client = connect(&server).await;

    let given = client
        .lease_grant(1, Some(LeaseGrantOptions::new().with_id(0x1234)))
        .await
        .expect("grant with id");
    assert_eq!(given.id(), 0x1234);
    assert_eq!(given.ttl(), MIN_TTL, "a TTL below the minimum is raised");
    assert_eq!(given.error(), "");
    assert_eq!(
        header_of(given.header()).revision(),
        1,
        "grants do not write keys"
    );

    let first = client.lease_grant(30, None).await.expect("grant");
    let second = client.lease_grant(30, None).await.expect("grant");
    assert_eq!((first.ttl(), second.ttl()), (30, 30));
    assert!(
        first.id() > 0 && second.id() > 0,
        "generated ids are positive"
    );
    assert_ne!(first.id(), second.id());
    let negative = client.lease_grant(-5, None).await.expect("grant");
    assert_eq!(
        negative.ttl(),
        MIN_TTL,
        "a negative TTL is raised to the minimum"
    );

    assert_grpc_error(
        client
            .lease_grant(30, Some(LeaseGrantOptions::new().with_id(0x1234)))
            .await,
        "FailedPrecondition",
        "etcdserver: lease already exists",
    );
    assert_grpc_error(
        client
            .lease_grant(30, Some(LeaseGrantOptions::new().with_id(first.id())))
            .await,
        "FailedPrecondition",
        "etcdserver: lease already exists",
    );
    assert_grpc_error(
        client.lease_grant(9_000_000_001, None).await,
        "OutOfRange",
        "etcdserver: too large lease TTL",
    );

    let mut expected = vec![0x1234, first.id(), second.id(), negative.id()];
    expected.sort();
    assert_eq!(lease_ids(&mut client).await, expected);

    let (ttl, granted, keys) = time_to_live(&mut client, first.id(), true).await;
    assert!((20..=30).contains(&ttl), "remaining TTL {ttl}");
    assert_eq!((granted, keys), (30, vec![]));
    // An unknown lease: TTL -1, nothing granted.
    assert_eq!(
        time_to_live(&mut client, 0x999, true).await,
        (-1, 0, vec![])
    );
    assert_eq!(revision(&mut client).await, 1);
}

#[tokio::test]
async fn revoke_deletes_every_attached_key_at_one_revision_and_unknown_leases_are_not_found() {
    let server = Server::start();
    let mut client = connect(&server).await;
    let mut streams = connect_streaming(&server).await;
    let lease = client.lease_grant(600, None).await.expect("grant").id();
    let other = client.lease_grant(600, None).await.expect("grant").id();
    put_with_lease(&mut client, "l/b", "1", lease).await; // 2
    put_with_lease(&mut client, "l/a", "2", lease).await; // 3
    put_with_lease(&mut client, "l/c", "3", lease).await; // 4
    put_with_lease(&mut client, "l/other", "4", other).await; // 5
    client.put("l/free", "5", None).await.expect("put"); // 6
    let (watcher, mut stream) = tokio::time::timeout(
        STEP,
        streams.watch("l/", Some(WatchOptions::new().with_prefix())),
    )
    .await
    .expect("watch in time")
    .expect("watch");

    assert_eq!(
        time_to_live(&mut client, lease, true).await.2,
        ["l/a", "l/b", "l/c"]
    );
    let revoked = client.lease_revoke(lease).await.expect("revoke");
    assert_eq!(header_of(revoked.header()).revision(), 7, "one revision");

    // The watcher sees all the deletes in one response, at that one revision.
    assert_eq!(
        collect(&mut stream, watcher.watch_id(), 3).await,
        [vec![
            Ev::delete("l/a", 7),
            Ev::delete("l/b", 7),
            Ev::delete("l/c", 7),
        ]]
    );
    let all = client
        .get("l/", Some(GetOptions::new().with_prefix().with_keys_only()))
        .await
        .expect("get");
    assert_eq!(common::keys(all.kvs()), ["l/free", "l/other"]);
    assert_eq!(lease_ids(&mut client).await, [other]);
    assert_eq!(
        time_to_live(&mut client, lease, true).await,
        (-1, 0, vec![])
    );

    // Revoking it again, or a lease that never existed, or using it: not found.
    assert_grpc_error(client.lease_revoke(lease).await, "NotFound", NOT_FOUND);
    assert_grpc_error(client.lease_revoke(0x999).await, "NotFound", NOT_FOUND);
    assert_grpc_error(
        client
            .put("l/x", "v", Some(PutOptions::new().with_lease(lease)))
            .await,
        "NotFound",
        NOT_FOUND,
    );
    // etcd answers a keep-alive for an unknown lease with TTL 0, which etcd-client reports so.
    match client.lease_keep_alive(lease).await {
        Err(Error::LeaseKeepAliveError(message)) => assert_eq!(message, "lease not found"),
        other => panic!("keep-alive of a revoked lease: {other:?}"),
    }
    assert_eq!(revision(&mut client).await, 7, "failed calls write nothing");
}

#[tokio::test]
async fn put_attaches_moves_and_detaches_keys_and_ignore_lease_keeps_the_lease() {
    let server = Server::start();
    let mut client = connect(&server).await;
    let a = client.lease_grant(600, None).await.expect("grant").id();
    let b = client.lease_grant(600, None).await.expect("grant").id();

    put_with_lease(&mut client, "k", "1", a).await;
    put_with_lease(&mut client, "j", "1", a).await;
    assert_eq!(
        value_and_lease(&mut client, "k").await,
        Some(("1".into(), a))
    );
    let (ttl, granted, keys) = time_to_live(&mut client, a, true).await;
    assert!((590..=600).contains(&ttl), "remaining TTL {ttl}");
    assert_eq!((granted, keys), (600, vec!["j".into(), "k".into()]));
    assert_eq!(
        time_to_live(&mut client, a, false).await.2,
        Vec::<String>::new(),
        "keys only when asked for"
    );

    // Put with another lease moves the key.
    put_with_lease(&mut client, "k", "2", b).await;
    assert_eq!(time_to_live(&mut client, a, true).await.2, ["j"]);
    assert_eq!(time_to_live(&mut client, b, true).await.2, ["k"]);

    // ignore_lease: a new value, the same lease.
    client
        .put("k", "3", Some(PutOptions::new().with_ignore_lease()))
        .await
        .expect("put ignore_lease");
    assert_eq!(
        value_and_lease(&mut client, "k").await,
        Some(("3".into(), b))
    );
    assert_eq!(time_to_live(&mut client, b, true).await.2, ["k"]);
    assert_grpc_error(
        client
            .put(
                "k",
                "4",
                Some(PutOptions::new().with_ignore_lease().with_lease(b)),
            )
            .await,
        "InvalidArgument",
        "etcdserver: lease is provided",
    );
    assert_grpc_error(
        client
            .put("missing", "4", Some(PutOptions::new().with_ignore_lease()))
            .await,
        "InvalidArgument",
        "etcdserver: key not found",
    );

    // A plain put detaches; deleting a key detaches it too.
    client.put("k", "5", None).await.expect("put");
    assert_eq!(
        value_and_lease(&mut client, "k").await,
        Some(("5".into(), 0))
    );
    assert_eq!(
        time_to_live(&mut client, b, true).await.2,
        Vec::<String>::new()
    );
    client.delete("j", None).await.expect("delete");
    assert_eq!(
        time_to_live(&mut client, a, true).await.2,
        Vec::<String>::new()
    );

    // Revoking a lease whose keys moved away deletes nothing.
    let before = revision(&mut client).await;
    let revoked = client.lease_revoke(a).await.expect("revoke");
    assert_eq!(header_of(revoked.header()).revision(), before);
    assert_eq!(
        value_and_lease(&mut client, "k").await,
        Some(("5".into(), 0))
    );
}

#[tokio::test]
async fn keep_alive_holds_a_lease_past_its_ttl_and_expiry_deletes_its_keys() {
    const TTL: i64 = 2;
    let server = Server::start();
    let mut client = connect(&server).await;
    let mut streams = connect_streaming(&server).await;
    let lease = client.lease_grant(TTL, None).await.expect("grant").id();
    put_with_lease(&mut client, "e/1", "v", lease).await; // 2
    put_with_lease(&mut client, "e/2", "v", lease).await; // 3
    let (watcher, mut stream) = tokio::time::timeout(
        STEP,
        streams.watch("e/", Some(WatchOptions::new().with_prefix())),
    )
    .await
    .expect("watch in time")
    .expect("watch");

    // Keep it alive for three TTLs, a keep-alive every half second.
    let (mut keeper, mut responses) = streams.lease_keep_alive(lease).await.expect("keep alive");
    let start = Instant::now();
    let mut last_keep_alive = Instant::now();
    while start.elapsed() < Duration::from_secs(3 * TTL as u64) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        last_keep_alive = Instant::now();
        keeper.keep_alive().await.expect("send keep-alive");
        let response = tokio::time::timeout(STEP, responses.message())
            .await
            .expect("keep-alive answered in time")
            .expect("keep-alive response")
            .expect("keep-alive stream open");
        assert_eq!((response.id(), response.ttl()), (lease, TTL));
    }
    assert_eq!(
        value_and_lease(&mut client, "e/1").await,
        Some(("v".into(), lease)),
        "the key outlived three TTLs"
    );
    let (ttl, granted, keys) = time_to_live(&mut client, lease, true).await;
    assert!((0..=TTL).contains(&ttl), "remaining TTL {ttl}");
    assert_eq!((granted, keys), (TTL, vec!["e/1".into(), "e/2".into()]));

    // Stop keeping it alive: it expires, and its keys go in one revision.
    drop(keeper);
    drop(responses);
    let deletes = collect(&mut stream, watcher.watch_id(), 2).await;
    let expired_after = last_keep_alive.elapsed();
    assert!(
        expired_after >= Duration::from_millis(1500),
        "expired {expired_after:?} after the last keep-alive, before its TTL"
    );
    assert_eq!(
        deletes,
        [vec![Ev::delete("e/1", 4), Ev::delete("e/2", 4)]],
        "expiry deletes every key at one revision"
    );
    assert_eq!(value_and_lease(&mut client, "e/1").await, None);
    assert_eq!(
        time_to_live(&mut client, lease, true).await,
        (-1, 0, vec![])
    );
    assert_eq!(lease_ids(&mut client).await, Vec::<i64>::new());
}

#[tokio::test]
async fn leases_and_their_keys_survive_a_restart_and_short_ones_still_expire() {
    let mut server = Server::start();
    let (long, short) = {
        let mut client = connect(&server).await;
        let long = client.lease_grant(600, None).await.expect("grant").id();
        let short = client.lease_grant(3, None).await.expect("grant").id();
        put_with_lease(&mut client, "r/long", "v", long).await; // 2
        put_with_lease(&mut client, "r/short", "v", short).await; // 3
        (long, short)
    };
    server.restart();
    let mut client = connect(&server).await;

    let (ttl, granted, keys) = time_to_live(&mut client, long, true).await;
    assert!((1..=600).contains(&ttl), "remaining TTL {ttl}");
    assert_eq!((granted, keys), (600, vec!["r/long".into()]));
    assert_eq!(
        value_and_lease(&mut client, "r/long").await,
        Some(("v".into(), long))
    );
    let fresh = client.lease_grant(600, None).await.expect("grant").id();
    assert!(fresh != long && fresh != short, "new ids do not collide");

    // The short lease still expires after the restart, deleting its key.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if value_and_lease(&mut client, "r/short").await.is_none() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the 3 s lease has not expired 15 s after the restart"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(revision(&mut client).await, 4, "expiry wrote one revision");
    let mut expected = vec![long, fresh];
    expected.sort();
    assert_eq!(lease_ids(&mut client).await, expected);
}

/// The first lease id in an etcdctl line (`lease <16 hex> ...`).
fn hex_id(line: &str) -> String {
    let id = line
        .strip_prefix("lease ")
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("no lease id in {line:?}"));
    assert_eq!(id.len(), 16, "lease id {id:?} printed as %016x");
    assert!(
        id.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    );
    id.to_owned()
}

/// Replaces `remaining(Ns)` by `remaining(~)` after checking N is within `range`.
fn normalise_remaining(line: &str, range: std::ops::RangeInclusive<i64>) -> String {
    let start = line.find("remaining(").expect("remaining(") + "remaining(".len();
    let end = start + line[start..].find("s)").expect("s)");
    let n: i64 = line[start..end].parse().expect("a number of seconds");
    assert!(range.contains(&n), "remaining {n}s in {line:?}");
    format!("{}~{}", &line[..start], &line[end..])
}

#[tokio::test]
async fn etcdctl_lease_commands_print_exactly_what_etcd_prints() {
    let server = Server::start();
    let ep = server.endpoint();
    let mut client = connect(&server).await;
    let ctl = |args: &[&str]| etcdctl(&ep, args);

    let granted = ok_stdout(&ctl(&["lease", "grant", "30"]));
    let id = hex_id(&granted);
    assert_eq!(granted, format!("lease {id} granted with TTL(30s)\n"));
    let short = ok_stdout(&ctl(&["lease", "grant", "1"]));
    let short_id = hex_id(&short);
    assert_eq!(
        short,
        format!("lease {short_id} granted with TTL({MIN_TTL}s)\n")
    );
    client
        .lease_grant(600, Some(LeaseGrantOptions::new().with_id(0x1234)))
        .await
        .expect("grant with id");

    assert_stdout(&ctl(&["put", "--lease", &id, "k2", "v"]), "OK\n");
    assert_stdout(&ctl(&["put", &format!("--lease={id}"), "k1", "v"]), "OK\n");
    // The key carries the lease, as `get -w json` shows it.
    let kv = Kv::from(&client.get("k1", None).await.expect("get").kvs()[0]);
    assert_eq!(kv.lease, i64::from_str_radix(&id, 16).expect("hex id"));
    let json = ok_stdout(&ctl(&["get", "k1", "-w", "json"]));
    assert!(json.contains(&kv.json()), "{json}");

    let line = ok_stdout(&ctl(&["lease", "timetolive", &id]));
    assert_eq!(
        normalise_remaining(&line, 20..=30),
        format!("lease {id} granted with TTL(30s), remaining(~s)\n")
    );
    // etcd lists attached keys in no particular order: compare them sorted.
    let line = ok_stdout(&ctl(&["lease", "timetolive", &id, "--keys"]));
    let line = normalise_remaining(&line, 20..=30);
    let keys_at = line.find("attached keys([").expect("attached keys") + 15;
    let keys_end = keys_at + line[keys_at..].find("])").expect("])");
    let mut keys: Vec<&str> = line[keys_at..keys_end].split(' ').collect();
    keys.sort();
    assert_eq!(keys, ["k1", "k2"], "{line}");
    assert_eq!(
        format!("{}{}", &line[..keys_at], &line[keys_end..]),
        format!("lease {id} granted with TTL(30s), remaining(~s), attached keys([])\n")
    );
    // A small id prints zero-padded.
    let line = ok_stdout(&ctl(&["lease", "timetolive", "1234"]));
    assert_eq!(
        normalise_remaining(&line, 590..=600),
        "lease 0000000000001234 granted with TTL(600s), remaining(~s)\n"
    );

    // `lease list`: a count, then the ids in no particular order.
    let listed = ok_stdout(&ctl(&["lease", "list"]));
    let mut lines: Vec<&str> = listed.lines().collect();
    assert_eq!(lines.first(), Some(&"found 3 leases"), "{listed}");
    lines.remove(0);
    lines.sort();
    let mut expected = vec![id.as_str(), short_id.as_str(), "0000000000001234"];
    expected.sort();
    assert_eq!(lines, expected, "{listed}");

    assert_stdout(
        &ctl(&["lease", "keep-alive", "--once", &id]),
        &format!("lease {id} keepalived with TTL(30)\n"),
    );
    assert_stdout(
        &ctl(&["lease", "revoke", &id]),
        &format!("lease {id} revoked\n"),
    );
    assert_stdout(&ctl(&["get", "k1"]), "");
    assert_stdout(&ctl(&["get", "k2"]), "");
    assert_stdout(
        &ctl(&["lease", "timetolive", &id, "--keys"]),
        &format!("lease {id} already expired\n"),
    );

    // `lease keep-alive` keeps printing, until the lease is gone.
    let granted = ok_stdout(&ctl(&["lease", "grant", "3"]));
    let kept = hex_id(&granted);
    let mut keep_alive = CtlProcess::spawn(&ep, &["lease", "keep-alive", &kept]);
    let line = format!("lease {kept} keepalived with TTL(3)");
    keep_alive.read_through(&line).await;
    assert_eq!(
        keep_alive.read_through(&line).await,
        format!("{line}\n{line}\n")
    );
    let revoked = i64::from_str_radix(&kept, 16).expect("hex id");
    client.lease_revoke(revoked).await.expect("revoke");
    let (output, status) = keep_alive.read_to_end().await;
    let last = output.lines().last().unwrap_or_default();
    assert_eq!(
        last,
        format!("lease {kept} expired or revoked."),
        "{output}"
    );
    assert!(
        output.lines().all(|l| l == line || l == last),
        "only keep-alive lines before it: {output}"
    );
    assert!(status.success(), "keep-alive exits cleanly: {status}");

    // Errors.
    let output = ctl(&["lease", "revoke", &id]);
    assert_error(&output, &format!("failed to revoke lease ({NOT_FOUND})"));
    let output = ctl(&["lease", "keep-alive", "--once", &id]);
    assert_error(&output, NOT_FOUND);
    let output = ctl(&["put", "--lease", &id, "k3", "v"]);
    assert_error(&output, NOT_FOUND);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
}
