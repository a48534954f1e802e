//! Ranges in the revision-aware etcd model: they read like gets, constrain the state like
//! gets, and reveal unknown writes like gets.

use cairn_check::models::{EtcdInput, EtcdKv, EtcdOutput, EtcdState, KeyValue};
use cairn_check::{check, CheckOptions, History, Model, Verdict};

type H = History<EtcdInput, EtcdOutput>;

fn put(key: &str, value: &str) -> EtcdInput {
    EtcdInput::Put {
        key: key.into(),
        value: value.into(),
    }
}

fn range(start: &str, end: &str, limit: i64) -> EtcdInput {
    EtcdInput::Range {
        start: start.into(),
        end: end.into(),
        limit,
    }
}

fn kv(value: &str, revision: i64) -> KeyValue {
    KeyValue {
        value: value.into(),
        mod_revision: revision,
        create_revision: revision,
        version: 1,
    }
}

fn ranged(kvs: &[(&str, KeyValue)], count: i64, more: bool, revision: i64) -> EtcdOutput {
    EtcdOutput::Range {
        kvs: kvs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
        count,
        more,
        revision,
    }
}

fn verdict(h: &H) -> Verdict {
    check(&EtcdKv::new(), h, &CheckOptions::default()).verdict
}

/// a=1 at 2, b=2 at 3, one after the other.
fn two_puts() -> H {
    let mut h = H::new();
    h.push_returned(0, 0, 1, put("a", "1"), EtcdOutput::Put { revision: 2 })
        .unwrap();
    h.push_returned(0, 2, 3, put("b", "2"), EtcdOutput::Put { revision: 3 })
        .unwrap();
    h
}

#[test]
fn a_range_that_sees_the_latest_keys_is_linearizable() {
    let mut h = two_puts();
    let output = ranged(&[("a", kv("1", 2))], 2, true, 3);
    h.push_returned(1, 4, 5, range("", "\0", 1), output)
        .unwrap();
    assert_eq!(verdict(&h), Verdict::Linearizable);
}

#[test]
fn a_stale_range_is_not() {
    let mut h = two_puts();
    // Called after b=2 returned, but does not see it.
    let output = ranged(&[("a", kv("1", 2))], 1, false, 2);
    h.push_returned(1, 4, 5, range("a", "c", 0), output)
        .unwrap();
    assert_eq!(verdict(&h), Verdict::NotLinearizable);
}

#[test]
fn a_wrong_count_or_more_is_not() {
    for (count, more) in [(1, true), (2, false)] {
        let mut h = two_puts();
        let output = ranged(&[("a", kv("1", 2))], count, more, 3);
        h.push_returned(1, 4, 5, range("", "\0", 1), output)
            .unwrap();
        assert_eq!(verdict(&h), Verdict::NotLinearizable, "count {count}");
    }
}

#[test]
fn a_concurrent_range_may_see_either_state() {
    let mut h = H::new();
    h.push_returned(0, 0, 10, put("a", "1"), EtcdOutput::Put { revision: 2 })
        .unwrap();
    h.push_returned(1, 1, 2, range("a", "", 0), ranged(&[], 0, false, 1))
        .unwrap();
    let output = ranged(&[("a", kv("1", 2))], 1, false, 2);
    h.push_returned(2, 3, 4, range("a", "", 0), output).unwrap();
    assert_eq!(verdict(&h), Verdict::Linearizable);
}

#[test]
fn a_range_reveals_an_unknown_put() {
    let mut h = H::new();
    h.push_unknown(0, 0, put("a", "1")).unwrap();
    let output = ranged(&[("a", kv("1", 2))], 1, false, 2);
    h.push_returned(1, 1, 2, range("", "\0", 0), output)
        .unwrap();
    let resolved = EtcdKv::new().resolve_unknown(&h);
    assert_eq!(resolved, vec![(0, EtcdOutput::Put { revision: 2 })]);
    assert_eq!(verdict(&h), Verdict::Linearizable);
}

#[test]
fn ranges_are_read_only_and_bounded_by_their_revision() {
    let model = EtcdKv::new();
    let input = range("", "\0", 0);
    assert!(model.is_read_only(&input));
    let output = EtcdState::default().apply(&input).1;
    assert_eq!(output, ranged(&[], 0, false, 1));
    assert_eq!(model.progress_bound(&input, &output), Some(1));
    // An unknown range constrains nothing and is dropped.
    let mut h = two_puts();
    h.push_unknown(1, 0, input).unwrap();
    assert_eq!(verdict(&h), Verdict::Linearizable);
}
