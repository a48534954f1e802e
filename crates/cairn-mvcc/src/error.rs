//! The error type of the MVCC store.

use thiserror::Error;

/// What can go wrong in the MVCC store.
///
/// The first variants are etcd's own outcomes; the gRPC layer maps them to etcd's error strings
/// and codes (the `Display` text here is for logs only). `Storage` and `Corrupt` are failures of
/// the backend: the request did not apply and the write batch must not be committed.
///
/// etcd raises "value is provided" / "lease is provided" only at the gRPC edge, before a request
/// is proposed: they are [`crate::validate::ValidateError`] variants, not store outcomes.
#[derive(Debug, Error)]
pub enum MvccError {
    /// The requested revision is below the compact revision.
    #[error("mvcc: required revision has been compacted")]
    Compacted,
    /// The requested revision is above the current revision.
    #[error("mvcc: required revision is a future revision")]
    FutureRev,
    /// `ignore_value` / `ignore_lease` on a key that does not exist.
    #[error("key not found")]
    KeyNotFound,
    /// A put or a revoke names a lease that is not granted.
    #[error("requested lease not found")]
    LeaseNotFound,
    /// A grant names a lease that is already granted.
    #[error("lease already exists")]
    LeaseExists,
    /// [`crate::Store::txn_read`] was given a txn that writes (or nests a txn).
    #[error("txn is not read-only")]
    NotReadOnly,
    /// The backend (redb) failed.
    #[error("storage error while {context}: {source}")]
    Storage {
        /// What the store was doing.
        context: &'static str,
        /// The backend's error.
        #[source]
        source: Box<redb::Error>,
    },
    /// A stored record could not be decoded, or a snapshot file given to
    /// [`crate::Store::replace_with`] is not a usable copy of a store (then `table` is
    /// `"snapshot file"` and `detail` names the file and the reason).
    #[error("corrupt record in {table}: {detail}")]
    Corrupt {
        /// The table holding the record (`"snapshot file"` for a refused snapshot).
        table: &'static str,
        /// What was wrong.
        detail: String,
    },
}

impl MvccError {
    /// True for the errors that are etcd request outcomes (as opposed to backend failures).
    pub fn is_request_error(&self) -> bool {
        !matches!(self, MvccError::Storage { .. } | MvccError::Corrupt { .. })
    }
}

/// Wraps a backend error with what the store was doing.
pub(crate) trait Context<T> {
    fn ctx(self, context: &'static str) -> Result<T, MvccError>;
}

impl<T, E: Into<redb::Error>> Context<T> for Result<T, E> {
    fn ctx(self, context: &'static str) -> Result<T, MvccError> {
        self.map_err(|e| MvccError::Storage {
            context,
            source: Box::new(e.into()),
        })
    }
}
