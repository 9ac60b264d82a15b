//! Command line: etcd's `benchmark` flag names where they exist.

use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::workload::Keys;

#[derive(Parser, Debug)]
#[command(
    name = "cairn-bench",
    version,
    about = "Benchmark any etcd v3 endpoint (Cairn or etcd) over gRPC"
)]
pub struct Cli {
    /// Comma-separated endpoints, `host:port` or `http://host:port`.
    #[arg(long, global = true, default_value = "127.0.0.1:2379")]
    pub endpoints: String,

    /// Total number of requests; the run stops after exactly this many.
    #[arg(long, global = true, default_value_t = 10_000)]
    pub total: u64,

    /// Concurrent in-flight requests (one request loop per client).
    #[arg(long, global = true, default_value_t = 1)]
    pub clients: usize,

    /// gRPC connections; clients are spread evenly over them.
    #[arg(long, global = true, default_value_t = 1)]
    pub conns: usize,

    /// Print the result as one JSON object on one line.
    #[arg(long, global = true)]
    pub json: bool,

    /// Time allowed to establish each connection (e.g. `5s`, `500ms`).
    #[arg(long, global = true, default_value = "5s", value_parser = duration)]
    pub dial_timeout: Duration,

    /// A request taking longer than this fails (e.g. `30s`).
    #[arg(long, global = true, default_value = "30s", value_parser = duration)]
    pub request_timeout: Duration,

    /// Tokio worker threads; 0 means one per CPU.
    #[arg(long, global = true, default_value_t = 0)]
    pub threads: usize,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Put keys (key and value sizes, key space and order are configurable).
    Put(PutArgs),
    /// Range over `key` (or `[key, range_end)`), linearizable or serializable.
    Range(RangeArgs),
    /// Transactions that each put `--txn-ops` keys, cycling through the space.
    TxnPut(TxnPutArgs),
    /// Event latency from a put to every one of `--watchers` watchers of its
    /// key; also checks each watcher got each event exactly once, in order.
    ///
    /// `--total` is the number of puts. By default they are sent one at a
    /// time, each only once every watcher has received the previous event;
    /// with `--rate R` they are sent at R/s with at most `--clients` in
    /// flight. Watch streams are spread over `--conns` connections; the
    /// writer has one connection of its own. `--request-timeout` bounds
    /// every wait: watcher creation, each put, each event's delivery.
    WatchLatency(WatchArgs),
    /// Keep-alives round-robin over `--leases` leases on `--streams`
    /// LeaseKeepAlive streams, `--clients` in flight in all (spread over the
    /// streams); `--total` keep-alives.
    LeaseKeepalive(LeaseArgs),
}

#[derive(Args, Debug)]
pub struct WatchArgs {
    /// Watchers, all on the same key (or prefix).
    #[arg(long, default_value_t = 1000)]
    pub watchers: usize,

    /// Watch streams the watchers are spread over (evenly).
    #[arg(long, default_value_t = 100)]
    pub streams: usize,

    /// The watched key, which the writer puts.
    #[arg(long, default_value = "cairn-bench-watch")]
    pub key: String,

    /// Watch every key starting with `--key`; the writer then puts a new key
    /// `<key>/<n>` each time instead of `--key` itself.
    #[arg(long)]
    pub prefix: bool,

    /// Value size in bytes (at least 16: the value identifies the put).
    #[arg(long, default_value_t = 16)]
    pub val_size: usize,

    /// Puts per second (with at most `--clients` in flight); 0: one put at
    /// a time, each once every watcher has received the previous event.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
}

#[derive(Args, Debug)]
pub struct LeaseArgs {
    /// Leases granted before the run (`--clients` grants in flight).
    #[arg(long, default_value_t = 100)]
    pub leases: usize,

    /// TTL of each lease, in seconds.
    #[arg(long, default_value_t = 60)]
    pub ttl: i64,

    /// LeaseKeepAlive streams; `--clients` must be at least this.
    #[arg(long, default_value_t = 1)]
    pub streams: usize,
}

#[derive(Args, Debug)]
pub struct KeyArgs {
    /// Key size in bytes.
    #[arg(long, default_value_t = 8)]
    pub key_size: usize,

    /// Value size in bytes.
    #[arg(long, default_value_t = 8)]
    pub val_size: usize,

    /// Number of distinct keys written.
    #[arg(long, default_value_t = 1)]
    pub key_space_size: u64,
}

impl KeyArgs {
    /// The key choice these flags describe, if every key index fits a key.
    pub fn keys(&self, sequential: bool) -> Result<Keys, String> {
        let keys = Keys {
            size: self.key_size,
            space: self.key_space_size,
            sequential,
        };
        keys.validate()?;
        Ok(keys)
    }
}

#[derive(Args, Debug)]
pub struct PutArgs {
    #[command(flatten)]
    pub keys: KeyArgs,

    /// Use keys 0, 1, 2, ... (modulo the key space) instead of random ones.
    #[arg(long)]
    pub sequential_keys: bool,
}

#[derive(Args, Debug)]
pub struct TxnPutArgs {
    #[command(flatten)]
    pub keys: KeyArgs,

    /// Puts per transaction.
    #[arg(long, default_value_t = 1)]
    pub txn_ops: usize,
}

#[derive(Args, Debug)]
pub struct RangeArgs {
    /// The key to read.
    pub key: String,

    /// Read `[key, range_end)` instead of the single key.
    pub range_end: Option<String>,

    /// `l`: linearizable (goes through consensus), `s`: serializable (local).
    #[arg(long, value_enum, default_value = "l")]
    pub consistency: Consistency,

    /// Before measuring, put `key` once with a value of this many bytes.
    #[arg(long, value_name = "VAL_SIZE")]
    pub write_first: Option<usize>,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Consistency {
    L,
    S,
}

/// `http://host:port` for each of a comma-separated list; a bare
/// `host:port` gets `http://`. TLS is not supported.
pub fn endpoints(list: &str) -> Result<Vec<String>, String> {
    let urls: Vec<String> = list
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(|e| {
            if e.starts_with("https://") {
                Err(format!("{e}: TLS endpoints are not supported"))
            } else if e.starts_with("http://") {
                Ok(e.to_string())
            } else if e.contains("://") {
                Err(format!("{e}: unsupported scheme"))
            } else {
                Ok(format!("http://{e}"))
            }
        })
        .collect::<Result<_, _>>()?;
    if urls.is_empty() {
        return Err("--endpoints is empty".into());
    }
    Ok(urls)
}

/// `1.5s`, `500ms`, `2m`, or plain seconds.
fn duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = match s.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s}: not a duration like 5s or 500ms"))?;
    let secs = match unit {
        "ms" => n / 1e3,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("{s}: unit must be ms, s or m")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{s}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_accept_bare_and_http_forms() {
        assert_eq!(
            endpoints("127.0.0.1:2379, http://h:1").unwrap(),
            ["http://127.0.0.1:2379", "http://h:1"]
        );
        assert!(endpoints("https://h:1").is_err());
        assert!(endpoints(" , ").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(duration("2").unwrap(), Duration::from_secs(2));
        assert_eq!(duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(duration("1m").unwrap(), Duration::from_secs(60));
        assert!(duration("5h").is_err());
        assert!(duration("s").is_err());
    }

    #[test]
    fn flags_parse_before_or_after_the_subcommand() {
        let cli = Cli::try_parse_from([
            "cairn-bench",
            "--clients=64",
            "put",
            "--conns",
            "8",
            "--key-space-size=100000",
            "--sequential-keys",
        ])
        .unwrap();
        assert_eq!((cli.clients, cli.conns), (64, 8));
        let Command::Put(put) = cli.command else {
            panic!("not put")
        };
        let keys = put.keys.keys(put.sequential_keys).unwrap();
        assert!(keys.sequential);
        assert_eq!(keys.space, 100_000);

        let cli =
            Cli::try_parse_from(["cairn-bench", "range", "foo", "--consistency", "s"]).unwrap();
        let Command::Range(r) = cli.command else {
            panic!("not range")
        };
        assert_eq!((r.key.as_str(), r.consistency), ("foo", Consistency::S));

        let cli = Cli::try_parse_from([
            "cairn-bench",
            "watch-latency",
            "--watchers=10000",
            "--streams",
            "50",
            "--prefix",
            "--total=20",
        ])
        .unwrap();
        assert_eq!(cli.total, 20);
        let Command::WatchLatency(w) = cli.command else {
            panic!("not watch-latency")
        };
        assert_eq!(
            (w.watchers, w.streams, w.prefix, w.rate),
            (10_000, 50, true, 0.0)
        );

        let cli = Cli::try_parse_from(["cairn-bench", "lease-keepalive", "--leases=7"]).unwrap();
        let Command::LeaseKeepalive(l) = cli.command else {
            panic!("not lease-keepalive")
        };
        assert_eq!((l.leases, l.ttl, l.streams), (7, 60, 1));
    }
}
