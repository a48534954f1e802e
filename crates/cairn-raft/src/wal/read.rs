//! Reading entries back from the segment files, so that [`DiskStorage`] need not keep every
//! retained entry's payload in memory.
//!
//! Every live entry has an [`EntryLoc`]: the segment it is in and the offset and length of its
//! record frame. Locations come from two places:
//!
//! * on open, [`ReplayLocator`] sees every record as replay reads it (through
//!   [`Wal::open_observed`]), remembers where each entry was, and strips the payload before the
//!   record is replayed, so the replayed log holds indexes and terms only;
//! * on append, [`Wal::locate_appended`] works out where the frames just written went from the
//!   write position before and after the append (the frames are contiguous, except that a
//!   rotation starts a new segment right after its header).
//!
//! [`read_entries`] reads frames back with positioned reads and checks them exactly as replay
//! does (length, crc32c, record type, decoding) plus the index and term the caller expects.
//! Only data already handed to the kernel can be read back ([`Wal::readable_end`]); records
//! still in the WAL's write buffer are not in the file yet.
//!
//! [`DiskStorage`]: crate::storage::DiskStorage

use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use raft::eraftpb::Entry;

use super::record::{decode_body, kind, Record, RECORD_HEADER_LEN};
use super::{Replayed, Wal};
use crate::error::WalError;

/// Where one entry's record frame is in the WAL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryLoc {
    /// Sequence number of the segment file.
    pub seq: u64,
    /// Offset of the frame in that file.
    pub offset: u64,
    /// Length of the whole frame (record header, type byte and the entry's protobuf).
    pub len: u32,
}

impl EntryLoc {
    /// Bytes of the entry's protobuf encoding (what raft's `compute_size` counts).
    pub fn entry_size(&self) -> u64 {
        u64::from(self.len).saturating_sub(RECORD_HEADER_LEN as u64 + 1)
    }

    fn end(&self) -> u64 {
        self.offset + u64::from(self.len)
    }
}

/// Length of the frame `append_entries` writes for `e`.
pub fn entry_frame_len(e: &Entry) -> u64 {
    RECORD_HEADER_LEN as u64 + 1 + u64::from(protobuf::Message::compute_size(e))
}

impl Wal {
    /// `(segment sequence, offset)` where the next frame would be written if it fits.
    pub fn write_end(&self) -> (u64, u64) {
        let seq = self.segments.last().map_or(0, |s| s.seq);
        (seq, self.flushed + self.buf.len() as u64)
    }

    /// `(segment sequence, offset)` up to which written records are in the file (handed to the
    /// kernel, synced or not) and so can be read back; everything in older segments is.
    pub fn readable_end(&self) -> (u64, u64) {
        let seq = self.segments.last().map_or(0, |s| s.seq);
        (seq, self.flushed)
    }

    /// True if the frame at `loc` can be read back from its file now.
    pub fn is_readable(&self, loc: &EntryLoc) -> bool {
        let (seq, flushed) = self.readable_end();
        loc.seq < seq || (loc.seq == seq && loc.end() <= flushed)
    }

    /// `(sequence, path)` of every segment file, oldest first.
    pub fn segment_files(&self) -> Vec<(u64, PathBuf)> {
        self.segments
            .iter()
            .map(|s| (s.seq, s.path.clone()))
            .collect()
    }

    /// Sequence numbers of the oldest and the current segment.
    pub fn segment_range(&self) -> (u64, u64) {
        let first = self.segments.first().map_or(0, |s| s.seq);
        let last = self.segments.last().map_or(0, |s| s.seq);
        (first, last)
    }

    /// Where the frames of `entries` went, given that a successful
    /// [`append_entries`](Wal::append_entries)`(entries)` was the only write since
    /// [`write_end`](Wal::write_end) returned `before`. Frames follow each other; a segment
    /// that was rotated away from ends right after its last frame (it was cut to its used
    /// length) and the next frame starts right after the new segment's header. `None` if the
    /// result does not end exactly at the current write position (the layout is not what this
    /// expects); the caller must then not rely on the locations.
    pub fn locate_appended(&self, before: (u64, u64), entries: &[Entry]) -> Option<Vec<EntryLoc>> {
        let (end_seq, end_pos) = self.write_end();
        let (mut seq, mut pos) = before;
        // End of segment `seq` when it is not the current one (its file was cut to its length).
        let seg_len = |seq: u64| -> Option<u64> {
            let s = self.segments.iter().find(|s| s.seq == seq)?;
            std::fs::metadata(&s.path).ok().map(|m| m.len())
        };
        let mut seg_end = if seq == end_seq {
            None
        } else {
            Some(seg_len(seq)?)
        };
        let mut locs = Vec::with_capacity(entries.len());
        for e in entries {
            let len = entry_frame_len(e);
            while let Some(end) = seg_end {
                if pos < end {
                    break;
                }
                if seq >= end_seq || pos > end {
                    return None;
                }
                seq += 1;
                pos = self.header_len;
                seg_end = if seq == end_seq {
                    None
                } else {
                    Some(seg_len(seq)?)
                };
            }
            locs.push(EntryLoc {
                seq,
                offset: pos,
                len: u32::try_from(len).ok()?,
            });
            pos += len;
        }
        ((seq, pos) == (end_seq, end_pos)).then_some(locs)
    }
}

/// Records where each entry is while [`Wal::open_observed`] replays the log, and strips the
/// entries' payloads before they reach the replay (which then holds only indexes and terms).
#[derive(Debug, Default)]
pub struct ReplayLocator {
    /// Increasing indexes; for each index, the location of the newest record with it.
    locs: VecDeque<(u64, EntryLoc)>,
}

impl ReplayLocator {
    /// Sees one record (not a segment header) at `offset` of segment `seq`, in replay order;
    /// returns it for the replay, an entry's data and context emptied.
    pub fn observe(&mut self, seq: u64, offset: u64, frame_len: u64, record: Record) -> Record {
        match record {
            Record::Entry(mut e) => {
                // A record at index i replaces the log from i on, exactly as in the replay.
                while self.locs.back().is_some_and(|(i, _)| *i >= e.index) {
                    self.locs.pop_back();
                }
                if let Ok(len) = u32::try_from(frame_len) {
                    self.locs
                        .push_back((e.index, EntryLoc { seq, offset, len }));
                }
                e.data = Default::default();
                e.context = Default::default();
                Record::Entry(e)
            }
            Record::Compact { index, term } => {
                while self.locs.front().is_some_and(|(i, _)| *i <= index) {
                    self.locs.pop_front();
                }
                Record::Compact { index, term }
            }
            rec @ Record::Snapshot { .. } => {
                self.locs.clear();
                rec
            }
            other => other,
        }
    }

    /// The locations of `replayed.entries`, in order. Fails if one is unknown (which would mean
    /// the replay and this locator disagree about which record is live).
    pub fn finish(self, replayed: &Replayed) -> Result<Vec<EntryLoc>, String> {
        let mut out = Vec::with_capacity(replayed.entries.len());
        let mut locs = self.locs.into_iter().peekable();
        for e in &replayed.entries {
            while locs.peek().is_some_and(|(i, _)| *i < e.index) {
                locs.next();
            }
            match locs.next() {
                Some((i, loc)) if i == e.index => out.push(loc),
                _ => return Err(format!("no WAL record located for entry {}", e.index)),
            }
        }
        Ok(out)
    }
}

fn corrupt(file: &Path, offset: u64, reason: impl Into<String>) -> WalError {
    WalError::Corrupt {
        file: file.to_path_buf(),
        offset,
        reason: reason.into(),
    }
}

/// Frames closer than this are read with one `pread` (the bytes between, dead overwritten
/// entries or state records, are read and skipped).
const MAX_GAP: u64 = 64 * 1024;

/// Reads the entries `want` = `(index, term, location)` back from the segment files
/// (`(sequence, path)`, as [`Wal::segment_files`] lists them), in the order given, verifying
/// each frame as replay does and that it holds the expected index and term. Locations must
/// increase (they do for the entries of a log in index order).
pub fn read_entries(
    files: &[(u64, PathBuf)],
    want: &[(u64, u64, EntryLoc)],
) -> Result<Vec<Entry>, WalError> {
    let mut out = Vec::with_capacity(want.len());
    let mut i = 0;
    while i < want.len() {
        let seq = want[i].2.seq;
        let path = files
            .iter()
            .find(|(s, _)| *s == seq)
            .map(|(_, p)| p.as_path())
            .ok_or_else(|| {
                WalError::InvalidRequest(format!(
                    "entry {} is in WAL segment {seq}, which is not open",
                    want[i].0
                ))
            })?;
        let file = File::open(path).map_err(|e| WalError::io(path, e))?;
        // One run: frames of this segment with small gaps between them.
        while i < want.len() && want[i].2.seq == seq {
            let start = want[i].2.offset;
            let mut j = i + 1;
            while j < want.len()
                && want[j].2.seq == seq
                && want[j].2.offset >= want[j - 1].2.end()
                && want[j].2.offset - want[j - 1].2.end() <= MAX_GAP
            {
                j += 1;
            }
            let end = want[j - 1].2.end();
            if end < start {
                return Err(corrupt(path, start, "entry locations out of order"));
            }
            let mut buf = vec![0u8; (end - start) as usize];
            file.read_exact_at(&mut buf, start)
                .map_err(|e| WalError::io(path, e))?;
            for &(index, term, loc) in &want[i..j] {
                let at = (loc.offset - start) as usize;
                let frame = &buf[at..at + loc.len as usize];
                out.push(check_frame(path, frame, loc.offset, index, term)?);
            }
            i = j;
        }
    }
    Ok(out)
}

/// Verifies one entry frame read back from `path` at `offset`.
fn check_frame(
    path: &Path,
    frame: &[u8],
    offset: u64,
    index: u64,
    term: u64,
) -> Result<Entry, WalError> {
    let bad = |reason: String| corrupt(path, offset, reason);
    if frame.len() <= RECORD_HEADER_LEN {
        return Err(bad(format!("entry frame of {} bytes", frame.len())));
    }
    let len = u32::from_le_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
    let crc = u32::from_le_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let body = &frame[RECORD_HEADER_LEN..];
    if len != body.len() {
        return Err(bad(format!(
            "record length {len} where an entry of {} bytes was written",
            body.len()
        )));
    }
    let actual = crc32c::crc32c(body);
    if actual != crc {
        return Err(bad(format!(
            "crc mismatch (expected {crc:#010x}, got {actual:#010x})"
        )));
    }
    if body[0] != kind::ENTRY {
        return Err(bad(format!(
            "{} record where entry {index} was written",
            Record::kind_name(body[0])
        )));
    }
    match decode_body(body) {
        Ok(Record::Entry(e)) if e.index == index && e.term == term => Ok(e),
        Ok(Record::Entry(e)) => Err(bad(format!(
            "entry {}/{} where entry {index}/{term} was written",
            e.index, e.term
        ))),
        Ok(_) => Err(bad("not an entry record".into())),
        Err(reason) => Err(bad(reason)),
    }
}
