//! Record framing and payload encoding.
//!
//! A record on disk is
//!
//! ```text
//! len: u32 LE | crc32c: u32 LE | type: u8 | payload: [u8; len - 1]
//! ```
//!
//! `len` counts the type byte plus the payload, so it is never 0: an all-zero 8-byte header is
//! how the reader recognises the preallocated, never-written area at the end of a segment.
//! `crc32c` (Castagnoli) covers `type | payload`. `len` itself is not covered; the scanner
//! ([`super::scan`]) detects a damaged length by other means.
//!
//! Payloads: raft messages are protobuf 2 (`write_to_bytes`); our own structures are fixed
//! little-endian fields with `u32 LE` length prefixes for embedded protobuf blobs. Decoding is
//! strict (trailing bytes are an error) and never panics.

use raft::eraftpb::{ConfState, Entry, HardState};

use crate::error::WalError;

/// Bytes of the fixed record header (`len` + `crc32c`).
pub const RECORD_HEADER_LEN: usize = 8;

/// Magic at the start of every segment header payload.
pub const SEGMENT_MAGIC: [u8; 4] = *b"CWAL";

/// On-disk format version written into segment headers. Readers refuse other versions.
pub const FORMAT_VERSION: u32 = 1;

/// Record type bytes. Values are part of the on-disk format: never renumber.
pub mod kind {
    /// [`super::Record::SegmentHeader`].
    pub const SEGMENT_HEADER: u8 = 1;
    /// [`super::Record::Entry`].
    pub const ENTRY: u8 = 2;
    /// [`super::Record::HardState`].
    pub const HARD_STATE: u8 = 3;
    /// [`super::Record::ConfState`].
    pub const CONF_STATE: u8 = 4;
    /// [`super::Record::Compact`].
    pub const COMPACT: u8 = 5;
    /// [`super::Record::Snapshot`].
    pub const SNAPSHOT: u8 = 6;
}

/// The first record of every segment. It carries the complete non-entry state of the log as it
/// was when the segment was created, so every older segment can be deleted without losing
/// anything but entries (and only entries at or below the truncated index are ever deleted).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SegmentHeader {
    /// Sequence number of this segment (also in its file name). Starts at 1, no gaps.
    pub seq: u64,
    /// Index the next entry appended after the header will have (= last index + 1 at creation).
    /// Also in the file name.
    pub first_index: u64,
    /// The log's truncated index at creation: entries ≤ this are covered by a snapshot.
    pub truncated_index: u64,
    /// Term of the entry at `truncated_index` (0 when nothing was ever truncated).
    pub truncated_term: u64,
    /// The latest HardState at creation.
    pub hard_state: HardState,
    /// The latest ConfState at creation.
    pub conf_state: ConfState,
}

/// One decoded WAL record.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// Segment header; only ever at offset 0 of a segment.
    SegmentHeader(SegmentHeader),
    /// A raft log entry. An entry whose index is ≤ the last one replaces the log from that index
    /// on (raft overwrote a conflicting suffix).
    Entry(Entry),
    /// A new HardState; the latest one wins.
    HardState(HardState),
    /// A new ConfState; the latest one wins.
    ConfState(ConfState),
    /// Log compaction: entries ≤ `index` are no longer needed (covered by a snapshot);
    /// `term` is the term of the entry at `index`. Later entries are kept.
    Compact {
        /// The new truncated index.
        index: u64,
        /// Term of the entry at `index`.
        term: u64,
    },
    /// A snapshot was installed (follower side), in one record so it is atomic: the whole log
    /// is dropped, the truncated state becomes (`index`, `term`), and the HardState and
    /// ConfState are replaced.
    Snapshot {
        /// The snapshot's index, the new truncated index.
        index: u64,
        /// The snapshot's term.
        term: u64,
        /// HardState after installation (commit ≥ index).
        hard_state: HardState,
        /// The snapshot's ConfState.
        conf_state: ConfState,
    },
}

impl Record {
    /// The type byte written for this record.
    pub fn kind(&self) -> u8 {
        match self {
            Record::SegmentHeader(_) => kind::SEGMENT_HEADER,
            Record::Entry(_) => kind::ENTRY,
            Record::HardState(_) => kind::HARD_STATE,
            Record::ConfState(_) => kind::CONF_STATE,
            Record::Compact { .. } => kind::COMPACT,
            Record::Snapshot { .. } => kind::SNAPSHOT,
        }
    }

    /// A short name for messages.
    pub fn kind_name(kind: u8) -> &'static str {
        match kind {
            kind::SEGMENT_HEADER => "segment header",
            kind::ENTRY => "entry",
            kind::HARD_STATE => "hard state",
            kind::CONF_STATE => "conf state",
            kind::COMPACT => "compact",
            kind::SNAPSHOT => "snapshot",
            _ => "unknown",
        }
    }
}

fn pb_bytes(m: &dyn protobuf::Message) -> Result<Vec<u8>, WalError> {
    m.write_to_bytes()
        .map_err(|e| WalError::Encode(e.to_string()))
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_blob(out: &mut Vec<u8>, blob: &[u8]) -> Result<(), WalError> {
    let len = u32::try_from(blob.len())
        .map_err(|_| WalError::Encode(format!("blob of {} bytes too large", blob.len())))?;
    put_u32(out, len);
    out.extend_from_slice(blob);
    Ok(())
}

/// Encodes `rec` as one complete frame (header + type + payload), appended to `out`.
pub fn encode_record_into(rec: &Record, out: &mut Vec<u8>) -> Result<(), WalError> {
    let start = out.len();
    // Placeholder header, patched below once the body length and crc are known.
    out.extend_from_slice(&[0u8; RECORD_HEADER_LEN]);
    out.push(rec.kind());
    match rec {
        Record::SegmentHeader(h) => {
            out.extend_from_slice(&SEGMENT_MAGIC);
            put_u32(out, FORMAT_VERSION);
            put_u64(out, h.seq);
            put_u64(out, h.first_index);
            put_u64(out, h.truncated_index);
            put_u64(out, h.truncated_term);
            put_blob(out, &pb_bytes(&h.hard_state)?)?;
            put_blob(out, &pb_bytes(&h.conf_state)?)?;
        }
        Record::Entry(e) => out.extend_from_slice(&pb_bytes(e)?),
        Record::HardState(hs) => out.extend_from_slice(&pb_bytes(hs)?),
        Record::ConfState(cs) => out.extend_from_slice(&pb_bytes(cs)?),
        Record::Compact { index, term } => {
            put_u64(out, *index);
            put_u64(out, *term);
        }
        Record::Snapshot {
            index,
            term,
            hard_state,
            conf_state,
        } => {
            put_u64(out, *index);
            put_u64(out, *term);
            put_blob(out, &pb_bytes(hard_state)?)?;
            put_blob(out, &pb_bytes(conf_state)?)?;
        }
    }
    let body = &out[start + RECORD_HEADER_LEN..];
    let len = u32::try_from(body.len()).map_err(|_| {
        WalError::Encode(format!("record of {} bytes exceeds u32::MAX", body.len()))
    })?;
    let crc = crc32c::crc32c(body);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// Encodes `rec` as one complete frame.
pub fn encode_record(rec: &Record) -> Result<Vec<u8>, WalError> {
    let mut out = Vec::new();
    encode_record_into(rec, &mut out)?;
    Ok(out)
}

/// A little cursor for strict decoding of our fixed-layout payloads.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        if self.buf.len() < n {
            return Err(format!(
                "truncated payload: {what} needs {n} bytes, {} left",
                self.buf.len()
            ));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn u32(&mut self, what: &str) -> Result<u32, String> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self, what: &str) -> Result<u64, String> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    fn blob(&mut self, what: &str) -> Result<&'a [u8], String> {
        let n = self.u32(what)? as usize;
        self.take(n, what)
    }

    fn finish(&self) -> Result<(), String> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(format!("{} trailing bytes in payload", self.buf.len()))
        }
    }
}

fn pb<M: protobuf::Message>(bytes: &[u8], what: &str) -> Result<M, String> {
    M::parse_from_bytes(bytes).map_err(|e| format!("invalid {what} protobuf: {e}"))
}

/// Decodes a record body (`type | payload`, i.e. what the crc covers). The caller has already
/// checked the crc, so an error here means a well-formed frame with meaningless content.
pub fn decode_body(body: &[u8]) -> Result<Record, String> {
    let Some((&kind, payload)) = body.split_first() else {
        return Err("empty record body".into());
    };
    let mut r = Reader { buf: payload };
    let rec = match kind {
        kind::SEGMENT_HEADER => {
            let magic = r.take(4, "magic")?;
            if magic != SEGMENT_MAGIC {
                return Err(format!("bad segment magic {magic:02x?}"));
            }
            let version = r.u32("version")?;
            if version != FORMAT_VERSION {
                return Err(format!(
                    "unsupported WAL format version {version} (this build reads {FORMAT_VERSION})"
                ));
            }
            let seq = r.u64("seq")?;
            let first_index = r.u64("first_index")?;
            let truncated_index = r.u64("truncated_index")?;
            let truncated_term = r.u64("truncated_term")?;
            let hard_state = pb(r.blob("hard state")?, "hard state")?;
            let conf_state = pb(r.blob("conf state")?, "conf state")?;
            Record::SegmentHeader(SegmentHeader {
                seq,
                first_index,
                truncated_index,
                truncated_term,
                hard_state,
                conf_state,
            })
        }
        kind::ENTRY => return Ok(Record::Entry(pb(payload, "entry")?)),
        kind::HARD_STATE => return Ok(Record::HardState(pb(payload, "hard state")?)),
        kind::CONF_STATE => return Ok(Record::ConfState(pb(payload, "conf state")?)),
        kind::COMPACT => Record::Compact {
            index: r.u64("index")?,
            term: r.u64("term")?,
        },
        kind::SNAPSHOT => Record::Snapshot {
            index: r.u64("index")?,
            term: r.u64("term")?,
            hard_state: pb(r.blob("hard state")?, "hard state")?,
            conf_state: pb(r.blob("conf state")?, "conf state")?,
        },
        other => return Err(format!("unknown record type {other}")),
    };
    r.finish()?;
    Ok(rec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, term: u64, data: &[u8]) -> Entry {
        Entry {
            index,
            term,
            data: data.to_vec().into(),
            ..Default::default()
        }
    }

    fn samples() -> Vec<Record> {
        let hs = HardState {
            term: 7,
            vote: 2,
            commit: 41,
            ..Default::default()
        };
        let cs = ConfState {
            voters: vec![1, 2, 3],
            learners: vec![9],
            ..Default::default()
        };
        vec![
            Record::SegmentHeader(SegmentHeader {
                seq: 3,
                first_index: 42,
                truncated_index: 10,
                truncated_term: 2,
                hard_state: hs.clone(),
                conf_state: cs.clone(),
            }),
            Record::SegmentHeader(SegmentHeader::default()),
            Record::Entry(entry(42, 7, b"hello")),
            Record::Entry(Entry::default()),
            Record::HardState(hs.clone()),
            Record::HardState(HardState::default()),
            Record::ConfState(cs.clone()),
            Record::Compact {
                index: u64::MAX,
                term: 1,
            },
            Record::Snapshot {
                index: 100,
                term: 5,
                hard_state: hs,
                conf_state: cs,
            },
        ]
    }

    #[test]
    fn roundtrip_every_kind() {
        for rec in samples() {
            let frame = encode_record(&rec).unwrap();
            let len = u32::from_le_bytes(frame[0..4].try_into().unwrap()) as usize;
            let crc = u32::from_le_bytes(frame[4..8].try_into().unwrap());
            assert_eq!(len, frame.len() - RECORD_HEADER_LEN, "{rec:?}");
            assert!(len >= 1);
            assert_eq!(crc, crc32c::crc32c(&frame[RECORD_HEADER_LEN..]));
            assert_eq!(frame[RECORD_HEADER_LEN], rec.kind());
            let back = decode_body(&frame[RECORD_HEADER_LEN..]).unwrap();
            assert_eq!(back, rec);
        }
    }

    #[test]
    fn strict_decoding_rejects_garbage() {
        assert!(decode_body(&[]).is_err());
        assert!(decode_body(&[99, 1, 2]).is_err());
        // Compact with a trailing byte.
        let mut body = vec![kind::COMPACT];
        body.extend_from_slice(&[0u8; 17]);
        assert!(decode_body(&body).unwrap_err().contains("trailing"));
        // Compact too short.
        assert!(decode_body(&[kind::COMPACT, 1, 2]).is_err());
        // Header with wrong magic.
        let mut h = encode_record(&Record::SegmentHeader(SegmentHeader::default())).unwrap();
        h[RECORD_HEADER_LEN + 1] ^= 0xff;
        assert!(decode_body(&h[RECORD_HEADER_LEN..])
            .unwrap_err()
            .contains("magic"));
    }
}
