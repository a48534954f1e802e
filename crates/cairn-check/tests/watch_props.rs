//! Random linear runs of puts, deletes and transactions: the event log built from watchers over
//! them is the run, every watcher passes the watch checks, and the history passes the
//! consistency checks; one random drop, duplicate, split or reorder in one stream is caught.

mod support;

use cairn_check::consistency::{
    check_acknowledged_writes, check_serializable_reads, resolve_unknown_writes,
};
use cairn_check::models::{EtcdInput, EtcdOutput};
use cairn_check::watch::{check_watches, EventLog, WatchRecord, WatchRequest};
use cairn_check::{History, Outcome, Violation, ViolationKind};
use proptest::prelude::*;
use proptest::sample::Index;
use support::{del, everything, prefix, put, tdel, tput, txn, Run};

const KEYS: [&str; 5] = ["a", "ab", "b", "ba", "c"];

/// One request: (kind, key, other key).
fn requests() -> impl Strategy<Value = Vec<(u8, usize, usize)>> {
    prop::collection::vec((0u8..5, 0..KEYS.len(), 0..KEYS.len()), 1..40)
}

fn run_of(requests: &[(u8, usize, usize)]) -> Run {
    let mut values = 0;
    let mut value = || {
        values += 1;
        format!("v{values}")
    };
    // Start with a put so that there is something to watch.
    let mut inputs = vec![put("a", &value())];
    for &(kind, k, other) in requests {
        let (key, other) = (KEYS[k], KEYS[other]);
        let input = match kind {
            0 | 1 => put(key, &value()),
            2 => del(key),
            // etcd refuses two writes to one key in a txn.
            3 if key != other => txn(vec![tput(key, &value()), tput(other, &value())]),
            4 if key != other => txn(vec![tput(key, &value()), tdel(other)]),
            _ => txn(vec![tput(key, &value())]),
        };
        inputs.push(input);
    }
    Run::new(inputs)
}

/// A random watcher: (range, no_put, no_delete, prev_kv, resumed, first, length, chunk).
type Shape = (u8, bool, bool, bool, bool, Index, Index, usize);

fn shapes() -> impl Strategy<Value = Vec<Shape>> {
    prop::collection::vec(
        (
            0u8..5,
            prop::bool::weighted(0.2),
            prop::bool::weighted(0.2),
            any::<bool>(),
            any::<bool>(),
            any::<Index>(),
            any::<Index>(),
            1usize..4,
        ),
        0..6,
    )
}

/// Two whole-keyspace watchers over the whole run, then the random ones.
fn records_of(run: &Run, shapes: &[Shape]) -> Vec<WatchRecord> {
    let last = run.last_revision();
    let mut records = vec![run.full_watcher(0, 0), {
        let mut second = run.full_watcher(1, 1);
        second.responses = run.deliver(&second.request, 2, last, 1);
        second
    }];
    for (i, &(range, no_put, no_delete, prev_kv, resumed, first, length, chunk)) in
        shapes.iter().enumerate()
    {
        let base = match range {
            0 => everything(),
            1 => prefix("a"),
            2 => prefix("b"),
            3 => WatchRequest {
                key: "ab".into(),
                end: "ba".into(),
                ..WatchRequest::default()
            },
            _ => WatchRequest {
                key: "b".into(),
                ..WatchRequest::default()
            },
        };
        // First revision in 2..=last + 1, last one in first - 1..=last.
        let first = 2 + first.index(usize::try_from(last).unwrap()) as i64;
        let end = first - 1 + length.index(usize::try_from(last - first + 2).unwrap()) as i64;
        let request = WatchRequest {
            no_put,
            no_delete,
            prev_kv,
            start_revision: if resumed { first } else { 0 },
            ..base
        };
        records.push(run.record(10 + i as u64, i % 3, request, first, end, chunk));
    }
    records
}

fn all_violations(records: &[WatchRecord]) -> Vec<Violation> {
    let (log, mut found) = EventLog::from_records(records);
    found.extend(check_watches(records, &log));
    found
}

/// A mutation of one stream that the checks must catch.
#[derive(Debug, Clone, Copy)]
enum Mutation {
    Drop,
    Duplicate,
    Split,
    Reorder,
}

/// (record, response, event) positions.
type Spot = (usize, usize, usize);

fn spots(records: &[WatchRecord]) -> Vec<Spot> {
    let mut spots = Vec::new();
    for (r, record) in records.iter().enumerate() {
        for (p, response) in record.responses.iter().enumerate() {
            for e in 0..response.events.len() {
                spots.push((r, p, e));
            }
        }
    }
    spots
}

/// Applies `mutation` at a spot `pick` chooses among those where it is detectable (a
/// duplicate where none is); returns what was applied and the kinds that may report it.
fn mutate(
    records: &mut [WatchRecord],
    mutation: Mutation,
    pick: Index,
) -> (Mutation, Vec<ViolationKind>) {
    let all = spots(records);
    let event = |&(r, p, e): &Spot| &records[r].responses[p].events[e];
    let candidates: Vec<Spot> = match mutation {
        Mutation::Drop => all
            .iter()
            .copied()
            .filter(|spot| {
                let record = &records[spot.0];
                let ev = event(spot);
                let revision = ev.mod_revision;
                let lossy = record.may_be_lossy_at(revision)
                    && ev.kind == cairn_check::watch::EventKind::Delete;
                let others = record
                    .events()
                    .filter(|e| e.mod_revision == revision)
                    .count()
                    > 1;
                !lossy && (others || Some(revision) < record.last_event_revision())
            })
            .collect(),
        Mutation::Split => all
            .iter()
            .copied()
            .filter(|&(r, p, e)| {
                let events = &records[r].responses[p].events;
                e > 0 && events[e - 1].mod_revision == events[e].mod_revision
            })
            .collect(),
        Mutation::Reorder => all
            .iter()
            .copied()
            .filter(|&(r, p, e)| e == 0 && p + 1 < records[r].responses.len())
            .collect(),
        Mutation::Duplicate => all.clone(),
    };
    let (mutation, candidates) = if candidates.is_empty() {
        (Mutation::Duplicate, all)
    } else {
        (mutation, candidates)
    };
    let (r, p, e) = candidates[pick.index(candidates.len())];
    let responses = &mut records[r].responses;
    let kinds = match mutation {
        Mutation::Drop => {
            responses[p].events.remove(e);
            if responses[p].events.is_empty() {
                responses.remove(p);
            }
            vec![
                ViolationKind::Reliable,
                ViolationKind::Atomic,
                ViolationKind::Resumable,
                ViolationKind::Disagreement,
            ]
        }
        Mutation::Duplicate => {
            let again = responses[p].events[e].clone();
            responses[p].events.insert(e + 1, again);
            vec![ViolationKind::Unique]
        }
        Mutation::Split => {
            let mut tail = responses[p].clone();
            tail.events = responses[p].events.split_off(e);
            responses.insert(p + 1, tail);
            vec![ViolationKind::Atomic]
        }
        Mutation::Reorder => {
            responses.swap(p, p + 1);
            vec![ViolationKind::Ordered]
        }
    };
    (mutation, kinds)
}

fn mutations() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        Just(Mutation::Drop),
        Just(Mutation::Duplicate),
        Just(Mutation::Split),
        Just(Mutation::Reorder),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn watchers_over_a_linear_run_pass(requests in requests(), shapes in shapes(), reads in prop::collection::vec((any::<Index>(), 0..KEYS.len(), any::<bool>()), 0..8), unknown in prop::collection::vec(any::<bool>(), 64)) {
        let run = run_of(&requests);
        let records = records_of(&run, &shapes);
        let (log, found) = EventLog::from_records(&records);
        prop_assert_eq!(found, vec![]);
        prop_assert_eq!(check_watches(&records, &log), vec![]);
        let last = run.last_revision();
        prop_assert_eq!(log.complete_through(), last);
        prop_assert_eq!(log.gaps(), vec![]);
        prop_assert_eq!(log.state_at(last), Some(run.state().clone()));

        // Stale serializable reads at random revisions are consistent.
        let reads: Vec<(EtcdInput, EtcdOutput)> = reads
            .iter()
            .map(|&(at, k, ranged)| {
                let state = run.state_at(1 + at.index(usize::try_from(last).unwrap()) as i64);
                let input = if ranged {
                    EtcdInput::Range { start: KEYS[k].into(), end: "\0".into(), limit: 2 }
                } else {
                    EtcdInput::Get { key: KEYS[k].into() }
                };
                let output = state.apply(&input).1;
                (input, output)
            })
            .collect();
        prop_assert_eq!(check_serializable_reads(&reads, &log), vec![]);

        // Acknowledged writes are all there; unknown puts and txns get their real outcome.
        let mut history = History::new();
        for (i, (input, output)) in run.ops.iter().enumerate() {
            let call = 10 * i as u64;
            if unknown[i % unknown.len()] {
                history.push_unknown(0, call, input.clone()).unwrap();
            } else {
                history.push_returned(0, call, call + 5, input.clone(), output.clone()).unwrap();
            }
        }
        prop_assert_eq!(check_acknowledged_writes(&history, &log, run.state()), vec![]);
        let resolved = resolve_unknown_writes(&history, &log);
        prop_assert_eq!(resolved.len(), history.len());
        for (op, (input, output)) in resolved.ops().iter().zip(&run.ops) {
            match (&op.outcome, input) {
                (Outcome::Unknown, EtcdInput::Delete { .. }) => {}
                (Outcome::Returned { output: got, .. }, _) => prop_assert_eq!(got, output),
                (Outcome::Unknown, _) => prop_assert!(false, "{input:?} left unknown"),
            }
        }
    }

    #[test]
    fn one_broken_stream_is_caught(requests in requests(), shapes in shapes(), mutation in mutations(), pick in any::<Index>()) {
        let run = run_of(&requests);
        let mut records = records_of(&run, &shapes);
        let (applied, kinds) = mutate(&mut records, mutation, pick);
        let found = all_violations(&records);
        prop_assert!(
            found.iter().any(|v| kinds.contains(&v.kind)),
            "{applied:?} not caught as {kinds:?}: {found:?}"
        );
    }
}
