//! The server core (etcd's `etcdserver`): turns client requests into Raft proposals, applies
//! committed entries to the multi-version store in order, wakes the waiting callers, serves
//! linearizable reads by ReadIndex, and derives member and cluster IDs.
//!
//! It glues cairn-raft, cairn-mvcc and the peer transport together and speaks etcd's request
//! types, but knows nothing of gRPC or HTTP itself (members talk through cairn-transport): it
//! must never depend on cairn-api or use tonic directly.

mod apply;
mod error;
mod ids;
mod kv;
mod lease;
mod membership;
mod server;
mod watch;

pub use error::ServerError;
pub use ids::{cluster_id, member_id};
pub use lease::LeaseTimeToLive;
pub use server::{ETCD_VERSION, Server, ServerConfig, ServerStatus};
pub use watch::{WatchHub, WatchSender, WatchSpec};
