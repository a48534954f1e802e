//! Every history in `shared/golden/linearizability/VERDICTS.txt` gets exactly its verdict,
//! each within a time bound.
//!
//! The directory is `$CAIRN_GOLDEN_DIR`, or `tests/golden` in this crate (a copy of the
//! team's `shared/golden/linearizability`, so a clean clone has it).

use std::path::PathBuf;
use std::time::Duration;

use cairn_check::models::{KvAppend, Register};
use cairn_check::parse::{parse_jepsen, parse_kv};
use cairn_check::{check, CheckOptions, CheckReport, Verdict};

/// The most one history may take (debug build, 2 cores).
const PER_HISTORY: Duration = Duration::from_secs(10);

fn golden_dir() -> PathBuf {
    match std::env::var_os("CAIRN_GOLDEN_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden"),
    }
}

/// (file, expected verdict) for every line of VERDICTS.txt under `prefix`.
fn verdicts(prefix: &str) -> Vec<(String, Verdict)> {
    let path = golden_dir().join("VERDICTS.txt");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {} ({e}); set CAIRN_GOLDEN_DIR", path.display()));
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let (file, verdict) = line
                .split_once(char::is_whitespace)
                .unwrap_or_else(|| panic!("bad VERDICTS.txt line {line:?}"));
            let verdict = match verdict.trim() {
                "linearizable" => Verdict::Linearizable,
                "not-linearizable" => Verdict::NotLinearizable,
                other => panic!("unknown verdict {other:?}"),
            };
            (file.to_string(), verdict)
        })
        .filter(|(file, _)| file.starts_with(prefix))
        .collect()
}

fn check_file(file: &str) -> CheckReport {
    let path = golden_dir().join(file);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let options = CheckOptions::with_timeout(PER_HISTORY);
    if file.starts_with("jepsen/") {
        let history = parse_jepsen(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
        check(&Register, &history, &options)
    } else {
        let history = parse_kv(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
        check(&KvAppend, &history, &options)
    }
}

/// Checks every file under `prefix`, prints the slowest, and fails on any wrong verdict.
fn reproduce(prefix: &str, expected_count: usize) {
    let cases = verdicts(prefix);
    assert_eq!(
        cases.len(),
        expected_count,
        "files under {prefix} in VERDICTS.txt"
    );
    let mut wrong = Vec::new();
    let mut timings = Vec::new();
    for (file, expected) in &cases {
        let report = check_file(file);
        timings.push((report.elapsed, report.steps, file.clone()));
        if report.verdict != *expected || report.elapsed > PER_HISTORY {
            wrong.push(format!(
                "{file}: expected {expected:?}, got {:?} in {:?}",
                report.verdict, report.elapsed
            ));
        }
    }
    timings.sort();
    let total: Duration = timings.iter().map(|(t, _, _)| *t).sum();
    println!("{prefix}: {} histories in {total:?}; slowest:", cases.len());
    for (elapsed, steps, file) in timings.iter().rev().take(5) {
        println!("  {file}: {elapsed:?}, {steps} steps");
    }
    assert!(wrong.is_empty(), "wrong verdicts:\n{}", wrong.join("\n"));
}

#[test]
fn jepsen_register_verdicts() {
    reproduce("jepsen/", 102);
}

#[test]
fn kv_append_verdicts() {
    reproduce("kv/", 6);
}

#[test]
fn verdict_totals() {
    let all = verdicts("");
    let linearizable = all
        .iter()
        .filter(|(_, v)| *v == Verdict::Linearizable)
        .count();
    assert_eq!((linearizable, all.len() - linearizable), (26, 82));
}

#[test]
fn a_failure_is_explained() {
    let report = check_file("jepsen/etcd_000.log");
    let failure = report.failure.expect("etcd_000 is not linearizable");
    assert!(failure.unplaceable.is_some());
    let path = golden_dir().join("jepsen/etcd_000.log");
    let history = parse_jepsen(&std::fs::read_to_string(path).unwrap()).unwrap();
    let text = failure.explain(&history);
    assert!(text.contains("longest linearizable prefix"), "{text}");
    println!("{text}");
}
