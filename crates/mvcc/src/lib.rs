//! Multi-version key-value store (the "logic" layer): revisions, the in-memory key index with
//! generations and tombstones, values by revision in a redb backend, and compaction.
//!
//! It knows nothing of Raft, gRPC or the network: the server applies committed requests to it
//! and serves reads from it. It must never depend on cairn-raft, cairn-server or cairn-api.

mod key_index;
mod revision;
mod store;

pub use key_index::{KeyIndex, KeyRevision, key_range};
pub use revision::Revision;
pub use store::{LeaseAttachments, RangeOptions, RangeResult, ReadView, Store, TxnWriter, Writer};

pub use cairn_proto::mvccpb::{Event, KeyValue, event::EventType};

#[derive(Debug, thiserror::Error)]
pub enum MvccError {
    #[error("mvcc: required revision has been compacted")]
    Compacted,
    #[error("mvcc: required revision is a future revision")]
    FutureRevision,
    #[error("backend: {0}")]
    Backend(#[from] redb::Error),
    #[error("backend record at revision {revision} is corrupt: {reason}")]
    Corrupt { revision: Revision, reason: String },
}
