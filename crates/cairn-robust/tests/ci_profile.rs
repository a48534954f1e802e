//! The CI profile (see `cairn_robust::profile`): 72 fault runs, every fault kind at least 6
//! times, in one test so they run one after the other (each spawns a cluster and uses both
//! cores). Prints every run's result and a summary: runs per fault kind, requests,
//! violations.
//!
//! `CAIRN_ROBUST_SEED=<n>` sets the profile's base seed (each run's seed is derived from it and
//! printed); `CAIRN_ROBUST_ONLY=<substring>` keeps only the runs whose name contains it. A
//! failing run names its artifacts folder and the command that reruns it alone.

use cairn_robust::faults::FaultKind;
use cairn_robust::profile::{run_all, Profile};
use cairn_robust::run::{fresh_seed, seed_from_env};
use std::collections::BTreeMap;

#[test]
fn ci_profile() {
    let seed = seed_from_env().unwrap_or_else(fresh_seed);
    let mut runs = Profile::Ci.runs();
    let filtered = match std::env::var("CAIRN_ROBUST_ONLY") {
        Ok(only) if !only.is_empty() => {
            runs.retain(|r| r.name.contains(&only));
            true
        }
        _ => false,
    };
    if !filtered {
        // The profile's promise: at least 60 fault runs, every fault kind at least 5 times.
        let mut per: BTreeMap<FaultKind, usize> = BTreeMap::new();
        for r in &runs {
            *per.entry(r.fault).or_default() += 1;
        }
        assert!(runs.len() >= 60, "{} runs", runs.len());
        for kind in FaultKind::ALL {
            assert!(
                per.get(&kind).copied().unwrap_or(0) >= 5,
                "{kind:?}: {per:?}"
            );
        }
    }
    println!(
        "ci profile: {} runs, base seed {seed} (CAIRN_ROBUST_SEED={seed} to reuse it)",
        runs.len()
    );
    let report = run_all(&runs, seed);
    println!("{}", report.summary());
    let failures = report.failures();
    assert!(
        failures.is_empty(),
        "{} of {} runs failed (base seed {seed}):\n{}",
        failures.len(),
        report.outcomes.len(),
        failures
            .iter()
            .map(|o| o.failure_message())
            .collect::<Vec<_>>()
            .join("\n")
    );
    // Failpoints must really crash cairn (a binary whose failpoints never fire would pass
    // every run): at least half of the failpoint runs must have seen a crash.
    let fp: Vec<_> = report
        .outcomes
        .iter()
        .filter(|o| o.plan.kind == FaultKind::Failpoint)
        .collect();
    let fired = fp.iter().filter(|o| o.timeline.fired).count();
    assert!(
        fired * 2 >= fp.len(),
        "only {fired} of {} failpoint runs crashed at their failpoint",
        fp.len()
    );
}
