//! [`WriteBatch`]: one redb write transaction covering a batch of applied raft entries.

use std::sync::atomic::Ordering;

use redb::{Durability, ReadableTable, WriteTransaction};

use cairn_api::etcdserverpb::{
    DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse, RangeRequest, RangeResponse,
    TxnRequest, TxnResponse,
};
use cairn_api::mvccpb::Event;

use crate::change::{Revision, Tables};
use crate::error::{Context, MvccError};
use crate::layout::{
    COUNTS, META, META_APPLIED_INDEX, META_APPLIED_TERM, META_COMPACT_REV, META_CURRENT_REV,
};
use crate::range::View;
use crate::read::CountDeltas;
use crate::store::Store;
use crate::txn;
use crate::LeaseCheck;

/// The changes of one revision, in sub-revision order, as the watch hub wants them.
#[derive(Debug, Clone, PartialEq)]
pub struct RevisionEvents {
    /// The main revision.
    pub revision: i64,
    /// The events of that revision. `prev_kv` is always filled as etcd's watch fills it for
    /// watchers that ask (others drop it): the key's version before this revision, `None` for a
    /// creation or a key that did not exist. A DELETE's `kv` carries the key and
    /// `mod_revision` only, as etcd's do.
    pub events: Vec<Event>,
}

/// One write transaction over a batch of raft entries; see [`Store::begin_write`].
///
/// Each `put`, `delete_range` or `txn` that changes something is one revision. A call that
/// fails leaves the batch exactly as before it. Dropping the batch without
/// [`commit`](WriteBatch::commit) discards it.
pub struct WriteBatch<'s> {
    store: &'s Store,
    wtx: WriteTransaction,
    revision: i64,
    compact_revision: i64,
    start_revision: i64,
    start_compact: i64,
    applied: Option<(u64, u64)>,
    events: Vec<RevisionEvents>,
    /// Live-key count changes, written at commit.
    count_deltas: CountDeltas,
    /// Set when undoing a failed request itself failed: the batch must not be committed.
    poisoned: bool,
}

impl<'s> WriteBatch<'s> {
    pub(crate) fn new(
        store: &'s Store,
        wtx: WriteTransaction,
        revision: i64,
        compact_revision: i64,
    ) -> Self {
        WriteBatch {
            store,
            wtx,
            revision,
            compact_revision,
            start_revision: revision,
            start_compact: compact_revision,
            applied: None,
            events: Vec::new(),
            count_deltas: CountDeltas::new(),
            poisoned: false,
        }
    }

    /// The current revision as this batch sees it (including its own writes). After a
    /// `put`/`delete_range`/`txn` it is the revision etcd reports in that response's header.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// The compact revision as this batch sees it (-1 if never compacted).
    pub fn compact_revision(&self) -> i64 {
        self.compact_revision
    }

    /// Runs one request as the next revision: kept if it changed something, undone on error.
    pub(crate) fn with_revision<T>(
        &mut self,
        f: impl FnOnce(&mut Revision<'_>) -> Result<T, MvccError>,
    ) -> Result<T, MvccError> {
        if self.poisoned {
            return Err(poisoned());
        }
        let mut rev = Revision::begin(
            &self.wtx,
            &self.count_deltas,
            self.revision,
            self.compact_revision,
        )?;
        match f(&mut rev) {
            Ok(out) => {
                let (events, deltas) = rev.finish();
                for (prefix, delta) in deltas {
                    *self.count_deltas.entry(prefix).or_insert(0) += delta;
                }
                if let Some(events) = events {
                    self.revision += 1;
                    self.events.push(RevisionEvents {
                        revision: self.revision,
                        events,
                    });
                }
                Ok(out)
            }
            Err(err) => {
                if let Err(undo) = rev.rollback() {
                    tracing::error!(error = %undo, "undoing a failed request failed; the write batch is discarded");
                    self.poisoned = true;
                }
                Err(err)
            }
        }
    }

    /// Runs `f` on the batch's transaction, for writes outside the keyspace (no revision, no
    /// events). `f` fails only on backend errors, which it cannot undo: the batch is then
    /// poisoned and cannot be committed, as [`MvccError::Storage`] requires.
    pub(crate) fn with_wtx<T>(
        &mut self,
        f: impl FnOnce(&WriteTransaction) -> Result<T, MvccError>,
    ) -> Result<T, MvccError> {
        if self.poisoned {
            return Err(poisoned());
        }
        let out = f(&self.wtx);
        if out.is_err() {
            self.poisoned = true;
        }
        out
    }

    /// etcd Put: a lease other than 0 must be granted in the `leases` table or accepted by
    /// `leases` (`LeaseNotFound`), `ignore_value` / `ignore_lease` need the key
    /// (`KeyNotFound`). Always one new revision.
    pub fn put(
        &mut self,
        req: &PutRequest,
        leases: &dyn LeaseCheck,
    ) -> Result<PutResponse, MvccError> {
        self.with_revision(|rev| {
            if req.lease != 0 && !rev.lease_granted(req.lease)? && !leases.lease_exists(req.lease) {
                return Err(MvccError::LeaseNotFound);
            }
            rev.put(req)
        })
    }

    /// etcd DeleteRange: a new revision when at least one key was deleted.
    pub fn delete_range(
        &mut self,
        req: &DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, MvccError> {
        self.with_revision(|rev| rev.delete_range(req))
    }

    /// etcd Txn: one new revision when any op changed something; on error nothing is written.
    /// Leases of puts are checked as in [`WriteBatch::put`].
    pub fn txn(
        &mut self,
        req: &TxnRequest,
        leases: &dyn LeaseCheck,
    ) -> Result<TxnResponse, MvccError> {
        self.with_revision(|rev| {
            let granted = crate::lease::granted_in_txn(rev, req)?;
            let known = |id: i64| granted.contains(&id) || leases.lease_exists(id);
            txn::run(rev, req, &known)
        })
    }

    /// A Range that sees this batch's writes.
    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse, MvccError> {
        if self.poisoned {
            return Err(poisoned());
        }
        let tables = Tables::open(&self.wtx)?;
        View {
            versions: &tables.versions,
            counts: &tables.counts,
            pending: [Some(&self.count_deltas), None],
            current: self.revision,
            compact: self.compact_revision,
        }
        .range(req)
    }

    /// etcd Compact: `rev` at or below the compact revision is `Compacted`, above the current
    /// revision `FutureRev`. Otherwise records `rev` as the compact revision (reads below it fail
    /// from the commit on) and leaves the removal of old versions to [`Store::compact_step`].
    pub fn compact(&mut self, rev: i64) -> Result<(), MvccError> {
        if rev <= self.compact_revision {
            return Err(MvccError::Compacted);
        }
        if rev > self.revision {
            return Err(MvccError::FutureRev);
        }
        self.compact_revision = rev;
        Ok(())
    }

    /// Records the raft index and term of the last entry this batch applies; committed in the
    /// same transaction as the data.
    pub fn set_applied_index(&mut self, index: u64, term: u64) {
        self.applied = Some((index, term));
    }

    /// Commits the batch. Non-durable unless `durable` (the WAL is the durability); a durable
    /// commit also persists every earlier non-durable one and records redb's allocator state
    /// (quick repair) so reopening after a crash is fast. Returns the events of the batch,
    /// grouped per revision in order.
    pub fn commit(mut self, durable: bool) -> Result<Vec<RevisionEvents>, MvccError> {
        if self.poisoned {
            return Err(poisoned());
        }
        {
            let mut counts = self.wtx.open_table(COUNTS).ctx("opening counts")?;
            for (prefix, delta) in std::mem::take(&mut self.count_deltas) {
                if delta == 0 {
                    continue;
                }
                let stored = counts
                    .get(prefix.as_slice())
                    .ctx("reading a count")?
                    .map_or(0, |g| g.value());
                let Some(next) = stored.checked_add_signed(delta) else {
                    return Err(MvccError::Corrupt {
                        table: "counts",
                        detail: format!("count {stored} of {prefix:?} would go {delta}"),
                    });
                };
                if next == 0 {
                    counts.remove(prefix.as_slice()).ctx("writing a count")?;
                } else {
                    counts
                        .insert(prefix.as_slice(), next)
                        .ctx("writing a count")?;
                }
            }
        }
        {
            let mut meta = self.wtx.open_table(META).ctx("opening meta")?;
            if self.revision != self.start_revision {
                meta.insert(META_CURRENT_REV, self.revision as u64)
                    .ctx("writing the current revision")?;
            }
            if self.compact_revision != self.start_compact {
                meta.insert(META_COMPACT_REV, self.compact_revision as u64)
                    .ctx("writing the compact revision")?;
            }
            if let Some((index, term)) = self.applied {
                meta.insert(META_APPLIED_INDEX, index)
                    .ctx("writing the applied index")?;
                meta.insert(META_APPLIED_TERM, term)
                    .ctx("writing the applied term")?;
            }
        }
        set_durability(&mut self.wtx, durable)?;
        crash_point!("backend_before_commit");
        self.wtx.commit().ctx("committing a write batch")?;
        crash_point!("backend_after_commit");
        let store = self.store;
        store.current.store(self.revision, Ordering::Release);
        store
            .compact
            .store(self.compact_revision, Ordering::Release);
        if let Some(applied) = self.applied {
            *store.applied.lock().unwrap_or_else(|e| e.into_inner()) = applied;
        }
        Ok(self.events)
    }
}

/// The crash of a failpoint's `return` action (feature `failpoints`, configured by the
/// server's `CAIRN_FAILPOINTS`): logs and exits at once with status 86, with no cleanup, as a
/// `kill -9` at that spot would. Failpoints of this crate: `backend_before_commit` /
/// `backend_after_commit` around the commit of a [`WriteBatch`] (an apply batch), and
/// `compact_before_commit` / `compact_after_commit` around the commit of each compaction step.
#[cfg(feature = "failpoints")]
pub(crate) fn crash_at(name: &str) -> ! {
    tracing::error!("failpoint {name}: crashing");
    std::process::exit(86)
}

/// A failpoint (fail crate) whose `return` action crashes the process ([`crash_at`]);
/// compiled to nothing without the `failpoints` feature.
macro_rules! crash_point {
    ($name:literal) => {
        fail::fail_point!($name, |_| $crate::batch::crash_at($name))
    };
}
pub(crate) use crash_point;

/// Durable commits use quick repair; non-durable ones are kept in memory until the next durable.
pub(crate) fn set_durability(wtx: &mut WriteTransaction, durable: bool) -> Result<(), MvccError> {
    if durable {
        wtx.set_durability(Durability::Immediate)
            .ctx("setting durability")?;
        wtx.set_quick_repair(true);
    } else {
        wtx.set_durability(Durability::None)
            .ctx("setting durability")?;
    }
    Ok(())
}

fn poisoned() -> MvccError {
    MvccError::Storage {
        context: "using a write batch whose failed request could not be undone",
        source: Box::new(redb::Error::TransactionPoisoned),
    }
}

#[cfg(test)]
mod tests {
    use cairn_api::mvccpb::event::EventType;
    use cairn_api::mvccpb::KeyValue;

    use crate::testutil::*;
    use crate::MvccError;

    fn kv(k: &str, v: &str, create: i64, m: i64, version: i64, lease: i64) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: v.into(),
            create_revision: create,
            mod_revision: m,
            version,
            lease,
        }
    }

    #[test]
    fn revisions_and_versions() {
        let (_d, s) = store();
        assert_eq!(s.current_revision(), 1);
        assert_eq!(s.compact_revision(), -1);
        assert_eq!(put(&s, "a", "1").header.unwrap().revision, 2);
        put(&s, "a", "2");
        assert_eq!(get(&s, "a"), Some(kv("a", "2", 2, 3, 2, 0)));
        // Deleting nothing does not bump the revision.
        let r = del(&s, "zz", "");
        assert_eq!((r.deleted, r.header.unwrap().revision), (0, 3));
        assert_eq!(s.current_revision(), 3);
        let r = del(&s, "a", "");
        assert_eq!((r.deleted, r.header.unwrap().revision), (1, 4));
        assert_eq!(get(&s, "a"), None);
        // Versions count from the last creation.
        put(&s, "a", "3");
        assert_eq!(get(&s, "a"), Some(kv("a", "3", 5, 5, 1, 0)));
        // The old generation is still readable at its revisions.
        let mut req = range_req("a", "");
        req.revision = 3;
        assert_eq!(s.range(&req).unwrap().kvs, vec![kv("a", "2", 2, 3, 2, 0)]);
        req.revision = 4;
        assert!(s.range(&req).unwrap().kvs.is_empty());
    }

    #[test]
    fn put_options() {
        let (_d, s) = store();
        let mut req = put_req("a", "1");
        req.lease = 3;
        try_put(&s, &req).unwrap();
        // ignore_value keeps the value, takes the new lease.
        let mut req = put_req("a", "");
        req.ignore_value = true;
        req.lease = 4;
        req.prev_kv = true;
        let r = try_put(&s, &req).unwrap();
        assert_eq!(r.prev_kv, Some(kv("a", "1", 2, 2, 1, 3)));
        assert_eq!(get(&s, "a"), Some(kv("a", "1", 2, 3, 2, 4)));
        // ignore_lease keeps the lease, takes the new value.
        let mut req = put_req("a", "2");
        req.ignore_lease = true;
        let r = try_put(&s, &req).unwrap();
        assert_eq!(r.prev_kv, None);
        assert_eq!(get(&s, "a"), Some(kv("a", "2", 2, 4, 3, 4)));
        // A plain put drops the lease.
        put(&s, "a", "3");
        assert_eq!(get(&s, "a").unwrap().lease, 0);
        // Errors write nothing.
        let mut req = put_req("b", "");
        req.ignore_value = true;
        assert!(matches!(try_put(&s, &req), Err(MvccError::KeyNotFound)));
        req.ignore_value = false;
        req.ignore_lease = true;
        assert!(matches!(try_put(&s, &req), Err(MvccError::KeyNotFound)));
        let mut req = put_req("a", "x");
        req.lease = 77;
        assert!(matches!(try_put(&s, &req), Err(MvccError::LeaseNotFound)));
        // The lease is checked before the key, as etcd does.
        req.ignore_value = true;
        req.key = "missing".into();
        assert!(matches!(try_put(&s, &req), Err(MvccError::LeaseNotFound)));
        assert_eq!(s.current_revision(), 5);
        assert_eq!(get(&s, "b"), None);
    }

    #[test]
    fn delete_ranges() {
        let (_d, s) = store();
        for k in ["a", "b", "c", "d"] {
            put(&s, k, k);
        }
        let mut b = s.begin_write().unwrap();
        let mut req = del_req("b", "d");
        req.prev_kv = true;
        let r = b.delete_range(&req).unwrap();
        assert_eq!(r.deleted, 2);
        assert_eq!(
            r.prev_kvs,
            vec![kv("b", "b", 3, 3, 1, 0), kv("c", "c", 4, 4, 1, 0)]
        );
        assert_eq!(r.header.unwrap().revision, 6);
        let r = b.delete_range(&del_req("c", "\0")).unwrap();
        assert_eq!((r.deleted, r.prev_kvs.len()), (1, 0));
        let events = b.commit(false).unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].revision, 6);
        assert_eq!(events[0].events.len(), 2);
        let e = &events[0].events[1];
        assert_eq!(e.r#type, EventType::Delete as i32);
        assert_eq!(
            e.kv,
            Some(KeyValue {
                key: "c".into(),
                mod_revision: 6,
                ..KeyValue::default()
            })
        );
        assert_eq!(e.prev_kv, Some(kv("c", "c", 4, 4, 1, 0)));
        assert_eq!(events[1].revision, 7);
        assert_eq!(keys(&s.range(&range_req("\0", "\0")).unwrap()), vec!["a"]);
    }

    #[test]
    fn batch_reads_its_writes_and_commits_atomically() {
        let (_d, s) = store();
        put(&s, "a", "1");
        let mut b = s.begin_write().unwrap();
        let mut req = put_req("a", "2");
        req.prev_kv = true;
        let r = b.put(&req, &Leases).unwrap();
        assert_eq!(r.prev_kv.unwrap().value, b"1");
        b.put(&put_req("b", "1"), &Leases).unwrap();
        assert_eq!(b.revision(), 4);
        assert_eq!(b.range(&range_req("a", "c")).unwrap().kvs.len(), 2);
        // Readers do not see the batch until it commits.
        assert_eq!(get(&s, "a").unwrap().value, b"1");
        assert_eq!(s.current_revision(), 2);
        let events = b.commit(false).unwrap();
        assert_eq!(
            events.iter().map(|e| e.revision).collect::<Vec<_>>(),
            vec![3, 4]
        );
        let e = &events[0].events[0];
        assert_eq!(e.r#type, EventType::Put as i32);
        assert_eq!(e.kv, Some(kv("a", "2", 2, 3, 2, 0)));
        assert_eq!(e.prev_kv, Some(kv("a", "1", 2, 2, 1, 0)));
        assert_eq!(events[1].events[0].prev_kv, None);
        assert_eq!(s.current_revision(), 4);
        assert_eq!(get(&s, "a").unwrap().value, b"2");
        // A dropped batch is discarded.
        let mut b = s.begin_write().unwrap();
        b.put(&put_req("c", "1"), &Leases).unwrap();
        drop(b);
        assert_eq!(get(&s, "c"), None);
        assert_eq!(s.begin_write().unwrap().revision(), 4);
    }

    #[test]
    fn compact_revision_rules() {
        let (_d, s) = store();
        // As in etcd, a fresh store (compact revision -1) accepts Compact(0).
        assert!(matches!(compact(&s, 2), Err(MvccError::FutureRev)));
        compact(&s, 0).unwrap();
        assert_eq!(s.compact_revision(), 0);
        assert!(matches!(compact(&s, 0), Err(MvccError::Compacted)));
        assert!(matches!(compact(&s, -3), Err(MvccError::Compacted)));
        put(&s, "a", "1");
        put(&s, "a", "2");
        compact(&s, 2).unwrap();
        assert!(matches!(compact(&s, 2), Err(MvccError::Compacted)));
        let mut req = range_req("a", "");
        req.revision = 1;
        assert!(matches!(s.range(&req), Err(MvccError::Compacted)));
        req.revision = 2;
        assert_eq!(s.range(&req).unwrap().kvs[0].value, b"1");
        compact(&s, 3).unwrap();
        assert_eq!(s.compact_revision(), 3);
    }
}
