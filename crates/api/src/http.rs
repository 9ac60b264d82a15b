//! etcd's plain-HTTP endpoints: `/health`, `/version` and `/metrics` on the client URLs
//! (beside gRPC, as etcd serves them), and `/health` and `/metrics` on `--listen-metrics-urls`,
//! which Kubernetes probes and Prometheus scrape.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use cairn_server::{ETCD_VERSION, Server};

/// How long `/health` waits for its read before calling the member unhealthy.
const HEALTH_READ_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub struct HttpState {
    pub server: Arc<Server>,
    pub quota_backend_bytes: i64,
}

/// What a client URL serves besides gRPC.
pub fn client_router(state: HttpState) -> Router {
    metrics_router(state).route("/version", get(version))
}

/// What a metrics URL serves.
pub fn metrics_router(state: HttpState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .with_state(state)
}

fn text(status: StatusCode, body: String) -> impl IntoResponse {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
}

/// Healthy when there is a leader and a read goes through: linearizable by default, local
/// with `?serializable=true`, as etcd 3.4 checks it.
async fn health(State(state): State<HttpState>, RawQuery(query): RawQuery) -> impl IntoResponse {
    let serializable = query
        .as_deref()
        .is_some_and(|q| q.split('&').any(|pair| pair == "serializable=true"));
    let has_leader = state.server.has_leader();
    let healthy = has_leader
        && matches!(
            tokio::time::timeout(HEALTH_READ_TIMEOUT, state.server.health_read(serializable)).await,
            Ok(Ok(_))
        );
    if healthy {
        text(StatusCode::OK, r#"{"health":"true"}"#.to_string())
    } else {
        text(
            StatusCode::SERVICE_UNAVAILABLE,
            r#"{"health":"false"}"#.to_string(),
        )
    }
}

async fn version() -> impl IntoResponse {
    let body = format!(r#"{{"etcdserver":"{ETCD_VERSION}","etcdcluster":"{ETCD_VERSION}"}}"#);
    text(StatusCode::OK, body)
}

fn gauge(out: &mut String, name: &str, help: &str, labels: &str, value: f64) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} gauge");
    let _ = writeln!(out, "{name}{labels} {value}");
}

fn resident_memory_bytes() -> Option<f64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: f64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096.0)
}

/// The metrics Cairn tracks, under etcd's names and types so existing dashboards work.
async fn metrics(State(state): State<HttpState>) -> impl IntoResponse {
    let server = &state.server;
    let status = server.status();
    let mut out = String::new();
    let member = format!("{{server_id=\"{:x}\"}}", server.member_id());
    gauge(
        &mut out,
        "etcd_server_has_leader",
        "Whether or not a leader exists. 1 is existence, 0 is not.",
        "",
        f64::from(status.leader != 0),
    );
    gauge(
        &mut out,
        "etcd_server_is_leader",
        "Whether or not this member is a leader. 1 if is, 0 otherwise.",
        "",
        f64::from(status.leader == server.member_id()),
    );
    gauge(
        &mut out,
        "etcd_server_id",
        "Server or member ID in hexadecimal format. 1 for 'server_id' label with current ID.",
        &member,
        1.0,
    );
    gauge(
        &mut out,
        "etcd_server_version",
        "Which version is running. 1 for 'server_version' label with current version.",
        &format!("{{server_version=\"{ETCD_VERSION}\"}}"),
        1.0,
    );
    let _ = writeln!(
        out,
        "# HELP etcd_server_leader_changes_seen_total The number of leader changes seen."
    );
    let _ = writeln!(out, "# TYPE etcd_server_leader_changes_seen_total counter");
    let _ = writeln!(
        out,
        "etcd_server_leader_changes_seen_total {}",
        status.leader_changes
    );
    gauge(
        &mut out,
        "etcd_server_proposals_committed_total",
        "The total number of consensus proposals committed.",
        "",
        status.raft_index as f64,
    );
    gauge(
        &mut out,
        "etcd_server_proposals_applied_total",
        "The total number of consensus proposals applied.",
        "",
        status.raft_applied_index as f64,
    );
    gauge(
        &mut out,
        "etcd_server_quota_backend_bytes",
        "Current backend storage quota size in bytes.",
        "",
        state.quota_backend_bytes as f64,
    );
    gauge(
        &mut out,
        "etcd_mvcc_db_total_size_in_bytes",
        "Total size of the underlying database physically allocated in bytes.",
        "",
        status.db_size as f64,
    );
    gauge(
        &mut out,
        "etcd_debugging_mvcc_keys_total",
        "Total number of keys.",
        "",
        status.keys as f64,
    );
    gauge(
        &mut out,
        "etcd_debugging_mvcc_current_revision",
        "The current revision of store.",
        "",
        status.revision as f64,
    );
    if let Some(rss) = resident_memory_bytes() {
        gauge(
            &mut out,
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            "",
            rss,
        );
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
}
