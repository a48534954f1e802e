//! A rough timing run, not a benchmark and not part of CI:
//! `cargo test -p cairn-mvcc --release --test perf -- --ignored --nocapture`.

use std::time::Instant;

use cairn_api::etcdserverpb::{PutRequest, RangeRequest};
use cairn_mvcc::{Store, StoreOptions};

fn no_leases(_: i64) -> bool {
    false
}

#[test]
#[ignore]
fn rough_timings() {
    let n: usize = std::env::var("PERF_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("db"), StoreOptions::default()).unwrap();
    let value = vec![b'v'; 256];

    let t = Instant::now();
    for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
        let mut b = store.begin_write().unwrap();
        for i in chunk {
            let req = PutRequest {
                key: format!("/registry/pods/ns{}/pod{i:08}", i % 10).into_bytes(),
                value: value.clone(),
                ..PutRequest::default()
            };
            b.put(&req, &no_leases).unwrap();
        }
        b.commit(false).unwrap();
    }
    store.sync().unwrap();
    let dt = t.elapsed();
    println!(
        "{n} puts in batches of 500: {dt:?} ({:.0}/s)",
        n as f64 / dt.as_secs_f64()
    );

    // Overwrite a tenth, so scans meet older versions.
    let mut b = store.begin_write().unwrap();
    for i in (0..n).step_by(10) {
        let req = PutRequest {
            key: format!("/registry/pods/ns{}/pod{i:08}", i % 10).into_bytes(),
            value: value.clone(),
            ..PutRequest::default()
        };
        b.put(&req, &no_leases).unwrap();
    }
    b.commit(false).unwrap();

    let t = Instant::now();
    let gets = 50_000;
    for i in 0..gets {
        let i = (i * 7919) % n;
        let req = RangeRequest {
            key: format!("/registry/pods/ns{}/pod{i:08}", i % 10).into_bytes(),
            ..RangeRequest::default()
        };
        assert_eq!(store.range(&req).unwrap().kvs.len(), 1);
    }
    let dt = t.elapsed();
    println!(
        "{gets} gets: {dt:?} ({:.0}/s)",
        gets as f64 / dt.as_secs_f64()
    );

    let page = |limit: i64, end: &[u8]| {
        let req = RangeRequest {
            key: b"/registry/pods/".to_vec(),
            range_end: end.to_vec(),
            limit,
            ..RangeRequest::default()
        };
        let t = Instant::now();
        let r = store.range(&req).unwrap();
        (t.elapsed(), r.count, r.kvs.len())
    };
    println!(
        "page of 500, count from the counts table: {:?}",
        page(500, b"/registry/pods0")
    );
    println!(
        "page of 500, count by scanning (range end not a prefix end): {:?}",
        page(500, b"/registry/pods1")
    );
    println!("whole range of {n}: {:?}", page(0, b"/registry/pods0"));

    let mut b = store.begin_write().unwrap();
    b.compact(store.current_revision()).unwrap();
    b.commit(false).unwrap();
    let t = Instant::now();
    let mut steps = 0;
    while !store.compact_step(1000).unwrap() {
        steps += 1;
    }
    println!(
        "compaction of {} history entries: {:?} in {steps} steps",
        n + n / 10,
        t.elapsed()
    );
    println!(
        "db size {} bytes, in use {} bytes",
        store.db_size(),
        store.db_size_in_use()
    );
}
