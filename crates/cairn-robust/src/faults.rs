//! The fault catalogue and its injection.
//!
//! A run has one [`FaultKind`]; [`FaultPlan::choose`] draws its parameters (target, timing,
//! durations, probabilities, failpoint) from the run's seed, and [`inject`] carries it out
//! against a [`TestCluster`] while the traffic runs, logging what it did and when into a
//! timeline. Every fault ends healed: partitions lifted, stopped members continued, crashed
//! members restarted (the run heals again at its end, whatever happened).
//!
//! | kind | what |
//! |---|---|
//! | `blackhole` | a symmetric partition of the leader or a follower: its proxy and every connection it opens either swallow all bytes (connections stay up, carrying nothing) or refuse and cut connections |
//! | `one-way-drop` | everything a member receives, or everything it sends, is swallowed |
//! | `delay` | every peer link delayed by 10–60 ms plus up to 0–80 ms of jitter per chunk |
//! | `drop-share` | every chunk on every peer link cuts its connection with probability 1–8% (see `cairn_tests::proxy`: a TCP proxy cannot drop bytes inside a stream without corrupting it; cutting connections at random is the closest a proxy gets to dropping a share of packets) |
//! | `kill-follower`, `kill-leader`, `kill-all` | SIGKILL, down for a while, restart |
//! | `stop-cont` | SIGSTOP the leader or a follower for 1–2.5 s (longer than the 500 ms election timeout), then SIGCONT |
//! | `member-replace` | `member remove`, wipe the data dir, `member add` with the same peer URL, start with `--initial-cluster-state existing` |
//! | `failpoint` | a member (re)started with `CAIRN_FAILPOINTS` set to crash (exit 86) at a failpoint inside cairn after some hits; restarted without it after the crash |
//! | `unsynced-loss` | SIGKILL, then the WAL truncated back to its last fsync (`cairn_raft::wal::truncate_to_synced`), as a power loss; restart |
//!
//! Network faults and member replacement need 3 members; on 1 member `kill-leader` and
//! `kill-all` are the same.

use crate::cluster::{TestCluster, READY_LIMIT};
use crate::record::Clock;
use anyhow::{bail, Context, Result};
use rand::rngs::StdRng;
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

/// The environment variable that configures cairn's failpoints.
pub const FAILPOINTS_ENV: &str = "CAIRN_FAILPOINTS";
/// The environment variable that selects a planted bug.
pub const PLANTED_BUG_ENV: &str = "CAIRN_PLANTED_BUG";
/// The exit status of a failpoint crash.
pub const FAILPOINT_EXIT: i32 = 86;

/// Every failpoint inside cairn.
pub const FAILPOINTS: [&str; 9] = [
    "raft_before_save",
    "raft_after_save",
    "backend_before_commit",
    "backend_after_commit",
    "snapshot_send",
    "snapshot_before_install",
    "snapshot_after_install",
    "compact_before_commit",
    "compact_after_commit",
];

/// A kind of fault; a run injects one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum FaultKind {
    /// Symmetric partition of one member.
    Blackhole,
    /// Everything one member receives, or sends, is swallowed.
    OneWayDrop,
    /// Every peer link delayed, with jitter.
    DelayJitter,
    /// Peer connections cut at random.
    DropShare,
    /// SIGKILL a follower.
    KillFollower,
    /// SIGKILL the leader.
    KillLeader,
    /// SIGKILL every member.
    KillAll,
    /// SIGSTOP then SIGCONT.
    StopCont,
    /// Remove, wipe and re-add a member.
    MemberReplace,
    /// Crash at a failpoint inside cairn.
    Failpoint,
    /// SIGKILL and lose what was not fsynced.
    UnsyncedLoss,
    /// No fault.
    None,
}

impl FaultKind {
    /// Every fault kind (without `None`).
    pub const ALL: [FaultKind; 11] = [
        FaultKind::Blackhole,
        FaultKind::OneWayDrop,
        FaultKind::DelayJitter,
        FaultKind::DropShare,
        FaultKind::KillFollower,
        FaultKind::KillLeader,
        FaultKind::KillAll,
        FaultKind::StopCont,
        FaultKind::MemberReplace,
        FaultKind::Failpoint,
        FaultKind::UnsyncedLoss,
    ];

    /// The name used in run names and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Blackhole => "blackhole",
            FaultKind::OneWayDrop => "one-way-drop",
            FaultKind::DelayJitter => "delay",
            FaultKind::DropShare => "drop-share",
            FaultKind::KillFollower => "kill-follower",
            FaultKind::KillLeader => "kill-leader",
            FaultKind::KillAll => "kill-all",
            FaultKind::StopCont => "stop-cont",
            FaultKind::MemberReplace => "member-replace",
            FaultKind::Failpoint => "failpoint",
            FaultKind::UnsyncedLoss => "unsynced-loss",
            FaultKind::None => "none",
        }
    }

    /// Parses [`FaultKind::name`].
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .chain([FaultKind::None])
            .find(|k| k.name() == s)
    }

    /// Whether it needs more than one member.
    pub fn needs_peers(self) -> bool {
        matches!(
            self,
            FaultKind::Blackhole
                | FaultKind::OneWayDrop
                | FaultKind::DelayJitter
                | FaultKind::DropShare
                | FaultKind::KillFollower
                | FaultKind::MemberReplace
        )
    }
}

/// Which member a fault hits, decided when it is injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Target {
    /// The leader at that time.
    Leader,
    /// A follower at that time (the first after the leader, in member order).
    Follower,
    /// Every member.
    All,
}

/// A fault with every parameter drawn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultPlan {
    /// The kind.
    pub kind: FaultKind,
    /// How long after the traffic starts it is injected.
    pub after: Duration,
    /// How long it lasts (a partition, a stop, a member being down).
    pub hold: Duration,
    /// Whom it hits.
    pub target: Target,
    /// Partitions: swallow bytes (true) or refuse connections (false). One-way drops:
    /// inbound (true) or outbound (false).
    pub flag: bool,
    /// `delay`: the base delay.
    pub delay: Duration,
    /// `delay`: the jitter.
    pub jitter: Duration,
    /// `drop-share`: the probability per chunk.
    pub cut_chance: f64,
    /// `failpoint`: which one.
    pub failpoint: Option<String>,
    /// `failpoint`: its fail-crate actions (`N*off->return`).
    pub actions: Option<String>,
}

impl FaultPlan {
    /// Draws the parameters of a `kind` fault for a cluster of `members`; `failpoint` forces
    /// a failpoint (else one is drawn).
    pub fn choose(
        kind: FaultKind,
        members: usize,
        rng: &mut StdRng,
        failpoint: Option<&str>,
    ) -> FaultPlan {
        let mut plan = FaultPlan {
            kind,
            after: Duration::from_millis(rng.gen_range(800..1800)),
            hold: Duration::from_millis(rng.gen_range(1500..3500)),
            target: if rng.gen_bool(0.5) {
                Target::Leader
            } else {
                Target::Follower
            },
            flag: rng.gen_bool(0.5),
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            cut_chance: 0.0,
            failpoint: None,
            actions: None,
        };
        if members == 1 {
            plan.target = Target::Leader;
        }
        match kind {
            FaultKind::KillFollower => plan.target = Target::Follower,
            FaultKind::KillLeader => plan.target = Target::Leader,
            FaultKind::KillAll => plan.target = Target::All,
            FaultKind::StopCont => plan.hold = Duration::from_millis(rng.gen_range(1000..2500)),
            FaultKind::DelayJitter => {
                plan.target = Target::All;
                plan.delay = Duration::from_millis(rng.gen_range(10..60));
                plan.jitter = Duration::from_millis(rng.gen_range(0..80));
            }
            FaultKind::DropShare => {
                plan.target = Target::All;
                plan.cut_chance = rng.gen_range(0.01..0.08);
            }
            FaultKind::UnsyncedLoss => {
                if members > 1 && rng.gen_bool(0.3) {
                    plan.target = Target::All;
                }
                plan.hold = Duration::from_millis(rng.gen_range(200..1000));
            }
            FaultKind::Failpoint => {
                let fp = match failpoint {
                    Some(f) => f.to_string(),
                    None => {
                        let usable: Vec<&str> = FAILPOINTS
                            .iter()
                            .copied()
                            .filter(|f| members > 1 || !f.starts_with("snapshot"))
                            .collect();
                        usable[rng.gen_range(0..usable.len())].to_string()
                    }
                };
                let skip = if fp.starts_with("compact") {
                    rng.gen_range(0..3)
                } else if fp.starts_with("snapshot") {
                    0
                } else {
                    rng.gen_range(5..60)
                };
                plan.actions = Some(if skip == 0 {
                    "return".to_string()
                } else {
                    format!("{skip}*off->return")
                });
                if fp == "snapshot_send" {
                    plan.target = Target::Leader;
                } else if fp.starts_with("snapshot") {
                    plan.target = Target::Follower;
                }
                plan.failpoint = Some(fp);
            }
            _ => {}
        }
        plan
    }

    /// One line for logs and reports.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "{} target={:?} after={:?} hold={:?}",
            self.kind.name(),
            self.target,
            self.after,
            self.hold
        );
        match self.kind {
            FaultKind::Blackhole => {
                s += if self.flag { " (swallow)" } else { " (refuse)" };
            }
            FaultKind::OneWayDrop => {
                s += if self.flag {
                    " (inbound)"
                } else {
                    " (outbound)"
                };
            }
            FaultKind::DelayJitter => {
                s += &format!(" delay={:?} jitter={:?}", self.delay, self.jitter)
            }
            FaultKind::DropShare => s += &format!(" cut_chance={:.3}", self.cut_chance),
            FaultKind::Failpoint => {
                s += &format!(
                    " {}={}",
                    self.failpoint.as_deref().unwrap_or("?"),
                    self.actions.as_deref().unwrap_or("?")
                )
            }
            _ => {}
        }
        s
    }
}

/// One thing the injector did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineEntry {
    /// When ([`Clock`] nanoseconds).
    pub at: u64,
    /// What.
    pub what: String,
}

/// What the injector did, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timeline {
    /// The entries.
    pub entries: Vec<TimelineEntry>,
    /// Whether the fault's crash happened (failpoints: a member exited 86).
    pub fired: bool,
}

impl Timeline {
    /// Records `what` now.
    pub fn log(&mut self, clock: &Clock, what: impl Into<String>) {
        let what = what.into();
        println!("  [{:>7.3}s] {what}", clock.now() as f64 / 1e9);
        self.entries.push(TimelineEntry {
            at: clock.now(),
            what,
        });
    }
}

/// Resolves a target to member indexes.
async fn resolve(cluster: &mut TestCluster, target: Target) -> Result<Vec<usize>> {
    if target == Target::All {
        return Ok((0..cluster.len()).collect());
    }
    let leader = cluster.wait_leader(Duration::from_secs(10)).await?;
    Ok(vec![match target {
        Target::Leader => leader,
        _ => (leader + 1) % cluster.len(),
    }])
}

/// Whether member `i` has exited with the failpoint crash status.
fn crashed_at_failpoint(cluster: &mut TestCluster, i: usize) -> bool {
    cluster
        .exit_status(i)
        .is_some_and(|st| st.code() == Some(FAILPOINT_EXIT))
}

/// Restarts every member that exited at a failpoint, without failpoints; returns how many.
fn restart_crashed(cluster: &mut TestCluster, clock: &Clock, tl: &mut Timeline) -> Result<usize> {
    let mut n = 0;
    for i in 0..cluster.len() {
        if crashed_at_failpoint(cluster, i) {
            tl.fired = true;
            tl.log(
                clock,
                format!(
                    "{} crashed at its failpoint (exit 86): restarting without failpoints",
                    cluster.name(i)
                ),
            );
            cluster.member_mut(i).set_env(FAILPOINTS_ENV, None);
            cluster.spawn(i)?;
            n += 1;
        } else if !cluster.is_running(i) {
            let st = cluster.exit_status(i);
            if let Some(st) = st {
                tl.log(
                    clock,
                    format!(
                        "{} exited unexpectedly ({st}, signal {:?}): restarting",
                        cluster.name(i),
                        st.signal()
                    ),
                );
                cluster.member_mut(i).set_env(FAILPOINTS_ENV, None);
                cluster.spawn(i)?;
            }
        }
    }
    Ok(n)
}

/// The environment members need at the first start for `plan` (failpoints that must be armed
/// from the beginning): per member index.
pub fn initial_env(plan: &FaultPlan, members: usize) -> Vec<Vec<(String, String)>> {
    let mut env = vec![Vec::new(); members];
    if let (FaultKind::Failpoint, Some(fp), Some(actions)) =
        (plan.kind, &plan.failpoint, &plan.actions)
    {
        if fp == "snapshot_send" {
            // Whoever leads when the snapshot is sent.
            for e in &mut env {
                e.push((FAILPOINTS_ENV.to_string(), format!("{fp}={actions}")));
            }
        }
    }
    env
}

/// Waits for `d`, restarting members that crash at failpoints meanwhile.
async fn hold(
    cluster: &mut TestCluster,
    d: Duration,
    clock: &Clock,
    tl: &mut Timeline,
) -> Result<()> {
    let until = Instant::now() + d;
    while Instant::now() < until {
        restart_crashed(cluster, clock, tl)?;
        tokio::time::sleep(Duration::from_millis(50).min(until - Instant::now())).await;
    }
    Ok(())
}

/// Carries `plan` out (the traffic is already running), ending with the fault lifted and
/// every member started. The caller waits `plan.after` first.
pub async fn inject(
    plan: &FaultPlan,
    cluster: &mut TestCluster,
    clock: &Clock,
    tl: &mut Timeline,
) -> Result<()> {
    match plan.kind {
        FaultKind::None => {}
        FaultKind::Blackhole => {
            let t = resolve(cluster, plan.target).await?[0];
            tl.log(
                clock,
                format!(
                    "partition {} ({:?}, {})",
                    cluster.name(t),
                    plan.target,
                    if plan.flag { "swallowing" } else { "refusing" }
                ),
            );
            cluster.partition(t, plan.flag);
            hold(cluster, plan.hold, clock, tl).await?;
            cluster.heal_network();
            tl.log(clock, "healed the partition");
        }
        FaultKind::OneWayDrop => {
            let t = resolve(cluster, plan.target).await?[0];
            tl.log(
                clock,
                format!(
                    "drop everything {} {} ({:?})",
                    if plan.flag { "sent to" } else { "sent by" },
                    cluster.name(t),
                    plan.target
                ),
            );
            cluster.drop_one_way(t, plan.flag);
            hold(cluster, plan.hold, clock, tl).await?;
            cluster.heal_network();
            tl.log(clock, "healed the one-way drop");
        }
        FaultKind::DelayJitter => {
            tl.log(
                clock,
                format!(
                    "delay every peer link {:?} + jitter {:?}",
                    plan.delay, plan.jitter
                ),
            );
            cluster.delay_all(plan.delay, plan.jitter);
            hold(cluster, plan.hold, clock, tl).await?;
            cluster.heal_network();
            tl.log(clock, "removed the delay");
        }
        FaultKind::DropShare => {
            tl.log(
                clock,
                format!(
                    "cut peer connections with probability {:.3} per chunk",
                    plan.cut_chance
                ),
            );
            cluster.cut_chance_all(plan.cut_chance);
            hold(cluster, plan.hold, clock, tl).await?;
            cluster.heal_network();
            tl.log(clock, "stopped cutting connections");
        }
        FaultKind::KillFollower | FaultKind::KillLeader | FaultKind::KillAll => {
            let targets = resolve(cluster, plan.target).await?;
            for &t in &targets {
                tl.log(
                    clock,
                    format!("SIGKILL {} ({:?})", cluster.name(t), plan.target),
                );
                cluster.kill(t);
            }
            hold(cluster, plan.hold, clock, tl).await?;
            restart(cluster, &targets, clock, tl).await?;
        }
        FaultKind::StopCont => {
            let t = resolve(cluster, plan.target).await?[0];
            tl.log(
                clock,
                format!("SIGSTOP {} ({:?})", cluster.name(t), plan.target),
            );
            cluster.pause(t)?;
            tokio::time::sleep(plan.hold).await;
            cluster.resume(t)?;
            tl.log(clock, format!("SIGCONT {}", cluster.name(t)));
        }
        FaultKind::MemberReplace => {
            let t = resolve(cluster, plan.target).await?[0];
            tl.log(
                clock,
                format!(
                    "replace {} ({:?}, id {:x}): remove, wipe, add, start",
                    cluster.name(t),
                    plan.target,
                    cluster.id(t)
                ),
            );
            cluster.replace(t).await?;
            tl.log(
                clock,
                format!("{} is back as id {:x}", cluster.name(t), cluster.id(t)),
            );
        }
        FaultKind::UnsyncedLoss => {
            let targets = resolve(cluster, plan.target).await?;
            for &t in &targets {
                tl.log(
                    clock,
                    format!("SIGKILL {} ({:?})", cluster.name(t), plan.target),
                );
                cluster.kill(t);
            }
            for &t in &targets {
                let report = cairn_raft::wal::truncate_to_synced(&cluster.wal_dir(t))
                    .with_context(|| format!("truncating the WAL of {}", cluster.name(t)))?;
                tl.log(
                    clock,
                    format!(
                        "truncated the WAL of {} to its last fsync: {} bytes dropped",
                        cluster.name(t),
                        report.dropped_bytes()
                    ),
                );
                if report.dropped_bytes() > 0 {
                    tl.fired = true;
                }
            }
            hold(cluster, plan.hold, clock, tl).await?;
            restart(cluster, &targets, clock, tl).await?;
        }
        FaultKind::Failpoint => failpoint(plan, cluster, clock, tl).await?,
    }
    Ok(())
}

/// Starts `targets` again and waits until they are ready.
async fn restart(
    cluster: &mut TestCluster,
    targets: &[usize],
    clock: &Clock,
    tl: &mut Timeline,
) -> Result<()> {
    for &t in targets {
        cluster.spawn(t)?;
    }
    for &t in targets {
        cluster.wait_ready(t, READY_LIMIT).await?;
    }
    tl.log(
        clock,
        format!(
            "restarted {}",
            targets
                .iter()
                .map(|&t| cluster.name(t))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    );
    Ok(())
}

/// How long a failpoint may take to fire once armed.
const FIRE_LIMIT: Duration = Duration::from_secs(8);

async fn failpoint(
    plan: &FaultPlan,
    cluster: &mut TestCluster,
    clock: &Clock,
    tl: &mut Timeline,
) -> Result<()> {
    let (Some(fp), Some(actions)) = (&plan.failpoint, &plan.actions) else {
        bail!("failpoint plan without a failpoint");
    };
    let setting = format!("{fp}={actions}");
    let t = resolve(cluster, plan.target).await?[0];
    if fp == "snapshot_send" || fp.starts_with("snapshot_") {
        // A snapshot is sent to a follower that fell behind the leader's compacted log: take
        // one down for a while under traffic, then bring it back.
        let f = if fp == "snapshot_send" {
            (t + 1) % cluster.len()
        } else {
            t
        };
        tl.log(
            clock,
            format!("SIGKILL {} so that it needs a snapshot", cluster.name(f)),
        );
        cluster.kill(f);
        hold(cluster, plan.hold + Duration::from_secs(1), clock, tl).await?;
        if fp != "snapshot_send" {
            cluster
                .member_mut(f)
                .set_env(FAILPOINTS_ENV, Some(&setting));
        }
        tl.log(
            clock,
            format!(
                "restart {}{}",
                cluster.name(f),
                if fp == "snapshot_send" {
                    String::new()
                } else {
                    format!(" with {FAILPOINTS_ENV}={setting}")
                }
            ),
        );
        cluster.spawn(f)?;
    } else {
        tl.log(
            clock,
            format!(
                "restart {} ({:?}) with {FAILPOINTS_ENV}={setting}",
                cluster.name(t),
                plan.target
            ),
        );
        cluster.kill(t);
        cluster
            .member_mut(t)
            .set_env(FAILPOINTS_ENV, Some(&setting));
        cluster.spawn(t)?;
    }
    // Wait for the crash, restarting whoever crashes.
    let until = Instant::now() + FIRE_LIMIT;
    while Instant::now() < until && !tl.fired {
        restart_crashed(cluster, clock, tl)?;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if !tl.fired {
        tl.log(clock, format!("{fp} did not fire within {FIRE_LIMIT:?}"));
    }
    // Disarm everywhere: crashed members come back without it first, then members still
    // armed are restarted without it.
    restart_crashed(cluster, clock, tl)?;
    for i in 0..cluster.len() {
        let armed = cluster
            .member_mut(i)
            .env()
            .iter()
            .any(|(k, _)| k == FAILPOINTS_ENV);
        if armed {
            cluster.member_mut(i).set_env(FAILPOINTS_ENV, None);
            if cluster.is_running(i) {
                // One at a time: never more members down than the fault itself took.
                tl.log(clock, format!("restart {} to disarm {fp}", cluster.name(i)));
                cluster.kill(i);
                cluster.spawn(i)?;
                cluster.wait_ready(i, READY_LIMIT).await?;
            }
        }
    }
    hold(cluster, Duration::from_millis(300), clock, tl).await?;
    restart_crashed(cluster, clock, tl)?;
    for i in 0..cluster.len() {
        if !cluster.is_running(i) {
            cluster.spawn(i)?;
        }
    }
    for i in 0..cluster.len() {
        cluster.wait_ready(i, READY_LIMIT).await?;
    }
    tl.log(clock, "every member is up again");
    Ok(())
}
