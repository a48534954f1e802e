//! Profiles: lists of runs.
//!
//! - **`ci`** (the `ci_profile` test, in the README's test command): 72 runs of 8 s of traffic
//!   each, about 12–15 minutes on 2 cores: every fault kind at least 6 times (each failpoint
//!   at least once, on 3 members, plus three on 1 member), 1- and 3-member clusters, etcd-like
//!   and Kubernetes-like traffic alternating.
//! - **`long`**: the `ci` list three times over with 20 s of traffic and 3 clients per member
//!   (216 runs, about 2 hours on 2 cores):
//!   `cargo build -p cairn --features failpoints,planted-bugs && cargo run -p cairn-robust --
//!   --profile long [--seed S]` (add `--release` to both for a faster cairn and checker).
//!
//! Run `i` of a profile with base seed `S` has seed [`run_seed`]`(S, i)`, printed with it;
//! the failure message of a run gives the command that reruns it alone.

use crate::faults::{FaultKind, FAILPOINTS};
use crate::run::{run, RunOutcome, RunSpec};
use crate::traffic::TrafficKind;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// A named list of runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// About 12–15 minutes on 2 cores.
    Ci,
    /// About 2 hours on 2 cores.
    Long,
}

impl Profile {
    /// Parses `ci` or `long`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "ci" => Some(Profile::Ci),
            "long" => Some(Profile::Long),
            _ => None,
        }
    }

    /// The runs, in order.
    pub fn runs(self) -> Vec<RunSpec> {
        let ci = ci_runs();
        match self {
            Profile::Ci => ci,
            Profile::Long => {
                let mut out = Vec::new();
                for round in 0..3 {
                    for spec in &ci {
                        let mut s = spec.clone();
                        s.duration = Duration::from_secs(20);
                        s.traffic.clients_per_member = 3;
                        s.name = format!("long{round}-{}", s.name);
                        out.push(s);
                    }
                }
                out
            }
        }
    }
}

/// How long each CI run's traffic lasts.
const CI_TRAFFIC: Duration = Duration::from_secs(8);

fn traffic(i: usize) -> TrafficKind {
    if i.is_multiple_of(2) {
        TrafficKind::Etcd
    } else {
        TrafficKind::Kubernetes
    }
}

fn ci_runs() -> Vec<RunSpec> {
    let mut runs = Vec::new();
    let mut n = 0;
    let mut add = |members: usize, fault: FaultKind, fp: Option<&str>, runs: &mut Vec<RunSpec>| {
        let mut s = RunSpec::new(members, traffic(n), fault);
        s.duration = CI_TRAFFIC;
        if let Some(fp) = fp {
            s = s.with_failpoint(fp);
        }
        s.name = format!("ci{:02}-{}", runs.len(), s.name);
        runs.push(s);
        n += 1;
    };
    for fault in [
        FaultKind::Blackhole,
        FaultKind::OneWayDrop,
        FaultKind::DelayJitter,
        FaultKind::DropShare,
        FaultKind::KillFollower,
        FaultKind::MemberReplace,
    ] {
        for _ in 0..6 {
            add(3, fault, None, &mut runs);
        }
    }
    for fault in [
        FaultKind::KillLeader,
        FaultKind::KillAll,
        FaultKind::StopCont,
        FaultKind::UnsyncedLoss,
    ] {
        for k in 0..6usize {
            add(
                if k.is_multiple_of(2) { 3 } else { 1 },
                fault,
                None,
                &mut runs,
            );
        }
    }
    for fp in FAILPOINTS {
        add(3, FaultKind::Failpoint, Some(fp), &mut runs);
    }
    for fp in [
        "raft_before_save",
        "backend_after_commit",
        "compact_before_commit",
    ] {
        add(1, FaultKind::Failpoint, Some(fp), &mut runs);
    }
    // Interleave the fault kinds, so a run cut short still covers every kind.
    let mut by_kind: BTreeMap<FaultKind, Vec<RunSpec>> = BTreeMap::new();
    for r in runs {
        by_kind.entry(r.fault).or_default().push(r);
    }
    let mut out = Vec::new();
    while by_kind.values().any(|v| !v.is_empty()) {
        for v in by_kind.values_mut() {
            if !v.is_empty() {
                out.push(v.remove(0));
            }
        }
    }
    out
}

/// The seed of run `index` of a profile with base seed `base` (splitmix64).
pub fn run_seed(base: u64, index: usize) -> u64 {
    let mut z = base.wrapping_add((index as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)) % 1_000_000_000_000
}

/// The outcomes of a profile's runs.
#[derive(Debug, Default)]
pub struct ProfileReport {
    /// Every run's outcome, in order.
    pub outcomes: Vec<RunOutcome>,
    /// Wall time.
    pub elapsed: Duration,
}

impl ProfileReport {
    /// The failed runs.
    pub fn failures(&self) -> Vec<&RunOutcome> {
        self.outcomes.iter().filter(|o| !o.passed()).collect()
    }

    /// Runs per fault kind, requests, violations, failpoints that fired, time.
    pub fn summary(&self) -> String {
        let mut per: BTreeMap<&str, (usize, usize, usize)> = BTreeMap::new();
        for o in &self.outcomes {
            let e = per.entry(o.plan.kind.name()).or_default();
            e.0 += 1;
            e.1 += usize::from(o.timeline.fired);
            e.2 += usize::from(!o.passed());
        }
        let ops: usize = self.outcomes.iter().map(|o| o.ops).sum();
        let ok: usize = self.outcomes.iter().map(|o| o.ops_ok).sum();
        let events: usize = self.outcomes.iter().map(|o| o.watch_events).sum();
        let violations: usize = self
            .outcomes
            .iter()
            .map(|o| o.checks.violations.len())
            .sum();
        let timeouts = self.outcomes.iter().filter(|o| o.checks.timed_out).count();
        let lost: usize = self
            .outcomes
            .iter()
            .map(|o| {
                o.checks
                    .by_kind
                    .get("acknowledged write")
                    .copied()
                    .unwrap_or(0)
            })
            .sum();
        let mut s = format!(
            "{} runs in {:.0}s: {} passed, {} failed; {ops} requests ({ok} returned), {events} \
             watch events; {violations} violations, {lost} lost acknowledged writes, {timeouts} \
             checker timeouts\nruns per fault kind (failpoint crashes / WAL bytes lost, failed):\n",
            self.outcomes.len(),
            self.elapsed.as_secs_f64(),
            self.outcomes.len() - self.failures().len(),
            self.failures().len()
        );
        for (kind, (n, fired, failed)) in per {
            s += &format!("  {kind:<15} {n:>3} runs  fired {fired:>3}  failed {failed:>3}\n");
        }
        s
    }
}

/// Runs `runs` one after the other with seeds from `base`, printing each result.
pub fn run_all(runs: &[RunSpec], base: u64) -> ProfileReport {
    let t = Instant::now();
    let mut report = ProfileReport::default();
    for (i, spec) in runs.iter().enumerate() {
        let seed = run_seed(base, i);
        let o = run(spec, seed);
        if !o.passed() {
            println!("{}", o.failure_message());
        }
        report.outcomes.push(o);
    }
    report.elapsed = t.elapsed();
    report
}
