//! Point and range reads over `versions` at a revision, on any redb table handle (a read
//! snapshot, or the open write transaction of a batch).

use std::collections::BTreeMap;

use redb::{ReadableTable, ReadableTableMetadata};

use cairn_api::mvccpb::KeyValue;

use crate::error::{Context, MvccError};
use crate::layout::{inv, key_successor, rev_of, RecordView};

/// Consecutive skipped entries after which a scan re-seeks instead of stepping, so a key with
/// a long history (or many versions newer than the read revision) cannot slow a scan down.
const RESEEK_AFTER: usize = 4;

/// Any handle on the `versions` table.
pub(crate) trait VersionsTable: ReadableTable<(&'static [u8], u64), &'static [u8]> {}
impl<T: ReadableTable<(&'static [u8], u64), &'static [u8]>> VersionsTable for T {}

/// Any handle on the `counts` table.
pub(crate) trait CountsTable:
    ReadableTable<&'static [u8], u64> + ReadableTableMetadata
{
}
impl<T: ReadableTable<&'static [u8], u64>> CountsTable for T {}

/// The keys a request covers, decoded from etcd's `key` / `range_end` convention.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Span<'a> {
    /// `range_end` empty: the one key.
    Single(&'a [u8]),
    /// `range_end == "\0"`: every key `>= key`.
    From(&'a [u8]),
    /// `[key, range_end)`; empty when `range_end <= key`.
    Between(&'a [u8], &'a [u8]),
}

impl<'a> Span<'a> {
    /// Decodes `key` / `range_end` as etcd does.
    pub fn new(key: &'a [u8], range_end: &'a [u8]) -> Span<'a> {
        match range_end {
            [] => Span::Single(key),
            [0] => Span::From(key),
            end => Span::Between(key, end),
        }
    }
}

/// Builds a [`KeyValue`] from a live record.
pub(crate) fn to_kv(
    key: &[u8],
    mod_revision: i64,
    rec: RecordView<'_>,
    keys_only: bool,
) -> KeyValue {
    KeyValue {
        key: key.to_vec(),
        create_revision: rec.create_revision(),
        mod_revision,
        version: rec.version(),
        value: if keys_only {
            Vec::new()
        } else {
            rec.value().to_vec()
        },
        lease: rec.lease(),
    }
}

/// The latest version of `key` at or below `at`, `None` if absent or deleted.
pub(crate) fn get<V: VersionsTable>(
    versions: &V,
    key: &[u8],
    at: i64,
) -> Result<Option<KeyValue>, MvccError> {
    let mut iter = versions
        .range((key, inv(at))..=(key, u64::MAX))
        .ctx("seeking a key")?;
    match iter.next() {
        None => Ok(None),
        Some(entry) => {
            let (k, v) = entry.ctx("reading a key")?;
            let rec = RecordView::new(v.value())?;
            if rec.is_tombstone() {
                return Ok(None);
            }
            Ok(Some(to_kv(key, rev_of(k.value().1), rec, false)))
        }
    }
}

/// Visits the live keys of `span` at revision `at` in key order. The visitor gets the key, its
/// mod revision and its record, and returns `false` to stop.
pub(crate) fn scan<V: VersionsTable>(
    versions: &V,
    span: Span<'_>,
    at: i64,
    mut visit: impl FnMut(&[u8], i64, RecordView<'_>) -> Result<bool, MvccError>,
) -> Result<(), MvccError> {
    let (start, end) = match span {
        Span::Single(key) => {
            let mut iter = versions
                .range((key, inv(at))..=(key, u64::MAX))
                .ctx("seeking a key")?;
            if let Some(entry) = iter.next() {
                let (k, v) = entry.ctx("reading a key")?;
                let rec = RecordView::new(v.value())?;
                if !rec.is_tombstone() {
                    visit(key, rev_of(k.value().1), rec)?;
                }
            }
            return Ok(());
        }
        Span::From(start) => (start, None),
        Span::Between(start, end) => {
            if end <= start {
                return Ok(());
            }
            (start, Some(end))
        }
    };
    let bound = inv(at);
    // Where the next seek starts: a key, at the newest version not above `at`.
    let mut seek: Vec<u8> = start.to_vec();
    'seek: loop {
        let mut iter = versions
            .range((seek.as_slice(), bound)..)
            .ctx("scanning a range")?;
        // The key whose version at `at` was already visited (its older versions are skipped).
        let mut done: Option<Vec<u8>> = None;
        let mut skipped = 0usize;
        for entry in &mut iter {
            let (k, v) = entry.ctx("scanning a range")?;
            let (key, i) = k.value();
            if end.is_some_and(|end| key >= end) {
                return Ok(());
            }
            if done.as_deref() == Some(key) {
                // An older version of a key already resolved.
                skipped += 1;
                if skipped >= RESEEK_AFTER {
                    seek = key_successor(key);
                    continue 'seek;
                }
                continue;
            }
            if i < bound {
                // A version newer than `at` of a key not resolved yet.
                if done.is_some() {
                    done = None;
                    skipped = 0;
                }
                skipped += 1;
                if skipped >= RESEEK_AFTER {
                    seek = key.to_vec();
                    continue 'seek;
                }
                continue;
            }
            skipped = 0;
            let rec = RecordView::new(v.value())?;
            if !rec.is_tombstone() && !visit(key, rev_of(i), rec)? {
                return Ok(());
            }
            done = Some(key.to_vec());
        }
        return Ok(());
    }
}

/// Every live key-value of `span` at `at`, in key order.
pub(crate) fn collect<V: VersionsTable>(
    versions: &V,
    span: Span<'_>,
    at: i64,
) -> Result<Vec<KeyValue>, MvccError> {
    let mut out = Vec::new();
    scan(versions, span, at, |key, m, rec| {
        out.push(to_kv(key, m, rec, false));
        Ok(true)
    })?;
    Ok(out)
}

/// Changes to live-key counts not yet written to `counts`: prefix → delta. A write batch keeps
/// them in memory and writes each touched prefix once, at commit.
pub(crate) type CountDeltas = BTreeMap<Vec<u8>, i64>;

/// The number of live keys of `span` at the current revision from `counts` plus the `pending`
/// deltas, when the span is one the table tracks: the whole keyspace (`key` `""` or `"\0"`
/// with `range_end` `"\0"`), or a prefix range whose prefix ends in `/`.
pub(crate) fn fast_count<C: CountsTable>(
    counts: &C,
    pending: &[Option<&CountDeltas>],
    span: Span<'_>,
) -> Result<Option<u64>, MvccError> {
    let prefix: &[u8] = match span {
        Span::From([]) | Span::From([0]) => b"",
        Span::Between(key, end) if is_slash_prefix_range(key, end) => key,
        _ => return Ok(None),
    };
    let stored = counts
        .get(prefix)
        .ctx("reading a count")?
        .map_or(0, |g| g.value());
    let delta: i64 = pending.iter().flatten().filter_map(|d| d.get(prefix)).sum();
    Ok(Some(stored.saturating_add_signed(delta)))
}

/// True when `[key, end)` is exactly the prefix range of `key` and `key` ends in `/`.
fn is_slash_prefix_range(key: &[u8], end: &[u8]) -> bool {
    match key.split_last() {
        Some((b'/', head)) => {
            end.len() == key.len() && end[..head.len()] == *head && end[head.len()] == b'/' + 1
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans() {
        assert_eq!(Span::new(b"a", b""), Span::Single(b"a"));
        assert_eq!(Span::new(b"a", b"\0"), Span::From(b"a"));
        assert_eq!(Span::new(b"a", b"c"), Span::Between(b"a", b"c"));
    }

    #[test]
    fn scans_skip_and_reseek_past_long_histories() {
        use crate::testutil::*;
        let (_d, s) = store();
        put(&s, "a", "a"); // 2
        for i in 0..12 {
            put(&s, "h", &i.to_string()); // 3..=14
        }
        put(&s, "i", "i"); // 15
        del(&s, "h", ""); // 16
        put(&s, "z", "z"); // 17
        for rev in 1..=17i64 {
            let mut req = range_req("\0", "\0");
            req.revision = rev;
            let got: Vec<(String, String)> = s
                .range(&req)
                .unwrap()
                .kvs
                .into_iter()
                .map(|kv| {
                    (
                        String::from_utf8(kv.key).unwrap(),
                        String::from_utf8(kv.value).unwrap(),
                    )
                })
                .collect();
            let mut want = vec![];
            if rev >= 2 {
                want.push(("a".to_string(), "a".to_string()));
            }
            if (3..16).contains(&rev) {
                want.push(("h".to_string(), (rev.min(14) - 3).to_string()));
            }
            if rev >= 15 {
                want.push(("i".to_string(), "i".to_string()));
            }
            if rev >= 17 {
                want.push(("z".to_string(), "z".to_string()));
            }
            assert_eq!(got, want, "at revision {rev}");
        }
    }

    #[test]
    fn slash_prefix_ranges() {
        assert!(is_slash_prefix_range(b"/registry/", b"/registry0"));
        assert!(is_slash_prefix_range(b"/", b"0"));
        assert!(!is_slash_prefix_range(b"/registry", b"/registrz"));
        assert!(!is_slash_prefix_range(b"/registry/", b"/registry1"));
        assert!(!is_slash_prefix_range(b"/registry/", b"/registry/0"));
    }
}
