//! `bench-compare`: runs the same workloads on the real etcd and on cairn, one member each on
//! loopback with the same flags, and prints the results side by side with the ratio cairn/etcd
//! and the issue's targets. `scripts/bench-compare` builds the release binaries and runs this.
//!
//! ```text
//! bench-compare [--quick] [--big] [--only ID,...] [--markdown FILE] [--json FILE]
//! ```

use anyhow::{bail, Result};
use cairn_bench::compare::{cases, compare, markdown_table, markdown_targets, rows_json, Plan};
use clap::Parser;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

#[derive(Parser, Debug)]
#[command(
    name = "bench-compare",
    about = "Side-by-side benchmark of cairn and etcd (1 member each, loopback, same flags)"
)]
struct Cli {
    /// Smoke run: every workload with a fifth of the requests (~3 minutes).
    #[arg(long)]
    quick: bool,
    /// Also load 1M keys × 256 B (peak RSS, restart time and reads at 1M keys).
    #[arg(long)]
    big: bool,
    /// Run only these workload ids (comma-separated; see --list).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// List the workloads and exit.
    #[arg(long)]
    list: bool,
    /// cairn binary (default: `cairn` beside this program, i.e. target/release/cairn).
    #[arg(long, env = "CAIRN_BIN")]
    cairn: Option<PathBuf>,
    /// etcd binary.
    #[arg(long, default_value = "etcd")]
    etcd: PathBuf,
    /// Where the temporary data dirs go.
    #[arg(long, env = "TMPDIR", default_value = "/tmp")]
    tmpdir: PathBuf,
    /// Also write the report (Markdown) to this file.
    #[arg(long)]
    markdown: Option<PathBuf>,
    /// Also write the rows as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// First line of a command's output, or `?`.
fn first_line(cmd: &str, args: &[&str], dir: Option<&Path>) -> String {
    let mut c = Command::new(cmd);
    c.args(args);
    if let Some(d) = dir {
        c.current_dir(d);
    }
    c.output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_string)
        })
        .unwrap_or_else(|| "?".into())
}

/// The three load averages of `/proc/loadavg`.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn meminfo_total() -> String {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
        })
        .and_then(|kib| kib.parse::<f64>().ok())
        .map(|kib| format!("{:.1} GiB", kib / 1024.0 / 1024.0))
        .unwrap_or_else(|| "?".into())
}

/// The `cairn Version: ...` line of `cairn --version` (its first line names the etcd version it
/// reports for compatibility).
fn cairn_version(cairn: &Path) -> String {
    Command::new(cairn)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            let text = String::from_utf8_lossy(&o.stdout).to_string();
            text.lines()
                .find(|l| l.starts_with("cairn Version"))
                .or_else(|| text.lines().next())
                .map(str::to_string)
        })
        .unwrap_or_else(|| "?".into())
}

fn machine_facts(cairn: &Path, etcd: &Path, tmp: &Path) -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1).map(|s| s.trim().to_string()))
        })
        .unwrap_or_else(|| "?".into());
    // The workspace this program was built from (read-only git queries).
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let commit = first_line("git", &["rev-parse", "--short=12", "HEAD"], Some(&repo));
    let dirty = Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .current_dir(&repo)
        .output()
        .map(|o| !o.stdout.is_empty())
        .unwrap_or(false);
    let df = Command::new("df")
        .args([
            "-h",
            "--output=source,fstype,size",
            &tmp.display().to_string(),
        ])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .nth(1)
                .unwrap_or("?")
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|_| "?".into());
    format!(
        "- CPU: {} × {cpu}\n- memory: {}\n- disk (data dirs in {}): {df}\n- kernel: {}\n- etcd: {}\n- cairn: {} at commit {commit}{}\n",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        meminfo_total(),
        tmp.display(),
        first_line("uname", &["-r"], None),
        first_line(&etcd.display().to_string(), &["--version"], None),
        cairn_version(cairn),
        if dirty { " (with uncommitted changes)" } else { "" },
    )
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let plan = Plan {
        quick: cli.quick,
        big: cli.big,
    };
    let mut all = cases(&plan);
    if cli.list {
        for c in &all {
            println!("{:<12} {}", c.id, c.title);
        }
        return Ok(());
    }
    if !cli.only.is_empty() {
        for id in &cli.only {
            if !all.iter().any(|c| &c.id == id) {
                bail!("unknown workload id {id:?} (see --list)");
            }
        }
        all.retain(|c| cli.only.contains(&c.id));
    }
    let cairn = match cli.cairn {
        Some(p) => p,
        None => std::env::current_exe()?.with_file_name("cairn"),
    };
    if !cairn.exists() {
        bail!(
            "cairn binary not found at {} (build it: cargo build --release -p cairn)",
            cairn.display()
        );
    }
    let facts = machine_facts(&cairn, &cli.etcd, &cli.tmpdir);
    eprintln!("{facts}");
    let load_before = loadavg();
    let t0 = Instant::now();
    let rows = compare(&all, &cairn, &cli.etcd, &cli.tmpdir)?;
    let mut command = String::from("scripts/bench-compare");
    for a in std::env::args().skip(1) {
        command.push(' ');
        command.push_str(&a);
    }
    let report = format!(
        "## Machine\n\n{facts}\n## Command\n\n```sh\n{command}\n```\n\nTook {:.1} min. One member each, \
         except the `c3-` workloads (3 members on loopback). Both servers \
         run with the same flags and their defaults; ratios are cairn/etcd. Load average \
         (1/5/15 min) before: {load_before}, after: {}.\n\n## Results\n\n{}\n\
         ## Targets\n\n{}",
        t0.elapsed().as_secs_f64() / 60.0,
        loadavg(),
        markdown_table(&rows),
        markdown_targets(&rows),
    );
    println!("{report}");
    if let Some(p) = cli.markdown {
        std::fs::write(&p, &report)?;
    }
    if let Some(p) = cli.json {
        std::fs::write(&p, serde_json::to_string_pretty(&rows_json(&rows))?)?;
    }
    Ok(())
}
