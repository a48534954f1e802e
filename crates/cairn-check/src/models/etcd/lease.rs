//! Leases in the keyspace: which leases exist and which keys are attached to which, and the
//! errors etcd answers lease requests with.
//!
//! etcd's semantics, as the model follows them (leases never expire: the traffic grants long
//! TTLs, and keep-alives are not modeled):
//!
//! - a grant with a client-chosen ID creates the lease, at no revision; granting an ID that
//!   exists fails with "etcdserver: lease already exists";
//! - a put with lease `L` attaches the key to `L` (failing with "etcdserver: requested lease not
//!   found", at no revision, if `L` does not exist); any other put (a plain put, a put inside a
//!   transaction, a put with lease 0) detaches the key from its lease, and so does a delete;
//! - a revoke deletes every key attached to the lease, all at one new revision (none if no key
//!   is attached), and removes the lease; revoking a lease that does not exist fails with
//!   "etcdserver: requested lease not found".

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use super::EtcdState;

/// Why etcd refused a lease request: nothing was written and no revision created (etcd's
/// error responses carry no header, so neither does this).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LeaseError {
    /// "etcdserver: requested lease not found": a put with, or a revoke of, a lease that does
    /// not exist.
    NotFound,
    /// "etcdserver: lease already exists": a grant of an ID that is granted already.
    AlreadyExists,
}

impl LeaseError {
    /// The distinctive part of etcd's message for [`LeaseError::NotFound`].
    pub const NOT_FOUND_MESSAGE: &'static str = "requested lease not found";
    /// The distinctive part of etcd's message for [`LeaseError::AlreadyExists`].
    pub const ALREADY_EXISTS_MESSAGE: &'static str = "lease already exists";

    /// The lease error an error message reports, if it reports one: the message contains
    /// etcd's text (`"etcdserver: requested lease not found"`, `"etcdserver: lease already
    /// exists"`), however a client wrapped it (e.g. in a gRPC status).
    pub fn from_message(message: &str) -> Option<LeaseError> {
        if message.contains(Self::NOT_FOUND_MESSAGE) {
            Some(LeaseError::NotFound)
        } else if message.contains(Self::ALREADY_EXISTS_MESSAGE) {
            Some(LeaseError::AlreadyExists)
        } else {
            None
        }
    }
}

impl fmt::Display for LeaseError {
    /// etcd's message.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LeaseError::NotFound => write!(f, "etcdserver: {}", Self::NOT_FOUND_MESSAGE),
            LeaseError::AlreadyExists => write!(f, "etcdserver: {}", Self::ALREADY_EXISTS_MESSAGE),
        }
    }
}

/// The leases that exist and the keys attached to them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub(super) struct Leases {
    /// The leases granted and not revoked.
    granted: BTreeSet<i64>,
    /// Live key -> the lease it is attached to (keys without a lease are absent).
    attached: BTreeMap<String, i64>,
}

impl EtcdState {
    /// Whether lease `lease` exists (was granted and not revoked).
    pub fn has_lease(&self, lease: i64) -> bool {
        self.leases.granted.contains(&lease)
    }

    /// The leases that exist, in order.
    pub fn leases(&self) -> impl Iterator<Item = i64> + '_ {
        self.leases.granted.iter().copied()
    }

    /// The lease `key` is attached to, if any.
    pub fn lease_of(&self, key: &str) -> Option<i64> {
        self.leases.attached.get(key).copied()
    }

    /// The keys attached to `lease`, in key order.
    pub fn keys_of_lease(&self, lease: i64) -> impl Iterator<Item = &str> + '_ {
        self.leases
            .attached
            .iter()
            .filter(move |(_, l)| **l == lease)
            .map(|(k, _)| k.as_str())
    }

    /// This state with lease `lease` granted (no keys attached), e.g. for an initial state
    /// whose leases the test created before recording; the revision is left alone.
    pub fn with_lease(mut self, lease: i64) -> Self {
        self.grant_lease(lease);
        self
    }

    /// Creates lease `lease` (which must not exist).
    pub(super) fn grant_lease(&mut self, lease: i64) {
        Arc::make_mut(&mut self.leases).granted.insert(lease);
    }

    /// Attaches `key` to `lease`, or detaches it from any lease for 0; `lease` must exist.
    pub(super) fn attach(&mut self, key: &str, lease: i64) {
        if lease == 0 {
            self.detach(key);
        } else if self.lease_of(key) != Some(lease) {
            Arc::make_mut(&mut self.leases)
                .attached
                .insert(key.to_string(), lease);
        }
    }

    /// Detaches `key` from its lease, if it has one.
    pub(super) fn detach(&mut self, key: &str) {
        if self.leases.attached.contains_key(key) {
            Arc::make_mut(&mut self.leases).attached.remove(key);
        }
    }

    /// Removes lease `lease`, detaching its keys; returns them, in key order (the caller
    /// deletes them).
    pub(super) fn remove_lease(&mut self, lease: i64) -> Vec<String> {
        let keys: Vec<String> = self.keys_of_lease(lease).map(str::to_string).collect();
        let leases = Arc::make_mut(&mut self.leases);
        leases.granted.remove(&lease);
        for key in &keys {
            leases.attached.remove(key);
        }
        keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_messages_map_to_lease_errors() {
        assert_eq!(
            LeaseError::from_message(
                "grpc request error: status: NotFound, message: \"etcdserver: requested lease \
                 not found\""
            ),
            Some(LeaseError::NotFound)
        );
        assert_eq!(
            LeaseError::from_message(&LeaseError::AlreadyExists.to_string()),
            Some(LeaseError::AlreadyExists)
        );
        assert_eq!(
            LeaseError::from_message("etcdserver: request timed out"),
            None
        );
    }

    #[test]
    fn attach_detach_and_remove() {
        let mut state = EtcdState::default().with_lease(7).with_lease(8);
        state.attach("a", 7);
        state.attach("b", 7);
        state.attach("c", 8);
        assert_eq!(state.keys_of_lease(7).collect::<Vec<_>>(), ["a", "b"]);
        state.attach("b", 8);
        state.detach("c");
        assert_eq!(state.lease_of("b"), Some(8));
        assert_eq!(state.lease_of("c"), None);
        assert_eq!(state.remove_lease(7), ["a"]);
        assert!(!state.has_lease(7));
        assert_eq!(state.leases().collect::<Vec<_>>(), [8]);
        assert_eq!(state.lease_of("a"), None);
    }
}
