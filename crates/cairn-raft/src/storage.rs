//! [`DiskStorage`]: raft-rs's `Storage` over the log persisted by the [`Wal`].
//!
//! Memory holds, for every retained entry, only its term and where its record is in the WAL
//! (a `Slot`, 40 bytes); the entries themselves are kept in full only for the newest part of
//! the log, a cache bounded by bytes ([`DEFAULT_ENTRY_CACHE_BYTES`]). That is what raft reads
//! in steady state: committed entries are handed out right after they are appended, and a
//! follower that keeps up is sent entries just appended. Older entries — for a follower
//! catching up, or the committed but not yet applied entries after a restart — are read back
//! from the segment files ([`crate::wal::read`]) and verified as replay verifies them (length,
//! crc32c, type, index and term). Opening replays the WAL without keeping any payload: every
//! entry starts out on disk.
//!
//! There is no dummy entry (RAFT-NOTES §2): the truncated (index, term) is stored explicitly,
//! and
//!
//! * `first_index = truncated_index + 1`, `last_index` = last entry, or the truncated index
//!   when the log is empty;
//! * `term(truncated_index)` is answered from the truncated state; below it → `Compacted`,
//!   above `last_index` → `Unavailable`;
//! * after open, `truncated_index ≤ hs.commit ≤ last_index` (replay guarantees it).
//!
//! Cache: a suffix of the log, `[cache_first, last_index]`. After every write, entries leave it
//! from the front while it is over its budget, but only entries whose record is already in the
//! file (the WAL buffers up to 1 MiB before handing records to the kernel) and whose location
//! is known. Appends, overwrites, compaction and snapshots keep slots and cache in step.
//!
//! Locking: the WAL sits behind a `Mutex` taken by every write-path method for its whole
//! duration (so writes are serialised and the WAL and memory change together); the in-memory
//! state behind an `RwLock`. The `raft::Storage` methods only take the read lock, so they
//! never wait for an `fdatasync`. Lock order: WAL, then memory. A read from disk holds the
//! read lock while it reads: a segment file is deleted only by [`DiskStorage::compact`], after
//! the compaction is in memory (which waits for readers), and only if all its entries are at or
//! below the new truncated index — entries no reader can ask for any more. Rotation only adds
//! files, and overwritten entries stay in their files (their slots point to the new records).
//! In cairn the raft thread is the only caller of the trait methods and of the write path.
//!
//! Error split: write-path methods return [`WalError`] to the Ready loop. The trait methods
//! return the errors raft handles (`Compacted`, `Unavailable`, `SnapshotTemporarilyUnavailable`)
//! except when reading an entry back from disk fails (I/O error or a damaged record): then
//! `entries()` returns `Store(Other)`, on which raft panics — the log can no longer be trusted,
//! as when a replay finds corruption.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use raft::eraftpb::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, StorageError};

use crate::error::WalError;
use crate::wal::read::{read_entries, EntryLoc, ReplayLocator};
use crate::wal::Wal;
pub use crate::wal::WalOptions;

/// Default byte budget of the in-memory cache of the newest entries.
pub const DEFAULT_ENTRY_CACHE_BYTES: usize = 8 << 20;

/// What memory keeps for every retained entry.
#[derive(Debug, Clone, Copy)]
struct Slot {
    term: u64,
    /// Where the entry's record is in the WAL. `None` only if an append's locations could not
    /// be worked out (see [`Wal::locate_appended`]); such an entry never leaves the cache.
    loc: Option<EntryLoc>,
}

/// Memory an entry in the cache is charged for.
fn cached_size(e: &Entry) -> usize {
    e.data.len() + e.context.len() + std::mem::size_of::<Entry>()
}

/// The in-memory side of the log.
#[derive(Debug, Default)]
struct Mem {
    hard_state: HardState,
    conf_state: ConfState,
    truncated_index: u64,
    truncated_term: u64,
    /// One per retained entry: `slots[0]` is index `truncated_index + 1`.
    slots: VecDeque<Slot>,
    /// The newest entries in full, a suffix of the log: the last one is `last_index()`.
    cache: VecDeque<Entry>,
    /// Sum of [`cached_size`] over `cache`.
    cache_bytes: usize,
    /// Bytes the cache is trimmed to after a write.
    cache_budget: usize,
    /// `(sequence, path)` of the WAL's segment files, to read evicted entries from.
    files: Vec<(u64, PathBuf)>,
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
        self.truncated_index + self.slots.len() as u64
    }

    /// Index of the oldest cached entry (`last_index() + 1` when the cache is empty).
    fn cache_first(&self) -> u64 {
        self.last_index() + 1 - self.cache.len() as u64
    }

    /// The slot of `idx`, which must be in `first_index()..=last_index()`.
    fn slot(&self, idx: u64) -> &Slot {
        &self.slots[(idx - self.first_index()) as usize]
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
        Ok(self.slot(idx).term)
    }

    /// Adds the entry after the last one.
    fn push(&mut self, e: Entry, loc: Option<EntryLoc>) {
        debug_assert_eq!(e.index, self.last_index() + 1);
        self.slots.push_back(Slot { term: e.term, loc });
        self.cache_bytes += cached_size(&e);
        self.cache.push_back(e);
    }

    /// Drops the entries from `index` on (`first_index() ≤ index ≤ last_index() + 1`).
    fn truncate_from(&mut self, index: u64) {
        let keep_cached = index.saturating_sub(self.cache_first()) as usize;
        while self.cache.len() > keep_cached {
            let e = self.cache.pop_back().expect("len checked");
            self.cache_bytes -= cached_size(&e);
        }
        self.slots.truncate((index - self.first_index()) as usize);
    }

    /// Drops the entries up to `index` (`truncated_index ≤ index ≤ last_index()`) and makes
    /// it the truncated index.
    fn compact_to(&mut self, index: u64, term: u64) {
        while self.cache.front().is_some_and(|e| e.index <= index) {
            let e = self.cache.pop_front().expect("front checked");
            self.cache_bytes -= cached_size(&e);
        }
        self.slots.drain(..(index - self.truncated_index) as usize);
        self.truncated_index = index;
        self.truncated_term = term;
    }

    /// Empties the log; it continues after `index`.
    fn clear_to(&mut self, index: u64, term: u64) {
        self.slots.clear();
        self.cache.clear();
        self.cache_bytes = 0;
        self.truncated_index = index;
        self.truncated_term = term;
    }

    /// Brings the list of segment files up to date after a write (rotation adds one, release
    /// removes some).
    fn note_files(&mut self, wal: &Wal) {
        let known = (
            self.files.first().map_or(0, |f| f.0),
            self.files.last().map_or(0, |f| f.0),
        );
        if known != wal.segment_range() {
            self.files = wal.segment_files();
        }
    }

    /// Evicts the oldest cached entries while the cache is over budget and they can be read
    /// back from the WAL's files.
    fn trim(&mut self, wal: &Wal) {
        while self.cache_bytes > self.cache_budget {
            let Some(front) = self.cache.front() else {
                break;
            };
            match self.slot(front.index).loc {
                Some(loc) if wal.is_readable(&loc) => {}
                _ => break,
            }
            let e = self.cache.pop_front().expect("front checked");
            self.cache_bytes -= cached_size(&e);
        }
    }

    /// What every write ends with.
    fn after_write(&mut self, wal: &Wal) {
        self.note_files(wal);
        self.trim(wal);
    }

    /// Entries `[low, high)` of the retained log, at least one, then only while the total
    /// protobuf size stays within `max_size` (raft's `limit_size`), from disk below the cache.
    fn entries(&self, low: u64, high: u64, max_size: Option<u64>) -> raft::Result<Vec<Entry>> {
        let max = match max_size {
            None | Some(raft::NO_LIMIT) => u64::MAX,
            Some(m) => m,
        };
        let cache_first = self.cache_first();
        let mut ents = Vec::new();
        if low < cache_first {
            let disk_high = high.min(cache_first);
            let mut want = Vec::new();
            let mut size = 0u64;
            for idx in low..disk_high {
                let slot = self.slot(idx);
                let Some(loc) = slot.loc else {
                    // Evicted entries always have a location; not reachable.
                    return Err(WalError::InvalidRequest(format!(
                        "entry {idx} is neither cached nor located in the WAL"
                    ))
                    .into());
                };
                size = size.saturating_add(loc.entry_size());
                if !want.is_empty() && size > max {
                    break;
                }
                want.push((idx, slot.term, loc));
            }
            let complete = want.len() as u64 == disk_high - low;
            ents = read_entries(&self.files, &want).map_err(|e| {
                tracing::error!(error = %e, low, high, "reading raft entries back from the WAL failed");
                raft::Error::from(e)
            })?;
            if !complete {
                return Ok(ents);
            }
        }
        if high > cache_first {
            let from = (low.max(cache_first) - cache_first) as usize;
            let to = (high - cache_first) as usize;
            ents.extend(self.cache.range(from..to).cloned());
        }
        // Keeps at least one entry, stops before the one that would exceed max_size.
        raft::util::limit_size(&mut ents, max_size);
        Ok(ents)
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
    /// No entry payload stays in memory: the replay keeps indexes, terms and locations.
    pub fn open(dir: &Path, opts: WalOptions) -> Result<(DiskStorage, bool), WalError> {
        let mut locator = ReplayLocator::default();
        let opened = Wal::open_observed(dir, opts, &mut |seq, offset, frame_len, record| {
            locator.observe(seq, offset, frame_len, record)
        })?;
        let r = opened.replayed;
        let locs = locator.finish(&r).map_err(|reason| WalError::Corrupt {
            file: dir.to_path_buf(),
            offset: 0,
            reason,
        })?;
        let slots = r
            .entries
            .iter()
            .zip(locs)
            .map(|(e, loc)| Slot {
                term: e.term,
                loc: Some(loc),
            })
            .collect();
        let mem = Mem {
            hard_state: r.hard_state,
            conf_state: r.conf_state,
            truncated_index: r.truncated_index,
            truncated_term: r.truncated_term,
            slots,
            cache: VecDeque::new(),
            cache_bytes: 0,
            cache_budget: DEFAULT_ENTRY_CACHE_BYTES,
            files: opened.wal.segment_files(),
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

    /// Sets the byte budget of the in-memory cache of the newest entries (default
    /// [`DEFAULT_ENTRY_CACHE_BYTES`]; 0 keeps only what is not yet in the WAL's files) and
    /// trims the cache to it.
    pub fn set_entry_cache_budget(&self, bytes: usize) {
        let wal = self.wal();
        let mut mem = self.mem_mut();
        mem.cache_budget = bytes;
        mem.trim(&wal);
    }

    /// `(entries, bytes)` in the in-memory cache (for tests and diagnostics).
    pub fn entry_cache_usage(&self) -> (usize, usize) {
        let mem = self.mem();
        (mem.cache.len(), mem.cache_bytes)
    }

    /// Appends `entries` (validated by the WAL) and updates memory.
    fn append_locked(&self, wal: &mut Wal, entries: &[Entry]) -> Result<(), WalError> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        let before = wal.write_end();
        wal.append_entries(entries)?;
        let locs = wal.locate_appended(before, entries);
        if locs.is_none() {
            tracing::warn!(
                first = first.index,
                count = entries.len(),
                "could not locate appended entries in the WAL; they stay in memory until compacted"
            );
        }
        let mut mem = self.mem_mut();
        mem.truncate_from(first.index);
        for (i, e) in entries.iter().enumerate() {
            mem.push(e.clone(), locs.as_ref().map(|l| l[i]));
        }
        mem.after_write(wal);
        Ok(())
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
        self.append_locked(&mut wal, entries)?;
        if let Some(hs) = &hs {
            wal.write_hard_state(hs)?;
        }
        wal.sync()?;
        let mut mem = self.mem_mut();
        mem.conf_state = conf_state;
        if let Some(hs) = hs {
            mem.hard_state = hs;
        }
        mem.after_write(&wal);
        Ok(())
    }

    /// Appends entries, replacing any conflicting suffix first (entries from the first new
    /// index on are dropped). The entries must be contiguous, start after the truncated index
    /// and at most one past the last index. Written to the WAL, not synced: call
    /// [`sync`](Self::sync) before acting on their durability.
    pub fn append(&self, entries: &[Entry]) -> Result<(), WalError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut wal = self.wal();
        // The WAL validates against the same state memory has (both track every write).
        self.append_locked(&mut wal, entries)
    }

    /// Writes a new HardState (not synced).
    pub fn set_hard_state(&self, hs: &HardState) -> Result<(), WalError> {
        let mut wal = self.wal();
        wal.write_hard_state(hs)?;
        let mut mem = self.mem_mut();
        mem.hard_state = hs.clone();
        mem.after_write(&wal);
        Ok(())
    }

    /// Writes a new ConfState (not synced).
    pub fn set_conf_state(&self, cs: &ConfState) -> Result<(), WalError> {
        let mut wal = self.wal();
        wal.write_conf_state(cs)?;
        let mut mem = self.mem_mut();
        mem.conf_state = cs.clone();
        mem.after_write(&wal);
        Ok(())
    }

    /// One `fdatasync` covering everything written since the last sync (a no-op if nothing
    /// was).
    pub fn sync(&self) -> Result<(), WalError> {
        let mut wal = self.wal();
        wal.sync()?;
        self.mem_mut().after_write(&wal);
        Ok(())
    }

    /// Hands everything written so far to the kernel without an fdatasync: it survives the
    /// process dying, not the machine. Only the planted `ack_before_fsync` bug uses this in
    /// place of [`sync`](Self::sync).
    pub fn write_out(&self) -> Result<(), WalError> {
        self.wal().write_out()
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
            mem.compact_to(index, term);
            if mem.hard_state.commit < index {
                mem.hard_state.commit = index;
            }
            mem.after_write(&wal);
        }
        // release() syncs first, so the Compact record is durable before files go. Readers
        // already see the new truncated index, so none needs a file that goes.
        let released = wal.release(index);
        self.mem_mut().after_write(&wal);
        released?;
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
        mem.clear_to(meta.index, meta.term);
        mem.hard_state = hs;
        mem.conf_state = cs;
        mem.after_write(&wal);
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
        mem.entries(low, high, max_size.into())
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

    fn big(index: u64, term: u64, len: usize) -> Entry {
        Entry {
            index,
            term,
            data: vec![(index * 7 + term) as u8; len].into(),
            ..Default::default()
        }
    }

    #[test]
    fn evicted_entries_are_read_back_from_the_wal() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = DiskStorage::open(dir.path(), small()).unwrap();
        s.set_entry_cache_budget(0);
        let all: Vec<Entry> = (1..=50)
            .map(|i| big(i, 1 + i / 20, 10 + i as usize))
            .collect();
        s.append(&all).unwrap();
        // Those still in the WAL's write buffer (not in the files yet) stay in memory; those in
        // segments rotated away from (flushed then) need not.
        let (cached, _) = s.entry_cache_usage();
        assert!(cached > 0 && cached < 50, "{cached} cached");
        assert_eq!(s.entries(1, 51, None, ctx()).unwrap(), all);
        s.sync().unwrap();
        assert_eq!(s.entry_cache_usage(), (0, 0));
        assert!(s.wal_segments().len() > 2, "the entries span segments");
        assert_eq!(s.entries(1, 51, None, ctx()).unwrap(), all);
        assert_eq!(
            s.entries(17, 23, None, ctx()).unwrap(),
            all[16..22].to_vec()
        );
        assert_eq!(s.term(45).unwrap(), 3);
        // max_size: at least one entry, then only what fits, from disk as from memory.
        let size = |e: &Entry| u64::from(protobuf::Message::compute_size(e));
        assert_eq!(s.entries(5, 51, 0, ctx()).unwrap(), all[4..5].to_vec());
        let two = size(&all[4]) + size(&all[5]);
        assert_eq!(s.entries(5, 51, two, ctx()).unwrap(), all[4..6].to_vec());
        assert_eq!(
            s.entries(5, 51, two + 1, ctx()).unwrap(),
            all[4..6].to_vec()
        );
    }

    #[test]
    fn cache_keeps_the_newest_entries_within_budget() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = DiskStorage::open(dir.path(), small()).unwrap();
        let all: Vec<Entry> = (1..=20).map(|i| big(i, 1, 100)).collect();
        let each = cached_size(&all[0]);
        s.set_entry_cache_budget(3 * each);
        for e in &all {
            s.append(std::slice::from_ref(e)).unwrap();
            s.sync().unwrap();
        }
        assert_eq!(s.entry_cache_usage(), (3, 3 * each));
        // Half from disk, half from memory, with and without a size limit.
        assert_eq!(s.entries(15, 21, None, ctx()).unwrap(), all[14..].to_vec());
        let one = u64::from(protobuf::Message::compute_size(&all[0]));
        assert_eq!(
            s.entries(16, 21, one * 4, ctx()).unwrap(),
            all[15..19].to_vec()
        );
        // An overwrite reaching below the cache: the old records stay in the files, dead.
        let new: Vec<Entry> = (12..=14).map(|i| big(i, 2, 30)).collect();
        s.append(&new).unwrap();
        let want = [all[..11].to_vec(), new.clone()].concat();
        assert_eq!(s.entries(1, 15, None, ctx()).unwrap(), want);
        s.sync().unwrap();
        assert_eq!(s.entries(1, 15, None, ctx()).unwrap(), want);
        assert_eq!(
            store_err(s.entries(1, 16, None, ctx())),
            StorageError::Unavailable
        );
        drop(s);
        let (s, _) = DiskStorage::open(dir.path(), small()).unwrap();
        assert_eq!(s.entry_cache_usage(), (0, 0), "a reopen keeps no payload");
        assert_eq!(s.entries(1, 15, None, ctx()).unwrap(), want);
        assert_eq!(s.term(14).unwrap(), 2);
        // New appends are cached again.
        s.append(&[big(15, 2, 5)]).unwrap();
        assert_eq!(s.entry_cache_usage().0, 1);
    }

    #[test]
    fn an_entry_larger_than_a_segment_is_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = DiskStorage::open(dir.path(), small()).unwrap();
        s.set_entry_cache_budget(0);
        let all = vec![
            big(1, 1, 10),
            big(2, 1, 5000),
            big(3, 1, 10),
            big(4, 1, 3000),
        ];
        s.append(&all).unwrap();
        s.sync().unwrap();
        assert_eq!(s.entry_cache_usage(), (0, 0));
        assert_eq!(s.entries(1, 5, None, ctx()).unwrap(), all);
    }

    #[test]
    fn a_damaged_record_is_an_error_not_an_entry() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = DiskStorage::open(dir.path(), small()).unwrap();
        s.set_entry_cache_budget(0);
        s.append(&ents(1..=5, 1)).unwrap();
        s.sync().unwrap();
        let path = s.wal_segments()[0].clone();
        let mut bytes = std::fs::read(&path).unwrap();
        let rec = crate::wal::scan_segment_bytes(&bytes)
            .records
            .into_iter()
            .find(|r| matches!(&r.record, crate::wal::Record::Entry(e) if e.index == 3))
            .unwrap();
        let at = (rec.offset + rec.frame_len - 1) as usize;
        bytes[at] ^= 0x01;
        std::fs::write(&path, &bytes).unwrap();
        match s.entries(3, 4, None, ctx()) {
            Err(raft::Error::Store(StorageError::Other(e))) => {
                assert!(e.to_string().contains("crc mismatch"), "{e}")
            }
            other => panic!("expected a fatal storage error, got {other:?}"),
        }
        assert_eq!(s.entries(4, 6, None, ctx()).unwrap(), ents(4..=5, 1));
    }

    #[test]
    fn a_slot_is_small() {
        // What memory keeps per retained entry (the module docs say so).
        assert_eq!(std::mem::size_of::<Slot>(), 40);
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
