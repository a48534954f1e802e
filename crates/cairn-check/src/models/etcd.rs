//! [`EtcdKv`]: etcd's keyspace with revisions, the model for cairn's own histories.
//!
//! The state is every live key's value, `mod_revision`, `create_revision` and `version`, plus
//! the store's revision. Every response carries the revision it saw or created, and the model
//! requires it to match exactly (it is revision-aware): a write that changes something creates
//! revision `r + 1`, a read reports `r`. Because of this global counter the keys are not
//! independent and the history is not partitioned.
//!
//! An unknown write may or may not have happened; if it did, it took a revision of its own,
//! which later responses reveal. A fresh etcd store is at revision 1 with no keys.
//!
//! Reads are single-key [`EtcdInput::Get`]s and [`EtcdInput::Range`]s over `[start, end)`
//! (see `etcd/range.rs`); both are read-only and constrain the state like a get.
//!
//! Leases (see `etcd/lease.rs`): the state also holds the leases that exist and the keys
//! attached to each. [`EtcdInput::LeaseGrant`] creates a lease with a client-chosen ID at no
//! revision, [`EtcdInput::PutWithLease`] is a put that attaches the key to a lease (any other
//! put or delete detaches it), and [`EtcdInput::LeaseRevoke`] deletes every key attached to
//! the lease at one new revision (none if no key is attached). Requests on a lease that does
//! not exist, and grants of one that does, are refused with an [`EtcdOutput::LeaseError`].
//! Leases never expire in the model.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::sync::Arc;

use crate::history::History;
use crate::model::Model;

mod build;
mod lease;
mod range;
mod resolve;

pub use lease::LeaseError;
use lease::Leases;
pub use range::key_in_range;

/// A live key's value and metadata, as etcd reports it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyValue {
    /// The value.
    pub value: String,
    /// The revision of the last write to the key.
    pub mod_revision: i64,
    /// The revision that created the key (since its last deletion).
    pub create_revision: i64,
    /// Writes since creation, 1 for a new key.
    pub version: i64,
}

/// An operation on an etcd keyspace.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EtcdInput {
    /// A linearizable read of one key.
    Get {
        /// The key.
        key: String,
    },
    /// Set a key's value.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// Delete one key.
    Delete {
        /// The key.
        key: String,
    },
    /// A transaction.
    Txn(Txn),
    /// A linearizable read of the keys in a range, as etcd's Range: `end` empty reads the
    /// single key `start`, `end == "\0"` every key from `start` on, otherwise `[start, end)`
    /// (a prefix `p` is given as `[p, p with its last byte incremented)`).
    Range {
        /// The first key.
        start: String,
        /// The end of the range (exclusive); `""` for the single key `start`, `"\0"` for no
        /// end.
        end: String,
        /// At most this many keys are returned; 0 (or less) for no limit.
        limit: i64,
    },
    /// Grant a lease with a client-chosen ID (etcd's `LeaseGrant` with `ID` set; the TTL is
    /// not modeled: leases never expire). Creates no revision; answered by
    /// [`EtcdOutput::LeaseGrant`], or [`EtcdOutput::LeaseError`] with
    /// [`LeaseError::AlreadyExists`] if the lease exists. The ID must not be 0 (with 0 etcd
    /// picks an ID, which the model cannot know: it then answers [`EtcdOutput::LeaseGrant`]
    /// and grants nothing).
    LeaseGrant {
        /// The lease ID.
        lease: i64,
    },
    /// Set a key's value and attach the key to a lease (detaching it from any other), as a
    /// put with `lease` set. Answered by [`EtcdOutput::Put`], or, if the lease does not exist,
    /// by [`EtcdOutput::LeaseError`] with [`LeaseError::NotFound`] (nothing written, no
    /// revision). Lease 0 means no lease: a plain [`EtcdInput::Put`].
    PutWithLease {
        /// The key.
        key: String,
        /// The value.
        value: String,
        /// The lease.
        lease: i64,
    },
    /// Revoke a lease: every key attached to it is deleted, all at one new revision (no
    /// revision if none is attached), and the lease is gone. Answered by
    /// [`EtcdOutput::LeaseRevoke`], or, if the lease does not exist, by
    /// [`EtcdOutput::LeaseError`] with [`LeaseError::NotFound`].
    LeaseRevoke {
        /// The lease.
        lease: i64,
    },
}

/// A transaction: if every compare holds, `success` runs, else `failure`; atomically, at one
/// revision.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Txn {
    /// The guards.
    pub compare: Vec<Compare>,
    /// The operations run if every guard holds.
    pub success: Vec<TxnOp>,
    /// The operations run otherwise.
    pub failure: Vec<TxnOp>,
}

/// A transaction guard on one key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Compare {
    /// The key compared.
    pub key: String,
    /// How the key's field compares with the target's.
    pub op: CompareOp,
    /// The field and the value it is compared with.
    pub target: CompareTarget,
}

/// The field a [`Compare`] looks at, and the value it compares it with.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CompareTarget {
    /// The value; a compare on the value of a missing key is always false, as in etcd.
    Value(String),
    /// The mod revision (0 for a missing key).
    ModRevision(i64),
    /// The create revision (0 for a missing key).
    CreateRevision(i64),
    /// The version (0 for a missing key).
    Version(i64),
}

/// How a [`Compare`] compares: `field OP target`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CompareOp {
    /// Equal.
    Equal,
    /// Not equal.
    NotEqual,
    /// Greater than.
    Greater,
    /// Less than.
    Less,
}

/// An operation inside a [`Txn`]; it sees the writes of the operations before it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TxnOp {
    /// Read one key.
    Get {
        /// The key.
        key: String,
    },
    /// Set one key.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// Delete one key.
    Delete {
        /// The key.
        key: String,
    },
}

/// The result of one [`TxnOp`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TxnOpResult {
    /// What a get read.
    Get(Option<KeyValue>),
    /// A put happened.
    Put,
    /// How many keys a delete removed.
    Delete {
        /// 0 or 1.
        deleted: i64,
    },
}

/// What an operation on an etcd keyspace returned; `revision` is the response header's.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EtcdOutput {
    /// A get's key (if it exists) and the store's revision.
    Get {
        /// The key's value and metadata, if it exists.
        kv: Option<KeyValue>,
        /// The store's revision when read.
        revision: i64,
    },
    /// A put's new revision.
    Put {
        /// The revision the put created.
        revision: i64,
    },
    /// A delete's count and the revision after it.
    Delete {
        /// 0 or 1.
        deleted: i64,
        /// The new revision if a key was deleted, else the current one.
        revision: i64,
    },
    /// A transaction's branch, results and revision after it.
    Txn {
        /// Whether every compare held.
        succeeded: bool,
        /// The revision after it (unchanged if it changed nothing).
        revision: i64,
        /// One result per operation of the branch that ran.
        results: Vec<TxnOpResult>,
    },
    /// A range's keys and the store's revision.
    Range {
        /// The keys in range with their values, in key order, at most `limit` of them.
        kvs: Vec<(String, KeyValue)>,
        /// How many keys are in range, whatever the limit.
        count: i64,
        /// Whether the limit left keys out (`count > kvs.len()`).
        more: bool,
        /// The store's revision when read.
        revision: i64,
    },
    /// A lease grant's header revision: the store's current one (a grant creates none).
    LeaseGrant {
        /// The store's revision.
        revision: i64,
    },
    /// A lease revoke's header revision: the new one if it deleted any key (all its keys at
    /// that one revision), else the current one.
    LeaseRevoke {
        /// The revision after the revoke.
        revision: i64,
    },
    /// A lease request etcd refused, definitely: nothing was written and no revision created.
    /// The answer to a [`EtcdInput::LeaseGrant`] of an existing lease
    /// ([`LeaseError::AlreadyExists`]) and to a [`EtcdInput::PutWithLease`] or
    /// [`EtcdInput::LeaseRevoke`] of a missing one ([`LeaseError::NotFound`]); no other
    /// input accepts it. [`LeaseError::from_message`] maps etcd's error text to it.
    LeaseError(LeaseError),
}

/// The keyspace: live keys, the store's revision, and the leases with their keys. Cloning is
/// cheap (shared until written).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EtcdState {
    revision: i64,
    keys: Arc<BTreeMap<String, KeyValue>>,
    leases: Arc<Leases>,
}

impl Default for EtcdState {
    fn default() -> Self {
        EtcdState::new(1)
    }
}

impl EtcdState {
    /// An empty keyspace at `revision`, without leases (a fresh etcd store is at 1).
    pub fn new(revision: i64) -> Self {
        EtcdState {
            revision,
            keys: Arc::default(),
            leases: Arc::default(),
        }
    }

    /// The store's revision.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// A live key.
    pub fn get(&self, key: &str) -> Option<&KeyValue> {
        self.keys.get(key)
    }

    /// The live keys, in order.
    pub fn keys(&self) -> impl Iterator<Item = (&str, &KeyValue)> {
        self.keys.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Whether `compare` holds.
    pub fn compare(&self, compare: &Compare) -> bool {
        let kv = self.get(&compare.key);
        let field = |f: fn(&KeyValue) -> i64| kv.map_or(0, f);
        let ordering = match &compare.target {
            CompareTarget::Value(value) => match kv {
                Some(kv) => kv.value.as_bytes().cmp(value.as_bytes()),
                None => return false,
            },
            CompareTarget::ModRevision(r) => field(|kv| kv.mod_revision).cmp(r),
            CompareTarget::CreateRevision(r) => field(|kv| kv.create_revision).cmp(r),
            CompareTarget::Version(v) => field(|kv| kv.version).cmp(v),
        };
        match compare.op {
            CompareOp::Equal => ordering == Ordering::Equal,
            CompareOp::NotEqual => ordering != Ordering::Equal,
            CompareOp::Greater => ordering == Ordering::Greater,
            CompareOp::Less => ordering == Ordering::Less,
        }
    }

    /// Runs `input` as etcd would: the state after it and the response etcd gives.
    pub fn apply(&self, input: &EtcdInput) -> (EtcdState, EtcdOutput) {
        match input {
            EtcdInput::Get { key } => {
                let kv = self.get(key).cloned();
                let output = EtcdOutput::Get {
                    kv,
                    revision: self.revision,
                };
                (self.clone(), output)
            }
            EtcdInput::Range { start, end, limit } => {
                (self.clone(), self.range_output(start, end, *limit))
            }
            EtcdInput::Put { key, value } => {
                let mut write = Write::new(self);
                write.put(key, value, 0);
                let next = write.finish();
                let revision = next.revision;
                (next, EtcdOutput::Put { revision })
            }
            EtcdInput::PutWithLease { key, value, lease } => {
                if *lease != 0 && !self.has_lease(*lease) {
                    return (self.clone(), EtcdOutput::LeaseError(LeaseError::NotFound));
                }
                let mut write = Write::new(self);
                write.put(key, value, *lease);
                let next = write.finish();
                let revision = next.revision;
                (next, EtcdOutput::Put { revision })
            }
            EtcdInput::LeaseGrant { lease } => {
                if self.has_lease(*lease) {
                    return (
                        self.clone(),
                        EtcdOutput::LeaseError(LeaseError::AlreadyExists),
                    );
                }
                let mut next = self.clone();
                if *lease != 0 {
                    next.grant_lease(*lease);
                }
                let revision = next.revision;
                (next, EtcdOutput::LeaseGrant { revision })
            }
            EtcdInput::LeaseRevoke { lease } => {
                if !self.has_lease(*lease) {
                    return (self.clone(), EtcdOutput::LeaseError(LeaseError::NotFound));
                }
                let mut write = Write::new(self);
                for key in write.state.remove_lease(*lease) {
                    write.delete(&key);
                }
                let next = write.finish();
                let revision = next.revision;
                (next, EtcdOutput::LeaseRevoke { revision })
            }
            EtcdInput::Delete { key } => {
                let mut write = Write::new(self);
                let deleted = write.delete(key);
                let next = write.finish();
                let revision = next.revision;
                (next, EtcdOutput::Delete { deleted, revision })
            }
            EtcdInput::Txn(txn) => {
                let succeeded = txn.compare.iter().all(|c| self.compare(c));
                let ops = if succeeded {
                    &txn.success
                } else {
                    &txn.failure
                };
                let mut write = Write::new(self);
                let results = ops.iter().map(|op| write.op(op)).collect();
                let next = write.finish();
                let revision = next.revision;
                let output = EtcdOutput::Txn {
                    succeeded,
                    revision,
                    results,
                };
                (next, output)
            }
        }
    }
}

/// One request's writes, all at the revision after the current one, which they create only
/// if they change something.
struct Write {
    state: EtcdState,
    revision: i64,
    changed: bool,
}

impl Write {
    fn new(state: &EtcdState) -> Self {
        Write {
            state: state.clone(),
            revision: state.revision + 1,
            changed: false,
        }
    }

    /// Sets `key` and attaches it to `lease` (which exists), or detaches it for 0.
    fn put(&mut self, key: &str, value: &str, lease: i64) {
        self.state.attach(key, lease);
        let revision = self.revision;
        let keys = Arc::make_mut(&mut self.state.keys);
        let kv = match keys.get(key) {
            Some(old) => KeyValue {
                value: value.to_string(),
                mod_revision: revision,
                create_revision: old.create_revision,
                version: old.version + 1,
            },
            None => KeyValue {
                value: value.to_string(),
                mod_revision: revision,
                create_revision: revision,
                version: 1,
            },
        };
        keys.insert(key.to_string(), kv);
        self.changed = true;
    }

    fn delete(&mut self, key: &str) -> i64 {
        if self.state.keys.contains_key(key) {
            self.state.detach(key);
            Arc::make_mut(&mut self.state.keys).remove(key);
            self.changed = true;
            1
        } else {
            0
        }
    }

    fn op(&mut self, op: &TxnOp) -> TxnOpResult {
        match op {
            TxnOp::Get { key } => TxnOpResult::Get(self.state.get(key).cloned()),
            TxnOp::Put { key, value } => {
                self.put(key, value, 0);
                TxnOpResult::Put
            }
            TxnOp::Delete { key } => TxnOpResult::Delete {
                deleted: self.delete(key),
            },
        }
    }

    fn finish(mut self) -> EtcdState {
        if self.changed {
            self.state.revision = self.revision;
        }
        self.state
    }
}

/// etcd's keyspace, revision-aware: every response's revision (and a read's key metadata) must
/// match the model's exactly; an unknown write may or may not have happened, and takes a
/// revision of its own if it did. The global revision ties all keys together, so the history
/// is not partitioned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EtcdKv {
    initial: EtcdState,
}

impl EtcdKv {
    /// A model starting from a fresh store (revision 1, no keys).
    pub fn new() -> Self {
        Self::default()
    }

    /// A model starting from `state` (e.g. a store the test filled before recording).
    pub fn with_initial(state: EtcdState) -> Self {
        EtcdKv { initial: state }
    }
}

impl Model for EtcdKv {
    type Input = EtcdInput;
    type Output = EtcdOutput;
    type State = EtcdState;

    fn init(&self) -> EtcdState {
        self.initial.clone()
    }

    fn step(
        &self,
        state: &EtcdState,
        input: &EtcdInput,
        output: Option<&EtcdOutput>,
    ) -> Option<EtcdState> {
        let Some(output) = output else {
            return Some(state.apply(input).0);
        };
        // Cheap checks first: most steps the search tries fail on the revision.
        let r = state.revision;
        let plausible = match (input, output) {
            (EtcdInput::Get { key }, EtcdOutput::Get { kv, revision }) => {
                let same = *revision == r && kv.as_ref() == state.get(key);
                return same.then(|| state.clone());
            }
            (EtcdInput::Range { start, end, limit }, EtcdOutput::Range { revision, .. }) => {
                let same = *revision == r && *output == state.range_output(start, end, *limit);
                return same.then(|| state.clone());
            }
            (EtcdInput::Put { .. }, EtcdOutput::Put { revision }) => *revision == r + 1,
            (EtcdInput::PutWithLease { lease, .. }, EtcdOutput::Put { revision }) => {
                *revision == r + 1 && (*lease == 0 || state.has_lease(*lease))
            }
            (EtcdInput::LeaseGrant { lease }, EtcdOutput::LeaseGrant { revision }) => {
                *revision == r && !state.has_lease(*lease)
            }
            (EtcdInput::LeaseRevoke { lease }, EtcdOutput::LeaseRevoke { revision }) => {
                state.has_lease(*lease) && (*revision == r || *revision == r + 1)
            }
            (
                EtcdInput::PutWithLease { .. } | EtcdInput::LeaseRevoke { .. },
                EtcdOutput::LeaseError(LeaseError::NotFound),
            )
            | (EtcdInput::LeaseGrant { .. }, EtcdOutput::LeaseError(LeaseError::AlreadyExists)) => {
                // Refused: nothing changes (`apply` decides whether it is refused here).
                true
            }
            (EtcdInput::Delete { key }, EtcdOutput::Delete { deleted, revision }) => {
                if state.get(key).is_some() {
                    *deleted == 1 && *revision == r + 1
                } else {
                    *deleted == 0 && *revision == r
                }
            }
            (
                EtcdInput::Txn(txn),
                EtcdOutput::Txn {
                    succeeded,
                    revision,
                    ..
                },
            ) => {
                *succeeded == txn.compare.iter().all(|c| state.compare(c))
                    && (*revision == r || *revision == r + 1)
            }
            _ => false,
        };
        if !plausible {
            return None;
        }
        let (next, expected) = state.apply(input);
        (*output == expected).then_some(next)
    }

    /// The store's revision, which no request decreases.
    fn progress(&self, state: &EtcdState) -> u64 {
        u64::try_from(state.revision).unwrap_or(0)
    }

    /// A read must see the store at its revision; a write that created revision `r` must
    /// start from `r - 1`. A lease grant sees the store at its revision; a revoke at `r` may
    /// have created it or not, so starts from `r` at the latest. A refused lease request
    /// reports no revision, so has no bound.
    fn progress_bound(&self, input: &EtcdInput, output: &EtcdOutput) -> Option<u64> {
        let from = match output {
            EtcdOutput::LeaseError(_) => return None,
            EtcdOutput::LeaseGrant { revision } | EtcdOutput::LeaseRevoke { revision } => *revision,
            EtcdOutput::Put { revision } => revision - 1,
            EtcdOutput::Delete { deleted, revision } if *deleted > 0 => revision - 1,
            EtcdOutput::Txn {
                succeeded,
                revision,
                results,
            } => {
                let wrote = match input {
                    EtcdInput::Txn(txn) => {
                        let ops = if *succeeded {
                            &txn.success
                        } else {
                            &txn.failure
                        };
                        ops.iter().any(|op| matches!(op, TxnOp::Put { .. }))
                            || results.iter().any(
                                |r| matches!(r, TxnOpResult::Delete { deleted } if *deleted > 0),
                            )
                    }
                    _ => false,
                };
                if wrote {
                    revision - 1
                } else {
                    *revision
                }
            }
            EtcdOutput::Delete { revision, .. }
            | EtcdOutput::Get { revision, .. }
            | EtcdOutput::Range { revision, .. } => *revision,
        };
        Some(u64::try_from(from).unwrap_or(0))
    }

    /// An unknown put (with or without a lease, or txn whose success branch only puts) of a
    /// value no other operation writes under that key took effect if a read saw the value, at
    /// the `mod_revision` seen. Unknown lease grants and revokes stay unknown.
    fn resolve_unknown(
        &self,
        history: &History<EtcdInput, EtcdOutput>,
    ) -> Vec<(usize, EtcdOutput)> {
        resolve::resolve_unknown(history)
    }

    fn is_read_only(&self, input: &EtcdInput) -> bool {
        match input {
            EtcdInput::Get { .. } | EtcdInput::Range { .. } => true,
            EtcdInput::Put { .. }
            | EtcdInput::Delete { .. }
            | EtcdInput::PutWithLease { .. }
            | EtcdInput::LeaseGrant { .. }
            | EtcdInput::LeaseRevoke { .. } => false,
            EtcdInput::Txn(txn) => txn
                .success
                .iter()
                .chain(&txn.failure)
                .all(|op| matches!(op, TxnOp::Get { .. })),
        }
    }
}
