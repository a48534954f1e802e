//! [`DiskStorage`]: raft-rs's `Storage` over an in-memory log persisted by the [`Wal`].
//!
//! Like etcd's MemoryStorage, the retained log lives in memory (raft reads it constantly); the
//! WAL makes it durable and rebuilds it on open. There is no dummy entry (RAFT-NOTES §2): the
//! truncated (index, term) is stored explicitly, and
//!
//! * `first_index = truncated_index + 1`, `last_index` = last entry, or the truncated index
//!   when the log is empty;
//! * `term(truncated_index)` is answered from the truncated state; below it → `Compacted`,
//!   above `last_index` → `Unavailable`;
//! * after open, `truncated_index ≤ hs.commit ≤ last_index` (replay guarantees it).
//!
//! Locking: the WAL sits behind a `Mutex` taken by every write-path method for its whole
//! duration (so writes are serialised and the WAL and memory change together); the in-memory
//! state behind an `RwLock` taken briefly. The `raft::Storage` methods only take the read
//! lock, so they never wait for an `fdatasync`. Lock order: WAL, then memory.
//!
//! Error split: write-path methods return [`WalError`] to the Ready loop; the trait methods
//! read memory and only ever return the errors raft can handle.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use raft::eraftpb::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, StorageError};

use crate::error::WalError;
use crate::wal::Wal;
pub use crate::wal::WalOptions;

/// The in-memory side of the log.
#[derive(Debug, Default)]
struct Mem {
    hard_state: HardState,
    conf_state: ConfState,
    truncated_index: u64,
    truncated_term: u64,
    /// Contiguous; `entries[0].index == truncated_index + 1` when non-empty.
    entries: VecDeque<Entry>,
    /// The index a snapshot is offered at: a copy of the state machine at exactly this
    /// applied index exists beside the log (see [`DiskStorage::set_prepared_snapshot`]).
    /// 0 = none yet.
    prepared_snapshot: u64,
}

impl Mem {
    fn first_index(&self) -> u64 {
        self.truncated_index + 1
    }

    fn last_index(&self) -> u64 {
        self.entries
            .back()
            .map_or(self.truncated_index, |e| e.index)
    }

    fn term(&self, idx: u64) -> Result<u64, StorageError> {
        if idx == self.truncated_index {
            return Ok(self.truncated_term);
        }
        if idx < self.truncated_index {
            return Err(StorageError::Compacted);
        }
        if idx > self.last_index() {
            return Err(StorageError::Unavailable);
        }
        let pos = (idx - self.first_index()) as usize;
        Ok(self.entries[pos].term)
    }
}

/// Called (on the raft thread, so it must not block) when raft needs a snapshot newer than
/// the one prepared; the argument is the lowest index that would do.
pub type SnapshotRequest = Box<dyn Fn(u64) + Send + Sync>;

struct Inner {
    wal: Mutex<Wal>,
    mem: RwLock<Mem>,
    snapshot_request: RwLock<Option<SnapshotRequest>>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("wal", &self.wal)
            .field("mem", &self.mem)
            .finish_non_exhaustive()
    }
}

/// raft-rs storage backed by cairn's WAL. Cheap to clone: clones share the same log.
#[derive(Debug, Clone)]
pub struct DiskStorage {
    inner: Arc<Inner>,
}

impl DiskStorage {
    /// Opens (or creates) the WAL in `dir` and replays it. `fresh` is true when the dir had no
    /// WAL. Fails with [`WalError::Corrupt`] if the log is damaged anywhere but a torn tail.
    pub fn open(dir: &Path, opts: WalOptions) -> Result<(DiskStorage, bool), WalError> {
        let opened = Wal::open(dir, opts)?;
        let r = opened.replayed;
        let mem = Mem {
            hard_state: r.hard_state,
            conf_state: r.conf_state,
            truncated_index: r.truncated_index,
            truncated_term: r.truncated_term,
            entries: r.entries,
            prepared_snapshot: 0,
        };
        let storage = DiskStorage {
            inner: Arc::new(Inner {
                wal: Mutex::new(opened.wal),
                mem: RwLock::new(mem),
                snapshot_request: RwLock::new(None),
            }),
        };
        Ok((storage, opened.fresh))
    }

    // A panic while holding a lock leaves consistent data here (memory is only changed after
    // the WAL write succeeded), so poisoning is ignored rather than turned into more panics.
    fn wal(&self) -> MutexGuard<'_, Wal> {
        self.inner
            .wal
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn mem(&self) -> RwLockReadGuard<'_, Mem> {
        self.inner
            .mem
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn mem_mut(&self) -> RwLockWriteGuard<'_, Mem> {
        self.inner
            .mem
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Bootstraps a brand-new log with this membership (writes the ConfState and syncs).
    /// Fails if the log is not empty or `conf_state` has no voter.
    pub fn bootstrap(&self, conf_state: ConfState) -> Result<(), WalError> {
        self.bootstrap_log(conf_state, &[])
    }

    /// Bootstraps a brand-new log with this membership and these initial entries, all
    /// committed (etcd starts a cluster with one ConfChange entry per member, so a member that
    /// joins later and replays the log from the start learns the whole membership). The
    /// entries must start at index 1 and be contiguous; the HardState becomes their last term
    /// and index. One sync.
    pub fn bootstrap_log(&self, conf_state: ConfState, entries: &[Entry]) -> Result<(), WalError> {
        let mut wal = self.wal();
        {
            let mem = self.mem();
            if mem.conf_state != ConfState::default()
                || mem.last_index() != 0
                || mem.hard_state != HardState::default()
            {
                return Err(WalError::InvalidRequest(
                    "bootstrap of a log that is already initialised".into(),
                ));
            }
        }
        if conf_state.voters.is_empty() {
            return Err(WalError::InvalidRequest(
                "bootstrap needs at least one voter".into(),
            ));
        }
        if entries.first().is_some_and(|e| e.index != 1) {
            return Err(WalError::InvalidRequest(
                "bootstrap entries must start at index 1".into(),
            ));
        }
        wal.write_conf_state(&conf_state)?;
        let hs = entries.last().map(|last| HardState {
            term: last.term,
            commit: last.index,
            ..Default::default()
        });
        if !entries.is_empty() {
            wal.append_entries(entries)?;
        }
        if let Some(hs) = &hs {
            wal.write_hard_state(hs)?;
        }
        wal.sync()?;
        let mut mem = self.mem_mut();
        mem.conf_state = conf_state;
        mem.entries.extend(entries.iter().cloned());
        if let Some(hs) = hs {
            mem.hard_state = hs;
        }
        Ok(())
    }

    /// Appends entries, replacing any conflicting suffix first (entries from the first new
    /// index on are dropped). The entries must be contiguous, start after the truncated index
    /// and at most one past the last index. Written to the WAL, not synced: call
    /// [`sync`](Self::sync) before acting on their durability.
    pub fn append(&self, entries: &[Entry]) -> Result<(), WalError> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        let mut wal = self.wal();
        // The WAL validates against the same state memory has (both track every write).
        wal.append_entries(entries)?;
        let mut mem = self.mem_mut();
        let keep = (first.index - mem.first_index()) as usize;
        mem.entries.truncate(keep);
        mem.entries.extend(entries.iter().cloned());
        Ok(())
    }

    /// Writes a new HardState (not synced).
    pub fn set_hard_state(&self, hs: &HardState) -> Result<(), WalError> {
        let mut wal = self.wal();
        wal.write_hard_state(hs)?;
        self.mem_mut().hard_state = hs.clone();
        Ok(())
    }

    /// Writes a new ConfState (not synced).
    pub fn set_conf_state(&self, cs: &ConfState) -> Result<(), WalError> {
        let mut wal = self.wal();
        wal.write_conf_state(cs)?;
        self.mem_mut().conf_state = cs.clone();
        Ok(())
    }

    /// One `fdatasync` covering everything written since the last sync (a no-op if nothing
    /// was).
    pub fn sync(&self) -> Result<(), WalError> {
        self.wal().sync()
    }

    /// Log compaction: forgets entries ≤ `index` (the caller guarantees `index` ≤ applied),
    /// records the truncated (index, term) in the WAL, syncs, and releases the WAL segments no
    /// longer needed (see [`WalOptions::max_wals`]). A no-op for `index` ≤ the truncated index;
    /// an error for `index` > the last index. Raises the in-memory `commit` to `index` if it
    /// lagged, exactly as a replay would.
    pub fn compact(&self, index: u64) -> Result<(), WalError> {
        let mut wal = self.wal();
        let term = {
            let mem = self.mem();
            if index <= mem.truncated_index {
                return Ok(());
            }
            if index > mem.last_index() {
                return Err(WalError::InvalidRequest(format!(
                    "compaction to index {index} beyond the last index {}",
                    mem.last_index()
                )));
            }
            mem.term(index)
                .map_err(|e| WalError::InvalidRequest(format!("term of {index}: {e}")))?
        };
        wal.write_compact(index, term)?;
        {
            let mut mem = self.mem_mut();
            let drop = (index - mem.truncated_index) as usize;
            mem.entries.drain(..drop);
            mem.truncated_index = index;
            mem.truncated_term = term;
            if mem.hard_state.commit < index {
                mem.hard_state.commit = index;
            }
        }
        // release() syncs first, so the Compact record is durable before files go.
        wal.release(index)?;
        Ok(())
    }

    /// Installs a snapshot's metadata (follower side): the whole log is dropped (entries after
    /// the snapshot may be from a branch the leader does not have), the truncated state becomes
    /// the snapshot's index/term, the ConfState the snapshot's, and the HardState gets
    /// `commit ≥ index` and `term ≥` the snapshot's. One WAL record plus a sync, so a crash
    /// leaves either the old or the new state, never `commit` out of range.
    /// Fails with [`WalError::SnapshotOutOfDate`] if `meta.index` ≤ the truncated index.
    pub fn apply_snapshot_metadata(&self, meta: &SnapshotMetadata) -> Result<(), WalError> {
        let mut wal = self.wal();
        let hs = {
            let mem = self.mem();
            if meta.index <= mem.truncated_index {
                return Err(WalError::SnapshotOutOfDate {
                    index: meta.index,
                    truncated: mem.truncated_index,
                });
            }
            let mut hs = mem.hard_state.clone();
            hs.term = hs.term.max(meta.term);
            hs.commit = hs.commit.max(meta.index);
            hs
        };
        let cs = meta.get_conf_state().clone();
        wal.write_snapshot(meta.index, meta.term, &hs, &cs)?;
        wal.sync()?;
        let mut mem = self.mem_mut();
        mem.entries.clear();
        mem.truncated_index = meta.index;
        mem.truncated_term = meta.term;
        mem.hard_state = hs;
        mem.conf_state = cs;
        Ok(())
    }

    /// The current HardState (with `commit` raised to the truncated index if it lagged).
    pub fn hard_state(&self) -> HardState {
        self.mem().hard_state.clone()
    }

    /// The current ConfState.
    pub fn conf_state(&self) -> ConfState {
        self.mem().conf_state.clone()
    }

    /// The truncated `(index, term)`: entries ≤ index are gone.
    pub fn truncated(&self) -> (u64, u64) {
        let mem = self.mem();
        (mem.truncated_index, mem.truncated_term)
    }

    /// Records that a copy of the state machine at exactly applied index `index` is ready to
    /// be sent: `snapshot()` then offers a snapshot at `index` (metadata only — index, its
    /// term, the ConfState; the transport streams the copy beside it). Never goes back.
    pub fn set_prepared_snapshot(&self, index: u64) {
        let mut mem = self.mem_mut();
        mem.prepared_snapshot = mem.prepared_snapshot.max(index);
    }

    /// Sets what `snapshot()` calls when the prepared snapshot is missing or too old; until a
    /// newer one is prepared, raft is told `SnapshotTemporarilyUnavailable` and retries later.
    pub fn on_snapshot_request(&self, request: SnapshotRequest) {
        *self
            .inner
            .snapshot_request
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(request);
    }

    /// Paths of the WAL's segment files, oldest first (for diagnostics and tests).
    pub fn wal_segments(&self) -> Vec<PathBuf> {
        self.wal().segment_paths()
    }
}

impl raft::Storage for DiskStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        let mem = self.mem();
        Ok(RaftState::new(
            mem.hard_state.clone(),
            mem.conf_state.clone(),
        ))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        let mem = self.mem();
        if low < mem.first_index() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > mem.last_index() + 1 {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        if low >= high {
            return Ok(Vec::new());
        }
        let lo = (low - mem.first_index()) as usize;
        let hi = (high - mem.first_index()) as usize;
        let mut ents: Vec<Entry> = mem.entries.range(lo..hi).cloned().collect();
        // Keeps at least one entry, stops before the one that would exceed max_size.
        raft::util::limit_size(&mut ents, max_size.into());
        Ok(ents)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        self.mem().term(idx).map_err(raft::Error::Store)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.mem().first_index())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.mem().last_index())
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        let mem = self.mem();
        let index = mem.prepared_snapshot;
        let unavailable = || raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable);
        // A follower continues from index + 1, which the log must still hold.
        let usable = index != 0
            && index >= request_index
            && index >= mem.truncated_index
            && index <= mem.last_index();
        let term = if usable { mem.term(index).ok() } else { None };
        let Some(term) = term else {
            let wanted = request_index.max(mem.truncated_index);
            drop(mem);
            if let Some(request) = self
                .inner
                .snapshot_request
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .as_ref()
            {
                request(wanted);
            }
            return Err(unavailable());
        };
        let mut snap = Snapshot::default();
        let meta: &mut SnapshotMetadata = snap.mut_metadata();
        meta.index = index;
        meta.term = term;
        meta.set_conf_state(mem.conf_state.clone());
        Ok(snap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::Storage as _;

    fn ent(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            data: vec![index as u8; 40].into(),
            ..Default::default()
        }
    }

    fn ents(range: std::ops::RangeInclusive<u64>, term: u64) -> Vec<Entry> {
        range.map(|i| ent(i, term)).collect()
    }

    fn hs(term: u64, vote: u64, commit: u64) -> HardState {
        HardState {
            term,
            vote,
            commit,
            ..Default::default()
        }
    }

    fn voters(ids: &[u64]) -> ConfState {
        ConfState {
            voters: ids.to_vec(),
            ..Default::default()
        }
    }

    fn small() -> WalOptions {
        WalOptions {
            segment_size: 1024,
            max_wals: 1,
        }
    }

    fn store_err(r: raft::Result<impl std::fmt::Debug>) -> StorageError {
        match r {
            Err(raft::Error::Store(e)) => e,
            other => panic!("expected a storage error, got {other:?}"),
        }
    }

    fn ctx() -> GetEntriesContext {
        GetEntriesContext::empty(false)
    }

    /// raft's restart invariant (RAFT-NOTES §2).
    fn assert_restart_invariant(s: &DiskStorage) {
        let first = s.first_index().unwrap();
        let last = s.last_index().unwrap();
        let commit = s.initial_state().unwrap().hard_state.commit;
        assert!(
            first - 1 <= commit && commit <= last,
            "first {first} commit {commit} last {last}"
        );
        assert!(s.term(first - 1).is_ok());
    }

    #[test]
    fn fresh_storage_is_empty_and_uninitialised() {
        let dir = tempfile::tempdir().unwrap();
        let (s, fresh) = DiskStorage::open(dir.path(), small()).unwrap();
        assert!(fresh);
        assert!(!s.initial_state().unwrap().initialized());
        assert_eq!(s.first_index().unwrap(), 1);
        assert_eq!(s.last_index().unwrap(), 0);
        assert_eq!(s.term(0).unwrap(), 0);
        assert_eq!(store_err(s.term(1)), StorageError::Unavailable);
        assert_eq!(
            store_err(s.entries(1, 2, None, ctx())),
            StorageError::Unavailable
        );
        assert_eq!(s.entries(1, 1, None, ctx()).unwrap(), vec![]);
        assert_eq!(
            store_err(s.snapshot(0, 2)),
            StorageError::SnapshotTemporarilyUnavailable
        );
    }

    #[test]
    fn bootstrap_once_and_persisted() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (s, _) = DiskStorage::open(dir.path(), small()).unwrap();
            assert!(matches!(
                s.bootstrap(ConfState::default()),
                Err(WalError::InvalidRequest(_))
            ));
            s.bootstrap(voters(&[1, 2, 3])).unwrap();
            assert!(matches!(
                s.bootstrap(voters(&[1])),
                Err(WalError::InvalidRequest(_))
            ));
        }
        let (s, fresh) = DiskStorage::open(dir.path(), small()).unwrap();
        assert!(!fresh);
        let st = s.initial_state().unwrap();
        assert!(st.initialized());
        assert_eq!(st.conf_state, voters(&[1, 2, 3]));
        assert_eq!(s.conf_state(), voters(&[1, 2, 3]));
    }

    #[test]
    fn append_overwrite_entries_and_terms() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = DiskStorage::open(dir.path(), small()).unwrap();
        s.append(&ents(1..=5, 1)).unwrap();
        s.append(&ents(4..=6, 2)).unwrap();
        assert_eq!(s.last_index().unwrap(), 6);
        assert_eq!(
            (1..=6).map(|i| s.term(i).unwrap()).collect::<Vec<_>>(),
            vec![1, 1, 1, 2, 2, 2]
        );
        assert_eq!(
            s.entries(2, 5, None, ctx()).unwrap(),
            vec![ent(2, 1), ent(3, 1), ent(4, 2)]
        );
        // max_size: at least one entry, then only what fits.
        let one = u64::from(protobuf::Message::compute_size(&ent(2, 1)));
        assert_eq!(s.entries(2, 5, 0, ctx()).unwrap().len(), 1);
        assert_eq!(s.entries(2, 5, one * 2, ctx()).unwrap().len(), 2);
        assert_eq!(s.entries(2, 5, raft::NO_LIMIT, ctx()).unwrap().len(), 3);
        // Gaps and bad batches are refused, nothing changes.
        assert!(s.append(&ents(9..=9, 2)).is_err());
        assert!(s.append(&[ent(7, 2), ent(9, 2)]).is_err());
        assert_eq!(s.last_index().unwrap(), 6);
        s.set_hard_state(&hs(2, 1, 5)).unwrap();
        s.sync().unwrap();
        drop(s);
        let (s, _) = DiskStorage::open(dir.path(), small()).unwrap();
        assert_eq!(s.hard_state(), hs(2, 1, 5));
        assert_eq!(
            s.entries(1, 7, None, ctx()).unwrap(),
            [ents(1..=3, 1), ents(4..=6, 2)].concat()
        );
        assert_restart_invariant(&s);
    }

    #[test]
    fn compaction_bounds_and_release() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = DiskStorage::open(dir.path(), small()).unwrap();
        s.bootstrap(voters(&[1])).unwrap();
        for i in 1..=100 {
            s.append(&[ent(i, 1 + i / 50)]).unwrap();
        }
        s.set_hard_state(&hs(3, 1, 90)).unwrap();
        s.sync().unwrap();
        let files_before = s.wal_segments().len();
        assert!(files_before > 3);
        assert!(s.compact(101).is_err());
        s.compact(80).unwrap();
        s.compact(10).unwrap(); // older: no-op
        assert_eq!(s.truncated(), (80, 2));
        assert_eq!(s.first_index().unwrap(), 81);
        assert_eq!(s.term(80).unwrap(), 2);
        assert_eq!(store_err(s.term(79)), StorageError::Compacted);
        assert_eq!(
            store_err(s.entries(80, 82, None, ctx())),
            StorageError::Compacted
        );
        assert_eq!(s.entries(81, 82, None, ctx()).unwrap(), vec![ent(81, 2)]);
        assert!(s.append(&ents(80..=80, 3)).is_err());
        assert!(s.wal_segments().len() < files_before);
        drop(s);
        let (s, _) = DiskStorage::open(dir.path(), small()).unwrap();
        assert_eq!(s.first_index().unwrap(), 81);
        assert_eq!(s.last_index().unwrap(), 100);
        assert_eq!(s.term(80).unwrap(), 2);
        assert_eq!(s.hard_state().commit, 90);
        assert_eq!(s.conf_state(), voters(&[1]));
        assert_restart_invariant(&s);
    }

    #[test]
    fn commit_raised_after_compaction_past_it() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (s, _) = DiskStorage::open(dir.path(), small()).unwrap();
            s.append(&ents(1..=10, 1)).unwrap();
            s.set_hard_state(&hs(1, 1, 3)).unwrap();
            s.compact(7).unwrap();
            assert_eq!(s.hard_state().commit, 7);
            s.sync().unwrap();
        }
        let (s, _) = DiskStorage::open(dir.path(), small()).unwrap();
        assert_eq!(s.hard_state(), hs(1, 1, 7));
        assert_restart_invariant(&s);
        // Compacting everything: empty log, last = first - 1 = truncated.
        s.compact(10).unwrap();
        drop(s);
        let (s, _) = DiskStorage::open(dir.path(), small()).unwrap();
        assert_eq!(s.first_index().unwrap(), 11);
        assert_eq!(s.last_index().unwrap(), 10);
        assert_eq!(s.term(10).unwrap(), 1);
        assert_restart_invariant(&s);
    }

    #[test]
    fn snapshot_metadata_install() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (s, _) = DiskStorage::open(dir.path(), small()).unwrap();
            s.append(&ents(1..=10, 1)).unwrap();
            s.set_hard_state(&hs(1, 2, 4)).unwrap();
            s.compact(3).unwrap();
            let mut meta = SnapshotMetadata {
                index: 3,
                term: 1,
                ..Default::default()
            };
            assert!(matches!(
                s.apply_snapshot_metadata(&meta),
                Err(WalError::SnapshotOutOfDate { .. })
            ));
            meta.index = 20;
            meta.term = 4;
            meta.set_conf_state(voters(&[1, 2]));
            s.apply_snapshot_metadata(&meta).unwrap();
            assert_eq!(s.first_index().unwrap(), 21);
            assert_eq!(s.last_index().unwrap(), 20);
            assert_eq!(s.term(20).unwrap(), 4);
            assert_eq!(s.hard_state(), hs(4, 2, 20));
            assert_eq!(s.conf_state(), voters(&[1, 2]));
            // No sync needed by the caller: the install is durable on return.
        }
        let (s, _) = DiskStorage::open(dir.path(), small()).unwrap();
        assert_eq!(s.truncated(), (20, 4));
        assert_eq!(s.hard_state(), hs(4, 2, 20));
        assert_eq!(s.conf_state(), voters(&[1, 2]));
        assert_restart_invariant(&s);
        s.append(&ents(21..=22, 4)).unwrap();
        assert_eq!(s.last_index().unwrap(), 22);
    }

    #[test]
    fn snapshot_answers_only_when_fresh_enough() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = DiskStorage::open(dir.path(), small()).unwrap();
        s.bootstrap(voters(&[1, 2])).unwrap();
        s.append(&ents(1..=10, 1)).unwrap();
        let requested = Arc::new(Mutex::new(Vec::new()));
        let seen = requested.clone();
        s.on_snapshot_request(Box::new(move |i| seen.lock().unwrap().push(i)));
        assert_eq!(
            store_err(s.snapshot(0, 2)),
            StorageError::SnapshotTemporarilyUnavailable,
            "nothing prepared yet"
        );
        s.set_prepared_snapshot(5);
        let snap = s.snapshot(5, 2).unwrap();
        assert_eq!(snap.get_metadata().index, 5);
        assert_eq!(snap.get_metadata().term, 1);
        assert_eq!(snap.get_metadata().get_conf_state(), &voters(&[1, 2]));
        assert_eq!(
            store_err(s.snapshot(6, 2)),
            StorageError::SnapshotTemporarilyUnavailable
        );
        s.set_prepared_snapshot(3);
        assert_eq!(
            s.snapshot(0, 2).unwrap().get_metadata().index,
            5,
            "never goes back"
        );
        s.compact(7).unwrap();
        assert_eq!(
            store_err(s.snapshot(0, 2)),
            StorageError::SnapshotTemporarilyUnavailable,
            "a snapshot older than the truncated index would not let the follower catch up"
        );
        s.set_prepared_snapshot(9);
        assert_eq!(s.snapshot(0, 2).unwrap().get_metadata().index, 9);
        assert_eq!(*requested.lock().unwrap(), vec![0, 6, 7]);
    }

    #[test]
    fn bootstrap_log_commits_initial_entries() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (s, fresh) = DiskStorage::open(dir.path(), small()).unwrap();
            assert!(fresh);
            assert!(s.bootstrap_log(voters(&[1, 2]), &ents(2..=3, 1)).is_err());
            s.bootstrap_log(voters(&[1, 2]), &ents(1..=2, 1)).unwrap();
            assert_eq!(s.hard_state(), hs(1, 0, 2));
            assert_eq!(s.last_index().unwrap(), 2);
        }
        let (s, fresh) = DiskStorage::open(dir.path(), small()).unwrap();
        assert!(!fresh);
        assert_eq!(s.hard_state(), hs(1, 0, 2));
        assert_eq!(s.conf_state(), voters(&[1, 2]));
        assert_eq!(s.entries(1, 3, None, ctx()).unwrap().len(), 2);
        assert_restart_invariant(&s);
    }

    #[test]
    fn is_send_and_sync() {
        // RawNode<DiskStorage> has to move into the raft task; clones are read elsewhere.
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<DiskStorage>();
    }

    #[test]
    fn clones_share_state() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = DiskStorage::open(dir.path(), small()).unwrap();
        let c = s.clone();
        s.append(&ents(1..=2, 1)).unwrap();
        assert_eq!(c.last_index().unwrap(), 2);
    }
}
