//! Concurrent clients doing puts, linearizable gets, deletes and compare-and-set transactions
//! on a handful of keys through the `etcd-client` crate, every attempt recorded in a
//! [`History`] for the linearizability checker.
//!
//! Each client is bound to one member's client URL, like an application instance that talks
//! to its local member. Every put writes a value no one else writes (`c<client>-<n>`), so a
//! read names the write it saw. Some puts go to "ledger" keys written exactly once
//! (`ledger/c<client>/<n>`): once the cluster has settled, every acknowledged ledger put must
//! be there — the direct check that no acknowledged write was lost.
//!
//! After a failure a client checks that its member accepts TCP connections before it sends
//! anything again, and waits while it does not: a killed member then adds no unknown
//! outcomes to the history (a request to it would be recorded as one, since the client
//! cannot tell whether it was sent), which keeps the history small enough to check.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cairn_linearizability::{KvInput, KvOutput, KvWrite};
use etcd_client::{Client, Compare, CompareOp, ConnectOptions, GetOptions, Txn, TxnOp};
use tokio::runtime::Handle;
use tokio::task::JoinHandle;

use crate::history::History;

/// The prefix of the keys written once each.
pub const LEDGER_PREFIX: &str = "ledger/";
/// The client tag of the read-back at the end of a run.
pub const READ_BACK_CLIENT: usize = 10_000;
/// How long the read-back at the end keeps retrying a key.
const READ_BACK_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a client waits before trying again after a failure.
const FAILURE_BACKOFF: Duration = Duration::from_millis(100);

/// How the clients behave.
#[derive(Clone, Debug)]
pub struct WorkloadOptions {
    /// The shared keys are `key/0 .. key/<keys-1>`.
    pub keys: usize,
    /// Each request's bound; an answer later than this is an unknown outcome.
    pub request_timeout: Duration,
    /// Pause between a client's operations: it bounds the history's size.
    pub think_time: Duration,
}

impl Default for WorkloadOptions {
    fn default() -> Self {
        WorkloadOptions {
            keys: 4,
            request_timeout: Duration::from_secs(2),
            think_time: Duration::from_millis(40),
        }
    }
}

/// Clients running on a tokio runtime; see the module header.
pub struct Workload {
    runtime: Handle,
    options: WorkloadOptions,
    history: Arc<History>,
    stop: Arc<AtomicBool>,
    acknowledged: Arc<AtomicUsize>,
    clients: Vec<JoinHandle<ClientReport>>,
}

/// What one client did.
#[derive(Clone, Debug, Default)]
pub struct ClientReport {
    pub client: usize,
    pub url: String,
    /// Ledger puts acknowledged: key → value.
    pub ledger_acknowledged: BTreeMap<String, String>,
    /// Ledger puts sent (acknowledged or not): key → value.
    pub ledger_attempted: BTreeMap<String, String>,
}

/// Everything a run produced, read back once the cluster settled.
pub struct WorkloadReport {
    pub history: Arc<History>,
    pub clients: Vec<ClientReport>,
    /// The ledger keys and values the read-back found.
    pub ledger_read_back: BTreeMap<String, String>,
}

impl WorkloadReport {
    /// Every acknowledged ledger put is there with its value, and every ledger key there was
    /// written by some put with that value.
    #[track_caller]
    pub fn assert_no_lost_writes(&self) {
        let mut acknowledged = BTreeMap::new();
        let mut attempted = BTreeMap::new();
        for client in &self.clients {
            acknowledged.extend(client.ledger_acknowledged.clone());
            attempted.extend(client.ledger_attempted.clone());
        }
        let lost: Vec<&String> = acknowledged
            .iter()
            .filter(|(key, value)| self.ledger_read_back.get(*key) != Some(value))
            .map(|(key, _)| key)
            .collect();
        assert!(
            lost.is_empty(),
            "{} of {} acknowledged writes are lost: {lost:?}",
            lost.len(),
            acknowledged.len()
        );
        let phantom: Vec<&String> = self
            .ledger_read_back
            .iter()
            .filter(|(key, value)| attempted.get(*key) != Some(value))
            .map(|(key, _)| key)
            .collect();
        assert!(phantom.is_empty(), "writes no client sent: {phantom:?}");
        assert!(
            !acknowledged.is_empty(),
            "no ledger write was acknowledged: the run proves nothing"
        );
    }

    /// Acknowledged ledger puts, over all clients.
    pub fn ledger_acknowledged(&self) -> usize {
        self.clients
            .iter()
            .map(|c| c.ledger_acknowledged.len())
            .sum()
    }
}

impl Workload {
    /// Starts one client per URL in `urls` (a URL may appear several times).
    pub fn start(runtime: &Handle, urls: &[String], options: WorkloadOptions) -> Workload {
        let history = Arc::new(History::new());
        let stop = Arc::new(AtomicBool::new(false));
        let acknowledged = Arc::new(AtomicUsize::new(0));
        let keys: Arc<Vec<String>> = Arc::new(shared_keys(options.keys));
        let clients = urls
            .iter()
            .enumerate()
            .map(|(client, url)| {
                let state = ClientState {
                    client,
                    url: url.clone(),
                    keys: Arc::clone(&keys),
                    history: Arc::clone(&history),
                    stop: Arc::clone(&stop),
                    acknowledged: Arc::clone(&acknowledged),
                    options: options.clone(),
                };
                runtime.spawn(state.run())
            })
            .collect();
        Workload {
            runtime: runtime.clone(),
            options,
            history,
            stop,
            acknowledged,
            clients,
        }
    }

    pub fn history(&self) -> &Arc<History> {
        &self.history
    }

    /// Operations acknowledged so far (successful answers, reads included).
    pub fn acknowledged(&self) -> usize {
        self.acknowledged.load(Ordering::SeqCst)
    }

    /// Waits (blocking) until `count` more operations have been acknowledged; panics after
    /// `timeout`.
    #[track_caller]
    pub fn wait_for_acks(&self, count: usize, timeout: Duration) {
        let target = self.acknowledged() + count;
        let deadline = Instant::now() + timeout;
        while self.acknowledged() < target {
            if Instant::now() > deadline {
                let entries = self.history.entries();
                let tail: Vec<String> = entries
                    .iter()
                    .rev()
                    .take(20)
                    .map(crate::history::describe_entry)
                    .collect();
                panic!(
                    "only {} of {count} more operations acknowledged within {timeout:?}; \
                     last attempts:\n{}",
                    count - (target - self.acknowledged()),
                    tail.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the clients, then reads every shared key (linearizable, recorded in the history
    /// so the checker sees the final state) and the ledger through `read_back_url`.
    pub fn stop_and_read_back(self, read_back_url: &str) -> WorkloadReport {
        self.stop.store(true, Ordering::SeqCst);
        let runtime = self.runtime.clone();
        let clients: Vec<ClientReport> = runtime.block_on(async {
            let mut reports = Vec::new();
            for client in self.clients {
                reports.push(client.await.expect("a workload client panicked"));
            }
            reports
        });
        let history = self.history;
        let keys = shared_keys(self.options.keys);
        let timeout = self.options.request_timeout;
        let ledger_read_back = runtime.block_on(async {
            let mut client = connect_with_retry(read_back_url, timeout).await;
            for key in &keys {
                let deadline = Instant::now() + READ_BACK_TIMEOUT;
                while recorded_get(&mut client, &history, READ_BACK_CLIENT, key, timeout)
                    .await
                    .is_err()
                {
                    assert!(
                        Instant::now() < deadline,
                        "could not read {key} back within {READ_BACK_TIMEOUT:?}"
                    );
                    tokio::time::sleep(FAILURE_BACKOFF).await;
                }
            }
            read_prefix(&mut client, LEDGER_PREFIX, timeout).await
        });
        WorkloadReport {
            history,
            clients,
            ledger_read_back,
        }
    }
}

/// A tokio runtime for workload clients, separate from the test's own thread, which stays
/// free to block on the cluster's faults.
pub fn client_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("build the clients' tokio runtime")
}

fn shared_keys(count: usize) -> Vec<String> {
    (0..count).map(|i| format!("key/{i}")).collect()
}

/// A client connected to `url` with bounded connect and request times.
pub async fn connect(url: &str, request_timeout: Duration) -> Result<Client, etcd_client::Error> {
    let options = ConnectOptions::new()
        .with_connect_timeout(CONNECT_TIMEOUT)
        .with_timeout(request_timeout);
    match tokio::time::timeout(CONNECT_TIMEOUT * 2, Client::connect([url], Some(options))).await {
        Ok(result) => result,
        Err(_) => Err(etcd_client::Error::IoError(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("connect to {url}: no answer"),
        ))),
    }
}

/// `connect`, retried for up to 30 s.
pub async fn connect_with_retry(url: &str, request_timeout: Duration) -> Client {
    let deadline = Instant::now() + READ_BACK_TIMEOUT;
    loop {
        match connect(url, request_timeout).await {
            Ok(client) => return client,
            Err(e) if Instant::now() > deadline => panic!("connect to {url}: {e}"),
            Err(_) => tokio::time::sleep(FAILURE_BACKOFF).await,
        }
    }
}

/// Every key under `prefix` with its value (a linearizable read, retried for up to 30 s).
pub async fn read_prefix(
    client: &mut Client,
    prefix: &str,
    timeout: Duration,
) -> BTreeMap<String, String> {
    let deadline = Instant::now() + READ_BACK_TIMEOUT;
    loop {
        let read = tokio::time::timeout(
            timeout,
            client.get(prefix, Some(GetOptions::new().with_prefix())),
        )
        .await;
        if let Ok(Ok(response)) = read {
            return response
                .kvs()
                .iter()
                .map(|kv| {
                    (
                        String::from_utf8_lossy(kv.key()).into_owned(),
                        String::from_utf8_lossy(kv.value()).into_owned(),
                    )
                })
                .collect();
        }
        assert!(
            Instant::now() < deadline,
            "could not read {prefix}* within {READ_BACK_TIMEOUT:?}: {read:?}"
        );
        tokio::time::sleep(FAILURE_BACKOFF).await;
    }
}

/// Sends `input` to the cluster and records the attempt in `history` as `tag`'s: the answer,
/// or the failure or timeout, described.
pub async fn recorded(
    client: &mut Client,
    history: &History,
    tag: usize,
    input: KvInput,
    timeout: Duration,
) -> Result<KvOutput, String> {
    let call = history.call(tag, input.clone());
    let answer = match input {
        KvInput::Get { key } => tokio::time::timeout(timeout, client.get(key, None))
            .await
            .map(|r| {
                r.map(|response| {
                    KvOutput::Get(response.kvs().first().map(|kv| kv.value().to_vec()))
                })
            }),
        KvInput::Put { key, value } => tokio::time::timeout(timeout, client.put(key, value, None))
            .await
            .map(|r| r.map(|_| KvOutput::Put)),
        KvInput::Delete { key } => tokio::time::timeout(timeout, client.delete(key, None))
            .await
            .map(|r| {
                r.map(|response| KvOutput::Delete {
                    deleted: response.deleted(),
                })
            }),
        KvInput::Txn {
            key,
            expected,
            success,
            failure,
        } => {
            let compare = match expected {
                Some(value) => Compare::value(key, CompareOp::Equal, value),
                None => Compare::version(key, CompareOp::Equal, 0),
            };
            let txn = Txn::new()
                .when([compare])
                .and_then(success.iter().map(txn_op).collect::<Vec<_>>())
                .or_else(failure.iter().map(txn_op).collect::<Vec<_>>());
            tokio::time::timeout(timeout, client.txn(txn))
                .await
                .map(|r| {
                    r.map(|response| KvOutput::Txn {
                        succeeded: response.succeeded(),
                    })
                })
        }
    };
    match answer {
        Ok(Ok(output)) => {
            call.returned(output.clone());
            Ok(output)
        }
        Ok(Err(error)) => {
            let described = error.to_string();
            call.failed(&error);
            Err(described)
        }
        Err(_) => {
            call.timed_out(timeout);
            Err(format!("no answer within {timeout:?}"))
        }
    }
}

/// A linearizable get of `key`, recorded in `history` as `tag`'s. Returns the value (None:
/// absent) or the failure, described.
pub async fn recorded_get(
    client: &mut Client,
    history: &History,
    tag: usize,
    key: &str,
    timeout: Duration,
) -> Result<Option<Vec<u8>>, String> {
    let input = KvInput::Get { key: key.into() };
    match recorded(client, history, tag, input, timeout).await? {
        KvOutput::Get(value) => Ok(value),
        other => unreachable!("a get answered {other:?}"),
    }
}

/// A put of `key`=`value`, recorded in `history` as `tag`'s. Ok when acknowledged.
pub async fn recorded_put(
    client: &mut Client,
    history: &History,
    tag: usize,
    key: &str,
    value: &str,
    timeout: Duration,
) -> Result<(), String> {
    let input = KvInput::Put {
        key: key.into(),
        value: value.into(),
    };
    recorded(client, history, tag, input, timeout)
        .await
        .map(drop)
}

/// The next operation a client makes.
enum Choice {
    Get,
    Put,
    Delete,
    CompareAndSet,
    LedgerPut,
}

struct ClientState {
    client: usize,
    url: String,
    keys: Arc<Vec<String>>,
    history: Arc<History>,
    stop: Arc<AtomicBool>,
    acknowledged: Arc<AtomicUsize>,
    options: WorkloadOptions,
}

impl ClientState {
    async fn run(self) -> ClientReport {
        let mut report = ClientReport {
            client: self.client,
            url: self.url.clone(),
            ..ClientReport::default()
        };
        let mut random = XorShift::new(self.client as u64);
        let mut connection: Option<Client> = None;
        let mut sequence = 0u64;
        // The last value this client saw for each key: what its compare-and-sets expect.
        let mut last_seen: HashMap<Vec<u8>, Option<Vec<u8>>> = HashMap::new();
        let mut healthy = true;
        while !self.stop.load(Ordering::SeqCst) {
            if !healthy && !accepts_connections(&self.url).await {
                tokio::time::sleep(FAILURE_BACKOFF).await;
                continue;
            }
            let client = match connection.as_mut() {
                Some(client) => client,
                None => match connect(&self.url, self.options.request_timeout).await {
                    Ok(client) => connection.insert(client),
                    Err(_) => {
                        tokio::time::sleep(FAILURE_BACKOFF).await;
                        continue;
                    }
                },
            };
            let key = self.keys[random.below(self.keys.len() as u64) as usize].as_bytes();
            let value = format!("c{}-{sequence}", self.client);
            sequence += 1;
            let choice = match random.below(100) {
                0..25 => Choice::Get,
                25..55 => Choice::Put,
                55..65 => Choice::Delete,
                65..85 => Choice::CompareAndSet,
                _ => Choice::LedgerPut,
            };
            let input = match choice {
                Choice::Get => KvInput::Get { key: key.into() },
                Choice::Put => KvInput::Put {
                    key: key.into(),
                    value: value.clone().into(),
                },
                Choice::Delete => KvInput::Delete { key: key.into() },
                Choice::CompareAndSet => KvInput::Txn {
                    key: key.into(),
                    expected: last_seen.get(key).cloned().flatten(),
                    success: vec![KvWrite::Put {
                        key: key.into(),
                        value: value.clone().into(),
                    }],
                    failure: vec![],
                },
                Choice::LedgerPut => {
                    let ledger_key = format!("{LEDGER_PREFIX}c{}/{sequence}", self.client);
                    report
                        .ledger_attempted
                        .insert(ledger_key.clone(), value.clone());
                    KvInput::Put {
                        key: ledger_key.into(),
                        value: value.clone().into(),
                    }
                }
            };
            let answered = self.perform(client, input, &mut last_seen).await;
            match &answered {
                Some(KvInput::Put { key, value }) if matches!(choice, Choice::LedgerPut) => {
                    report.ledger_acknowledged.insert(
                        String::from_utf8_lossy(key).into_owned(),
                        String::from_utf8_lossy(value).into_owned(),
                    );
                }
                _ => {}
            }
            healthy = answered.is_some();
            if healthy {
                self.acknowledged.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(self.options.think_time).await;
            } else {
                // A fresh connection after a failure: the old one may be wedged.
                connection = None;
                tokio::time::sleep(FAILURE_BACKOFF).await;
            }
        }
        report
    }

    /// Sends `input`, records the attempt, and returns the input when the member answered.
    async fn perform(
        &self,
        client: &mut Client,
        input: KvInput,
        last_seen: &mut HashMap<Vec<u8>, Option<Vec<u8>>>,
    ) -> Option<KvInput> {
        let timeout = self.options.request_timeout;
        let output = recorded(client, &self.history, self.client, input.clone(), timeout)
            .await
            .ok()?;
        remember(&input, &output, last_seen);
        Some(input)
    }
}

fn txn_op(write: &KvWrite) -> TxnOp {
    match write {
        KvWrite::Put { key, value } => TxnOp::put(key.clone(), value.clone(), None),
        KvWrite::Delete { key } => TxnOp::delete(key.clone(), None),
    }
}

/// Updates what the client last saw of a key after an answer.
fn remember(input: &KvInput, output: &KvOutput, last_seen: &mut HashMap<Vec<u8>, Option<Vec<u8>>>) {
    match (input, output) {
        (KvInput::Get { key }, KvOutput::Get(value)) => {
            last_seen.insert(key.clone(), value.clone());
        }
        (KvInput::Put { key, value }, _) => {
            last_seen.insert(key.clone(), Some(value.clone()));
        }
        (KvInput::Delete { key }, _) => {
            last_seen.insert(key.clone(), None);
        }
        (
            KvInput::Txn {
                key,
                success,
                failure,
                ..
            },
            KvOutput::Txn { succeeded },
        ) => {
            for write in if *succeeded { success } else { failure } {
                match write {
                    KvWrite::Put { key, value } => {
                        last_seen.insert(key.clone(), Some(value.clone()));
                    }
                    KvWrite::Delete { key } => {
                        last_seen.insert(key.clone(), None);
                    }
                }
            }
            // A failed compare means the client's view of the key is out of date.
            if !*succeeded {
                last_seen.remove(key);
            }
        }
        _ => {}
    }
}

/// Whether the member behind `url` (`http://host:port`) accepts a TCP connection now.
async fn accepts_connections(url: &str) -> bool {
    let address = url.trim_start_matches("http://");
    matches!(
        tokio::time::timeout(
            Duration::from_millis(500),
            tokio::net::TcpStream::connect(address)
        )
        .await,
        Ok(Ok(_))
    )
}

/// A small deterministic generator (xorshift64*), seeded per client.
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> XorShift {
        XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// Uniform enough in `0..bound` for choosing operations.
    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % bound
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn a_failed_compare_forgets_the_key_and_a_success_remembers_the_new_value() {
        let mut seen = HashMap::new();
        let cas = |expected: Option<&str>| KvInput::Txn {
            key: "k".into(),
            expected: expected.map(Into::into),
            success: vec![KvWrite::Put {
                key: "k".into(),
                value: "new".into(),
            }],
            failure: vec![],
        };
        remember(&cas(None), &KvOutput::Txn { succeeded: true }, &mut seen);
        assert_eq!(seen.get(b"k".as_slice()), Some(&Some(b"new".to_vec())));
        remember(
            &cas(Some("new")),
            &KvOutput::Txn { succeeded: false },
            &mut seen,
        );
        assert_eq!(seen.get(b"k".as_slice()), None);
    }

    #[test]
    fn xorshift_stays_below_its_bound_and_varies() {
        let mut random = XorShift::new(3);
        let draws: BTreeSet<u64> = (0..1000).map(|_| random.below(5)).collect();
        assert_eq!(draws, (0..5).collect());
    }
}
