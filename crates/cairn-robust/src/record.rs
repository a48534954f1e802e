//! What the harness records: every client request with its call and return times and how it
//! ended, and every watch stream with its responses. These are plain, serializable types (the
//! artifacts of a failing run are these, as JSON); `checks.rs` turns them into cairn-check's
//! types.

use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

/// A run's clock: nanoseconds since the run started, monotonic and shared by every task, so
/// that the order of two recorded times is their real-time order.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    start: Instant,
}

impl Clock {
    /// A clock starting now.
    pub fn new() -> Self {
        Clock {
            start: Instant::now(),
        }
    }

    /// Nanoseconds since the clock started.
    pub fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX - 1)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// A key's value and metadata as a response showed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kv {
    /// The key.
    pub key: String,
    /// The value.
    pub value: String,
    /// Revision of its last write.
    pub mod_revision: i64,
    /// Revision of its creation.
    pub create_revision: i64,
    /// Writes since creation.
    pub version: i64,
    /// The lease it is attached to (0: none).
    pub lease: i64,
}

/// A transaction guard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cmp {
    /// The key compared.
    pub key: String,
    /// `field OP target`.
    pub op: CmpOp,
    /// The field and its target value.
    pub target: CmpTarget,
}

/// How a [`Cmp`] compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CmpOp {
    /// `==`
    Equal,
    /// `!=`
    NotEqual,
    /// `>`
    Greater,
    /// `<`
    Less,
}

/// The field a [`Cmp`] looks at, with the value compared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CmpTarget {
    /// The value.
    Value(String),
    /// The mod revision (0 for a missing key).
    ModRevision(i64),
    /// The create revision.
    CreateRevision(i64),
    /// The version.
    Version(i64),
}

/// An operation inside a transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnOp {
    /// Read a key.
    Get {
        /// The key.
        key: String,
    },
    /// Set a key.
    Put {
        /// The key.
        key: String,
        /// The value (unique in the run).
        value: String,
    },
    /// Delete a key.
    Delete {
        /// The key.
        key: String,
    },
}

/// The result of one [`TxnOp`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnResult {
    /// What a get read.
    Get(Option<Kv>),
    /// A put happened.
    Put,
    /// How many keys a delete removed.
    Delete(i64),
}

/// What a client asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Read one key.
    Get {
        /// The key.
        key: String,
        /// A serializable (possibly stale) read served by the member alone.
        serializable: bool,
        /// Read at this revision (0: the current one).
        revision: i64,
    },
    /// Read a range: `end` empty for the single key, `"\0"` for every key from `start`.
    Range {
        /// The first key.
        start: String,
        /// The range end (exclusive).
        end: String,
        /// At most this many keys (0: no limit).
        limit: i64,
        /// A serializable read.
        serializable: bool,
        /// Read at this revision (0: the current one).
        revision: i64,
    },
    /// Set a key, attached to `lease` unless 0.
    Put {
        /// The key.
        key: String,
        /// The value (unique in the run).
        value: String,
        /// The lease (0: none).
        lease: i64,
    },
    /// Delete one key.
    Delete {
        /// The key.
        key: String,
    },
    /// A transaction.
    Txn {
        /// The guards.
        compare: Vec<Cmp>,
        /// Run if every guard holds.
        success: Vec<TxnOp>,
        /// Run otherwise.
        failure: Vec<TxnOp>,
    },
    /// Grant a lease.
    LeaseGrant {
        /// Seconds.
        ttl: i64,
    },
    /// Revoke a lease (deleting its keys).
    LeaseRevoke {
        /// The lease.
        id: i64,
    },
    /// Renew a lease once.
    LeaseKeepAlive {
        /// The lease.
        id: i64,
    },
}

impl Request {
    /// Whether the request can change the keyspace.
    pub fn is_write(&self) -> bool {
        match self {
            Request::Get { .. } | Request::Range { .. } | Request::LeaseKeepAlive { .. } => false,
            Request::LeaseGrant { .. } => false,
            Request::Put { .. } | Request::Delete { .. } | Request::LeaseRevoke { .. } => true,
            Request::Txn {
                success, failure, ..
            } => success
                .iter()
                .chain(failure)
                .any(|op| !matches!(op, TxnOp::Get { .. })),
        }
    }

    /// Whether it is a read that must be linearizable: neither serializable nor at a past
    /// revision.
    pub fn is_linearizable_read(&self) -> bool {
        matches!(
            self,
            Request::Get {
                serializable: false,
                revision: 0,
                ..
            } | Request::Range {
                serializable: false,
                revision: 0,
                ..
            }
        )
    }

    /// Whether it is a read served from a member's own state or at a past revision, checked
    /// against a replay of the event log instead of for linearizability.
    pub fn is_revision_read(&self) -> bool {
        matches!(self, Request::Get { .. } | Request::Range { .. }) && !self.is_linearizable_read()
    }
}

/// What a request returned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// A get's key and the header revision.
    Get {
        /// The key, if it exists.
        kv: Option<Kv>,
        /// Header revision.
        revision: i64,
    },
    /// A range's keys.
    Range {
        /// Keys in key order.
        kvs: Vec<Kv>,
        /// Keys in range, whatever the limit.
        count: i64,
        /// Whether the limit left keys out.
        more: bool,
        /// Header revision.
        revision: i64,
    },
    /// A put's revision.
    Put {
        /// Header revision.
        revision: i64,
    },
    /// A delete's count.
    Delete {
        /// Keys deleted.
        deleted: i64,
        /// Header revision.
        revision: i64,
    },
    /// A transaction's branch and results.
    Txn {
        /// Whether the guards held.
        succeeded: bool,
        /// Header revision.
        revision: i64,
        /// One per operation of the branch run.
        results: Vec<TxnResult>,
    },
    /// A granted lease.
    LeaseGrant {
        /// Its id.
        id: i64,
        /// Its TTL.
        ttl: i64,
    },
    /// A revoked lease.
    LeaseRevoke {
        /// Header revision.
        revision: i64,
    },
    /// A renewed lease.
    LeaseKeepAlive {
        /// The TTL it was renewed to (0: the lease is gone).
        ttl: i64,
    },
}

/// How a request ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// It returned.
    Ok(Response),
    /// It failed in a way that proves it had no effect (only ever used for reads, and for
    /// writes refused before they were sent).
    Failed(String),
    /// A write that failed or timed out: it may or may not have taken effect.
    Unknown(String),
}

/// One client request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpRecord {
    /// The client (one request in flight per client).
    pub client: u64,
    /// The member the client talks to.
    pub member: usize,
    /// When it was sent ([`Clock`] nanoseconds).
    pub call: u64,
    /// When its answer arrived, or when the client gave up on it.
    pub ret: u64,
    /// What was asked.
    pub request: Request,
    /// How it ended.
    pub outcome: Outcome,
}

/// The type of a watch event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventType {
    /// A put.
    Put,
    /// A delete.
    Delete,
}

/// One watch event as received.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Put or delete.
    pub kind: EventType,
    /// The key after the event (for a delete: the key, its mod revision the delete's).
    pub kv: Kv,
    /// The key before, when asked for and present.
    pub prev_kv: Option<Kv>,
}

/// One watch response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchResp {
    /// When it arrived ([`Clock`] nanoseconds).
    pub at: u64,
    /// Header revision (0 if none).
    pub header_revision: i64,
    /// Compact revision of a compacted cancel.
    pub compact_revision: i64,
    /// Whether the server canceled the watch.
    pub canceled: bool,
    /// The cancel reason, if any.
    pub cancel_reason: String,
    /// The events.
    pub events: Vec<Event>,
}

/// What a watch stream asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchSpec {
    /// The first key.
    pub key: String,
    /// The range end (etcd's conventions: `""` single key, `"\0"` from `key` on).
    pub end: String,
    /// The first revision (0: after the current one).
    pub start_revision: i64,
    /// Events carry the previous key.
    pub prev_kv: bool,
    /// No put events.
    pub no_put: bool,
    /// No delete events.
    pub no_delete: bool,
}

impl WatchSpec {
    /// Whether this watch sees every event (whole keyspace, no filters).
    pub fn sees_everything(&self) -> bool {
        self.key.is_empty() && self.end == "\0" && !self.no_put && !self.no_delete
    }
}

/// One watch stream, from creation to end. A reconnect is a new record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchStreamRecord {
    /// The watcher (the same across reconnects).
    pub watcher: u64,
    /// The member it was connected to.
    pub member: usize,
    /// What was asked.
    pub spec: WatchSpec,
    /// The header revision of the `created` response.
    pub created_at_revision: Option<i64>,
    /// The responses with events or a cancel, in order.
    pub responses: Vec<WatchResp>,
    /// Why the stream ended.
    pub ended_by: Option<String>,
}

impl WatchStreamRecord {
    /// The highest event revision delivered.
    pub fn last_event_revision(&self) -> Option<i64> {
        self.responses
            .iter()
            .flat_map(|r| r.events.iter())
            .map(|e| e.kv.mod_revision)
            .max()
    }
}

/// Shared, append-only sinks the tasks of a run record into.
#[derive(Debug)]
pub struct Sink<T> {
    items: Arc<Mutex<Vec<T>>>,
}

impl<T> Clone for Sink<T> {
    fn clone(&self) -> Self {
        Sink {
            items: self.items.clone(),
        }
    }
}

impl<T> Default for Sink<T> {
    fn default() -> Self {
        Sink {
            items: Arc::new(Mutex::new(Vec::new())),
        }
    }
}

impl<T: Clone> Sink<T> {
    /// An empty sink.
    pub fn new() -> Self {
        Sink {
            items: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// Appends one item.
    pub fn push(&self, item: T) {
        self.items
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(item);
    }

    /// Everything recorded so far.
    pub fn snapshot(&self) -> Vec<T> {
        self.items
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// How many items.
    pub fn len(&self) -> usize {
        self.items
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A source of values no other write of the run uses.
#[derive(Debug, Default)]
pub struct UniqueValues {
    next: AtomicU64,
}

impl UniqueValues {
    /// A fresh source.
    pub fn new() -> Self {
        Self::default()
    }

    /// The next value, tagged with its writer for readability: `c<client>-<n>`.
    pub fn next(&self, client: u64) -> String {
        format!("c{client}-{}", self.next.fetch_add(1, Ordering::Relaxed))
    }
}

impl From<&etcd_client::KeyValue> for Kv {
    /// What the client saw (keys and values are this harness's UTF-8 strings).
    fn from(kv: &etcd_client::KeyValue) -> Kv {
        Kv {
            key: String::from_utf8_lossy(kv.key()).into_owned(),
            value: String::from_utf8_lossy(kv.value()).into_owned(),
            mod_revision: kv.mod_revision(),
            create_revision: kv.create_revision(),
            version: kv.version(),
            lease: kv.lease(),
        }
    }
}
