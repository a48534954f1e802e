//! Model-based test of `DiskStorage`: random sequences of appends (with conflicting
//! overwrites), HardState and ConfState writes, compactions, snapshot installs, syncs and
//! reopens, checked against a plain in-memory model after every step and after every reopen.

use std::path::Path;

use cairn_raft::storage::{DiskStorage, WalOptions};
use proptest::prelude::*;
use raft::eraftpb::{ConfState, Entry, HardState, SnapshotMetadata};
use raft::{GetEntriesContext, Storage};

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
}

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
    let got = s
        .entries(first, last + 1, None, GetEntriesContext::empty(false))
        .unwrap();
    assert_eq!(got, m.entries, "entries");
    for idx in first - 1..=last {
        assert_eq!(s.term(idx).unwrap(), m.term_of(idx), "term({idx})");
    }
    // raft's restart invariant.
    assert!(first - 1 <= m.hs.commit && m.hs.commit <= last);
}

fn open(dir: &Path, opts: &WalOptions) -> DiskStorage {
    DiskStorage::open(dir, opts.clone()).unwrap().0
}

fn run(ops: Vec<Op>, segment_size: u64, max_wals: usize) {
    let dir = tempfile::tempdir().unwrap();
    let opts = WalOptions {
        segment_size,
        max_wals,
    };
    let mut s = open(dir.path(), &opts);
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
            Op::Sync => s.sync().unwrap(),
            Op::Reopen { sync_first } => {
                if sync_first {
                    s.sync().unwrap();
                }
                drop(s);
                s = open(dir.path(), &opts);
            }
        }
        check(&s, &m);
    }
    drop(s);
    let s = open(dir.path(), &opts);
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
