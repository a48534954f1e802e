//! Bugs planted in cairn (feature `planted-bugs`, `CAIRN_PLANTED_BUG`) must be caught: each
//! bug's targeted scenario runs 10 times with the bug, and must be caught at least 9 times by
//! the check meant to catch it; the same scenario without the bug must pass (so this test can
//! fail both ways). One test per bug, so two run at once under `--test-threads=2`.
//!
//! | bug | scenario | caught by |
//! |---|---|---|
//! | `ack-before-fsync` | 1 member, writes, SIGKILL + WAL truncated to its last fsync, restart | lost acknowledged writes (or the member refusing its own inconsistent data dir) |
//! | `read-without-read-index` | 3 members, the leader or a follower partitioned while clients read through every member | linearizability (stale reads) |
//! | `drop-watch-event-on-compaction` | 3 members, compactions every 200 ms, watchers | watch reliability / the watchers' event logs disagreeing |
//! | `split-txn-events` | 3 members, multi-put transactions only, watchers | watch atomicity |
//!
//! `CAIRN_ROBUST_SEED` sets the base seed.

use cairn_robust::faults::FaultKind;
use cairn_robust::profile::run_seed;
use cairn_robust::run::{fresh_seed, run, seed_from_env, PlantedBug, RunOutcome, RunSpec};
use cairn_robust::traffic::TrafficKind;
use std::time::Duration;

/// Runs with the bug, of which at least [`MUST_CATCH`] must catch it.
const RUNS: usize = 10;
const MUST_CATCH: usize = 9;

fn scenario(bug: PlantedBug) -> RunSpec {
    let (members, fault) = match bug {
        PlantedBug::AckBeforeFsync => (1, FaultKind::UnsyncedLoss),
        PlantedBug::ReadWithoutReadIndex => (3, FaultKind::Blackhole),
        PlantedBug::DropWatchEventOnCompaction | PlantedBug::SplitTxnEvents => (3, FaultKind::None),
    };
    let mut spec = RunSpec::new(members, TrafficKind::Etcd, fault);
    spec.name = format!("planted-{}", bug.env_value());
    spec.duration = Duration::from_secs(3);
    spec.traffic.multi_put_txns_only = bug == PlantedBug::SplitTxnEvents;
    if bug == PlantedBug::ReadWithoutReadIndex {
        // Stale reads need reads on the cut-off member after the majority has moved on: a
        // partition well past an election, more clients, and writes to the cut-off member
        // that give up sooner (its clients would otherwise sit out the partition in them).
        spec.fault_hold = Some(Duration::from_secs(4));
        spec.duration = Duration::from_secs(5);
        spec.traffic.clients_per_member = 4;
        spec.traffic.request_timeout = Duration::from_secs(1);
    }
    spec
}

/// Whether `o` failed in the way `bug` should make it fail.
fn caught(bug: PlantedBug, o: &RunOutcome) -> bool {
    let kinds = &o.checks.by_kind;
    let any = |names: &[&str]| names.iter().any(|n| kinds.contains_key(*n));
    match bug {
        // Lost writes show as acknowledged writes missing, a final state or history that
        // contradicts them; or the member notices its backend is ahead of its WAL and refuses
        // to start, which the run reports as a harness error.
        PlantedBug::AckBeforeFsync => !o.passed(),
        PlantedBug::ReadWithoutReadIndex => any(&["linearizability"]),
        PlantedBug::DropWatchEventOnCompaction => any(&[
            "reliable",
            "watcher disagreement",
            "event log",
            "event mismatch",
        ]),
        PlantedBug::SplitTxnEvents => any(&["atomic"]),
    }
}

fn check_bug(bug: PlantedBug) {
    let base = seed_from_env().unwrap_or_else(fresh_seed);
    println!(
        "planted bug {}: base seed {base} (CAIRN_ROBUST_SEED={base} to reuse it)",
        bug.env_value()
    );
    let spec = scenario(bug);
    let clean = run(&spec, run_seed(base, 0));
    assert!(
        clean.passed(),
        "the {} scenario fails without the bug:\n{}",
        bug.env_value(),
        clean.failure_message()
    );
    let mut with = spec.clone();
    with.planted_bug = Some(bug);
    with.write_artifacts = false;
    let mut hits = 0;
    let mut missed = Vec::new();
    for i in 1..=RUNS {
        let o = run(&with, run_seed(base, i));
        if caught(bug, &o) {
            hits += 1;
            println!(
                "   {} caught: {}",
                bug.env_value(),
                o.error
                    .as_deref()
                    .map(|e| format!("harness error: {}", e.lines().next().unwrap_or("")))
                    .unwrap_or_else(|| format!("{:?}", o.checks.by_kind))
            );
        } else {
            println!("   {} MISSED: {}", bug.env_value(), o.line());
            missed.push(o);
        }
    }
    println!(
        "planted bug {}: caught in {hits} of {RUNS} runs",
        bug.env_value()
    );
    assert!(
        hits >= MUST_CATCH,
        "{} caught in only {hits} of {RUNS} runs (base seed {base}); missed:\n{}",
        bug.env_value(),
        missed
            .iter()
            .map(|o| format!("{}\n{}", o.line(), o.failure_message()))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn ack_before_fsync_is_caught() {
    check_bug(PlantedBug::AckBeforeFsync);
}

#[test]
fn read_without_read_index_is_caught() {
    check_bug(PlantedBug::ReadWithoutReadIndex);
}

#[test]
fn drop_watch_event_on_compaction_is_caught() {
    check_bug(PlantedBug::DropWatchEventOnCompaction);
}

#[test]
fn split_txn_events_is_caught() {
    check_bug(PlantedBug::SplitTxnEvents);
}
