//! The history against the event log: unknown writes resolved, serializable reads, acknowledged
//! writes, invented writes and the final keyspace.

mod support;

use cairn_check::consistency::{
    check_acknowledged_writes, check_serializable_reads, resolve_unknown_writes,
};
use cairn_check::models::{
    Compare, CompareOp, CompareTarget, EtcdInput, EtcdKv, EtcdOutput, EtcdState, Txn, TxnOp,
    TxnOpResult,
};
use cairn_check::watch::{EventLog, WatchRecord, WatchRequest};
use cairn_check::{check, CheckOptions, History, Outcome, Verdict, ViolationKind};
use support::{del, everything, put, tdel, tput, txn, Run};

type H = History<EtcdInput, EtcdOutput>;

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

fn log_of(records: &[WatchRecord]) -> EventLog {
    let (log, found) = EventLog::from_records(records);
    assert!(found.is_empty(), "{found:?}");
    log
}

/// The run's requests one after the other (client i, called at 10 i, returned at 10 i + 5),
/// the ones in `unknown` without an outcome.
fn history(run: &Run, unknown: &[usize]) -> H {
    let mut h = H::new();
    for (i, (input, output)) in run.ops.iter().enumerate() {
        let (client, call) = (i as u64, 10 * i as u64);
        if unknown.contains(&i) {
            h.push_unknown(client, call, input.clone()).unwrap();
        } else {
            h.push_returned(client, call, call + 5, input.clone(), output.clone())
                .unwrap();
        }
    }
    h
}

#[test]
fn unknown_writes_the_log_shows_took_effect_and_the_others_never_happened() {
    let run = run();
    let mut h = history(&run, &[1, 2, 3]);
    // Never applied, called after everything.
    h.push_unknown(20, 100, put("z", "9")).unwrap();
    let log = log_of(&[run.full_watcher(1, 0)]);
    let resolved = resolve_unknown_writes(&h, &log);
    assert_eq!(resolved.len(), h.len() - 1, "the put of z is dropped");
    let outcome = |i: usize| resolved.ops()[i].outcome.clone();
    assert_eq!(
        outcome(1),
        Outcome::Returned {
            at: u64::MAX,
            output: EtcdOutput::Put { revision: 3 }
        }
    );
    assert_eq!(
        outcome(2),
        Outcome::Returned {
            at: u64::MAX,
            output: EtcdOutput::Txn {
                succeeded: true,
                revision: 4,
                results: vec![TxnOpResult::Put, TxnOpResult::Put],
            },
        }
    );
    // A delete stays unknown.
    assert_eq!(outcome(3), Outcome::Unknown);
    assert!(resolved.ops().iter().all(|op| op.input != put("z", "9")));
    let report = check(&EtcdKv::new(), &resolved, &CheckOptions::default());
    assert_eq!(report.verdict, Verdict::Linearizable);
}

#[test]
fn an_unseen_write_stays_unknown_when_the_log_has_a_gap() {
    let run = run();
    let mut h = history(&run, &[]);
    h.push_unknown(20, 0, put("z", "9")).unwrap();
    // Only a prefix watcher saw revisions 3..=8.
    let last = run.last_revision();
    let records = [
        run.record(1, 0, everything(), 2, 2, 1),
        run.record(2, 0, support::prefix("a"), 3, last, 1),
    ];
    let resolved = resolve_unknown_writes(&h, &log_of(&records));
    assert_eq!(resolved, h);
}

#[test]
fn an_unknown_txn_gets_the_branch_whose_value_the_log_shows() {
    // 2 k=1, then `if k == "0" { put k=2 } else { get k; put j=3 }` runs its failure branch.
    let cas = EtcdInput::Txn(Txn {
        compare: vec![Compare {
            key: "k".into(),
            op: CompareOp::Equal,
            target: CompareTarget::Value("0".into()),
        }],
        success: vec![tput("k", "2")],
        failure: vec![TxnOp::Get { key: "k".into() }, tput("j", "3")],
    });
    let run = Run::new([put("k", "1"), cas.clone()]);
    let h = history(&run, &[1]);
    let resolved = resolve_unknown_writes(&h, &log_of(&[run.full_watcher(1, 0)]));
    let expected = run.ops[1].1.clone();
    assert!(matches!(
        expected,
        EtcdOutput::Txn {
            succeeded: false,
            revision: 3,
            ..
        }
    ));
    assert_eq!(
        resolved.ops()[1].outcome,
        Outcome::Returned {
            at: u64::MAX,
            output: expected
        }
    );
    // Had the log never shown k=2 nor j=3, the txn never wrote.
    let unseen = Run::new([put("k", "1")]);
    let mut h = history(&unseen, &[]);
    h.push_unknown(1, 10, cas).unwrap();
    let resolved = resolve_unknown_writes(&h, &log_of(&[unseen.full_watcher(1, 0)]));
    assert_eq!(resolved.len(), 1);
}

#[test]
fn stale_but_consistent_serializable_reads_pass() {
    let run = run();
    let log = log_of(&[run.full_watcher(1, 0)]);
    let at3 = run.state_at(3);
    let at6 = run.state_at(6);
    let get_a = EtcdInput::Get { key: "a".into() };
    let range = EtcdInput::Range {
        start: "a".into(),
        end: "b".into(),
        limit: 1,
    };
    let reads = vec![
        (get_a.clone(), at3.apply(&get_a).1),
        (range.clone(), at6.apply(&range).1),
        (range.clone(), run.state().apply(&range).1),
        // Beyond what the log knows: skipped.
        (
            get_a.clone(),
            EtcdOutput::Get {
                kv: None,
                revision: 50,
            },
        ),
    ];
    assert_eq!(check_serializable_reads(&reads, &log), vec![]);
}

#[test]
fn an_inconsistent_serializable_read_fails() {
    let run = run();
    let log = log_of(&[run.full_watcher(1, 0)]);
    let get_a = EtcdInput::Get { key: "a".into() };
    // a=1 (revision 2) reported at revision 5, where a is 3.
    let kv = run.state_at(2).get("a").cloned();
    let reads = vec![(get_a, EtcdOutput::Get { kv, revision: 5 })];
    let found = check_serializable_reads(&reads, &log);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].kind, ViolationKind::SerializableRead);
    assert!(found[0].message.contains("revision 5"));
}

#[test]
fn acknowledged_writes_in_the_log_pass() {
    let run = run();
    let log = log_of(&[run.full_watcher(1, 0)]);
    let h = history(&run, &[4]);
    assert_eq!(check_acknowledged_writes(&h, &log, run.state()), vec![]);
}

#[test]
fn a_lost_acknowledged_write_is_caught() {
    let run = run();
    let log = log_of(&[run.full_watcher(1, 0)]);
    let mut h = history(&run, &[]);
    // Acknowledged at revision 6, which the log shows is ax=5's.
    h.push_returned(
        20,
        100,
        101,
        put("q", "lost"),
        EtcdOutput::Put { revision: 6 },
    )
    .unwrap();
    let found = check_acknowledged_writes(&h, &log, run.state());
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].kind, ViolationKind::AcknowledgedWrite);
    assert!(found[0].message.contains("revision 6"));
}

#[test]
fn an_invented_value_is_caught() {
    let run = run();
    let log = log_of(&[run.full_watcher(1, 0)]);
    let mut h = history(&run, &[]);
    // Nobody asked for ax=5.
    let ops: Vec<_> = h
        .clone()
        .into_ops()
        .into_iter()
        .filter(|op| op.input != put("ax", "5"))
        .collect();
    h = H::new();
    for op in ops {
        h.push(op).unwrap();
    }
    let found = check_acknowledged_writes(&h, &log, run.state());
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].kind, ViolationKind::InventedWrite);
    assert!(found[0].message.contains("revision 6, key \"ax\""));
}

#[test]
fn a_write_applied_twice_is_caught() {
    let run = Run::new([put("a", "1"), put("a", "1")]);
    let log = log_of(&[run.full_watcher(1, 0)]);
    let mut h = H::new();
    h.push_returned(0, 0, 1, put("a", "1"), EtcdOutput::Put { revision: 2 })
        .unwrap();
    let found = check_acknowledged_writes(&h, &log, run.state());
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].kind, ViolationKind::InventedWrite);
    assert!(found[0].message.contains("[2, 3]"));
}

#[test]
fn a_final_state_that_differs_from_the_replay_is_caught() {
    let run = run();
    let log = log_of(&[run.full_watcher(1, 0)]);
    let h = history(&run, &[]);
    let mut keys: Vec<_> = run
        .state()
        .keys()
        .map(|(k, kv)| (k.to_string(), kv.clone()))
        .collect();
    keys[0].1.value = "other".into();
    let final_state = EtcdState::from_keys(run.last_revision(), keys);
    let found = check_acknowledged_writes(&h, &log, &final_state);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].kind, ViolationKind::FinalState);
    assert!(found[0].message.contains("\"a\""));
}

#[test]
fn a_whole_keyspace_watch_request_is_recognised() {
    assert!(everything().sees_everything());
    assert!(!WatchRequest {
        no_put: true,
        ..everything()
    }
    .sees_everything());
}
