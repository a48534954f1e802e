//! HashKV: a CRC-32C of the logical MVCC state up to a revision, for members to compare.
//!
//! The hash covers what etcd's covers, in cairn's terms: with `C` the compact revision and `R`
//! the hashed revision,
//!
//! - every stored version (live or tombstone) with `C < mod_revision <= R`: key, revisions,
//!   sub revision, version, lease and value;
//! - every put of a revision in `(C, R]` that a later write of the same key in that revision
//!   replaced (kept in its `history` entry, see `layout.rs`);
//! - for revisions at or below `C`, only what compaction keeps: the latest version of each key
//!   at or below `C`, unless it is a tombstone.
//!
//! It depends on the logical state only, never on how far physical compaction got: compaction
//! of `C` removes versions at or below `C` that a newer one at or below `C` supersedes (older
//! ones first, so the latest at or below `C` is there until it is a removable tombstone), and
//! `history` entries at or below `C`; it never touches a version or entry above `C`. Two
//! members that applied the same entries therefore agree whatever their compaction progress.

use redb::ReadableTable;

use crate::error::{Context, MvccError};
use crate::layout::{rev_of, split_history, RecordView, HISTORY, META, VERSIONS};
use crate::range::read_revision;
use crate::store::{read_marks, Store};

/// The result of [`Store::hash_kv`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashKv {
    /// CRC-32C (Castagnoli) of the state (see the module documentation).
    pub hash: u32,
    /// The compact revision the hash was taken with (-1 if never compacted), as etcd reports
    /// it: members' hashes compare only when their compact revisions match.
    pub compact_revision: i64,
    /// The revision hashed.
    pub hash_revision: i64,
}

/// Row tags, so a `versions` row and a replaced put never encode alike.
const TAG_VERSION: u8 = b'v';
const TAG_REPLACED: u8 = b'r';

/// The running CRC and a reused buffer for one row's encoding.
struct Hasher {
    crc: u32,
    buf: Vec<u8>,
}

impl Hasher {
    /// Adds one key revision: `tag | key_len:u32le | key | mod:i64le | sub:u32le`, then `1` for
    /// a tombstone, or `0 | create:i64le | version:i64le | lease:i64le | value_len:u32le |
    /// value`. Explicit fields (not the stored record) keep the hash independent of the
    /// on-disk encoding.
    fn add(&mut self, tag: u8, key: &[u8], mod_revision: i64, rec: RecordView<'_>) {
        self.buf.clear();
        self.buf.push(tag);
        self.buf
            .extend_from_slice(&(key.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(key);
        self.buf.extend_from_slice(&mod_revision.to_le_bytes());
        self.buf.extend_from_slice(&rec.sub().to_le_bytes());
        if rec.is_tombstone() {
            self.buf.push(1);
        } else {
            self.buf.push(0);
            self.buf
                .extend_from_slice(&rec.create_revision().to_le_bytes());
            self.buf.extend_from_slice(&rec.version().to_le_bytes());
            self.buf.extend_from_slice(&rec.lease().to_le_bytes());
            self.buf
                .extend_from_slice(&(rec.value().len() as u32).to_le_bytes());
            self.buf.extend_from_slice(rec.value());
        }
        self.crc = crc32c::crc32c_append(self.crc, &self.buf);
    }
}

impl Store {
    /// etcd HashKV at `revision` (≤ 0: the current revision), from one consistent snapshot;
    /// see the module documentation for what it covers. A revision below the compact
    /// revision is `Compacted`, above the current one `FutureRev`, as for Range. Reads the
    /// whole `versions` table and the `history` above the compact revision: not for a hot
    /// path, and it never blocks writers.
    pub fn hash_kv(&self, revision: i64) -> Result<HashKv, MvccError> {
        let rtx = self.read_txn()?;
        let marks = read_marks(&rtx.open_table(META).ctx("opening meta")?)?;
        let rev = read_revision(revision, marks.current, marks.compact)?;
        let compact = marks.compact;
        let mut h = Hasher {
            crc: 0,
            buf: Vec::new(),
        };

        // Versions sort by key, newest first: per key, those above `rev` are skipped, those in
        // `(compact, rev]` hashed, and the first at or below `compact` is the one compaction
        // keeps (unless a tombstone); older ones are left for physical compaction to remove.
        let versions = rtx.open_table(VERSIONS).ctx("opening versions")?;
        let mut kept_for: Option<Vec<u8>> = None;
        for entry in versions.iter().ctx("reading versions")? {
            let (k, v) = entry.ctx("reading versions")?;
            let (key, i) = k.value();
            let mod_revision = rev_of(i);
            if mod_revision > rev {
                continue;
            }
            let rec = RecordView::new(v.value())?;
            if mod_revision > compact {
                h.add(TAG_VERSION, key, mod_revision, rec);
                continue;
            }
            if kept_for.as_deref() == Some(key) {
                continue;
            }
            kept_for = Some(key.to_vec());
            if !rec.is_tombstone() {
                h.add(TAG_VERSION, key, mod_revision, rec);
            }
        }

        // Puts replaced within their revision, above the compact revision (compaction never
        // touches those entries; at or below it, it drops them).
        let history = rtx.open_table(HISTORY).ctx("opening history")?;
        let from = (compact + 1).max(1) as u64;
        if from <= rev as u64 {
            for entry in history
                .range((from, 0)..=(rev as u64, u32::MAX))
                .ctx("reading history")?
            {
                let (k, v) = entry.ctx("reading history")?;
                let e = split_history(v.value())?;
                if let Some(record) = e.record {
                    h.add(
                        TAG_REPLACED,
                        e.key,
                        k.value().0 as i64,
                        RecordView::new(record)?,
                    );
                }
            }
        }
        Ok(HashKv {
            hash: h.crc,
            compact_revision: compact,
            hash_revision: rev,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::testutil::*;
    use crate::{MvccError, Store};

    /// The same requests, applied to any store: puts, deletes, a txn writing a key twice in
    /// one revision, leases, and more history after a compaction at revision 8.
    fn apply_history(s: &Store, value_of_b: &str) {
        put(s, "a", "1"); // 2
        put(s, "b", value_of_b); // 3
        put(s, "a", "2"); // 4
        del(s, "b", ""); // 5
        let mut req = put_req("c", "leased");
        req.lease = 3;
        try_put(s, &req).unwrap(); // 6
        let t = txn(
            vec![],
            vec![op_put("d", "gone"), op_del("d", "\0"), op_put("e", "1")],
            vec![],
        );
        try_txn(s, &t).unwrap(); // 7: d put and deleted in one revision
        put(s, "a", "3"); // 8
        compact(s, 8).unwrap();
        put(s, "b", "again"); // 9
        let t = txn(vec![], vec![op_put("f", "x"), op_del("f", "\0")], vec![]);
        try_txn(s, &t).unwrap(); // 10: f replaced within the revision, above the compaction
        del(s, "a", ""); // 11
    }

    fn hashes(s: &Store) -> Vec<crate::HashKv> {
        (8..=11).map(|rev| s.hash_kv(rev).unwrap()).collect()
    }

    #[test]
    fn equal_whatever_the_physical_compaction_progress() {
        let (_d1, done) = store();
        let (_d2, pending) = store();
        apply_history(&done, "1");
        apply_history(&pending, "1");
        let want = hashes(&pending);
        // Physically compact one of them, one entry per step, checking every step.
        let mut steps = 0;
        while !done.compact_step(1).unwrap() {
            steps += 1;
            assert_eq!(hashes(&done), want, "after {steps} steps");
        }
        assert!(steps > 3, "compaction took {steps} steps");
        assert_eq!(hashes(&done), want);
        assert_eq!(done.hash_kv(0).unwrap(), want[3]);
        assert_eq!(
            (want[0].compact_revision, want[0].hash_revision),
            (8, 8),
            "hash at the compact revision"
        );
        assert_eq!((want[3].compact_revision, want[3].hash_revision), (8, 11));
        // Each revision's state hashes differently.
        for i in 0..want.len() {
            for j in i + 1..want.len() {
                assert_ne!(want[i].hash, want[j].hash, "revisions {i} and {j}");
            }
        }
    }

    #[test]
    fn only_what_compaction_keeps_counts_below_the_compact_revision() {
        // b=1 vs b=other at revision 3, deleted at 5 and compacted away at 8: equal hashes.
        let (_d1, s1) = store();
        let (_d2, s2) = store();
        apply_history(&s1, "1");
        apply_history(&s2, "other");
        assert_eq!(hashes(&s1), hashes(&s2));
        // Without the compaction the difference shows at every revision.
        let (_d3, s3) = store();
        let (_d4, s4) = store();
        for (s, b) in [(&s3, "1"), (&s4, "other")] {
            put(s, "a", "1");
            put(s, "b", b);
            del(s, "b", "");
        }
        for rev in 3..=4 {
            assert_ne!(
                s3.hash_kv(rev).unwrap().hash,
                s4.hash_kv(rev).unwrap().hash,
                "at {rev}"
            );
        }
        assert_eq!(s3.hash_kv(2).unwrap(), s4.hash_kv(2).unwrap());
    }

    #[test]
    fn changes_when_any_field_differs() {
        let base = |s: &Store| {
            put(s, "k1", "v");
            put(s, "k2", "v");
        };
        let (_d, reference) = store();
        base(&reference);
        put(&reference, "k3", "value");
        let want = reference.hash_kv(0).unwrap();
        // Same revisions, one difference each: a value byte, the key, the lease, a delete
        // instead of a put.
        let variants: [fn(&Store); 4] = [
            |s| drop(put(s, "k3", "valuf")),
            |s| drop(put(s, "k4", "value")),
            |s| {
                let mut req = put_req("k3", "value");
                req.lease = 2;
                try_put(s, &req).unwrap();
            },
            |s| drop(del(s, "k2", "")),
        ];
        for (i, variant) in variants.iter().enumerate() {
            let (_d, s) = store();
            base(&s);
            variant(&s);
            assert_eq!(s.current_revision(), reference.current_revision());
            assert_ne!(s.hash_kv(0).unwrap().hash, want.hash, "variant {i}");
        }
        let replaced = |v: &str| {
            let (d, s) = store();
            base(&s);
            let t = txn(vec![], vec![op_put("k3", v), op_del("k3", "\0")], vec![]);
            try_txn(&s, &t).unwrap();
            (d, s)
        };
        // A put replaced within its revision differs only in history: it counts too.
        let (_d1, s1) = replaced("x");
        let (_d2, s2) = replaced("y");
        assert_eq!(
            s1.range(&range_req("\0", "\0")).unwrap().kvs,
            s2.range(&range_req("\0", "\0")).unwrap().kvs
        );
        assert_ne!(s1.hash_kv(0).unwrap().hash, s2.hash_kv(0).unwrap().hash);
        // And two stores with the same history agree.
        let (_d, same) = store();
        base(&same);
        put(&same, "k3", "value");
        assert_eq!(same.hash_kv(0).unwrap(), want);
    }

    #[test]
    fn compacted_and_future_revisions() {
        let (_d, s) = store();
        let fresh = s.hash_kv(0).unwrap();
        assert_eq!((fresh.compact_revision, fresh.hash_revision), (-1, 1));
        put(&s, "a", "1");
        put(&s, "a", "2");
        put(&s, "a", "3");
        assert!(matches!(s.hash_kv(5), Err(MvccError::FutureRev)));
        compact(&s, 3).unwrap();
        assert!(matches!(s.hash_kv(2), Err(MvccError::Compacted)));
        assert!(matches!(s.hash_kv(1), Err(MvccError::Compacted)));
        assert_eq!(s.hash_kv(3).unwrap().hash_revision, 3);
        assert_eq!(s.hash_kv(0).unwrap().hash_revision, 4);
        assert_eq!(s.hash_kv(-1).unwrap().hash_revision, 4);
    }
}
