//! The event log and the watch guarantees on small hand-made runs: each check passes on what
//! etcd would deliver and catches one kind of breakage.

mod support;

use cairn_check::models::KeyValue;
use cairn_check::watch::{check_watches, EventLog, Knowledge, WatchRecord, WatchRequest};
use cairn_check::{Violation, ViolationKind};
use support::{del, everything, prefix, put, tdel, tput, txn, Run};

/// Revisions: 2 a=1, 3 b=2, 4 {a=3, c=4}, 5 -b, 6 ax=5, 7 {b=6, -c}, 8 a=7.
fn run() -> Run {
    Run::new([
        put("a", "1"),
        put("b", "2"),
        txn(vec![tput("a", "3"), tput("c", "4")]),
        del("b"),
        put("ax", "5"),
        txn(vec![tput("b", "6"), tdel("c")]),
        put("a", "7"),
    ])
}

/// Two whole-keyspace watchers, a prefix watcher with prev_kv, a no_put one, a single-key
/// no_delete one.
fn records(run: &Run) -> Vec<WatchRecord> {
    let last = run.last_revision();
    vec![
        run.full_watcher(1, 0),
        run.full_watcher(2, 1),
        run.record(
            3,
            2,
            WatchRequest {
                prev_kv: true,
                ..prefix("a")
            },
            2,
            last,
            1,
        ),
        run.record(
            4,
            0,
            WatchRequest {
                no_put: true,
                ..everything()
            },
            2,
            last,
            2,
        ),
        run.record(
            5,
            1,
            WatchRequest {
                key: "b".into(),
                no_delete: true,
                ..WatchRequest::default()
            },
            2,
            last,
            1,
        ),
    ]
}

fn violations(records: &[WatchRecord]) -> Vec<Violation> {
    let (log, mut found) = EventLog::from_records(records);
    found.extend(check_watches(records, &log));
    for v in &found {
        println!("{v}");
    }
    found
}

fn kinds(found: &[Violation]) -> Vec<ViolationKind> {
    let mut kinds: Vec<ViolationKind> = found.iter().map(|v| v.kind).collect();
    kinds.dedup();
    kinds
}

#[test]
fn what_etcd_delivers_passes() {
    let run = run();
    assert_eq!(violations(&records(&run)), vec![]);
}

#[test]
fn the_log_is_the_run() {
    let run = run();
    let (log, found) = EventLog::from_records(&records(&run));
    assert!(found.is_empty(), "{found:?}");
    assert_eq!(log.complete_through(), 8);
    assert_eq!(log.gaps(), vec![]);
    for revision in 1..=8 {
        assert_eq!(
            log.state_at(revision),
            Some(run.state_at(revision)),
            "at {revision}"
        );
        let logged = log.events(revision).unwrap_or_default();
        let expected = run.events(revision);
        assert_eq!(logged.len(), expected.len());
        assert!(logged.iter().zip(expected).all(|(a, b)| a.same_change(b)));
    }
    assert_eq!(log.state_at(9), None);
    assert_eq!(log.put_revisions("a", "3"), &[4]);
    assert_eq!(
        log.value_before("c", 7),
        Some(run.state_at(6).get("c").cloned())
    );
    assert_eq!(log.value_before("b", 6), Some(None));
}

#[test]
fn gaps_are_reported_not_guessed() {
    let run = run();
    let last = run.last_revision();
    let full = WatchRequest {
        prev_kv: true,
        ..everything()
    };
    // The whole-keyspace watcher misses 4..=5 (a restart after a compaction); a prefix
    // watcher sees revision 4's "a".
    let records = vec![
        run.record(1, 0, full.clone(), 2, 3, 1),
        run.record(
            2,
            0,
            WatchRequest {
                start_revision: 6,
                ..full
            },
            6,
            last,
            1,
        ),
        run.record(3, 1, prefix("a"), 2, last, 1),
    ];
    let (log, found) = EventLog::from_records(&records);
    assert!(found.is_empty(), "{found:?}");
    // Revision 6 is the resumed watcher's start, which may be the compact revision (whose
    // deletes etcd no longer has): it only counts for its puts.
    assert_eq!(log.gaps(), vec![(4, 6)]);
    assert!(matches!(log.knowledge(6), Knowledge::Partial(_)));
    assert!(log.is_complete(7));
    assert_eq!(log.complete_through(), 3);
    assert!(matches!(log.knowledge(4), Knowledge::Partial(events) if events.len() == 1));
    assert_eq!(log.knowledge(5), Knowledge::Unknown);
    assert_eq!(log.state_at(3), Some(run.state_at(3)));
    assert_eq!(log.state_at(6), None);
    // "a" was last written at 4 (seen) and 5..7 are complete but 5 is not: unknown.
    assert_eq!(log.value_before("a", 8), None);
    assert_eq!(
        log.value_before("ax", 7),
        Some(run.state_at(6).get("ax").cloned())
    );
    assert!(check_watches(&records, &log).is_empty());
}

#[test]
fn a_dropped_event_is_not_reliable() {
    let run = run();
    let mut records = records(&run);
    // The prefix watcher (one response per revision) drops revision 6 (ax=5).
    let dropped = records[2]
        .responses
        .iter()
        .position(|r| r.events[0].mod_revision == 6)
        .unwrap();
    records[2].responses.remove(dropped);
    let found = violations(&records);
    assert_eq!(kinds(&found), vec![ViolationKind::Reliable]);
    assert!(found[0].message.contains("watcher 3 (member 2)"));
    assert!(found[0].message.contains("revision 6"));
    assert!(found[0].message.contains("\"ax\""));
}

#[test]
fn a_txn_split_over_two_responses_is_not_atomic() {
    let run = run();
    let mut records = records(&run);
    // The prefix watcher gets revision 4 (a=3; c is outside it) whole; split the
    // whole-keyspace watcher's instead.
    let record = &mut records[0];
    let (index, at) = record
        .responses
        .iter()
        .enumerate()
        .find_map(|(i, r)| r.events.iter().position(|e| e.key == "c").map(|p| (i, p)))
        .unwrap();
    let tail = record.responses[index].events.split_off(at);
    let mut second = record.responses[index].clone();
    second.events = tail;
    record.responses.insert(index + 1, second);
    let found = violations(&records);
    assert_eq!(kinds(&found), vec![ViolationKind::Atomic]);
    assert!(found[0].message.contains("revision 4"));
}

#[test]
fn an_incomplete_revision_is_not_atomic() {
    let run = run();
    let mut records = records(&run);
    // The no_put watcher gets revision 7's delete of c only; drop it from a response that
    // keeps revision 7 otherwise: give it a prefix watcher over "b".."d" instead.
    let last = run.last_revision();
    let mut narrow = run.record(
        6,
        2,
        WatchRequest {
            key: "b".into(),
            end: "d".into(),
            ..WatchRequest::default()
        },
        2,
        last,
        1,
    );
    let response = narrow
        .responses
        .iter_mut()
        .find(|r| r.events[0].mod_revision == 7)
        .unwrap();
    response.events.retain(|e| e.key != "c");
    records.push(narrow);
    let found = violations(&records);
    assert_eq!(kinds(&found), vec![ViolationKind::Atomic]);
    assert!(found[0].message.contains("watcher 6 (member 2)"));
    assert!(found[0].message.contains("revision 7"));
}

#[test]
fn a_duplicated_event_is_not_unique() {
    let run = run();
    let mut records = records(&run);
    let again = records[2].responses[1].clone();
    records[2].responses.insert(2, again);
    let found = violations(&records);
    assert!(kinds(&found).contains(&ViolationKind::Unique), "{found:?}");
    assert!(found.iter().all(|v| matches!(
        v.kind,
        ViolationKind::Unique | ViolationKind::Ordered | ViolationKind::Atomic
    )));
}

#[test]
fn a_wrong_prev_kv_is_caught() {
    let run = run();
    let mut records = records(&run);
    let event = records[2]
        .responses
        .iter_mut()
        .flat_map(|r| r.events.iter_mut())
        .find(|e| e.mod_revision == 8)
        .unwrap();
    let prev = event.prev.as_mut().unwrap();
    assert_eq!(prev.value, "3");
    prev.value = "1".into();
    let found = violations(&records);
    assert_eq!(kinds(&found), vec![ViolationKind::PrevKv]);
    assert!(found[0].message.contains("revision 8, key \"a\""));
}

#[test]
fn a_prev_kv_not_asked_for_is_caught() {
    let run = run();
    let mut records = records(&run);
    records[3].responses[0].events[0].prev = Some(KeyValue {
        value: "2".into(),
        mod_revision: 3,
        create_revision: 3,
        version: 1,
    });
    assert_eq!(kinds(&violations(&records)), vec![ViolationKind::PrevKv]);
}

#[test]
fn a_put_delivered_to_a_no_put_watcher_is_caught() {
    let run = run();
    let mut records = records(&run);
    let put = run.events(2)[0].clone();
    records[3].responses.insert(
        0,
        cairn_check::watch::WatchResponse {
            header_revision: 2,
            events: vec![cairn_check::watch::WatchEvent { prev: None, ..put }],
            ..Default::default()
        },
    );
    let found = violations(&records);
    assert_eq!(kinds(&found), vec![ViolationKind::Filter]);
    assert!(found[0].message.contains("no_put"));
    assert!(found[0].message.contains("watcher 4 (member 0)"));
}

#[test]
fn a_gap_after_a_resume_is_not_resumable() {
    let run = run();
    let last = run.last_revision();
    let mut records = records(&run);
    let request = WatchRequest {
        prev_kv: true,
        ..prefix("a")
    };
    // The prefix watcher broke after revision 4 and resumed at 5, but its first event is 8:
    // it skipped ax=5 at 6.
    records[2] = run.record(3, 2, request.clone(), 2, 4, 1);
    let mut resumed = run.record(
        3,
        0,
        WatchRequest {
            start_revision: 5,
            ..request.clone()
        },
        5,
        last,
        1,
    );
    resumed.responses.retain(|r| r.events[0].mod_revision != 6);
    records.push(resumed);
    let found = violations(&records);
    assert_eq!(kinds(&found), vec![ViolationKind::Resumable]);
    assert!(found[0].message.contains("skipped revision 6"));
    // Resumed properly, it passes.
    let last_record = records.len() - 1;
    records[last_record] = run.record(
        3,
        0,
        WatchRequest {
            start_revision: 5,
            ..request
        },
        5,
        last,
        1,
    );
    assert_eq!(violations(&records), vec![]);
}

#[test]
fn events_before_the_start_are_not_resumable() {
    let run = run();
    let mut records = records(&run);
    let request = WatchRequest {
        start_revision: 7,
        ..prefix("a")
    };
    records.push(run.record(7, 1, request, 6, run.last_revision(), 1));
    let found = violations(&records);
    assert_eq!(kinds(&found), vec![ViolationKind::Resumable]);
    assert!(found[0].message.contains("revision 6"));
}

#[test]
fn a_compaction_cancel_must_be_due() {
    let run = run();
    let mut records = records(&run);
    let cancel = |compact_revision| cairn_check::watch::WatchResponse {
        canceled: true,
        compact_revision,
        ..Default::default()
    };
    let request = WatchRequest {
        start_revision: 3,
        ..everything()
    };
    let mut early = run.record(8, 0, request.clone(), 3, 3, 1);
    early.responses = vec![cancel(5)];
    early.ended_by = Some("compacted".into());
    records.push(early);
    assert_eq!(violations(&records), vec![]);
    let mut wrong = run.record(9, 0, request, 3, 5, 1);
    wrong.responses.push(cancel(5));
    records.push(wrong);
    let found = violations(&records);
    assert_eq!(kinds(&found), vec![ViolationKind::Resumable]);
    assert!(found[0].message.contains("watcher 9"));
}

#[test]
fn reordered_responses_are_not_ordered() {
    let run = run();
    let mut records = records(&run);
    records[2].responses.swap(0, 1);
    let found = violations(&records);
    assert!(kinds(&found).contains(&ViolationKind::Ordered), "{found:?}");
}

#[test]
fn whole_keyspace_watchers_that_disagree_are_reported_and_the_revision_disputed() {
    let run = run();
    let mut records = records(&run);
    let event = records[1]
        .responses
        .iter_mut()
        .flat_map(|r| r.events.iter_mut())
        .find(|e| e.mod_revision == 5)
        .unwrap();
    event.key = "c".into();
    let (log, found) = EventLog::from_records(&records);
    assert_eq!(kinds(&found), vec![ViolationKind::Disagreement]);
    assert!(found[0].message.contains("watcher 1 (member 0)"));
    assert!(found[0].message.contains("watcher 2 (member 1)"));
    assert_eq!(log.knowledge(5), Knowledge::Disputed);
    assert_eq!(log.complete_through(), 4);
    assert_eq!(log.gaps(), vec![(5, 5)]);
}

#[test]
fn a_narrow_watcher_with_a_wrong_value_is_a_mismatch() {
    let run = run();
    let mut records = records(&run);
    records[2].responses[0].events[0].value = "9".into();
    let found = violations(&records);
    assert_eq!(kinds(&found), vec![ViolationKind::EventMismatch]);
    assert!(found[0].message.contains("revision 2, key \"a\""));
}

#[test]
fn a_version_that_does_not_follow_is_an_inconsistent_log() {
    let run = run();
    let mut records = records(&run);
    for record in &mut records[..2] {
        for event in record
            .responses
            .iter_mut()
            .flat_map(|r| r.events.iter_mut())
        {
            if event.mod_revision == 8 {
                event.version = 5;
            }
        }
    }
    let (_, found) = EventLog::from_records(&records);
    assert_eq!(kinds(&found), vec![ViolationKind::LogInconsistent]);
    assert!(found[0].message.contains("revision 8, key \"a\""));
}

#[test]
fn a_resume_at_the_compact_revision_may_miss_its_deletes() {
    let run = run();
    let mut records = records(&run);
    // Started at 7 (say the compact revision): etcd keeps b=6 but not c's tombstone.
    let request = WatchRequest {
        start_revision: 7,
        prev_kv: true,
        ..everything()
    };
    let mut resumed = run.record(8, 0, request, 7, run.last_revision(), 1);
    let first = &mut resumed.responses[0];
    first.events.retain(|e| e.key == "b");
    first.events[0].prev = None;
    records.push(resumed);
    assert_eq!(violations(&records), vec![]);
}
