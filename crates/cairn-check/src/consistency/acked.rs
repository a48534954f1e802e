//! [`check_acknowledged_writes`]: no acknowledged write lost, nothing in the log that no
//! operation wrote, and the log's replay equal to the keyspace read at the end.

use std::collections::HashSet;

use super::writes::{branch, deletes, puts, revoked_keys};
use crate::history::History;
use crate::models::{EtcdInput, EtcdOutput, EtcdState, TxnOp, TxnOpResult};
use crate::violation::{Violation, ViolationKind};
use crate::watch::{EventKind, EventLog, Knowledge, WatchEvent};

/// How many differing keys a final-state violation lists.
const DIFF_SHOWN: usize = 5;

/// A write as the log should show it: (kind, key, value).
type Change<'a> = (EventKind, &'a str, &'a str);

/// Checks the history's writes against `log` and the keyspace read at the end:
///
/// - every acknowledged write is in the log at the revision it returned, as it was made: at a
///   complete revision, its events are exactly the write's puts and (effective) deletes;
///   elsewhere, its put values are not logged at another revision;
/// - every put in the log writes a value some operation of `history` (any outcome, either
///   branch) puts under that key, and only once; every delete deletes a key some operation
///   deletes, or one some operation puts with a lease that some operation revokes;
/// - the log's keyspace at `final_state`'s revision, if it knows it, equals `final_state`
///   (e.g. [`EtcdState::from_keys`] of a linearizable Range over the whole keyspace at the
///   end, with its header revision).
///
/// Pass the history with every invoked operation (before [`super::resolve_unknown_writes`]
/// drops any), so that unknown writes count as possible writers.
///
/// A put with a lease counts as a put. An acknowledged lease revoke is not checked against
/// its revision: which keys it deleted, and so whether it created that revision or only
/// reported it, depends on lease attachments the log does not show.
pub fn check_acknowledged_writes(
    history: &History<EtcdInput, EtcdOutput>,
    log: &EventLog,
    final_state: &EtcdState,
) -> Vec<Violation> {
    let mut violations = Vec::new();
    for (index, op) in history.ops().iter().enumerate() {
        if let Some(output) = op.output() {
            check_acked(index, &op.input, output, log, &mut violations);
        }
    }
    check_invented(history, log, &mut violations);
    check_final(log, final_state, &mut violations);
    violations
}

/// The changes an acknowledged operation made, and the revision it returned; `None` if it
/// changed nothing.
fn changes<'a>(input: &'a EtcdInput, output: &EtcdOutput) -> Option<(i64, Vec<Change<'a>>)> {
    let (revision, changes) = match (input, output) {
        (
            EtcdInput::Put { key, value } | EtcdInput::PutWithLease { key, value, .. },
            EtcdOutput::Put { revision },
        ) => (
            *revision,
            vec![(EventKind::Put, key.as_str(), value.as_str())],
        ),
        (EtcdInput::Delete { key }, EtcdOutput::Delete { deleted, revision }) if *deleted > 0 => {
            (*revision, vec![(EventKind::Delete, key.as_str(), "")])
        }
        (
            EtcdInput::Txn(txn),
            EtcdOutput::Txn {
                succeeded,
                revision,
                results,
            },
        ) => {
            let changes = branch(txn, *succeeded)
                .iter()
                .zip(results.iter().map(Some).chain(std::iter::repeat(None)))
                .filter_map(|(op, result)| match (op, result) {
                    (TxnOp::Put { key, value }, _) => {
                        Some((EventKind::Put, key.as_str(), value.as_str()))
                    }
                    (TxnOp::Delete { key }, Some(TxnOpResult::Delete { deleted }))
                        if *deleted > 0 =>
                    {
                        Some((EventKind::Delete, key.as_str(), ""))
                    }
                    _ => None,
                })
                .collect();
            (*revision, changes)
        }
        _ => return None,
    };
    (!changes.is_empty()).then_some((revision, changes))
}

fn check_acked(
    index: usize,
    input: &EtcdInput,
    output: &EtcdOutput,
    log: &EventLog,
    out: &mut Vec<Violation>,
) {
    let Some((revision, mut made)) = changes(input, output) else {
        return;
    };
    let what = format!("operation #{index} {input:?}, acknowledged at revision {revision}");
    if let Knowledge::Complete(events) = log.knowledge(revision) {
        let mut logged: Vec<Change<'_>> = events.iter().map(change).collect();
        made.sort_unstable();
        logged.sort_unstable();
        if made != logged {
            out.push(Violation::new(
                ViolationKind::AcknowledgedWrite,
                format!(
                    "{what}: the log's revision {revision} is [{}], not that write",
                    events
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        return;
    }
    for (kind, key, value) in made {
        if kind != EventKind::Put {
            continue;
        }
        let logged = log.put_revisions(key, value);
        if !logged.is_empty() && !logged.contains(&revision) {
            out.push(Violation::new(
                ViolationKind::AcknowledgedWrite,
                format!("{what}: the log has {key:?}={value:?} at revisions {logged:?}"),
            ));
        }
    }
}

fn change(event: &WatchEvent) -> Change<'_> {
    (event.kind, &event.key, &event.value)
}

fn check_invented(
    history: &History<EtcdInput, EtcdOutput>,
    log: &EventLog,
    out: &mut Vec<Violation>,
) {
    let writable: HashSet<(&str, &str)> = history
        .ops()
        .iter()
        .flat_map(|op| puts(&op.input))
        .collect();
    let mut deletable: HashSet<&str> = history
        .ops()
        .iter()
        .flat_map(|op| deletes(&op.input))
        .collect();
    deletable.extend(revoked_keys(history));
    for event in log.known_events() {
        let revision = event.revision();
        let at = format!("revision {revision}, key {:?}", event.key);
        match event.kind {
            EventKind::Put => {
                if !writable.contains(&(event.key.as_str(), event.value.as_str())) {
                    out.push(Violation::new(
                        ViolationKind::InventedWrite,
                        format!("{at}: {event}, but no operation puts that value there"),
                    ));
                }
                let logged = log.put_revisions(&event.key, &event.value);
                if logged.len() > 1 && logged[1] == revision {
                    out.push(Violation::new(
                        ViolationKind::InventedWrite,
                        format!(
                            "{at}: {:?}={:?} is written at revisions {logged:?}, but each value \
                             is written once",
                            event.key, event.value
                        ),
                    ));
                }
            }
            EventKind::Delete => {
                if !deletable.contains(event.key.as_str()) {
                    out.push(Violation::new(
                        ViolationKind::InventedWrite,
                        format!(
                            "{at}: {event}, but no operation deletes that key or revokes a \
                             lease it is put with"
                        ),
                    ));
                }
            }
        }
    }
}

fn check_final(log: &EventLog, final_state: &EtcdState, out: &mut Vec<Violation>) {
    let revision = final_state.revision();
    let Some(replayed) = log.state_at(revision) else {
        return;
    };
    if replayed == *final_state {
        return;
    }
    let keys: std::collections::BTreeSet<&str> = replayed
        .keys()
        .chain(final_state.keys())
        .map(|(k, _)| k)
        .collect();
    let diffs: Vec<String> = keys
        .into_iter()
        .filter(|k| replayed.get(k) != final_state.get(k))
        .map(|k| {
            format!(
                "{k:?}: log {:?}, read {:?}",
                replayed.get(k).map(|kv| &kv.value),
                final_state.get(k).map(|kv| &kv.value)
            )
        })
        .collect();
    let shown = diffs.len().min(DIFF_SHOWN);
    out.push(Violation::new(
        ViolationKind::FinalState,
        format!(
            "at revision {revision} the log's keyspace differs from the final read on {} keys: {}{}",
            diffs.len(),
            diffs[..shown].join("; "),
            if diffs.len() > shown { "; ..." } else { "" }
        ),
    ));
}
