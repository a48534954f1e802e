//! Whole-backend snapshots: a consistent copy of the store in a new file ([`Store::copy_to`]),
//! and replacing the store's contents with such a file ([`Store::replace_with`]), for raft
//! snapshots sent between members.
//!
//! A copy is a plain redb file holding every table, taken from one read transaction, so it is
//! the state of one commit: the data with the applied index stored beside it. `meta` is written
//! last, in the final commit: redb may fall back to an earlier commit of a damaged file, and
//! every earlier commit of a copy lacks `meta`, so a damaged copy is refused rather than
//! installed half-written.

use std::fs::{File, OpenOptions};
use std::path::Path;
use std::sync::atomic::Ordering;

use redb::backends::FileBackend;
use redb::{
    Database, Key, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition, TableHandle,
    Value, WriteTransaction,
};

use crate::batch::set_durability;
use crate::error::{Context, MvccError};
use crate::layout::{visit_tables, TableVisitor, META, META_CURRENT_REV};
use crate::store::{read_marks, Marks, Store};

/// What a copy made by [`Store::copy_to`] holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// The raft index of the last entry applied to the copied state.
    pub applied_index: u64,
    /// The raft term of that entry.
    pub applied_term: u64,
    /// The current MVCC revision of the copied state.
    pub revision: i64,
}

/// Rows copied per write transaction of a copy, in key and value bytes: bounds the size of one
/// transaction whatever the size of the store. (Tiny in tests, so they copy in many batches.)
#[cfg(not(test))]
const COPY_BATCH_BYTES: usize = 16 << 20;
#[cfg(test)]
const COPY_BATCH_BYTES: usize = 1024;
/// Counted per row besides its bytes, so tables of tiny rows are batched too.
const COPY_ROW_OVERHEAD: usize = 32;
/// redb's page cache for the file being written by a copy.
const COPY_CACHE_BYTES: usize = 32 << 20;

impl Store {
    /// Copies the whole store (every table, the applied index with it) into a new redb file at
    /// `dest`, which must not exist, from one read transaction: the copy is the state of one
    /// commit, and the writer keeps committing meanwhile (a long copy only keeps redb from
    /// reusing the pages those commits free until it ends). The copy is committed durably and
    /// fsynced with its directory entry; on failure the partial file is removed.
    pub fn copy_to(&self, dest: &Path) -> Result<SnapshotInfo, MvccError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(dest)
            .ctx("creating the snapshot file")?;
        match self.copy_into(file, dest) {
            Ok(info) => {
                tracing::info!(
                    dest = %dest.display(),
                    applied_index = info.applied_index,
                    revision = info.revision,
                    "copied the mvcc store"
                );
                Ok(info)
            }
            Err(err) => {
                if let Err(rm) = std::fs::remove_file(dest) {
                    tracing::warn!(dest = %dest.display(), error = %rm, "removing a failed copy");
                }
                Err(err)
            }
        }
    }

    fn copy_into(&self, file: File, dest: &Path) -> Result<SnapshotInfo, MvccError> {
        let rtx = self.read_txn()?;
        let marks = read_marks(&rtx.open_table(META).ctx("opening meta")?)?;
        let db = Database::builder()
            .set_cache_size(COPY_CACHE_BYTES)
            .create_with_backend(FileBackend::new(file).ctx("creating the snapshot database")?)
            .ctx("creating the snapshot database")?;
        let mut copy = Copier {
            src: &rtx,
            dest: &db,
            wtx: None,
            pending: 0,
        };
        visit_tables(&mut copy)?;
        // `meta` last, in the final (durable) commit: see the module documentation.
        let mut wtx = copy.take_wtx()?;
        copy_rows(&rtx, &wtx, META)?;
        set_durability(&mut wtx, true)?;
        wtx.commit().ctx("committing the snapshot")?;
        db.close().ctx("closing the snapshot")?;
        File::open(dest)
            .and_then(|f| f.sync_all())
            .ctx("syncing the snapshot file")?;
        sync_parent_dir(dest).ctx("syncing the snapshot's directory")?;
        Ok(SnapshotInfo {
            applied_index: marks.applied.0,
            applied_term: marks.applied.1,
            revision: marks.current,
        })
    }

    /// Replaces the store's contents with the database in `snapshot_file` (made by
    /// [`Store::copy_to`], here or on another member), which must be on the store's file
    /// system. The file is checked first (it opens as a redb database, every page's checksum
    /// verifies, every table of the store is there, `meta` holds a revision); if it does not
    /// pass, a [`MvccError::Corrupt`] naming it is returned and the store is unchanged. Then it
    /// is renamed over the store's file (atomic; the directory is fsynced) and every later read
    /// and write uses it, with the revisions, applied index and size in use reloaded. The file
    /// is gone from `snapshot_file` afterwards.
    ///
    /// Reads that began before the swap finish on the old contents. The caller (the single
    /// writer) must not hold a [`crate::WriteBatch`] or run [`Store::compact_step`] meanwhile.
    /// A physical compaction in progress in the new contents continues from its own cursor.
    pub fn replace_with(&self, snapshot_file: &Path) -> Result<(), MvccError> {
        let (db, marks) = open_snapshot(snapshot_file, self.cache_size_bytes)?;
        // Opened before the rename: redb locks the open file, which stays the same file once
        // renamed, and a file that cannot be opened never replaces the store's.
        std::fs::rename(snapshot_file, self.path()).ctx("moving the snapshot over the store")?;
        // The store's path names the new file from here on: swap before anything can fail, so
        // the store never writes to the old, unlinked file.
        let old = self.swap_db(db);
        self.current.store(marks.current, Ordering::Release);
        self.compact.store(marks.compact, Ordering::Release);
        *self.applied.lock().unwrap_or_else(|e| e.into_inner()) = marks.applied;
        // Closes the old database unless a read still holds it (it closes when that ends).
        drop(old);
        tracing::info!(
            snapshot = %snapshot_file.display(),
            current_revision = marks.current,
            compact_revision = marks.compact,
            applied_index = marks.applied.0,
            "replaced the mvcc store with a snapshot"
        );
        if let Err(err) = self.refresh_size_in_use() {
            tracing::warn!(error = %err, "measuring the database after a snapshot failed");
        }
        sync_parent_dir(self.path()).ctx("syncing the store's directory")
    }
}

/// Opens and checks a snapshot file; its marks.
fn open_snapshot(path: &Path, cache_size_bytes: usize) -> Result<(Database, Marks), MvccError> {
    let invalid = |why: String| MvccError::Corrupt {
        table: "snapshot file",
        detail: format!("{}: {why}", path.display()),
    };
    // Received over the network: make its bytes durable before they become the store.
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| invalid(format!("cannot be read: {e}")))?;
    let db = Database::builder()
        .set_cache_size(cache_size_bytes)
        // A received file is not trusted: verify every page rather than risk a panic later.
        .set_check_integrity_on_open(true)
        .open(path)
        .map_err(|e| invalid(format!("is not a usable redb database: {e}")))?;
    let rtx = db
        .begin_read()
        .map_err(|e| invalid(format!("cannot be read: {e}")))?;
    struct Check<'r> {
        rtx: &'r ReadTransaction,
        error: Option<String>,
    }
    impl TableVisitor for Check<'_> {
        fn visit<K: Key + 'static, V: Value + 'static>(
            &mut self,
            table: TableDefinition<'static, K, V>,
        ) -> Result<(), MvccError> {
            if let (None, Err(e)) = (&self.error, self.rtx.open_table(table)) {
                self.error = Some(format!("table {}: {e}", table.name()));
            }
            Ok(())
        }
    }
    let mut check = Check {
        rtx: &rtx,
        error: None,
    };
    visit_tables(&mut check)?;
    if let Some(why) = check.error {
        return Err(invalid(why));
    }
    let meta = rtx.open_table(META).ctx("opening meta")?;
    if meta.get(META_CURRENT_REV).ctx("reading meta")?.is_none() {
        return Err(invalid("meta holds no revision".to_string()));
    }
    let marks = read_marks(&meta)?;
    drop(meta);
    drop(rtx);
    Ok((db, marks))
}

/// Copies tables from a read transaction into another database, in write transactions of
/// bounded size.
struct Copier<'a> {
    src: &'a ReadTransaction,
    dest: &'a Database,
    /// The open transaction, if any.
    wtx: Option<WriteTransaction>,
    /// Bytes written in it.
    pending: usize,
}

impl Copier<'_> {
    fn take_wtx(&mut self) -> Result<WriteTransaction, MvccError> {
        match self.wtx.take() {
            Some(wtx) => Ok(wtx),
            None => {
                self.pending = 0;
                self.dest.begin_write().ctx("beginning a snapshot write")
            }
        }
    }
}

impl TableVisitor for Copier<'_> {
    fn visit<K: Key + 'static, V: Value + 'static>(
        &mut self,
        table: TableDefinition<'static, K, V>,
    ) -> Result<(), MvccError> {
        if table.name() == META.name() {
            return Ok(()); // copied last
        }
        let src = self.src.open_table(table).ctx("opening a table to copy")?;
        let mut rows = src.iter().ctx("reading a table to copy")?;
        loop {
            let mut wtx = self.take_wtx()?;
            // Creates the table even when it is empty.
            let budget = COPY_BATCH_BYTES.saturating_sub(self.pending);
            let (written, more) = copy_rows_from(&mut rows, &wtx, table, budget)?;
            self.pending += written;
            if !more {
                self.wtx = Some(wtx);
                return Ok(());
            }
            // Not durable: only the final commit of the copy needs to be, and it makes these
            // durable too.
            set_durability(&mut wtx, false)?;
            wtx.commit().ctx("committing part of a snapshot")?;
        }
    }
}

/// Copies every row of `table` from `src` into `wtx`, in one go.
fn copy_rows<K: Key + 'static, V: Value + 'static>(
    src: &ReadTransaction,
    wtx: &WriteTransaction,
    table: TableDefinition<'static, K, V>,
) -> Result<(), MvccError> {
    let from = src.open_table(table).ctx("opening a table to copy")?;
    let mut rows = from.iter().ctx("reading a table to copy")?;
    copy_rows_from(&mut rows, wtx, table, usize::MAX)?;
    Ok(())
}

/// Copies rows from `rows` into `table` in `wtx` until about `budget` bytes are written;
/// returns the bytes written and whether rows are left.
fn copy_rows_from<K: Key + 'static, V: Value + 'static>(
    rows: &mut redb::Range<'_, K, V>,
    wtx: &WriteTransaction,
    table: TableDefinition<'static, K, V>,
    budget: usize,
) -> Result<(usize, bool), MvccError> {
    let mut dest = wtx
        .open_table(table)
        .ctx("creating a table in the snapshot")?;
    let mut written = 0usize;
    for row in rows.by_ref() {
        let (k, v) = row.ctx("reading a table to copy")?;
        let (k, v) = (k.value(), v.value());
        written += K::as_bytes(&k).as_ref().len() + V::as_bytes(&v).as_ref().len();
        written += COPY_ROW_OVERHEAD;
        dest.insert(&k, &v).ctx("writing the snapshot")?;
        if written >= budget {
            return Ok((written, true));
        }
    }
    Ok((written, false))
}

/// fsyncs the directory holding `path`, so a file created or renamed there stays.
fn sync_parent_dir(path: &Path) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicBool, Ordering};

    use redb::{ReadableDatabase, ReadableTable, TableDefinition};

    use cairn_api::etcdserverpb::RangeRequest;

    use crate::layout::{HISTORY, VERSIONS};
    use crate::lease::GrantedLeases;
    use crate::testutil::*;
    use crate::{MvccError, RevisionEvents, Store, StoreOptions};

    fn open(path: &Path) -> Store {
        Store::open(
            path,
            StoreOptions {
                cache_size_bytes: 4 << 20,
            },
        )
        .unwrap()
    }

    fn table_names(s: &Store) -> BTreeSet<String> {
        use redb::TableHandle;
        let rtx = s.read_txn().unwrap();
        let names = rtx.list_tables().unwrap().map(|t| t.name().to_string());
        names.collect()
    }

    /// Every raw `versions` and `history` row.
    type Rows = (Vec<(Vec<u8>, u64, Vec<u8>)>, Vec<(u64, u32, Vec<u8>)>);
    fn raw_rows(s: &Store) -> Rows {
        let rtx = s.read_txn().unwrap();
        let versions = rtx.open_table(VERSIONS).unwrap();
        let history = rtx.open_table(HISTORY).unwrap();
        (
            versions
                .iter()
                .unwrap()
                .map(|e| {
                    let (k, v) = e.unwrap();
                    let (key, i) = k.value();
                    (key.to_vec(), i, v.value().to_vec())
                })
                .collect(),
            history
                .iter()
                .unwrap()
                .map(|e| {
                    let (k, v) = e.unwrap();
                    let (main, sub) = k.value();
                    (main, sub, v.value().to_vec())
                })
                .collect(),
        )
    }

    fn all_at(s: &Store, revision: i64) -> Vec<cairn_api::mvccpb::KeyValue> {
        let req = RangeRequest {
            revision,
            ..range_req("\0", "\0")
        };
        s.range(&req).unwrap().kvs
    }

    fn count_under(s: &Store, prefix: &str, end: &str) -> i64 {
        let req = RangeRequest {
            count_only: true,
            ..range_req(prefix, end)
        };
        s.range(&req).unwrap().count
    }

    /// Everything a store shows through its public API.
    #[derive(Debug, PartialEq)]
    struct Observed {
        marks: (i64, i64, (u64, u64)),
        kvs: Vec<cairn_api::mvccpb::KeyValue>,
        count_p: i64,
        history: Vec<RevisionEvents>,
        leases: Vec<crate::LeaseInfo>,
        lease_keys: Vec<Vec<Vec<u8>>>,
        members: Vec<(u64, Vec<u8>)>,
        removed: Vec<u64>,
        hash: crate::HashKv,
    }

    fn observe(s: &Store) -> Observed {
        let leases = s.leases().unwrap();
        Observed {
            marks: (
                s.current_revision(),
                s.compact_revision(),
                s.applied_index(),
            ),
            kvs: all_at(s, 0),
            count_p: count_under(s, "/p/", "/p0"),
            history: s.history(s.compact_revision().max(1), 1000).unwrap(),
            lease_keys: leases.iter().map(|l| s.lease_keys(l.id).unwrap()).collect(),
            leases,
            members: s.members().unwrap(),
            removed: s.removed_members().unwrap(),
            hash: s.hash_kv(0).unwrap(),
        }
    }

    /// A store holding something in every table, with a compaction recorded but not done.
    fn populate(s: &Store, tag: &str, index: u64) {
        let mut b = s.begin_write().unwrap();
        b.lease_grant(5, 60).unwrap();
        for i in 0..20 {
            b.put(&put_req(&format!("/p/{tag}{i}"), &format!("v{i}")), &Leases)
                .unwrap();
        }
        let mut req = put_req(&format!("/l/{tag}"), "leased");
        req.lease = 5;
        b.put(&req, &GrantedLeases).unwrap();
        b.put_member(1, format!("member one of {tag}").as_bytes())
            .unwrap();
        b.put_member(2, b"two").unwrap();
        b.remove_member(2).unwrap();
        b.set_applied_index(index, 3);
        b.commit(false).unwrap();
        for i in 0..5 {
            put(s, &format!("/p/{tag}{i}"), "again");
        }
        del(s, &format!("/p/{tag}1"), "");
        compact(s, 20).unwrap();
        put(s, "/q/last", tag);
    }

    #[test]
    fn a_copy_has_every_table_and_the_same_state() {
        let (dir, s) = store();
        populate(&s, "a", 40);
        let dest = dir.path().join("copy");
        let info = s.copy_to(&dest).unwrap();
        assert_eq!(
            info,
            super::SnapshotInfo {
                applied_index: 40,
                applied_term: 3,
                revision: s.current_revision()
            }
        );
        let copy = open(&dest);
        assert_eq!(table_names(&copy), table_names(&s));
        assert_eq!(table_names(&s).len(), 8, "{:?}", table_names(&s));
        assert_eq!(observe(&copy), observe(&s));
        assert_eq!(raw_rows(&copy), raw_rows(&s));
        assert_eq!(observe(&s).count_p, 19);
        // The pending compaction travels too, and ends the same on both.
        while !s.compact_step(3).unwrap() {}
        while !copy.compact_step(3).unwrap() {}
        assert_eq!(raw_rows(&copy), raw_rows(&s));
        assert_eq!(observe(&copy), observe(&s));
    }

    #[test]
    fn a_copy_never_overwrites() {
        let (dir, s) = store();
        put(&s, "a", "1");
        let dest = dir.path().join("taken");
        std::fs::write(&dest, b"precious").unwrap();
        let err = s.copy_to(&dest).unwrap_err();
        assert!(matches!(err, MvccError::Storage { .. }), "{err}");
        assert_eq!(std::fs::read(&dest).unwrap(), b"precious");
        // Nor onto the store's own file.
        assert!(s.copy_to(&dir.path().join("db")).is_err());
        assert_eq!(get(&s, "a").unwrap().value, b"1");
        // A missing directory fails without leaving anything.
        assert!(s.copy_to(&dir.path().join("no/such/dir")).is_err());
    }

    #[test]
    fn copies_are_consistent_while_the_writer_commits() {
        let (dir, s) = store();
        let mut b = s.begin_write().unwrap();
        b.put(&put_req("a", "50"), &Leases).unwrap();
        b.put(&put_req("b", "50"), &Leases).unwrap();
        b.set_applied_index(1, 1);
        b.commit(false).unwrap();
        let base = s.current_revision();
        let stop = AtomicBool::new(false);
        let copies: Vec<(PathBuf, super::SnapshotInfo)> = std::thread::scope(|scope| {
            // The writer: each commit is raft entry `index`, one txn moving an amount from a to b
            // (a + b stays 100), so revision = base + index - 1.
            let writer = scope.spawn(|| {
                let mut index = 1u64;
                while !stop.load(Ordering::Relaxed) {
                    index += 1;
                    let a = (index * 7 % 101) as i64;
                    let t = txn(
                        vec![],
                        vec![
                            op_put("a", &a.to_string()),
                            op_put("b", &(100 - a).to_string()),
                        ],
                        vec![],
                    );
                    let mut b = s.begin_write().unwrap();
                    b.txn(&t, &Leases).unwrap();
                    b.set_applied_index(index, 1);
                    b.commit(index.is_multiple_of(50)).unwrap();
                }
                index
            });
            let mut copies = Vec::new();
            for n in 0..6 {
                // Let the writer run between copies.
                while s.current_revision() < base + 20 * (n + 1) {
                    std::thread::yield_now();
                }
                let dest = dir.path().join(format!("copy{n}"));
                let info = s.copy_to(&dest).unwrap();
                copies.push((dest, info));
            }
            stop.store(true, Ordering::Relaxed);
            assert!(writer.join().unwrap() > 120);
            copies
        });
        let revisions: BTreeSet<i64> = copies.iter().map(|(_, info)| info.revision).collect();
        assert_eq!(
            revisions.len(),
            copies.len(),
            "the writer moved on between copies"
        );
        for (path, info) in copies {
            let copy = open(&path);
            assert_eq!(copy.current_revision(), info.revision);
            assert_eq!(
                copy.applied_index(),
                (info.applied_index, info.applied_term)
            );
            assert_eq!(
                info.revision,
                base + info.applied_index as i64 - 1,
                "the applied index is the one stored with the data"
            );
            let value = |k: &str| -> i64 {
                let kv = get(&copy, k).unwrap();
                String::from_utf8(kv.value).unwrap().parse().unwrap()
            };
            assert_eq!(value("a") + value("b"), 100);
            // Exactly the source's state at that revision, and nothing newer stored: every
            // write is one revision with a and b, so the newest rows are at the copy's revision.
            assert_eq!(all_at(&copy, 0), all_at(&s, info.revision));
            let (versions, history) = raw_rows(&copy);
            let newest = versions.iter().map(|(_, i, _)| crate::layout::rev_of(*i));
            assert_eq!(newest.max(), Some(info.revision));
            assert_eq!(history.last().map(|h| h.0 as i64), Some(info.revision));
            assert_eq!(copy.hash_kv(0).unwrap(), s.hash_kv(info.revision).unwrap());
        }
    }

    #[test]
    fn replace_with_swaps_in_the_copy() {
        let (src_dir, src) = store();
        populate(&src, "src", 900);
        let (dir, s) = store();
        populate(&s, "old", 7);
        grant_lease(&s, 6);
        let want = observe(&src);
        assert_ne!(observe(&s), want);
        let snap = dir.path().join("incoming");
        src.copy_to(&snap).unwrap();
        drop(src_dir); // the copy no longer depends on the source
                       // A read begun before the swap finishes on the old contents.
        let before = s.read_txn().unwrap();
        s.replace_with(&snap).unwrap();
        assert!(!snap.exists(), "the snapshot file became the store's");
        assert_eq!(observe(&s), want);
        assert!(get(&s, "/q/last").is_some_and(|kv| kv.value == b"src"));
        assert_eq!(s.lease(6).unwrap(), None);
        let old_versions = before.open_table(VERSIONS).unwrap();
        assert!(old_versions
            .iter()
            .unwrap()
            .any(|e| e.unwrap().0.value().0 == b"/p/old3"));
        drop(old_versions);
        drop(before);
        // Writes land in the new contents.
        let mut b = s.begin_write().unwrap();
        let r = b.put(&put_req("/p/new", "n"), &Leases).unwrap();
        assert_eq!(r.header.unwrap().revision, want.marks.0 + 1);
        b.lease_grant(8, 10).unwrap();
        b.put_member(3, b"three").unwrap();
        b.set_applied_index(901, 4);
        b.commit(true).unwrap();
        assert_eq!(count_under(&s, "/p/", "/p0"), want.count_p + 1);
        assert_eq!(s.applied_index(), (901, 4));
        // The pending compaction of the copy continues in its new home.
        while !s.compact_step(2).unwrap() {}
        let after = observe(&s);
        // The store's lock moved with the file: a second open of the path is refused while the
        // store lives, and reopening later opens the replaced contents.
        assert!(Store::open(&dir.path().join("db"), StoreOptions::default()).is_err());
        drop(s);
        let s = open_at(&dir);
        assert_eq!(observe(&s), after);
        assert_eq!(s.members().unwrap().len(), 2);
        assert!(s.lease(8).unwrap().is_some());
    }

    #[test]
    fn a_compaction_half_done_continues_after_replace_with() {
        let (dir, src) = store();
        populate(&src, "a", 10);
        // A revision of several puts and a delete, compacted at, then processed part-way: the
        // compaction cursor sits inside the compact revision.
        let t = txn(
            vec![],
            vec![
                op_put("/p/a3", "x"),
                op_put("/p/a4", "x"),
                op_del("/p/a5", ""),
                op_put("/p/z", "x"),
            ],
            vec![],
        );
        try_txn(&src, &t).unwrap();
        let c = src.current_revision();
        put(&src, "/p/a3", "after");
        compact(&src, c).unwrap();
        let cursor = |s: &Store| {
            let rtx = s.read_txn().unwrap();
            let meta = rtx.open_table(crate::layout::META).unwrap();
            let rev = meta.get(crate::layout::META_COMPACT_CURSOR_REV).unwrap();
            rev.map(|g| g.value())
        };
        while cursor(&src) != Some(c as u64) {
            assert!(!src.compact_step(1).unwrap());
        }
        assert!(
            !src.compact_step(1).unwrap(),
            "still entries of {c} to process"
        );
        let snap = dir.path().join("snap");
        src.copy_to(&snap).unwrap();
        let (_d, s) = store();
        populate(&s, "other", 1);
        s.replace_with(&snap).unwrap();
        assert_eq!(cursor(&s), Some(c as u64));
        assert_eq!(raw_rows(&s), raw_rows(&src));
        let mut steps = 0;
        while !s.compact_step(1).unwrap() {
            steps += 1;
        }
        while !src.compact_step(1).unwrap() {}
        assert!(steps >= 1);
        assert_eq!(raw_rows(&s), raw_rows(&src));
        assert_eq!(observe(&s), observe(&src));
        // The kept puts of the compact revision still replay.
        assert_eq!(s.history(c, 1).unwrap()[0].events.len(), 3);
    }

    fn grant_lease(s: &Store, id: i64) {
        let mut b = s.begin_write().unwrap();
        b.lease_grant(id, 10).unwrap();
        b.commit(false).unwrap();
    }

    #[test]
    fn replace_with_refuses_what_is_not_a_copy() {
        let (dir, s) = store();
        populate(&s, "s", 3);
        let want = observe(&s);
        let mut bad: Vec<(&str, PathBuf)> = Vec::new();
        // Garbage, an empty file, a missing file.
        let garbage = dir.path().join("garbage");
        std::fs::write(
            &garbage,
            (0..64 * 1024u32)
                .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
                .collect::<Vec<_>>(),
        )
        .unwrap();
        bad.push(("garbage", garbage));
        let empty = dir.path().join("empty");
        std::fs::write(&empty, b"").unwrap();
        bad.push(("empty", empty));
        bad.push(("missing", dir.path().join("missing")));
        // A redb database without our tables.
        let foreign = dir.path().join("foreign");
        {
            const OTHER: TableDefinition<u64, u64> = TableDefinition::new("other");
            let db = redb::Database::create(&foreign).unwrap();
            let wtx = db.begin_write().unwrap();
            wtx.open_table(OTHER).unwrap().insert(1, 2).unwrap();
            wtx.commit().unwrap();
        }
        bad.push(("foreign", foreign));
        // A real copy, cut short.
        let truncated = dir.path().join("truncated");
        s.copy_to(&truncated).unwrap();
        let len = std::fs::metadata(&truncated).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&truncated)
            .unwrap()
            .set_len(len / 2)
            .unwrap();
        bad.push(("truncated", truncated));
        // A real copy with a byte changed in every page but the header's.
        let scribbled = dir.path().join("scribbled");
        s.copy_to(&scribbled).unwrap();
        let mut bytes = std::fs::read(&scribbled).unwrap();
        for at in (4096 + 100..bytes.len()).step_by(4096) {
            bytes[at] ^= 0x5a;
        }
        std::fs::write(&scribbled, bytes).unwrap();
        bad.push(("scribbled", scribbled));
        for (what, path) in &bad {
            let err = s.replace_with(path).unwrap_err();
            let text = err.to_string();
            assert!(
                matches!(
                    err,
                    MvccError::Corrupt {
                        table: "snapshot file",
                        ..
                    }
                ),
                "{what}: {text}"
            );
            assert!(text.contains(&path.display().to_string()), "{what}: {text}");
            // The store is untouched and usable.
            assert_eq!(observe(&s), want, "{what}");
        }
        assert!(bad.iter().all(|(what, p)| *what == "missing" || p.exists()));
        put(&s, "/q/after", "1");
        assert_eq!(get(&s, "/q/after").unwrap().value, b"1");
        drop(s);
        let s = open_at(&dir);
        assert_eq!(get(&s, "/q/after").unwrap().value, b"1");
    }

    #[test]
    fn a_file_renamed_over_an_open_one_opens_while_the_old_handle_lives() {
        // What replace_with relies on (Linux): redb's lock belongs to the open file, not the
        // path, so the old handle neither blocks nor sees the file now at its path.
        const T: TableDefinition<u64, u64> = TableDefinition::new("t");
        let dir = tempfile::tempdir().unwrap();
        let (path, other) = (dir.path().join("db"), dir.path().join("other"));
        let write = |db: &redb::Database, v: u64| {
            let wtx = db.begin_write().unwrap();
            wtx.open_table(T).unwrap().insert(0, v).unwrap();
            wtx.commit().unwrap();
        };
        let read = |db: &redb::Database| {
            let rtx = db.begin_read().unwrap();
            let v = rtx.open_table(T).unwrap().get(0).unwrap().unwrap().value();
            v
        };
        let old = redb::Database::create(&path).unwrap();
        write(&old, 1);
        write(&redb::Database::create(&other).unwrap(), 2);
        std::fs::rename(&other, &path).unwrap();
        let new = redb::Database::open(&path).unwrap();
        assert_eq!((read(&old), read(&new)), (1, 2));
        write(&old, 3);
        assert_eq!(read(&new), 2);
        drop(old);
        drop(new);
        assert_eq!(read(&redb::Database::open(&path).unwrap()), 2);
    }
}
