//! `cairn-proto`: the etcd v3 wire contract, as Rust code generated from our
//! own `.proto` files (names and field numbers are etcd's exactly).
//!
//! This crate must never depend on anything else in the workspace: every
//! other crate depends on it, and it is only generated types and stubs.

/// etcd's KV, Watch, Lease, Cluster, Maintenance and Auth services.
#[allow(clippy::large_enum_variant, clippy::doc_lazy_continuation)]
pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
}

/// `KeyValue` and `Event`.
#[allow(clippy::large_enum_variant, clippy::doc_lazy_continuation)]
pub mod mvccpb {
    tonic::include_proto!("mvccpb");
}

/// Users, roles and permissions.
#[allow(clippy::large_enum_variant, clippy::doc_lazy_continuation)]
pub mod authpb {
    tonic::include_proto!("authpb");
}

/// The Lock service.
#[allow(clippy::large_enum_variant, clippy::doc_lazy_continuation)]
pub mod v3lockpb {
    tonic::include_proto!("v3lockpb");
}

/// The Election service.
#[allow(clippy::large_enum_variant, clippy::doc_lazy_continuation)]
pub mod v3electionpb {
    tonic::include_proto!("v3electionpb");
}

/// Cairn-internal messages, e.g. the payload of a Raft log entry.
#[allow(clippy::large_enum_variant, clippy::doc_lazy_continuation)]
pub mod cairnpb {
    tonic::include_proto!("cairnpb");
}
