//! [`Store`]: opening the backend, reads from snapshots, and the entry points for writers.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;

use redb::{Database, ReadTransaction, ReadableDatabase, ReadableTable, ReadableTableMetadata};

use cairn_api::etcdserverpb::{
    DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse, RangeRequest, RangeResponse,
    TxnRequest, TxnResponse,
};
use cairn_api::mvccpb::KeyValue;

use crate::batch::{set_durability, WriteBatch};
use crate::error::{Context, MvccError};
use crate::layout::{
    COUNTS, HISTORY, META, META_APPLIED_INDEX, META_APPLIED_TERM, META_COMPACT_REV,
    META_CURRENT_REV, VERSIONS,
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
    db: Database,
    path: PathBuf,
    pub(crate) current: AtomicI64,
    pub(crate) compact: AtomicI64,
    pub(crate) applied: Mutex<(u64, u64)>,
    pub(crate) in_use: AtomicU64,
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
        // Files written before leases existed get the lease tables now.
        let lease_tables_missing = crate::lease::tables_missing(&wtx)?;
        let (marks, fresh) = {
            let mut meta = wtx.open_table(META).ctx("opening meta")?;
            wtx.open_table(VERSIONS).ctx("opening versions")?;
            wtx.open_table(HISTORY).ctx("opening history")?;
            wtx.open_table(COUNTS).ctx("opening counts")?;
            wtx.open_table(crate::lease::LEASES).ctx("opening leases")?;
            wtx.open_table(crate::lease::LEASE_KEYS)
                .ctx("opening lease_keys")?;
            let fresh = meta.get(META_CURRENT_REV).ctx("reading meta")?.is_none();
            if fresh {
                meta.insert(META_CURRENT_REV, 1).ctx("initialising meta")?;
            }
            (read_marks(&meta)?, fresh)
        };
        if fresh || lease_tables_missing {
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
            db,
            path: path.to_path_buf(),
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

    pub(crate) fn db(&self) -> &Database {
        &self.db
    }

    fn snapshot(&self) -> Result<ReadTransaction, MvccError> {
        self.db.begin_read().ctx("beginning a read")
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
        let rtx = self.snapshot()?;
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
        let wtx = self.db.begin_write().ctx("beginning a write")?;
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
        let rtx = self.snapshot()?;
        let mut bytes = 0u64;
        let mut add = |stats: redb::TableStats| {
            bytes += stats.stored_bytes() + stats.metadata_bytes() + stats.fragmented_bytes();
        };
        add(rtx
            .open_table(VERSIONS)
            .ctx("opening versions")?
            .stats()
            .ctx("measuring versions")?);
        add(rtx
            .open_table(HISTORY)
            .ctx("opening history")?
            .stats()
            .ctx("measuring history")?);
        add(rtx
            .open_table(COUNTS)
            .ctx("opening counts")?
            .stats()
            .ctx("measuring counts")?);
        add(rtx
            .open_table(META)
            .ctx("opening meta")?
            .stats()
            .ctx("measuring meta")?);
        bytes += crate::lease::stored_bytes(&rtx)?;
        self.in_use.store(bytes, Ordering::Relaxed);
        Ok(bytes)
    }

    /// Makes everything committed so far durable now (also used on shutdown). Waits while a
    /// [`WriteBatch`] is open.
    pub fn sync(&self) -> Result<(), MvccError> {
        let mut wtx = self.db.begin_write().ctx("beginning a sync")?;
        set_durability(&mut wtx, true)?;
        wtx.commit().ctx("syncing")
    }
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
