//! etcd's command-line flags, `ETCD_*` environment variables and YAML config file, with
//! etcd's names and defaults, so Cairn can replace etcd in an existing deployment.

use std::path::PathBuf;
use std::time::Duration;

use clap::{CommandFactory, Parser};

#[derive(Parser, Debug, Clone)]
#[command(
    name = "cairn",
    version,
    about = "Cairn: a strongly consistent key-value store that speaks etcd's v3 API"
)]
pub struct Flags {
    /// Human-readable name for this member.
    #[arg(long, env = "ETCD_NAME", default_value = "default")]
    pub name: String,
    /// Path to the data directory [default: <name>.cairn].
    #[arg(long, env = "ETCD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// List of URLs to listen on for client traffic.
    #[arg(
        long,
        env = "ETCD_LISTEN_CLIENT_URLS",
        default_value = "http://localhost:2379"
    )]
    pub listen_client_urls: String,
    /// List of this member's client URLs to advertise to the public.
    #[arg(
        long,
        env = "ETCD_ADVERTISE_CLIENT_URLS",
        default_value = "http://localhost:2379"
    )]
    pub advertise_client_urls: String,
    /// List of URLs to also serve /health, /version and /metrics on (plain HTTP).
    #[arg(long, env = "ETCD_LISTEN_METRICS_URLS", default_value = "")]
    pub listen_metrics_urls: String,
    /// List of URLs to listen on for peer traffic.
    #[arg(
        long,
        env = "ETCD_LISTEN_PEER_URLS",
        default_value = "http://localhost:2380"
    )]
    pub listen_peer_urls: String,
    /// List of this member's peer URLs to advertise to the rest of the cluster.
    #[arg(
        long,
        env = "ETCD_INITIAL_ADVERTISE_PEER_URLS",
        default_value = "http://localhost:2380"
    )]
    pub initial_advertise_peer_urls: String,
    /// Initial cluster configuration for bootstrapping [default: <name>=<initial-advertise-peer-urls>].
    #[arg(long, env = "ETCD_INITIAL_CLUSTER")]
    pub initial_cluster: Option<String>,
    /// Initial cluster state ('new' or 'existing').
    #[arg(long, env = "ETCD_INITIAL_CLUSTER_STATE", default_value = "new", value_parser = ["new", "existing"])]
    pub initial_cluster_state: String,
    /// Initial cluster token for the etcd cluster during bootstrap.
    #[arg(
        long,
        env = "ETCD_INITIAL_CLUSTER_TOKEN",
        default_value = "etcd-cluster"
    )]
    pub initial_cluster_token: String,
    /// Reject reconfiguration requests that would cause quorum loss.
    #[arg(long, env = "ETCD_STRICT_RECONFIG_CHECK", default_value_t = true,
          action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub strict_reconfig_check: bool,
    /// Number of committed transactions to trigger a snapshot to disk.
    #[arg(long, env = "ETCD_SNAPSHOT_COUNT", default_value_t = 100_000)]
    pub snapshot_count: u64,
    /// Time (in milliseconds) of a heartbeat interval.
    #[arg(long, env = "ETCD_HEARTBEAT_INTERVAL", default_value_t = 100)]
    pub heartbeat_interval: u64,
    /// Time (in milliseconds) for an election to timeout.
    #[arg(long, env = "ETCD_ELECTION_TIMEOUT", default_value_t = 1000)]
    pub election_timeout: u64,
    /// Raise alarms when backend size exceeds the given quota (0 defaults to 2 GiB).
    #[arg(long, env = "ETCD_QUOTA_BACKEND_BYTES", default_value_t = 0)]
    pub quota_backend_bytes: i64,
    /// Maximum client request size in bytes the server will accept.
    #[arg(long, env = "ETCD_MAX_REQUEST_BYTES", default_value_t = 1_572_864)]
    pub max_request_bytes: usize,
    /// Maximum number of operations permitted in a transaction.
    #[arg(long, env = "ETCD_MAX_TXN_OPS", default_value_t = 128)]
    pub max_txn_ops: usize,
    /// Duration of periodic watch progress notifications.
    #[arg(long, env = "ETCD_EXPERIMENTAL_WATCH_PROGRESS_NOTIFY_INTERVAL", default_value = "10m",
          value_parser = parse_go_duration)]
    pub experimental_watch_progress_notify_interval: Duration,
    /// Persist remaining lease TTLs through Raft, so a restart does not renew every lease.
    /// Cairn enables it by default (etcd 3.4 does not): its issue asks TTLs to survive restarts.
    #[arg(long, env = "ETCD_EXPERIMENTAL_ENABLE_LEASE_CHECKPOINT", default_value_t = true,
          action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub experimental_enable_lease_checkpoint: bool,
    /// How often the leader checkpoints remaining lease TTLs.
    #[arg(long, env = "ETCD_EXPERIMENTAL_LEASE_CHECKPOINT_INTERVAL", default_value = "5m",
          value_parser = parse_go_duration)]
    pub experimental_lease_checkpoint_interval: Duration,
    /// Configures log level: debug, info, warn, error, panic, or fatal.
    #[arg(long, env = "ETCD_LOG_LEVEL", default_value = "info",
          value_parser = ["debug", "info", "warn", "error", "panic", "fatal"])]
    pub log_level: String,
    /// Configures log format: json or console.
    #[arg(long, env = "ETCD_LOG_FORMAT", default_value = "json", value_parser = ["json", "console"])]
    pub log_format: String,
    /// Path to the server configuration file (YAML, etcd's keys). Flags and environment
    /// variables are ignored when it is given, as etcd does.
    #[arg(long, env = "ETCD_CONFIG_FILE")]
    pub config_file: Option<PathBuf>,
}

/// Parses a Go duration as etcd's flags take them: `500ms`, `10s`, `10m`, `1h`, `1m30s`.
fn parse_go_duration(text: &str) -> Result<Duration, String> {
    let mut total = Duration::ZERO;
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err("empty duration".into());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, tail) = rest.split_at(digits);
        let value: f64 = number
            .parse()
            .map_err(|_| format!("invalid duration {text:?}"))?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let seconds = match unit {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(format!("invalid duration {text:?}: unknown unit {unit:?}")),
        };
        total += Duration::from_secs_f64(value * seconds);
        rest = tail;
    }
    Ok(total)
}

/// Default backend quota, as etcd: 2 GiB.
const DEFAULT_QUOTA_BACKEND_BYTES: i64 = 2 * 1024 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum FlagsError {
    #[error("cannot read config file {path}: {source}")]
    ConfigFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}, line {line}: {reason}")]
    ConfigSyntax {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Clap(#[from] clap::Error),
}

impl Flags {
    /// Parses the command line; a config file, if named, replaces every flag.
    pub fn load() -> Result<Flags, FlagsError> {
        let flags = Flags::try_parse()?;
        match &flags.config_file {
            Some(path) => Flags::from_config_file(path),
            None => Ok(flags),
        }
    }

    fn from_config_file(path: &PathBuf) -> Result<Flags, FlagsError> {
        let text = std::fs::read_to_string(path).map_err(|source| FlagsError::ConfigFile {
            path: path.clone(),
            source,
        })?;
        let known: Vec<String> = Flags::command()
            .get_arguments()
            .filter_map(|a| a.get_long().map(str::to_string))
            .collect();
        let mut args = vec!["cairn".to_string()];
        for (key, value) in
            parse_flat_yaml(&text).map_err(|(line, reason)| FlagsError::ConfigSyntax {
                path: path.clone(),
                line,
                reason,
            })?
        {
            if key == "config-file" {
                continue;
            }
            if known.contains(&key) {
                args.push(format!("--{key}={value}"));
            } else {
                tracing::warn!(key, "config file key not supported by cairn; ignored");
            }
        }
        Ok(Flags::try_parse_from(args)?)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("{}.cairn", self.name)))
    }

    /// `--initial-cluster` as (name, peer URLs) pairs; by default this member alone.
    pub fn initial_cluster(&self) -> Result<Vec<(String, Vec<String>)>, FlagsError> {
        let spec = self
            .initial_cluster
            .clone()
            .unwrap_or_else(|| format!("{}={}", self.name, self.initial_advertise_peer_urls));
        let mut members: Vec<(String, Vec<String>)> = Vec::new();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, url) = part.split_once('=').ok_or_else(|| {
                FlagsError::Invalid(format!(
                    "--initial-cluster: {part:?} is not of the form name=url"
                ))
            })?;
            match members.iter_mut().find(|(n, _)| n == name) {
                Some((_, urls)) => urls.push(url.to_string()),
                None => members.push((name.to_string(), vec![url.to_string()])),
            }
        }
        Ok(members)
    }

    pub fn heartbeat(&self) -> Duration {
        Duration::from_millis(self.heartbeat_interval)
    }

    pub fn election(&self) -> Duration {
        Duration::from_millis(self.election_timeout)
    }

    pub fn quota_backend_bytes(&self) -> i64 {
        if self.quota_backend_bytes <= 0 {
            DEFAULT_QUOTA_BACKEND_BYTES
        } else {
            self.quota_backend_bytes
        }
    }

    /// etcd's own consistency checks on the flags.
    pub fn validate(&self) -> Result<(), FlagsError> {
        if self.heartbeat_interval == 0 {
            return Err(FlagsError::Invalid(
                "--heartbeat-interval must be greater than 0".into(),
            ));
        }
        if 5 * self.heartbeat_interval > self.election_timeout {
            return Err(FlagsError::Invalid(format!(
                "--election-timeout[{}ms] should be at least as 5 times as --heartbeat-interval[{}ms]",
                self.election_timeout, self.heartbeat_interval
            )));
        }
        if self.max_txn_ops == 0 {
            return Err(FlagsError::Invalid(
                "--max-txn-ops must be greater than 0".into(),
            ));
        }
        Ok(())
    }
}

/// Reads the flat `key: value` YAML of etcd's config file: scalars only, comments and blank
/// lines skipped, quotes removed, `null`/`~`/empty meaning "not set". Indented lines belong to
/// nested sections (TLS settings) that Cairn does not support yet, and are skipped.
fn parse_flat_yaml(text: &str) -> Result<Vec<(String, String)>, (usize, String)> {
    let mut pairs = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim_end();
        if line.trim().is_empty() || line.trim_start().starts_with('#') || line.trim() == "---" {
            continue;
        }
        if line.starts_with([' ', '\t', '-']) {
            continue;
        }
        let (key, value) = line
            .split_once(':')
            .ok_or((i + 1, format!("expected `key: value`, found {line:?}")))?;
        let value = value.trim();
        let value = match value.chars().next() {
            Some(quote @ ('"' | '\'')) => {
                let inner = &value[1..];
                let close = inner
                    .find(quote)
                    .ok_or((i + 1, format!("unterminated quote in {line:?}")))?;
                &inner[..close]
            }
            _ => value
                .split_once(" #")
                .map_or(value, |(before, _)| before.trim_end()),
        };
        if value.is_empty() || value == "~" || value == "null" {
            continue;
        }
        pairs.push((key.trim().to_string(), value.to_string()));
    }
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_etcds() {
        let flags = Flags::try_parse_from(["cairn"]).expect("no flags parse");
        assert_eq!(flags.data_dir(), PathBuf::from("default.cairn"));
        assert_eq!(flags.listen_client_urls, "http://localhost:2379");
        assert_eq!(
            flags.initial_cluster().expect("default cluster"),
            vec![(
                "default".to_string(),
                vec!["http://localhost:2380".to_string()]
            )]
        );
        assert_eq!(
            (flags.max_request_bytes, flags.max_txn_ops),
            (1_572_864, 128)
        );
        assert_eq!(flags.quota_backend_bytes(), 2 * 1024 * 1024 * 1024);
        flags.validate().expect("defaults are valid");
    }

    #[test]
    fn election_timeout_must_cover_five_heartbeats() {
        let flags = Flags::try_parse_from([
            "cairn",
            "--heartbeat-interval",
            "300",
            "--election-timeout",
            "1000",
        ])
        .expect("flags parse");
        let err = flags.validate().expect_err("too short an election timeout");
        assert!(err.to_string().contains("should be at least as 5 times"));
    }

    #[test]
    fn config_file_uses_etcds_keys() {
        let yaml = "# etcd config\nname: 'node-1'\ndata-dir: /var/lib/x\nmax-txn-ops: 7\ninitial-cluster-token: \"tok\" # comment\n\
                    client-transport-security:\n  cert-file: /x\nlog-level: ~\n";
        let dir = tempfile_path("cfg.yml");
        std::fs::write(&dir, yaml).expect("write config");
        let flags = Flags::from_config_file(&dir).expect("config parses");
        assert_eq!(flags.name, "node-1");
        assert_eq!(flags.data_dir(), PathBuf::from("/var/lib/x"));
        assert_eq!(flags.max_txn_ops, 7);
        assert_eq!(flags.initial_cluster_token, "tok");
        assert_eq!(flags.log_level, "info");
        std::fs::remove_file(&dir).expect("clean up");
    }

    fn tempfile_path(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("cairn-flags-{}-{name}", std::process::id()))
    }

    #[test]
    fn go_durations_parse() {
        assert_eq!(parse_go_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_go_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_go_duration("10 parsecs").is_err());
        assert!(parse_go_duration("").is_err());
    }

    #[test]
    fn malformed_config_line_names_the_line() {
        let err = parse_flat_yaml("name: a\nthis is not yaml\n").expect_err("bad line");
        assert_eq!(err.0, 2);
    }
}
