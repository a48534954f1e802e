//! Lease traffic against the event log: a revoke's deletes (several at one revision) replay,
//! pass the watch and write checks, and unknown lease requests are resolved as far as the log
//! allows.

mod support;

use cairn_check::consistency::{
    check_acknowledged_writes, check_serializable_reads, resolve_unknown_writes,
};
use cairn_check::models::{EtcdInput, EtcdKv, EtcdOutput, EtcdState, LeaseError};
use cairn_check::watch::{check_watches, EventKind, EventLog};
use cairn_check::{check, CheckOptions, History, Outcome, Verdict, ViolationKind};
use support::{del, grant, lput, put, revoke, Run};

type H = History<EtcdInput, EtcdOutput>;

/// Revisions: 2 a=1 (lease 7), 3 b=2 (lease 7), 4 c=3 (lease 8), 5 d=4, 6 b=5 (detached),
/// 7 a=6 (lease 7 again), 8 {-a} (revoke 7), 9 e=7 (lease 8), 10 {-c, -e} (revoke 8).
fn run() -> Run {
    Run::new([
        grant(7),
        grant(8),
        lput("a", "1", 7),
        lput("b", "2", 7),
        lput("c", "3", 8),
        put("d", "4"),
        put("b", "5"),
        lput("a", "6", 7),
        revoke(7),
        lput("e", "7", 8),
        revoke(8),
        revoke(8),
    ])
}

fn log_of(run: &Run) -> EventLog {
    let (log, found) = EventLog::from_records(&[run.full_watcher(1, 0)]);
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

fn final_state(run: &Run) -> EtcdState {
    let state = run.state();
    EtcdState::from_keys(
        state.revision(),
        state.keys().map(|(k, kv)| (k.to_string(), kv.clone())),
    )
}

#[test]
fn the_run_is_what_etcd_does() {
    let run = run();
    assert_eq!(run.last_revision(), 10);
    assert_eq!(
        run.ops[8].1,
        EtcdOutput::LeaseRevoke { revision: 8 },
        "b was detached"
    );
    assert_eq!(run.ops[11].1, EtcdOutput::LeaseError(LeaseError::NotFound));
    let deletes: Vec<(EventKind, &str)> = run
        .events(10)
        .iter()
        .map(|e| (e.kind, e.key.as_str()))
        .collect();
    assert_eq!(
        deletes,
        [(EventKind::Delete, "c"), (EventKind::Delete, "e")]
    );
}

#[test]
fn a_revoke_with_several_deletes_replays_and_passes_the_checks() {
    let run = run();
    let log = log_of(&run);
    for revision in 1..=run.last_revision() {
        let replayed = log.state_at(revision).expect("complete");
        let expected = run.state_at(revision);
        assert_eq!(replayed.revision(), revision);
        assert!(
            replayed.keys().eq(expected.keys()),
            "revision {revision}: {replayed:?} vs {expected:?}"
        );
        assert_eq!(replayed.leases().count(), 0, "the replay knows no leases");
    }
    assert_eq!(log.value_before("e", 10).unwrap().unwrap().value, "7");
    assert_eq!(log.value_before("c", 11), Some(None));

    let records = [
        run.full_watcher(1, 0),
        run.record(2, 1, support::prefix("c"), 2, 10, 1),
    ];
    let (log, found) = EventLog::from_records(&records);
    assert!(found.is_empty(), "{found:?}");
    assert_eq!(check_watches(&records, &log), []);

    let h = history(&run, &[]);
    assert_eq!(check_acknowledged_writes(&h, &log, &final_state(&run)), []);
    let reads: Vec<(EtcdInput, EtcdOutput)> = (1..=10)
        .map(|revision| {
            let state = run.state_at(revision);
            let input = EtcdInput::Range {
                start: String::new(),
                end: "\0".into(),
                limit: 0,
            };
            let output = state.apply(&input).1;
            (input, output)
        })
        .collect();
    assert_eq!(check_serializable_reads(&reads, &log), []);
    let report = check(&EtcdKv::new(), &h, &CheckOptions::default());
    assert_eq!(report.verdict, Verdict::Linearizable);
}

#[test]
fn deletes_are_invented_unless_a_revoked_lease_had_the_key() {
    let run = run();
    let log = log_of(&run);
    let final_state = final_state(&run);
    // Without the revokes, nothing deletes a, c or e.
    let mut h = H::new();
    for (i, (input, output)) in run.ops.iter().enumerate() {
        if !matches!(input, EtcdInput::LeaseRevoke { .. }) {
            let call = 10 * i as u64;
            h.push_returned(i as u64, call, call + 5, input.clone(), output.clone())
                .unwrap();
        }
    }
    let found = check_acknowledged_writes(&h, &log, &final_state);
    let invented: Vec<&str> = found
        .iter()
        .filter(|v| v.kind == ViolationKind::InventedWrite)
        .map(|v| v.message.as_str())
        .collect();
    assert_eq!(invented.len(), 3, "{found:?}");
    // An unknown revoke of each lease explains them.
    h.push_unknown(50, 200, revoke(7)).unwrap();
    h.push_unknown(51, 200, revoke(8)).unwrap();
    assert_eq!(check_acknowledged_writes(&h, &log, &final_state), []);
    // A revoke of another lease does not.
    let mut other = H::new();
    other
        .push_returned(0, 0, 1, lput("c", "3", 8), EtcdOutput::Put { revision: 4 })
        .unwrap();
    other.push_unknown(1, 0, revoke(9)).unwrap();
    other.push_unknown(2, 0, del("zz")).unwrap();
    let found = check_acknowledged_writes(&other, &log, &final_state);
    assert!(
        found
            .iter()
            .any(|v| v.kind == ViolationKind::InventedWrite && v.message.contains("\"c\" @10")),
        "{found:?}"
    );
}

#[test]
fn unknown_lease_requests_are_resolved_as_far_as_the_log_allows() {
    let run = run();
    let log = log_of(&run);
    // The grant of 7, the put of a=1 with lease 7 and the revoke of 7 unknown.
    let mut h = history(&run, &[0, 2, 8]);
    // A put with a lease that never happened (called after everything else).
    h.push_unknown(20, 500, lput("z", "9", 8)).unwrap();
    let resolved = resolve_unknown_writes(&h, &log);
    assert_eq!(resolved.len(), h.len() - 1, "the put of z is dropped");
    let outcome = |i: usize| resolved.ops()[i].outcome.clone();
    assert_eq!(outcome(0), Outcome::Unknown, "a grant leaves no trace");
    assert_eq!(
        outcome(2),
        Outcome::Returned {
            at: u64::MAX,
            output: EtcdOutput::Put { revision: 2 }
        }
    );
    assert_eq!(outcome(8), Outcome::Unknown, "a revoke stays unknown");
    let report = check(&EtcdKv::new(), &resolved, &CheckOptions::default());
    assert_eq!(report.verdict, Verdict::Linearizable);
    let report = check(&EtcdKv::new(), &h, &CheckOptions::default());
    assert_eq!(report.verdict, Verdict::Linearizable);
}
