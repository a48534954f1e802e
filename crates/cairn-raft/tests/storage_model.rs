//! Model-based test of `DiskStorage`: random sequences of appends (with conflicting
//! overwrites), HardState and ConfState writes, compactions, snapshot installs, syncs, reopens
//! and changes of the entry cache's budget, checked against a plain in-memory model after every
//! step and after every reopen. Segments are tiny, so appends rotate often and compaction
//! deletes files; with small cache budgets most entries are read back from the segment files
//! (after a reopen, all of them), and `entries()` is checked over several windows and
//! `max_size` limits against raft's own `limit_size` applied to the model.

use std::path::Path;

use cairn_raft::storage::{DiskStorage, WalOptions};
use proptest::prelude::*;
use raft::eraftpb::{ConfState, Entry, HardState, SnapshotMetadata};
use raft::{GetEntriesContext, Storage, StorageError};

#[derive(Debug, Clone)]
enum Op {
    /// Append `count` entries starting `back` entries before the end (0 = after the last);
    /// starting at or before the last index is a conflicting overwrite with a new term.
    Append {
        back: u8,
        count: u8,
        size: u8,
    },
    HardState {
        commit_pick: u16,
        vote: u8,
    },
    ConfState {
        voters: Vec<u8>,
    },
    Compact {
        pick: u16,
    },
    Snapshot {
        ahead: u8,
        bump_term: bool,
        voters: Vec<u8>,
    },
    Sync,
    Reopen {
        sync_first: bool,
    },
    /// Sets the entry cache budget to one of a few sizes (0: nothing that is in the files).
    Budget {
        pick: u8,
    },
}

const BUDGETS: [usize; 4] = [0, 200, 2_000, 1 << 20];

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u8..6, 1u8..8, 0u8..120).prop_map(|(back, count, size)| Op::Append { back, count, size }),
        3 => (any::<u16>(), 0u8..4).prop_map(|(commit_pick, vote)| Op::HardState { commit_pick, vote }),
        1 => proptest::collection::vec(1u8..6, 1..4).prop_map(|voters| Op::ConfState { voters }),
        2 => any::<u16>().prop_map(|pick| Op::Compact { pick }),
        1 => (0u8..4, any::<bool>(), proptest::collection::vec(1u8..6, 1..4))
            .prop_map(|(ahead, bump_term, voters)| Op::Snapshot { ahead, bump_term, voters }),
        2 => Just(Op::Sync),
        2 => any::<bool>().prop_map(|sync_first| Op::Reopen { sync_first }),
        1 => (0u8..4).prop_map(|pick| Op::Budget { pick }),
    ]
}

#[derive(Debug, Default)]
struct Model {
    truncated: (u64, u64),
    entries: Vec<Entry>,
    hs: HardState,
    cs: ConfState,
    /// Current raft term: never decreases; every overwrite happens in a newer term.
    term: u64,
}

impl Model {
    fn last(&self) -> u64 {
        self.entries.last().map_or(self.truncated.0, |e| e.index)
    }

    fn term_of(&self, idx: u64) -> u64 {
        if idx == self.truncated.0 {
            return self.truncated.1;
        }
        self.entries[(idx - self.truncated.0 - 1) as usize].term
    }
}

fn entry(index: u64, term: u64, size: u8) -> Entry {
    Entry {
        index,
        term,
        data: vec![(index ^ term) as u8; size as usize].into(),
        ..Default::default()
    }
}

fn conf(voters: &[u8]) -> ConfState {
    ConfState {
        voters: voters.iter().map(|&v| u64::from(v)).collect(),
        ..Default::default()
    }
}

fn check(s: &DiskStorage, m: &Model) {
    assert_eq!(s.hard_state(), m.hs, "hard state");
    assert_eq!(s.conf_state(), m.cs, "conf state");
    assert_eq!(s.truncated(), m.truncated, "truncated");
    let st = s.initial_state().unwrap();
    assert_eq!(st.hard_state, m.hs);
    assert_eq!(st.conf_state, m.cs);
    let first = s.first_index().unwrap();
    let last = s.last_index().unwrap();
    assert_eq!(first, m.truncated.0 + 1);
    assert_eq!(last, m.last());
    let got = s.entries(first, last + 1, None, ctx()).unwrap();
    assert_eq!(got, m.entries, "entries");
    check_windows(s, m);
    for idx in first - 1..=last {
        assert_eq!(s.term(idx).unwrap(), m.term_of(idx), "term({idx})");
    }
    // raft's restart invariant.
    assert!(first - 1 <= m.hs.commit && m.hs.commit <= last);
}

fn ctx() -> GetEntriesContext {
    GetEntriesContext::empty(false)
}

fn store_err<T: std::fmt::Debug>(r: raft::Result<T>) -> StorageError {
    match r {
        Err(raft::Error::Store(e)) => e,
        other => panic!("expected a storage error, got {other:?}"),
    }
}

/// `entries()` over windows starting at the first, a middle and the last index, with size
/// limits that cut after zero, one or several entries, against the model; and the errors for
/// windows outside the log.
fn check_windows(s: &DiskStorage, m: &Model) {
    let first = m.truncated.0 + 1;
    let last = m.last();
    let one = m
        .entries
        .first()
        .map_or(0, |e| u64::from(protobuf::Message::compute_size(e)));
    assert_eq!(s.entries(first, first, None, ctx()).unwrap(), vec![]);
    let lows = if last >= first {
        vec![first, first + (last - first) / 2, last]
    } else {
        vec![]
    };
    for low in lows {
        for high in [low + 1, low + 3, last + 1] {
            if low > high || high > last + 1 {
                continue;
            }
            for max in [None, Some(0), Some(one), Some(one * 2 + 1), Some(one * 5)] {
                let a = (low - first) as usize;
                let b = (high - first) as usize;
                let mut want = m.entries[a..b].to_vec();
                raft::util::limit_size(&mut want, max);
                let got = s.entries(low, high, max, ctx()).unwrap();
                assert_eq!(got, want, "entries({low}, {high}, {max:?})");
            }
        }
    }
    if first > 1 {
        assert_eq!(
            store_err(s.entries(first - 1, last + 1, None, ctx())),
            StorageError::Compacted
        );
    }
    assert_eq!(
        store_err(s.entries(first, last + 2, None, ctx())),
        StorageError::Unavailable
    );
}

fn open(dir: &Path, opts: &WalOptions, budget: usize) -> DiskStorage {
    let s = DiskStorage::open(dir, opts.clone()).unwrap().0;
    // Reopened: nothing is cached, every entry is read back from the files.
    assert_eq!(s.entry_cache_usage(), (0, 0));
    s.set_entry_cache_budget(budget);
    s
}

fn run(ops: Vec<Op>, segment_size: u64, max_wals: usize) {
    let dir = tempfile::tempdir().unwrap();
    let opts = WalOptions {
        segment_size,
        max_wals,
    };
    let mut budget = BUDGETS[1];
    let mut s = open(dir.path(), &opts, budget);
    let mut m = Model::default();
    for op in ops {
        match op {
            Op::Append { back, count, size } => {
                // Raft never rewrites committed (or compacted) entries.
                let lowest = m.hs.commit.max(m.truncated.0) + 1;
                let start = (m.last() + 1).saturating_sub(u64::from(back)).max(lowest);
                if start <= m.last() || m.term == 0 {
                    m.term += 1;
                }
                let new: Vec<Entry> = (0..u64::from(count))
                    .map(|i| entry(start + i, m.term, size))
                    .collect();
                s.append(&new).unwrap();
                let keep = (start - m.truncated.0 - 1) as usize;
                m.entries.truncate(keep);
                m.entries.extend(new);
            }
            Op::HardState { commit_pick, vote } => {
                let span = m.last() - m.truncated.0 + 1;
                let candidate = m.truncated.0 + u64::from(commit_pick) % span;
                let mut hs = HardState::default();
                hs.term = m.term;
                hs.vote = u64::from(vote);
                hs.commit = m.hs.commit.max(candidate);
                s.set_hard_state(&hs).unwrap();
                m.hs = hs;
            }
            Op::ConfState { voters } => {
                let cs = conf(&voters);
                s.set_conf_state(&cs).unwrap();
                m.cs = cs;
            }
            Op::Compact { pick } => {
                if m.last() > m.truncated.0 {
                    let index = m.truncated.0 + 1 + u64::from(pick) % (m.last() - m.truncated.0);
                    let term = m.term_of(index);
                    s.compact(index).unwrap();
                    let drop = (index - m.truncated.0) as usize;
                    m.entries.drain(..drop);
                    m.truncated = (index, term);
                    m.hs.commit = m.hs.commit.max(index);
                }
            }
            Op::Snapshot {
                ahead,
                bump_term,
                voters,
            } => {
                let index = (m.last() + u64::from(ahead)).max(m.truncated.0 + 1);
                if bump_term || m.term == 0 {
                    m.term += 1;
                }
                let meta = SnapshotMetadata {
                    index,
                    term: m.term,
                    conf_state: Some(conf(&voters)).into(),
                    ..Default::default()
                };
                s.apply_snapshot_metadata(&meta).unwrap();
                m.entries.clear();
                m.truncated = (index, m.term);
                m.hs.term = m.hs.term.max(m.term);
                m.hs.commit = m.hs.commit.max(index);
                m.cs = conf(&voters);
            }
            Op::Sync => {
                s.sync().unwrap();
                // Everything is in the files now: the cache is within its budget.
                let (_, bytes) = s.entry_cache_usage();
                assert!(bytes <= budget, "cache {bytes} bytes over budget {budget}");
            }
            Op::Reopen { sync_first } => {
                if sync_first {
                    s.sync().unwrap();
                }
                drop(s);
                s = open(dir.path(), &opts, budget);
            }
            Op::Budget { pick } => {
                budget = BUDGETS[usize::from(pick) % BUDGETS.len()];
                s.set_entry_cache_budget(budget);
            }
        }
        check(&s, &m);
    }
    drop(s);
    let s = open(dir.path(), &opts, 0);
    check(&s, &m);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn reopened_storage_equals_model(
        ops in proptest::collection::vec(op(), 1..60),
        segment_size in prop_oneof![Just(256u64), Just(700), Just(4096)],
        max_wals in 0usize..3,
    ) {
        run(ops, segment_size, max_wals);
    }
}

fn payload(index: u64) -> Vec<u8> {
    format!("entry {index} ")
        .repeat(1 + (index % 7) as usize)
        .into_bytes()
}

/// A reader thread calls `entries()` over random windows while the writer appends, syncs and
/// compacts with tiny segments (rotation every few entries, old files deleted as soon as
/// compaction allows): every answer is either the right entries or `Compacted`.
#[test]
fn reads_race_rotation_and_compaction() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let dir = tempfile::tempdir().unwrap();
    let opts = WalOptions {
        segment_size: 512,
        max_wals: 1,
    };
    let s = open(dir.path(), &opts, 0);
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let s = s.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let (mut ok, mut compacted) = (0u64, 0u64);
            let mut x = 0x9e37_79b9_7f4a_7c15u64;
            while !stop.load(Ordering::Acquire) {
                let first = s.first_index().unwrap();
                let last = s.last_index().unwrap();
                if last < first {
                    continue;
                }
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let low = first + x % (last - first + 1);
                let high = (low + 1 + (x >> 32) % 30).min(last + 1);
                match s.entries(low, high, None, ctx()) {
                    Ok(ents) => {
                        assert_eq!(ents.len() as u64, high - low);
                        for (e, i) in ents.iter().zip(low..) {
                            assert_eq!((e.index, e.term), (i, 1));
                            assert_eq!(&e.data[..], &payload(i)[..], "entry {i}");
                        }
                        ok += 1;
                    }
                    Err(raft::Error::Store(StorageError::Compacted)) => compacted += 1,
                    Err(e) => panic!("entries({low}, {high}): {e:?}"),
                }
            }
            (ok, compacted)
        })
    };
    let mut next = 1u64;
    for round in 0..400u64 {
        let batch: Vec<Entry> = (next..next + 4)
            .map(|i| Entry {
                index: i,
                term: 1,
                data: payload(i).into(),
                ..Default::default()
            })
            .collect();
        next += 4;
        s.append(&batch).unwrap();
        s.sync().unwrap();
        if round % 3 == 2 {
            s.compact(next - 1 - (round % 13)).unwrap();
        }
    }
    stop.store(true, Ordering::Release);
    let (ok, _compacted) = reader.join().unwrap();
    assert!(ok > 0);
    assert!(
        s.wal_segments().len() <= 2,
        "old segments were released while reading"
    );
    drop(s);
    let s = open(dir.path(), &opts, 0);
    let first = s.first_index().unwrap();
    let ents = s.entries(first, next, None, ctx()).unwrap();
    assert_eq!(ents.len() as u64, next - first);
}
