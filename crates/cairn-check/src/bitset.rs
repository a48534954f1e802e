//! A fixed-size bitset: the set of operations linearized so far, part of the memo key.

/// A set of operation indices below a fixed bound.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Bitset {
    words: Box<[u64]>,
}

impl Bitset {
    /// An empty set for indices `0..len`.
    pub(crate) fn new(len: usize) -> Self {
        Bitset {
            words: vec![0; len.div_ceil(64)].into_boxed_slice(),
        }
    }

    /// Adds `index`.
    pub(crate) fn set(&mut self, index: usize) {
        self.words[index / 64] |= 1 << (index % 64);
    }

    /// Removes `index`.
    pub(crate) fn clear(&mut self, index: usize) {
        self.words[index / 64] &= !(1 << (index % 64));
    }

    /// Whether `index` is in the set.
    #[cfg(test)]
    pub(crate) fn contains(&self, index: usize) -> bool {
        self.words[index / 64] & (1 << (index % 64)) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::Bitset;

    #[test]
    fn set_and_clear() {
        let mut set = Bitset::new(130);
        for i in [0, 63, 64, 129] {
            assert!(!set.contains(i));
            set.set(i);
            assert!(set.contains(i));
        }
        set.clear(64);
        assert!(!set.contains(64));
        assert!(set.contains(63) && set.contains(129));
        assert_ne!(set, Bitset::new(130));
    }
}
