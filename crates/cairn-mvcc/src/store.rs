//! [`Store`]: opening the backend, reads from snapshots, and the entry points for writers.

use std::collections::HashSet;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use redb::{
    Database, Key, ReadTransaction, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    TableDefinition, TableHandle, Value, WriteTransaction,
};

use cairn_api::etcdserverpb::{
    DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse, RangeRequest, RangeResponse,
    TxnRequest, TxnResponse,
};
use cairn_api::mvccpb::KeyValue;

use crate::batch::{set_durability, WriteBatch};
use crate::error::{Context, MvccError};
use crate::layout::{
    visit_tables, TableVisitor, COUNTS, META, META_APPLIED_INDEX, META_APPLIED_TERM,
    META_COMPACT_REV, META_CURRENT_REV, VERSIONS,
};
use crate::range::View;
use crate::read::{collect, get, CountsTable, Span, VersionsTable};
use crate::txn::{self, TxnTarget};
use crate::LeaseCheck;

/// Options for [`Store::open`].
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// redb's page cache, in bytes (redb's own default, 1 GiB, is too big for us).
    pub cache_size_bytes: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            cache_size_bytes: 256 * 1024 * 1024,
        }
    }
}

/// The MVCC keyspace on redb. `Send + Sync`: reads run concurrently on snapshots; one writer
/// (the apply task) at a time holds a [`WriteBatch`].
pub struct Store {
    /// The open database. Swapped whole by [`Store::replace_with`]; every operation clones the
    /// `Arc` once and keeps it for as long as its transaction lives, so an operation that began
    /// before a swap finishes on the database it began on, which closes when the last such
    /// operation ends.
    db: RwLock<Arc<Database>>,
    path: PathBuf,
    /// redb's page cache for this store, kept for the database [`Store::replace_with`] opens.
    pub(crate) cache_size_bytes: usize,
    pub(crate) current: AtomicI64,
    pub(crate) compact: AtomicI64,
    pub(crate) applied: Mutex<(u64, u64)>,
    pub(crate) in_use: AtomicU64,
}

/// A read transaction with the database it reads: holding the `Arc` keeps that database open
/// even if [`Store::replace_with`] swaps in another one meanwhile (redb fails the reads of a
/// transaction whose database was closed).
pub(crate) struct ReadTxn {
    // Declared first so it is dropped before the database it reads.
    rtx: ReadTransaction,
    _db: Arc<Database>,
}

impl Deref for ReadTxn {
    type Target = ReadTransaction;
    fn deref(&self) -> &ReadTransaction {
        &self.rtx
    }
}

/// Revisions and marks as stored in `meta`.
pub(crate) struct Marks {
    pub current: i64,
    pub compact: i64,
    pub applied: (u64, u64),
}

pub(crate) fn read_marks<T: ReadableTable<&'static str, u64>>(
    meta: &T,
) -> Result<Marks, MvccError> {
    let get = |name: &str| -> Result<Option<u64>, MvccError> {
        Ok(meta.get(name).ctx("reading meta")?.map(|g| g.value()))
    };
    Ok(Marks {
        current: get(META_CURRENT_REV)?.map_or(1, |v| v as i64),
        compact: get(META_COMPACT_REV)?.map_or(-1, |v| v as i64),
        applied: (
            get(META_APPLIED_INDEX)?.unwrap_or(0),
            get(META_APPLIED_TERM)?.unwrap_or(0),
        ),
    })
}

impl Store {
    /// Opens (or creates) the store at `path` (a file).
    pub fn open(path: &Path, opts: StoreOptions) -> Result<Store, MvccError> {
        let db = Database::builder()
            .set_cache_size(opts.cache_size_bytes)
            .create(path)
            .ctx("opening the database")?;
        let mut wtx = db.begin_write().ctx("initialising the database")?;
        // A fresh file, or one written before some table existed, gets the missing tables now.
        let tables_missing = create_tables(&wtx)?;
        let (marks, fresh) = {
            let mut meta = wtx.open_table(META).ctx("opening meta")?;
            let fresh = meta.get(META_CURRENT_REV).ctx("reading meta")?.is_none();
            if fresh {
                meta.insert(META_CURRENT_REV, 1).ctx("initialising meta")?;
            }
            (read_marks(&meta)?, fresh)
        };
        if fresh || tables_missing {
            set_durability(&mut wtx, true)?;
            wtx.commit().ctx("initialising the database")?;
        } else {
            wtx.abort().ctx("opening the database")?;
        }
        let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        tracing::info!(
            path = %path.display(),
            current_revision = marks.current,
            compact_revision = marks.compact,
            applied_index = marks.applied.0,
            "opened the mvcc store"
        );
        Ok(Store {
            db: RwLock::new(Arc::new(db)),
            path: path.to_path_buf(),
            cache_size_bytes: opts.cache_size_bytes,
            current: AtomicI64::new(marks.current),
            compact: AtomicI64::new(marks.compact),
            applied: Mutex::new(marks.applied),
            in_use: AtomicU64::new(size),
        })
    }

    /// The current revision (1 on a fresh store), as of the last commit.
    pub fn current_revision(&self) -> i64 {
        self.current.load(Ordering::Acquire)
    }

    /// The compact revision, as of the last commit: -1 if never compacted, as etcd reports it
    /// (e.g. in HashKV). Reads below it fail with `Compacted`.
    pub fn compact_revision(&self) -> i64 {
        self.compact.load(Ordering::Acquire)
    }

    /// The raft index and term of the last applied entry, stored with the data it covers
    /// (0, 0 on a fresh store).
    pub fn applied_index(&self) -> (u64, u64) {
        *self.applied.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The database in use now. Keep the `Arc` for as long as a transaction begun on it lives.
    pub(crate) fn db(&self) -> Arc<Database> {
        self.db.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The path of the database file.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Makes `db` the database every later operation uses; returns the one it replaces.
    pub(crate) fn swap_db(&self, db: Database) -> Arc<Database> {
        let mut slot = self.db.write().unwrap_or_else(|e| e.into_inner());
        std::mem::replace(&mut *slot, Arc::new(db))
    }

    /// A read transaction on the latest committed state.
    pub(crate) fn read_txn(&self) -> Result<ReadTxn, MvccError> {
        let db = self.db();
        let rtx = db.begin_read().ctx("beginning a read")?;
        Ok(ReadTxn { rtx, _db: db })
    }

    /// Runs `f` on a consistent snapshot: its tables and the revisions stored with them.
    fn with_view<T>(
        &self,
        f: impl FnOnce(
            &View<
                '_,
                redb::ReadOnlyTable<(&'static [u8], u64), &'static [u8]>,
                redb::ReadOnlyTable<&'static [u8], u64>,
            >,
        ) -> Result<T, MvccError>,
    ) -> Result<T, MvccError> {
        let rtx = self.read_txn()?;
        let marks = read_marks(&rtx.open_table(META).ctx("opening meta")?)?;
        let versions = rtx.open_table(VERSIONS).ctx("opening versions")?;
        let counts = rtx.open_table(COUNTS).ctx("opening counts")?;
        f(&View {
            versions: &versions,
            counts: &counts,
            pending: [None, None],
            current: marks.current,
            compact: marks.compact,
        })
    }

    /// etcd Range with every option, on the latest committed snapshot. The response header
    /// carries only the revision (the snapshot's current revision, as etcd reports it).
    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse, MvccError> {
        self.with_view(|view| view.range(req))
    }

    /// A read-only Txn (every top-level op a Range, see [`crate::validate::is_txn_read_only`]),
    /// served from a snapshot as etcd serves it without raft. Other txns: `NotReadOnly`.
    pub fn txn_read(&self, req: &TxnRequest) -> Result<TxnResponse, MvccError> {
        if !txn::is_read_only(req) {
            return Err(MvccError::NotReadOnly);
        }
        struct NoLeases;
        impl LeaseCheck for NoLeases {
            fn lease_exists(&self, _: i64) -> bool {
                false
            }
        }
        self.with_view(|view| txn::run(&mut ReadTarget(view), req, &NoLeases))
    }

    /// The latest live version of `key` at revision `at` (≤ 0: current), or `None`. For the
    /// server's own lookups (leases, auth); errors as Range.
    pub fn get(&self, key: &[u8], at: i64) -> Result<Option<KeyValue>, MvccError> {
        self.with_view(|view| {
            let rev = crate::range::read_revision(at, view.current, view.compact)?;
            get(view.versions, key, rev)
        })
    }

    /// Begins the batch's write transaction. Waits while another writer (a batch or a
    /// compaction step) is running.
    pub fn begin_write(&self) -> Result<WriteBatch<'_>, MvccError> {
        // redb keeps a database with a live write transaction open until the transaction ends,
        // so the batch need not hold the `Arc` (and [`Store::replace_with`] is never called
        // while a batch is open).
        let wtx = self.db().begin_write().ctx("beginning a write")?;
        let marks = read_marks(&wtx.open_table(META).ctx("opening meta")?)?;
        Ok(WriteBatch::new(self, wtx, marks.current, marks.compact))
    }

    /// The database file's size in bytes.
    pub fn db_size(&self) -> u64 {
        std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0)
    }

    /// Bytes the database's tables occupy, as of the last [`Store::refresh_size_in_use`] (run
    /// when a compaction finishes); the file size until the first refresh.
    pub fn db_size_in_use(&self) -> u64 {
        self.in_use.load(Ordering::Relaxed).min(self.db_size())
    }

    /// Recomputes [`Store::db_size_in_use`] by walking the tables of a snapshot: it reads every
    /// page, so call it now and then, not per request. Never blocks writers.
    pub fn refresh_size_in_use(&self) -> Result<u64, MvccError> {
        struct Measure<'r> {
            rtx: &'r ReadTransaction,
            bytes: u64,
        }
        impl TableVisitor for Measure<'_> {
            fn visit<K: Key + 'static, V: Value + 'static>(
                &mut self,
                table: TableDefinition<'static, K, V>,
            ) -> Result<(), MvccError> {
                let stats = self
                    .rtx
                    .open_table(table)
                    .ctx("opening a table")?
                    .stats()
                    .ctx("measuring a table")?;
                self.bytes +=
                    stats.stored_bytes() + stats.metadata_bytes() + stats.fragmented_bytes();
                Ok(())
            }
        }
        let rtx = self.read_txn()?;
        let mut measure = Measure {
            rtx: &rtx,
            bytes: 0,
        };
        visit_tables(&mut measure)?;
        self.in_use.store(measure.bytes, Ordering::Relaxed);
        Ok(measure.bytes)
    }

    /// Makes everything committed so far durable now (also used on shutdown). Waits while a
    /// [`WriteBatch`] is open.
    pub fn sync(&self) -> Result<(), MvccError> {
        let mut wtx = self.db().begin_write().ctx("beginning a sync")?;
        set_durability(&mut wtx, true)?;
        wtx.commit().ctx("syncing")
    }
}

/// Opens every table of the layout in `wtx`, creating the missing ones. True when some were
/// missing (a fresh file, or one written before the table existed): the transaction must then
/// be committed.
fn create_tables(wtx: &WriteTransaction) -> Result<bool, MvccError> {
    struct Create<'w> {
        wtx: &'w WriteTransaction,
        existing: HashSet<String>,
        missing: bool,
    }
    impl TableVisitor for Create<'_> {
        fn visit<K: Key + 'static, V: Value + 'static>(
            &mut self,
            table: TableDefinition<'static, K, V>,
        ) -> Result<(), MvccError> {
            self.missing |= !self.existing.contains(table.name());
            self.wtx.open_table(table).ctx("opening a table")?;
            Ok(())
        }
    }
    let existing = wtx
        .list_tables()
        .ctx("listing tables")?
        .map(|t| t.name().to_string())
        .collect();
    let mut create = Create {
        wtx,
        existing,
        missing: false,
    };
    visit_tables(&mut create)?;
    Ok(create.missing)
}

/// A txn target on a read snapshot; only read-only txns reach it.
struct ReadTarget<'v, 't, V, C>(&'v View<'t, V, C>);

impl<V: VersionsTable, C: CountsTable> TxnTarget for ReadTarget<'_, '_, V, C> {
    fn base(&self) -> i64 {
        self.0.current
    }
    fn view_rev(&self) -> i64 {
        self.0.current
    }
    fn compact(&self) -> i64 {
        self.0.compact
    }
    fn get_before(&self, key: &[u8]) -> Result<Option<KeyValue>, MvccError> {
        get(self.0.versions, key, self.0.current)
    }
    fn collect_before(&self, span: Span<'_>) -> Result<Vec<KeyValue>, MvccError> {
        collect(self.0.versions, span, self.0.current)
    }
    fn range(&self, req: &RangeRequest) -> Result<RangeResponse, MvccError> {
        self.0.range(req)
    }
    fn put(&mut self, _: &PutRequest) -> Result<PutResponse, MvccError> {
        Err(MvccError::NotReadOnly)
    }
    fn delete_range(&mut self, _: &DeleteRangeRequest) -> Result<DeleteRangeResponse, MvccError> {
        Err(MvccError::NotReadOnly)
    }
}

#[cfg(test)]
mod tests {
    use crate::testutil::*;
    use crate::{Store, StoreOptions};

    fn commit_put(s: &Store, k: &str, index: u64, durable: bool) {
        let mut b = s.begin_write().unwrap();
        b.put(&put_req(k, k), &Leases).unwrap();
        b.set_applied_index(index, 2);
        b.commit(durable).unwrap();
    }

    /// Opens a copy of the file taken now: what a crash at this moment would leave.
    fn crash_copy(s: &Store, dir: &tempfile::TempDir, name: &str) -> Store {
        let copy = dir.path().join(name);
        std::fs::copy(&s.path, &copy).unwrap();
        Store::open(&copy, StoreOptions::default()).unwrap()
    }

    #[test]
    fn store_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Store>();
    }

    #[test]
    fn fresh_store() {
        let (_d, s) = store();
        assert_eq!(
            (
                s.current_revision(),
                s.compact_revision(),
                s.applied_index()
            ),
            (1, -1, (0, 0))
        );
        let r = s.range(&range_req("a", "")).unwrap();
        assert_eq!((r.header.unwrap().revision, r.count), (1, 0));
        assert!(s.db_size() > 0);
    }

    #[test]
    fn durable_commits_survive_a_crash_with_their_applied_index() {
        let (dir, s) = store();
        commit_put(&s, "a", 10, true);
        commit_put(&s, "b", 11, false);
        assert_eq!(s.applied_index(), (11, 2));
        let crashed = crash_copy(&s, &dir, "crash1");
        assert_eq!(crashed.applied_index(), (10, 2));
        assert_eq!(crashed.current_revision(), 2);
        assert!(get(&crashed, "a").is_some());
        assert!(get(&crashed, "b").is_none());
        drop(crashed);
        // sync makes everything durable.
        s.sync().unwrap();
        let crashed = crash_copy(&s, &dir, "crash2");
        assert_eq!(
            (crashed.applied_index(), crashed.current_revision()),
            ((11, 2), 3)
        );
        assert!(get(&crashed, "b").is_some());
    }

    #[test]
    fn reopen_keeps_everything_and_pending_compaction() {
        let (dir, s) = store();
        commit_put(&s, "a", 1, false);
        commit_put(&s, "a", 2, false);
        commit_put(&s, "b", 3, false);
        compact(&s, 3).unwrap();
        drop(s); // a clean close persists non-durable commits
        let s = open_at(&dir);
        assert_eq!(
            (
                s.current_revision(),
                s.compact_revision(),
                s.applied_index()
            ),
            (4, 3, (3, 2))
        );
        let mut r = range_req("a", "");
        r.revision = 2;
        assert!(matches!(s.range(&r), Err(crate::MvccError::Compacted)));
        r.revision = 3;
        assert_eq!(s.range(&r).unwrap().kvs[0].version, 2);
        assert!(s.compact_step(10).unwrap());
        assert_eq!(s.range(&r).unwrap().kvs[0].version, 2);
        assert_eq!(s.get(b"b", 0).unwrap().unwrap().mod_revision, 4);
        assert!(matches!(s.get(b"b", 1), Err(crate::MvccError::Compacted)));
    }
}
