//! Property tests: a history made by running a model sequentially and then widening every
//! operation's window at random (so operations overlap) is always linearizable, also with
//! unknown writes that did or did not take effect; the same history with one read made stale
//! is not.

use std::time::Duration;

use cairn_check::models::{
    Compare, CompareOp, CompareTarget, EtcdInput, EtcdKv, EtcdOutput, EtcdState, KvAppend, KvInput,
    KvOutput, KvState, Register, RegisterInput, RegisterOutput, Txn, TxnOp,
};
use cairn_check::{check, CheckOptions, History, Model, Verdict};
use proptest::prelude::*;

/// The random shape of one operation: what it does and how far its window extends.
#[derive(Debug, Clone)]
struct Shape {
    kind: u8,
    key: u8,
    unknown: bool,
    applied: bool,
    call_slack: u64,
    ret_slack: u64,
}

/// Windows are placed 100 apart; a slack under 50 on both sides overlaps nothing.
fn slack() -> impl Strategy<Value = u64> {
    prop_oneof![0u64..50, 0u64..400]
}

fn shapes() -> impl Strategy<Value = Vec<Shape>> {
    let shape = (0u8..8, 0u8..3, 0u8..10, any::<bool>(), slack(), slack()).prop_map(
        |(kind, key, unknown, applied, call_slack, ret_slack)| Shape {
            kind,
            key,
            unknown: unknown == 0,
            applied,
            call_slack,
            ret_slack,
        },
    );
    prop::collection::vec(shape, 1..40)
}

/// One operation of the sequential run, placed in time.
#[derive(Debug, Clone)]
struct Planned<I, O, S> {
    input: I,
    /// The output, `None` for an unknown outcome.
    output: Option<O>,
    key: u8,
    call: u64,
    ret: Option<u64>,
    /// The state just before it in the sequential run.
    before: S,
    /// A known operation that changed the state.
    known_write: bool,
    /// A known read.
    known_read: bool,
}

/// Runs `shapes` through `run` (which applies one operation to the state, or only plans it
/// when it is an unknown operation that never took effect) at linearization points 100 apart.
fn plan<I, O, S: Clone>(
    shapes: &[Shape],
    mut state: S,
    mut run: impl FnMut(&mut S, &Shape) -> (I, O, bool, bool),
) -> Vec<Planned<I, O, S>> {
    shapes
        .iter()
        .enumerate()
        .map(|(i, shape)| {
            let point = 1_000 + 100 * i as u64;
            let before = state.clone();
            let (input, output, is_write, is_read) = run(&mut state, shape);
            Planned {
                input,
                output: (!shape.unknown).then_some(output),
                key: shape.key,
                call: point - shape.call_slack,
                ret: (!shape.unknown).then_some(point + shape.ret_slack),
                before,
                known_write: is_write && !shape.unknown,
                known_read: is_read && !shape.unknown,
            }
        })
        .collect()
}

fn history<I: Clone, O: Clone, S>(planned: &[Planned<I, O, S>]) -> History<I, O> {
    let mut history = History::new();
    for (client, op) in planned.iter().enumerate() {
        let client = client as u64;
        match (&op.output, op.ret) {
            (Some(output), Some(ret)) => {
                history.push_returned(client, op.call, ret, op.input.clone(), output.clone())
            }
            _ => history.push_unknown(client, op.call, op.input.clone()),
        }
        .unwrap();
    }
    history
}

/// Whether `w` is a barrier on its key: every other operation on the key ends before it is
/// called (with a known outcome) or starts after it returns. Then, in every linearization,
/// what precedes `w` on the key is fixed, and the state before `w` never comes back.
fn is_barrier<I, O, S>(planned: &[Planned<I, O, S>], w: usize) -> bool {
    let (call, Some(ret)) = (planned[w].call, planned[w].ret) else {
        return false;
    };
    planned.iter().enumerate().all(|(i, op)| {
        i == w || op.key != planned[w].key || op.ret.is_some_and(|r| r < call) || op.call > ret
    })
}

/// Makes operation `w` a known write that is a barrier on its key (see [`is_barrier`]) and a
/// later operation `r` a known read of that key; returns `(shapes, w, r)`.
fn force_barrier(
    mut shapes: Vec<Shape>,
    w: prop::sample::Index,
    r: prop::sample::Index,
    write_kind: u8,
) -> (Vec<Shape>, usize, usize) {
    if shapes.len() < 2 {
        shapes.push(shapes[0].clone());
    }
    let n = shapes.len();
    let w = w.index(n - 1);
    let r = w + 1 + r.index(n - w - 1);
    let key = shapes[w].key;
    shapes[w] = Shape {
        kind: write_kind,
        unknown: false,
        call_slack: 0,
        ret_slack: 0,
        ..shapes[w].clone()
    };
    shapes[r] = Shape {
        kind: 0,
        key,
        unknown: false,
        ..shapes[r].clone()
    };
    for (i, shape) in shapes.iter_mut().enumerate() {
        if i == w || shape.key != key {
            continue;
        }
        // Windows are 100 apart: keep every other window on the key clear of w's point.
        let room = 100 * (i.abs_diff(w) as u64) - 1;
        if i < w {
            shape.unknown = false;
            shape.ret_slack = shape.ret_slack.min(room);
        } else {
            shape.call_slack = shape.call_slack.min(room);
        }
    }
    (shapes, w, r)
}

fn verdict<M: Model>(model: &M, history: &History<M::Input, M::Output>) -> Verdict {
    let options = CheckOptions::with_timeout(Duration::from_secs(10));
    check(model, history, &options).verdict
}

fn register_run(shapes: &[Shape]) -> Vec<Planned<RegisterInput, RegisterOutput, Option<i64>>> {
    // One register: every operation is on the same "key".
    let shapes: Vec<Shape> = shapes
        .iter()
        .map(|s| Shape {
            key: 0,
            ..s.clone()
        })
        .collect();
    let mut next = 0;
    plan(&shapes, None, |state: &mut Option<i64>, shape| {
        let apply = !shape.unknown || shape.applied;
        next += 1;
        match shape.kind {
            0..=2 => (
                RegisterInput::Read,
                RegisterOutput::Read(*state),
                false,
                true,
            ),
            3..=5 => {
                if apply {
                    *state = Some(next);
                }
                (
                    RegisterInput::Write(next),
                    RegisterOutput::Write,
                    true,
                    false,
                )
            }
            kind => {
                // Half of the compares match the current value.
                let from = match *state {
                    Some(v) if kind == 6 => v,
                    _ => -next,
                };
                let succeeded = *state == Some(from);
                if apply && succeeded {
                    *state = Some(next);
                }
                let input = RegisterInput::Cas { from, to: next };
                (input, RegisterOutput::Cas { succeeded }, succeeded, false)
            }
        }
    })
}

fn kv_run(shapes: &[Shape]) -> Vec<Planned<KvInput, KvOutput, KvState>> {
    let mut tokens = 0;
    plan(shapes, KvAppend.init(), |state: &mut KvState, shape| {
        let key = shape.key.to_string();
        tokens += 1;
        let token = format!("t{tokens} ");
        let (input, output, write) = match shape.kind {
            0..=2 => {
                let seen = state.get(&key).to_string();
                (KvInput::Get { key }, KvOutput::Get(seen), false)
            }
            3 => (KvInput::Put { key, value: token }, KvOutput::Put, true),
            _ => (
                KvInput::Append { key, value: token },
                KvOutput::Append,
                true,
            ),
        };
        if !shape.unknown || shape.applied {
            *state = KvAppend.step(state, &input, None).unwrap();
        }
        (input, output, write, !write)
    })
}

fn etcd_run(shapes: &[Shape]) -> Vec<Planned<EtcdInput, EtcdOutput, EtcdState>> {
    let mut values = 0;
    plan(
        shapes,
        EtcdState::default(),
        |state: &mut EtcdState, shape| {
            let key = ["a", "b", "c"][usize::from(shape.key)].to_string();
            values += 1;
            let value = format!("v{values}");
            let input = match shape.kind {
                0..=2 => EtcdInput::Get { key },
                3 | 4 => EtcdInput::Put { key, value },
                5 => EtcdInput::Delete { key },
                kind => {
                    // An optimistic update, from the current mod_revision or a stale one.
                    let seen = state.get(&key).map_or(0, |kv| kv.mod_revision);
                    let rev = if kind == 6 {
                        seen
                    } else {
                        seen.saturating_sub(1)
                    };
                    EtcdInput::Txn(Txn {
                        compare: vec![Compare {
                            key: key.clone(),
                            op: CompareOp::Equal,
                            target: CompareTarget::ModRevision(rev),
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
            let changed = next.revision() != state.revision();
            let is_read = matches!(input, EtcdInput::Get { .. });
            if !shape.unknown || shape.applied {
                *state = next;
            }
            (input, output, changed, is_read)
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn register_runs_are_linearizable(shapes in shapes()) {
        let planned = register_run(&shapes);
        prop_assert_eq!(verdict(&Register, &history(&planned)), Verdict::Linearizable);
    }

    #[test]
    fn register_stale_read_is_not(shapes in shapes(), w in any::<prop::sample::Index>(), r in any::<prop::sample::Index>()) {
        let shapes: Vec<Shape> = shapes.into_iter().map(|s| Shape { key: 0, ..s }).collect();
        let (shapes, w, r) = force_barrier(shapes, w, r, 3);
        let mut planned = register_run(&shapes);
        prop_assert!(is_barrier(&planned, w) && planned[r].known_read);
        planned[r].output = Some(RegisterOutput::Read(planned[w].before));
        prop_assert_eq!(verdict(&Register, &history(&planned)), Verdict::NotLinearizable);
    }

    #[test]
    fn kv_runs_are_linearizable(shapes in shapes()) {
        let planned = kv_run(&shapes);
        prop_assert_eq!(verdict(&KvAppend, &history(&planned)), Verdict::Linearizable);
    }

    #[test]
    fn kv_stale_read_is_not(shapes in shapes(), w in any::<prop::sample::Index>(), r in any::<prop::sample::Index>(), append in any::<bool>()) {
        let (shapes, w, r) = force_barrier(shapes, w, r, if append { 4 } else { 3 });
        let mut planned = kv_run(&shapes);
        prop_assert!(is_barrier(&planned, w) && planned[r].known_read);
        let key = planned[r].input.key().to_string();
        let stale = planned[w].before.get(&key).to_string();
        planned[r].output = Some(KvOutput::Get(stale));
        prop_assert_eq!(verdict(&KvAppend, &history(&planned)), Verdict::NotLinearizable);
    }

    #[test]
    fn etcd_runs_are_linearizable(shapes in shapes()) {
        let planned = etcd_run(&shapes);
        prop_assert_eq!(verdict(&EtcdKv::new(), &history(&planned)), Verdict::Linearizable);
    }

    #[test]
    fn etcd_stale_read_is_not(shapes in shapes(), w in any::<prop::sample::Index>(), r in any::<prop::sample::Index>()) {
        let (shapes, w, r) = force_barrier(shapes, w, r, 3);
        let mut planned = etcd_run(&shapes);
        prop_assert!(planned[w].known_write && planned[r].known_read);
        let EtcdInput::Get { key } = &planned[r].input else { unreachable!() };
        let before = &planned[w].before;
        planned[r].output = Some(EtcdOutput::Get {
            kv: before.get(key).cloned(),
            revision: before.revision(),
        });
        prop_assert_eq!(verdict(&EtcdKv::new(), &history(&planned)), Verdict::NotLinearizable);
    }
}
