//! etcd's Range: revision checks, limit / more / count, filters, sorting, keys_only and
//! count_only, in the order etcd's applier applies them.

use std::cmp::Ordering;

use cairn_api::etcdserverpb::range_request::{SortOrder, SortTarget};
use cairn_api::etcdserverpb::{RangeRequest, RangeResponse, ResponseHeader};
use cairn_api::mvccpb::KeyValue;

use crate::error::MvccError;
use crate::read::{fast_count, scan, to_kv, CountDeltas, CountsTable, Span, VersionsTable};

/// A consistent view to read from: the tables plus the revisions they are at.
pub(crate) struct View<'t, V, C> {
    pub versions: &'t V,
    pub counts: &'t C,
    /// Count changes of the open batch not yet in `counts`.
    pub pending: [Option<&'t CountDeltas>; 2],
    /// The current revision of this view.
    pub current: i64,
    /// The compact revision of this view (-1 if never compacted).
    pub compact: i64,
}

/// The revision a read at `requested` resolves to, or etcd's error for it.
pub(crate) fn read_revision(requested: i64, current: i64, compact: i64) -> Result<i64, MvccError> {
    if requested > current {
        return Err(MvccError::FutureRev);
    }
    let rev = if requested <= 0 { current } else { requested };
    if rev < compact {
        return Err(MvccError::Compacted);
    }
    Ok(rev)
}

/// A header carrying only a revision (the server fills in the rest).
pub(crate) fn header(revision: i64) -> Option<ResponseHeader> {
    Some(ResponseHeader {
        revision,
        ..ResponseHeader::default()
    })
}

impl<V: VersionsTable, C: CountsTable> View<'_, V, C> {
    /// Serves a [`RangeRequest`] exactly as etcd's applier does.
    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse, MvccError> {
        let rev = read_revision(req.revision, self.current, self.compact)?;
        let span = Span::new(&req.key, &req.range_end);
        let filtered = req.min_mod_revision != 0
            || req.max_mod_revision != 0
            || req.min_create_revision != 0
            || req.max_create_revision != 0;
        // etcd fetches everything when asked to sort (by the order as requested) or filter, and
        // one extra entry otherwise to learn `more`.
        let fetch_all = req.sort_order != SortOrder::None as i32 || filtered;
        let fetch_limit = if fetch_all || req.limit <= 0 {
            usize::MAX
        } else {
            usize::try_from(req.limit)
                .unwrap_or(usize::MAX)
                .saturating_add(1)
        };

        let fast = if rev == self.current && (req.count_only || fetch_limit != usize::MAX) {
            fast_count(self.counts, &self.pending, span)?
        } else {
            None
        };
        let mut count: u64 = 0;
        let mut kvs: Vec<KeyValue> = Vec::new();
        if req.count_only {
            match fast {
                Some(n) => count = n,
                None => scan(self.versions, span, rev, |_, _, _| {
                    count += 1;
                    Ok(true)
                })?,
            }
        } else {
            scan(self.versions, span, rev, |key, m, rec| {
                count += 1;
                if kvs.len() < fetch_limit {
                    kvs.push(to_kv(key, m, rec, false));
                    Ok(true)
                } else {
                    // Keep counting unless the counts table already knows the total.
                    Ok(fast.is_none())
                }
            })?;
            if let Some(n) = fast {
                count = n;
            }
        }

        if filtered {
            kvs.retain(|kv| {
                !(req.max_mod_revision != 0 && kv.mod_revision > req.max_mod_revision
                    || req.min_mod_revision != 0 && kv.mod_revision < req.min_mod_revision
                    || req.max_create_revision != 0 && kv.create_revision > req.max_create_revision
                    || req.min_create_revision != 0 && kv.create_revision < req.min_create_revision)
            });
        }

        sort(&mut kvs, req.sort_order, req.sort_target);

        let mut more = false;
        if req.limit > 0 {
            let limit = usize::try_from(req.limit).unwrap_or(usize::MAX);
            if kvs.len() > limit {
                kvs.truncate(limit);
                more = true;
            }
        }
        if req.keys_only {
            for kv in &mut kvs {
                kv.value = Vec::new();
            }
        }
        Ok(RangeResponse {
            header: header(self.current),
            kvs,
            more,
            count: count as i64,
        })
    }
}

/// Sorts as etcd does: `NONE` with a target other than `KEY` means ascending; ties keep key
/// order in both directions (etcd's small-slice sort is stable, and reversing the comparison,
/// not the result, keeps ties ascending).
fn sort(kvs: &mut [KeyValue], order: i32, target: i32) {
    let mut order = order;
    if target != SortTarget::Key as i32 && order == SortOrder::None as i32 {
        order = SortOrder::Ascend as i32;
    }
    let cmp: fn(&KeyValue, &KeyValue) -> Ordering = match SortTarget::try_from(target) {
        Ok(SortTarget::Key) => |a, b| a.key.cmp(&b.key),
        Ok(SortTarget::Version) => |a, b| a.version.cmp(&b.version),
        Ok(SortTarget::Create) => |a, b| a.create_revision.cmp(&b.create_revision),
        Ok(SortTarget::Mod) => |a, b| a.mod_revision.cmp(&b.mod_revision),
        Ok(SortTarget::Value) => |a, b| a.value.cmp(&b.value),
        Err(_) => return,
    };
    if order == SortOrder::Ascend as i32 {
        kvs.sort_by(cmp);
    } else if order == SortOrder::Descend as i32 {
        kvs.sort_by(|a, b| cmp(b, a));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;
    use crate::Store;

    /// a@2 a/x@3 a/y@4 b@5 a@6 c@7 (a/x deleted @8) d@9; current 9.
    fn sample() -> (tempfile::TempDir, Store) {
        let (d, s) = store();
        put(&s, "a", "1");
        put(&s, "a/x", "x");
        put(&s, "a/y", "y");
        put(&s, "b", "b");
        put(&s, "a", "2");
        put(&s, "c", "c");
        del(&s, "a/x", "");
        put(&s, "d", "d");
        (d, s)
    }

    fn req(k: &str, end: &str, f: impl FnOnce(&mut RangeRequest)) -> RangeRequest {
        let mut r = range_req(k, end);
        f(&mut r);
        r
    }

    #[test]
    fn spans_and_revisions() {
        let (_d, s) = sample();
        let r = s.range(&range_req("a", "")).unwrap();
        assert_eq!(
            (keys(&r), r.count, r.more),
            (vec!["a".to_string()], 1, false)
        );
        assert_eq!(r.header.unwrap().revision, 9);
        let r = s.range(&range_req("zz", "")).unwrap();
        assert_eq!((r.kvs.len(), r.count), (0, 0));
        assert_eq!(keys(&s.range(&range_req("a/", "a0")).unwrap()), vec!["a/y"]);
        assert_eq!(
            keys(&s.range(&range_req("b", "\0")).unwrap()),
            vec!["b", "c", "d"]
        );
        assert_eq!(
            keys(&s.range(&range_req("\0", "\0")).unwrap()),
            vec!["a", "a/y", "b", "c", "d"]
        );
        assert!(s.range(&range_req("c", "b")).unwrap().kvs.is_empty());
        // Historical reads.
        let r = s.range(&req("\0", "\0", |r| r.revision = 4)).unwrap();
        assert_eq!(keys(&r), vec!["a", "a/x", "a/y"]);
        assert_eq!(r.kvs[0].value, b"1");
        assert_eq!(
            r.header.unwrap().revision,
            9,
            "the header carries the current revision"
        );
        let r = s.range(&req("a", "", |r| r.revision = 1)).unwrap();
        assert!(r.kvs.is_empty());
        assert!(matches!(
            s.range(&req("a", "", |r| r.revision = 10)),
            Err(MvccError::FutureRev)
        ));
        assert_eq!(
            s.range(&req("a", "", |r| r.revision = -5)).unwrap().kvs[0].value,
            b"2"
        );
    }

    #[test]
    fn limit_more_count() {
        let (_d, s) = sample();
        let r = s.range(&req("\0", "\0", |r| r.limit = 2)).unwrap();
        assert_eq!(
            (keys(&r), r.more, r.count),
            (vec!["a".into(), "a/y".into()], true, 5)
        );
        let r = s.range(&req("\0", "\0", |r| r.limit = 5)).unwrap();
        assert_eq!((r.kvs.len(), r.more, r.count), (5, false, 5));
        let r = s.range(&req("\0", "\0", |r| r.limit = -1)).unwrap();
        assert_eq!((r.kvs.len(), r.more), (5, false));
        let r = s
            .range(&req("b", "\0", |r| {
                r.limit = 1;
                r.revision = 6
            }))
            .unwrap();
        assert_eq!((keys(&r), r.more, r.count), (vec!["b".into()], false, 1));
        let r = s
            .range(&req("a", "\0", |r| {
                r.limit = 1;
                r.count_only = true
            }))
            .unwrap();
        assert_eq!((r.kvs.len(), r.more, r.count), (0, false, 5));
        let r = s.range(&req("a", "c", |r| r.keys_only = true)).unwrap();
        assert!(r.kvs.iter().all(|kv| kv.value.is_empty() && kv.version > 0));
    }

    #[test]
    fn counts_fast_path_agrees_with_a_scan() {
        let (_d, s) = sample();
        put(&s, "a/z/1", "1");
        put(&s, "a/z/2", "1");
        del(&s, "a/z/1", "");
        for (k, end) in [
            ("a/", "a0"),
            ("a/z/", "a/z0"),
            ("\0", "\0"),
            ("a/x/", "a/x0"),
            ("q/", "q0"),
        ] {
            let fast = s
                .range(&req(k, end, |r| r.count_only = true))
                .unwrap()
                .count;
            let limited = s.range(&req(k, end, |r| r.limit = 1)).unwrap().count;
            let full = s.range(&range_req(k, end)).unwrap().kvs.len() as i64;
            assert_eq!((fast, limited), (full, full), "{k}..{end}");
        }
        // At a past revision the count comes from a scan.
        let r = s
            .range(&req("a/", "a0", |r| {
                r.count_only = true;
                r.revision = 4
            }))
            .unwrap();
        assert_eq!(r.count, 2);
    }

    #[test]
    fn sorting_and_filters() {
        let (_d, s) = sample();
        let all = |f: fn(&mut RangeRequest)| keys(&s.range(&req("\0", "\0", f)).unwrap());
        assert_eq!(
            all(|r| r.sort_order = SortOrder::Descend as i32),
            vec!["d", "c", "b", "a/y", "a"]
        );
        assert_eq!(
            all(|r| {
                r.sort_order = SortOrder::Descend as i32;
                r.sort_target = SortTarget::Mod as i32;
                r.limit = 2
            }),
            vec!["d", "c"]
        );
        // Versions: a=2, all others 1; ascending ties stay in key order.
        assert_eq!(
            all(|r| r.sort_target = SortTarget::Version as i32),
            vec!["a/y", "b", "c", "d", "a"]
        );
        assert_eq!(
            all(|r| {
                r.sort_target = SortTarget::Create as i32;
                r.sort_order = SortOrder::Descend as i32
            }),
            vec!["d", "c", "b", "a/y", "a"]
        );
        assert_eq!(
            all(|r| {
                r.sort_target = SortTarget::Value as i32;
                r.sort_order = SortOrder::Ascend as i32
            }),
            vec!["a", "b", "c", "d", "a/y"]
        );
        // etcd quirk: NONE with a non-key target sorts only the limit + 1 keys it fetched.
        let r = s
            .range(&req("\0", "\0", |r| {
                r.sort_target = SortTarget::Version as i32;
                r.limit = 2
            }))
            .unwrap();
        assert_eq!((keys(&r), r.more), (vec!["a/y".into(), "b".into()], true));
        // Filters apply after reading; count is of the whole range, limit after filtering.
        let r = s
            .range(&req("\0", "\0", |r| {
                r.min_mod_revision = 5;
                r.limit = 2
            }))
            .unwrap();
        assert_eq!(
            (keys(&r), r.more, r.count),
            (vec!["a".into(), "b".into()], true, 5)
        );
        let r = s
            .range(&req("\0", "\0", |r| {
                r.max_mod_revision = 6;
                r.min_create_revision = 3;
                r.max_create_revision = 5
            }))
            .unwrap();
        assert_eq!(
            (keys(&r), r.more, r.count),
            (vec!["a/y".into(), "b".into()], false, 5)
        );
    }

    #[test]
    fn revision_rules() {
        assert_eq!(read_revision(0, 5, -1).unwrap(), 5);
        assert_eq!(read_revision(-3, 5, 4).unwrap(), 5);
        assert_eq!(read_revision(3, 5, 3).unwrap(), 3);
        assert!(matches!(read_revision(2, 5, 3), Err(MvccError::Compacted)));
        assert!(matches!(read_revision(6, 5, 3), Err(MvccError::FutureRev)));
    }

    fn kv(key: &str, version: i64, value: &str) -> KeyValue {
        KeyValue {
            key: key.into(),
            version,
            value: value.into(),
            ..KeyValue::default()
        }
    }

    #[test]
    fn descending_ties_keep_key_order() {
        // Checked against etcd 3.4: sort VALUE DESCEND over k1=x k2=z k3=y k4=x gives k2 k3 k1 k4.
        let mut kvs = vec![
            kv("k1", 1, "x"),
            kv("k2", 3, "z"),
            kv("k3", 2, "y"),
            kv("k4", 1, "x"),
        ];
        sort(
            &mut kvs,
            SortOrder::Descend as i32,
            SortTarget::Value as i32,
        );
        let keys: Vec<_> = kvs.iter().map(|k| k.key.clone()).collect();
        assert_eq!(
            keys,
            vec![
                b"k2".to_vec(),
                b"k3".to_vec(),
                b"k1".to_vec(),
                b"k4".to_vec()
            ]
        );
        sort(&mut kvs, SortOrder::None as i32, SortTarget::Version as i32);
        let keys: Vec<_> = kvs.iter().map(|k| k.key.clone()).collect();
        assert_eq!(
            keys,
            vec![
                b"k1".to_vec(),
                b"k4".to_vec(),
                b"k3".to_vec(),
                b"k2".to_vec()
            ]
        );
    }
}
