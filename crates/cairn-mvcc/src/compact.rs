//! Physical compaction: removing the versions a compaction made unreachable, in bounded steps.
//!
//! After `Compact(C)` etcd keeps, for every key, the latest version at or below `C` unless it
//! is a tombstone, and every version above `C`. Walking `history` in revision order up to `C`,
//! each entry `(r, key)` makes every older version of `key` unreachable (they are superseded by
//! the version at `r <= C`), and a tombstone at `r` is unreachable too once its older versions
//! are gone. Each processed history entry is removed, so the next step starts at the first
//! entry left and no progress mark is needed; a later, higher compaction simply continues.
//! Reads at or above `C` see the same data at every step, since only versions no such read can
//! reach are removed, older ones first.

use redb::{ReadableTable, WriteTransaction};

use crate::batch::set_durability;
use crate::change::Tables;
use crate::error::{Context, MvccError};
use crate::layout::{inv, split_history, RecordView, META};
use crate::store::{read_marks, Store};

impl Store {
    /// Runs one bounded step of pending physical compaction (at most `max_keys` history
    /// entries) in its own non-durable write transaction. Returns `true` when no work is left.
    /// Waits while a [`crate::WriteBatch`] is open: never call it from the thread holding one.
    pub fn compact_step(&self, max_keys: usize) -> Result<bool, MvccError> {
        let mut wtx = self.db().begin_write().ctx("beginning a compaction step")?;
        let done = step(&wtx, max_keys.max(1))?;
        set_durability(&mut wtx, false)?;
        wtx.commit().ctx("committing a compaction step")?;
        if done {
            // Compaction frees pages: a good moment to re-measure.
            if let Err(err) = self.refresh_size_in_use() {
                tracing::warn!(error = %err, "measuring the database after compaction failed");
            }
        }
        Ok(done)
    }
}

fn step(wtx: &WriteTransaction, max_keys: usize) -> Result<bool, MvccError> {
    let compact = read_marks(&wtx.open_table(META).ctx("opening meta")?)?.compact;
    if compact < 0 {
        return Ok(true);
    }
    let mut t = Tables::open(wtx)?;
    let mut work: Vec<(u64, u32, Vec<u8>)> = Vec::with_capacity(max_keys.min(4096));
    let mut more = false;
    for entry in t
        .history
        .range(..=(compact as u64, u32::MAX))
        .ctx("reading history")?
    {
        let (k, v) = entry.ctx("reading history")?;
        if work.len() == max_keys {
            more = true;
            break;
        }
        let (main, sub) = k.value();
        work.push((main, sub, split_history(v.value())?.key.to_vec()));
    }
    let mut removed = 0usize;
    for (main, sub, key) in &work {
        let rev = *main as i64;
        // Every version of `key` older than `rev`.
        let older: Vec<u64> = t
            .versions
            .range((key.as_slice(), inv(rev) + 1)..=(key.as_slice(), u64::MAX))
            .ctx("reading versions")?
            .map(|e| e.map(|(k, _)| k.value().1))
            .collect::<Result<_, _>>()
            .ctx("reading versions")?;
        for i in older {
            t.versions
                .remove((key.as_slice(), i))
                .ctx("removing a version")?;
            removed += 1;
        }
        let tombstone = match t
            .versions
            .get((key.as_slice(), inv(rev)))
            .ctx("reading a version")?
        {
            Some(v) => RecordView::new(v.value())?.is_tombstone(),
            None => false,
        };
        if tombstone {
            t.versions
                .remove((key.as_slice(), inv(rev)))
                .ctx("removing a tombstone")?;
            removed += 1;
        }
        t.history.remove((*main, *sub)).ctx("removing history")?;
    }
    tracing::debug!(
        compact,
        entries = work.len(),
        removed,
        more,
        "compaction step"
    );
    Ok(!more)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use redb::{ReadableDatabase, ReadableTable};

    use crate::layout::{rev_of, RecordView, HISTORY, VERSIONS};
    use crate::testutil::*;
    use crate::Store;

    /// Every stored version: key → [(revision, tombstone)], newest first.
    fn rows(s: &Store) -> BTreeMap<Vec<u8>, Vec<(i64, bool)>> {
        let rtx = s.db().begin_read().unwrap();
        let t = rtx.open_table(VERSIONS).unwrap();
        let mut out: BTreeMap<Vec<u8>, Vec<(i64, bool)>> = BTreeMap::new();
        for e in t.iter().unwrap() {
            let (k, v) = e.unwrap();
            let (key, i) = k.value();
            let tomb = RecordView::new(v.value()).unwrap().is_tombstone();
            out.entry(key.to_vec()).or_default().push((rev_of(i), tomb));
        }
        out
    }

    fn history_revs(s: &Store) -> Vec<u64> {
        let rtx = s.db().begin_read().unwrap();
        let t = rtx.open_table(HISTORY).unwrap();
        t.iter().unwrap().map(|e| e.unwrap().0.value().0).collect()
    }

    fn snapshot(s: &Store, from: i64) -> Vec<Vec<cairn_api::mvccpb::KeyValue>> {
        (from..=s.current_revision())
            .map(|rev| {
                let mut r = range_req("\0", "\0");
                r.revision = rev;
                s.range(&r).unwrap().kvs
            })
            .collect()
    }

    #[test]
    fn keeps_exactly_what_etcd_keeps() {
        let (_d, s) = store();
        put(&s, "a", "1"); // 2
        put(&s, "b", "1"); // 3
        put(&s, "a", "2"); // 4
        del(&s, "b", ""); // 5 tombstone, latest at or below 6: removed
        put(&s, "c", "1"); // 6
        put(&s, "c", "2"); // 7 above the compaction: c@6 stays too
        del(&s, "a", ""); // 8
        put(&s, "b", "2"); // 9
        let before = snapshot(&s, 6);
        let mut b = s.begin_write().unwrap();
        b.compact(6).unwrap();
        b.commit(false).unwrap();
        let mut steps = 0;
        while !s.compact_step(1).unwrap() {
            steps += 1;
            assert_eq!(
                snapshot(&s, 6),
                before,
                "reads at or above the compact revision never change"
            );
            assert!(steps < 100);
        }
        assert_eq!(snapshot(&s, 6), before);
        let got = rows(&s);
        let want: BTreeMap<Vec<u8>, Vec<(i64, bool)>> = [
            (b"a".to_vec(), vec![(8, true), (4, false)]),
            (b"b".to_vec(), vec![(9, false)]),
            (b"c".to_vec(), vec![(7, false), (6, false)]),
        ]
        .into_iter()
        .collect();
        assert_eq!(got, want);
        assert_eq!(history_revs(&s), vec![7, 8, 9]);
        // A later compaction continues from there.
        let mut b = s.begin_write().unwrap();
        b.compact(9).unwrap();
        b.commit(false).unwrap();
        assert!(s.compact_step(100).unwrap());
        let want: BTreeMap<Vec<u8>, Vec<(i64, bool)>> = [
            (b"b".to_vec(), vec![(9, false)]),
            (b"c".to_vec(), vec![(7, false)]),
        ]
        .into_iter()
        .collect();
        assert_eq!(rows(&s), want);
        assert!(history_revs(&s).is_empty());
        // Nothing pending: a step is a no-op.
        assert!(s.compact_step(10).unwrap());
        assert_eq!(s.range(&range_req("\0", "\0")).unwrap().count, 2);
        assert!(s.db_size_in_use() > 0);
    }
}
