//! The API layer: etcd's v3 gRPC services (tonic) over the server core, with request-size
//! limits, etcd's learner and require-leader checks, and the mapping of server errors to
//! etcd's status codes and messages. Client connections are read through `authority`, which
//! mends the URL-shaped `:authority` etcdctl's `--cluster` commands send.
//!
//! Services not built yet (Auth, Lock, Election) are not registered,
//! so clients get gRPC `Unimplemented` for them. This crate must never reach below the server
//! core: no cairn-mvcc, cairn-raft or cairn-wal.

mod authority;
mod cluster;
mod hpack;
mod http;
mod kv;
mod lease;
mod maintenance;
mod status;
mod watch;

use std::sync::Arc;

use axum::extract::State;
use axum::middleware::Next;
use cairn_proto::etcdserverpb::cluster_server::ClusterServer;
use cairn_proto::etcdserverpb::kv_server::KvServer;
use cairn_proto::etcdserverpb::lease_server::LeaseServer;
use cairn_proto::etcdserverpb::maintenance_server::MaintenanceServer;
use cairn_proto::etcdserverpb::watch_server::WatchServer;
use cairn_server::{Server, ServerError};
use tokio::net::TcpListener;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::service::Routes;
use tonic::service::interceptor::{InterceptedService, Interceptor};

pub use status::to_status;

/// Room for gRPC framing and the request's other fields above `--max-request-bytes`, as etcd
/// allows (the server itself refuses an oversized request with etcd's own error).
const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

#[derive(Clone, Debug)]
pub struct ApiConfig {
    pub max_request_bytes: usize,
    pub quota_backend_bytes: i64,
}

/// Whether the client sent `hasleader: true` metadata (clientv3's `WithRequireLeader`).
fn requires_leader(metadata: &tonic::metadata::MetadataMap) -> bool {
    metadata.get("hasleader").is_some_and(|v| v == "true")
}

/// etcd's require-leader check, for every service: a client that sends `hasleader: true`
/// metadata is refused at once while there is no leader, instead of waiting for one. (A watch
/// stream it opened while there was a leader is ended later, in the watch service.)
fn require_leader(server: Arc<Server>) -> impl Interceptor + Clone {
    move |request: tonic::Request<()>| {
        if requires_leader(request.metadata()) && !server.has_leader() {
            return Err(to_status(ServerError::NoLeader));
        }
        Ok(request)
    }
}

/// The only gRPC methods a learner serves, as etcd's interceptor allows: its status, and a
/// range, which the server still refuses unless serializable (this gate cannot see the body).
const LEARNER_METHODS: [&str; 2] = ["/etcdserverpb.Maintenance/Status", "/etcdserverpb.KV/Range"];

/// etcd's learner check, in one place as etcd's interceptors do it: on a learner, every other
/// gRPC call, unary or stream, is refused before any handler runs (so before require-leader,
/// and even for methods this member does not implement).
async fn refuse_learner_calls(
    State(server): State<Arc<Server>>,
    request: axum::extract::Request,
    next: Next,
) -> axum::response::Response {
    if server.is_learner() && !LEARNER_METHODS.contains(&request.uri().path()) {
        return to_status(ServerError::NotSupportedForLearner).into_http();
    }
    next.run(request).await
}

/// Serves one listener until `shutdown` says stop. HTTP/1 is accepted beside HTTP/2 for the
/// plain-HTTP endpoints.
fn spawn_listener(
    routes: Routes,
    listener: TcpListener,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<Result<(), tonic::transport::Error>> {
    // The builder's `tcp_nodelay` covers only listeners tonic binds itself. Without it, a
    // response written in two pieces waits for the client's delayed ACK (~40 ms).
    let incoming = TcpListenerStream::new(listener).map(|accepted| {
        accepted.map(|stream| {
            let _ = stream.set_nodelay(true);
            authority::RewrittenConnection::new(stream)
        })
    });
    let router = tonic::transport::Server::builder()
        .accept_http1(true)
        .add_routes(routes);
    tokio::spawn(router.serve_with_incoming_shutdown(incoming, async move {
        let _ = shutdown.wait_for(|stopped| *stopped).await;
    }))
}

/// Serves the client API (gRPC and etcd's HTTP endpoints) on every client listener, and the
/// HTTP endpoints alone on every metrics listener, until `shutdown` says stop.
pub async fn serve_clients(
    server: Arc<Server>,
    config: ApiConfig,
    client_listeners: Vec<TcpListener>,
    metrics_listeners: Vec<TcpListener>,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<(), tonic::transport::Error> {
    let max_message = config.max_request_bytes + GRPC_OVERHEAD_BYTES;
    let kv = KvServer::new(kv::KvService {
        server: server.clone(),
    })
    .max_decoding_message_size(max_message)
    .max_encoding_message_size(usize::MAX);
    let maintenance = MaintenanceServer::new(maintenance::MaintenanceService {
        server: server.clone(),
        quota_backend_bytes: config.quota_backend_bytes,
    })
    .max_decoding_message_size(max_message);
    let lease = LeaseServer::new(lease::LeaseService {
        server: server.clone(),
    })
    .max_decoding_message_size(max_message);
    let watch = WatchServer::new(watch::WatchService {
        server: server.clone(),
    })
    .max_decoding_message_size(max_message)
    .max_encoding_message_size(usize::MAX);
    let cluster = ClusterServer::new(cluster::ClusterService {
        server: server.clone(),
    });
    let http_state = http::HttpState {
        server: server.clone(),
        quota_backend_bytes: config.quota_backend_bytes,
    };
    // Services not registered fall through to gRPC Unimplemented, as etcd clients expect.
    let leader = require_leader(server.clone());
    let mut builder = Routes::builder();
    builder
        .add_service(InterceptedService::new(kv, leader.clone()))
        .add_service(InterceptedService::new(lease, leader.clone()))
        .add_service(InterceptedService::new(watch, leader.clone()))
        .add_service(InterceptedService::new(cluster, leader.clone()))
        .add_service(InterceptedService::new(maintenance, leader));
    let mut client_routes = builder.routes();
    // The gate covers the gRPC routes and their Unimplemented fallback, not the HTTP
    // endpoints: etcd serves /health, /version and /metrics on a learner.
    let grpc = std::mem::take(client_routes.axum_router_mut()).layer(
        axum::middleware::from_fn_with_state(server.clone(), refuse_learner_calls),
    );
    *client_routes.axum_router_mut() = grpc.merge(http::client_router(http_state.clone()));
    let metrics_routes = Routes::from(http::metrics_router(http_state));

    let mut tasks = Vec::new();
    for listener in client_listeners {
        tasks.push(spawn_listener(
            client_routes.clone(),
            listener,
            shutdown.clone(),
        ));
    }
    for listener in metrics_listeners {
        tasks.push(spawn_listener(
            metrics_routes.clone(),
            listener,
            shutdown.clone(),
        ));
    }
    for task in tasks {
        task.await.expect("a serving task does not panic")?;
    }
    Ok(())
}
