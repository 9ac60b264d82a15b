//! `watch-latency`: many watchers on one key, one writer, and the latency
//! from each put being sent to each watcher receiving its event.
//!
//! Every put's value names the put (its sequence number and a per-run id),
//! so a watcher knows which put an event is for without any shared lookup
//! but the send time. Each watcher must see each acknowledged put exactly
//! once, with strictly increasing revisions; anything else is an error in
//! the report, so the run doubles as a correctness check of the server.
//!
//! Puts are sent in lockstep by default: the next put only once every
//! watcher has received the previous event, so each latency is that of one
//! fan-out with nothing queued behind it. With a rate, puts are sent on a
//! fixed schedule (with a cap on puts in flight) and latencies include any
//! queueing the server does under that load.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::watch_client::WatchClient;
use cairn_proto::etcdserverpb::{
    PutRequest, WatchCreateRequest, WatchRequest, WatchResponse, watch_request,
};
use cairn_proto::mvccpb::event::EventType;
use tokio::sync::{Notify, Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use crate::histogram::Histogram;
use crate::report::{Extra, Value};
use crate::runner::Outcome;

/// Bytes of a value that identify the put: sequence number, then run id.
pub const ID_LEN: usize = 16;

pub struct Config {
    pub watchers: usize,
    pub streams: usize,
    pub key: Vec<u8>,
    pub prefix: bool,
    pub val_size: usize,
    /// Puts.
    pub total: u64,
    /// Puts per second; 0 for lockstep.
    pub rate: f64,
    /// Puts in flight at most, with a rate.
    pub in_flight: usize,
    /// Bound on every wait: creation, each put, each event's delivery.
    pub timeout: Duration,
}

impl Config {
    pub fn validate(&self) -> Result<(), String> {
        if self.watchers == 0 || self.streams == 0 {
            return Err("--watchers and --streams must be at least 1".into());
        }
        if self.streams > self.watchers {
            return Err("--streams cannot exceed --watchers".into());
        }
        if self.val_size < ID_LEN {
            return Err(format!("--val-size must be at least {ID_LEN}"));
        }
        if !(self.rate >= 0.0 && self.rate.is_finite()) {
            return Err("--rate must be a non-negative number".into());
        }
        if self.key.is_empty() {
            return Err("--key must not be empty".into());
        }
        Ok(())
    }

    /// The key of the `seq`-th put.
    fn put_key(&self, seq: u64) -> Vec<u8> {
        if self.prefix {
            let mut key = self.key.clone();
            key.extend_from_slice(format!("/{seq}").as_bytes());
            key
        } else {
            self.key.clone()
        }
    }

    fn value(&self, seq: u64, run: u64) -> Vec<u8> {
        let mut value = Vec::with_capacity(self.val_size);
        value.extend_from_slice(&seq.to_le_bytes());
        value.extend_from_slice(&run.to_le_bytes());
        value.resize(self.val_size, b'.');
        value
    }

    fn create_request(&self) -> WatchRequest {
        let range_end = if self.prefix {
            prefix_end(&self.key)
        } else {
            Vec::new()
        };
        WatchRequest {
            request_union: Some(watch_request::RequestUnion::CreateRequest(
                WatchCreateRequest {
                    key: self.key.clone(),
                    range_end,
                    ..Default::default()
                },
            )),
        }
    }

    fn mode(&self) -> String {
        if self.rate > 0.0 {
            format!("{} puts/s, at most {} in flight", self.rate, self.in_flight)
        } else {
            "lockstep (next put once all watchers have the event)".into()
        }
    }
}

/// The end of the range holding every key that starts with `key`.
fn prefix_end(key: &[u8]) -> Vec<u8> {
    let mut end = key.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // All 0xff: etcd's "to the end of the keyspace".
    vec![0]
}

/// The put a value names, if this run wrote it.
fn parse_value(value: &[u8], run: u64) -> Option<u64> {
    let seq = u64::from_le_bytes(value.get(..8)?.try_into().ok()?);
    let id = u64::from_le_bytes(value.get(8..ID_LEN)?.try_into().ok()?);
    (id == run).then_some(seq)
}

/// State every task shares. Per-put slots are indexed by sequence number.
struct Shared {
    cfg: Config,
    run: u64,
    t0: Instant,
    /// Nanoseconds after `t0` the put was sent, plus one (0: not yet).
    sent: Vec<AtomicU64>,
    /// Revision of the put's response (0: not acknowledged yet, -1: not
    /// told).
    put_rev: Vec<AtomicI64>,
    /// Watchers that have received the put's event.
    delivered: Vec<AtomicU32>,
    /// Latest event arrival, nanoseconds after `t0`.
    last_event: AtomicU64,
    /// Watchers created.
    created: AtomicUsize,
    /// Watchers created, refused, or on a stream that failed or stopped
    /// before they were.
    settled: AtomicUsize,
    /// Created watchers since canceled or on a stream that broke.
    lost: AtomicUsize,
    /// Pinged when all watchers settle, a put reaches every live watcher,
    /// or watchers are lost.
    progress: Notify,
}

impl Shared {
    fn now_ns(&self) -> u64 {
        self.t0.elapsed().as_nanos() as u64
    }

    fn live(&self) -> usize {
        self.created
            .load(Ordering::Acquire)
            .saturating_sub(self.lost.load(Ordering::Acquire))
    }

    fn complete(&self, seq: u64) -> bool {
        self.delivered[seq as usize].load(Ordering::Acquire) as usize >= self.live()
    }

    fn acked(&self, seq: u64) -> bool {
        self.put_rev[seq as usize].load(Ordering::Acquire) != 0
    }

    fn settle(&self, n: usize) {
        let before = self.settled.fetch_add(n, Ordering::AcqRel);
        if before + n >= self.cfg.watchers {
            self.progress.notify_one();
        }
    }

    fn lose(&self, n: usize) {
        if n > 0 {
            self.lost.fetch_add(n, Ordering::AcqRel);
            self.progress.notify_one();
        }
    }

    /// Waits until `done()` or `deadline`; false on timeout.
    async fn wait_until(&self, deadline: tokio::time::Instant, done: impl Fn() -> bool) -> bool {
        loop {
            let notified = self.progress.notified();
            if done() {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return done();
            }
        }
    }
}

/// One watcher's tally.
#[derive(Clone, Default)]
struct Watcher {
    events: u64,
    last_rev: i64,
    lost: bool,
}

/// What one watch stream saw.
struct StreamResult {
    latencies: Histogram,
    errors: BTreeMap<String, u64>,
    watchers: Vec<Watcher>,
}

fn count(errors: &mut BTreeMap<String, u64>, kind: impl Into<String>, n: u64) {
    if n > 0 {
        *errors.entry(kind.into()).or_default() += n;
    }
}

/// One watch stream carrying `n` watchers, until `stop`.
async fn watch_stream(
    channel: Channel,
    n: usize,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> StreamResult {
    let mut out = StreamResult {
        latencies: Histogram::default(),
        errors: BTreeMap::new(),
        watchers: Vec::with_capacity(n),
    };
    // Every create is queued before the call: the server may send no
    // response headers until it answers the first one.
    let (tx, rx) = mpsc::channel(n);
    for _ in 0..n {
        tx.try_send(shared.cfg.create_request())
            .expect("queue holds every create");
    }
    let mut client = WatchClient::new(channel);
    let opened = tokio::select! {
        opened = client.watch(ReceiverStream::new(rx)) => opened,
        _ = stop.changed() => {
            shared.settle(n);
            return out;
        }
    };
    let mut stream = match opened {
        Ok(response) => response.into_inner(),
        Err(status) => {
            let kind = format!(
                "watch stream failed to open: {:?}: {}",
                status.code(),
                status.message()
            );
            count(&mut out.errors, kind, 1);
            shared.settle(n);
            return out;
        }
    };
    // Watch id -> index into `out.watchers`.
    let mut ids = HashMap::with_capacity(n);
    let mut pending = n;
    loop {
        let message = tokio::select! {
            message = stream.message() => message,
            _ = stop.changed() => break,
        };
        let response = match message {
            Ok(Some(response)) => response,
            Ok(None) => {
                count(&mut out.errors, "watch stream closed by the server", 1);
                break;
            }
            Err(status) => {
                let kind = format!(
                    "watch stream failed: {:?}: {}",
                    status.code(),
                    status.message()
                );
                count(&mut out.errors, kind, 1);
                break;
            }
        };
        handle(&shared, response, &mut ids, &mut pending, &mut out);
    }
    drop(tx);
    // Whatever this stream still owed is settled; whatever it had is lost
    // (only counted when the stream broke, not when told to stop).
    shared.settle(pending);
    if !*stop.borrow() {
        let live: Vec<_> = out.watchers.iter_mut().filter(|w| !w.lost).collect();
        let n = live.len();
        for w in live {
            w.lost = true;
        }
        shared.lose(n);
    }
    out
}

fn handle(
    shared: &Shared,
    response: WatchResponse,
    ids: &mut HashMap<i64, usize>,
    pending: &mut usize,
    out: &mut StreamResult,
) {
    if response.created {
        if *pending == 0 {
            count(&mut out.errors, "created response for no create request", 1);
            return;
        }
        *pending -= 1;
        if response.canceled {
            let kind = format!("watch create refused: {}", response.cancel_reason);
            count(&mut out.errors, kind, 1);
        } else if ids.insert(response.watch_id, out.watchers.len()).is_some() {
            count(&mut out.errors, "watch id reused on one stream", 1);
        } else {
            out.watchers.push(Watcher::default());
            shared.created.fetch_add(1, Ordering::AcqRel);
        }
        shared.settle(1);
        return;
    }
    let Some(&index) = ids.get(&response.watch_id) else {
        count(&mut out.errors, "response for an unknown watch id", 1);
        return;
    };
    if response.compact_revision != 0 {
        count(&mut out.errors, "watch compacted", 1);
    }
    let now = shared.now_ns();
    let watcher = &mut out.watchers[index];
    if watcher.lost {
        count(&mut out.errors, "response after the watch was canceled", 1);
        return;
    }
    for event in &response.events {
        let put = event
            .kv
            .as_ref()
            .filter(|_| event.r#type == EventType::Put as i32)
            .and_then(|kv| Some((kv, parse_value(&kv.value, shared.run)?)))
            .filter(|&(kv, seq)| seq < shared.cfg.total && kv.key == shared.cfg.put_key(seq));
        let Some((kv, seq)) = put else {
            count(&mut out.errors, "event this run did not cause", 1);
            continue;
        };
        if kv.mod_revision <= watcher.last_rev {
            count(
                &mut out.errors,
                "event duplicated or out of revision order",
                1,
            );
            continue;
        }
        let put_rev = shared.put_rev[seq as usize].load(Ordering::Acquire);
        if put_rev > 0 && put_rev != kv.mod_revision {
            count(&mut out.errors, "event revision differs from its put's", 1);
        }
        watcher.last_rev = kv.mod_revision;
        watcher.events += 1;
        let sent = shared.sent[seq as usize].load(Ordering::Acquire);
        out.latencies.record(Duration::from_nanos(
            now.saturating_sub(sent.saturating_sub(1)),
        ));
        let seen = shared.delivered[seq as usize].fetch_add(1, Ordering::AcqRel) as usize + 1;
        if seen >= shared.live() {
            shared.progress.notify_one();
        }
    }
    if !response.events.is_empty() {
        shared.last_event.fetch_max(now, Ordering::AcqRel);
    }
    if response.canceled {
        let kind = format!("watch canceled by the server: {}", response.cancel_reason);
        count(&mut out.errors, kind, 1);
        watcher.lost = true;
        shared.lose(1);
    }
}

/// What the writer did.
struct Writes {
    latencies: Histogram,
    errors: BTreeMap<String, u64>,
    acked: u64,
    /// Puts whose outcome is unknown or failed; their events may or may
    /// not arrive.
    unsure: u64,
    first_sent: Option<u64>,
}

async fn put(
    kv: &mut KvClient<Channel>,
    shared: &Shared,
    seq: u64,
) -> Result<Duration, tonic::Status> {
    let request = PutRequest {
        key: shared.cfg.put_key(seq),
        value: shared.cfg.value(seq, shared.run),
        ..Default::default()
    };
    let sent = Instant::now();
    shared.sent[seq as usize].store(shared.now_ns() + 1, Ordering::Release);
    let response = kv.put(request).await?.into_inner();
    let latency = sent.elapsed();
    // -1: acknowledged, but no usable revision.
    let revision = response
        .header
        .map_or(-1, |h| if h.revision > 0 { h.revision } else { -1 });
    shared.put_rev[seq as usize].store(revision, Ordering::Release);
    Ok(latency)
}

fn put_error(status: &tonic::Status) -> String {
    format!("put failed: {:?}: {}", status.code(), status.message())
}

async fn lockstep(channel: Channel, shared: Arc<Shared>) -> Writes {
    let mut kv = KvClient::new(channel);
    let mut w = Writes {
        latencies: Histogram::default(),
        errors: BTreeMap::new(),
        acked: 0,
        unsure: 0,
        first_sent: None,
    };
    for seq in 0..shared.cfg.total {
        w.first_sent.get_or_insert_with(|| shared.now_ns());
        match put(&mut kv, &shared, seq).await {
            Ok(latency) => {
                w.latencies.record(latency);
                w.acked += 1;
            }
            Err(status) => {
                count(&mut w.errors, put_error(&status), 1);
                w.unsure += 1;
                break;
            }
        }
        let deadline = tokio::time::Instant::now() + shared.cfg.timeout;
        if !shared.wait_until(deadline, || shared.complete(seq)).await {
            let kind = format!(
                "stopped: put {seq} reached {} of {} live watchers within {:?}",
                shared.delivered[seq as usize].load(Ordering::Acquire),
                shared.live(),
                shared.cfg.timeout
            );
            count(&mut w.errors, kind, 1);
            break;
        }
    }
    w
}

async fn paced(channel: Channel, shared: Arc<Shared>) -> Writes {
    let mut w = Writes {
        latencies: Histogram::default(),
        errors: BTreeMap::new(),
        acked: 0,
        unsure: 0,
        first_sent: None,
    };
    let permits = Arc::new(Semaphore::new(shared.cfg.in_flight));
    let start = tokio::time::Instant::now();
    let mut puts = JoinSet::new();
    for seq in 0..shared.cfg.total {
        let at = start + Duration::from_secs_f64(seq as f64 / shared.cfg.rate);
        tokio::time::sleep_until(at).await;
        let permit = permits.clone().acquire_owned().await.expect("never closed");
        w.first_sent.get_or_insert_with(|| shared.now_ns());
        let mut kv = KvClient::new(channel.clone());
        let shared = shared.clone();
        puts.spawn(async move {
            let result = put(&mut kv, &shared, seq).await;
            drop(permit);
            result
        });
        while let Some(done) = puts.try_join_next() {
            tally(&mut w, done.expect("put task panicked"));
        }
    }
    while let Some(done) = puts.join_next().await {
        tally(&mut w, done.expect("put task panicked"));
    }
    w
}

fn tally(w: &mut Writes, result: Result<Duration, tonic::Status>) {
    match result {
        Ok(latency) => {
            w.latencies.record(latency);
            w.acked += 1;
        }
        Err(status) => {
            count(&mut w.errors, put_error(&status), 1);
            w.unsure += 1;
        }
    }
}

/// The measurement, and the extra figures for the report.
pub struct Measured {
    pub outcome: Outcome,
    pub extra: Vec<Extra>,
}

/// Runs the workload: `channels[..len-1]` carry the watch streams, the last
/// one the writer.
pub async fn run(channels: &[Channel], cfg: Config) -> Measured {
    let (writer, watch_channels) = channels.split_last().expect("at least two channels");
    let total = cfg.total as usize;
    let run = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64);
    let shared = Arc::new(Shared {
        run,
        t0: Instant::now(),
        sent: (0..total).map(|_| AtomicU64::new(0)).collect(),
        put_rev: (0..total).map(|_| AtomicI64::new(0)).collect(),
        delivered: (0..total).map(|_| AtomicU32::new(0)).collect(),
        last_event: AtomicU64::new(0),
        created: AtomicUsize::new(0),
        settled: AtomicUsize::new(0),
        lost: AtomicUsize::new(0),
        progress: Notify::new(),
        cfg,
    });
    let cfg = &shared.cfg;
    let mut errors = BTreeMap::new();

    // Watchers, spread evenly over the streams, streams over connections.
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut streams = JoinSet::new();
    for s in 0..cfg.streams {
        let n = cfg.watchers / cfg.streams + usize::from(s < cfg.watchers % cfg.streams);
        let channel = watch_channels[s % watch_channels.len()].clone();
        streams.spawn(watch_stream(channel, n, shared.clone(), stop_rx.clone()));
    }
    let setup_deadline = tokio::time::Instant::now() + cfg.timeout;
    let settled = shared
        .wait_until(setup_deadline, || {
            shared.settled.load(Ordering::Acquire) >= cfg.watchers
        })
        .await;
    let setup = shared.t0.elapsed();
    let created = shared.created.load(Ordering::Acquire);
    if !settled {
        let kind = format!(
            "not started: {created} of {} watchers created within {:?}",
            cfg.watchers, cfg.timeout
        );
        count(&mut errors, kind, 1);
    } else if created < cfg.watchers {
        let kind = format!(
            "not started: {created} of {} watchers created",
            cfg.watchers
        );
        count(&mut errors, kind, 1);
    }

    // The writer, then the events still on their way.
    let writes = if created == cfg.watchers {
        let writes = if cfg.rate > 0.0 {
            paced(writer.clone(), shared.clone()).await
        } else {
            lockstep(writer.clone(), shared.clone()).await
        };
        let sent = writes.acked + writes.unsure;
        let deadline = tokio::time::Instant::now() + cfg.timeout;
        // Acknowledged puts, which complete in order in lockstep and nearly
        // so with a rate; a failed put's event may or may not come.
        let first_short = std::cell::Cell::new(0);
        let all = shared
            .wait_until(deadline, || {
                let mut seq = first_short.get();
                while seq < sent && (!shared.acked(seq) || shared.complete(seq)) {
                    seq += 1;
                }
                first_short.set(seq);
                seq == sent
            })
            .await;
        if !all {
            let short = (0..sent)
                .filter(|&seq| shared.acked(seq) && !shared.complete(seq))
                .count();
            let kind = format!(
                "{short} acknowledged puts had not reached every watcher {:?} after the last put",
                cfg.timeout
            );
            count(&mut errors, kind, 1);
        }
        Some(writes)
    } else {
        None
    };

    // Stop every stream, then add up.
    let _ = stop_tx.send(true);
    let mut latencies = Histogram::default();
    let mut watchers = Vec::with_capacity(cfg.watchers);
    let gather = async {
        while let Some(joined) = streams.join_next().await {
            let result = joined.expect("watch stream task panicked");
            latencies.merge(&result.latencies);
            for (kind, n) in result.errors {
                count(&mut errors, kind, n);
            }
            watchers.extend(result.watchers);
        }
    };
    if tokio::time::timeout(cfg.timeout, gather).await.is_err() {
        count(&mut errors, "watch streams did not stop when asked", 1);
        streams.abort_all();
    }

    let (acked, unsure) = writes.as_ref().map_or((0, 0), |w| (w.acked, w.unsure));
    let mut missing = 0;
    let mut short_watchers = 0;
    let mut extra_events = 0;
    for w in &watchers {
        if w.events < acked {
            missing += acked - w.events;
            short_watchers += 1;
        } else if w.events > acked + unsure {
            extra_events += w.events - acked - unsure;
        }
    }
    count(
        &mut errors,
        "missing events (a watcher never got an acknowledged put)",
        missing,
    );
    count(&mut errors, "more events than puts", extra_events);

    let first = writes.as_ref().and_then(|w| w.first_sent).unwrap_or(0);
    let last = shared.last_event.load(Ordering::Acquire);
    let elapsed = Duration::from_nanos(last.saturating_sub(first));
    let (puts, put_errors) = match writes {
        Some(w) => (w.latencies, w.errors),
        None => (Histogram::default(), BTreeMap::new()),
    };
    for (kind, n) in put_errors {
        count(&mut errors, kind, n);
    }
    let per_sec = |n: u64| match elapsed.as_secs_f64() {
        0.0 => 0.0,
        secs => n as f64 / secs,
    };
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let expected = acked * watchers.len() as u64;
    let extra = vec![
        Extra::new("watchers", "watchers", Value::Count(cfg.watchers as u64)),
        Extra::new("watch streams", "streams", Value::Count(cfg.streams as u64)),
        Extra::new("puts", "puts", Value::Text(cfg.mode())),
        Extra::new(
            "watcher setup (s)",
            "setup_s",
            Value::Real(setup.as_secs_f64(), 3),
        ),
        Extra::new("puts acknowledged", "puts_acked", Value::Count(acked)),
        Extra::new("puts/sec", "puts_per_s", Value::Real(per_sec(acked), 1)),
        Extra::new(
            "put p50 (ms)",
            "put_p50_ms",
            Value::Real(ms(puts.quantile(0.5)), 3),
        ),
        Extra::new(
            "put p99 (ms)",
            "put_p99_ms",
            Value::Real(ms(puts.quantile(0.99)), 3),
        ),
        Extra::new("events expected", "events_expected", Value::Count(expected)),
        Extra::new(
            "events delivered",
            "events",
            Value::Count(latencies.count()),
        ),
        Extra::new("events missing", "events_missing", Value::Count(missing)),
        Extra::new(
            "watchers missing some",
            "watchers_short",
            Value::Count(short_watchers),
        ),
    ];
    Measured {
        outcome: Outcome {
            latencies,
            errors,
            elapsed,
        },
        extra,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(prefix: bool) -> Config {
        Config {
            watchers: 10,
            streams: 2,
            key: b"k".to_vec(),
            prefix,
            val_size: 20,
            total: 5,
            rate: 0.0,
            in_flight: 1,
            timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn values_name_their_put_and_run() {
        let cfg = config(false);
        let value = cfg.value(7, 42);
        assert_eq!(value.len(), 20);
        assert_eq!(parse_value(&value, 42), Some(7));
        assert_eq!(parse_value(&value, 43), None);
        assert_eq!(parse_value(b"short", 42), None);
    }

    #[test]
    fn prefix_mode_puts_keys_under_the_prefix() {
        assert_eq!(config(false).put_key(3), b"k");
        let cfg = config(true);
        assert_eq!(cfg.put_key(3), b"k/3");
        let Some(watch_request::RequestUnion::CreateRequest(create)) =
            cfg.create_request().request_union
        else {
            panic!("not a create")
        };
        assert_eq!(
            (create.key, create.range_end),
            (b"k".to_vec(), b"l".to_vec())
        );
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff"), [0]);
    }

    #[test]
    fn config_checks() {
        assert!(config(false).validate().is_ok());
        let bad = |f: fn(&mut Config)| {
            let mut c = config(false);
            f(&mut c);
            c.validate().is_err()
        };
        assert!(bad(|c| c.val_size = 15));
        assert!(bad(|c| c.streams = 11));
        assert!(bad(|c| c.watchers = 0));
        assert!(bad(|c| c.rate = -1.0));
        assert!(bad(|c| c.rate = f64::NAN));
    }
}
