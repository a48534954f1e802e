//! What operations write: the (key, value) pairs and keys they may write or delete, and the
//! revision a response reports.

use std::collections::{HashMap, HashSet};

use crate::history::History;
use crate::models::{EtcdInput, EtcdOutput, Txn, TxnOp};

/// The revision in a response's header; `None` for a refused lease request (an error has no
/// header).
pub(super) fn output_revision(output: &EtcdOutput) -> Option<i64> {
    match output {
        EtcdOutput::Get { revision, .. }
        | EtcdOutput::Put { revision }
        | EtcdOutput::Delete { revision, .. }
        | EtcdOutput::Txn { revision, .. }
        | EtcdOutput::Range { revision, .. }
        | EtcdOutput::LeaseGrant { revision }
        | EtcdOutput::LeaseRevoke { revision } => Some(*revision),
        EtcdOutput::LeaseError(_) => None,
    }
}

/// The operations of the branch a transaction ran.
pub(super) fn branch(txn: &Txn, succeeded: bool) -> &[TxnOp] {
    if succeeded {
        &txn.success
    } else {
        &txn.failure
    }
}

/// The (key, value) pairs `input` may put, once per branch they appear in.
pub(super) fn puts(input: &EtcdInput) -> Vec<(&str, &str)> {
    match input {
        EtcdInput::Put { key, value } | EtcdInput::PutWithLease { key, value, .. } => {
            vec![(key, value)]
        }
        EtcdInput::Txn(txn) => txn
            .success
            .iter()
            .chain(&txn.failure)
            .filter_map(|op| match op {
                TxnOp::Put { key, value } => Some((key.as_str(), value.as_str())),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// The keys `input` may delete by name (a lease revoke's keys are in [`revoked_keys`]).
pub(super) fn deletes(input: &EtcdInput) -> Vec<&str> {
    match input {
        EtcdInput::Delete { key } => vec![key],
        EtcdInput::Txn(txn) => txn
            .success
            .iter()
            .chain(&txn.failure)
            .filter_map(|op| match op {
                TxnOp::Delete { key } => Some(key.as_str()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// (key, value) -> how many operations (and branches) of `history` may put it.
pub(super) fn writer_counts(
    history: &History<EtcdInput, EtcdOutput>,
) -> HashMap<(&str, &str), usize> {
    let mut counts = HashMap::new();
    for op in history.ops() {
        for pair in puts(&op.input) {
            *counts.entry(pair).or_default() += 1;
        }
    }
    counts
}

/// The keys a lease revoke of `history` may delete: those some operation puts with a lease
/// that some operation revokes (any outcome).
pub(super) fn revoked_keys(history: &History<EtcdInput, EtcdOutput>) -> HashSet<&str> {
    let revoked: HashSet<i64> = history
        .ops()
        .iter()
        .filter_map(|op| match op.input {
            EtcdInput::LeaseRevoke { lease } => Some(lease),
            _ => None,
        })
        .collect();
    history
        .ops()
        .iter()
        .filter_map(|op| match &op.input {
            EtcdInput::PutWithLease { key, lease, .. } if revoked.contains(lease) => {
                Some(key.as_str())
            }
            _ => None,
        })
        .collect()
}
