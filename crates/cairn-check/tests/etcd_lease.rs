//! Leases in the revision-aware etcd model: grants, puts with a lease, revokes, and histories
//! with them.

use cairn_check::models::{
    EtcdInput, EtcdKv, EtcdOutput, EtcdState, KeyValue, LeaseError, Txn, TxnOp,
};
use cairn_check::{check, CheckOptions, History, Model, Outcome, Verdict};

type H = History<EtcdInput, EtcdOutput>;

fn kv(value: &str, mod_revision: i64, create_revision: i64, version: i64) -> KeyValue {
    KeyValue {
        value: value.into(),
        mod_revision,
        create_revision,
        version,
    }
}

fn grant(lease: i64) -> EtcdInput {
    EtcdInput::LeaseGrant { lease }
}

fn revoke(lease: i64) -> EtcdInput {
    EtcdInput::LeaseRevoke { lease }
}

fn lput(key: &str, value: &str, lease: i64) -> EtcdInput {
    EtcdInput::PutWithLease {
        key: key.into(),
        value: value.into(),
        lease,
    }
}

fn put(key: &str, value: &str) -> EtcdInput {
    EtcdInput::Put {
        key: key.into(),
        value: value.into(),
    }
}

fn get(key: &str) -> EtcdInput {
    EtcdInput::Get { key: key.into() }
}

fn granted(revision: i64) -> EtcdOutput {
    EtcdOutput::LeaseGrant { revision }
}

fn revoked(revision: i64) -> EtcdOutput {
    EtcdOutput::LeaseRevoke { revision }
}

fn put_ok(revision: i64) -> EtcdOutput {
    EtcdOutput::Put { revision }
}

fn got(kv: Option<KeyValue>, revision: i64) -> EtcdOutput {
    EtcdOutput::Get { kv, revision }
}

const NOT_FOUND: EtcdOutput = EtcdOutput::LeaseError(LeaseError::NotFound);
const EXISTS: EtcdOutput = EtcdOutput::LeaseError(LeaseError::AlreadyExists);

/// Applies `inputs` in turn from a fresh store: the final state and every output.
fn run(inputs: &[EtcdInput]) -> (EtcdState, Vec<EtcdOutput>) {
    let mut state = EtcdState::default();
    let mut outputs = Vec::new();
    for input in inputs {
        let (next, output) = state.apply(input);
        state = next;
        outputs.push(output);
    }
    (state, outputs)
}

fn ok(h: &mut H, client: u64, call: u64, ret: u64, input: EtcdInput, output: EtcdOutput) {
    h.push_returned(client, call, ret, input, output).unwrap();
}

fn verdict(h: &H) -> Verdict {
    let report = check(&EtcdKv::new(), h, &CheckOptions::default());
    if let Some(failure) = &report.failure {
        println!("{}", failure.explain(h));
    }
    report.verdict
}

#[test]
fn a_grant_creates_the_lease_at_no_revision_and_a_second_grant_fails() {
    let (state, outputs) = run(&[grant(7), grant(7), grant(8)]);
    assert_eq!(outputs, [granted(1), EXISTS, granted(1)]);
    assert_eq!(state.revision(), 1);
    assert!(state.has_lease(7) && state.has_lease(8) && !state.has_lease(9));
    assert_eq!(state.leases().collect::<Vec<_>>(), [7, 8]);
}

#[test]
fn a_put_with_a_lease_attaches_the_key() {
    let (state, outputs) = run(&[grant(7), lput("a", "1", 7), lput("a", "2", 7)]);
    assert_eq!(outputs, [granted(1), put_ok(2), put_ok(3)]);
    assert_eq!(state.get("a"), Some(&kv("2", 3, 2, 2)));
    assert_eq!(state.lease_of("a"), Some(7));
    assert_eq!(state.keys_of_lease(7).collect::<Vec<_>>(), ["a"]);
}

#[test]
fn a_put_with_a_missing_lease_fails_and_writes_nothing() {
    let (state, outputs) = run(&[lput("a", "1", 7), grant(7), revoke(7), lput("a", "2", 7)]);
    assert_eq!(outputs, [NOT_FOUND, granted(1), revoked(1), NOT_FOUND]);
    assert_eq!(state.revision(), 1);
    assert_eq!(state.get("a"), None);
    // Lease 0 is no lease: a plain put.
    let (state, outputs) = run(&[lput("a", "1", 0)]);
    assert_eq!(outputs, [put_ok(2)]);
    assert_eq!(state.lease_of("a"), None);
}

#[test]
fn a_revoke_deletes_every_attached_key_at_one_revision() {
    let (state, outputs) = run(&[
        grant(7),
        grant(8),
        lput("a", "1", 7),
        lput("b", "2", 7),
        lput("c", "3", 8),
        put("d", "4"),
        revoke(7),
    ]);
    assert_eq!(outputs[6], revoked(6));
    assert_eq!(state.revision(), 6);
    let keys: Vec<&str> = state.keys().map(|(k, _)| k).collect();
    assert_eq!(keys, ["c", "d"]);
    assert!(!state.has_lease(7) && state.has_lease(8));
    assert_eq!(state.lease_of("c"), Some(8));
    // A lease without keys: no revision.
    let (state, outputs) = run(&[grant(7), put("a", "1"), revoke(7)]);
    assert_eq!(outputs, [granted(1), put_ok(2), revoked(2)]);
    assert!(!state.has_lease(7));
}

#[test]
fn a_revoke_of_a_missing_lease_fails() {
    let (state, outputs) = run(&[revoke(7), grant(7), revoke(7), revoke(7)]);
    assert_eq!(outputs, [NOT_FOUND, granted(1), revoked(1), NOT_FOUND]);
    assert_eq!(state.leases().count(), 0);
}

#[test]
fn other_writes_detach_the_key_from_its_lease() {
    let txn_put = EtcdInput::Txn(Txn {
        compare: Vec::new(),
        success: vec![TxnOp::Put {
            key: "b".into(),
            value: "4".into(),
        }],
        failure: Vec::new(),
    });
    let (state, outputs) = run(&[
        grant(7),
        lput("a", "1", 7),
        lput("b", "2", 7),
        lput("c", "3", 7),
        put("a", "5"),                         // 5: a detached by a plain put
        txn_put,                               // 6: b detached by a put in a transaction
        EtcdInput::Delete { key: "c".into() }, // 7: c deleted
        lput("c", "6", 0),                     // 8: c back, with lease 0: no lease
        revoke(7),                             // nothing left attached
    ]);
    assert_eq!(outputs[8], revoked(8));
    assert_eq!(state.keys().count(), 3);
    assert_eq!(state.keys_of_lease(7).count(), 0);
    // And another lease takes the key over.
    let (state, outputs) = run(&[
        grant(7),
        grant(8),
        lput("a", "1", 7),
        lput("a", "2", 8),
        revoke(7),
    ]);
    assert_eq!(outputs[4], revoked(3));
    assert_eq!(state.get("a"), Some(&kv("2", 3, 2, 2)));
    assert_eq!(state.lease_of("a"), Some(8));
}

#[test]
fn a_sequential_lease_history_is_linearizable_and_mismatches_are_not() {
    let mut h = H::new();
    ok(&mut h, 0, 0, 1, grant(7), granted(1));
    ok(&mut h, 0, 2, 3, lput("a", "1", 7), put_ok(2));
    ok(&mut h, 0, 4, 5, grant(7), EXISTS);
    ok(&mut h, 0, 6, 7, lput("b", "2", 8), NOT_FOUND);
    ok(&mut h, 0, 8, 9, revoke(7), revoked(3));
    ok(&mut h, 0, 10, 11, get("a"), got(None, 3));
    ok(&mut h, 0, 12, 13, revoke(7), NOT_FOUND);
    assert_eq!(verdict(&h), Verdict::Linearizable);

    // A grant must report the current revision and is refused only for an existing lease; a
    // put with, or a revoke of, a missing lease must be refused; only lease requests are.
    for (input, output) in [
        (grant(9), granted(4)),
        (grant(9), EXISTS),
        (lput("c", "3", 9), put_ok(4)),
        (revoke(8), revoked(3)),
        (get("a"), NOT_FOUND),
    ] {
        let mut bad = h.clone();
        ok(&mut bad, 0, 14, 15, input.clone(), output.clone());
        assert_eq!(
            verdict(&bad),
            Verdict::NotLinearizable,
            "{input:?} -> {output:?}"
        );
    }
}

#[test]
fn concurrent_grants_of_one_id_one_wins() {
    let mut h = H::new();
    ok(&mut h, 0, 0, 10, grant(7), EXISTS);
    ok(&mut h, 1, 1, 11, grant(7), granted(1));
    ok(&mut h, 2, 12, 13, lput("a", "1", 7), put_ok(2));
    assert_eq!(verdict(&h), Verdict::Linearizable);

    let mut both = H::new();
    ok(&mut both, 0, 0, 10, grant(7), granted(1));
    ok(&mut both, 1, 1, 11, grant(7), granted(1));
    assert_eq!(verdict(&both), Verdict::NotLinearizable);
}

#[test]
fn an_unknown_revoke_is_resolved_by_a_later_read() {
    let mut h = H::new();
    ok(&mut h, 0, 0, 1, grant(7), granted(1));
    ok(&mut h, 0, 2, 3, lput("a", "1", 7), put_ok(2));
    ok(&mut h, 0, 4, 5, lput("b", "2", 7), put_ok(3));
    h.push_unknown(1, 6, revoke(7)).unwrap();
    // Both keys gone at one revision: only the revoke explains it.
    ok(&mut h, 0, 20, 21, get("a"), got(None, 4));
    ok(&mut h, 0, 22, 23, get("b"), got(None, 4));
    assert_eq!(verdict(&h), Verdict::Linearizable);

    // Without the revoke, nothing deletes them.
    let mut without = H::new();
    for op in h.ops().iter().filter(|op| !op.is_unknown()) {
        let output = op.output().unwrap().clone();
        let ret = match op.outcome {
            Outcome::Returned { at, .. } => at,
            Outcome::Unknown => unreachable!(),
        };
        ok(
            &mut without,
            op.client,
            op.call,
            ret,
            op.input.clone(),
            output,
        );
    }
    assert_eq!(verdict(&without), Verdict::NotLinearizable);

    // An unknown revoke may also never have happened.
    let mut never = H::new();
    ok(&mut never, 0, 0, 1, grant(7), granted(1));
    ok(&mut never, 0, 2, 3, lput("a", "1", 7), put_ok(2));
    never.push_unknown(1, 4, revoke(7)).unwrap();
    ok(
        &mut never,
        0,
        20,
        21,
        get("a"),
        got(Some(kv("1", 2, 2, 1)), 2),
    );
    assert_eq!(verdict(&never), Verdict::Linearizable);
}

#[test]
fn a_read_after_a_revoke_that_still_sees_an_attached_key_is_caught() {
    let mut h = H::new();
    ok(&mut h, 0, 0, 1, grant(7), granted(1));
    ok(&mut h, 0, 2, 3, lput("a", "1", 7), put_ok(2));
    ok(&mut h, 0, 4, 5, put("b", "2"), put_ok(3));
    ok(&mut h, 0, 6, 7, revoke(7), revoked(4));
    ok(&mut h, 1, 8, 9, get("a"), got(Some(kv("1", 2, 2, 1)), 4));
    assert_eq!(verdict(&h), Verdict::NotLinearizable);

    // A key detached before the revoke survives it.
    let mut detached = H::new();
    ok(&mut detached, 0, 0, 1, grant(7), granted(1));
    ok(&mut detached, 0, 2, 3, lput("a", "1", 7), put_ok(2));
    ok(&mut detached, 0, 4, 5, put("a", "2"), put_ok(3));
    ok(&mut detached, 0, 6, 7, revoke(7), revoked(3));
    ok(
        &mut detached,
        1,
        8,
        9,
        get("a"),
        got(Some(kv("2", 3, 2, 2)), 3),
    );
    assert_eq!(verdict(&detached), Verdict::Linearizable);
}

#[test]
fn reads_prove_unknown_puts_with_a_lease() {
    let mut h = H::new();
    ok(&mut h, 0, 0, 1, grant(7), granted(1));
    h.push_unknown(1, 2, lput("a", "1", 7)).unwrap();
    h.push_unknown(2, 3, put("b", "2")).unwrap();
    ok(&mut h, 0, 10, 11, get("a"), got(Some(kv("1", 3, 3, 1)), 3));
    let resolved = EtcdKv::new().resolve_unknown(&h);
    assert_eq!(resolved, [(1, put_ok(3))]);
    assert_eq!(verdict(&h), Verdict::Linearizable);
}
