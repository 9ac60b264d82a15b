//! Raft consensus for Cairn: a raft-rs `RawNode` driven by a Ready loop on its own thread,
//! its log persisted in the WAL with one fdatasync per batch. The loop's rules live in
//! `RaftCore`, free of threads, clocks and files, so the simulator runs the same code.
//!
//! It replicates opaque entries and knows nothing of keys, revisions or gRPC: it must never
//! depend on cairn-mvcc, cairn-server or cairn-api.

mod core;
mod log_store;
mod node;

pub use cairn_wal::RecordPosition;
pub use core::{CoreRequest, CoreSettings, LogStorage, RaftCore, ReadyEffects};
pub use log_store::{
    RECORD_CONF_STATE, RECORD_ENTRY, RECORD_HARD_STATE, RECORD_SNAPSHOT, RaftLogStore, RecordLog,
    ReplayedRecord,
};

pub use node::{
    CommittedMembershipChange, LearnerInSyncReply, MembershipChange, MessageSink, NodeConfig,
    NodeEvent, RaftNode, ReadIndexReply, membership_change_of,
};
pub use raft::prelude::{Entry, EntryType, Message, MessageType};

#[derive(Debug, thiserror::Error)]
pub enum RaftError {
    #[error("no leader")]
    NoLeader,
    #[error("too many requests")]
    TooManyRequests,
    #[error("the raft node has stopped")]
    Stopped,
    #[error("write-ahead log: {0}")]
    Wal(#[from] cairn_wal::WalError),
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
    #[error("raft log is corrupt: {0}")]
    CorruptLog(String),
    #[error("{0}")]
    Io(String),
    #[error(
        "the WAL starts from a snapshot at index {index} but the backend has applied only {applied}: the snapshot's backend was not installed"
    )]
    SnapshotNotInstalled { index: u64, applied: u64 },
}
