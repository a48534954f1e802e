//! Tests of the WAL against real files: torn tails, corruption, rotation, release, replay.

use std::fs;
use std::path::{Path, PathBuf};

use raft::eraftpb::{ConfState, Entry, HardState};

use super::*;

fn ent(index: u64, term: u64) -> Entry {
    let e = Entry {
        index,
        term,
        data: format!("entry-{index}-{term}").into_bytes().into(),
        ..Default::default()
    };
    e
}

fn ents(range: std::ops::RangeInclusive<u64>, term: u64) -> Vec<Entry> {
    range.map(|i| ent(i, term)).collect()
}

fn hs(term: u64, vote: u64, commit: u64) -> HardState {
    HardState {
        term,
        vote,
        commit,
        ..Default::default()
    }
}

fn opts(segment_size: u64, max_wals: usize) -> WalOptions {
    WalOptions {
        segment_size,
        max_wals,
    }
}

fn open(dir: &Path, o: WalOptions) -> Result<Opened, WalError> {
    Wal::open(dir, o)
}

fn idx_terms(r: &Replayed) -> Vec<(u64, u64)> {
    r.entries.iter().map(|e| (e.index, e.term)).collect()
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    v.sort();
    v
}

/// Offsets and lengths of the records of a segment file.
fn record_spans(path: &Path) -> Vec<(u64, u64)> {
    let bytes = fs::read(path).unwrap();
    scan_segment_bytes(&bytes)
        .records
        .iter()
        .map(|r| (r.offset, r.frame_len))
        .collect()
}

fn expect_corrupt(r: Result<Opened, WalError>) -> (PathBuf, u64, String) {
    match r {
        Err(WalError::Corrupt {
            file,
            offset,
            reason,
        }) => (file, offset, reason),
        Err(e) => panic!("expected Corrupt, got {e}"),
        Ok(_) => panic!("expected Corrupt, got a successful open"),
    }
}

#[test]
fn fresh_then_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let o = open(dir.path(), opts(4096, 5)).unwrap();
    assert!(o.fresh);
    assert_eq!(o.replayed, Replayed::default());
    assert_eq!(o.wal.segment_paths().len(), 1);
    assert_eq!(
        fs::metadata(&o.wal.segment_paths()[0]).unwrap().len(),
        4096,
        "preallocated"
    );
    drop(o);
    let o = open(dir.path(), opts(4096, 5)).unwrap();
    assert!(!o.fresh);
    assert_eq!(o.replayed, Replayed::default());
}

#[test]
fn second_open_is_locked() {
    let dir = tempfile::tempdir().unwrap();
    let _a = open(dir.path(), WalOptions::default()).unwrap();
    assert!(matches!(
        open(dir.path(), WalOptions::default()),
        Err(WalError::Locked(_))
    ));
}

#[test]
fn everything_written_is_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let cs = ConfState {
        voters: vec![1, 2, 3],
        ..Default::default()
    };
    {
        let mut w = open(dir.path(), opts(1 << 20, 5)).unwrap().wal;
        w.write_conf_state(&cs).unwrap();
        w.append_entries(&ents(1..=10, 1)).unwrap();
        w.write_hard_state(&hs(1, 1, 7)).unwrap();
        w.sync().unwrap();
    }
    let o = open(dir.path(), opts(1 << 20, 5)).unwrap();
    assert_eq!(o.replayed.conf_state, cs);
    assert_eq!(o.replayed.hard_state, hs(1, 1, 7));
    assert_eq!(o.replayed.entries, ents(1..=10, 1));
    assert_eq!(o.replayed.truncated_index, 0);
}

#[test]
fn drop_hands_unsynced_writes_to_the_kernel() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut w = open(dir.path(), opts(1 << 20, 5)).unwrap().wal;
        w.append_entries(&ents(1..=3, 1)).unwrap();
    }
    let o = open(dir.path(), opts(1 << 20, 5)).unwrap();
    assert_eq!(o.replayed.entries, ents(1..=3, 1));
}

/// Writes entries 1..=5 and a final entry 6 (the record the tail tests damage).
fn write_six(dir: &Path) -> (PathBuf, u64, u64) {
    let mut w = open(dir, opts(1 << 16, 5)).unwrap().wal;
    w.append_entries(&ents(1..=5, 1)).unwrap();
    w.append_entries(&ents(6..=6, 1)).unwrap();
    w.sync().unwrap();
    let path = w.segment_paths()[0].clone();
    drop(w);
    let spans = record_spans(&path);
    let (off, len) = *spans.last().unwrap();
    (path, off, off + len)
}

fn check_tail_repaired(dir: &Path) {
    let o = open(dir, opts(1 << 16, 5)).unwrap();
    assert_eq!(o.replayed.entries, ents(1..=5, 1));
    // Appending after the repair is clean, and survives another reopen.
    let mut w = o.wal;
    w.append_entries(&ents(6..=7, 2)).unwrap();
    w.sync().unwrap();
    drop(w);
    let o = open(dir, opts(1 << 16, 5)).unwrap();
    let mut want = ents(1..=5, 1);
    want.extend(ents(6..=7, 2));
    assert_eq!(o.replayed.entries, want);
}

#[test]
fn torn_tail_truncated_file_at_every_byte() {
    let dir = tempfile::tempdir().unwrap();
    let (path, start, end) = write_six(dir.path());
    let original = fs::read(&path).unwrap();
    for cut in start + 1..end {
        fs::write(&path, &original[..cut as usize]).unwrap();
        check_tail_repaired(dir.path());
        // Restore for the next position.
        fs::write(&path, &original).unwrap();
    }
    // Cut exactly before the record: a clean end, nothing lost but that record.
    fs::write(&path, &original[..start as usize]).unwrap();
    check_tail_repaired(dir.path());
}

#[test]
fn torn_tail_partially_zeroed_record_at_every_byte() {
    let dir = tempfile::tempdir().unwrap();
    let (path, start, end) = write_six(dir.path());
    let original = fs::read(&path).unwrap();
    for from in start..end {
        let mut b = original.clone();
        b[from as usize..end as usize].fill(0);
        fs::write(&path, &b).unwrap();
        check_tail_repaired(dir.path());
        fs::write(&path, &original).unwrap();
    }
}

#[test]
fn flipped_bit_in_last_record_of_last_segment_is_a_torn_tail() {
    // Indistinguishable from a torn write: the record is dropped, never misread.
    let dir = tempfile::tempdir().unwrap();
    let (path, start, end) = write_six(dir.path());
    let mut b = fs::read(&path).unwrap();
    b[((start + end) / 2) as usize] ^= 0x04;
    fs::write(&path, &b).unwrap();
    check_tail_repaired(dir.path());
}

#[test]
fn flipped_bit_followed_by_records_is_corrupt_with_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _, _) = write_six(dir.path());
    let spans = record_spans(&path);
    let original = fs::read(&path).unwrap();
    // Every byte of entry record 3 (spans[0] is the header), every bit.
    let (off, len) = spans[3];
    for pos in off..off + len {
        for bit in 0..8 {
            let mut b = original.clone();
            b[pos as usize] ^= 1 << bit;
            fs::write(&path, &b).unwrap();
            let (file, offset, reason) = expect_corrupt(open(dir.path(), opts(1 << 16, 5)));
            assert_eq!(file, path);
            assert_eq!(offset, off, "pos {pos} bit {bit}: {reason}");
        }
    }
    // The message names both.
    let mut b = original.clone();
    b[(off + 10) as usize] ^= 1;
    fs::write(&path, &b).unwrap();
    let err = open(dir.path(), opts(1 << 16, 5)).unwrap_err().to_string();
    assert!(
        err.starts_with(&format!(
            "WAL corrupt: {} at offset {off}: crc mismatch (expected 0x",
            path.display()
        )),
        "{err}"
    );
}

#[test]
fn flipped_bit_in_header_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _, _) = write_six(dir.path());
    let mut b = fs::read(&path).unwrap();
    b[12] ^= 0x80;
    fs::write(&path, &b).unwrap();
    let (file, offset, _) = expect_corrupt(open(dir.path(), opts(1 << 16, 5)));
    assert_eq!((file, offset), (path, 0));
}

/// Writes 1..=count entries with ~100-byte payloads into 512-byte segments.
fn write_rotating(dir: &Path, count: u64, max_wals: usize) -> Vec<Entry> {
    let mut w = open(dir, opts(512, max_wals)).unwrap().wal;
    let mut all = Vec::new();
    for i in 1..=count {
        let mut e = ent(i, 1);
        e.data = vec![i as u8; 100].into();
        w.append_entries(std::slice::from_ref(&e)).unwrap();
        if i % 3 == 0 {
            w.write_hard_state(&hs(1, 1, i - 1)).unwrap();
        }
        all.push(e);
    }
    w.sync().unwrap();
    all
}

#[test]
fn rotation_and_replay_across_many_segments() {
    let dir = tempfile::tempdir().unwrap();
    let all = write_rotating(dir.path(), 60, 0);
    let files = segment_files(dir.path());
    assert!(files.len() >= 10, "{} segments", files.len());
    for (i, f) in files.iter().enumerate() {
        let (seq, _) =
            segment::parse_segment_name(f.file_name().unwrap().to_str().unwrap()).unwrap();
        assert_eq!(seq, i as u64 + 1);
        let len = fs::metadata(f).unwrap().len();
        assert!(len <= 512, "{} is {len} bytes", f.display());
    }
    let o = open(dir.path(), opts(512, 0)).unwrap();
    assert_eq!(o.replayed.entries, all);
    assert_eq!(o.replayed.hard_state, hs(1, 1, 59));
    // Each segment's name matches the first entry in it.
    for f in &files {
        let (_, first) =
            segment::parse_segment_name(f.file_name().unwrap().to_str().unwrap()).unwrap();
        let bytes = fs::read(f).unwrap();
        let out = scan_segment_bytes(&bytes);
        if let Some(Record::Entry(e)) = out.records.get(1).map(|r| &r.record) {
            assert_eq!(e.index, first);
        }
    }
}

#[test]
fn oversized_record_gets_its_own_segment() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut w = open(dir.path(), opts(256, 0)).unwrap().wal;
        w.append_entries(&ents(1..=2, 1)).unwrap();
        let mut big = ent(3, 1);
        big.data = vec![7; 1000].into();
        w.append_entries(&[big]).unwrap();
        w.append_entries(&ents(4..=4, 1)).unwrap();
        w.sync().unwrap();
    }
    let o = open(dir.path(), opts(256, 0)).unwrap();
    assert_eq!(idx_terms(&o.replayed), vec![(1, 1), (2, 1), (3, 1), (4, 1)]);
    assert!(segment_files(dir.path()).len() >= 3);
}

#[test]
fn flip_in_a_non_last_segment_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    write_rotating(dir.path(), 30, 0);
    let files = segment_files(dir.path());
    assert!(files.len() > 2);
    let victim = &files[1];
    let spans = record_spans(victim);
    // The last record of a non-last segment: nothing follows it in that file, yet it is not
    // a torn tail because a later segment exists.
    let (off, len) = *spans.last().unwrap();
    let mut b = fs::read(victim).unwrap();
    b[(off + len - 1) as usize] ^= 0x01;
    fs::write(victim, &b).unwrap();
    let (file, offset, reason) = expect_corrupt(open(dir.path(), opts(512, 0)));
    assert_eq!(&file, victim);
    assert_eq!(offset, off);
    assert!(reason.contains("not the last"), "{reason}");
}

#[test]
fn truncated_non_last_segment_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    write_rotating(dir.path(), 30, 0);
    let files = segment_files(dir.path());
    let victim = &files[0];
    let len = fs::metadata(victim).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(victim)
        .unwrap()
        .set_len(len - 3)
        .unwrap();
    let (file, _, _) = expect_corrupt(open(dir.path(), opts(512, 0)));
    assert_eq!(&file, victim);
}

#[test]
fn missing_segment_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    write_rotating(dir.path(), 30, 0);
    let files = segment_files(dir.path());
    fs::remove_file(&files[2]).unwrap();
    let (file, offset, reason) = expect_corrupt(open(dir.path(), opts(512, 0)));
    assert_eq!(file, files[3]);
    assert_eq!(offset, 0);
    assert!(reason.contains("missing segment"), "{reason}");
}

#[test]
fn segment_from_elsewhere_is_corrupt() {
    // A header that does not continue the log (e.g. a file copied from another WAL).
    let dir = tempfile::tempdir().unwrap();
    write_rotating(dir.path(), 30, 0);
    let files = segment_files(dir.path());
    let other = tempfile::tempdir().unwrap();
    {
        let mut w = open(other.path(), opts(512, 0)).unwrap().wal;
        for i in 1..=10 {
            let mut e = ent(i, 2);
            e.data = vec![0xee; 100].into();
            w.append_entries(&[e]).unwrap();
        }
        w.sync().unwrap();
    }
    let foreign = segment_files(other.path());
    // Same seq, different content: the first-index check or the state check fails.
    let target = &files[1];
    let (seq, _) =
        segment::parse_segment_name(target.file_name().unwrap().to_str().unwrap()).unwrap();
    let src = foreign
        .iter()
        .find(|f| {
            segment::parse_segment_name(f.file_name().unwrap().to_str().unwrap())
                .unwrap()
                .0
                == seq
        })
        .unwrap();
    fs::copy(src, target).unwrap();
    let (file, offset, _) = expect_corrupt(open(dir.path(), opts(512, 0)));
    assert_eq!((&file, offset), (target, 0));
}

#[test]
fn entries_not_contiguous_are_corrupt() {
    // Hand-craft a segment with entries 1, 2, 4.
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path(), opts(4096, 5)).unwrap());
    let path = segment_files(dir.path()).remove(0);
    let mut bytes = fs::read(&path).unwrap();
    let spans = record_spans(&path);
    let mut at = (spans[0].0 + spans[0].1) as usize;
    let mut off4 = 0;
    for i in [1u64, 2, 4] {
        let f = encode_record(&Record::Entry(ent(i, 1))).unwrap();
        if i == 4 {
            off4 = at as u64;
        }
        bytes[at..at + f.len()].copy_from_slice(&f);
        at += f.len();
    }
    fs::write(&path, &bytes).unwrap();
    let (file, offset, reason) = expect_corrupt(open(dir.path(), opts(4096, 5)));
    assert_eq!((file, offset), (path, off4));
    assert!(reason.contains("not contiguous"), "{reason}");
}

#[test]
fn conflicting_suffix_overwrite_across_restart_and_segments() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut w = open(dir.path(), opts(512, 0)).unwrap().wal;
        for i in 1..=20 {
            let mut e = ent(i, 1);
            e.data = vec![1; 100].into();
            w.append_entries(&[e]).unwrap();
        }
        w.write_hard_state(&hs(1, 1, 7)).unwrap();
        assert!(w.segment_paths().len() > 3);
        // Overwrite from 8 (an older segment) with term 2.
        w.append_entries(&ents(8..=12, 2)).unwrap();
        w.sync().unwrap();
    }
    let o = open(dir.path(), opts(512, 0)).unwrap();
    let mut want: Vec<(u64, u64)> = (1..=7).map(|i| (i, 1)).collect();
    want.extend((8..=12).map(|i| (i, 2)));
    assert_eq!(idx_terms(&o.replayed), want);
    // And once more after a restart, overwriting again.
    let mut w = o.wal;
    w.append_entries(&ents(10..=10, 3)).unwrap();
    w.sync().unwrap();
    drop(w);
    let o = open(dir.path(), opts(512, 0)).unwrap();
    want.truncate(9);
    want.push((10, 3));
    assert_eq!(idx_terms(&o.replayed), want);
}

#[test]
fn invalid_appends_are_refused_without_writing() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = open(dir.path(), opts(4096, 5)).unwrap().wal;
    w.append_entries(&ents(1..=5, 1)).unwrap();
    assert!(matches!(
        w.append_entries(&ents(7..=8, 1)),
        Err(WalError::InvalidRequest(_))
    ));
    assert!(matches!(
        w.append_entries(&[ent(6, 1), ent(8, 1)]),
        Err(WalError::InvalidRequest(_))
    ));
    w.write_compact(3, 1).unwrap();
    assert!(matches!(
        w.append_entries(&ents(3..=4, 2)),
        Err(WalError::InvalidRequest(_))
    ));
    assert!(matches!(
        w.write_compact(9, 1),
        Err(WalError::InvalidRequest(_))
    ));
    // Still usable.
    w.append_entries(&ents(6..=6, 1)).unwrap();
    w.sync().unwrap();
    drop(w);
    let o = open(dir.path(), opts(4096, 5)).unwrap();
    assert_eq!(o.replayed.truncated_index, 3);
    assert_eq!(o.replayed.entries, ents(4..=6, 1));
}

#[test]
fn compact_and_release_delete_old_files() {
    let dir = tempfile::tempdir().unwrap();
    write_rotating(dir.path(), 60, 2);
    let before = segment_files(dir.path());
    let mut w = open(dir.path(), opts(512, 2)).unwrap().wal;
    // Nothing compacted yet: nothing releasable, whatever upto says.
    assert_eq!(w.release(1000).unwrap(), 0);
    w.write_compact(45, 1).unwrap();
    let deleted = w.release(45).unwrap();
    assert!(deleted > 0);
    let after = segment_files(dir.path());
    assert_eq!(after.len(), before.len() - deleted);
    assert_eq!(after, w.segment_paths());
    // The oldest remaining file is a suffix of the sequence, and what was deleted held only
    // entries <= 45.
    assert_eq!(&before[deleted..], &after[..]);
    drop(w);
    let o = open(dir.path(), opts(512, 2)).unwrap();
    assert_eq!(o.replayed.truncated_index, 45);
    assert_eq!(o.replayed.truncated_term, 1);
    assert_eq!(
        idx_terms(&o.replayed),
        (46..=60).map(|i| (i, 1)).collect::<Vec<_>>()
    );
    assert_eq!(o.replayed.hard_state.commit, 59);
}

#[test]
fn release_keeps_max_wals_and_respects_zero() {
    for (max_wals, expect_kept) in [(0usize, None), (1, Some(1)), (3, Some(3))] {
        let dir = tempfile::tempdir().unwrap();
        write_rotating(dir.path(), 60, max_wals);
        let n = segment_files(dir.path()).len();
        let mut w = open(dir.path(), opts(512, max_wals)).unwrap().wal;
        w.write_compact(60, 1).unwrap();
        w.release(60).unwrap();
        let kept = segment_files(dir.path()).len();
        match expect_kept {
            None => assert_eq!(kept, n, "max_wals=0 keeps everything"),
            Some(k) => assert_eq!(kept, k, "max_wals={max_wals}"),
        }
        drop(w);
        let o = open(dir.path(), opts(512, max_wals)).unwrap();
        assert_eq!(o.replayed.truncated_index, 60);
        assert!(o.replayed.entries.is_empty());
    }
}

#[test]
fn release_when_oldest_kept_header_predates_the_compaction() {
    // Segments rotate, then a compaction is recorded in the current segment: the oldest kept
    // segment's header still says "truncated 0", and replay must close that gap with the
    // later Compact record.
    let dir = tempfile::tempdir().unwrap();
    write_rotating(dir.path(), 40, 1);
    let mut w = open(dir.path(), opts(512, 1)).unwrap().wal;
    w.write_compact(40, 1).unwrap();
    w.append_entries(&ents(41..=41, 1)).unwrap();
    w.release(40).unwrap();
    assert_eq!(segment_files(dir.path()).len(), 1);
    drop(w);
    let o = open(dir.path(), opts(512, 1)).unwrap();
    assert_eq!(o.replayed.truncated_index, 40);
    assert_eq!(idx_terms(&o.replayed), vec![(41, 1)]);
}

#[test]
fn snapshot_record_is_atomic_and_replaces_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let cs = ConfState {
        voters: vec![4, 5],
        ..Default::default()
    };
    {
        let mut w = open(dir.path(), opts(4096, 5)).unwrap().wal;
        w.append_entries(&ents(1..=10, 1)).unwrap();
        w.write_snapshot(7, 2, &hs(2, 0, 7), &cs).unwrap();
        assert!(matches!(
            w.write_snapshot(7, 2, &hs(2, 0, 7), &cs),
            Err(WalError::SnapshotOutOfDate { .. })
        ));
        w.append_entries(&ents(8..=9, 2)).unwrap();
        w.sync().unwrap();
    }
    let o = open(dir.path(), opts(4096, 5)).unwrap();
    assert_eq!(o.replayed.truncated_index, 7);
    assert_eq!(o.replayed.truncated_term, 2);
    assert_eq!(o.replayed.conf_state, cs);
    assert_eq!(o.replayed.hard_state, hs(2, 0, 7));
    assert_eq!(idx_terms(&o.replayed), vec![(8, 2), (9, 2)]);
}

#[test]
fn commit_beyond_last_index_is_reported_at_the_hard_state_record() {
    let dir = tempfile::tempdir().unwrap();
    let path;
    {
        let mut w = open(dir.path(), opts(4096, 5)).unwrap().wal;
        w.append_entries(&ents(1..=3, 1)).unwrap();
        w.write_hard_state(&hs(1, 1, 9)).unwrap();
        w.sync().unwrap();
        path = w.segment_paths()[0].clone();
    }
    let spans = record_spans(&path);
    let (file, offset, reason) = expect_corrupt(open(dir.path(), opts(4096, 5)));
    assert_eq!((file, offset), (path, spans.last().unwrap().0));
    assert!(reason.contains("commit 9"), "{reason}");
}

#[test]
fn commit_is_raised_to_the_truncated_index() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut w = open(dir.path(), opts(4096, 5)).unwrap().wal;
        w.append_entries(&ents(1..=10, 1)).unwrap();
        w.write_hard_state(&hs(1, 1, 4)).unwrap();
        w.write_compact(8, 1).unwrap();
        w.sync().unwrap();
    }
    let o = open(dir.path(), opts(4096, 5)).unwrap();
    assert_eq!(o.replayed.hard_state, hs(1, 1, 8));
    assert_eq!(o.replayed.last_index(), 10);
}

#[test]
fn stale_tmp_files_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path(), opts(4096, 5)).unwrap());
    let tmp = dir.path().join("0000000000000002-0000000000000001.wal.tmp");
    fs::write(&tmp, b"half-made").unwrap();
    let o = open(dir.path(), opts(4096, 5)).unwrap();
    assert!(!tmp.exists());
    assert_eq!(o.wal.segment_paths().len(), 1);
}

#[test]
fn garbage_after_the_end_of_the_last_segment_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _, end) = write_six(dir.path());
    let mut b = fs::read(&path).unwrap();
    b[end as usize + 100] = 0x5a;
    fs::write(&path, &b).unwrap();
    let (file, offset, _) = expect_corrupt(open(dir.path(), opts(1 << 16, 5)));
    assert_eq!((file, offset), (path, end + 100));
}

/// `synced.txt` and `truncate_to_synced`: a power loss keeps exactly what was fsynced.
#[cfg(feature = "failpoints")]
mod power_loss {
    use super::*;

    fn sidecar(dir: &Path) -> Vec<(String, u64)> {
        fs::read_to_string(dir.join(SYNCED_FILE))
            .unwrap()
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (n, len) = l.split_once(' ').unwrap();
                (n.to_string(), len.parse().unwrap())
            })
            .collect()
    }

    fn big(index: u64) -> Entry {
        let mut e = ent(index, 1);
        e.data = vec![index as u8; 100].into();
        e
    }

    #[test]
    fn only_the_synced_prefix_survives() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut w = open(dir.path(), opts(1 << 16, 5)).unwrap().wal;
            w.append_entries(&ents(1..=5, 1)).unwrap();
            w.write_hard_state(&hs(1, 1, 5)).unwrap();
            w.sync().unwrap();
            let listed = sidecar(dir.path());
            assert_eq!(listed.len(), 1);
            let spans = record_spans(&w.segment_paths()[0]);
            let (off, len) = *spans.last().unwrap();
            assert_eq!(listed[0].1, off + len, "the sidecar names the synced end");
            // Written and handed to the kernel, never fsynced: as a killed process leaves it.
            w.append_entries(&ents(6..=9, 1)).unwrap();
            w.write_hard_state(&hs(1, 1, 9)).unwrap();
            w.write_out().unwrap();
            assert_eq!(sidecar(dir.path()), listed, "no fsync, no change");
        }
        // Without the cut, the unsynced records are still there (the page cache kept them).
        let report = truncate_to_synced(dir.path()).unwrap();
        assert_eq!(report.files.len(), 1);
        let f = &report.files[0];
        assert_eq!(f.outcome, FileOutcome::Truncated);
        assert!(f.dropped_bytes > 0);
        assert_eq!(report.dropped_bytes(), f.dropped_bytes);
        let o = open(dir.path(), opts(1 << 16, 5)).unwrap();
        assert_eq!(o.replayed.entries, ents(1..=5, 1));
        assert_eq!(o.replayed.hard_state, hs(1, 1, 5));
        // The log goes on cleanly after the cut and survives another reopen.
        let mut w = o.wal;
        w.append_entries(&ents(6..=7, 2)).unwrap();
        w.sync().unwrap();
        drop(w);
        let o = open(dir.path(), opts(1 << 16, 5)).unwrap();
        let mut want = ents(1..=5, 1);
        want.extend(ents(6..=7, 2));
        assert_eq!(o.replayed.entries, want);
        // A second cut of a WAL whose tail is all synced drops nothing.
        drop(o);
        let report = truncate_to_synced(dir.path()).unwrap();
        assert_eq!(report.dropped_bytes(), 0);
    }

    #[test]
    fn rotation_syncs_and_unlisted_segments_go() {
        let dir = tempfile::tempdir().unwrap();
        let mut all = Vec::new();
        {
            let mut w = open(dir.path(), opts(512, 0)).unwrap().wal;
            for i in 1..=6 {
                all.push(big(i));
                w.append_entries(&all[all.len() - 1..]).unwrap();
            }
            w.sync().unwrap();
            // More entries, never explicitly synced: the ones in segments closed by rotation
            // were fsynced by the rotation; those in the last segment were not.
            let before = w.segment_paths().len();
            for i in 7..=14 {
                all.push(big(i));
                w.append_entries(&all[all.len() - 1..]).unwrap();
            }
            assert!(w.segment_paths().len() > before + 1, "the test must rotate");
            let listed = sidecar(dir.path());
            assert_eq!(listed.len(), w.segment_paths().len());
        }
        // A segment-like file the WAL never recorded (as if created and killed before the
        // sidecar was updated), and an interrupted creation.
        let last = segment_files(dir.path()).pop().unwrap();
        let (seq, _) =
            segment::parse_segment_name(last.file_name().unwrap().to_str().unwrap()).unwrap();
        let stray = segment::segment_name(seq + 1, 99);
        fs::write(dir.path().join(&stray), b"junk").unwrap();
        fs::write(
            dir.path().join("0000000000000099-0000000000000001.wal.tmp"),
            b"x",
        )
        .unwrap();

        let report = truncate_to_synced(dir.path()).unwrap();
        let removed: Vec<_> = report
            .files
            .iter()
            .filter(|f| f.outcome == FileOutcome::Removed)
            .map(|f| f.name.clone())
            .collect();
        assert_eq!(
            removed,
            vec![
                stray.clone(),
                "0000000000000099-0000000000000001.wal.tmp".to_string()
            ]
        );
        let truncated = report
            .files
            .iter()
            .find(|f| f.outcome == FileOutcome::Truncated)
            .expect("the last segment is cut");
        assert!(truncated.dropped_bytes > 0);

        let o = open(dir.path(), opts(512, 0)).unwrap();
        let kept = o.replayed.entries.len();
        assert!((6..14).contains(&kept), "kept {kept}");
        assert_eq!(o.replayed.entries, &all[..kept]);
    }

    #[test]
    fn released_segments_leave_the_sidecar() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = open(dir.path(), opts(512, 2)).unwrap().wal;
        for i in 1..=20 {
            w.append_entries(&[big(i)]).unwrap();
        }
        w.write_compact(18, 1).unwrap();
        assert!(w.release(18).unwrap() > 0);
        let names: Vec<String> = w
            .segment_paths()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        let listed: Vec<String> = sidecar(dir.path()).into_iter().map(|(n, _)| n).collect();
        assert_eq!(listed, names);
    }

    #[test]
    fn a_missing_sidecar_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        drop(open(dir.path(), opts(1 << 16, 5)).unwrap());
        fs::remove_file(dir.path().join(SYNCED_FILE)).unwrap();
        assert!(matches!(
            truncate_to_synced(dir.path()),
            Err(WalError::Io { .. })
        ));
        fs::write(dir.path().join(SYNCED_FILE), "not a segment 12\n").unwrap();
        assert!(truncate_to_synced(dir.path()).unwrap_err().is_corrupt());
    }

    #[test]
    fn a_running_wal_is_not_cut() {
        let dir = tempfile::tempdir().unwrap();
        let _w = open(dir.path(), opts(1 << 16, 5)).unwrap();
        assert!(matches!(
            truncate_to_synced(dir.path()),
            Err(WalError::Locked(_))
        ));
    }
}
