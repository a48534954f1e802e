//! Watch replay: the events of past revisions, rebuilt from `history` and `versions`.

use cairn_api::mvccpb::{event::EventType, Event, KeyValue};

use crate::batch::RevisionEvents;
use crate::error::{Context, MvccError};
use crate::layout::{
    inv, split_history, HistoryEntry, RecordView, HISTORY, KIND_PUT, META, VERSIONS,
};
use crate::read::{get, to_kv};
use crate::store::{read_marks, Store};

impl Store {
    /// The events of the revisions from `start` on, whole revisions only, at most
    /// `max_revisions` of them (at least one), from the latest committed snapshot: exactly the
    /// events [`crate::WriteBatch::commit`] returned for them. For watchers that start in the
    /// past or fell behind.
    ///
    /// `start` below the compact revision is `Compacted`. As in etcd, the compact revision
    /// itself still replays, but only the puts that compaction kept (the last write of their
    /// key in that revision, when it is not a delete), without `prev_kv` (the revision before
    /// is compacted). A `start` above the current revision gives no events.
    pub fn history(
        &self,
        start: i64,
        max_revisions: usize,
    ) -> Result<Vec<RevisionEvents>, MvccError> {
        let rtx = self.read_txn()?;
        let marks = read_marks(&rtx.open_table(META).ctx("opening meta")?)?;
        if start < marks.compact {
            return Err(MvccError::Compacted);
        }
        let versions = rtx.open_table(VERSIONS).ctx("opening versions")?;
        let history = rtx.open_table(HISTORY).ctx("opening history")?;
        let max_revisions = max_revisions.max(1);
        let mut out: Vec<RevisionEvents> = Vec::new();
        for entry in history
            .range((start.max(1) as u64, 0)..)
            .ctx("reading history")?
        {
            let (k, v) = entry.ctx("reading history")?;
            let (main, sub) = k.value();
            let rev = main as i64;
            let h = split_history(v.value())?;
            // At the compact revision, only the kept puts (physical compaction may not have
            // removed the rest yet).
            let at_compact = rev == marks.compact;
            if at_compact && !kept_put(&versions, &h, rev, sub)? {
                continue;
            }
            if out.last().is_none_or(|last| last.revision != rev) {
                if out.len() == max_revisions {
                    break;
                }
                out.push(RevisionEvents {
                    revision: rev,
                    events: Vec::new(),
                });
            }
            let event = if h.kind == KIND_PUT {
                let row;
                let bytes = match h.record {
                    Some(record) => record,
                    None => {
                        row = versions
                            .get((h.key, inv(rev)))
                            .ctx("reading a version")?
                            .ok_or_else(|| missing(rev, sub))?;
                        row.value()
                    }
                };
                let rec = RecordView::new(bytes)?;
                if rec.sub() != sub || rec.is_tombstone() {
                    return Err(missing(rev, sub));
                }
                let kv = to_kv(h.key, rev, rec, false);
                let prev_kv = if kv.version == 1 || at_compact {
                    None
                } else {
                    get(&versions, h.key, rev - 1)?
                };
                Event {
                    r#type: EventType::Put as i32,
                    kv: Some(kv),
                    prev_kv,
                }
            } else {
                Event {
                    r#type: EventType::Delete as i32,
                    kv: Some(KeyValue {
                        key: h.key.to_vec(),
                        mod_revision: rev,
                        ..KeyValue::default()
                    }),
                    prev_kv: get(&versions, h.key, rev - 1)?,
                }
            };
            out.last_mut().expect("pushed above").events.push(event);
        }
        Ok(out)
    }
}

/// Whether the `history` entry `h` at `(rev, sub)` is a put whose `versions` row holds it.
fn kept_put(
    versions: &redb::ReadOnlyTable<(&'static [u8], u64), &'static [u8]>,
    h: &HistoryEntry<'_>,
    rev: i64,
    sub: u32,
) -> Result<bool, MvccError> {
    if h.kind != KIND_PUT || h.record.is_some() {
        return Ok(false);
    }
    Ok(
        match versions.get((h.key, inv(rev))).ctx("reading a version")? {
            Some(row) => {
                let rec = RecordView::new(row.value())?;
                !rec.is_tombstone() && rec.sub() == sub
            }
            None => false,
        },
    )
}

fn missing(rev: i64, sub: u32) -> MvccError {
    MvccError::Corrupt {
        table: "versions",
        detail: format!("no record for the put at revision {rev} sub {sub}"),
    }
}

#[cfg(test)]
mod tests {
    use crate::testutil::*;
    use crate::MvccError;

    #[test]
    fn replays_what_commit_returned() {
        let (_d, s) = store();
        let mut all = Vec::new();
        let mut b = s.begin_write().unwrap();
        b.put(&put_req("a", "1"), &Leases).unwrap();
        b.put(&put_req("b", "1"), &Leases).unwrap();
        b.put(&put_req("a", "2"), &Leases).unwrap();
        all.extend(b.commit(false).unwrap());
        // A put then a "from key" delete of the same key in one txn: one versions row.
        let t = txn(
            vec![],
            vec![op_put("c", "1"), op_put("a", "3"), op_del("a", "\0")],
            vec![],
        );
        all.extend(try_txn(&s, &t).unwrap().1);
        // A delete then a put of the same key.
        let t = txn(vec![], vec![op_del("b", "\0"), op_put("b", "2")], vec![]);
        all.extend(try_txn(&s, &t).unwrap().1);
        assert_eq!(all.len(), 5);
        // As etcd's watch reports them (checked against etcd 3.4): a delete's prev_kv is the
        // version before the revision, not the put of the same txn; none for a key the txn
        // created.
        let rev5 = &all[3].events;
        assert_eq!(rev5.len(), 5);
        assert_eq!(rev5[2].kv.as_ref().unwrap().key, b"a");
        assert_eq!(rev5[2].prev_kv.as_ref().unwrap().value, b"2");
        assert_eq!(rev5[4].kv.as_ref().unwrap().key, b"c");
        assert_eq!(rev5[4].prev_kv, None);
        assert_eq!(s.history(1, 100).unwrap(), all);
        assert_eq!(s.history(3, 2).unwrap(), all[1..3].to_vec());
        assert!(s.history(7, 10).unwrap().is_empty());
        compact(&s, 3).unwrap();
        assert!(matches!(s.history(2, 10), Err(MvccError::Compacted)));
        // The compact revision still replays its kept put (b, created there: no prev_kv).
        assert_eq!(s.history(3, 1).unwrap(), all[1..2].to_vec());
        assert_eq!(s.history(4, 10).unwrap(), all[2..].to_vec());
        while !s.compact_step(1).unwrap() {}
        assert_eq!(s.history(4, 10).unwrap(), all[2..].to_vec());
        assert_eq!(s.history(3, 10).unwrap(), all[1..].to_vec());
    }
}
