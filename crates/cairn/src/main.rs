//! `cairn`: the server binary. Reads etcd's flags, environment and config file, opens the data
//! directory, and serves etcd's v3 API until SIGTERM or SIGINT.
//!
//! It wires the layers together and holds no logic of its own; nothing depends on it.

mod flags;

use std::process::ExitCode;

use cairn_api::{ApiConfig, serve_clients};
use cairn_server::{Server, ServerConfig};
use tokio::net::TcpListener;

use flags::{Flags, FlagsError};

/// How long in-flight requests may take to finish after SIGTERM.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

fn init_logging(flags: &Flags) {
    let level = match flags.log_level.as_str() {
        "debug" => tracing::Level::DEBUG,
        "info" => tracing::Level::INFO,
        "warn" => tracing::Level::WARN,
        _ => tracing::Level::ERROR,
    };
    let builder = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr);
    if flags.log_format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Binds one client URL. `localhost` binds the IPv4 loopback, as etcd clients dial 127.0.0.1.
async fn bind(url: &str) -> Result<TcpListener, String> {
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        format!(
            "cannot listen on {url}: only http:// URLs are supported yet (TLS is a later issue)"
        )
    })?;
    let host_port = rest.trim_end_matches('/');
    let address = match host_port.strip_prefix("localhost:") {
        Some(port) => format!("127.0.0.1:{port}"),
        None => host_port.to_string(),
    };
    TcpListener::bind(&address)
        .await
        .map_err(|e| format!("cannot listen on {url}: {e}"))
}

fn split_urls(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(str::to_string)
        .collect()
}

async fn shutdown_signal(stop: tokio::sync::watch::Sender<bool>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop the server with SIGKILL");
        return;
    };
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    tracing::info!(signal = name, "received signal; shutting down");
    let _ = stop.send(true);
}

async fn run(flags: Flags) -> Result<(), String> {
    flags.validate().map_err(|e| e.to_string())?;
    let initial_cluster = flags.initial_cluster().map_err(|e| e.to_string())?;
    let mut listeners = Vec::new();
    for url in split_urls(&flags.listen_client_urls) {
        listeners.push(bind(&url).await?);
        tracing::info!(url, "serving client requests");
    }
    let mut metrics_listeners = Vec::new();
    for url in split_urls(&flags.listen_metrics_urls) {
        metrics_listeners.push(bind(&url).await?);
        tracing::info!(url, "serving /health, /version and /metrics");
    }
    let mut peer_listeners = Vec::new();
    for url in split_urls(&flags.listen_peer_urls) {
        peer_listeners.push(bind(&url).await?);
        tracing::info!(url, "serving peer traffic");
    }
    let server = Server::start(
        ServerConfig {
            name: flags.name.clone(),
            data_dir: flags.data_dir(),
            initial_cluster,
            initial_cluster_token: flags.initial_cluster_token.clone(),
            join_existing: flags.initial_cluster_state == "existing",
            peer_urls: split_urls(&flags.initial_advertise_peer_urls),
            client_urls: split_urls(&flags.advertise_client_urls),
            strict_reconfig_check: flags.strict_reconfig_check,
            heartbeat_interval: flags.heartbeat(),
            election_timeout: flags.election(),
            max_request_bytes: flags.max_request_bytes,
            max_txn_ops: flags.max_txn_ops,
            snapshot_count: flags.snapshot_count,
            watch_progress_notify_interval: flags.experimental_watch_progress_notify_interval,
            lease_checkpoint_interval: flags
                .experimental_enable_lease_checkpoint
                .then_some(flags.experimental_lease_checkpoint_interval),
        },
        peer_listeners,
    )
    .await
    .map_err(|e| e.to_string())?;

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(shutdown_signal(stop_tx));
    let api = ApiConfig {
        max_request_bytes: flags.max_request_bytes,
        quota_backend_bytes: flags.quota_backend_bytes(),
    };
    let mut stopped = stop_rx.clone();
    let outcome = tokio::select! {
        served = serve_clients(server.clone(), api, listeners, metrics_listeners, stop_rx) => served.map_err(|e| e.to_string()),
        // Graceful stop waits for clients to hang up; like etcd, give them a bounded grace.
        _ = async {
            let _ = stopped.wait_for(|s| *s).await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => {
            tracing::info!("clients still connected after the shutdown grace period; closing");
            Ok(())
        }
        // For good: the exit status tells a supervisor not to restart it on this data dir.
        removed = server.removed_from_cluster() => Err(removed.to_string()),
    };
    server.persist().map_err(|e| e.to_string())?;
    outcome?;
    tracing::info!("stopped cleanly");
    Ok(())
}

fn main() -> ExitCode {
    let flags = match Flags::load() {
        Ok(flags) => flags,
        Err(FlagsError::Clap(e)) => e.exit(),
        Err(e) => {
            eprintln!("cairn: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(&flags);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cairn: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(flags)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "cairn stopped");
            eprintln!("cairn: {e}");
            ExitCode::FAILURE
        }
    }
}
