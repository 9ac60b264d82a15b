//! `lease-keepalive`: grant leases, then renew them round-robin over
//! LeaseKeepAlive streams with a fixed number of keep-alives in flight.
//!
//! Each stream keeps its share of `--clients` requests outstanding: it
//! sends that many, then one more per response. Responses are matched to
//! requests by lease ID (oldest first), so a server that answers out of
//! order is still measured correctly.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cairn_proto::etcdserverpb::lease_client::LeaseClient;
use cairn_proto::etcdserverpb::{LeaseGrantRequest, LeaseKeepAliveRequest};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use crate::histogram::Histogram;
use crate::report::{Extra, Value};
use crate::runner::Outcome;

pub struct Config {
    pub leases: usize,
    pub ttl: i64,
    pub streams: usize,
    /// Keep-alives in flight, over all streams.
    pub clients: usize,
    pub total: u64,
    /// No response for this long fails what a stream has in flight.
    pub timeout: Duration,
}

impl Config {
    pub fn validate(&self) -> Result<(), String> {
        if self.leases == 0 || self.streams == 0 {
            return Err("--leases and --streams must be at least 1".into());
        }
        if self.clients < self.streams {
            return Err("--clients must be at least --streams (one in flight per stream)".into());
        }
        if self.ttl <= 0 {
            return Err("--ttl must be positive".into());
        }
        Ok(())
    }
}

/// A lease: its ID and the TTL the grant answered.
#[derive(Clone, Copy)]
struct Lease {
    id: i64,
    ttl: i64,
}

/// Grants the leases, `clients` at a time. Any failure is fatal: there
/// would be nothing meaningful to keep alive.
async fn grant(channels: &[Channel], cfg: &Config) -> Result<Vec<Lease>, String> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = JoinSet::new();
    for c in 0..cfg.clients.min(cfg.leases) {
        let mut client = LeaseClient::new(channels[c % channels.len()].clone());
        let (next, leases, ttl) = (next.clone(), cfg.leases, cfg.ttl);
        tasks.spawn(async move {
            let mut ids = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < leases {
                let request = LeaseGrantRequest { ttl, id: 0 };
                let response = client
                    .lease_grant(request)
                    .await
                    .map_err(|s| format!("lease grant failed: {:?}: {}", s.code(), s.message()))?
                    .into_inner();
                if !response.error.is_empty() {
                    return Err(format!("lease grant failed: {}", response.error));
                }
                ids.push(Lease {
                    id: response.id,
                    ttl: response.ttl,
                });
            }
            Ok(ids)
        });
    }
    let mut ids = Vec::with_capacity(cfg.leases);
    while let Some(joined) = tasks.join_next().await {
        ids.extend(joined.expect("grant task panicked")?);
    }
    ids.sort_unstable_by_key(|l| l.id);
    Ok(ids)
}

/// Lease ID -> granted TTL and send times of its outstanding keep-alives,
/// oldest first.
type InFlight = HashMap<i64, (i64, VecDeque<Instant>)>;

/// Notes a keep-alive as sent now, and returns it.
fn send(in_flight: &mut InFlight, lease: Lease) -> LeaseKeepAliveRequest {
    let (_, sent) = in_flight
        .entry(lease.id)
        .or_insert((lease.ttl, VecDeque::new()));
    sent.push_back(Instant::now());
    LeaseKeepAliveRequest { id: lease.id }
}

struct StreamResult {
    latencies: Histogram,
    errors: BTreeMap<String, u64>,
}

fn count(errors: &mut BTreeMap<String, u64>, kind: impl Into<String>, n: u64) {
    if n > 0 {
        *errors.entry(kind.into()).or_default() += n;
    }
}

/// One keep-alive stream with `window` requests in flight, drawing
/// request numbers from `next` until `total`.
async fn keep_alive_stream(
    channel: Channel,
    window: usize,
    leases: Arc<Vec<Lease>>,
    next: Arc<AtomicU64>,
    total: u64,
    timeout: Duration,
) -> StreamResult {
    let mut out = StreamResult {
        latencies: Histogram::default(),
        errors: BTreeMap::new(),
    };
    let take = || {
        let seq = next.fetch_add(1, Ordering::Relaxed);
        (seq < total).then(|| leases[(seq % leases.len() as u64) as usize])
    };
    let mut in_flight = InFlight::new();
    let mut outstanding = 0u64;
    // The first window is queued before the call: the server may send no
    // response headers until it answers one.
    let (tx, rx) = mpsc::channel(window);
    for _ in 0..window {
        let Some(lease) = take() else { break };
        tx.try_send(send(&mut in_flight, lease))
            .expect("queue holds a window");
        outstanding += 1;
    }
    if outstanding == 0 {
        return out;
    }
    let mut client = LeaseClient::new(channel);
    let mut stream = match client.lease_keep_alive(ReceiverStream::new(rx)).await {
        Ok(response) => response.into_inner(),
        Err(status) => {
            let kind = format!(
                "keep-alive stream failed to open: {:?}: {}",
                status.code(),
                status.message()
            );
            count(&mut out.errors, kind, outstanding);
            return out;
        }
    };
    while outstanding > 0 {
        let response = match tokio::time::timeout(timeout, stream.message()).await {
            Ok(Ok(Some(response))) => response,
            Ok(Ok(None)) => {
                count(
                    &mut out.errors,
                    "keep-alive stream closed by the server",
                    outstanding,
                );
                break;
            }
            Ok(Err(status)) => {
                let kind = format!(
                    "keep-alive stream failed: {:?}: {}",
                    status.code(),
                    status.message()
                );
                count(&mut out.errors, kind, outstanding);
                break;
            }
            Err(_) => {
                let kind = format!("no keep-alive response within {timeout:?}");
                count(&mut out.errors, kind, outstanding);
                break;
            }
        };
        let Some((granted, sent)) = in_flight
            .get_mut(&response.id)
            .and_then(|(ttl, sent)| Some((*ttl, sent.pop_front()?)))
        else {
            count(
                &mut out.errors,
                "keep-alive response for a lease not renewed",
                1,
            );
            continue;
        };
        outstanding -= 1;
        if response.ttl > 0 && response.ttl != granted {
            count(
                &mut out.errors,
                "keep-alive TTL differs from the granted TTL",
                1,
            );
        } else if response.ttl <= 0 {
            count(
                &mut out.errors,
                "keep-alive answered TTL <= 0 (lease not found)",
                1,
            );
        } else {
            out.latencies.record(sent.elapsed());
        }
        if let Some(lease) = take() {
            outstanding += 1;
            if tx.send(send(&mut in_flight, lease)).await.is_err() {
                count(
                    &mut out.errors,
                    "keep-alive stream closed by the client",
                    outstanding,
                );
                break;
            }
        }
    }
    out
}

pub struct Measured {
    pub outcome: Outcome,
    pub extra: Vec<Extra>,
}

pub async fn run(channels: &[Channel], cfg: Config) -> Result<Measured, String> {
    let granting = Instant::now();
    let leases = Arc::new(grant(channels, &cfg).await?);
    let grant_time = granting.elapsed();

    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut streams = JoinSet::new();
    for s in 0..cfg.streams {
        let window = cfg.clients / cfg.streams + usize::from(s < cfg.clients % cfg.streams);
        streams.spawn(keep_alive_stream(
            channels[s % channels.len()].clone(),
            window,
            leases.clone(),
            next.clone(),
            cfg.total,
            cfg.timeout,
        ));
    }
    let mut outcome = Outcome {
        latencies: Histogram::default(),
        errors: BTreeMap::new(),
        elapsed: Duration::ZERO,
    };
    while let Some(joined) = streams.join_next().await {
        let result = joined.expect("keep-alive stream task panicked");
        outcome.latencies.merge(&result.latencies);
        for (kind, n) in result.errors {
            count(&mut outcome.errors, kind, n);
        }
    }
    outcome.elapsed = start.elapsed();
    let extra = vec![
        Extra::new("leases", "leases", Value::Count(cfg.leases as u64)),
        Extra::new("lease TTL (s)", "ttl_s", Value::Count(cfg.ttl as u64)),
        Extra::new(
            "keep-alive streams",
            "streams",
            Value::Count(cfg.streams as u64),
        ),
        Extra::new(
            "granting (s)",
            "grant_s",
            Value::Real(grant_time.as_secs_f64(), 3),
        ),
    ];
    Ok(Measured { outcome, extra })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_checks() {
        let ok = Config {
            leases: 10,
            ttl: 60,
            streams: 4,
            clients: 4,
            total: 100,
            timeout: Duration::from_secs(1),
        };
        assert!(ok.validate().is_ok());
        assert!(Config { clients: 3, ..ok }.validate().is_err());
        let ok = Config { clients: 4, ..ok };
        assert!(Config { leases: 0, ..ok }.validate().is_err());
        let ok = Config { leases: 10, ..ok };
        assert!(Config { ttl: 0, ..ok }.validate().is_err());
    }
}
