//! Range reads: which keys `[start, end)` covers, with etcd's conventions for a single key
//! (`end` empty) and for no end (`end == "\0"`), and what a Range with a limit returns.

use std::ops::Bound;

use super::{EtcdOutput, EtcdState, KeyValue};

/// Whether `key` is in etcd's range `(start, end)`: `end` empty means the single key `start`,
/// `end == "\0"` every key from `start` on (so `("", "\0")` is the whole keyspace), otherwise
/// `[start, end)` in byte order. Watches and Ranges use the same convention.
pub fn key_in_range(start: &str, end: &str, key: &str) -> bool {
    match end {
        "" => key == start,
        "\0" => key >= start,
        _ => start <= key && key < end,
    }
}

impl EtcdState {
    /// The live keys in etcd's range `(start, end)` (see [`key_in_range`]), in key order.
    pub fn keys_in_range<'a>(
        &'a self,
        start: &'a str,
        end: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a KeyValue)> + 'a {
        let bounds: (Bound<&str>, Bound<&str>) = match end {
            "" => (Bound::Included(start), Bound::Included(start)),
            "\0" => (Bound::Included(start), Bound::Unbounded),
            _ if start < end => (Bound::Included(start), Bound::Excluded(end)),
            // An empty range (`[start, start)` is one `BTreeMap::range` accepts).
            _ => (Bound::Included(start), Bound::Excluded(start)),
        };
        self.keys
            .range::<str, _>(bounds)
            .map(|(k, v)| (k.as_str(), v))
    }

    /// What etcd answers to a Range over `(start, end)` with `limit` (0 or less: none): the
    /// first `limit` keys, how many keys are in range, and whether the limit cut it.
    pub(super) fn range_output(&self, start: &str, end: &str, limit: i64) -> EtcdOutput {
        let mut kvs = Vec::new();
        let mut count = 0i64;
        for (key, kv) in self.keys_in_range(start, end) {
            if limit <= 0 || count < limit {
                kvs.push((key.to_string(), kv.clone()));
            }
            count += 1;
        }
        EtcdOutput::Range {
            more: limit > 0 && count > limit,
            kvs,
            count,
            revision: self.revision,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::EtcdInput;

    fn state() -> EtcdState {
        let mut state = EtcdState::default();
        for key in ["a", "b", "ba", "c"] {
            let put = EtcdInput::Put {
                key: key.into(),
                value: format!("v{key}"),
            };
            state = state.apply(&put).0;
        }
        state
    }

    fn keys(output: &EtcdOutput) -> (Vec<&str>, i64, bool) {
        let EtcdOutput::Range {
            kvs, count, more, ..
        } = output
        else {
            panic!("not a range: {output:?}")
        };
        (kvs.iter().map(|(k, _)| k.as_str()).collect(), *count, *more)
    }

    #[test]
    fn ranges_follow_etcd_conventions() {
        let s = state();
        assert_eq!(keys(&s.range_output("b", "", 0)), (vec!["b"], 1, false));
        assert_eq!(keys(&s.range_output("bb", "", 0)), (vec![], 0, false));
        assert_eq!(
            keys(&s.range_output("b", "c", 0)),
            (vec!["b", "ba"], 2, false)
        );
        assert_eq!(
            keys(&s.range_output("", "\0", 0)),
            (vec!["a", "b", "ba", "c"], 4, false)
        );
        assert_eq!(
            keys(&s.range_output("b", "\0", 0)),
            (vec!["b", "ba", "c"], 3, false)
        );
        assert_eq!(keys(&s.range_output("c", "b", 0)), (vec![], 0, false));
        assert_eq!(keys(&s.range_output("b", "b", 0)), (vec![], 0, false));
    }

    #[test]
    fn a_limit_cuts_the_keys_but_not_the_count() {
        let s = state();
        assert_eq!(
            keys(&s.range_output("", "\0", 2)),
            (vec!["a", "b"], 4, true)
        );
        assert_eq!(
            keys(&s.range_output("", "\0", 4)),
            (vec!["a", "b", "ba", "c"], 4, false)
        );
        assert_eq!(keys(&s.range_output("", "\0", -1)).1, 4);
        let EtcdOutput::Range { revision, .. } = s.range_output("a", "", 1) else {
            unreachable!()
        };
        assert_eq!(revision, 5);
    }

    #[test]
    fn key_in_range_matches_keys_in_range() {
        let s = state();
        for (start, end) in [("b", ""), ("b", "c"), ("", "\0"), ("b", "\0"), ("c", "a")] {
            let listed: Vec<&str> = s.keys_in_range(start, end).map(|(k, _)| k).collect();
            let filtered: Vec<&str> = s
                .keys()
                .map(|(k, _)| k)
                .filter(|k| key_in_range(start, end, k))
                .collect();
            assert_eq!(listed, filtered, "({start:?}, {end:?})");
        }
    }
}
