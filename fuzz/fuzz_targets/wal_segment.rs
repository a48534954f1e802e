//! Fuzzes the WAL segment decoder: `scan_segment_bytes` must never panic, and whatever it
//! accepts must be consistent (records contiguous from offset 0, inside the input).
#![no_main]

use cairn_raft::wal::{scan_segment_bytes, ScanEnd};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let out = scan_segment_bytes(data);
    let mut at = 0u64;
    for r in &out.records {
        assert_eq!(r.offset, at);
        at += r.frame_len;
    }
    assert!(at <= data.len() as u64);
    if !matches!(out.end, ScanEnd::Corrupt { .. }) {
        assert_eq!(out.end.offset(), at);
    }
});
