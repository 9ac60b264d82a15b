//! Drives a workload: `conns` gRPC connections, `clients` concurrent
//! request loops spread over them, stopping after exactly `total` requests.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cairn_proto::etcdserverpb::kv_client::KvClient;
use tokio::task::JoinSet;
use tonic::transport::{Channel, Endpoint};

use crate::histogram::Histogram;
use crate::workload::{Rng, Workload};

pub struct Connect {
    pub endpoints: Vec<String>,
    pub conns: usize,
    pub dial_timeout: Duration,
    pub request_timeout: Duration,
}

/// Opens `conns` connections, endpoint `i % endpoints.len()` for the i-th,
/// each dialled eagerly so an unreachable server fails here, not mid-run.
pub async fn connect(c: &Connect) -> Result<Vec<Channel>, String> {
    let mut channels = Vec::with_capacity(c.conns);
    for i in 0..c.conns {
        let url = &c.endpoints[i % c.endpoints.len()];
        let endpoint = Endpoint::from_shared(url.clone())
            .map_err(|e| format!("bad endpoint {url}: {e}"))?
            .connect_timeout(c.dial_timeout)
            .timeout(c.request_timeout)
            .tcp_nodelay(true);
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| format!("cannot connect to {url}: {}", error_chain(&e)))?;
        channels.push(channel);
    }
    Ok(channels)
}

/// What a run measured.
pub struct Outcome {
    /// Latencies of the requests that succeeded.
    pub latencies: Histogram,
    /// Failed requests, counted by gRPC code and message.
    pub errors: BTreeMap<String, u64>,
    /// From the first request sent to the last response received.
    pub elapsed: Duration,
}

impl Outcome {
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

pub async fn run(
    channels: &[Channel],
    clients: usize,
    total: u64,
    workload: Arc<Workload>,
) -> Outcome {
    let next = Arc::new(AtomicU64::new(0));
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    for id in 0..clients {
        let mut kv = KvClient::new(channels[id % channels.len()].clone());
        let (next, workload) = (next.clone(), workload.clone());
        let mut rng = Rng::new(seed ^ (id as u64).wrapping_mul(0xA24B_AED4_963E_E407));
        tasks.spawn(async move {
            let mut latencies = Histogram::default();
            let mut errors = BTreeMap::<String, u64>::new();
            loop {
                let seq = next.fetch_add(1, Ordering::Relaxed);
                if seq >= total {
                    break;
                }
                let sent = Instant::now();
                match workload.issue(&mut kv, seq, &mut rng).await {
                    Ok(()) => latencies.record(sent.elapsed()),
                    Err(status) => {
                        let kind = format!("{:?}: {}", status.code(), status.message());
                        *errors.entry(kind).or_default() += 1;
                    }
                }
            }
            (latencies, errors)
        });
    }
    let mut outcome = Outcome {
        latencies: Histogram::default(),
        errors: BTreeMap::new(),
        elapsed: Duration::ZERO,
    };
    while let Some(joined) = tasks.join_next().await {
        let (latencies, errors) = joined.expect("client task panicked");
        outcome.latencies.merge(&latencies);
        for (kind, n) in errors {
            *outcome.errors.entry(kind).or_default() += n;
        }
    }
    outcome.elapsed = start.elapsed();
    outcome
}

/// An error with its sources, which is where tonic says what went wrong.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    let mut last = s.clone();
    while let Some(cause) = source {
        let text = cause.to_string();
        // hyper and tonic often wrap an error in one with the same message.
        if !last.ends_with(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        last = text;
        source = cause.source();
    }
    s
}
