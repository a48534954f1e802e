//! cairn's MVCC keyspace: etcd's revision semantics (Range, Put, DeleteRange, Txn, Compact)
//! on a redb file, with no in-memory per-key index.
//!
//! - [`Store`] opens the file and serves reads from consistent snapshots, concurrently.
//! - [`WriteBatch`] is the single writer's transaction over a batch of applied raft entries:
//!   every `put` / `delete_range` / `txn` that changes something is one revision, a failed one
//!   changes nothing; [`WriteBatch::commit`] returns the events per revision for the watch hub
//!   and stores the applied raft index with the data.
//! - [`Store::compact_step`] removes what a compaction made unreachable, in bounded steps.
//! - [`Store::hash_kv`] hashes the logical state up to a revision (etcd's HashKV), the same on
//!   every member that applied the same entries, whatever its physical compaction progress.
//! - [`Store::copy_to`] writes a consistent copy of the whole backend to a new file (a raft
//!   snapshot); [`Store::replace_with`] atomically swaps such a file in as the store's contents.
//! - Cluster membership ([`WriteBatch::put_member`], [`Store::members`]) is stored with the data
//!   it was applied with, outside the keyspace (no revision, no events); see `members.rs`.
//! - [`validate`] holds the checks etcd makes at the gRPC edge before proposing.
//!
//! Layout (see `layout.rs`): `versions` keyed `(key, u64::MAX - revision)` so the latest
//! version at or below a revision is one seek and a range is a forward scan; `history`
//! `(revision, sub) → key` for compaction and watch replay; `counts` of live keys per
//! `/`-prefix for a fast `count`; `meta` for the revisions and the applied index; `leases` and
//! `lease_keys` (see `lease.rs`) for granted leases and the keys attached to each, kept by
//! every put and delete, so a revoke never scans the keyspace; `members` and `removed_members`
//! (see `members.rs`) for the cluster's members, as opaque bytes the server encodes.
//!
//! Responses carry a header holding only the revision etcd reports for them; the server fills
//! in cluster, member and term.

mod batch;
mod change;
mod compact;
mod error;
mod hash;
mod layout;
mod lease;
mod members;
mod range;
mod read;
mod replay;
mod snapshot;
mod store;
#[cfg(test)]
mod testutil;
mod txn;
pub mod validate;

pub use batch::{RevisionEvents, WriteBatch};
pub use error::MvccError;
pub use hash::HashKv;
pub use lease::{GrantedLeases, LeaseInfo};
pub use snapshot::SnapshotInfo;
pub use store::{Store, StoreOptions};

/// Leases that count as existing for puts besides those granted in the store's `leases` table
/// (for tools and tests writing keys under leases they never granted). A server passes
/// [`GrantedLeases`], which adds none.
pub trait LeaseCheck {
    /// True when lease `id` should count as granted although the `leases` table lacks it.
    fn lease_exists(&self, id: i64) -> bool;
}

/// A [`LeaseCheck`] from a closure.
impl<F: Fn(i64) -> bool> LeaseCheck for F {
    fn lease_exists(&self, id: i64) -> bool {
        self(id)
    }
}
