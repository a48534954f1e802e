//! Rebuilding the log's state from decoded records, with every cross-record invariant checked.
//!
//! Pure (no I/O), so the rules are testable on their own. Errors are reasons; the caller adds
//! the file and offset.
//!
//! State while replaying:
//! * `truncated` (index, term): entries ≤ index are covered by a snapshot.
//! * `entries`: contiguous, `entries[0].index == log_start`.
//! * `log_start ≥ truncated.index + 1`. It can be *greater* while replaying: when old segments
//!   were released, the oldest remaining segment's header may predate the compaction that made
//!   that possible, so its entries start after a gap that a later `Compact` record closes. A gap
//!   still open at the end means entries are missing ([`Replay::finish`] fails).

use std::collections::VecDeque;

use raft::eraftpb::{ConfState, Entry, HardState};

use super::record::{Record, SegmentHeader};

/// The light part of the log state, which the writer also tracks to fill segment headers.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LogMeta {
    /// Latest HardState record, exactly as written (commit not raised).
    pub hard_state: HardState,
    /// Latest ConfState.
    pub conf_state: ConfState,
    /// Truncated index.
    pub truncated_index: u64,
    /// Term at the truncated index.
    pub truncated_term: u64,
    /// Index of the last entry, or the truncated index when there are none.
    pub last_index: u64,
}

/// What a successful replay yields.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Replayed {
    /// HardState to start raft with. `commit` is raised to the truncated index when it lagged
    /// behind a compaction, so `truncated_index ≤ commit ≤ last index` always holds.
    pub hard_state: HardState,
    /// Latest ConfState (empty if the log was never bootstrapped).
    pub conf_state: ConfState,
    /// Entries ≤ this index are gone (covered by a snapshot). 0 for a log never compacted.
    pub truncated_index: u64,
    /// Term of the entry at `truncated_index`.
    pub truncated_term: u64,
    /// The entries `truncated_index + 1 ..= last`, contiguous.
    pub entries: VecDeque<Entry>,
}

impl Replayed {
    /// Index of the last entry, or the truncated index when there are none.
    pub fn last_index(&self) -> u64 {
        self.entries
            .back()
            .map_or(self.truncated_index, |e| e.index)
    }
}

/// Why [`Replay::finish`] failed.
#[derive(Debug, Clone, PartialEq)]
pub enum FinishError {
    /// Entries between the truncated index and the oldest remaining entry are gone.
    MissingEntries(String),
    /// The HardState's commit lies beyond the last entry.
    CommitOutOfRange(String),
}

impl std::fmt::Display for FinishError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FinishError::MissingEntries(r) | FinishError::CommitOutOfRange(r) => f.write_str(r),
        }
    }
}

/// Replay state machine.
#[derive(Debug, Clone, Default)]
pub struct Replay {
    hard_state: HardState,
    conf_state: ConfState,
    truncated_index: u64,
    truncated_term: u64,
    log_start: u64,
    entries: VecDeque<Entry>,
    started: bool,
}

impl Replay {
    /// A replay that has not seen its first segment header yet.
    pub fn new() -> Replay {
        Replay::default()
    }

    /// Last index: of the last entry, else the one before `log_start`.
    pub fn last_index(&self) -> u64 {
        self.entries
            .back()
            .map_or(self.log_start.saturating_sub(1), |e| e.index)
    }

    /// The light state, as a writer continuing this log must track it.
    pub fn meta(&self) -> LogMeta {
        LogMeta {
            hard_state: self.hard_state.clone(),
            conf_state: self.conf_state.clone(),
            truncated_index: self.truncated_index,
            truncated_term: self.truncated_term,
            last_index: self.last_index(),
        }
    }

    /// Handles the header of the next segment. The first header seeds the state; every later
    /// one must agree exactly with the state replayed so far (it was written from that state).
    pub fn segment_header(&mut self, h: &SegmentHeader) -> Result<(), String> {
        if !self.started {
            if h.first_index <= h.truncated_index {
                return Err(format!(
                    "segment header first index {} is not after its truncated index {}",
                    h.first_index, h.truncated_index
                ));
            }
            self.started = true;
            self.hard_state = h.hard_state.clone();
            self.conf_state = h.conf_state.clone();
            self.truncated_index = h.truncated_index;
            self.truncated_term = h.truncated_term;
            self.log_start = h.first_index;
            return Ok(());
        }
        let last = self.last_index();
        if h.first_index != last + 1 {
            return Err(format!(
                "segment starts at index {} but the preceding log ends at {last}",
                h.first_index
            ));
        }
        if (h.truncated_index, h.truncated_term) != (self.truncated_index, self.truncated_term)
            || h.hard_state != self.hard_state
            || h.conf_state != self.conf_state
        {
            return Err(format!(
                "segment header state (truncated {}/{}, {:?}, {:?}) does not match the \
                 preceding log (truncated {}/{}, {:?}, {:?})",
                h.truncated_index,
                h.truncated_term,
                h.hard_state,
                h.conf_state,
                self.truncated_index,
                self.truncated_term,
                self.hard_state,
                self.conf_state
            ));
        }
        Ok(())
    }

    /// Applies one non-header record.
    pub fn apply(&mut self, rec: Record) -> Result<(), String> {
        if !self.started {
            return Err("record before any segment header".into());
        }
        match rec {
            Record::SegmentHeader(_) => return Err("unexpected segment header".into()),
            Record::Entry(e) => self.entry(e)?,
            Record::HardState(hs) => self.hard_state = hs,
            Record::ConfState(cs) => self.conf_state = cs,
            Record::Compact { index, term } => {
                if index <= self.truncated_index {
                    // Idempotent: an older or repeated compaction changes nothing.
                    return Ok(());
                }
                let last = self.last_index();
                if index > last {
                    return Err(format!(
                        "compaction to index {index} beyond the last index {last}"
                    ));
                }
                if let Some(e) = self.entry_at(index) {
                    if e.term != term {
                        return Err(format!(
                            "compaction to {index} records term {term} but the entry has term {}",
                            e.term
                        ));
                    }
                }
                let drop = (index + 1).saturating_sub(self.log_start) as usize;
                self.entries.drain(..drop.min(self.entries.len()));
                self.log_start = self.log_start.max(index + 1);
                self.truncated_index = index;
                self.truncated_term = term;
            }
            Record::Snapshot {
                index,
                term,
                hard_state,
                conf_state,
            } => {
                if index <= self.truncated_index {
                    return Err(format!(
                        "snapshot at index {index} is not after the truncated index {}",
                        self.truncated_index
                    ));
                }
                // Installing a snapshot replaces the whole log (entries after it may belong to
                // a branch the leader does not have).
                self.entries.clear();
                self.log_start = index + 1;
                self.truncated_index = index;
                self.truncated_term = term;
                self.hard_state = hard_state;
                self.conf_state = conf_state;
            }
        }
        Ok(())
    }

    fn entry_at(&self, index: u64) -> Option<&Entry> {
        let i = index.checked_sub(self.log_start)?;
        self.entries.get(usize::try_from(i).ok()?)
    }

    fn entry(&mut self, e: Entry) -> Result<(), String> {
        if e.index <= self.truncated_index {
            return Err(format!(
                "entry index {} is at or below the truncated index {}",
                e.index, self.truncated_index
            ));
        }
        let last = self.last_index();
        if e.index > last + 1 {
            return Err(format!(
                "entry index {} is not contiguous: the log ends at {last}",
                e.index
            ));
        }
        if e.index < self.log_start {
            // Overwrite reaching into the not-yet-closed gap (see module docs).
            self.entries.clear();
            self.log_start = e.index;
        } else {
            // Raft replaced a conflicting suffix: drop it from e.index on.
            self.entries.truncate((e.index - self.log_start) as usize);
        }
        self.entries.push_back(e);
        Ok(())
    }

    /// Ends the replay, checking the final invariants, and raises `commit` to the truncated
    /// index if it lags (a compaction implies those entries were committed).
    pub fn finish(self) -> Result<Replayed, FinishError> {
        if self.log_start > self.truncated_index + 1 {
            return Err(FinishError::MissingEntries(format!(
                "entries {}..={} are missing (released segments not covered by a compaction)",
                self.truncated_index + 1,
                self.log_start - 1
            )));
        }
        let last = self.last_index();
        let mut hs = self.hard_state;
        if hs.commit < self.truncated_index {
            hs.commit = self.truncated_index;
        }
        if hs.commit > last {
            return Err(FinishError::CommitOutOfRange(format!(
                "hard state commit {} is beyond the last index {last}",
                hs.commit
            )));
        }
        Ok(Replayed {
            hard_state: hs,
            conf_state: self.conf_state,
            truncated_index: self.truncated_index,
            truncated_term: self.truncated_term,
            entries: self.entries,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(index: u64, term: u64) -> Record {
        let x = Entry {
            index,
            term,
            ..Default::default()
        };
        Record::Entry(x)
    }

    fn header(first: u64, ti: u64, tt: u64) -> SegmentHeader {
        SegmentHeader {
            seq: 1,
            first_index: first,
            truncated_index: ti,
            truncated_term: tt,
            ..Default::default()
        }
    }

    fn idx_terms(r: &Replayed) -> Vec<(u64, u64)> {
        r.entries.iter().map(|x| (x.index, x.term)).collect()
    }

    #[test]
    fn overwrite_replaces_suffix() {
        let mut r = Replay::new();
        r.segment_header(&header(1, 0, 0)).unwrap();
        for i in 1..=5 {
            r.apply(e(i, 1)).unwrap();
        }
        r.apply(e(3, 2)).unwrap();
        r.apply(e(4, 2)).unwrap();
        let out = r.finish().unwrap();
        assert_eq!(idx_terms(&out), vec![(1, 1), (2, 1), (3, 2), (4, 2)]);
    }

    #[test]
    fn gaps_and_compacted_overwrites_are_rejected() {
        let mut r = Replay::new();
        r.segment_header(&header(1, 0, 0)).unwrap();
        r.apply(e(1, 1)).unwrap();
        assert!(r.apply(e(3, 1)).unwrap_err().contains("not contiguous"));
        r.apply(e(2, 1)).unwrap();
        r.apply(Record::Compact { index: 1, term: 1 }).unwrap();
        assert!(r.apply(e(1, 2)).unwrap_err().contains("truncated"));
        assert!(r
            .apply(Record::Compact { index: 9, term: 1 })
            .unwrap_err()
            .contains("beyond"));
        assert!(r
            .apply(Record::Compact { index: 2, term: 7 })
            .unwrap_err()
            .contains("term"));
    }

    #[test]
    fn gap_after_release_must_be_closed() {
        // Oldest remaining segment predates the compaction that released its predecessors.
        let mut r = Replay::new();
        r.segment_header(&header(11, 2, 1)).unwrap();
        r.apply(e(11, 1)).unwrap();
        r.apply(e(12, 1)).unwrap();
        assert!(matches!(
            r.clone().finish(),
            Err(FinishError::MissingEntries(_))
        ));
        r.apply(Record::Compact { index: 10, term: 1 }).unwrap();
        let out = r.finish().unwrap();
        assert_eq!(out.truncated_index, 10);
        assert_eq!(idx_terms(&out), vec![(11, 1), (12, 1)]);
        assert_eq!(
            out.hard_state.commit, 10,
            "commit raised to truncated index"
        );
    }

    #[test]
    fn snapshot_replaces_log_and_commit_bounds() {
        let mut r = Replay::new();
        r.segment_header(&header(1, 0, 0)).unwrap();
        for i in 1..=5 {
            r.apply(e(i, 1)).unwrap();
        }
        let hs = HardState {
            commit: 4,
            term: 3,
            ..Default::default()
        };
        r.apply(Record::Snapshot {
            index: 4,
            term: 3,
            hard_state: hs.clone(),
            conf_state: ConfState::default(),
        })
        .unwrap();
        assert_eq!(r.last_index(), 4);
        r.apply(e(5, 3)).unwrap();
        let mut big = hs.clone();
        big.commit = 6;
        r.apply(Record::HardState(big)).unwrap();
        assert!(matches!(r.finish(), Err(FinishError::CommitOutOfRange(_))));
    }

    #[test]
    fn later_header_must_match() {
        let mut r = Replay::new();
        r.segment_header(&header(1, 0, 0)).unwrap();
        r.apply(e(1, 1)).unwrap();
        let mut h = header(2, 0, 0);
        h.seq = 2;
        r.segment_header(&h).unwrap();
        assert!(r.segment_header(&header(5, 0, 0)).is_err());
        let mut h2 = header(2, 0, 0);
        h2.hard_state.term = 9;
        assert!(r
            .segment_header(&h2)
            .unwrap_err()
            .contains("does not match"));
    }
}
