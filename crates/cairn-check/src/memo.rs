//! The search's memo: which (set of linearized operations, model state) pairs were explored.
//!
//! The set carries an incremental Zobrist hash (the XOR of a fixed random word per member), so
//! a lookup hashes the state only, and nothing is cloned unless the pair is new.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use crate::bitset::Bitset;
use crate::fxhash::{FxBuildHasher, FxHasher};

/// A set of operation indices with a hash kept up to date as members come and go.
#[derive(Debug, Clone)]
pub(crate) struct Linearized {
    bits: Bitset,
    hash: u64,
}

impl Linearized {
    /// An empty set for indices `0..len`.
    pub(crate) fn new(len: usize) -> Self {
        Linearized {
            bits: Bitset::new(len),
            hash: 0,
        }
    }

    /// Adds `index`, which must not be a member.
    pub(crate) fn insert(&mut self, index: usize) {
        self.bits.set(index);
        self.hash ^= zobrist(index);
    }

    /// Removes `index`, which must be a member.
    pub(crate) fn remove(&mut self, index: usize) {
        self.bits.clear(index);
        self.hash ^= zobrist(index);
    }
}

/// The random word of member `index` (splitmix64 of it).
fn zobrist(index: usize) -> u64 {
    let mut z = (index as u64)
        .wrapping_add(1)
        .wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The explored (set, state) pairs, bucketed by a hash of both.
pub(crate) struct Memo<S> {
    table: HashMap<u64, Vec<(Bitset, S)>, FxBuildHasher>,
}

impl<S> Default for Memo<S> {
    fn default() -> Self {
        Memo {
            table: HashMap::default(),
        }
    }
}

impl<S: Clone + Eq + Hash> Memo<S> {
    /// Records the pair; `false` if it was already there.
    pub(crate) fn insert(&mut self, set: &Linearized, state: &S) -> bool {
        let mut hasher = FxHasher::default();
        state.hash(&mut hasher);
        hasher.write_u64(set.hash);
        let bucket = self.table.entry(hasher.finish()).or_default();
        if bucket
            .iter()
            .any(|(bits, s)| *bits == set.bits && s == state)
        {
            return false;
        }
        bucket.push((set.bits.clone(), state.clone()));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::{Linearized, Memo};

    #[test]
    fn pairs_are_remembered_by_set_and_state() {
        let mut memo = Memo::default();
        let mut set = Linearized::new(100);
        assert!(memo.insert(&set, &1));
        assert!(!memo.insert(&set, &1));
        assert!(memo.insert(&set, &2));
        set.insert(70);
        assert!(memo.insert(&set, &1));
        set.insert(3);
        set.remove(70);
        assert!(memo.insert(&set, &1));
        set.remove(3);
        assert!(!memo.insert(&set, &2));
    }
}
