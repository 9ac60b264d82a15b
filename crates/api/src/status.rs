//! The one place a `ServerError` becomes a gRPC status: etcd's code and etcd's message.

use cairn_server::ServerError;
use tonic::{Code, Status};

pub fn to_status(error: ServerError) -> Status {
    let code = match &error {
        ServerError::EmptyKey
        | ServerError::ValueProvided
        | ServerError::LeaseProvided
        | ServerError::KeyNotFound
        | ServerError::TooManyOps
        | ServerError::DuplicateKey
        | ServerError::RequestTooLarge => Code::InvalidArgument,
        ServerError::LeaseNotFound => Code::NotFound,
        ServerError::LeaseExists => Code::FailedPrecondition,
        ServerError::LeaseTtlTooLarge => Code::OutOfRange,
        ServerError::Compacted | ServerError::FutureRevision => Code::OutOfRange,
        ServerError::NoLeader
        | ServerError::Timeout
        | ServerError::Stopped
        | ServerError::NotCapable => Code::Unavailable,
        ServerError::TooManyRequests => Code::ResourceExhausted,
        ServerError::MemberExists
        | ServerError::PeerUrlExists
        | ServerError::NotEnoughStartedMembers
        | ServerError::NotLearner
        | ServerError::LearnerNotReady
        | ServerError::TooManyLearners
        | ServerError::NotLeader
        | ServerError::BadLeaderTransferee => Code::FailedPrecondition,
        ServerError::BadMemberUrls => Code::InvalidArgument,
        ServerError::MemberNotFound => Code::NotFound,
        ServerError::NotSupportedForLearner => Code::Unavailable,
        ServerError::MemberRemoved => Code::FailedPrecondition,
        ServerError::Internal(_) => Code::Unknown,
    };
    Status::new(code, error.to_string())
}
