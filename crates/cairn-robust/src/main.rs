//! `cairn-robust`: runs a profile, or one run, of cairn's robustness harness; or checks a
//! failed run's artifacts again.
//!
//! ```text
//! cairn-robust --profile ci|long [--seed S] [--only SUBSTRING]
//! cairn-robust --members 1|3 --traffic etcd|k8s --fault KIND [--failpoint NAME]
//!              [--planted-bug BUG] [--multi-put-txns] [--duration SECS] [--hold SECS]
//!              [--clients PER_MEMBER] [--request-timeout SECS] [--seed S]
//! cairn-robust --recheck target/robustness/<run>-<seed>
//! ```
//!
//! Fault kinds: blackhole, one-way-drop, delay, drop-share, kill-follower, kill-leader,
//! kill-all, stop-cont, member-replace, failpoint, unsynced-loss, none. The cairn binary must
//! be built first: `cargo build -p cairn --features failpoints,planted-bugs`.

use anyhow::{anyhow, bail, Result};
use cairn_robust::checks::check_run;
use cairn_robust::faults::FaultKind;
use cairn_robust::profile::{run_all, Profile};
use cairn_robust::run::{fresh_seed, run, seed_from_env, PlantedBug, RunSpec, LIN_TIMEOUT};
use cairn_robust::traffic::TrafficKind;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

fn main() -> ExitCode {
    match real_main() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("cairn-robust: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn real_main() -> Result<bool> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut opts = std::collections::HashMap::new();
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        let name = a
            .strip_prefix("--")
            .ok_or_else(|| anyhow!("unexpected argument {a:?}"))?;
        if name == "multi-put-txns" || name == "help" {
            opts.insert(name.to_string(), String::new());
            i += 1;
            continue;
        }
        let (k, v) = match name.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => {
                i += 1;
                let v = args
                    .get(i)
                    .ok_or_else(|| anyhow!("--{name} needs a value"))?;
                (name.to_string(), v.clone())
            }
        };
        opts.insert(k, v);
        i += 1;
    }
    if opts.contains_key("help") {
        println!("see the doc comment of crates/cairn-robust/src/main.rs");
        return Ok(true);
    }
    let seed = match opts.get("seed") {
        Some(s) => s.parse()?,
        None => seed_from_env().unwrap_or_else(fresh_seed),
    };
    if let Some(dir) = opts.get("recheck") {
        let rec = cairn_robust::artifacts::load(Path::new(dir))?;
        let s = check_run(
            &rec.ops,
            &rec.watches,
            &rec.compactions,
            rec.final_read.as_ref(),
            LIN_TIMEOUT,
        );
        println!(
            "{} ops, {} watch streams: linearizability {}, {} violations\n{}",
            rec.ops.len(),
            rec.watches.len(),
            s.linearizability,
            s.violations.len(),
            s.shown()
        );
        if let Some(why) = &s.explanation {
            println!("{why}");
        }
        return Ok(s.violations.is_empty());
    }
    if let Some(p) = opts.get("profile") {
        let profile = Profile::parse(p).ok_or_else(|| anyhow!("unknown profile {p}"))?;
        let mut runs = profile.runs();
        if let Some(only) = opts.get("only") {
            runs.retain(|r| r.name.contains(only.as_str()));
        }
        println!("profile {p}: {} runs, base seed {seed}", runs.len());
        let report = run_all(&runs, seed);
        println!("{}", report.summary());
        return Ok(report.failures().is_empty());
    }
    let members: usize = opts.get("members").map_or(Ok(3), |s| s.parse())?;
    let traffic = match opts.get("traffic") {
        Some(t) => TrafficKind::parse(t).ok_or_else(|| anyhow!("unknown traffic {t}"))?,
        None => TrafficKind::Etcd,
    };
    let fault = match opts.get("fault") {
        Some(f) => FaultKind::parse(f).ok_or_else(|| anyhow!("unknown fault {f}"))?,
        None => bail!("give --profile, --fault or --recheck (see --help)"),
    };
    let mut spec = RunSpec::new(members, traffic, fault);
    if let Some(fp) = opts.get("failpoint") {
        spec = spec.with_failpoint(fp);
    }
    if let Some(b) = opts.get("planted-bug") {
        spec.planted_bug =
            Some(PlantedBug::parse(b).ok_or_else(|| anyhow!("unknown planted bug {b}"))?);
    }
    if opts.contains_key("multi-put-txns") {
        spec.traffic.multi_put_txns_only = true;
    }
    if let Some(d) = opts.get("duration") {
        spec.duration = Duration::from_secs_f64(d.parse()?);
    }
    if let Some(d) = opts.get("hold") {
        spec.fault_hold = Some(Duration::from_secs_f64(d.parse()?));
    }
    if let Some(n) = opts.get("clients") {
        spec.traffic.clients_per_member = n.parse()?;
    }
    if let Some(d) = opts.get("request-timeout") {
        spec.traffic.request_timeout = Duration::from_secs_f64(d.parse()?);
    }
    let o = run(&spec, seed);
    if o.passed() {
        Ok(true)
    } else {
        println!("{}", o.failure_message());
        Ok(false)
    }
}
