//! Fault hooks for the robustness harness (`crates/cairn-robust`), which spawns real `cairn`
//! binaries: failpoints that crash or stall a member at chosen spots, and deliberately planted
//! bugs the harness must catch. Both are compiled in only with Cargo features that no real
//! build enables; a binary without them refuses to start when asked for them, so the harness
//! can tell it was given the wrong binary.
//!
//! # Failpoints (feature `failpoints`)
//!
//! `CAIRN_FAILPOINTS` = `name=actions;name2=actions`, in the `fail` crate's action syntax
//! (`return`, `sleep(ms)`, `delay(ms)`, `pause`, `panic`, `off`, with `p%` and `cnt*` prefixes
//! and `->` chains; e.g. `raft_after_save=10%return`, `backend_before_commit=1*off->1*return`,
//! `snapshot_send=sleep(2000)`). `return` means *crash here*: the member logs
//! `failpoint <name>: crashing` and exits with status [`CRASH_EXIT_CODE`] at once, with no
//! cleanup. Unknown names and malformed actions refuse the start.
//!
//! | name | where | armed |
//! |---|---|---|
//! | `raft_before_save` | Ready loop: before a Ready's snapshot metadata, entries and HardState are written to the WAL | when serving |
//! | `raft_after_save` | Ready loop: after that write and its fsync, before the Ready's messages go out and its committed entries go to apply | when serving |
//! | `backend_before_commit` / `backend_after_commit` | around the backend commit of an apply batch | when serving |
//! | `compact_before_commit` / `compact_after_commit` | around the commit of each physical compaction step that removes something | at start |
//! | `snapshot_send` | leader: after the first chunk of a snapshot stream to a follower was sent | at start |
//! | `snapshot_before_install` / `snapshot_after_install` | receiver: after the snapshot's WAL record, before / after the received backend is swapped in | at start |
//!
//! *When serving*: start-up itself saves Readies and applies entries (the election, the
//! leader's empty entry, publishing this member's attributes), so those failpoints are armed
//! only once the member is ready to serve clients: a member started with
//! `raft_after_save=return` comes up and crashes on the first write after that. The others are
//! armed at once, since a restarted member may catch up by snapshot, or resume a compaction,
//! before it serves.
//!
//! # Planted bugs (feature `planted-bugs`)
//!
//! `CAIRN_PLANTED_BUG` = one of the names of [`Bug`]; an unknown name refuses the start. The
//! choice is read once per process (a [`OnceLock`](std::sync::OnceLock)); [`planted`] is a
//! cheap check, a constant `false` without the feature.

use crate::server::ServerError;

/// The environment variable configuring failpoints.
pub const FAILPOINTS_ENV: &str = "CAIRN_FAILPOINTS";
/// The environment variable selecting a planted bug.
pub const PLANTED_BUG_ENV: &str = "CAIRN_PLANTED_BUG";
/// Exit status of a member crashed by a failpoint's `return` action.
pub const CRASH_EXIT_CODE: i32 = 86;

/// When a failpoint configured at start begins to fire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arming {
    /// As soon as the server starts (recovery, catch-up and compaction resumed at start
    /// included).
    AtStart,
    /// Once the member is ready to serve clients (start-up's own writes do not count).
    WhenServing,
}

/// Every failpoint of cairn, with when it is armed (see the module docs for where each sits).
pub const FAILPOINTS: &[(&str, Arming)] = &[
    ("raft_before_save", Arming::WhenServing),
    ("raft_after_save", Arming::WhenServing),
    ("backend_before_commit", Arming::WhenServing),
    ("backend_after_commit", Arming::WhenServing),
    ("compact_before_commit", Arming::AtStart),
    ("compact_after_commit", Arming::AtStart),
    ("snapshot_send", Arming::AtStart),
    ("snapshot_before_install", Arming::AtStart),
    ("snapshot_after_install", Arming::AtStart),
];

/// The crash of a failpoint's `return` action: logs and exits at once with
/// [`CRASH_EXIT_CODE`], with no cleanup (no destructors, no WAL or backend flush), as a
/// `kill -9` at that spot would. (cairn-raft and cairn-mvcc have the same tiny helper.)
#[cfg(feature = "failpoints")]
pub fn crash_at(name: &str) -> ! {
    tracing::error!("failpoint {name}: crashing");
    std::process::exit(CRASH_EXIT_CODE)
}

/// A failpoint (fail crate) whose `return` action crashes the process ([`crash_at`]);
/// compiled to nothing without the `failpoints` feature.
macro_rules! crash_point {
    ($name:literal) => {
        fail::fail_point!($name, |_| $crate::faults::crash_at($name))
    };
}
pub(crate) use crash_point;

/// A deliberate bug for checking that the robustness harness notices broken guarantees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Bug {
    /// `ack-before-fsync`: a Ready's WAL records are handed to the kernel but fsynced only
    /// about once a second, while its entries are acknowledged and applied at once
    /// (`NodeConfig::ack_before_fsync`). A power loss then loses acknowledged writes.
    AckBeforeFsync,
    /// `read-without-read-index`: linearizable reads skip ReadIndex and the wait for apply
    /// (`Core::read_barrier`), so a partitioned old leader or a lagging follower answers stale.
    ReadWithoutReadIndex,
    /// `drop-watch-event-on-compaction`: after each applied compaction the watch hub silently
    /// drops the next event it would deliver (to whichever watcher gets one first).
    DropWatchEventOnCompaction,
    /// `split-txn-events`: a watch response carrying several events of one revision is split
    /// in two responses, between events of that revision.
    SplitTxnEvents,
}

impl Bug {
    /// Every planted bug.
    pub const ALL: [Bug; 4] = [
        Bug::AckBeforeFsync,
        Bug::ReadWithoutReadIndex,
        Bug::DropWatchEventOnCompaction,
        Bug::SplitTxnEvents,
    ];

    /// The name `CAIRN_PLANTED_BUG` takes.
    pub fn name(self) -> &'static str {
        match self {
            Bug::AckBeforeFsync => "ack-before-fsync",
            Bug::ReadWithoutReadIndex => "read-without-read-index",
            Bug::DropWatchEventOnCompaction => "drop-watch-event-on-compaction",
            Bug::SplitTxnEvents => "split-txn-events",
        }
    }

    /// The bug called `name`.
    pub fn from_name(name: &str) -> Option<Bug> {
        Bug::ALL.into_iter().find(|b| b.name() == name)
    }
}

/// The planted bug of this process, chosen at the first start.
#[cfg(feature = "planted-bugs")]
static PLANTED: std::sync::OnceLock<Option<Bug>> = std::sync::OnceLock::new();

/// Whether `bug` is planted in this process. Always `false` without the `planted-bugs`
/// feature, and before the server started.
#[cfg(feature = "planted-bugs")]
pub fn planted(bug: Bug) -> bool {
    PLANTED.get().copied().flatten() == Some(bug)
}

/// Whether `bug` is planted in this process: never, without the `planted-bugs` feature.
#[cfg(not(feature = "planted-bugs"))]
#[inline(always)]
pub fn planted(_bug: Bug) -> bool {
    false
}

/// Failpoints configured at start that wait until the member serves clients.
#[derive(Debug, Default)]
#[must_use = "failpoints armed when serving need arm_when_serving"]
pub struct Faults {
    when_serving: Vec<(String, String)>,
}

impl Faults {
    /// Arms the failpoints that wait for the member to serve clients; called right before
    /// "ready to serve client requests".
    pub fn arm_when_serving(self) {
        for (name, actions) in self.when_serving {
            // Validated in configure_from_env.
            if let Err(e) = fail::cfg(name.as_str(), &actions) {
                tracing::error!(failpoint = %name, error = %e, "failpoint could not be armed");
            } else {
                tracing::info!(failpoint = %name, actions = %actions, "failpoint armed");
            }
        }
    }
}

/// The value of `var` if it is set at all (even empty); a value that is not Unicode refuses.
fn env_value(var: &str) -> Result<Option<String>, ServerError> {
    match std::env::var(var) {
        Ok(v) => Ok(Some(v)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => {
            Err(ServerError::Config(format!("{var} is not valid Unicode")))
        }
    }
}

/// Reads `CAIRN_FAILPOINTS` and `CAIRN_PLANTED_BUG` (once, at the top of `server::start`),
/// configures the failpoints armed at start and plants the bug. Refuses the start when a
/// variable is set but the binary lacks its feature, or its value is malformed.
pub fn configure_from_env() -> Result<Faults, ServerError> {
    let failpoints = env_value(FAILPOINTS_ENV)?;
    let bug = env_value(PLANTED_BUG_ENV)?;
    let bug = parse_bug(bug.as_deref()).map_err(ServerError::Config)?;
    let failpoints = match failpoints {
        Some(spec) => parse_failpoints(&spec).map_err(ServerError::Config)?,
        None => Vec::new(),
    };
    plant(bug)?;
    let mut faults = Faults::default();
    for (name, actions, arming) in failpoints {
        match arming {
            Arming::AtStart => {
                fail::cfg(name.as_str(), &actions)
                    .map_err(|e| ServerError::Config(format!("{FAILPOINTS_ENV}: {name}: {e}")))?;
                tracing::info!(failpoint = %name, actions = %actions, "failpoint armed");
            }
            Arming::WhenServing => {
                tracing::info!(failpoint = %name, actions = %actions, "failpoint configured; armed once serving clients");
                faults.when_serving.push((name, actions));
            }
        }
    }
    Ok(faults)
}

/// Records the planted bug for the process (the first start decides; a later start in the
/// same process asking for another one refuses).
#[cfg(feature = "planted-bugs")]
fn plant(bug: Option<Bug>) -> Result<(), ServerError> {
    let current = *PLANTED.get_or_init(|| bug);
    if current != bug {
        return Err(ServerError::Config(format!(
            "{PLANTED_BUG_ENV}: this process already runs with planted bug {:?}",
            current.map(Bug::name)
        )));
    }
    if let Some(b) = bug {
        tracing::warn!(
            bug = b.name(),
            "PLANTED BUG ACTIVE: this member deliberately breaks its guarantees (test build)"
        );
    }
    Ok(())
}

/// Without the feature, [`parse_bug`] only ever returns `None`.
#[cfg(not(feature = "planted-bugs"))]
fn plant(_bug: Option<Bug>) -> Result<(), ServerError> {
    Ok(())
}

/// The bug `CAIRN_PLANTED_BUG` names (`value` is the variable's value, `None` when unset).
pub fn parse_bug(value: Option<&str>) -> Result<Option<Bug>, String> {
    let Some(value) = value else {
        return Ok(None);
    };
    if !cfg!(feature = "planted-bugs") {
        return Err(format!(
            "{PLANTED_BUG_ENV} is set but this cairn binary was built without the \"planted-bugs\" feature"
        ));
    }
    let name = value.trim();
    Bug::from_name(name).map(Some).ok_or_else(|| {
        let known: Vec<&str> = Bug::ALL.into_iter().map(Bug::name).collect();
        format!(
            "{PLANTED_BUG_ENV}={value:?}: unknown planted bug (known: {})",
            known.join(", ")
        )
    })
}

/// Parses `CAIRN_FAILPOINTS` (`name=actions;...`; empty parts are skipped) into
/// `(name, actions, arming)`, checking every name is a cairn failpoint and every action list
/// is valid `fail` syntax.
pub fn parse_failpoints(value: &str) -> Result<Vec<(String, String, Arming)>, String> {
    if !cfg!(feature = "failpoints") {
        return Err(format!(
            "{FAILPOINTS_ENV} is set but this cairn binary was built without the \"failpoints\" feature"
        ));
    }
    let mut out: Vec<(String, String, Arming)> = Vec::new();
    for part in value.split(';') {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let Some((name, actions)) = part.split_once('=') else {
            return Err(format!(
                "{FAILPOINTS_ENV}: {part:?} is not name=actions (e.g. raft_after_save=10%return)"
            ));
        };
        let (name, actions) = (name.trim(), actions.trim());
        let Some(&(_, arming)) = FAILPOINTS.iter().find(|(n, _)| *n == name) else {
            let known: Vec<&str> = FAILPOINTS.iter().map(|(n, _)| *n).collect();
            return Err(format!(
                "{FAILPOINTS_ENV}: unknown failpoint {name:?} (known: {})",
                known.join(", ")
            ));
        };
        validate_actions(actions)
            .map_err(|e| format!("{FAILPOINTS_ENV}: {name}={actions:?}: {e}"))?;
        if out.iter().any(|(n, _, _)| n == name) {
            return Err(format!("{FAILPOINTS_ENV}: failpoint {name} is given twice"));
        }
        out.push((name.to_string(), actions.to_string(), arming));
    }
    Ok(out)
}

/// Checks `actions` with the fail crate's own parser, on a failpoint name no code evaluates.
fn validate_actions(actions: &str) -> Result<(), String> {
    const SCRATCH: &str = "cairn_validate_failpoint_actions";
    let r = fail::cfg(SCRATCH, actions);
    fail::remove(SCRATCH);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bug_names_round_trip() {
        for b in Bug::ALL {
            assert_eq!(Bug::from_name(b.name()), Some(b));
        }
        assert_eq!(Bug::from_name("nope"), None);
        assert_eq!(parse_bug(None), Ok(None));
    }

    #[cfg(feature = "planted-bugs")]
    #[test]
    fn planted_bug_values() {
        assert_eq!(
            parse_bug(Some("split-txn-events")),
            Ok(Some(Bug::SplitTxnEvents))
        );
        let err = parse_bug(Some("typo")).unwrap_err();
        assert!(
            err.contains("CAIRN_PLANTED_BUG") && err.contains("ack-before-fsync"),
            "{err}"
        );
    }

    #[cfg(not(feature = "planted-bugs"))]
    #[test]
    fn planted_bug_without_the_feature_refuses() {
        assert_eq!(
            parse_bug(Some("split-txn-events")).unwrap_err(),
            "CAIRN_PLANTED_BUG is set but this cairn binary was built without the \"planted-bugs\" feature"
        );
        // Never planted in such a build.
        assert!(Bug::ALL.into_iter().all(|b| !planted(b)));
    }

    #[cfg(feature = "failpoints")]
    #[test]
    fn failpoint_values() {
        let got = parse_failpoints(
            " raft_after_save=10%return; backend_before_commit=1*off->1*return;;snapshot_send=sleep(2000);",
        )
        .unwrap();
        assert_eq!(
            got,
            vec![
                (
                    "raft_after_save".into(),
                    "10%return".into(),
                    Arming::WhenServing
                ),
                (
                    "backend_before_commit".into(),
                    "1*off->1*return".into(),
                    Arming::WhenServing
                ),
                (
                    "snapshot_send".into(),
                    "sleep(2000)".into(),
                    Arming::AtStart
                ),
            ]
        );
        assert_eq!(parse_failpoints(""), Ok(vec![]));
        for bad in [
            "raft_after_save",
            "raft_after_safe=return",
            "raft_after_save=retrun",
            "raft_after_save=sleep(x)",
            "raft_after_save=return;raft_after_save=off",
        ] {
            let err = parse_failpoints(bad).unwrap_err();
            assert!(err.starts_with("CAIRN_FAILPOINTS"), "{bad}: {err}");
        }
    }

    #[cfg(not(feature = "failpoints"))]
    #[test]
    fn failpoints_without_the_feature_refuse() {
        assert_eq!(
            parse_failpoints("raft_after_save=return").unwrap_err(),
            "CAIRN_FAILPOINTS is set but this cairn binary was built without the \"failpoints\" feature"
        );
    }
}
