//! The etcd model on larger generated histories: 2,000 operations over 20 keys, up to about
//! eight in flight at once, 5% of the writes unknown (half of them took effect), checked
//! within the per-history bound; and a stale read in the middle of 1,000 such operations
//! caught (proving a failure means trying every alternative before it, so it costs more).

use std::time::Duration;

use cairn_check::models::{
    Compare, CompareOp, CompareTarget, EtcdInput, EtcdKv, EtcdOutput, EtcdState, Txn, TxnOp,
};
use cairn_check::{check, CheckOptions, History, Outcome, Verdict};

const BOUND: Duration = Duration::from_secs(10);

/// A small deterministic generator (xorshift64).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Runs random requests sequentially, 100 time units apart, then widens each window by up to
/// `width` neighbours on each side.
fn generate(
    ops: u64,
    keys: u64,
    width: u64,
    unknown_percent: u64,
) -> History<EtcdInput, EtcdOutput> {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let mut state = EtcdState::default();
    let mut history = History::new();
    for i in 0..ops {
        let point = 100 * (i + width + 1);
        let key = format!("k{}", rng.below(keys));
        let value = format!("v{i}");
        let input = match rng.below(10) {
            0..=4 => EtcdInput::Get { key },
            5..=7 => EtcdInput::Put { key, value },
            8 => EtcdInput::Delete { key },
            _ => {
                let seen = state.get(&key).map_or(0, |kv| kv.mod_revision);
                EtcdInput::Txn(Txn {
                    compare: vec![Compare {
                        key: key.clone(),
                        op: CompareOp::Equal,
                        target: CompareTarget::ModRevision(seen),
                    }],
                    success: vec![TxnOp::Put {
                        key: key.clone(),
                        value,
                    }],
                    failure: vec![TxnOp::Get { key }],
                })
            }
        };
        let (next, output) = state.apply(&input);
        let call = point - rng.below(width * 100);
        let write = !matches!(input, EtcdInput::Get { .. });
        if write && rng.below(100) < unknown_percent {
            if rng.below(2) == 0 {
                state = next;
            }
            history.push_unknown(i, call, input).unwrap();
        } else {
            state = next;
            let ret = point + rng.below(width * 100);
            history.push_returned(i, call, ret, input, output).unwrap();
        }
    }
    history
}

#[test]
fn generated_history_is_linearizable() {
    let history = generate(2_000, 20, 4, 5);
    let report = check(&EtcdKv::new(), &history, &CheckOptions::with_timeout(BOUND));
    println!("{} steps in {:?}", report.steps, report.elapsed);
    assert_eq!(report.verdict, Verdict::Linearizable);
}

/// The revision a write created, if it is known and created one.
fn created(output: &EtcdOutput) -> Option<i64> {
    match *output {
        EtcdOutput::Put { revision } => Some(revision),
        EtcdOutput::Delete { deleted, revision } if deleted > 0 => Some(revision),
        EtcdOutput::Txn { revision, .. } => Some(revision),
        _ => None,
    }
}

#[test]
fn stale_read_in_generated_history_is_caught() {
    let mut ops = generate(1_000, 20, 4, 5).into_ops();
    // A read from the middle reports a revision older than one a write created before the
    // read was called: impossible whatever the overlaps and the unknown writes.
    let read = (500..ops.len())
        .find(|&i| matches!(ops[i].output(), Some(EtcdOutput::Get { .. })))
        .unwrap();
    let newest_before = ops
        .iter()
        .filter(|op| op.return_time().is_some_and(|ret| ret < ops[read].call))
        .filter_map(|op| op.output().and_then(created))
        .max()
        .unwrap();
    if let Outcome::Returned {
        output: EtcdOutput::Get { revision, .. },
        ..
    } = &mut ops[read].outcome
    {
        *revision = newest_before - 1;
    }
    let mut history = History::new();
    for op in ops {
        history.push(op).unwrap();
    }
    let report = check(&EtcdKv::new(), &history, &CheckOptions::with_timeout(BOUND));
    println!("{} steps in {:?}", report.steps, report.elapsed);
    assert_eq!(report.verdict, Verdict::NotLinearizable);
}
