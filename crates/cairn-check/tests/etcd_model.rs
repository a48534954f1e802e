//! The revision-aware etcd model on small hand-made histories.

use cairn_check::models::{
    Compare, CompareOp, CompareTarget, EtcdInput, EtcdKv, EtcdOutput, EtcdState, KeyValue, Txn,
    TxnOp, TxnOpResult,
};
use cairn_check::{check, CheckOptions, History, Verdict};

type H = History<EtcdInput, EtcdOutput>;

fn kv(value: &str, mod_revision: i64, create_revision: i64, version: i64) -> KeyValue {
    KeyValue {
        value: value.into(),
        mod_revision,
        create_revision,
        version,
    }
}

fn get(key: &str) -> EtcdInput {
    EtcdInput::Get { key: key.into() }
}

fn put(key: &str, value: &str) -> EtcdInput {
    EtcdInput::Put {
        key: key.into(),
        value: value.into(),
    }
}

fn del(key: &str) -> EtcdInput {
    EtcdInput::Delete { key: key.into() }
}

fn got(kv: Option<KeyValue>, revision: i64) -> EtcdOutput {
    EtcdOutput::Get { kv, revision }
}

fn put_ok(revision: i64) -> EtcdOutput {
    EtcdOutput::Put { revision }
}

/// `if mod_revision(key) == rev { put key value } else { get key }`: an optimistic update.
fn cas(key: &str, rev: i64, value: &str) -> EtcdInput {
    EtcdInput::Txn(Txn {
        compare: vec![Compare {
            key: key.into(),
            op: CompareOp::Equal,
            target: CompareTarget::ModRevision(rev),
        }],
        success: vec![TxnOp::Put {
            key: key.into(),
            value: value.into(),
        }],
        failure: vec![TxnOp::Get { key: key.into() }],
    })
}

fn ok(h: &mut H, client: u64, call: u64, ret: u64, input: EtcdInput, output: EtcdOutput) {
    h.push_returned(client, call, ret, input, output).unwrap();
}

fn unknown(h: &mut H, client: u64, call: u64, input: EtcdInput) {
    h.push_unknown(client, call, input).unwrap();
}

fn verdict(h: &H) -> Verdict {
    let report = check(&EtcdKv::new(), h, &CheckOptions::default());
    if let Some(failure) = &report.failure {
        println!("{}", failure.explain(h));
    }
    report.verdict
}

#[test]
fn sequential_puts_gets_and_deletes() {
    let mut h = H::new();
    ok(&mut h, 0, 0, 1, put("a", "1"), put_ok(2));
    ok(&mut h, 0, 2, 3, get("a"), got(Some(kv("1", 2, 2, 1)), 2));
    ok(&mut h, 0, 4, 5, put("a", "2"), put_ok(3));
    ok(&mut h, 0, 6, 7, get("a"), got(Some(kv("2", 3, 2, 2)), 3));
    let deleted = |deleted, revision| EtcdOutput::Delete { deleted, revision };
    ok(&mut h, 0, 8, 9, del("a"), deleted(1, 4));
    ok(&mut h, 0, 10, 11, get("a"), got(None, 4));
    // Deleting a missing key changes nothing, not even the revision.
    ok(&mut h, 0, 12, 13, del("a"), deleted(0, 4));
    ok(&mut h, 0, 14, 15, put("a", "3"), put_ok(5));
    ok(&mut h, 0, 16, 17, get("a"), got(Some(kv("3", 5, 5, 1)), 5));
    assert_eq!(verdict(&h), Verdict::Linearizable);

    let mut bumped = H::new();
    ok(&mut bumped, 0, 0, 1, del("a"), deleted(0, 2));
    assert_eq!(verdict(&bumped), Verdict::NotLinearizable);
}

#[test]
fn stale_read_is_caught() {
    let mut h = H::new();
    ok(&mut h, 0, 0, 1, put("a", "1"), put_ok(2));
    ok(&mut h, 1, 2, 3, get("a"), got(None, 1));
    assert_eq!(verdict(&h), Verdict::NotLinearizable);
    // The put cannot come first without stranding the read, nor after it.
    let failure = check(&EtcdKv::new(), &h, &CheckOptions::default())
        .failure
        .unwrap();
    assert_eq!(
        (failure.unplaceable, failure.blocked_by),
        (Some(0), Some(1))
    );

    // The right value at an old revision is stale too.
    let mut h = H::new();
    ok(&mut h, 0, 0, 1, put("a", "1"), put_ok(2));
    ok(&mut h, 0, 2, 3, put("b", "1"), put_ok(3));
    ok(&mut h, 1, 4, 5, get("a"), got(Some(kv("1", 2, 2, 1)), 2));
    assert_eq!(verdict(&h), Verdict::NotLinearizable);
}

#[test]
fn concurrent_reads_may_see_either_side_but_not_go_back() {
    let mut h = H::new();
    ok(&mut h, 0, 0, 10, put("a", "1"), put_ok(2));
    ok(&mut h, 1, 1, 2, get("a"), got(None, 1));
    ok(&mut h, 1, 3, 4, get("a"), got(Some(kv("1", 2, 2, 1)), 2));
    assert_eq!(verdict(&h), Verdict::Linearizable);
    ok(&mut h, 2, 5, 6, get("a"), got(None, 1));
    assert_eq!(verdict(&h), Verdict::NotLinearizable);
}

#[test]
fn lost_write_is_caught() {
    let mut h = H::new();
    ok(&mut h, 0, 0, 1, put("a", "1"), put_ok(2));
    ok(&mut h, 1, 2, 3, put("b", "1"), put_ok(3));
    ok(&mut h, 2, 4, 5, get("a"), got(None, 3));
    assert_eq!(verdict(&h), Verdict::NotLinearizable);
}

#[test]
fn unknown_write_that_happened() {
    let mut h = H::new();
    unknown(&mut h, 0, 0, put("a", "1"));
    ok(&mut h, 1, 1, 2, get("a"), got(Some(kv("1", 2, 2, 1)), 2));
    assert_eq!(verdict(&h), Verdict::Linearizable);
}

#[test]
fn unknown_write_that_did_not_happen() {
    let mut h = H::new();
    unknown(&mut h, 0, 0, put("a", "1"));
    ok(&mut h, 1, 1, 2, get("a"), got(None, 1));
    ok(&mut h, 1, 3, 4, put("b", "1"), put_ok(2));
    ok(&mut h, 1, 5, 6, get("b"), got(Some(kv("1", 2, 2, 1)), 2));
    ok(&mut h, 1, 7, 8, get("a"), got(None, 2));
    assert_eq!(verdict(&h), Verdict::Linearizable);
}

#[test]
fn unknown_write_may_take_effect_late() {
    let mut h = H::new();
    unknown(&mut h, 0, 0, put("a", "1"));
    ok(&mut h, 1, 1, 2, get("a"), got(None, 1));
    ok(&mut h, 1, 3, 4, put("b", "1"), put_ok(2));
    ok(&mut h, 1, 5, 6, get("a"), got(Some(kv("1", 3, 3, 1)), 3));
    assert_eq!(verdict(&h), Verdict::Linearizable);
    // ... but only once: it cannot be seen, then unseen.
    ok(&mut h, 1, 7, 8, get("a"), got(None, 3));
    assert_eq!(verdict(&h), Verdict::NotLinearizable);
}

#[test]
fn unknown_write_cannot_take_effect_before_its_call() {
    let mut h = H::new();
    ok(&mut h, 1, 0, 1, get("a"), got(Some(kv("1", 2, 2, 1)), 2));
    unknown(&mut h, 0, 2, put("a", "1"));
    assert_eq!(verdict(&h), Verdict::NotLinearizable);
}

#[test]
fn revision_gap_needs_an_unknown_write() {
    let mut h = H::new();
    ok(&mut h, 0, 0, 1, put("a", "1"), put_ok(2));
    ok(&mut h, 0, 2, 3, put("b", "1"), put_ok(4));
    assert_eq!(verdict(&h), Verdict::NotLinearizable);

    // An unknown write concurrent with them fills revision 3.
    let mut filled = h.clone();
    unknown(&mut filled, 1, 1, put("c", "1"));
    assert_eq!(verdict(&filled), Verdict::Linearizable);

    // One that starts after the gap cannot.
    let mut late = h.clone();
    unknown(&mut late, 1, 4, put("c", "1"));
    assert_eq!(verdict(&late), Verdict::NotLinearizable);
}

#[test]
fn revision_mismatch_on_put() {
    let mut h = H::new();
    ok(&mut h, 0, 0, 1, put("a", "1"), put_ok(1));
    assert_eq!(verdict(&h), Verdict::NotLinearizable);
}

#[test]
fn metadata_mismatch_on_get() {
    let mut h = H::new();
    ok(&mut h, 0, 0, 1, put("a", "1"), put_ok(2));
    ok(&mut h, 0, 2, 3, put("a", "2"), put_ok(3));
    ok(&mut h, 0, 4, 5, get("a"), got(Some(kv("2", 3, 3, 1)), 3));
    assert_eq!(verdict(&h), Verdict::NotLinearizable);
}

#[test]
fn optimistic_updates() {
    let txn_ok = |revision| EtcdOutput::Txn {
        succeeded: true,
        revision,
        results: vec![TxnOpResult::Put],
    };
    let mut base = H::new();
    ok(&mut base, 0, 0, 1, put("a", "0"), put_ok(2));

    // Two concurrent updates from the same mod_revision cannot both succeed.
    let mut lost_update = base.clone();
    ok(&mut lost_update, 1, 2, 5, cas("a", 2, "1"), txn_ok(3));
    ok(&mut lost_update, 2, 3, 6, cas("a", 2, "2"), txn_ok(4));
    assert_eq!(verdict(&lost_update), Verdict::NotLinearizable);

    // One wins; the other fails and reads the winner's write.
    let mut one_wins = base.clone();
    ok(&mut one_wins, 1, 2, 5, cas("a", 2, "1"), txn_ok(3));
    let lost = EtcdOutput::Txn {
        succeeded: false,
        revision: 3,
        results: vec![TxnOpResult::Get(Some(kv("1", 3, 2, 2)))],
    };
    ok(&mut one_wins, 2, 3, 6, cas("a", 2, "2"), lost);
    assert_eq!(verdict(&one_wins), Verdict::Linearizable);

    // An unknown update took effect: the next one's compare reveals it.
    let mut unknown_won = base.clone();
    unknown(&mut unknown_won, 1, 2, cas("a", 2, "1"));
    let seen = EtcdOutput::Txn {
        succeeded: false,
        revision: 3,
        results: vec![TxnOpResult::Get(Some(kv("1", 3, 2, 2)))],
    };
    ok(&mut unknown_won, 2, 3, 4, cas("a", 2, "2"), seen);
    assert_eq!(verdict(&unknown_won), Verdict::Linearizable);

    // Or it did not, and the next one succeeds.
    let mut unknown_lost = base.clone();
    unknown(&mut unknown_lost, 1, 2, cas("a", 2, "1"));
    ok(&mut unknown_lost, 2, 3, 4, cas("a", 2, "2"), txn_ok(3));
    ok(
        &mut unknown_lost,
        2,
        5,
        6,
        get("a"),
        got(Some(kv("2", 3, 2, 2)), 3),
    );
    assert_eq!(verdict(&unknown_lost), Verdict::Linearizable);
}

#[test]
fn txn_semantics() {
    let mut state = EtcdState::new(1);
    let txn = EtcdInput::Txn(Txn {
        compare: vec![Compare {
            key: "a".into(),
            op: CompareOp::Equal,
            target: CompareTarget::Version(0),
        }],
        success: vec![
            TxnOp::Put {
                key: "a".into(),
                value: "1".into(),
            },
            TxnOp::Put {
                key: "b".into(),
                value: "1".into(),
            },
            TxnOp::Get { key: "a".into() },
            TxnOp::Delete { key: "c".into() },
        ],
        failure: vec![TxnOp::Get { key: "a".into() }],
    });
    let (next, output) = state.apply(&txn);
    // All writes of a txn share one revision; its reads see its earlier writes.
    assert_eq!(
        output,
        EtcdOutput::Txn {
            succeeded: true,
            revision: 2,
            results: vec![
                TxnOpResult::Put,
                TxnOpResult::Put,
                TxnOpResult::Get(Some(kv("1", 2, 2, 1))),
                TxnOpResult::Delete { deleted: 0 },
            ],
        }
    );
    assert_eq!(next.get("b"), Some(&kv("1", 2, 2, 1)));
    state = next;
    // The same txn now fails, reads only, and leaves the revision alone.
    let (next, output) = state.apply(&txn);
    assert_eq!(
        output,
        EtcdOutput::Txn {
            succeeded: false,
            revision: 2,
            results: vec![TxnOpResult::Get(Some(kv("1", 2, 2, 1)))],
        }
    );
    assert_eq!(next, state);
}

#[test]
fn compares_on_missing_keys() {
    let state = EtcdState::new(1);
    let compare = |op, target| Compare {
        key: "missing".into(),
        op,
        target,
    };
    // As in etcd: a value compare on a missing key is false whatever the operator...
    assert!(!state.compare(&compare(
        CompareOp::Equal,
        CompareTarget::Value(String::new())
    )));
    assert!(!state.compare(&compare(
        CompareOp::NotEqual,
        CompareTarget::Value("x".into())
    )));
    // ... and the numeric fields of a missing key are 0.
    assert!(state.compare(&compare(CompareOp::Equal, CompareTarget::Version(0))));
    assert!(state.compare(&compare(CompareOp::Less, CompareTarget::ModRevision(1))));
    assert!(!state.compare(&compare(
        CompareOp::Greater,
        CompareTarget::CreateRevision(0)
    )));
}

#[test]
fn unknown_reads_are_ignored_and_unknown_deletes_may_happen() {
    let mut h = H::new();
    ok(&mut h, 0, 0, 1, put("a", "1"), put_ok(2));
    unknown(&mut h, 1, 2, get("a"));
    unknown(&mut h, 2, 3, del("a"));
    ok(&mut h, 0, 4, 5, get("a"), got(None, 3));
    assert_eq!(verdict(&h), Verdict::Linearizable);
    let mut kept = H::new();
    ok(&mut kept, 0, 0, 1, put("a", "1"), put_ok(2));
    unknown(&mut kept, 2, 3, del("a"));
    ok(&mut kept, 0, 4, 5, get("a"), got(Some(kv("1", 2, 2, 1)), 2));
    assert_eq!(verdict(&kept), Verdict::Linearizable);
}

#[test]
fn initial_state_and_explanation() {
    let model = EtcdKv::with_initial(EtcdState::new(10));
    let mut h = H::new();
    ok(&mut h, 0, 0, 1, put("a", "1"), put_ok(11));
    ok(&mut h, 1, 2, 3, get("a"), got(None, 10));
    let report = check(&model, &h, &CheckOptions::default());
    assert_eq!(report.verdict, Verdict::NotLinearizable);
    let text = report.failure.unwrap().explain(&h);
    assert!(text.contains("#1 client 1 [2, 3] Get"), "{text}");
    assert!(text.contains("revision: 11"), "{text}");
}

#[test]
fn reads_prove_unknown_writes() {
    use cairn_check::Model;
    let mut h = H::new();
    unknown(&mut h, 0, 0, put("a", "1"));
    unknown(&mut h, 1, 1, put("b", "1"));
    unknown(&mut h, 2, 2, put("b", "1"));
    unknown(&mut h, 3, 3, cas("c", 0, "1"));
    unknown(&mut h, 4, 4, put("d", "1"));
    ok(&mut h, 5, 5, 6, get("a"), got(Some(kv("1", 3, 3, 1)), 4));
    ok(&mut h, 5, 7, 8, get("b"), got(Some(kv("1", 2, 2, 1)), 4));
    ok(&mut h, 5, 9, 10, get("c"), got(Some(kv("1", 4, 4, 1)), 4));
    let resolved = EtcdKv::new().resolve_unknown(&h);
    // "a" by the only put of its value; not "b" (two puts of that value); the txn by its put;
    // not "d" (never read).
    let txn = EtcdOutput::Txn {
        succeeded: true,
        revision: 4,
        results: vec![TxnOpResult::Put],
    };
    assert_eq!(resolved, vec![(0, put_ok(3)), (3, txn)]);
    assert_eq!(verdict(&h), Verdict::Linearizable);
}

#[test]
fn a_proven_write_must_take_effect() {
    let mut h = H::new();
    unknown(&mut h, 0, 0, put("a", "1"));
    ok(&mut h, 1, 1, 2, get("a"), got(Some(kv("1", 2, 2, 1)), 2));
    // Proven at revision 2, so this put cannot have created revision 2 as well.
    ok(&mut h, 2, 3, 4, put("b", "1"), put_ok(2));
    assert_eq!(verdict(&h), Verdict::NotLinearizable);
}

#[test]
fn unknown_writes_that_never_happened_stay_cheap() {
    // 40 unknown writes stay pending to the end; the revisions leave them no gap to fill, so
    // the search must not try their subsets.
    let mut h = H::new();
    for client in 0..40 {
        unknown(
            &mut h,
            100 + client,
            client,
            put("x", &format!("u{client}")),
        );
    }
    for i in 0..200u64 {
        let revision = i64::try_from(i).unwrap() + 2;
        let call = 100 + 4 * i;
        ok(
            &mut h,
            0,
            call,
            call + 1,
            put("a", &format!("v{i}")),
            put_ok(revision),
        );
        let seen = kv(&format!("v{i}"), revision, 2, revision - 1);
        ok(
            &mut h,
            1,
            call + 2,
            call + 3,
            get("a"),
            got(Some(seen), revision),
        );
    }
    let report = check(&EtcdKv::new(), &h, &CheckOptions::default());
    assert_eq!(report.verdict, Verdict::Linearizable);
    assert!(report.steps < 50_000, "{} steps", report.steps);
}
