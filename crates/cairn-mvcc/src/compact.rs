//! Physical compaction: removing the versions a compaction made unreachable, in bounded steps.
//!
//! After `Compact(C)` etcd keeps, for every key, the latest version at or below `C` unless it
//! is a tombstone, and every version above `C`. Walking `history` in revision order up to `C`,
//! each entry `(r, key)` makes every older version of `key` unreachable (they are superseded by
//! the version at `r <= C`), and a tombstone at `r` is unreachable too once its older versions
//! are gone. Each processed history entry below `C` is removed, so the next step starts at the
//! first entry left. The entries of `C` itself are removed too, except the puts whose
//! `versions` row stays (etcd still replays those to a watch starting at `C`); a cursor in
//! `meta` marks how far the entries of `C` were processed, so the kept ones are not walked
//! again. A later, higher compaction simply continues, removing them as any other entry.
//! Reads at or above `C` see the same data at every step, since only versions no such read can
//! reach are removed, older ones first.

use std::ops::Bound;

use redb::{ReadableTable, WriteTransaction};

use crate::batch::{crash_point, set_durability};
use crate::change::Tables;
use crate::error::{Context, MvccError};
use crate::layout::{
    inv, split_history, RecordView, META, META_COMPACT_CURSOR_REV, META_COMPACT_CURSOR_SUB,
};
use crate::store::{read_marks, Store};

impl Store {
    /// Runs one bounded step of pending physical compaction (at most `max_keys` history
    /// entries) in its own non-durable write transaction. Returns `true` when no work is left.
    /// Waits while a [`crate::WriteBatch`] is open: never call it from the thread holding one.
    pub fn compact_step(&self, max_keys: usize) -> Result<bool, MvccError> {
        let db = self.db();
        let mut wtx = db.begin_write().ctx("beginning a compaction step")?;
        let (done, processed) = step(&wtx, max_keys.max(1))?;
        if processed == 0 {
            // Nothing was written (no compaction pending): nothing to commit, and the
            // failpoints below stay for steps that really change the backend.
            wtx.abort().ctx("ending an idle compaction step")?;
        } else {
            set_durability(&mut wtx, false)?;
            crash_point!("compact_before_commit");
            wtx.commit().ctx("committing a compaction step")?;
            crash_point!("compact_after_commit");
        }
        if done {
            // Compaction frees pages: a good moment to re-measure.
            if let Err(err) = self.refresh_size_in_use() {
                tracing::warn!(error = %err, "measuring the database after compaction failed");
            }
        }
        Ok(done)
    }
}

/// One step in `wtx`: returns whether no work is left, and how many history entries it
/// processed (0: it wrote nothing).
fn step(wtx: &WriteTransaction, max_keys: usize) -> Result<(bool, usize), MvccError> {
    let (compact, cursor) = {
        let meta = wtx.open_table(META).ctx("opening meta")?;
        let compact = read_marks(&meta)?.compact;
        let cursor_rev = meta
            .get(META_COMPACT_CURSOR_REV)
            .ctx("reading meta")?
            .map(|g| g.value());
        let cursor_sub = meta
            .get(META_COMPACT_CURSOR_SUB)
            .ctx("reading meta")?
            .map(|g| g.value());
        // The last entry of the compact revision itself already processed, if any.
        let cursor = match (cursor_rev, cursor_sub) {
            (Some(rev), Some(sub)) if compact >= 0 && rev == compact as u64 => Some(sub as u32),
            _ => None,
        };
        (compact, cursor)
    };
    if compact < 0 {
        return Ok((true, 0));
    }
    let c = compact as u64;
    let mut t = Tables::open(wtx)?;
    let mut work: Vec<(u64, u32, Vec<u8>)> = Vec::with_capacity(max_keys.min(4096));
    let mut more = false;
    // Entries below the compact revision: all of them go.
    more |= take_work(
        t.history.range(..(c, 0)).ctx("reading history")?,
        max_keys,
        &mut work,
    )?;
    // Entries of the compact revision itself: the puts whose versions row stays are kept (etcd
    // still replays them), so those past the cursor only.
    if !more {
        let from = match cursor {
            Some(sub) => Bound::Excluded((c, sub)),
            None => Bound::Included((c, 0)),
        };
        let rows = t
            .history
            .range::<(u64, u32)>((from, Bound::Included((c, u32::MAX))))
            .ctx("reading history")?;
        more |= take_work(rows, max_keys, &mut work)?;
    }
    let mut removed = 0usize;
    let mut last_at_compact = None;
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
        // The versions row of `rev`: a tombstone goes; a live record written by this very
        // entry (same sub revision) keeps the entry when `rev` is the compact revision.
        let (tombstone, own_put) = match t
            .versions
            .get((key.as_slice(), inv(rev)))
            .ctx("reading a version")?
        {
            Some(v) => {
                let rec = RecordView::new(v.value())?;
                (rec.is_tombstone(), !rec.is_tombstone() && rec.sub() == *sub)
            }
            None => (false, false),
        };
        if tombstone {
            t.versions
                .remove((key.as_slice(), inv(rev)))
                .ctx("removing a tombstone")?;
            removed += 1;
        }
        if *main == c {
            last_at_compact = Some(*sub);
            if own_put {
                continue;
            }
        }
        t.history.remove((*main, *sub)).ctx("removing history")?;
    }
    drop(t);
    if let Some(sub) = last_at_compact {
        let mut meta = wtx.open_table(META).ctx("opening meta")?;
        meta.insert(META_COMPACT_CURSOR_REV, c)
            .ctx("writing meta")?;
        meta.insert(META_COMPACT_CURSOR_SUB, u64::from(sub))
            .ctx("writing meta")?;
    }
    tracing::debug!(
        compact,
        entries = work.len(),
        removed,
        more,
        "compaction step"
    );
    Ok((!more, work.len()))
}

/// Appends `(main, sub, key)` of history rows to `work` until it holds `max_keys`; true when
/// rows were left over.
fn take_work(
    rows: redb::Range<'_, (u64, u32), &'static [u8]>,
    max_keys: usize,
    work: &mut Vec<(u64, u32, Vec<u8>)>,
) -> Result<bool, MvccError> {
    for entry in rows {
        let (k, v) = entry.ctx("reading history")?;
        if work.len() == max_keys {
            return Ok(true);
        }
        let (main, sub) = k.value();
        work.push((main, sub, split_history(v.value())?.key.to_vec()));
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use redb::ReadableTable;

    use crate::layout::{rev_of, RecordView, HISTORY, VERSIONS};
    use crate::testutil::*;
    use crate::Store;

    /// Every stored version: key → [(revision, tombstone)], newest first.
    fn rows(s: &Store) -> BTreeMap<Vec<u8>, Vec<(i64, bool)>> {
        let rtx = s.read_txn().unwrap();
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
        let rtx = s.read_txn().unwrap();
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
        // The put of c at the compact revision keeps its history entry: etcd replays it.
        assert_eq!(history_revs(&s), vec![6, 7, 8, 9]);
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
        assert_eq!(history_revs(&s), vec![9]);
        // Nothing pending: a step is a no-op.
        assert!(s.compact_step(10).unwrap());
        assert_eq!(s.range(&range_req("\0", "\0")).unwrap().count, 2);
        assert!(s.db_size_in_use() > 0);
    }

    #[test]
    fn the_compact_revision_keeps_its_puts_only() {
        let (_d, s) = store();
        put(&s, "x", "1"); // 2
        put(&s, "y", "1"); // 3
                           // 4: a put, a delete, and a put replaced by a delete of the same key.
        let t = txn(
            vec![],
            vec![
                op_put("x", "2"),
                op_del("y", ""),
                op_put("z", "1"),
                op_del("z", "\0"),
            ],
            vec![],
        );
        try_txn(&s, &t).unwrap();
        put(&s, "x", "3"); // 5
        let after = s.history(5, 10).unwrap();
        let mut b = s.begin_write().unwrap();
        b.compact(4).unwrap();
        b.commit(false).unwrap();
        let check = |s: &Store| {
            let got = s.history(4, 10).unwrap();
            assert_eq!(got.len(), 2);
            assert_eq!(got[0].revision, 4);
            assert_eq!(got[0].events.len(), 1, "{:?}", got[0].events);
            let ev = &got[0].events[0];
            assert_eq!(ev.r#type, cairn_api::mvccpb::event::EventType::Put as i32);
            let kv = ev.kv.as_ref().unwrap();
            assert_eq!(
                (kv.key.as_slice(), kv.value.as_slice()),
                (&b"x"[..], &b"2"[..])
            );
            assert_eq!(ev.prev_kv, None, "the revision before is compacted");
            assert_eq!(got[1..].to_vec(), after);
            assert_eq!(s.history(5, 10).unwrap(), after);
            assert!(matches!(s.history(3, 10), Err(crate::MvccError::Compacted)));
        };
        // Before and after physical compaction, in steps of one entry.
        check(&s);
        let mut steps = 0;
        while !s.compact_step(1).unwrap() {
            steps += 1;
            assert!(steps < 100);
            check(&s);
        }
        check(&s);
        assert_eq!(history_revs(&s), vec![4, 5]);
        // Steps are idempotent once done.
        assert!(s.compact_step(1).unwrap());
        assert_eq!(history_revs(&s), vec![4, 5]);
        // A later compaction removes the kept entry.
        let mut b = s.begin_write().unwrap();
        b.compact(5).unwrap();
        b.commit(false).unwrap();
        while !s.compact_step(1).unwrap() {}
        assert_eq!(history_revs(&s), vec![5]);
        assert_eq!(s.history(5, 10).unwrap().len(), 1);
    }
}
