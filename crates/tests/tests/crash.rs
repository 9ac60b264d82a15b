//! The crash test: concurrent writers put unique keys while the member is killed with SIGKILL
//! and restarted again and again. Every acknowledged put must survive with exactly the
//! revision its response carried, and no client may ever see the revision go backwards.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cairn_tests::Server;
use common::{connect, header_of};
use etcd_client::{Client, ConnectOptions, GetOptions};

const WRITERS: usize = 4;
const ROUNDS: usize = 10;
/// Each round waits for this many new acknowledged puts before killing the member, so writes
/// are in flight at every kill.
const ACKS_PER_ROUND: usize = 25;
/// A bound on how long a round may wait for those puts.
const ROUND_PROGRESS_TIMEOUT: Duration = Duration::from_secs(30);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// A put the server acknowledged.
#[derive(Debug)]
struct Ack {
    key: String,
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
        let key = format!("w{id}/{seq:06}");
        let value = format!("writer {id} put {seq}");
        seq += 1;
        // Every response received before this request was sent has a lower revision than
        // this put will get (linearizability; one new revision per put).
        let floor = shared.revision_seen_max.load(Ordering::SeqCst);
        match tokio::time::timeout(REQUEST_TIMEOUT, c.put(key.clone(), value.clone(), None)).await {
            Ok(Ok(response)) => {
                let revision = header_of(response.header()).revision();
                assert!(
                    revision > floor,
                    "put {key} got revision {revision}, but revision {floor} was already \
                     acknowledged before it was sent: the revision went backwards"
                );
                shared
                    .revision_seen_max
                    .fetch_max(revision, Ordering::SeqCst);
                acks.push(Ack {
                    key,
                    value,
                    revision,
                });
                shared.acked.fetch_add(1, Ordering::SeqCst);
            }
            // Not acknowledged: it may or may not have been applied. Reconnect and go on
            // with a new key.
            _ => {
                client = None;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    acks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_puts_survive_repeated_kill9_with_their_revisions() {
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
                "round {round}: fewer than {ACKS_PER_ROUND} puts acknowledged within \
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
        "only {} puts acknowledged",
        acks.len()
    );
    let revisions: HashSet<i64> = acks.iter().map(|a| a.revision).collect();
    assert_eq!(
        revisions.len(),
        acks.len(),
        "each put had a revision of its own"
    );

    // Every acknowledged put is there, with exactly the revision it was acknowledged at.
    let mut client = connect(&server).await;
    let mut stored = BTreeMap::new();
    for id in 0..WRITERS {
        let response = client
            .get(format!("w{id}/"), Some(GetOptions::new().with_prefix()))
            .await
            .expect("get a writer's keys");
        for kv in response.kvs() {
            let key = String::from_utf8(kv.key().to_vec()).expect("UTF-8 key");
            let value = String::from_utf8(kv.value().to_vec()).expect("UTF-8 value");
            stored.insert(
                key,
                (value, kv.create_revision(), kv.mod_revision(), kv.version()),
            );
        }
    }
    let mut lost = Vec::new();
    for ack in &acks {
        match stored.get(&ack.key) {
            None => lost.push(format!(
                "{} (revision {}) is missing",
                ack.key, ack.revision
            )),
            Some(found) => {
                let expected = (ack.value.clone(), ack.revision, ack.revision, 1);
                if *found != expected {
                    lost.push(format!(
                        "{}: expected (value, create, mod, version) {expected:?}, found {found:?}",
                        ack.key
                    ));
                }
            }
        }
    }
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged puts were lost or changed across {ROUNDS} kill -9s:\n{}",
        lost.len(),
        acks.len(),
        lost.join("\n")
    );
    // Each key was put once, so every stored key (acknowledged or not) is at version 1 with
    // a revision of its own.
    let mut stored_revisions = HashSet::new();
    for (key, (_, create, modified, version)) in &stored {
        assert!(
            create == modified && *version == 1,
            "{key} was put once but has create {create}, mod {modified}, version {version}"
        );
        assert!(
            stored_revisions.insert(*modified),
            "{key} shares revision {modified} with another key"
        );
    }
    let response = client.get("probe", None).await.expect("get");
    let final_revision = header_of(response.header()).revision();
    let acked_max = acks.iter().map(|a| a.revision).max().unwrap_or(0);
    assert!(final_revision >= acked_max);
    eprintln!(
        "crash test: {} acknowledged puts, {} keys stored, final revision {final_revision}",
        acks.len(),
        stored.len()
    );
}
