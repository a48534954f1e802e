//! The checks cannot pass silently: histories with a violation injected must be reported.
//!
//! First on small hand-made records (a stale read, a skipped watch event, a lost acknowledged
//! write), then on a real run whose records are tampered with after the fact (each tampering
//! alone must turn the passing run into a failing one).

use cairn_robust::checks::check_run;
use cairn_robust::faults::FaultKind;
use cairn_robust::record::{
    Event, EventType, Kv, OpRecord, Outcome, Request, Response, WatchResp, WatchSpec,
    WatchStreamRecord,
};
use cairn_robust::run::{fresh_seed, run_recorded, seed_from_env, RunSpec};
use cairn_robust::traffic::TrafficKind;
use std::time::Duration;

const LIN: Duration = Duration::from_secs(30);

fn kv(key: &str, value: &str, rev: i64, create: i64, version: i64) -> Kv {
    Kv {
        key: key.into(),
        value: value.into(),
        mod_revision: rev,
        create_revision: create,
        version,
        lease: 0,
    }
}

fn put(client: u64, call: u64, ret: u64, key: &str, value: &str, rev: i64) -> OpRecord {
    OpRecord {
        client,
        member: 0,
        call,
        ret,
        request: Request::Put {
            key: key.into(),
            value: value.into(),
            lease: 0,
        },
        outcome: Outcome::Ok(Response::Put { revision: rev }),
    }
}

fn get(client: u64, call: u64, ret: u64, key: &str, got: Option<Kv>, rev: i64) -> OpRecord {
    OpRecord {
        client,
        member: 0,
        call,
        ret,
        request: Request::Get {
            key: key.into(),
            serializable: false,
            revision: 0,
        },
        outcome: Outcome::Ok(Response::Get {
            kv: got,
            revision: rev,
        }),
    }
}

fn whole(watcher: u64, member: usize, events: Vec<Kv>) -> WatchStreamRecord {
    WatchStreamRecord {
        watcher,
        member,
        spec: WatchSpec {
            key: String::new(),
            end: "\0".into(),
            start_revision: 1,
            prev_kv: false,
            no_put: false,
            no_delete: false,
        },
        created_at_revision: Some(1),
        responses: events
            .into_iter()
            .map(|kv| WatchResp {
                at: 0,
                header_revision: kv.mod_revision,
                compact_revision: 0,
                canceled: false,
                cancel_reason: String::new(),
                events: vec![Event {
                    kind: EventType::Put,
                    kv,
                    prev_kv: None,
                }],
            })
            .collect(),
        ended_by: Some("end of run".into()),
    }
}

#[test]
fn a_correct_history_passes() {
    let a1 = kv("a", "v1", 2, 2, 1);
    let a2 = kv("a", "v2", 3, 2, 2);
    let ops = vec![
        put(0, 0, 10, "a", "v1", 2),
        get(1, 20, 30, "a", Some(a1.clone()), 2),
        put(0, 40, 50, "a", "v2", 3),
        get(1, 60, 70, "a", Some(a2.clone()), 3),
    ];
    let watches = vec![
        whole(0, 0, vec![a1.clone(), a2.clone()]),
        whole(1, 1, vec![a1, a2.clone()]),
    ];
    let s = check_run(&ops, &watches, &[], Some(&(3, vec![a2])), LIN);
    assert!(s.violations.is_empty(), "{}", s.shown());
    assert_eq!(s.linearizability, "Linearizable");
}

#[test]
fn a_stale_read_is_not_linearizable() {
    let a1 = kv("a", "v1", 2, 2, 1);
    let a2 = kv("a", "v2", 3, 2, 2);
    let ops = vec![
        put(0, 0, 10, "a", "v1", 2),
        put(0, 40, 50, "a", "v2", 3),
        // Starts after v2 was acknowledged, returns v1.
        get(1, 60, 70, "a", Some(a1.clone()), 2),
    ];
    let watches = vec![whole(0, 0, vec![a1, a2.clone()])];
    let s = check_run(&ops, &watches, &[], Some(&(3, vec![a2])), LIN);
    assert_eq!(s.linearizability, "NotLinearizable", "{}", s.shown());
    assert!(s.by_kind.contains_key("linearizability"));
}

#[test]
fn a_skipped_watch_event_is_reported() {
    let a1 = kv("a", "v1", 2, 2, 1);
    let b1 = kv("b", "w1", 3, 3, 1);
    let a2 = kv("a", "v2", 4, 2, 2);
    let ops = vec![
        put(0, 0, 10, "a", "v1", 2),
        put(0, 20, 30, "b", "w1", 3),
        put(0, 40, 50, "a", "v2", 4),
    ];
    let watches = vec![
        whole(0, 0, vec![a1.clone(), b1.clone(), a2.clone()]),
        whole(1, 1, vec![a1.clone(), b1.clone(), a2.clone()]),
        // Skips revision 3.
        whole(2, 2, vec![a1, a2.clone()]),
    ];
    let s = check_run(&ops, &watches, &[], Some(&(4, vec![a2, b1])), LIN);
    assert!(!s.violations.is_empty(), "a skipped event passed");
    assert!(
        s.violations.iter().any(|v| v.contains("watcher 2")),
        "{}",
        s.shown()
    );
}

#[test]
fn a_lost_acknowledged_write_is_reported() {
    let a1 = kv("a", "v1", 2, 2, 1);
    let ops = vec![
        put(0, 0, 10, "a", "v1", 2),
        // Acknowledged at revision 3, then lost: no watcher saw it, the end does not have it.
        put(0, 20, 30, "a", "v2", 3),
    ];
    let watches = vec![whole(0, 0, vec![a1.clone()])];
    let s = check_run(&ops, &watches, &[], Some(&(2, vec![a1])), LIN);
    assert!(!s.violations.is_empty(), "a lost write passed");
}

/// A real run passes; the same records, tampered with, fail.
#[test]
fn tampered_records_of_a_real_run_fail() {
    let mut spec = RunSpec::new(3, TrafficKind::Etcd, FaultKind::None);
    spec.name = "self-test".into();
    spec.duration = Duration::from_secs(3);
    let seed = seed_from_env().unwrap_or_else(fresh_seed);
    let (outcome, rec) = run_recorded(&spec, seed);
    assert!(outcome.passed(), "{}", outcome.failure_message());
    let check = |ops: &[OpRecord], watches: &[WatchStreamRecord]| {
        check_run(ops, watches, &rec.compactions, rec.final_read.as_ref(), LIN)
    };
    assert!(check(&rec.ops, &rec.watches).violations.is_empty());

    // 1. A linearizable get that found its key now says it was missing.
    let mut ops = rec.ops.clone();
    let i = ops
        .iter()
        .rposition(|o| {
            o.request.is_linearizable_read()
                && matches!(o.outcome, Outcome::Ok(Response::Get { kv: Some(_), .. }))
        })
        .expect("a linearizable get that found its key");
    if let Outcome::Ok(Response::Get { kv, .. }) = &mut ops[i].outcome {
        *kv = None;
    }
    let s = check(&ops, &rec.watches);
    assert_eq!(s.linearizability, "NotLinearizable", "{}", s.shown());

    // 2. One whole-keyspace watcher loses one event.
    let mut watches = rec.watches.clone();
    let w = watches
        .iter_mut()
        .find(|w| w.spec.sees_everything() && w.responses.len() > 3)
        .expect("a whole-keyspace watch stream with events");
    let mid = w.responses.len() / 2;
    w.responses.remove(mid);
    let s = check(&rec.ops, &watches);
    assert!(!s.violations.is_empty(), "a dropped watch event passed");

    // 3. An acknowledged put claims a revision other than the one it made.
    let mut ops = rec.ops.clone();
    let i = ops
        .iter()
        .position(|o| {
            matches!(o.request, Request::Put { .. })
                && matches!(o.outcome, Outcome::Ok(Response::Put { .. }))
        })
        .expect("an acknowledged put");
    if let Outcome::Ok(Response::Put { revision }) = &mut ops[i].outcome {
        *revision += 1;
    }
    let s = check(&ops, &rec.watches);
    assert!(
        !s.violations.is_empty(),
        "a put at the wrong revision passed"
    );
}
