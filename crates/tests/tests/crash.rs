//! The crash test: concurrent writers put unique keys (and one writer multi-key txns) while
//! the member is killed with SIGKILL and restarted again and again. Every acknowledged write
//! must survive with exactly the revision its response carried, every txn must be all there
//! or not at all, and no client may ever see the revision go backwards.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cairn_tests::Server;
use common::{connect, header_of};
use etcd_client::{Client, ConnectOptions, GetOptions, Txn, TxnOp};

/// Writers `0..WRITERS - 1` put one key per request; the last writer puts `TXN_KEYS` keys
/// per txn.
const WRITERS: usize = 4;
const TXN_KEYS: usize = 3;
const ROUNDS: usize = 10;
/// Each round waits for this many new acknowledged writes before killing the member, so
/// writes are in flight at every kill.
const ACKS_PER_ROUND: usize = 25;
/// A bound on how long a round may wait for those writes.
const ROUND_PROGRESS_TIMEOUT: Duration = Duration::from_secs(30);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// How many keys one request of this writer puts.
fn keys_per_write(writer: usize) -> usize {
    if writer == WRITERS - 1 { TXN_KEYS } else { 1 }
}

/// A write the server acknowledged: keys `<group>/0`, `<group>/1`, ... all with `value`.
#[derive(Debug)]
struct Ack {
    group: String,
    value: String,
    revision: i64,
}

struct Shared {
    stop: AtomicBool,
    acked: AtomicUsize,
    /// The highest revision of any response a client has received so far.
    revision_seen_max: AtomicI64,
}

async fn writer(id: usize, url: String, shared: Arc<Shared>) -> Vec<Ack> {
    let options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_timeout(REQUEST_TIMEOUT);
    let mut client: Option<Client> = None;
    let mut acks = Vec::new();
    let mut seq = 0u64;
    while !shared.stop.load(Ordering::SeqCst) {
        let Some(c) = client.as_mut() else {
            match tokio::time::timeout(
                REQUEST_TIMEOUT,
                Client::connect([url.as_str()], Some(options.clone())),
            )
            .await
            {
                Ok(Ok(c)) => client = Some(c),
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
            continue;
        };
        let group = format!("w{id}/{seq:06}");
        let value = format!("writer {id} write {seq}");
        seq += 1;
        let keys: Vec<String> = (0..keys_per_write(id))
            .map(|part| format!("{group}/{part}"))
            .collect();
        // Every response received before this request was sent has a lower revision than
        // this write will get (linearizability; one new revision per write).
        let floor = shared.revision_seen_max.load(Ordering::SeqCst);
        let revision = if keys.len() == 1 {
            let put = c.put(keys[0].clone(), value.clone(), None);
            match tokio::time::timeout(REQUEST_TIMEOUT, put).await {
                Ok(Ok(response)) => Some(header_of(response.header()).revision()),
                _ => None,
            }
        } else {
            let ops: Vec<TxnOp> = keys
                .iter()
                .map(|key| TxnOp::put(key.clone(), value.clone(), None))
                .collect();
            match tokio::time::timeout(REQUEST_TIMEOUT, c.txn(Txn::new().and_then(ops))).await {
                Ok(Ok(response)) => Some(header_of(response.header()).revision()),
                _ => None,
            }
        };
        match revision {
            Some(revision) => {
                assert!(
                    revision > floor,
                    "write {group} got revision {revision}, but revision {floor} was already \
                     acknowledged before it was sent: the revision went backwards"
                );
                shared
                    .revision_seen_max
                    .fetch_max(revision, Ordering::SeqCst);
                acks.push(Ack {
                    group,
                    value,
                    revision,
                });
                shared.acked.fetch_add(1, Ordering::SeqCst);
            }
            // Not acknowledged: it may or may not have been applied. Reconnect and go on
            // with new keys.
            None => {
                client = None;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    acks
}

/// What the store holds for one write group.
#[derive(Debug, PartialEq)]
struct StoredGroup {
    /// Per part present: (value, create_revision, mod_revision, version).
    parts: BTreeMap<usize, (String, i64, i64, i64)>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_repeated_kill9_with_their_revisions() {
    let mut server = Server::start();
    let shared = Arc::new(Shared {
        stop: AtomicBool::new(false),
        acked: AtomicUsize::new(0),
        revision_seen_max: AtomicI64::new(0),
    });
    let writers: Vec<_> = (0..WRITERS)
        .map(|id| tokio::spawn(writer(id, server.url(), shared.clone())))
        .collect();

    for round in 0..ROUNDS {
        let target = shared.acked.load(Ordering::SeqCst) + ACKS_PER_ROUND;
        let deadline = Instant::now() + ROUND_PROGRESS_TIMEOUT;
        while shared.acked.load(Ordering::SeqCst) < target {
            assert!(
                Instant::now() < deadline,
                "round {round}: fewer than {ACKS_PER_ROUND} writes acknowledged within \
                 {ROUND_PROGRESS_TIMEOUT:?}; server log:\n{}",
                server.log()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Vary the moment of the kill a little from round to round.
        tokio::time::sleep(Duration::from_millis((round as u64 * 7) % 23)).await;
        tokio::task::block_in_place(|| {
            server.kill9();
            server.restart();
        });

        // Every response received so far (before the kill or since the restart) completed
        // before this read began, so the read must see at least that revision.
        let seen = shared.revision_seen_max.load(Ordering::SeqCst);
        let mut client = connect(&server).await;
        let response = client.get("probe", None).await.expect("get after restart");
        let revision = header_of(response.header()).revision();
        assert!(
            revision >= seen,
            "round {round}: after restart the store is at revision {revision}, but revision \
             {seen} had been acknowledged"
        );
    }

    shared.stop.store(true, Ordering::SeqCst);
    let mut acks = Vec::new();
    for writer in writers {
        acks.extend(writer.await.expect("writer task"));
    }
    assert!(
        acks.len() >= ROUNDS * ACKS_PER_ROUND,
        "only {} writes acknowledged",
        acks.len()
    );

    // Read back everything the writers left, grouped by write.
    let mut client = connect(&server).await;
    let mut stored: BTreeMap<String, StoredGroup> = BTreeMap::new();
    for id in 0..WRITERS {
        let response = client
            .get(format!("w{id}/"), Some(GetOptions::new().with_prefix()))
            .await
            .expect("get a writer's keys");
        for kv in response.kvs() {
            let key = String::from_utf8(kv.key().to_vec()).expect("UTF-8 key");
            let value = String::from_utf8(kv.value().to_vec()).expect("UTF-8 value");
            let (group, part) = key.rsplit_once('/').expect("key is <group>/<part>");
            let part: usize = part.parse().expect("part number");
            stored
                .entry(group.to_owned())
                .or_insert(StoredGroup {
                    parts: BTreeMap::new(),
                })
                .parts
                .insert(
                    part,
                    (value, kv.create_revision(), kv.mod_revision(), kv.version()),
                );
        }
    }

    // Every write that is there (acknowledged or not) is there whole, at one revision of its
    // own, each key written once.
    let mut group_of_revision: HashMap<i64, &str> = HashMap::new();
    for (group, found) in &stored {
        let writer: usize = group[1..group.find('/').expect("w<id>/")]
            .parse()
            .expect("writer id");
        let parts: Vec<usize> = found.parts.keys().copied().collect();
        assert_eq!(
            parts,
            (0..keys_per_write(writer)).collect::<Vec<_>>(),
            "write {group} is only partly there: {found:?}"
        );
        let (value, revision, _, _) = found.parts[&0].clone();
        for (part, (v, create, modified, version)) in &found.parts {
            assert_eq!(
                (v, *create, *modified, *version),
                (&value, revision, revision, 1),
                "{group}/{part}: every key of one write has its value, revision and version 1"
            );
        }
        if let Some(other) = group_of_revision.insert(revision, group) {
            panic!("writes {other} and {group} share revision {revision}");
        }
    }

    // Every acknowledged write is there, at exactly the revision it was acknowledged at.
    let mut lost = Vec::new();
    for ack in &acks {
        match stored.get(&ack.group) {
            None => lost.push(format!(
                "{} (revision {}) is missing",
                ack.group, ack.revision
            )),
            Some(found) => {
                let (value, revision, _, _) = &found.parts[&0];
                if (value, *revision) != (&ack.value, ack.revision) {
                    lost.push(format!(
                        "{}: acknowledged {:?} at revision {}, found {value:?} at revision \
                         {revision}",
                        ack.group, ack.value, ack.revision
                    ));
                }
            }
        }
    }
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged writes were lost or changed across {ROUNDS} kill -9s:\n{}",
        lost.len(),
        acks.len(),
        lost.join("\n")
    );
    let response = client.get("probe", None).await.expect("get");
    let final_revision = header_of(response.header()).revision();
    let acked_max = acks.iter().map(|a| a.revision).max().unwrap_or(0);
    assert!(final_revision >= acked_max);
    eprintln!(
        "crash test: {} acknowledged writes, {} writes stored, final revision {final_revision}",
        acks.len(),
        stored.len()
    );
}
