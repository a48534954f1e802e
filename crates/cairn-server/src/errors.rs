//! Maps the errors of cairn's inner crates onto etcd's error set. The strings themselves live
//! in `cairn_api::EtcdError`, the one place they are spelled.

use cairn_api::EtcdError;
use cairn_mvcc::validate::ValidateError;
use cairn_mvcc::MvccError;
use cairn_raft::node::NodeError;

/// A keyspace error as etcd reports it. Storage failures have no etcd equivalent; they are
/// logged with their cause and reported as etcd reports an internal failure.
pub fn mvcc_error(e: MvccError) -> EtcdError {
    match e {
        MvccError::Compacted => EtcdError::Compacted,
        MvccError::FutureRev => EtcdError::FutureRev,
        MvccError::KeyNotFound => EtcdError::KeyNotFound,
        MvccError::LeaseNotFound => EtcdError::LeaseNotFound,
        MvccError::LeaseExists => EtcdError::LeaseExist,
        other
        @ (MvccError::NotReadOnly | MvccError::Storage { .. } | MvccError::Corrupt { .. }) => {
            tracing::error!(error = %other, "backend error");
            EtcdError::Stopped
        }
    }
}

/// A raft-side failure as etcd reports it.
pub fn node_error(e: NodeError) -> EtcdError {
    match e {
        NodeError::ProposalDropped => EtcdError::NoLeader,
        NodeError::ProposalTooLarge => EtcdError::RequestTooLarge,
        NodeError::LeaderChanged => EtcdError::LeaderChanged,
        NodeError::Stopped => EtcdError::Stopped,
    }
}

/// A request rejected at the edge, before it is proposed.
pub fn validation_error(e: ValidateError) -> EtcdError {
    match e {
        ValidateError::KeyNotProvided => EtcdError::EmptyKey,
        ValidateError::ValueProvided => EtcdError::ValueProvided,
        ValidateError::LeaseProvided => EtcdError::LeaseProvided,
        ValidateError::TooManyOps => EtcdError::TooManyOps,
        ValidateError::DuplicateKey => EtcdError::DuplicateKey,
        ValidateError::EmptyOp => EtcdError::KeyNotFound,
    }
}
