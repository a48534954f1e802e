//! [`check_serializable_reads`]: a serializable read may be stale, but must show the keyspace
//! exactly as it was at its revision.

use std::collections::HashMap;

use super::writes::output_revision;
use crate::models::{EtcdInput, EtcdOutput, EtcdState};
use crate::violation::{Violation, ViolationKind};
use crate::watch::EventLog;

/// Checks serializable reads (`Get`s and `Range`s with the response each got): each must equal
/// what the same read gives on [`EventLog::state_at`] its header revision. Reads at a revision
/// the log does not know completely, and other inputs, are skipped.
pub fn check_serializable_reads(
    reads: &[(EtcdInput, EtcdOutput)],
    log: &EventLog,
) -> Vec<Violation> {
    let mut states: HashMap<i64, Option<EtcdState>> = HashMap::new();
    let mut violations = Vec::new();
    for (index, (input, output)) in reads.iter().enumerate() {
        if !matches!(input, EtcdInput::Get { .. } | EtcdInput::Range { .. }) {
            continue;
        }
        let Some(revision) = output_revision(output) else {
            continue;
        };
        let state = states
            .entry(revision)
            .or_insert_with(|| log.state_at(revision));
        let Some(state) = state else {
            continue;
        };
        let (_, expected) = state.apply(input);
        if expected != *output {
            violations.push(Violation::new(
                ViolationKind::SerializableRead,
                format!(
                    "read #{index} {input:?} at revision {revision} returned {output:?}, but the \
                     keyspace at revision {revision} gives {expected:?}"
                ),
            ));
        }
    }
    violations
}
