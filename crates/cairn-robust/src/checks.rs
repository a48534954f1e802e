//! Every check of a run, on what it recorded (cairn-check does the work; this module turns
//! the records into its types and collects the verdicts):
//!
//! 1. the event log merged from every watch stream ([`EventLog::from_records`]), with its
//!    contradictions; a gap in it (a revision no watcher delivered) is a violation too, since
//!    whole-keyspace watchers on every member should deliver every revision;
//! 2. the watch guarantees of every stream ([`check_watches`]): ordered, unique, atomic,
//!    reliable, resumable, `prev_kv`, filters;
//! 3. every acknowledged write in the log as acknowledged, nothing invented, and the log's
//!    replay equal to the keyspace read at the end ([`check_acknowledged_writes`]);
//! 4. serializable reads and reads at a past revision equal to the log's keyspace at their
//!    revision ([`check_serializable_reads`]);
//! 5. linearizability of the linearizable operations with cairn-check's revision-aware etcd
//!    model, after resolving unknown writes from the log ([`resolve_unknown_writes`]); a
//!    checker that runs out of time is a failure.
//!
//! Lease revocations and expiries delete `lease/` keys at revisions no client request
//! explains: they are added to the history from the log as deletes that happened at some
//! point (see `traffic.rs`).
//!
//! A `prev_kv` may be missing legitimately: etcd (and cairn) fill it by reading the key at the
//! event's revision − 1, and leave it out when that revision is compacted by then. An event at
//! revision `r` without its `prev_kv` is excused when a compaction to `r` or later had been
//! sent before the response arrived; its `prev_kv` is then filled in from the event log before
//! the watch checks, so only unexcused omissions are reported.

use crate::compactor::Compaction;
use crate::record::{
    Cmp, CmpOp, CmpTarget, EventType, Kv, OpRecord, Outcome, Request, Response, TxnOp, TxnResult,
    WatchStreamRecord,
};
use crate::traffic::LEASE_PREFIX;
use cairn_check::consistency::{
    check_acknowledged_writes, check_serializable_reads, resolve_unknown_writes,
};
use cairn_check::models::{
    Compare, CompareOp, CompareTarget, EtcdInput, EtcdKv, EtcdOutput, EtcdState, KeyValue, Txn,
    TxnOp as CTxnOp, TxnOpResult,
};
use cairn_check::watch::{
    check_watches, EventKind, EventLog, Knowledge, WatchEvent, WatchRecord, WatchRequest,
    WatchResponse,
};
use cairn_check::{check, CheckOptions, History, Verdict, Violation};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Client ids of the lease deletes added from the log start here.
const SYNTHETIC_CLIENT: u64 = 1 << 40;
/// How many violations of one kind a report lists in full.
const SHOWN_PER_KIND: usize = 10;

/// What the checks found.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CheckSummary {
    /// Every violation, `kind: message`.
    pub violations: Vec<String>,
    /// Violations per kind.
    pub by_kind: BTreeMap<String, usize>,
    /// The linearizability verdict.
    pub linearizability: String,
    /// Why the history is not linearizable.
    pub explanation: Option<String>,
    /// Operations in the linearizability history (after resolving unknown writes).
    pub lin_ops: usize,
    /// Unknown writes before resolving.
    pub unknown_writes: usize,
    /// Unknown writes the log could not resolve.
    pub unresolved: usize,
    /// Revision reads checked against the log.
    pub revision_reads: usize,
    /// Lease deletes added from the log.
    pub lease_deletes: usize,
    /// The log's last revision.
    pub last_revision: i64,
    /// Missing `prev_kv`s excused by a compaction (filled in from the log).
    pub prev_kv_excused: usize,
    /// How long the linearizability check took.
    pub lin_elapsed: Duration,
    /// Whether the linearizability check ran out of time.
    pub timed_out: bool,
}

impl CheckSummary {
    /// Adds a violation found outside cairn-check (e.g. by the run itself).
    pub fn add(&mut self, kind: &str, message: impl Into<String>) {
        *self.by_kind.entry(kind.to_string()).or_default() += 1;
        self.violations.push(format!("{kind}: {}", message.into()));
    }

    fn add_all(&mut self, vs: Vec<Violation>) {
        for v in vs {
            self.add(v.kind.name(), v.message);
        }
    }

    /// The violations, at most [`SHOWN_PER_KIND`] per kind, for a failure message.
    pub fn shown(&self) -> String {
        let mut per: BTreeMap<&str, usize> = BTreeMap::new();
        let mut out = String::new();
        for v in &self.violations {
            let kind = v.split(':').next().unwrap_or("");
            let n = per.entry(kind).or_default();
            *n += 1;
            if *n <= SHOWN_PER_KIND {
                out.push_str("  ");
                out.push_str(v);
                out.push('\n');
            }
        }
        for (kind, n) in &self.by_kind {
            if *n > SHOWN_PER_KIND {
                out.push_str(&format!(
                    "  ... and {} more {kind} violations\n",
                    n - SHOWN_PER_KIND
                ));
            }
        }
        out
    }
}

fn key_value(kv: &Kv) -> KeyValue {
    KeyValue {
        value: kv.value.clone(),
        mod_revision: kv.mod_revision,
        create_revision: kv.create_revision,
        version: kv.version,
    }
}

fn compare(c: &Cmp) -> Compare {
    Compare {
        key: c.key.clone(),
        op: match c.op {
            CmpOp::Equal => CompareOp::Equal,
            CmpOp::NotEqual => CompareOp::NotEqual,
            CmpOp::Greater => CompareOp::Greater,
            CmpOp::Less => CompareOp::Less,
        },
        target: match &c.target {
            CmpTarget::Value(v) => CompareTarget::Value(v.clone()),
            CmpTarget::ModRevision(r) => CompareTarget::ModRevision(*r),
            CmpTarget::CreateRevision(r) => CompareTarget::CreateRevision(*r),
            CmpTarget::Version(v) => CompareTarget::Version(*v),
        },
    }
}

fn txn_op(op: &TxnOp) -> CTxnOp {
    match op {
        TxnOp::Get { key } => CTxnOp::Get { key: key.clone() },
        TxnOp::Put { key, value } => CTxnOp::Put {
            key: key.clone(),
            value: value.clone(),
        },
        TxnOp::Delete { key } => CTxnOp::Delete { key: key.clone() },
    }
}

/// The model's input for a keyspace request (`None` for lease requests).
pub fn input_of(req: &Request) -> Option<EtcdInput> {
    Some(match req {
        Request::Get { key, .. } => EtcdInput::Get { key: key.clone() },
        Request::Range {
            start, end, limit, ..
        } => EtcdInput::Range {
            start: start.clone(),
            end: end.clone(),
            limit: *limit,
        },
        Request::Put { key, value, .. } => EtcdInput::Put {
            key: key.clone(),
            value: value.clone(),
        },
        Request::Delete { key } => EtcdInput::Delete { key: key.clone() },
        Request::Txn {
            compare: c,
            success,
            failure,
        } => EtcdInput::Txn(Txn {
            compare: c.iter().map(compare).collect(),
            success: success.iter().map(txn_op).collect(),
            failure: failure.iter().map(txn_op).collect(),
        }),
        Request::LeaseGrant { .. }
        | Request::LeaseRevoke { .. }
        | Request::LeaseKeepAlive { .. } => return None,
    })
}

/// The model's output for a response (`None` for lease responses). A read at an explicit
/// revision is reported at that revision (its header carries the current one).
pub fn output_of(req: &Request, resp: &Response) -> Option<EtcdOutput> {
    let at = match req {
        Request::Get { revision, .. } | Request::Range { revision, .. } if *revision > 0 => {
            Some(*revision)
        }
        _ => None,
    };
    Some(match resp {
        Response::Get { kv, revision } => EtcdOutput::Get {
            kv: kv.as_ref().map(key_value),
            revision: at.unwrap_or(*revision),
        },
        Response::Range {
            kvs,
            count,
            more,
            revision,
        } => EtcdOutput::Range {
            kvs: kvs
                .iter()
                .map(|kv| (kv.key.clone(), key_value(kv)))
                .collect(),
            count: *count,
            more: *more,
            revision: at.unwrap_or(*revision),
        },
        Response::Put { revision } => EtcdOutput::Put {
            revision: *revision,
        },
        Response::Delete { deleted, revision } => EtcdOutput::Delete {
            deleted: *deleted,
            revision: *revision,
        },
        Response::Txn {
            succeeded,
            revision,
            results,
        } => EtcdOutput::Txn {
            succeeded: *succeeded,
            revision: *revision,
            results: results
                .iter()
                .map(|r| match r {
                    TxnResult::Get(kv) => TxnOpResult::Get(kv.as_ref().map(key_value)),
                    TxnResult::Put => TxnOpResult::Put,
                    TxnResult::Delete(n) => TxnOpResult::Delete { deleted: *n },
                })
                .collect(),
        },
        Response::LeaseGrant { .. }
        | Response::LeaseRevoke { .. }
        | Response::LeaseKeepAlive { .. } => return None,
    })
}

/// cairn-check's record of one watch stream.
pub fn watch_record(r: &WatchStreamRecord) -> WatchRecord {
    WatchRecord {
        watcher: r.watcher,
        member: r.member,
        request: WatchRequest {
            key: r.spec.key.clone(),
            end: r.spec.end.clone(),
            start_revision: r.spec.start_revision,
            prev_kv: r.spec.prev_kv,
            no_put: r.spec.no_put,
            no_delete: r.spec.no_delete,
        },
        created_at_revision: r.created_at_revision,
        responses: r
            .responses
            .iter()
            .map(|resp| WatchResponse {
                header_revision: resp.header_revision,
                compact_revision: resp.compact_revision,
                canceled: resp.canceled,
                events: resp
                    .events
                    .iter()
                    .map(|e| WatchEvent {
                        kind: match e.kind {
                            EventType::Put => EventKind::Put,
                            EventType::Delete => EventKind::Delete,
                        },
                        key: e.kv.key.clone(),
                        value: e.kv.value.clone(),
                        mod_revision: e.kv.mod_revision,
                        create_revision: e.kv.create_revision,
                        version: e.kv.version,
                        prev: e.prev_kv.as_ref().map(key_value),
                    })
                    .collect(),
            })
            .collect(),
        ended_by: r.ended_by.clone(),
    }
}

/// The history of keyspace operations for the linearizability and write checks (every
/// operation with a model input: known ones, and unknown writes), and the revision reads.
#[allow(clippy::type_complexity)]
pub fn histories(
    ops: &[OpRecord],
) -> (
    History<EtcdInput, EtcdOutput>,
    Vec<(EtcdInput, EtcdOutput)>,
    usize,
) {
    let mut history = History::new();
    let mut reads = Vec::new();
    let mut unknown = 0;
    for op in ops {
        let Some(input) = input_of(&op.request) else {
            continue;
        };
        match &op.outcome {
            Outcome::Ok(resp) => {
                let Some(output) = output_of(&op.request, resp) else {
                    continue;
                };
                if op.request.is_revision_read() {
                    reads.push((input, output));
                } else {
                    // Times come from one monotonic clock: a return never precedes its call.
                    let _ = history.push_returned(op.client, op.call, op.ret, input, output);
                }
            }
            Outcome::Unknown(_) => {
                if op.request.is_write() {
                    unknown += 1;
                    let _ = history.push_unknown(op.client, op.call, input);
                }
            }
            Outcome::Failed(_) => {}
        }
    }
    (history, reads, unknown)
}

/// Adds to `history` the deletes of `lease/` keys the log shows (lease revocations and
/// expiries), as operations that happened at some point; returns how many.
fn add_lease_deletes(history: &mut History<EtcdInput, EtcdOutput>, log: &EventLog) -> usize {
    let mut n = 0;
    for (revision, knowledge) in log.revisions() {
        let Knowledge::Complete(events) = knowledge else {
            continue;
        };
        if events.is_empty()
            || !events
                .iter()
                .all(|e| e.kind == EventKind::Delete && e.key.starts_with(LEASE_PREFIX))
        {
            continue;
        }
        let (input, output) = if events.len() == 1 {
            (
                EtcdInput::Delete {
                    key: events[0].key.clone(),
                },
                EtcdOutput::Delete {
                    deleted: 1,
                    revision,
                },
            )
        } else {
            (
                EtcdInput::Txn(Txn {
                    compare: Vec::new(),
                    success: events
                        .iter()
                        .map(|e| CTxnOp::Delete { key: e.key.clone() })
                        .collect(),
                    failure: Vec::new(),
                }),
                EtcdOutput::Txn {
                    succeeded: true,
                    revision,
                    results: events
                        .iter()
                        .map(|_| TxnOpResult::Delete { deleted: 1 })
                        .collect(),
                },
            )
        };
        let _ = history.push_returned(SYNTHETIC_CLIENT + n as u64, 0, u64::MAX, input, output);
        n += 1;
    }
    n
}

/// Fills in, from `log`, the `prev_kv`s that a compaction excuses (see the module doc);
/// returns how many. `records` are `watches` converted, in the same order.
fn excuse_compacted_prev_kvs(
    watches: &[WatchStreamRecord],
    records: &mut [WatchRecord],
    compactions: &[Compaction],
    log: &EventLog,
) -> usize {
    let mut n = 0;
    for (w, r) in watches.iter().zip(records.iter_mut()) {
        if !w.spec.prev_kv {
            continue;
        }
        for (resp, cresp) in w.responses.iter().zip(r.responses.iter_mut()) {
            for (e, ce) in resp.events.iter().zip(cresp.events.iter_mut()) {
                let rev = e.kv.mod_revision;
                if ce.prev.is_some()
                    || !compactions
                        .iter()
                        .any(|c| c.at < resp.at && c.revision >= rev)
                {
                    continue;
                }
                if let Some(Some(prev)) = log.value_before(&e.kv.key, rev) {
                    ce.prev = Some(prev);
                    n += 1;
                }
            }
        }
    }
    n
}

/// Runs every check on a run's records. `final_read` is the linearizable whole-keyspace
/// Range read at the end (revision, keys), if the run got one.
pub fn check_run(
    ops: &[OpRecord],
    watches: &[WatchStreamRecord],
    compactions: &[Compaction],
    final_read: Option<&(i64, Vec<Kv>)>,
    lin_timeout: Duration,
) -> CheckSummary {
    let mut s = CheckSummary::default();
    let mut records: Vec<WatchRecord> = watches.iter().map(watch_record).collect();
    let (log, log_violations) = EventLog::from_records(&records);
    s.prev_kv_excused = excuse_compacted_prev_kvs(watches, &mut records, compactions, &log);
    s.add_all(log_violations);
    s.last_revision = log.last_revision();
    let end = final_read.map_or(s.last_revision, |(r, _)| *r);
    for (from, to) in log.gaps() {
        if from <= end {
            s.add(
                "event log",
                format!("no watcher delivered revisions {from}..={to}"),
            );
        }
    }
    if log.last_revision() < end {
        s.add(
            "event log",
            format!(
                "the watchers delivered revisions up to {} only, the final read was at {end}",
                log.last_revision()
            ),
        );
    }
    s.add_all(check_watches(&records, &log));

    let (mut history, reads, unknown) = histories(ops);
    s.unknown_writes = unknown;
    s.lease_deletes = add_lease_deletes(&mut history, &log);
    let final_state = match final_read {
        Some((rev, kvs)) => {
            EtcdState::from_keys(*rev, kvs.iter().map(|kv| (kv.key.clone(), key_value(kv))))
        }
        None => {
            s.add("final state", "the run has no final read");
            EtcdState::default()
        }
    };
    s.add_all(check_acknowledged_writes(&history, &log, &final_state));
    // The store's revision never goes back: a write acknowledged at a revision beyond the
    // final one was lost (with what followed it).
    if let Some((final_rev, _)) = final_read {
        for op in ops {
            let rev = match &op.outcome {
                Outcome::Ok(Response::Put { revision })
                | Outcome::Ok(Response::Delete { revision, .. })
                | Outcome::Ok(Response::Txn { revision, .. })
                | Outcome::Ok(Response::LeaseRevoke { revision }) => *revision,
                _ => continue,
            };
            if rev > *final_rev {
                s.add(
                    "acknowledged write",
                    format!(
                        "client {} (member {}): {:?} was acknowledged at revision {rev}, beyond \
                         the final revision {final_rev}: lost",
                        op.client, op.member, op.request
                    ),
                );
            }
        }
    }
    s.revision_reads = reads.len();
    s.add_all(check_serializable_reads(&reads, &log));

    let resolved = resolve_unknown_writes(&history, &log);
    s.unresolved = resolved.ops().iter().filter(|o| o.is_unknown()).count();
    s.lin_ops = resolved.len();
    let t = Instant::now();
    let report = check(
        &EtcdKv::new(),
        &resolved,
        &CheckOptions::with_timeout(lin_timeout),
    );
    s.lin_elapsed = t.elapsed();
    s.linearizability = format!("{:?}", report.verdict);
    match report.verdict {
        Verdict::Linearizable => {}
        Verdict::NotLinearizable => {
            let why = report
                .failure
                .map(|f| f.explain(&resolved))
                .unwrap_or_default();
            s.add(
                "linearizability",
                format!(
                    "the history is not linearizable ({} operations)",
                    resolved.len()
                ),
            );
            s.explanation = Some(why);
        }
        Verdict::Unknown => {
            s.timed_out = true;
            s.add(
                "checker timeout",
                format!(
                    "the linearizability check did not finish within {lin_timeout:?} ({} \
                     operations, {} steps)",
                    resolved.len(),
                    report.steps
                ),
            );
        }
    }
    s
}
