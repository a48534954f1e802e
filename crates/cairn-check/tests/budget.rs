//! Time and step bounds: a search that cannot finish answers `Unknown` instead of hanging, and
//! a cheap failure in one partition is found while another partition is still expensive.

use std::time::Duration;

use cairn_check::models::{KvAppend, KvInput, KvOutput, Register, RegisterInput, RegisterOutput};
use cairn_check::{check, CheckOptions, History, Verdict};

/// `writers` concurrent writes of distinct values, then a read of a value nobody wrote: not
/// linearizable, but only an exhaustive search over the writes' orders can tell.
fn hard_register_history(writers: u64) -> History<RegisterInput, RegisterOutput> {
    let mut h = History::new();
    for client in 0..writers {
        let value = i64::try_from(client).unwrap();
        h.push_returned(
            client,
            client,
            1_000,
            RegisterInput::Write(value),
            RegisterOutput::Write,
        )
        .unwrap();
    }
    h.push_returned(
        writers,
        2_000,
        2_001,
        RegisterInput::Read,
        RegisterOutput::Read(Some(-1)),
    )
    .unwrap();
    h
}

#[test]
fn step_bound_gives_unknown() {
    let h = hard_register_history(20);
    let options = CheckOptions {
        max_steps: Some(10_000),
        ..CheckOptions::default()
    };
    let report = check(&Register, &h, &options);
    assert_eq!(report.verdict, Verdict::Unknown);
    assert!(report.failure.is_none());
    assert!(report.steps <= 10_000, "{} steps", report.steps);
}

#[test]
fn time_bound_gives_unknown() {
    let h = hard_register_history(24);
    let report = check(
        &Register,
        &h,
        &CheckOptions::with_timeout(Duration::from_millis(200)),
    );
    assert_eq!(report.verdict, Verdict::Unknown);
    assert!(
        report.elapsed < Duration::from_secs(2),
        "{:?}",
        report.elapsed
    );
}

#[test]
fn small_searches_finish_within_the_bound() {
    let h = hard_register_history(6);
    let report = check(
        &Register,
        &h,
        &CheckOptions::with_timeout(Duration::from_secs(10)),
    );
    assert_eq!(report.verdict, Verdict::NotLinearizable);
}

#[test]
fn cheap_failure_found_beside_an_expensive_partition() {
    let mut h: History<KvInput, KvOutput> = History::new();
    // Key "a": as hard as the register above.
    for client in 0..24u64 {
        let input = KvInput::Put {
            key: "a".into(),
            value: format!("v{client}"),
        };
        h.push_returned(client, client, 1_000, input, KvOutput::Put)
            .unwrap();
    }
    let get_a = KvInput::Get { key: "a".into() };
    h.push_returned(100, 2_000, 2_001, get_a, KvOutput::Get("nobody".into()))
        .unwrap();
    // Key "b": a plain stale read.
    let put_b = KvInput::Put {
        key: "b".into(),
        value: "1".into(),
    };
    h.push_returned(200, 3_000, 3_001, put_b, KvOutput::Put)
        .unwrap();
    let get_b = KvInput::Get { key: "b".into() };
    h.push_returned(201, 3_002, 3_003, get_b, KvOutput::Get(String::new()))
        .unwrap();

    let report = check(
        &KvAppend,
        &h,
        &CheckOptions::with_timeout(Duration::from_secs(10)),
    );
    assert_eq!(report.verdict, Verdict::NotLinearizable);
    assert_eq!(report.partitions, 2);
    let failure = report.failure.unwrap();
    assert_eq!((failure.partition, failure.unplaceable), (1, Some(26)));
    assert!(
        report.elapsed < Duration::from_secs(5),
        "{:?}",
        report.elapsed
    );
}
