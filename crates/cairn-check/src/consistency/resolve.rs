//! [`resolve_unknown_writes`]: what the event log says about each unknown write.
//!
//! Every value is written by one operation, so a put value the log shows at revision `r` was
//! written there by the only operation that writes it: an unknown put, or a transaction's
//! branch, took effect at `r`. An unknown write whose values the log never shows, while the log
//! knows every revision it could have taken, never happened. The linearizability check then
//! has far fewer "maybe" operations to place.

use std::collections::HashMap;

use super::writes::{branch, output_revision, writer_counts};
use crate::history::{History, Operation, Outcome};
use crate::models::{EtcdInput, EtcdOutput, Txn, TxnOp, TxnOpResult};
use crate::watch::EventLog;

/// What the log says of one unknown write.
enum Resolution {
    /// It took effect, with this output.
    TookEffect(EtcdOutput),
    /// It never happened, or changed nothing anyone can observe.
    Never,
    /// The log cannot tell.
    Unknown,
}

/// `history` with its unknown writes resolved by `log`:
///
/// - an unknown put (with a lease or not), or transaction, of a value the log shows at
///   revision `r` (and no other operation writes) took effect at `r`: it becomes an operation
///   that returned at the end of the history (`u64::MAX`) with the response etcd gave (a
///   transaction's branch is the one that writes the value; its results come from the log's
///   keyspace before `r`, or are plain puts and deletes when the log knows no more);
/// - an unknown put (with a lease or not) whose value the log never shows, while the log is
///   complete from the first revision it could have taken (after every revision returned
///   before its call) to the last one seen, never happened (or was refused for a missing
///   lease, which is the same): it is left out; so is such a transaction if its other branch
///   only reads;
/// - anything else (unknown deletes, transactions without a unique put, reads, lease grants,
///   which leave no trace in the log, and lease revokes, which may delete nothing) stays
///   unknown.
///
/// Known operations are kept as they are, in order.
pub fn resolve_unknown_writes(
    history: &History<EtcdInput, EtcdOutput>,
    log: &EventLog,
) -> History<EtcdInput, EtcdOutput> {
    let writers = writer_counts(history);
    let floors = Floors::new(history);
    let end = history
        .ops()
        .iter()
        .filter_map(Operation::output)
        .filter_map(output_revision)
        .fold(log.last_revision(), i64::max);
    let context = Context {
        log,
        writers: &writers,
        end,
    };
    let mut resolved = History::new();
    for op in history.ops() {
        let outcome = if op.is_unknown() {
            match context.resolve(&op.input, floors.before(op.call)) {
                Resolution::TookEffect(output) => Outcome::Returned {
                    at: u64::MAX,
                    output,
                },
                Resolution::Never => continue,
                Resolution::Unknown => Outcome::Unknown,
            }
        } else {
            op.outcome.clone()
        };
        // Every operation comes from a valid history.
        let _ = resolved.push(Operation {
            client: op.client,
            call: op.call,
            input: op.input.clone(),
            outcome,
        });
    }
    resolved
}

struct Context<'a> {
    log: &'a EventLog,
    writers: &'a HashMap<(&'a str, &'a str), usize>,
    /// The last revision anyone saw.
    end: i64,
}

impl Context<'_> {
    /// What the log says of an unknown `input` called after revision `floor` was returned.
    fn resolve(&self, input: &EtcdInput, floor: i64) -> Resolution {
        match input {
            EtcdInput::Put { key, value } | EtcdInput::PutWithLease { key, value, .. } => {
                match self.revision_of(key, value) {
                    Some(Some(revision)) => Resolution::TookEffect(EtcdOutput::Put { revision }),
                    Some(None) if self.log.all_complete(floor + 1, self.end) => Resolution::Never,
                    _ => Resolution::Unknown,
                }
            }
            EtcdInput::Txn(txn) => self.resolve_txn(input, txn, floor),
            _ => Resolution::Unknown,
        }
    }

    /// For a (key, value) only one operation writes: `Some(Some(r))` if the log shows it once,
    /// at `r`; `Some(None)` if it never shows it; `None` if the pair is not unique or the log
    /// shows it more than once.
    fn revision_of(&self, key: &str, value: &str) -> Option<Option<i64>> {
        if self.writers.get(&(key, value)) != Some(&1) {
            return None;
        }
        match self.log.put_revisions(key, value) {
            [] => Some(None),
            [revision] => Some(Some(*revision)),
            _ => None,
        }
    }

    fn resolve_txn(&self, input: &EtcdInput, txn: &Txn, floor: i64) -> Resolution {
        // The branch whose unique puts the log shows ran, at their revision; count the
        // branches with unique puts the log would show but does not, and note those it
        // cannot tell about.
        let mut ran: Vec<(bool, i64)> = Vec::new();
        let mut unseen_branches_with_puts = 0;
        let mut undecided = false;
        for succeeded in [true, false] {
            let ops = branch(txn, succeeded);
            let mut has_put = false;
            let mut has_unique_put = false;
            for op in ops {
                if let TxnOp::Put { key, value } = op {
                    has_put = true;
                    match self.revision_of(key, value) {
                        Some(Some(revision)) => ran.push((succeeded, revision)),
                        Some(None) => has_unique_put = true,
                        None => {}
                    }
                }
            }
            if has_put {
                if has_unique_put {
                    unseen_branches_with_puts += 1;
                } else {
                    undecided = true;
                }
            } else if ops.iter().any(|op| !matches!(op, TxnOp::Get { .. })) {
                // A branch that only deletes may have run without a trace of its own.
                undecided = true;
            }
        }
        if let Some(&(succeeded, revision)) = ran.first() {
            // Every value the log shows must say the same branch and revision.
            return if ran.iter().all(|r| *r == (succeeded, revision)) {
                self.txn_output(input, txn, succeeded, revision)
            } else {
                Resolution::Unknown
            };
        }
        if unseen_branches_with_puts > 0 && !undecided && self.log.all_complete(floor + 1, self.end)
        {
            Resolution::Never
        } else {
            Resolution::Unknown
        }
    }

    /// The response of `txn`, which ran branch `succeeded` at `revision`.
    fn txn_output(
        &self,
        input: &EtcdInput,
        txn: &Txn,
        succeeded: bool,
        revision: i64,
    ) -> Resolution {
        if let Some(before) = self.log.state_at(revision - 1) {
            let (_, output) = before.apply(input);
            return match &output {
                EtcdOutput::Txn {
                    succeeded: s,
                    revision: r,
                    ..
                } if *s == succeeded && *r == revision => Resolution::TookEffect(output),
                // The log contradicts the transaction: let the linearizability check judge.
                _ => Resolution::Unknown,
            };
        }
        let events = self.log.events(revision);
        let mut results = Vec::new();
        for op in branch(txn, succeeded) {
            let result = match op {
                TxnOp::Put { .. } => TxnOpResult::Put,
                TxnOp::Delete { key } => match events {
                    Some(events) => TxnOpResult::Delete {
                        deleted: i64::from(
                            events.iter().any(|e| &e.key == key && e.kv().is_none()),
                        ),
                    },
                    None => return Resolution::Unknown,
                },
                TxnOp::Get { .. } => return Resolution::Unknown,
            };
            results.push(result);
        }
        Resolution::TookEffect(EtcdOutput::Txn {
            succeeded,
            revision,
            results,
        })
    }
}

/// For a call time, the highest revision returned by an operation that returned before it:
/// a write called then takes a later revision.
struct Floors {
    /// (return time, highest revision returned at or before it), by return time.
    steps: Vec<(u64, i64)>,
}

impl Floors {
    fn new(history: &History<EtcdInput, EtcdOutput>) -> Self {
        let mut returns: Vec<(u64, i64)> = history
            .ops()
            .iter()
            .filter_map(|op| match &op.outcome {
                Outcome::Returned { at, output } if *at != u64::MAX => {
                    Some((*at, output_revision(output)?))
                }
                _ => None,
            })
            .collect();
        returns.sort_unstable();
        let mut highest = 1;
        let steps = returns
            .into_iter()
            .map(|(at, revision)| {
                highest = highest.max(revision);
                (at, highest)
            })
            .collect();
        Floors { steps }
    }

    /// The highest revision returned strictly before `call` (1, the fresh store's, if none).
    fn before(&self, call: u64) -> i64 {
        let n = self.steps.partition_point(|(at, _)| *at < call);
        n.checked_sub(1).map_or(1, |i| self.steps[i].1)
    }
}
