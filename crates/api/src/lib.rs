//! The API layer: etcd's v3 gRPC services (tonic) over the server core, with request-size
//! limits and the mapping of server errors to etcd's status codes and messages.
//!
//! Services not built yet (Auth, Lock, Election) are not registered,
//! so clients get gRPC `Unimplemented` for them. This crate must never reach below the server
//! core: no cairn-mvcc, cairn-raft or cairn-wal.

mod cluster;
mod kv;
mod lease;
mod maintenance;
mod status;
mod watch;

use std::sync::Arc;

use cairn_proto::etcdserverpb::cluster_server::ClusterServer;
use cairn_proto::etcdserverpb::kv_server::KvServer;
use cairn_proto::etcdserverpb::lease_server::LeaseServer;
use cairn_proto::etcdserverpb::maintenance_server::MaintenanceServer;
use cairn_proto::etcdserverpb::watch_server::WatchServer;
use cairn_server::Server;
use tokio::net::TcpListener;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::TcpListenerStream;

pub use cluster::LocalMember;
pub use status::to_status;

/// Room for gRPC framing and the request's other fields above `--max-request-bytes`, as etcd
/// allows (the server itself refuses an oversized request with etcd's own error).
const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

#[derive(Clone, Debug)]
pub struct ApiConfig {
    pub max_request_bytes: usize,
    pub quota_backend_bytes: i64,
    pub local_member: LocalMember,
}

/// Serves the client API on every listener until `shutdown` resolves.
pub async fn serve_clients(
    server: Arc<Server>,
    config: ApiConfig,
    listeners: Vec<TcpListener>,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<(), tonic::transport::Error> {
    let max_message = config.max_request_bytes + GRPC_OVERHEAD_BYTES;
    let mut tasks = Vec::new();
    for listener in listeners {
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
            local: config.local_member.clone(),
        });
        let mut stop = shutdown.clone();
        let router = tonic::transport::Server::builder()
            .add_service(kv)
            .add_service(lease)
            .add_service(watch)
            .add_service(cluster)
            .add_service(maintenance);
        // The builder's `tcp_nodelay` covers only listeners tonic binds itself. Without it, a
        // response written in two pieces waits for the client's delayed ACK (~40 ms).
        let incoming = TcpListenerStream::new(listener).map(|accepted| {
            if let Ok(stream) = &accepted {
                let _ = stream.set_nodelay(true);
            }
            accepted
        });
        tasks.push(tokio::spawn(router.serve_with_incoming_shutdown(
            incoming,
            async move {
                let _ = stop.wait_for(|stopped| *stopped).await;
            },
        )));
    }
    for task in tasks {
        task.await.expect("a serving task does not panic")?;
    }
    Ok(())
}
