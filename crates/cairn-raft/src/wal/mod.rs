//! cairn's write-ahead log: a directory of preallocated segment files holding raft entries and
//! state, verified record by record on open.
//!
//! # On-disk format
//!
//! * Directory: `LOCK` (held with an exclusive file lock while open) and segment files
//!   `{seq:016x}-{first_index:016x}.wal`; `seq` starts at 1 and has no gaps, `first_index` is
//!   the index the segment's first entry has. See [`segment`].
//! * Segment: preallocated to [`WalOptions::segment_size`] (zeros), a sequence of records, then
//!   zeros. A segment closed by rotation is cut to its used length. A record bigger than a
//!   segment gets a segment of its own that grows past the preallocated size.
//! * Record: `len: u32 LE | crc32c: u32 LE | type: u8 | payload`, `len` = 1 + payload length,
//!   crc over type + payload. See [`record`] for the types and payloads.
//! * Every segment starts with a [`SegmentHeader`] holding the whole non-entry state at its
//!   creation (HardState, ConfState, truncated index/term, first index), so older segments can
//!   be deleted once their entries are compacted away.
//!
//! # Durability
//!
//! Writes are buffered in memory and handed to the kernel on [`Wal::sync`] (or when the buffer
//! grows past 1 MiB); [`Wal::sync`] is then one `fdatasync`. Rotation syncs the old segment
//! before the new one exists, and a new segment is durable (file and directory entry) before
//! anything is written after its header; so only the last segment can ever have a torn tail.
//! After any failed write or sync the WAL refuses further work ([`WalError::Failed`]): after a
//! failed `fdatasync` the page cache no longer tells what is on disk. Open fsyncs the last
//! segment before anything is appended: records a killed process left in the page cache are
//! replayed as persisted, so they must be durable before raft acts on them.
//!
//! With the `failpoints` feature the WAL also keeps `synced.txt`, the fsynced length of every
//! segment, for `truncate_to_synced` to simulate a power loss (see the `synced` module).
//!
//! # Open
//!
//! Every record of every segment is verified ([`scan_segment_bytes`]) and replayed
//! ([`replay`]). A torn tail in the last segment is cut off (zeroed, synced, logged as a
//! warning); anything else is [`WalError::Corrupt`] naming the file and offset.

pub mod read;
pub mod record;
pub mod replay;
pub mod scan;
pub mod segment;
#[cfg(feature = "failpoints")]
pub mod synced;

use std::fs::{self, File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

use raft::eraftpb::{ConfState, Entry, HardState};

use crate::error::WalError;
pub use record::{encode_record, Record, SegmentHeader};
pub use replay::{LogMeta, Replayed};
pub use scan::{scan_segment_bytes, ScanEnd, ScanOutcome, ScannedRecord};
use segment::SegmentFile;
#[cfg(feature = "failpoints")]
pub use synced::{truncate_to_synced, FileOutcome, FileReport, TruncateReport, SYNCED_FILE};

/// Default segment size, as etcd: 64 MiB.
pub const DEFAULT_SEGMENT_SIZE: u64 = 64 * 1024 * 1024;
/// Default for [`WalOptions::max_wals`], as etcd's `--max-wals`.
pub const DEFAULT_MAX_WALS: usize = 5;
/// Buffered bytes beyond which records are handed to the kernel before the next sync.
const FLUSH_THRESHOLD: usize = 1 << 20;
/// Name of the lock file in the WAL directory.
pub const LOCK_FILE: &str = "LOCK";

/// Tuning of the WAL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalOptions {
    /// Size segments are preallocated to; a record that would make the current segment exceed
    /// it goes to a new segment. Default 64 MiB. Small values are fine for tests.
    pub segment_size: u64,
    /// Like etcd's `--max-wals`: how many of the newest segment files are kept even when their
    /// entries are all compacted away. Release deletes the oldest releasable segments only while
    /// more than this many exist. `0` means unlimited retention: nothing is ever deleted
    /// (etcd's meaning of `--max-wals=0`). The current segment is never deleted. Default 5.
    pub max_wals: usize,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            segment_size: DEFAULT_SEGMENT_SIZE,
            max_wals: DEFAULT_MAX_WALS,
        }
    }
}

/// What the WAL knows about one of its segment files.
#[derive(Debug, Clone)]
struct SegmentMeta {
    seq: u64,
    path: PathBuf,
    /// Largest entry index ever written into this segment (None: no entries). A segment is
    /// releasable when this is ≤ the compacted index: all its entries are then dead, and its
    /// other records are summarised by the next segment's header.
    max_entry_index: Option<u64>,
    /// Bytes of the file known to be on disk (fdatasync'ed); only the `failpoints` build reads
    /// it, to write `synced.txt`.
    #[cfg_attr(not(feature = "failpoints"), allow(dead_code))]
    synced_len: u64,
}

/// The write-ahead log. Not thread-safe by itself; [`crate::storage::DiskStorage`] wraps it.
#[derive(Debug)]
pub struct Wal {
    dir: PathBuf,
    opts: WalOptions,
    /// Held (exclusively locked) for the lifetime of the Wal.
    _lock: File,
    /// Oldest first; the last one is the current segment.
    segments: Vec<SegmentMeta>,
    current: SegmentFile,
    /// Length of the current segment's header frame (a segment with nothing beyond its header
    /// is never rotated away from, so a huge record cannot cause endless rotation).
    header_len: u64,
    /// Bytes of the current segment already handed to the kernel; `buf` starts there.
    flushed: u64,
    /// Encoded records not yet written.
    buf: Vec<u8>,
    /// Something was written or buffered since the last fdatasync.
    unsynced: bool,
    /// The state a new segment header must carry, tracking every record written.
    meta: LogMeta,
    /// Set after a failed write/sync; every later call fails.
    failed: Option<String>,
    /// `synced.txt` (feature `failpoints`, see [`synced`]).
    #[cfg(feature = "failpoints")]
    sidecar: synced::Sidecar,
}

/// What [`Wal::open`] found.
#[derive(Debug)]
pub struct Opened {
    /// The WAL, positioned to append after the last valid record.
    pub wal: Wal,
    /// The replayed log state.
    pub replayed: Replayed,
    /// True when the directory held no segment (a brand-new log was created).
    pub fresh: bool,
}

fn corrupt(file: &Path, offset: u64, reason: impl Into<String>) -> WalError {
    WalError::Corrupt {
        file: file.to_path_buf(),
        offset,
        reason: reason.into(),
    }
}

/// Lists segment files in `dir` sorted by sequence; removes leftovers of interrupted creations.
fn list_segments(dir: &Path) -> Result<Vec<(u64, u64, PathBuf)>, WalError> {
    let mut segs = Vec::new();
    let mut removed_tmp = false;
    for ent in fs::read_dir(dir).map_err(|e| WalError::io(dir, e))? {
        let ent = ent.map_err(|e| WalError::io(dir, e))?;
        let Ok(name) = ent.file_name().into_string() else {
            continue;
        };
        if name.ends_with(segment::TMP_EXT) {
            // An interrupted segment creation: never renamed, so never part of the log.
            fs::remove_file(ent.path()).map_err(|e| WalError::io(ent.path(), e))?;
            removed_tmp = true;
            continue;
        }
        if let Some((seq, first)) = segment::parse_segment_name(&name) {
            segs.push((seq, first, ent.path()));
        }
    }
    if removed_tmp {
        segment::sync_dir(dir)?;
    }
    segs.sort();
    Ok(segs)
}

impl Wal {
    /// Opens the WAL in `dir` (creating the directory and a first segment when there is none),
    /// verifies and replays every segment.
    pub fn open(dir: &Path, opts: WalOptions) -> Result<Opened, WalError> {
        Self::open_observed(dir, opts, &mut |_, _, _, record| record)
    }

    /// [`open`](Self::open), passing every record but segment headers through `observe`
    /// (segment sequence, frame offset, frame length, record) before it is replayed; what
    /// `observe` returns is replayed instead (see [`read::ReplayLocator`]).
    pub fn open_observed(
        dir: &Path,
        opts: WalOptions,
        observe: &mut dyn FnMut(u64, u64, u64, Record) -> Record,
    ) -> Result<Opened, WalError> {
        fs::create_dir_all(dir).map_err(|e| WalError::io(dir, e))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| WalError::io(&lock_path, e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(WalError::Locked(dir.to_path_buf())),
            Err(TryLockError::Error(e)) => return Err(WalError::io(&lock_path, e)),
        }

        let segs = list_segments(dir)?;
        if segs.is_empty() {
            let meta = LogMeta::default();
            let header = SegmentHeader {
                seq: 1,
                first_index: 1,
                ..Default::default()
            };
            let frame = encode_record(&Record::SegmentHeader(header))?;
            let current = SegmentFile::create(dir, 1, 1, opts.segment_size, &frame)?;
            let mut wal = Wal {
                dir: dir.to_path_buf(),
                opts,
                _lock: lock,
                segments: vec![SegmentMeta {
                    seq: 1,
                    path: current.path.clone(),
                    max_entry_index: None,
                    // SegmentFile::create syncs the header before the file gets its name.
                    synced_len: frame.len() as u64,
                }],
                current,
                header_len: frame.len() as u64,
                flushed: frame.len() as u64,
                buf: Vec::new(),
                unsynced: false,
                meta,
                failed: None,
                #[cfg(feature = "failpoints")]
                sidecar: synced::Sidecar::open(dir)?,
            };
            wal.note_synced()?;
            return Ok(Opened {
                wal,
                replayed: Replayed::default(),
                fresh: true,
            });
        }

        for pair in segs.windows(2) {
            let (a, b) = (&pair[0], &pair[1]);
            if b.0 != a.0 + 1 {
                let reason = if b.0 == a.0 {
                    format!("two segments with sequence {}", a.0)
                } else {
                    format!(
                        "missing segment: sequence {} follows {} (segments {}..={} are absent)",
                        b.0,
                        a.0,
                        a.0 + 1,
                        b.0 - 1
                    )
                };
                return Err(corrupt(&b.2, 0, reason));
            }
        }

        let mut replay = replay::Replay::new();
        let mut metas = Vec::with_capacity(segs.len());
        // Where the HardState in force was written, to name it if it turns out out of range.
        let mut hs_at = (segs[0].2.clone(), 0u64);
        let mut last_scan = None;
        let n = segs.len();
        for (i, (seq, first_index, path)) in segs.iter().enumerate() {
            let is_last = i + 1 == n;
            let bytes = fs::read(path).map_err(|e| WalError::io(path, e))?;
            let ScanOutcome { records, end } = scan_segment_bytes(&bytes);
            match &end {
                ScanEnd::Clean { .. } => {}
                // A torn tail after a valid header, in the last segment: repaired below.
                ScanEnd::Torn { offset, .. } if is_last && *offset > 0 => {}
                ScanEnd::Torn { offset, reason } => {
                    let why = if is_last {
                        format!("segment header is damaged: {reason}")
                    } else {
                        format!("{reason} (in a segment that is not the last one)")
                    };
                    return Err(corrupt(path, *offset, why));
                }
                ScanEnd::Corrupt { offset, reason } => {
                    return Err(corrupt(path, *offset, reason.clone()))
                }
            }
            let header_len = records.first().map_or(0, |r| r.frame_len);
            let mut recs = records.into_iter();
            let header = match recs.next() {
                Some(ScannedRecord {
                    record: Record::SegmentHeader(h),
                    ..
                }) => h,
                // scan_segment_bytes guarantees offset 0 is a header when there is a record.
                _ => return Err(corrupt(path, 0, "segment has no header")),
            };
            if header.seq != *seq || header.first_index != *first_index {
                return Err(corrupt(
                    path,
                    0,
                    format!(
                        "segment header says sequence {} first index {}, file name says {} {}",
                        header.seq, header.first_index, seq, first_index
                    ),
                ));
            }
            replay
                .segment_header(&header)
                .map_err(|r| corrupt(path, 0, r))?;
            if i == 0 {
                hs_at = (path.clone(), 0);
            }
            let mut max_entry_index = None;
            for sr in recs {
                match &sr.record {
                    Record::Entry(e) => {
                        max_entry_index = Some(max_entry_index.unwrap_or(0).max(e.index));
                    }
                    Record::HardState(_) | Record::Snapshot { .. } => {
                        hs_at = (path.clone(), sr.offset);
                    }
                    _ => {}
                }
                replay
                    .apply(observe(*seq, sr.offset, sr.frame_len, sr.record))
                    .map_err(|r| corrupt(path, sr.offset, r))?;
            }
            metas.push(SegmentMeta {
                seq: *seq,
                path: path.clone(),
                max_entry_index,
                // Earlier segments were synced when rotated away from; the last one is synced
                // below.
                synced_len: end.offset(),
            });
            if is_last {
                last_scan = Some((bytes, end, header_len));
            }
        }

        let meta = replay.meta();
        let replayed = replay.finish().map_err(|e| match e {
            replay::FinishError::MissingEntries(r) => corrupt(&segs[0].2, 0, r),
            replay::FinishError::CommitOutOfRange(r) => corrupt(&hs_at.0, hs_at.1, r),
        })?;

        let (bytes, end, header_len) = last_scan.expect("at least one segment");
        let last_path = &segs[n - 1].2;
        let current = SegmentFile::open(last_path)?;
        let valid_end = end.offset();
        if let ScanEnd::Torn { offset, reason } = &end {
            // Cut the torn record off: zero everything from it to the last non-zero byte so
            // later appends start on clean zeros, and make the repair durable before use.
            let dirty_end = bytes
                .iter()
                .rposition(|&b| b != 0)
                .map_or(*offset, |p| p as u64 + 1);
            current.zero_range(*offset, dirty_end)?;
            current.sync_data()?;
            tracing::warn!(
                file = %last_path.display(),
                offset = *offset,
                reason = %reason,
                "WAL torn tail truncated (the last write before a crash was incomplete)"
            );
        } else {
            // A process killed after handing records to the kernel but before its fdatasync
            // leaves them in the page cache only: replayed, they count as persisted (raft may
            // acknowledge them to the leader), so make them durable first. One sync per start.
            current.sync_data()?;
        }
        current.ensure_preallocated(opts.segment_size)?;

        let mut wal = Wal {
            dir: dir.to_path_buf(),
            opts,
            _lock: lock,
            segments: metas,
            current,
            header_len,
            flushed: valid_end,
            buf: Vec::new(),
            unsynced: false,
            meta,
            failed: None,
            #[cfg(feature = "failpoints")]
            sidecar: synced::Sidecar::open(dir)?,
        };
        wal.note_synced()?;
        Ok(Opened {
            wal,
            replayed,
            fresh: false,
        })
    }

    /// The WAL directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The options in force.
    pub fn options(&self) -> &WalOptions {
        &self.opts
    }

    /// Paths of the segment files, oldest first (the last is the current one).
    pub fn segment_paths(&self) -> Vec<PathBuf> {
        self.segments.iter().map(|s| s.path.clone()).collect()
    }

    /// The log state the WAL has written so far (HardState exactly as written).
    pub fn meta(&self) -> &LogMeta {
        &self.meta
    }

    fn check_ok(&self) -> Result<(), WalError> {
        match &self.failed {
            Some(why) => Err(WalError::Failed(why.clone())),
            None => Ok(()),
        }
    }

    /// Runs `f`; if it fails, poisons the WAL so nothing is written on top of an unknown state.
    fn guard<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, WalError>,
    ) -> Result<T, WalError> {
        self.check_ok()?;
        let r = f(self);
        if let Err(e) = &r {
            if self.failed.is_none() {
                self.failed = Some(e.to_string());
            }
        }
        r
    }

    /// Hands buffered records to the kernel (no sync).
    fn flush(&mut self) -> Result<(), WalError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.current.write_at(&self.buf, self.flushed)?;
        self.flushed += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    /// Records the synced lengths in `synced.txt` (feature `failpoints`; see [`synced`]).
    /// Called after every fsync of a segment and every creation or removal of one.
    #[cfg(feature = "failpoints")]
    fn note_synced(&mut self) -> Result<(), WalError> {
        self.sidecar.write(
            &self.dir,
            self.segments
                .iter()
                .map(|s| (s.path.as_path(), s.synced_len)),
        )
    }

    /// Without the `failpoints` feature there is no sidecar.
    #[cfg(not(feature = "failpoints"))]
    fn note_synced(&mut self) -> Result<(), WalError> {
        Ok(())
    }

    /// Closes the current segment (durably) and starts the next one.
    fn rotate(&mut self) -> Result<(), WalError> {
        self.flush()?;
        // Data and the cut size durable before the next segment exists: so only the last
        // segment can ever hold a torn tail.
        self.current.finish(self.flushed)?;
        if let Some(seg) = self.segments.last_mut() {
            seg.synced_len = self.flushed;
        }
        self.note_synced()?;
        let seq = self.segments.last().map_or(1, |s| s.seq + 1);
        let first_index = self.meta.last_index + 1;
        let header = Record::SegmentHeader(SegmentHeader {
            seq,
            first_index,
            truncated_index: self.meta.truncated_index,
            truncated_term: self.meta.truncated_term,
            hard_state: self.meta.hard_state.clone(),
            conf_state: self.meta.conf_state.clone(),
        });
        let frame = encode_record(&header)?;
        let seg = SegmentFile::create(&self.dir, seq, first_index, self.opts.segment_size, &frame)?;
        tracing::debug!(file = %seg.path.display(), "WAL segment created");
        self.segments.push(SegmentMeta {
            seq,
            path: seg.path.clone(),
            max_entry_index: None,
            synced_len: frame.len() as u64,
        });
        self.current = seg;
        self.header_len = frame.len() as u64;
        self.flushed = self.header_len;
        self.unsynced = false;
        self.note_synced()?;
        Ok(())
    }

    /// Buffers one encoded frame, rotating first if it would overflow the current segment.
    fn push_frame(&mut self, frame: &[u8]) -> Result<(), WalError> {
        let pos = self.flushed + self.buf.len() as u64;
        if pos + frame.len() as u64 > self.opts.segment_size && pos > self.header_len {
            self.rotate()?;
        }
        self.buf.extend_from_slice(frame);
        self.unsynced = true;
        if self.buf.len() >= FLUSH_THRESHOLD {
            self.flush()?;
        }
        Ok(())
    }

    /// Appends entries. They must be contiguous, start after the truncated index and at most
    /// one past the last index; starting at or below the last index overwrites that suffix
    /// (raft replaced a conflicting tail). Not synced.
    pub fn append_entries(&mut self, entries: &[Entry]) -> Result<(), WalError> {
        self.check_ok()?;
        let Some(first) = entries.first() else {
            return Ok(());
        };
        if first.index <= self.meta.truncated_index {
            return Err(WalError::InvalidRequest(format!(
                "append at index {} overwrites compacted entries (truncated at {})",
                first.index, self.meta.truncated_index
            )));
        }
        if first.index > self.meta.last_index + 1 {
            return Err(WalError::InvalidRequest(format!(
                "append at index {} leaves a gap after last index {}",
                first.index, self.meta.last_index
            )));
        }
        for pair in entries.windows(2) {
            if pair[1].index != pair[0].index + 1 {
                return Err(WalError::InvalidRequest(format!(
                    "appended entries are not contiguous ({} then {})",
                    pair[0].index, pair[1].index
                )));
            }
        }
        // Encode everything first so an encoding error writes nothing.
        let frames = entries
            .iter()
            .map(|e| encode_record(&Record::Entry(e.clone())))
            .collect::<Result<Vec<_>, _>>()?;
        self.guard(|w| {
            for (e, frame) in entries.iter().zip(&frames) {
                w.push_frame(frame)?;
                let seg = w.segments.last_mut().expect("current segment");
                seg.max_entry_index = Some(seg.max_entry_index.unwrap_or(0).max(e.index));
                w.meta.last_index = e.index;
            }
            Ok(())
        })
    }

    /// Writes a HardState record. Not synced.
    pub fn write_hard_state(&mut self, hs: &HardState) -> Result<(), WalError> {
        self.check_ok()?;
        let frame = encode_record(&Record::HardState(hs.clone()))?;
        self.guard(|w| {
            w.push_frame(&frame)?;
            w.meta.hard_state = hs.clone();
            Ok(())
        })
    }

    /// Writes a ConfState record. Not synced.
    pub fn write_conf_state(&mut self, cs: &ConfState) -> Result<(), WalError> {
        self.check_ok()?;
        let frame = encode_record(&Record::ConfState(cs.clone()))?;
        self.guard(|w| {
            w.push_frame(&frame)?;
            w.meta.conf_state = cs.clone();
            Ok(())
        })
    }

    /// Records a compaction: entries ≤ `index` (whose term is `term`) are no longer needed.
    /// A no-op if `index` is not past the current truncated index. Not synced.
    pub fn write_compact(&mut self, index: u64, term: u64) -> Result<(), WalError> {
        self.check_ok()?;
        if index <= self.meta.truncated_index {
            return Ok(());
        }
        if index > self.meta.last_index {
            return Err(WalError::InvalidRequest(format!(
                "compaction to index {index} beyond the last index {}",
                self.meta.last_index
            )));
        }
        let frame = encode_record(&Record::Compact { index, term })?;
        self.guard(|w| {
            w.push_frame(&frame)?;
            w.meta.truncated_index = index;
            w.meta.truncated_term = term;
            Ok(())
        })
    }

    /// Records an installed snapshot as one record (atomic): the log is emptied, truncated at
    /// (`index`, `term`), with the given HardState and ConfState. Not synced.
    pub fn write_snapshot(
        &mut self,
        index: u64,
        term: u64,
        hs: &HardState,
        cs: &ConfState,
    ) -> Result<(), WalError> {
        self.check_ok()?;
        if index <= self.meta.truncated_index {
            return Err(WalError::SnapshotOutOfDate {
                index,
                truncated: self.meta.truncated_index,
            });
        }
        if hs.commit < index {
            return Err(WalError::InvalidRequest(format!(
                "snapshot at {index} with hard state commit {} below it",
                hs.commit
            )));
        }
        let frame = encode_record(&Record::Snapshot {
            index,
            term,
            hard_state: hs.clone(),
            conf_state: cs.clone(),
        })?;
        self.guard(|w| {
            w.push_frame(&frame)?;
            w.meta.truncated_index = index;
            w.meta.truncated_term = term;
            w.meta.last_index = index;
            w.meta.hard_state = hs.clone();
            w.meta.conf_state = cs.clone();
            Ok(())
        })
    }

    /// Makes everything written so far durable: one `fdatasync` of the current segment (earlier
    /// segments were synced when rotated away from). A no-op when nothing is pending.
    pub fn sync(&mut self) -> Result<(), WalError> {
        self.guard(|w| {
            if !w.unsynced {
                return Ok(());
            }
            w.flush()?;
            w.current.sync_data()?;
            w.unsynced = false;
            if let Some(seg) = w.segments.last_mut() {
                seg.synced_len = w.flushed;
            }
            w.note_synced()
        })
    }

    /// Hands everything written so far to the kernel without an fdatasync (it survives the
    /// process dying, not the machine); a later [`sync`](Self::sync) still syncs it. Only the
    /// planted `ack_before_fsync` bug uses this in place of a sync.
    pub fn write_out(&mut self) -> Result<(), WalError> {
        self.guard(|w| w.flush())
    }

    /// Deletes the oldest segment files whose entries are all ≤ `upto_index`, oldest first,
    /// stopping at the first one that is not releasable, and keeping at least
    /// [`WalOptions::max_wals`] files (nothing is deleted when it is 0) and always the current
    /// segment. `upto_index` is clamped to the truncated index: entries a snapshot does not
    /// cover are never released. Syncs pending writes first, so the compaction record that
    /// justifies the deletion is durable before any file goes. Returns how many were deleted.
    pub fn release(&mut self, upto_index: u64) -> Result<usize, WalError> {
        self.check_ok()?;
        if self.opts.max_wals == 0 {
            return Ok(0);
        }
        self.sync()?;
        let upto = upto_index.min(self.meta.truncated_index);
        let keep = self.opts.max_wals.max(1);
        self.guard(|w| {
            let mut deleted = 0;
            while w.segments.len() > keep {
                let oldest = &w.segments[0];
                if oldest.max_entry_index.is_some_and(|m| m > upto) {
                    break;
                }
                fs::remove_file(&oldest.path).map_err(|e| WalError::io(&oldest.path, e))?;
                // One directory sync per file: a crash must never leave a hole in the
                // sequence (a newer file gone while an older one is back).
                segment::sync_dir(&w.dir)?;
                tracing::debug!(file = %oldest.path.display(), "WAL segment released");
                w.segments.remove(0);
                w.note_synced()?;
                deleted += 1;
            }
            Ok(deleted)
        })
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        // Best effort: hand buffered records to the kernel (no sync: unsynced data carries no
        // durability promise anyway, but a clean shutdown should not lose it needlessly).
        if self.failed.is_none() {
            let _ = self.flush();
        }
    }
}

#[cfg(test)]
mod tests;
