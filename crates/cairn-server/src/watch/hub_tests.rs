//! Unit tests of the hub, with a real store: matching, filters, the create/cancel/progress
//! answers, catch-up, and the synced → unsynced → synced handover under concurrent publishes.

use super::*;
use crate::watch::catchup::Round;
use cairn_api::etcdserverpb::{request_op, DeleteRangeRequest, PutRequest, RequestOp, TxnRequest};
use cairn_mvcc::{GrantedLeases, StoreOptions};

struct Fixture {
    _dir: tempfile::TempDir,
    store: Arc<Store>,
    hub: Arc<Hub>,
}

fn fixture(limits: HubLimits) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&dir.path().join("db"), StoreOptions::default()).unwrap());
    let hub = Arc::new(Hub::new(store.clone(), limits));
    Fixture {
        _dir: dir,
        store,
        hub,
    }
}

fn put_op(k: &str, v: &str) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestPut(PutRequest {
            key: k.into(),
            value: v.into(),
            ..Default::default()
        })),
    }
}

impl Fixture {
    /// Commits without publishing (the store ahead of the hub, as between commit and publish).
    fn commit_only(&self, f: impl FnOnce(&mut cairn_mvcc::WriteBatch<'_>)) -> Vec<RevisionEvents> {
        let mut wb = self.store.begin_write().unwrap();
        f(&mut wb);
        wb.commit(false).unwrap()
    }

    fn write(&self, f: impl FnOnce(&mut cairn_mvcc::WriteBatch<'_>)) -> i64 {
        let events = self.commit_only(f);
        self.hub.publish(&events);
        self.store.current_revision()
    }

    fn put(&self, k: &str, v: &str) -> i64 {
        self.write(|wb| {
            wb.put(
                &PutRequest {
                    key: k.into(),
                    value: v.into(),
                    ..Default::default()
                },
                &GrantedLeases,
            )
            .unwrap();
        })
    }

    fn del(&self, k: &str, end: &str) -> i64 {
        self.write(|wb| {
            wb.delete_range(&DeleteRangeRequest {
                key: k.into(),
                range_end: end.into(),
                ..Default::default()
            })
            .unwrap();
        })
    }

    /// One revision putting every pair.
    fn txn(&self, kvs: &[(&str, &str)]) -> i64 {
        self.write(|wb| {
            wb.txn(
                &TxnRequest {
                    success: kvs.iter().map(|(k, v)| put_op(k, v)).collect(),
                    ..Default::default()
                },
                &GrantedLeases,
            )
            .unwrap();
        })
    }

    fn compact(&self, rev: i64) {
        self.write(|wb| wb.compact(rev).unwrap());
        while !self.store.compact_step(1000).unwrap() {}
    }

    fn create(&self, stream: StreamId, spec: WatchSpec) {
        assert_eq!(self.hub.create(stream, &spec), CreateResult::Done);
    }

    fn drain(&self, stream: StreamId) -> Vec<Outgoing> {
        self.hub.pop(stream, usize::MAX).unwrap()
    }

    /// Runs catch-up rounds (draining the queue in between) until idle; returns what was sent.
    fn catch_up(&self, stream: StreamId) -> Vec<Outgoing> {
        let mut out = self.drain(stream);
        loop {
            let round = self.hub.catchup_round(stream).unwrap();
            out.extend(self.drain(stream));
            if round == Round::Idle && !self.hub.needs_catchup(stream) {
                return out;
            }
        }
    }
}

/// (watch id, type, key, mod revision) of every event, in order.
fn events(outs: &[Outgoing]) -> Vec<(i64, &'static str, String, i64)> {
    outs.iter()
        .flat_map(|o| {
            o.resp.events.iter().map(|e| {
                let kv = e.kv.as_ref().unwrap();
                (
                    o.resp.watch_id,
                    if e.r#type == EventType::Put as i32 {
                        "PUT"
                    } else {
                        "DELETE"
                    },
                    String::from_utf8_lossy(&kv.key).to_string(),
                    kv.mod_revision,
                )
            })
        })
        .collect()
}

fn spec(key: &str, end: &str, start: i64) -> WatchSpec {
    WatchSpec::new(key.as_bytes(), end.as_bytes(), start)
}

#[test]
fn key_ranges_as_etcd_reads_them() {
    let r = KeyRange::from_request(b"a", b"").unwrap();
    assert!(r.contains(b"a") && !r.contains(b"ab") && !r.contains(b""));
    let r = KeyRange::from_request(b"a", b"c").unwrap();
    assert!(r.contains(b"a") && r.contains(b"bzz") && !r.contains(b"c") && !r.contains(b"0"));
    // "\0" as the end: every key from `key` on.
    let r = KeyRange::from_request(b"b", b"\0").unwrap();
    assert_eq!(r.end, Some(vec![]));
    assert!(r.contains(b"b") && r.contains(b"\xff\xff") && !r.contains(b"a"));
    // An empty key is "\0": with "\0" as the end, every key.
    let r = KeyRange::from_request(b"", b"\0").unwrap();
    assert_eq!(r.key, vec![0]);
    assert!(r.contains(b"\0") && r.contains(b"a"));
    let r = KeyRange::from_request(b"", b"").unwrap();
    assert!(r.contains(b"\0") && !r.contains(b"a"));
    assert_eq!(
        KeyRange::from_request(b"b", b"a"),
        Err(CreateError::EmptyRange)
    );
    assert_eq!(
        KeyRange::from_request(b"b", b"b"),
        Err(CreateError::EmptyRange)
    );
}

#[test]
fn synced_index_matches_exactly_the_watchers_of_a_key() {
    let mut idx = SyncedIndex::default();
    let ranges = [
        ("a", ""),
        ("a", "c"),
        ("a", "\0"),
        ("b", ""),
        ("b", "bb"),
        ("ab", "b"),
        ("", "\0"),
        ("c", "d"),
    ];
    let ranges: Vec<KeyRange> = ranges
        .iter()
        .map(|(k, e)| KeyRange::from_request(k.as_bytes(), e.as_bytes()).unwrap())
        .collect();
    for (i, r) in ranges.iter().enumerate() {
        idx.insert(r, (1, i as i64));
        idx.insert(r, (2, i as i64));
    }
    let keys: [&[u8]; 10] = [
        b"", b"\0", b"a", b"aa", b"ab", b"b", b"ba", b"bb", b"c", b"zz",
    ];
    let check = |idx: &SyncedIndex, gone: &[usize]| {
        for key in keys {
            let mut got = Vec::new();
            idx.matching(key, |w| got.push(w));
            got.sort_unstable();
            let mut want = Vec::new();
            for s in [1, 2] {
                for (i, r) in ranges.iter().enumerate() {
                    if r.contains(key) && !(s == 1 && gone.contains(&i)) {
                        want.push((s, i as i64));
                    }
                }
            }
            want.sort_unstable();
            assert_eq!(got, want, "key {key:?}");
        }
    };
    check(&idx, &[]);
    for i in [0, 2, 5, 7] {
        idx.remove(&ranges[i], (1, i as i64));
    }
    check(&idx, &[0, 2, 5, 7]);
    for (i, r) in ranges.iter().enumerate() {
        idx.remove(r, (1, i as i64));
        idx.remove(r, (2, i as i64));
    }
    assert_eq!(idx.len(), 0);
    assert!(idx.keys.is_empty() && idx.ranges.is_empty());
}

#[test]
fn create_answers_as_etcd() {
    let f = fixture(HubLimits::default());
    f.put("a", "1");
    let (s, _) = f.hub.open_stream();
    f.create(s, spec("a", "", 0));
    f.create(s, spec("a", "", 0));
    let mut dup = spec("a", "", 0);
    dup.watch_id = 7;
    f.create(s, dup.clone());
    f.create(s, dup);
    f.create(s, spec("b", "a", 0));
    f.create(s, spec("a", "", -1));
    // Auto ids skip ids the client took.
    let mut taken = spec("a", "", 0);
    taken.watch_id = 2;
    f.create(s, taken);
    f.create(s, spec("a", "", 0));
    let out = f.drain(s);
    let summary: Vec<_> = out
        .iter()
        .map(|o| {
            (
                o.resp.watch_id,
                o.resp.created,
                o.resp.canceled,
                o.resp.cancel_reason.as_str(),
                o.header_revision,
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (0, true, false, "", 2),
            (1, true, false, "", 2),
            (7, true, false, "", 2),
            (-1, true, true, ERR_DUPLICATE_ID, 2),
            (-1, true, true, ERR_EMPTY_RANGE, 2),
            (
                -1,
                true,
                true,
                "etcdserver: mvcc: required revision has been compacted",
                2
            ),
            (2, true, false, "", 2),
            (3, true, false, "", 2),
        ]
    );
    assert_eq!(f.hub.counts(), (1, 5));
}

#[test]
fn filters_prev_kv_and_ranges() {
    let f = fixture(HubLimits::default());
    f.put("a", "0");
    let (s, _) = f.hub.open_stream();
    let mut prefix = spec("a", "b", 0); // id 0
    prefix.prev_kv = true;
    f.create(s, prefix);
    let mut no_put = spec("a", "", 0); // id 1
    no_put.no_put = true;
    f.create(s, no_put);
    let mut no_del = spec("a", "\0", 0); // id 2
    no_del.no_delete = true;
    f.create(s, no_del);
    let mut both = spec("a", "", 0); // id 3: gets nothing at all
    both.no_put = true;
    both.no_delete = true;
    f.create(s, both);
    f.drain(s);
    f.put("a", "1"); // rev 3
    f.put("ab", "1"); // rev 4
    f.put("b", "1"); // rev 5
    f.del("a", ""); // rev 6
    f.txn(&[("a", "2"), ("az", "2"), ("c", "2")]); // rev 7
    let out = f.drain(s);
    assert!(out.iter().all(|o| o.resp.watch_id != 3));
    let mut got = events(&out);
    got.sort_by_key(|e| (e.0, e.3));
    let e = |id, t, k: &str, r| (id, t, k.to_string(), r);
    assert_eq!(
        got,
        vec![
            e(0, "PUT", "a", 3),
            e(0, "PUT", "ab", 4),
            e(0, "DELETE", "a", 6),
            e(0, "PUT", "a", 7),
            e(0, "PUT", "az", 7),
            e(1, "DELETE", "a", 6),
            e(2, "PUT", "a", 3),
            e(2, "PUT", "ab", 4),
            e(2, "PUT", "b", 5),
            e(2, "PUT", "a", 7),
            e(2, "PUT", "az", 7),
            e(2, "PUT", "c", 7),
        ]
    );
    // One response per watcher and revision, headed with that revision.
    for o in &out {
        let revs: Vec<i64> = o
            .resp
            .events
            .iter()
            .map(|e| e.kv.as_ref().unwrap().mod_revision)
            .collect();
        assert!(revs.iter().all(|r| *r == o.header_revision), "{o:?}");
    }
    // prev_kv only for the watcher that asked, and never for a creation.
    let prevs: Vec<(i64, String, Option<i64>)> = out
        .iter()
        .flat_map(|o| {
            o.resp.events.iter().map(|e| {
                let kv = e.kv.as_ref().unwrap();
                (
                    o.resp.watch_id * 100 + kv.mod_revision,
                    String::from_utf8_lossy(&kv.key).to_string(),
                    e.prev_kv.as_ref().map(|p| p.mod_revision),
                )
            })
        })
        .filter(|(_, _, p)| p.is_some())
        .collect();
    let mut prevs = prevs;
    prevs.sort();
    assert_eq!(
        prevs,
        vec![(3, "a".into(), Some(2)), (6, "a".into(), Some(3))]
    );
}

/// Regression (found by the robustness harness): on a fresh store (revision 1, which has no
/// events) a watch from revision 1 read an empty history, never reached the published
/// revision and stayed unsynced, so it missed every later event.
#[test]
fn a_watch_from_revision_one_on_a_fresh_store_syncs_and_sees_later_writes() {
    let f = fixture(HubLimits::default());
    let (s, _) = f.hub.open_stream();
    f.create(s, spec("", "\0", 1));
    // A few rounds, not `catch_up`: with the bug, catch-up never ends.
    for _ in 0..3 {
        f.hub.catchup_round(s).unwrap();
        f.drain(s);
    }
    assert!(!f.hub.needs_catchup(s), "the watcher is synced");
    f.put("a", "1");
    f.txn(&[("b", "2"), ("c", "3")]);
    assert_eq!(
        events(&f.drain(s)),
        vec![
            (0, "PUT", "a".into(), 2),
            (0, "PUT", "b".into(), 3),
            (0, "PUT", "c".into(), 3),
        ]
    );
}

#[test]
fn start_revisions_past_future_and_compacted() {
    let f = fixture(HubLimits::default());
    for i in 0..5 {
        f.put("k", &i.to_string()); // revs 2..=6
    }
    let (s, _) = f.hub.open_stream();
    f.create(s, spec("k", "", 3)); // 0: past
    f.create(s, spec("k", "", 9)); // 1: future
    f.create(s, spec("k", "", 0)); // 2: now
    let out = f.catch_up(s);
    assert_eq!(
        events(&out),
        vec![
            (0, "PUT", "k".into(), 3),
            (0, "PUT", "k".into(), 4),
            (0, "PUT", "k".into(), 5),
            (0, "PUT", "k".into(), 6),
        ]
    );
    // The replay is one response (whole revisions), headed with the last revision it covers.
    let replay: Vec<_> = out.iter().filter(|o| !o.resp.events.is_empty()).collect();
    assert_eq!((replay.len(), replay[0].header_revision), (1, 6));
    for _ in 0..4 {
        f.put("k", "x"); // 7..=10
    }
    let out = f.drain(s);
    let mut got = events(&out);
    got.sort();
    assert_eq!(
        got.iter().map(|e| (e.0, e.3)).collect::<Vec<_>>(),
        vec![
            (0, 7),
            (0, 8),
            (0, 9),
            (0, 10),
            (1, 9),
            (1, 10),
            (2, 7),
            (2, 8),
            (2, 9),
            (2, 10)
        ]
    );
    // Compacted starts: below the compact revision, etcd's answer carrying it; at it, the
    // kept put of the compact revision is replayed, as in etcd.
    f.compact(6);
    f.create(s, spec("k", "", 4)); // 3
    f.create(s, spec("k", "", 6)); // 4: fine
    f.create(s, spec("k", "", 7)); // 5: fine
    let out = f.catch_up(s);
    let answers: Vec<_> = out
        .iter()
        .filter(|o| o.resp.events.is_empty())
        .map(|o| {
            (
                o.resp.watch_id,
                o.resp.created,
                o.resp.canceled,
                o.resp.compact_revision,
            )
        })
        .collect();
    assert_eq!(
        answers,
        vec![
            (3, true, false, 0),
            (3, false, true, 6),
            (4, true, false, 0),
            (5, true, false, 0),
        ]
    );
    let mut got: Vec<_> = events(&out).iter().map(|e| (e.0, e.3)).collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            (4, 6),
            (4, 7),
            (4, 8),
            (4, 9),
            (4, 10),
            (5, 7),
            (5, 8),
            (5, 9),
            (5, 10)
        ]
    );
    // A compacted watcher keeps its id until canceled, as in etcd.
    let mut again = spec("k", "", 0);
    again.watch_id = 3;
    f.create(s, again.clone());
    assert_eq!(f.drain(s)[0].resp.cancel_reason, ERR_DUPLICATE_ID);
    f.hub.cancel(s, 3);
    f.create(s, again);
    let out = f.drain(s);
    assert_eq!(
        out.iter()
            .map(|o| (o.resp.watch_id, o.resp.created, o.resp.canceled))
            .collect::<Vec<_>>(),
        vec![(3, false, true), (3, true, false)]
    );
}

#[test]
fn an_unsynced_watcher_caught_by_compaction_is_canceled() {
    let f = fixture(HubLimits::default());
    for _ in 0..5 {
        f.put("k", "v"); // 2..=6
    }
    let (s, _) = f.hub.open_stream();
    f.create(s, spec("k", "", 2));
    f.create(s, spec("k", "", 0));
    f.drain(s);
    f.compact(4);
    let out = f.catch_up(s);
    assert_eq!(out.len(), 1);
    assert_eq!(
        (
            out[0].resp.watch_id,
            out[0].resp.canceled,
            out[0].resp.compact_revision
        ),
        (0, true, 4)
    );
    // The other watcher goes on.
    f.put("k", "v");
    assert_eq!(events(&f.drain(s)), vec![(1, "PUT", "k".into(), 7)]);
}

#[test]
fn store_ahead_of_the_hub_is_neither_lost_nor_repeated() {
    let f = fixture(HubLimits::default());
    f.put("k", "1"); // 2
    let (s, _) = f.hub.open_stream();
    f.create(s, spec("k", "", 2)); // 0: unsynced from 2
                                   // Revision 3 is committed but not yet published (the apply thread is between the two).
    let pending = f.commit_only(|wb| {
        wb.put(
            &PutRequest {
                key: "k".into(),
                value: "2".into(),
                ..Default::default()
            },
            &GrantedLeases,
        )
        .unwrap();
    });
    // A watch from "now" starts after what the store holds: revision 3 is not its to see.
    f.create(s, spec("k", "", 0)); // 1
    let out = f.catch_up(s);
    assert_eq!(out[1].header_revision, 3, "created at the store's revision");
    // Catch-up read revision 3 from the store and synced watcher 0 past it.
    assert_eq!(
        events(&out),
        vec![(0, "PUT", "k".into(), 2), (0, "PUT", "k".into(), 3)]
    );
    f.hub.publish(&pending);
    f.put("k", "3"); // 4
    assert_eq!(
        events(&f.drain(s)),
        vec![(0, "PUT", "k".into(), 4), (1, "PUT", "k".into(), 4)]
    );
}

#[test]
fn cancel_close_and_no_leaks() {
    let f = fixture(HubLimits::default());
    let (s1, _) = f.hub.open_stream();
    let (s2, _) = f.hub.open_stream();
    for s in [s1, s2] {
        f.create(s, spec("a", "", 0));
        f.create(s, spec("a", "b", 0));
        f.create(s, spec("a", "", 1)); // unsynced
    }
    f.drain(s1);
    f.hub.cancel(s1, 0);
    f.hub.cancel(s1, 2);
    f.hub.cancel(s1, 42); // unknown: no answer
    let out = f.drain(s1);
    assert_eq!(
        out.iter()
            .map(|o| (o.resp.watch_id, o.resp.canceled))
            .collect::<Vec<_>>(),
        vec![(0, true), (2, true)]
    );
    f.put("a", "1");
    assert_eq!(events(&f.drain(s1)), vec![(1, "PUT", "a".into(), 2)]);
    assert_eq!(f.hub.counts(), (2, 4));
    f.hub.close_stream(s1);
    f.hub.close_stream(s2);
    assert_eq!(f.hub.counts(), (0, 0));
    assert_eq!(f.hub.lock().synced.len(), 0);
    assert!(f.hub.pop(s1, 10).is_none());
    assert_eq!(f.hub.create(s1, &spec("a", "", 0)), CreateResult::Closed);
    f.put("a", "2"); // publishing to nobody
}

#[test]
fn progress_requests_and_ticks() {
    let f = fixture(HubLimits::default());
    f.put("a", "1");
    let (s, _) = f.hub.open_stream();
    // No watchers: no answer (etcd 3.5).
    f.hub.request_progress(s);
    assert!(f.drain(s).is_empty());
    f.create(s, spec("a", "", 2)); // 0: unsynced
    let mut notify = spec("b", "", 0); // 1: progress_notify
    notify.progress_notify = true;
    f.create(s, notify);
    f.drain(s);
    // Not all synced: no answer.
    f.hub.request_progress(s);
    assert!(f.drain(s).is_empty());
    f.catch_up(s);
    f.put("a", "2"); // 3
    f.hub.request_progress(s);
    let out = f.drain(s);
    let last = out.last().unwrap();
    assert_eq!(
        (
            last.resp.watch_id,
            last.header_revision,
            last.resp.events.len()
        ),
        (-1, 3, 0)
    );
    // Ticks: the watcher with progress_notify gets one per idle interval.
    f.hub.progress_tick(s);
    let out = f.drain(s);
    assert_eq!(
        out.iter()
            .map(|o| (o.resp.watch_id, o.header_revision))
            .collect::<Vec<_>>(),
        vec![(1, 3)]
    );
    // An event response sent since the last tick elides the next one.
    f.put("b", "1"); // 4
    f.drain(s);
    f.hub.progress_tick(s);
    assert!(f.drain(s).is_empty());
    f.hub.progress_tick(s);
    assert_eq!(f.drain(s).len(), 1);
}

#[test]
fn a_full_queue_makes_watchers_unsynced_and_catch_up_resyncs_them() {
    let f = fixture(HubLimits {
        queue_messages: 4,
        queue_bytes: 1 << 20,
        catchup_revisions: 3,
        catchup_response_bytes: 200,
    });
    let (s, _) = f.hub.open_stream();
    let (fast, _) = f.hub.open_stream();
    f.create(s, spec("k", "l", 0)); // slow stream's watcher 0
    f.create(s, spec("k1", "", 0)); // 1
    f.create(fast, spec("k", "l", 0));
    f.drain(s);
    f.drain(fast);
    let mut expected = Vec::new();
    for i in 0..30 {
        let key = format!("k{}", i % 3);
        let rev = f.put(&key, &"v".repeat(i * 5));
        expected.push((key, rev));
        // The fast stream reads everything as it comes.
        assert_eq!(events(&f.drain(fast)).len(), 1);
    }
    // The slow stream's queue filled up: its watchers fell behind.
    assert_eq!(f.hub.fell_behind(), 2);
    let out = f.catch_up(s);
    let got = events(&out);
    let want0: Vec<_> = expected
        .iter()
        .map(|(k, r)| (0, "PUT", k.clone(), *r))
        .collect();
    let want1: Vec<_> = expected
        .iter()
        .filter(|(k, _)| k == "k1")
        .map(|(k, r)| (1, "PUT", k.clone(), *r))
        .collect();
    assert_eq!(
        got.iter().filter(|e| e.0 == 0).cloned().collect::<Vec<_>>(),
        want0
    );
    assert_eq!(
        got.iter().filter(|e| e.0 == 1).cloned().collect::<Vec<_>>(),
        want1
    );
    // Catch-up responses end at revision boundaries and are headed with a revision the
    // watcher has fully seen.
    for o in &out {
        if let Some(last) = o.resp.events.last() {
            assert!(o.header_revision >= last.kv.as_ref().unwrap().mod_revision);
        }
    }
    // Both are synced again and get live events.
    assert!(!f.hub.needs_catchup(s));
    let rev = f.put("k1", "live");
    assert_eq!(
        events(&f.drain(s)),
        vec![(0, "PUT", "k1".into(), rev), (1, "PUT", "k1".into(), rev)]
    );
}

/// The handover under concurrent publishes: a writer thread keeps committing and publishing
/// (single-key puts and multi-key txns) while a reader drains the stream's tiny queue and runs
/// catch-up rounds. Every watcher must receive exactly its keys' events, in revision order, no
/// duplicate, no gap, each revision's events in one response.
#[test]
fn handover_under_concurrent_publishes_has_no_gap_and_no_duplicate() {
    let f = fixture(HubLimits {
        queue_messages: 3,
        queue_bytes: 1 << 20,
        catchup_revisions: 7,
        catchup_response_bytes: 300,
    });
    let (s, _) = f.hub.open_stream();
    let ranges = [("k", "l"), ("k1", ""), ("k2", "k4"), ("", "\0")];
    for (k, e) in ranges {
        f.create(s, spec(k, e, 0));
        f.drain(s);
    }
    let mut with_prev = spec("k3", "", 0);
    with_prev.prev_kv = true;
    with_prev.no_delete = true;
    f.create(s, with_prev);
    f.drain(s);
    let start = f.store.current_revision();
    const WRITES: usize = 600;
    let done = std::sync::atomic::AtomicBool::new(false);
    let received = std::thread::scope(|scope| {
        scope.spawn(|| {
            for i in 0..WRITES {
                match i % 5 {
                    0 => {
                        f.txn(&[("k1", "t"), ("k3", "t"), ("x", "t")]);
                    }
                    1 => {
                        f.del(&format!("k{}", i % 4), "");
                    }
                    _ => {
                        f.put(&format!("k{}", i % 4), &i.to_string());
                    }
                }
                if i % 50 == 0 {
                    std::thread::yield_now();
                }
            }
            done.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        let mut received = Vec::new();
        for _ in 0..10_000_000 {
            let finished = done.load(std::sync::atomic::Ordering::SeqCst);
            received.extend(f.drain(s));
            f.hub.catchup_round(s).unwrap();
            received.extend(f.drain(s));
            if finished
                && !f.hub.needs_catchup(s)
                && f.hub.lock().streams[&s].queue.items.is_empty()
            {
                return received;
            }
        }
        panic!("the watchers never caught up");
    });
    assert!(f.hub.fell_behind() > 0, "the queue never overflowed");
    // The expected sequence per watcher, from the store's own history.
    let history = f.store.history(start + 1, usize::MAX).unwrap();
    assert!(history.len() > WRITES / 2);
    for (id, (k, e)) in ranges.iter().enumerate() {
        let range = KeyRange::from_request(k.as_bytes(), e.as_bytes()).unwrap();
        let want: Vec<(i64, String)> = history
            .iter()
            .flat_map(|re| re.events.iter())
            .filter(|ev| range.contains(&ev.kv.as_ref().unwrap().key))
            .map(|ev| {
                let kv = ev.kv.as_ref().unwrap();
                (
                    kv.mod_revision,
                    String::from_utf8_lossy(&kv.key).to_string(),
                )
            })
            .collect();
        let got: Vec<(i64, String)> = events(&received)
            .into_iter()
            .filter(|ev| ev.0 == id as i64)
            .map(|ev| (ev.3, ev.2))
            .collect();
        assert_eq!(got.len(), want.len(), "watcher {id} ({k:?}, {e:?})");
        assert_eq!(got, want, "watcher {id}");
    }
    // The filtered prev_kv watcher: puts of k3 only, each with its previous version.
    let got: Vec<&cairn_api::mvccpb::Event> = received
        .iter()
        .filter(|o| o.resp.watch_id == 4)
        .flat_map(|o| o.resp.events.iter())
        .collect();
    let want: Vec<&cairn_api::mvccpb::Event> = history
        .iter()
        .flat_map(|re| re.events.iter())
        .filter(|ev| ev.kv.as_ref().unwrap().key == b"k3" && ev.r#type == EventType::Put as i32)
        .collect();
    assert_eq!(got, want);
    // Atomic: a revision never spans two responses of one watcher.
    let mut seen: HashMap<(i64, i64), usize> = HashMap::new();
    for (n, o) in received.iter().enumerate() {
        for ev in &o.resp.events {
            let key = (o.resp.watch_id, ev.kv.as_ref().unwrap().mod_revision);
            let first = *seen.entry(key).or_insert(n);
            assert_eq!(first, n, "revision {} split for watcher {}", key.1, key.0);
        }
    }
}

#[test]
fn catch_up_in_bounded_rounds_ends_exactly_at_the_published_revision() {
    // Rounds of 3 revisions: 2..=4, then 5..=7 — the last published revision is the first of
    // a round, and a watcher is synced only once it has been sent.
    for last in 5..=9 {
        let f = fixture(HubLimits {
            catchup_revisions: 3,
            ..HubLimits::default()
        });
        for i in 2..=last {
            f.put("k", &i.to_string());
        }
        let (s, _) = f.hub.open_stream();
        f.create(s, spec("k", "", 2));
        let got: Vec<i64> = events(&f.catch_up(s)).iter().map(|e| e.3).collect();
        assert_eq!(got, (2..=last).collect::<Vec<_>>(), "up to {last}");
        let rev = f.put("k", "live");
        assert_eq!(events(&f.drain(s)), vec![(0, "PUT", "k".into(), rev)]);
    }
}

#[test]
fn shutting_down_ends_every_stream() {
    let f = fixture(HubLimits::default());
    let (s, signals) = f.hub.open_stream();
    f.create(s, spec("a", "", 0));
    let woken = signals.wake.notified();
    f.hub.shut_down();
    // The driver is woken, finds the stream gone, and no watcher can be added.
    futures::executor::block_on(woken);
    assert!(f.hub.pop(s, 10).is_none());
    assert!(f.hub.is_shut_down());
    assert_eq!(f.hub.create(s, &spec("b", "", 0)), CreateResult::Closed);
    f.put("a", "1");
    f.hub.close_stream(s);
    assert_eq!(f.hub.counts(), (0, 0));
}

/// The planted watch bugs (feature `planted-bugs`) really break what the tests above check.
#[cfg(feature = "planted-bugs")]
mod planted_bugs {
    use super::*;
    use crate::faults::Bug;

    fn planted_fixture(bug: Bug) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&dir.path().join("db"), StoreOptions::default()).unwrap());
        let hub = Arc::new(Hub::new(store.clone(), HubLimits::default()).with_planted_bug(bug));
        Fixture {
            _dir: dir,
            store,
            hub,
        }
    }

    #[test]
    fn drop_watch_event_on_compaction_drops_one_event_per_compaction() {
        let f = planted_fixture(Bug::DropWatchEventOnCompaction);
        let (s, _) = f.hub.open_stream();
        f.create(s, spec("a", "z", 0));
        f.drain(s);
        let r1 = f.put("a", "1");
        assert_eq!(events(&f.drain(s)), vec![(0, "PUT", "a".into(), r1)]);
        f.compact(r1);
        f.hub.compaction_applied();
        let r2 = f.put("b", "2");
        let r3 = f.put("c", "3");
        // r2's event is gone, silently; r3 arrives.
        assert_eq!(events(&f.drain(s)), vec![(0, "PUT", "c".into(), r3)]);
        assert!(r2 < r3);
        // Once per compaction: the next events all arrive.
        let r4 = f.put("d", "4");
        assert_eq!(events(&f.drain(s)), vec![(0, "PUT", "d".into(), r4)]);
    }

    #[test]
    fn drop_watch_event_on_compaction_needs_a_compaction() {
        let f = planted_fixture(Bug::DropWatchEventOnCompaction);
        let (s, _) = f.hub.open_stream();
        f.create(s, spec("a", "z", 0));
        f.drain(s);
        let r1 = f.put("a", "1");
        let r2 = f.put("b", "2");
        assert_eq!(
            events(&f.drain(s)),
            vec![(0, "PUT", "a".into(), r1), (0, "PUT", "b".into(), r2)]
        );
    }

    #[test]
    fn split_txn_events_splits_a_revision_across_responses() {
        let f = planted_fixture(Bug::SplitTxnEvents);
        let (s, _) = f.hub.open_stream();
        f.create(s, spec("a", "z", 0));
        f.drain(s);
        let r = f.txn(&[("a", "1"), ("b", "2"), ("c", "3")]);
        let outs = f.drain(s);
        assert_eq!(outs.len(), 2, "{outs:?}");
        assert_eq!(events(&outs[..1]), vec![(0, "PUT", "a".into(), r)]);
        assert_eq!(
            events(&outs[1..]),
            vec![(0, "PUT", "b".into(), r), (0, "PUT", "c".into(), r)]
        );
        // A single event per revision is left alone.
        let r2 = f.put("d", "4");
        let outs = f.drain(s);
        assert_eq!(outs.len(), 1);
        assert_eq!(events(&outs), vec![(0, "PUT", "d".into(), r2)]);
        // Catch-up responses too.
        let (s2, _) = f.hub.open_stream();
        f.create(s2, spec("a", "z", r));
        let outs: Vec<Outgoing> = f
            .catch_up(s2)
            .into_iter()
            .filter(|o| !o.resp.events.is_empty())
            .collect();
        assert!(outs.len() >= 2, "{outs:?}");
        assert_eq!(events(&outs[..1]), vec![(0, "PUT", "a".into(), r)]);
    }
}
