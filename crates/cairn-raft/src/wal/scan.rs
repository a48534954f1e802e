//! Verifying a segment's bytes: the pure, panic-free decoder shared by replay and the fuzzer.
//!
//! The scanner walks records from offset 0 and stops at the first one that is not valid. It then
//! has to tell a **torn tail** (the last write before a crash only partly reached the disk: safe
//! to cut off) from **corruption** (damage in the middle of data that was once synced: the log
//! must not be trusted). The rule:
//!
//! * A bad record is a *torn-tail candidate* only if nothing but zero bytes follows its claimed
//!   extent (or the claimed extent runs past the end of the file). Segments are preallocated with
//!   zeros, so after the last real write there is nothing but zeros.
//! * A bad record followed by any non-zero byte is corruption.
//! * `len` is not covered by the crc, so a bit flip in `len` could make a record appear to
//!   swallow its successors, which would then look like the inside of a torn record. To catch
//!   that, a torn-tail candidate whose stored crc matches a *shorter* body — one that is followed
//!   by zeros or by another valid frame — is reported as a damaged length field (corruption).
//!   This walks the candidate once (a running crc), only on the error path.
//! * An all-zero 8-byte header is the end of the log; any non-zero byte after it is corruption.
//!
//! Whether a torn tail is acceptable depends on where the segment is (only the last segment may
//! have one); that is decided by the caller, not here.

use super::record::{decode_body, kind, Record, RECORD_HEADER_LEN};

/// One valid record found by [`scan_segment_bytes`].
#[derive(Debug, Clone, PartialEq)]
pub struct ScannedRecord {
    /// Offset of the record's frame in the segment.
    pub offset: u64,
    /// Length of the whole frame (header included).
    pub frame_len: u64,
    /// The decoded record.
    pub record: Record,
}

/// How the scan of a segment ended.
#[derive(Debug, Clone, PartialEq)]
pub enum ScanEnd {
    /// All data up to `offset` is valid; the rest of the segment is zeros (or absent).
    Clean {
        /// End of the valid data: where the next record would be written.
        offset: u64,
    },
    /// The record at `offset` is incomplete or fails its crc and only zeros follow it: a torn
    /// write. Acceptable in the last segment, where the log is cut at `offset`.
    Torn {
        /// Offset of the torn record (end of the valid data).
        offset: u64,
        /// Why the record is not valid.
        reason: String,
    },
    /// Damage that is not a torn tail.
    Corrupt {
        /// Offset of the bad record (or of the unexpected data).
        offset: u64,
        /// What is wrong.
        reason: String,
    },
}

impl ScanEnd {
    /// The offset the scan stopped at.
    pub fn offset(&self) -> u64 {
        match self {
            ScanEnd::Clean { offset }
            | ScanEnd::Torn { offset, .. }
            | ScanEnd::Corrupt { offset, .. } => *offset,
        }
    }
}

/// The result of [`scan_segment_bytes`]: the valid records before the stop, and why it stopped.
#[derive(Debug, Clone, PartialEq)]
pub struct ScanOutcome {
    /// Every valid record from offset 0 up to the stop, in order.
    pub records: Vec<ScannedRecord>,
    /// Why the scan stopped.
    pub end: ScanEnd,
}

fn first_nonzero(bytes: &[u8]) -> Option<usize> {
    // Chunked so the common all-zero case stays fast on a 64 MiB preallocated segment.
    let mut base = 0;
    for chunk in bytes.chunks(4096) {
        if chunk.iter().any(|&b| b != 0) {
            return chunk.iter().position(|&b| b != 0).map(|p| base + p);
        }
        base += chunk.len();
    }
    None
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(a)
}

/// True if a complete frame with a matching crc starts at `off`.
fn valid_frame_at(bytes: &[u8], off: usize) -> bool {
    let Some(rest) = bytes.get(off..) else {
        return false;
    };
    if rest.len() < RECORD_HEADER_LEN {
        return false;
    }
    let len = read_u32(rest, 0) as usize;
    let crc = read_u32(rest, 4);
    if len == 0 || rest.len() - RECORD_HEADER_LEN < len {
        return false;
    }
    crc32c::crc32c(&rest[RECORD_HEADER_LEN..RECORD_HEADER_LEN + len]) == crc
}

/// If the stored crc matches a body shorter than the claimed `len` that is followed by zeros or
/// by another valid frame, the length field was damaged: returns that shorter body length.
fn shorter_matching_body(bytes: &[u8], off: usize, len: usize, stored_crc: u32) -> Option<usize> {
    let body_start = off + RECORD_HEADER_LEN;
    let avail = bytes.len().saturating_sub(body_start);
    let max = avail.min(len.saturating_sub(1));
    let mut crc = 0u32;
    for l in 1..=max {
        crc = crc32c::crc32c_append(crc, &bytes[body_start + l - 1..body_start + l]);
        if crc == stored_crc {
            let next = body_start + l;
            if first_nonzero(&bytes[next..]).is_none() || valid_frame_at(bytes, next) {
                return Some(l);
            }
        }
    }
    None
}

/// Decides torn tail vs corruption for an invalid record at `off` (see the module docs).
fn classify_bad(bytes: &[u8], off: usize, len: usize, stored_crc: u32, reason: String) -> ScanEnd {
    let claimed_end = off.saturating_add(RECORD_HEADER_LEN).saturating_add(len);
    if claimed_end < bytes.len() && first_nonzero(&bytes[claimed_end..]).is_some() {
        return ScanEnd::Corrupt {
            offset: off as u64,
            reason,
        };
    }
    if let Some(l) = shorter_matching_body(bytes, off, len, stored_crc) {
        return ScanEnd::Corrupt {
            offset: off as u64,
            reason: format!(
                "{reason}; the stored crc matches the first {l} body bytes, so the length \
                 field ({len}) is damaged"
            ),
        };
    }
    ScanEnd::Torn {
        offset: off as u64,
        reason,
    }
}

/// Verifies and decodes the bytes of one segment file. Never panics, whatever the input.
///
/// Structural rules checked here: the record at offset 0 must be a segment header and no other
/// record may be one. Everything about how segments relate to each other (sequence, indexes,
/// whether a torn tail is allowed) is the caller's business.
pub fn scan_segment_bytes(bytes: &[u8]) -> ScanOutcome {
    let n = bytes.len();
    let mut records = Vec::new();
    let mut off = 0usize;
    let end = loop {
        let rest = &bytes[off..];
        if rest.is_empty() {
            break ScanEnd::Clean { offset: off as u64 };
        }
        if rest.len() < RECORD_HEADER_LEN {
            if first_nonzero(rest).is_none() {
                break ScanEnd::Clean { offset: off as u64 };
            }
            break ScanEnd::Torn {
                offset: off as u64,
                reason: format!(
                    "incomplete record header ({} of {RECORD_HEADER_LEN} bytes)",
                    rest.len()
                ),
            };
        }
        let len = read_u32(rest, 0) as usize;
        let stored_crc = read_u32(rest, 4);
        if len == 0 && stored_crc == 0 {
            // End of the written data. Everything after must be the zeroed preallocation.
            match first_nonzero(&rest[RECORD_HEADER_LEN..]) {
                None => break ScanEnd::Clean { offset: off as u64 },
                Some(p) => {
                    break ScanEnd::Corrupt {
                        offset: (off + RECORD_HEADER_LEN + p) as u64,
                        reason: format!(
                            "non-zero data after the end of the log (which ends at offset {off})"
                        ),
                    }
                }
            }
        }
        if len == 0 {
            break classify_bad(bytes, off, 0, stored_crc, "zero record length".into());
        }
        let avail = rest.len() - RECORD_HEADER_LEN;
        if len > avail {
            let reason = format!(
                "record length {len} runs past the end of the segment ({avail} bytes left)"
            );
            break classify_bad(bytes, off, len, stored_crc, reason);
        }
        let body = &rest[RECORD_HEADER_LEN..RECORD_HEADER_LEN + len];
        let got = crc32c::crc32c(body);
        if got != stored_crc {
            let reason = format!("crc mismatch (expected {stored_crc:#010x}, got {got:#010x})");
            break classify_bad(bytes, off, len, stored_crc, reason);
        }
        // From here on the frame is intact: any problem is corruption, never a torn write.
        let record = match decode_body(body) {
            Ok(r) => r,
            Err(reason) => {
                break ScanEnd::Corrupt {
                    offset: off as u64,
                    reason: format!("invalid {} record: {reason}", Record::kind_name(body[0])),
                }
            }
        };
        let is_header = body[0] == kind::SEGMENT_HEADER;
        if off == 0 && !is_header {
            break ScanEnd::Corrupt {
                offset: 0,
                reason: format!(
                    "segment does not start with a segment header (found a {} record)",
                    Record::kind_name(body[0])
                ),
            };
        }
        if off != 0 && is_header {
            break ScanEnd::Corrupt {
                offset: off as u64,
                reason: "segment header in the middle of a segment".into(),
            };
        }
        let frame_len = RECORD_HEADER_LEN + len;
        records.push(ScannedRecord {
            offset: off as u64,
            frame_len: frame_len as u64,
            record,
        });
        off += frame_len;
        debug_assert!(off <= n);
    };
    ScanOutcome { records, end }
}

#[cfg(test)]
mod tests {
    use super::super::record::{encode_record, SegmentHeader};
    use super::*;
    use raft::eraftpb::Entry;

    fn entry(index: u64) -> Record {
        let e = Entry {
            index,
            term: 1,
            data: vec![0xab; (index as usize % 7) * 5].into(),
            ..Default::default()
        };
        Record::Entry(e)
    }

    /// header + entries 1..=count, then `pad` zero bytes. Returns bytes and record offsets.
    fn segment(count: u64, pad: usize) -> (Vec<u8>, Vec<usize>) {
        let mut bytes = encode_record(&Record::SegmentHeader(SegmentHeader {
            seq: 1,
            first_index: 1,
            ..Default::default()
        }))
        .unwrap();
        let mut offs = vec![0];
        for i in 1..=count {
            offs.push(bytes.len());
            bytes.extend(encode_record(&entry(i)).unwrap());
        }
        bytes.resize(bytes.len() + pad, 0);
        (bytes, offs)
    }

    #[test]
    fn clean_segment_with_and_without_padding() {
        for pad in [0, 3, 8, 100] {
            let (bytes, offs) = segment(5, pad);
            let out = scan_segment_bytes(&bytes);
            assert_eq!(out.records.len(), 6);
            let end = bytes.len() - pad;
            assert_eq!(out.end, ScanEnd::Clean { offset: end as u64 });
            for (r, o) in out.records.iter().zip(&offs) {
                assert_eq!(r.offset, *o as u64);
            }
        }
        assert_eq!(scan_segment_bytes(&[]).end, ScanEnd::Clean { offset: 0 });
        assert_eq!(
            scan_segment_bytes(&[0; 64]).end,
            ScanEnd::Clean { offset: 0 }
        );
    }

    #[test]
    fn truncation_anywhere_in_last_record_is_torn() {
        let (full, offs) = segment(4, 0);
        let last = *offs.last().unwrap();
        for cut in last + 1..full.len() {
            let out = scan_segment_bytes(&full[..cut]);
            assert_eq!(out.records.len(), offs.len() - 1, "cut {cut}");
            assert!(
                matches!(out.end, ScanEnd::Torn { offset, .. } if offset == last as u64),
                "cut {cut}: {:?}",
                out.end
            );
        }
    }

    #[test]
    fn zeroed_tail_of_last_record_is_torn() {
        let (full, offs) = segment(4, 4096);
        let last = *offs.last().unwrap();
        let last_end = full.len() - 4096;
        for from in last..last_end {
            let mut b = full.clone();
            b[from..].iter_mut().for_each(|x| *x = 0);
            let out = scan_segment_bytes(&b);
            assert_eq!(out.records.len(), offs.len() - 1, "from {from}");
            if from == last {
                // The whole record is gone: a clean end.
                assert_eq!(
                    out.end,
                    ScanEnd::Clean {
                        offset: last as u64
                    }
                );
            } else {
                assert!(
                    matches!(out.end, ScanEnd::Torn { offset, .. } if offset == last as u64),
                    "from {from}: {:?}",
                    out.end
                );
            }
        }
    }

    #[test]
    fn flip_in_middle_record_is_corrupt_at_its_offset() {
        let (full, offs) = segment(4, 64);
        let victim = offs[2];
        let victim_end = offs[3];
        for pos in victim..victim_end {
            for bit in 0..8 {
                let mut b = full.clone();
                b[pos] ^= 1 << bit;
                let out = scan_segment_bytes(&b);
                assert!(
                    matches!(out.end, ScanEnd::Corrupt { offset, .. } if offset == victim as u64),
                    "pos {pos} bit {bit}: {:?}",
                    out.end
                );
                assert_eq!(out.records.len(), 2);
            }
        }
    }

    #[test]
    fn crc_mismatch_reason_names_both_values() {
        let (mut b, offs) = segment(3, 0);
        b[offs[1] + RECORD_HEADER_LEN + 1] ^= 0x10;
        match scan_segment_bytes(&b).end {
            ScanEnd::Corrupt { offset, reason } => {
                assert_eq!(offset, offs[1] as u64);
                assert!(reason.starts_with("crc mismatch (expected 0x"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn garbage_after_end_marker_is_corrupt() {
        let (mut b, _) = segment(2, 100);
        let n = b.len();
        b[n - 10] = 1;
        assert!(matches!(
            scan_segment_bytes(&b).end,
            ScanEnd::Corrupt { offset, .. } if offset == (n - 10) as u64
        ));
    }

    #[test]
    fn structural_rules() {
        let e = encode_record(&entry(1)).unwrap();
        let out = scan_segment_bytes(&e);
        assert!(matches!(out.end, ScanEnd::Corrupt { offset: 0, .. }));
        let (mut b, _) = segment(1, 0);
        let h = encode_record(&Record::SegmentHeader(SegmentHeader::default())).unwrap();
        let at = b.len();
        b.extend(h);
        assert!(matches!(
            scan_segment_bytes(&b).end,
            ScanEnd::Corrupt { offset, .. } if offset == at as u64
        ));
    }
}
