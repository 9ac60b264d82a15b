//! The server's errors. Their messages are etcd's, word for word, because clients match on
//! them; the API layer maps each to etcd's gRPC status code once, at the edge.

use cairn_mvcc::MvccError;
use cairn_raft::RaftError;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("etcdserver: key is not provided")]
    EmptyKey,
    #[error("etcdserver: value is provided")]
    ValueProvided,
    #[error("etcdserver: lease is provided")]
    LeaseProvided,
    #[error("etcdserver: key not found")]
    KeyNotFound,
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    #[error("etcdserver: lease already exists")]
    LeaseExists,
    #[error("etcdserver: too large lease TTL")]
    LeaseTtlTooLarge,
    #[error("etcdserver: too many operations in txn request")]
    TooManyOps,
    #[error("etcdserver: duplicate key given in txn request")]
    DuplicateKey,
    #[error("etcdserver: request is too large")]
    RequestTooLarge,
    #[error("etcdserver: mvcc: required revision has been compacted")]
    Compacted,
    #[error("etcdserver: mvcc: required revision is a future revision")]
    FutureRevision,
    #[error("etcdserver: no leader")]
    NoLeader,
    #[error("etcdserver: too many requests")]
    TooManyRequests,
    #[error("etcdserver: request timed out")]
    Timeout,
    #[error("etcdserver: server stopped")]
    Stopped,
    #[error("etcdserver: not capable")]
    NotCapable,
    #[error("etcdserver: member ID already exist")]
    MemberExists,
    #[error("etcdserver: Peer URLs already exists")]
    PeerUrlExists,
    #[error("etcdserver: given member URLs are invalid")]
    BadMemberUrls,
    #[error("etcdserver: member not found")]
    MemberNotFound,
    #[error("etcdserver: re-configuration failed due to not enough started members")]
    NotEnoughStartedMembers,
    #[error("etcdserver: can only promote a learner member")]
    NotLearner,
    #[error("etcdserver: can only promote a learner member which is in sync with leader")]
    LearnerNotReady,
    #[error("etcdserver: too many learner members in cluster")]
    TooManyLearners,
    /// Never sent to a client: why this member stops, worded as etcd logs it.
    #[error(
        "the member has been permanently removed from the cluster; \
         the data-dir used by this member must be removed"
    )]
    MemberRemoved,
    #[error("etcdserver: not leader")]
    NotLeader,
    #[error("etcdserver: bad leader transferee")]
    BadLeaderTransferee,
    #[error("etcdserver: rpc not supported for learner")]
    NotSupportedForLearner,
    #[error("etcdserver: internal error: {0}")]
    Internal(String),
}

impl From<MvccError> for ServerError {
    fn from(e: MvccError) -> Self {
        match e {
            MvccError::Compacted => ServerError::Compacted,
            MvccError::FutureRevision => ServerError::FutureRevision,
            other => ServerError::Internal(other.to_string()),
        }
    }
}

impl From<RaftError> for ServerError {
    fn from(e: RaftError) -> Self {
        match e {
            RaftError::NoLeader => ServerError::NoLeader,
            RaftError::TooManyRequests => ServerError::TooManyRequests,
            RaftError::Stopped => ServerError::Stopped,
            other => ServerError::Internal(other.to_string()),
        }
    }
}

/// Maps a backend error to `Internal`, saying what was being done.
pub(crate) fn storage_error(what: &str) -> impl Fn(MvccError) -> ServerError + '_ {
    move |e| ServerError::Internal(format!("{what}: {e}"))
}
