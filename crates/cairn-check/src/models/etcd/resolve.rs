//! Which unknown writes a history proves took effect: a put (with a lease or not) of a value
//! that no other operation writes under that key, seen by a read, happened at the
//! `mod_revision` the read saw. Unknown lease grants and revokes are never proven here.
//!
//! Without this, every unknown write is a candidate for every gap in the revisions, and the
//! search only finds out it picked the wrong one when a later read disagrees.

use std::collections::HashMap;

use super::{EtcdInput, EtcdOutput, TxnOp, TxnOpResult};
use crate::history::History;

/// `(unknown operation, the output it must have had)` for every unknown write a read proves.
pub(super) fn resolve_unknown(
    history: &History<EtcdInput, EtcdOutput>,
) -> Vec<(usize, EtcdOutput)> {
    // (key, value) -> the operations that may write it.
    let mut writers: HashMap<(&str, &str), Vec<usize>> = HashMap::new();
    for (i, op) in history.ops().iter().enumerate() {
        for (key, value) in writes(&op.input) {
            writers.entry((key, value)).or_default().push(i);
        }
    }
    // (key, value) -> the mod_revisions reads saw it with.
    let mut seen: HashMap<(&str, &str), Vec<i64>> = HashMap::new();
    for op in history.ops() {
        if let Some(output) = op.output() {
            for (key, value, mod_revision) in reads(&op.input, output) {
                seen.entry((key, value)).or_default().push(mod_revision);
            }
        }
    }
    let mut resolved = Vec::new();
    for (i, op) in history.ops().iter().enumerate() {
        if !op.is_unknown() {
            continue;
        }
        let output = match &op.input {
            EtcdInput::Put { key, value } | EtcdInput::PutWithLease { key, value, .. } => {
                proven_revision(&writers, &seen, i, key, value)
                    .map(|revision| EtcdOutput::Put { revision })
            }
            EtcdInput::Txn(txn) => {
                let only_puts = !txn.success.is_empty()
                    && txn.success.iter().all(|op| matches!(op, TxnOp::Put { .. }));
                let revision = txn.success.iter().find_map(|op| match op {
                    TxnOp::Put { key, value } => proven_revision(&writers, &seen, i, key, value),
                    _ => None,
                });
                match revision {
                    Some(revision) if only_puts => Some(EtcdOutput::Txn {
                        succeeded: true,
                        revision,
                        results: vec![TxnOpResult::Put; txn.success.len()],
                    }),
                    _ => None,
                }
            }
            _ => None,
        };
        if let Some(output) = output {
            resolved.push((i, output));
        }
    }
    resolved
}

/// The revision at which operation `op` must have written `value` under `key`: it is the only
/// operation (and branch) that writes it, and every read that saw it agrees on its revision.
fn proven_revision(
    writers: &HashMap<(&str, &str), Vec<usize>>,
    seen: &HashMap<(&str, &str), Vec<i64>>,
    op: usize,
    key: &str,
    value: &str,
) -> Option<i64> {
    if writers.get(&(key, value))?.as_slice() != [op] {
        return None;
    }
    let revisions = seen.get(&(key, value))?;
    let first = *revisions.first()?;
    revisions.iter().all(|r| *r == first).then_some(first)
}

/// The (key, value) pairs an operation may write, once per branch it appears in.
fn writes(input: &EtcdInput) -> Vec<(&str, &str)> {
    fn put(op: &TxnOp) -> Option<(&str, &str)> {
        match op {
            TxnOp::Put { key, value } => Some((key.as_str(), value.as_str())),
            _ => None,
        }
    }
    match input {
        EtcdInput::Put { key, value } | EtcdInput::PutWithLease { key, value, .. } => {
            vec![(key.as_str(), value.as_str())]
        }
        EtcdInput::Txn(txn) => txn
            .success
            .iter()
            .chain(&txn.failure)
            .filter_map(put)
            .collect(),
        EtcdInput::Get { .. }
        | EtcdInput::Range { .. }
        | EtcdInput::Delete { .. }
        | EtcdInput::LeaseGrant { .. }
        | EtcdInput::LeaseRevoke { .. } => Vec::new(),
    }
}

/// The (key, value, mod_revision) triples a known operation read.
fn reads<'a>(input: &'a EtcdInput, output: &'a EtcdOutput) -> Vec<(&'a str, &'a str, i64)> {
    match (input, output) {
        (EtcdInput::Get { key }, EtcdOutput::Get { kv: Some(kv), .. }) => {
            vec![(key.as_str(), kv.value.as_str(), kv.mod_revision)]
        }
        (EtcdInput::Range { .. }, EtcdOutput::Range { kvs, .. }) => kvs
            .iter()
            .map(|(key, kv)| (key.as_str(), kv.value.as_str(), kv.mod_revision))
            .collect(),
        (
            EtcdInput::Txn(txn),
            EtcdOutput::Txn {
                succeeded, results, ..
            },
        ) => {
            let ops = if *succeeded {
                &txn.success
            } else {
                &txn.failure
            };
            ops.iter()
                .zip(results)
                .filter_map(|(op, result)| match (op, result) {
                    (TxnOp::Get { key }, TxnOpResult::Get(Some(kv))) => {
                        Some((key.as_str(), kv.value.as_str(), kv.mod_revision))
                    }
                    _ => None,
                })
                .collect()
        }
        _ => Vec::new(),
    }
}
