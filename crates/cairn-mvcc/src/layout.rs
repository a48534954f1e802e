//! The on-disk layout: redb tables and the encoding of their records.
//!
//! | table      | key                               | value                                   |
//! |------------|-----------------------------------|-----------------------------------------|
//! | `versions` | `(user key, u64::MAX - main rev)` | [`VersionRecord`]                       |
//! | `history`  | `(main rev, sub rev)`             | kind (0 put, 1 delete) + user key       |
//! | `counts`   | prefix (`""` or ending in `/`)    | number of live keys under that prefix   |
//! | `meta`     | name                              | `u64`                                   |
//!
//! The lease tables (`leases`, `lease_keys`) are described in `lease.rs`, the cluster member
//! tables (`members`, `removed_members`) in `members.rs`. [`visit_tables`] lists every table:
//! opening, measuring, validating and copying the store all go through it, so a new table is
//! added there once.
//!
//! Versions of one key sort newest first, so "latest version at or below R" is one seek to
//! `(key, u64::MAX - R)`. A key written twice in one revision (a txn that puts a key and then
//! deletes it with a "from key" range, which etcd's duplicate check lets through) keeps its
//! last write in `versions`; the replaced put's record moves into its `history` entry
//! (kind 2: `2 | key_len:u32le | key | record`) so watch replay still sees it.

use redb::{Key, TableDefinition, Value};

use crate::error::MvccError;

/// Every version of every key, newest first per key.
pub(crate) const VERSIONS: TableDefinition<(&[u8], u64), &[u8]> = TableDefinition::new("versions");
/// Every change in revision order: `(main, sub) → kind + key`, for compaction and watch replay.
pub(crate) const HISTORY: TableDefinition<(u64, u32), &[u8]> = TableDefinition::new("history");
/// Live-key counts per `/`-prefix (and `""` for the whole keyspace), for a fast `count`.
pub(crate) const COUNTS: TableDefinition<&[u8], u64> = TableDefinition::new("counts");
/// Store-wide marks.
pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// Something done to each table of the store in turn (see [`visit_tables`]).
pub(crate) trait TableVisitor {
    /// Called once per table.
    fn visit<K: Key + 'static, V: Value + 'static>(
        &mut self,
        table: TableDefinition<'static, K, V>,
    ) -> Result<(), MvccError>;
}

/// Calls `visitor` on every table of the store: the one list of them.
pub(crate) fn visit_tables(visitor: &mut impl TableVisitor) -> Result<(), MvccError> {
    visitor.visit(META)?;
    visitor.visit(VERSIONS)?;
    visitor.visit(HISTORY)?;
    visitor.visit(COUNTS)?;
    visitor.visit(crate::lease::LEASES)?;
    visitor.visit(crate::lease::LEASE_KEYS)?;
    visitor.visit(crate::members::MEMBERS)?;
    visitor.visit(crate::members::REMOVED_MEMBERS)?;
    Ok(())
}

/// `meta`: the current main revision (1 on a fresh store).
pub(crate) const META_CURRENT_REV: &str = "current_rev";
/// `meta`: the compact revision; absent until the first compaction (etcd's -1).
pub(crate) const META_COMPACT_REV: &str = "compact_rev";
/// `meta`: with [`META_COMPACT_CURSOR_SUB`], the last `history` entry of the compact revision
/// itself that physical compaction processed (its kept puts stay in `history`).
pub(crate) const META_COMPACT_CURSOR_REV: &str = "compact_cursor_rev";
/// `meta`: the sub revision of that entry.
pub(crate) const META_COMPACT_CURSOR_SUB: &str = "compact_cursor_sub";
/// `meta`: the raft index of the last applied entry covered by this data.
pub(crate) const META_APPLIED_INDEX: &str = "applied_index";
/// `meta`: the raft term of that entry.
pub(crate) const META_APPLIED_TERM: &str = "applied_term";

/// `history` kind byte of a put.
pub(crate) const KIND_PUT: u8 = 0;
/// `history` kind byte of a delete.
pub(crate) const KIND_DELETE: u8 = 1;
/// `history` kind byte of a put carrying its own record (see [`history_value_inline`]).
const KIND_PUT_INLINE: u8 = 2;

const FLAG_TOMBSTONE: u8 = 1;
const HEADER_LEN: usize = 1 + 4;
const LIVE_HEADER_LEN: usize = HEADER_LEN + 3 * 8;

/// The second element of a `versions` key for a main revision.
pub(crate) fn inv(rev: i64) -> u64 {
    u64::MAX - rev as u64
}

/// The main revision of a `versions` key's second element.
pub(crate) fn rev_of(inv: u64) -> i64 {
    (u64::MAX - inv) as i64
}

/// One version of a key as stored in `versions`.
///
/// Encoding: `flags:u8 | sub:u32le`, then for a live version
/// `create_rev:i64le | version:i64le | lease:i64le | value`. A tombstone is the header alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct VersionRecord {
    /// Sub-revision of the write inside its main revision.
    pub sub: u32,
    /// `None` for a tombstone (delete).
    pub live: Option<LiveVersion>,
}

/// The fields of a live (non-deleted) version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LiveVersion {
    pub create_revision: i64,
    pub version: i64,
    pub lease: i64,
    pub value: Vec<u8>,
}

impl VersionRecord {
    /// Encodes the record for `versions`.
    pub fn encode(&self) -> Vec<u8> {
        match &self.live {
            None => {
                let mut out = Vec::with_capacity(HEADER_LEN);
                out.push(FLAG_TOMBSTONE);
                out.extend_from_slice(&self.sub.to_le_bytes());
                out
            }
            Some(live) => {
                let mut out = Vec::with_capacity(LIVE_HEADER_LEN + live.value.len());
                out.push(0);
                out.extend_from_slice(&self.sub.to_le_bytes());
                out.extend_from_slice(&live.create_revision.to_le_bytes());
                out.extend_from_slice(&live.version.to_le_bytes());
                out.extend_from_slice(&live.lease.to_le_bytes());
                out.extend_from_slice(&live.value);
                out
            }
        }
    }

    /// Decodes a `versions` value.
    #[cfg(test)]
    pub fn decode(bytes: &[u8]) -> Result<VersionRecord, MvccError> {
        let header = RecordView::new(bytes)?;
        if header.is_tombstone() {
            return Ok(VersionRecord {
                sub: header.sub(),
                live: None,
            });
        }
        Ok(VersionRecord {
            sub: header.sub(),
            live: Some(LiveVersion {
                create_revision: header.field(0),
                version: header.field(1),
                lease: header.field(2),
                value: header.value().to_vec(),
            }),
        })
    }
}

/// A zero-copy view of an encoded [`VersionRecord`], checked for length on creation.
#[derive(Clone, Copy)]
pub(crate) struct RecordView<'a> {
    bytes: &'a [u8],
}

impl<'a> RecordView<'a> {
    /// Checks the record's shape.
    pub fn new(bytes: &'a [u8]) -> Result<RecordView<'a>, MvccError> {
        let corrupt = |detail: String| MvccError::Corrupt {
            table: "versions",
            detail,
        };
        if bytes.len() < HEADER_LEN {
            return Err(corrupt(format!("record of {} bytes", bytes.len())));
        }
        match bytes[0] {
            FLAG_TOMBSTONE => {}
            0 if bytes.len() >= LIVE_HEADER_LEN => {}
            flags => {
                return Err(corrupt(format!(
                    "flags {flags:#x} on a record of {} bytes",
                    bytes.len()
                )))
            }
        }
        Ok(RecordView { bytes })
    }

    /// True for a delete.
    pub fn is_tombstone(&self) -> bool {
        self.bytes[0] == FLAG_TOMBSTONE
    }

    /// Sub-revision of the write.
    pub fn sub(&self) -> u32 {
        u32::from_le_bytes(self.bytes[1..5].try_into().expect("4 bytes"))
    }

    fn field(&self, i: usize) -> i64 {
        let at = HEADER_LEN + 8 * i;
        i64::from_le_bytes(self.bytes[at..at + 8].try_into().expect("8 bytes"))
    }

    /// Creation revision (live records only).
    pub fn create_revision(&self) -> i64 {
        self.field(0)
    }

    /// Version since creation (live records only).
    pub fn version(&self) -> i64 {
        self.field(1)
    }

    /// Attached lease (live records only).
    pub fn lease(&self) -> i64 {
        self.field(2)
    }

    /// The value (live records only).
    pub fn value(&self) -> &'a [u8] {
        &self.bytes[LIVE_HEADER_LEN..]
    }
}

/// A decoded `history` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HistoryEntry<'a> {
    /// [`KIND_PUT`] or [`KIND_DELETE`].
    pub kind: u8,
    /// The user key.
    pub key: &'a [u8],
    /// For a put whose `versions` row a later write of the same revision replaced, the put's
    /// own record.
    pub record: Option<&'a [u8]>,
}

/// Encodes a `history` value: `kind | key`.
pub(crate) fn history_value(kind: u8, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + key.len());
    out.push(kind);
    out.extend_from_slice(key);
    out
}

/// Encodes the `history` value of a put whose `versions` row was replaced within its
/// revision: `KIND_PUT_INLINE | key_len:u32le | key | record`.
pub(crate) fn history_value_inline(key: &[u8], record: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + key.len() + record.len());
    out.push(KIND_PUT_INLINE);
    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(record);
    out
}

/// Decodes a `history` value.
pub(crate) fn split_history(bytes: &[u8]) -> Result<HistoryEntry<'_>, MvccError> {
    let corrupt = || MvccError::Corrupt {
        table: "history",
        detail: format!("bad entry of {} bytes", bytes.len()),
    };
    match bytes.split_first() {
        Some((&kind, key)) if kind == KIND_PUT || kind == KIND_DELETE => Ok(HistoryEntry {
            kind,
            key,
            record: None,
        }),
        Some((&KIND_PUT_INLINE, rest)) if rest.len() >= 4 => {
            let len = u32::from_le_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
            let rest = &rest[4..];
            if rest.len() < len {
                return Err(corrupt());
            }
            Ok(HistoryEntry {
                kind: KIND_PUT,
                key: &rest[..len],
                record: Some(&rest[len..]),
            })
        }
        _ => Err(corrupt()),
    }
}

/// The smallest key strictly greater than `key`.
pub(crate) fn key_successor(key: &[u8]) -> Vec<u8> {
    let mut next = Vec::with_capacity(key.len() + 1);
    next.extend_from_slice(key);
    next.push(0);
    next
}

/// The prefixes of `key` tracked in `counts`: `""` and every prefix ending in `/`.
pub(crate) fn count_prefixes(key: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::once(&key[..0]).chain(
        key.iter()
            .enumerate()
            .filter(|(_, b)| **b == b'/')
            .map(move |(i, _)| &key[..=i]),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let live = VersionRecord {
            sub: 7,
            live: Some(LiveVersion {
                create_revision: 3,
                version: 2,
                lease: -5,
                value: b"hello".to_vec(),
            }),
        };
        assert_eq!(VersionRecord::decode(&live.encode()).unwrap(), live);
        let view_bytes = live.encode();
        let view = RecordView::new(&view_bytes).unwrap();
        assert!(!view.is_tombstone());
        assert_eq!(
            (view.create_revision(), view.version(), view.lease()),
            (3, 2, -5)
        );
        assert_eq!(view.value(), b"hello");
        let tomb = VersionRecord { sub: 1, live: None };
        assert_eq!(VersionRecord::decode(&tomb.encode()).unwrap(), tomb);
        assert!(VersionRecord::decode(&[0, 1, 2]).is_err());
        assert!(VersionRecord::decode(&[0, 0, 0, 0, 0, 1]).is_err());
    }

    #[test]
    fn revisions_sort_newest_first() {
        assert!(inv(5) < inv(4));
        assert_eq!(rev_of(inv(42)), 42);
    }

    #[test]
    fn prefixes() {
        let got: Vec<&[u8]> = count_prefixes(b"/a/b/c").collect();
        assert_eq!(got, vec![&b""[..], b"/", b"/a/", b"/a/b/"]);
        let got: Vec<&[u8]> = count_prefixes(b"x/").collect();
        assert_eq!(got, vec![&b""[..], b"x/"]);
        assert_eq!(key_successor(b"a"), b"a\0");
        let bytes = history_value(KIND_DELETE, b"k");
        let e = split_history(&bytes).unwrap();
        assert_eq!((e.kind, e.key, e.record), (KIND_DELETE, &b"k"[..], None));
        let bytes = history_value_inline(b"key", b"rec");
        let e = split_history(&bytes).unwrap();
        assert_eq!(
            (e.kind, e.key, e.record),
            (KIND_PUT, &b"key"[..], Some(&b"rec"[..]))
        );
        assert!(split_history(&[2, 9, 0, 0, 0, 1]).is_err());
        assert!(split_history(&[]).is_err());
    }
}
