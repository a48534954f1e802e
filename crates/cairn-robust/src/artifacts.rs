//! What a failing run leaves behind, in `target/robustness/<run name>-<seed>/`:
//!
//! - `summary.txt`: the run, its seed, the fault plan and timeline, every violation, the
//!   linearizability failure explained, and the command that reproduces the run;
//! - `run.json`: the run's spec, seed, plan, timeline, compactions and check summary;
//! - `history.json`: every client request (call/return times in ns, request, outcome);
//! - `watches.json`: every watch stream with its responses;
//! - `<member>.log`: each member's log (every start of it).
//!
//! [`load`] reads a folder back, so its checks can be run again (`cairn-robust --recheck`).

use crate::compactor::Compaction;
use crate::record::{Kv, OpRecord, WatchStreamRecord};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The workspace's target directory (`CARGO_TARGET_DIR`, else `<workspace>/target`).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join("..")
                .join("target")
        })
}

/// Where runs leave their artifacts: `$CAIRN_ROBUST_ARTIFACTS`, else
/// `target/robustness`.
pub fn artifacts_root() -> PathBuf {
    std::env::var_os("CAIRN_ROBUST_ARTIFACTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("robustness"))
}

/// Everything a run recorded.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    /// The run's name.
    pub name: String,
    /// Its seed.
    pub seed: u64,
    /// Its spec, plan, timeline and check results (JSON, as `run.rs` builds them).
    pub meta: serde_json::Value,
    /// Every compaction sent.
    pub compactions: Vec<Compaction>,
    /// Every client request.
    pub ops: Vec<OpRecord>,
    /// Every watch stream.
    pub watches: Vec<WatchStreamRecord>,
    /// The final linearizable read (revision, keys).
    pub final_read: Option<(i64, Vec<Kv>)>,
}

/// Writes `record`, `summary` and the member logs (`(name, path)`) into a fresh folder and
/// returns it.
pub fn write(record: &RunRecord, summary: &str, logs: &[(String, PathBuf)]) -> Result<PathBuf> {
    let dir = artifacts_root().join(format!("{}-{}", record.name, record.seed));
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let json = |name: &str, v: &dyn erased::Json| -> Result<()> {
        let path = dir.join(name);
        std::fs::write(&path, v.to_json()?).with_context(|| format!("writing {}", path.display()))
    };
    json(
        "run.json",
        &serde_json::json!({
            "name": record.name,
            "seed": record.seed,
            "meta": record.meta,
            "compactions": record.compactions,
            "final_read": record.final_read,
        }),
    )?;
    std::fs::write(dir.join("history.json"), json_lines(&record.ops)?)?;
    std::fs::write(dir.join("watches.json"), json_lines(&record.watches)?)?;
    std::fs::write(dir.join("summary.txt"), summary)?;
    for (name, path) in logs {
        let _ = std::fs::copy(path, dir.join(format!("{name}.log")));
    }
    Ok(dir.canonicalize().unwrap_or(dir))
}

/// A JSON array with one compact item per line (valid JSON that greps well).
fn json_lines<T: Serialize>(items: &[T]) -> Result<String> {
    let mut out = String::from("[\n");
    for (i, item) in items.iter().enumerate() {
        out.push_str(&serde_json::to_string(item)?);
        out.push_str(if i + 1 < items.len() { ",\n" } else { "\n" });
    }
    out.push_str("]\n");
    Ok(out)
}

/// Reads a folder [`write`] made back.
pub fn load(dir: &Path) -> Result<RunRecord> {
    let read = |name: &str| -> Result<String> {
        let path = dir.join(name);
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
    };
    let run: serde_json::Value = serde_json::from_str(&read("run.json")?)?;
    Ok(RunRecord {
        name: run["name"].as_str().unwrap_or_default().to_string(),
        seed: run["seed"].as_u64().unwrap_or(0),
        meta: run["meta"].clone(),
        compactions: serde_json::from_value(run["compactions"].clone()).unwrap_or_default(),
        final_read: serde_json::from_value(run["final_read"].clone()).unwrap_or(None),
        ops: serde_json::from_str(&read("history.json")?)?,
        watches: serde_json::from_str(&read("watches.json")?)?,
    })
}

/// Serializing anything serde can, behind a trait object.
mod erased {
    /// A value that serializes to pretty JSON.
    pub trait Json {
        /// The JSON text.
        fn to_json(&self) -> anyhow::Result<String>;
    }

    impl<T: serde::Serialize> Json for T {
        fn to_json(&self) -> anyhow::Result<String> {
            Ok(serde_json::to_string_pretty(self)?)
        }
    }
}
