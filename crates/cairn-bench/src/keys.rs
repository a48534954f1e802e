//! Keys, values and the random numbers that pick them.
//!
//! Key `n` of a key space is the prefix followed by `n` in decimal, zero-padded so the whole key
//! is `--key-size` bytes: fixed width keeps numeric and byte order the same, so "keys `s` to
//! `s + N - 1`" is one contiguous range and the `load`ed keys are exactly the ones the read
//! workloads ask for.

use anyhow::{bail, Result};

/// Makes the keys of one key space.
#[derive(Clone, Debug)]
pub struct KeyGen {
    prefix: Vec<u8>,
    width: usize,
}

/// Decimal digits needed to write `n`.
fn digits(n: u64) -> usize {
    n.checked_ilog10().map_or(1, |d| d as usize + 1)
}

impl KeyGen {
    /// A generator for keys `0..space` of `key_size` bytes under `prefix`. Fails when the
    /// numbers do not fit in the bytes the prefix leaves.
    pub fn new(prefix: &str, key_size: usize, space: u64) -> Result<Self> {
        if space == 0 {
            bail!("--key-space-size must be at least 1");
        }
        let need = digits(space - 1);
        let width = key_size.saturating_sub(prefix.len());
        if width < need {
            bail!(
                "--key-size {key_size} cannot hold {space} distinct keys under the prefix {prefix:?} \
                 ({need} digits needed, {width} left): raise --key-size or shorten --prefix"
            );
        }
        Ok(KeyGen {
            prefix: prefix.as_bytes().to_vec(),
            width,
        })
    }

    /// Key number `n`.
    pub fn key(&self, n: u64) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.prefix.len() + self.width);
        k.extend_from_slice(&self.prefix);
        k.extend_from_slice(format!("{n:0w$}", w = self.width).as_bytes());
        k
    }

    /// The range end that makes `[key(first), end)` hold exactly keys `first..=last`.
    pub fn range_end_after(&self, last: u64) -> Vec<u8> {
        let mut k = self.key(last);
        k.push(0);
        k
    }

    /// The prefix every key starts with.
    pub fn prefix(&self) -> &[u8] {
        &self.prefix
    }
}

/// A value of `size` printable bytes (neither server compresses, so the content only has to be
/// deterministic).
pub fn value(size: usize) -> Vec<u8> {
    let mut rng = Rng::new(0x5eed);
    (0..size)
        .map(|_| b'a' + (rng.next_u64() % 26) as u8)
        .collect()
}

/// xorshift64* — small, fast, deterministic per seed; statistical quality is ample for picking
/// keys.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed` (any value, zero included).
    pub fn new(seed: u64) -> Self {
        // splitmix64 of the seed, so neighbouring seeds give unrelated streams; never zero.
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        Rng(z | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n` (`n` ≥ 1).
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_fixed_width_and_ordered() {
        let g = KeyGen::new("/r/", 8, 1000).unwrap();
        assert_eq!(g.key(0), b"/r/00000".to_vec());
        assert_eq!(g.key(999), b"/r/00999".to_vec());
        assert!(g.key(9) < g.key(10));
        let end = g.range_end_after(41);
        assert!(g.key(41) < end && end < g.key(42));
    }

    #[test]
    fn key_space_must_fit() {
        assert!(KeyGen::new("", 3, 1000).is_ok());
        let err = KeyGen::new("", 3, 1001).unwrap_err().to_string();
        assert!(err.contains("--key-size 3"), "{err}");
        assert!(KeyGen::new("abcdefgh", 8, 1).is_err());
        assert!(KeyGen::new("", 8, 0).is_err());
        assert_eq!(digits(0), 1);
        assert_eq!(digits(9), 1);
        assert_eq!(digits(10), 2);
    }

    #[test]
    fn rng_stays_in_range_and_spreads() {
        let mut r = Rng::new(0);
        let mut seen = [0u32; 10];
        for _ in 0..10_000 {
            let v = r.below(10);
            seen[v as usize] += 1;
        }
        assert!(seen.iter().all(|&c| (800..1200).contains(&c)), "{seen:?}");
        assert_ne!(Rng::new(1).next_u64(), Rng::new(2).next_u64());
    }

    #[test]
    fn value_has_the_requested_size() {
        assert_eq!(value(0).len(), 0);
        let v = value(256);
        assert_eq!(v.len(), 256);
        assert!(v.iter().all(u8::is_ascii_lowercase));
        assert_eq!(v, value(256));
    }
}
