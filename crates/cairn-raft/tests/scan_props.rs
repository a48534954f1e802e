//! Properties of `scan_segment_bytes`: it never panics, whatever the bytes, and a single bit
//! flip in a valid segment is always detected: the scan never returns records that differ from
//! what was written (it stops at or before the damaged record, and reports corruption when
//! valid records follow the damage).

use cairn_raft::wal::{encode_record, scan_segment_bytes, Record, ScanEnd, SegmentHeader};
use proptest::prelude::*;
use raft::eraftpb::{ConfState, Entry, HardState};

fn hard_state() -> impl Strategy<Value = HardState> {
    (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(t, v, c)| HardState {
        term: t,
        vote: v,
        commit: c,
        ..Default::default()
    })
}

fn conf_state() -> impl Strategy<Value = ConfState> {
    (
        proptest::collection::vec(any::<u64>(), 0..4),
        proptest::collection::vec(any::<u64>(), 0..3),
        any::<bool>(),
    )
        .prop_map(|(voters, learners, auto_leave)| ConfState {
            voters,
            learners,
            auto_leave,
            ..Default::default()
        })
}

fn record() -> impl Strategy<Value = Record> {
    prop_oneof![
        5 => (any::<u64>(), any::<u64>(), proptest::collection::vec(any::<u8>(), 0..64)).prop_map(
            |(index, term, data)| {
                let e = Entry {
                    index,
                    term,
                    data: data.into(),
                    ..Default::default()
                };
                Record::Entry(e)
            }
        ),
        1 => hard_state().prop_map(Record::HardState),
        1 => conf_state().prop_map(Record::ConfState),
        1 => (any::<u64>(), any::<u64>()).prop_map(|(index, term)| Record::Compact { index, term }),
        1 => (any::<u64>(), any::<u64>(), hard_state(), conf_state()).prop_map(
            |(index, term, hard_state, conf_state)| Record::Snapshot { index, term, hard_state, conf_state }
        ),
    ]
}

fn header() -> impl Strategy<Value = Record> {
    (any::<u64>(), any::<u64>(), hard_state(), conf_state()).prop_map(|(seq, first, hs, cs)| {
        Record::SegmentHeader(SegmentHeader {
            seq,
            first_index: first,
            truncated_index: first / 2,
            truncated_term: 1,
            hard_state: hs,
            conf_state: cs,
        })
    })
}

/// A valid segment: header, records, zero padding. Returns (bytes, records, frame spans).
fn segment() -> impl Strategy<Value = (Vec<u8>, Vec<Record>, Vec<(usize, usize)>)> {
    (
        header(),
        proptest::collection::vec(record(), 0..8),
        0usize..48,
    )
        .prop_map(|(h, rest, pad)| {
            let mut recs = vec![h];
            recs.extend(rest);
            let mut bytes = Vec::new();
            let mut spans = Vec::new();
            for r in &recs {
                let f = encode_record(r).unwrap();
                spans.push((bytes.len(), f.len()));
                bytes.extend(f);
            }
            bytes.resize(bytes.len() + pad, 0);
            (bytes, recs, spans)
        })
}

/// Basic consistency of any outcome: increasing, in-bounds offsets.
fn check_shape(bytes: &[u8]) {
    let out = scan_segment_bytes(bytes);
    let mut at = 0u64;
    for r in &out.records {
        assert_eq!(r.offset, at);
        at += r.frame_len;
    }
    assert!(at <= bytes.len() as u64);
    assert!(out.end.offset() <= bytes.len() as u64);
    if !matches!(out.end, ScanEnd::Corrupt { .. }) {
        assert_eq!(out.end.offset(), at);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        check_shape(&bytes);
    }

    #[test]
    fn never_panics_on_valid_prefix_plus_garbage(
        (seg, _, _) in segment(),
        garbage in proptest::collection::vec(any::<u8>(), 0..256),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = seg[..cut.index(seg.len() + 1)].to_vec();
        bytes.extend(garbage);
        check_shape(&bytes);
    }

    #[test]
    fn valid_segments_scan_clean((bytes, recs, spans) in segment()) {
        let out = scan_segment_bytes(&bytes);
        let got: Vec<Record> = out.records.into_iter().map(|r| r.record).collect();
        prop_assert_eq!(got, recs);
        let end = spans.last().map_or(0, |(o, l)| o + l);
        prop_assert_eq!(out.end, ScanEnd::Clean { offset: end as u64 });
    }

    #[test]
    fn single_bit_flip_is_always_detected(
        (bytes, recs, spans) in segment(),
        pos in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let p = pos.index(bytes.len());
        let mut b = bytes.clone();
        b[p] ^= 1 << bit;
        let out = scan_segment_bytes(&b);
        let got: Vec<Record> = out.records.iter().map(|r| r.record.clone()).collect();
        // Whatever the outcome: only original records, in order, never altered ones.
        prop_assert!(got.len() <= recs.len());
        prop_assert_eq!(&got[..], &recs[..got.len()]);

        match spans.iter().position(|&(o, l)| p >= o && p < o + l) {
            Some(k) if k + 1 < spans.len() => {
                // Damage followed by valid records: corruption at exactly that record.
                prop_assert_eq!(got.len(), k);
                let is_corrupt_at_k = matches!(
                    out.end,
                    ScanEnd::Corrupt { offset, .. } if offset == spans[k].0 as u64
                );
                prop_assert!(is_corrupt_at_k, "{:?}", out.end);
            }
            Some(k) => {
                // The last record: torn or corrupt, never accepted.
                prop_assert_eq!(got.len(), k);
                prop_assert!(!matches!(out.end, ScanEnd::Clean { .. }), "{:?}", out.end);
            }
            None => {
                // In the zero padding: every record intact, the damage noticed or cut off.
                prop_assert_eq!(got.len(), recs.len());
            }
        }
    }
}
