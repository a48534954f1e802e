//! One run: seed → cluster → watchers, compactor and traffic → one fault → heal everything,
//! restart dead members, wait until the members converge → final linearizable read of the
//! whole keyspace → watchers catch up → every check (`checks.rs`).
//!
//! Everything random in a run (the fault's target and timing, each client's operations and
//! keys, the watchers' variants, the compactor's lags) comes from its seed; timing itself
//! does not, so a seed reproduces the run's choices, not its interleaving. A run that fails
//! (a violation, a checker timeout, or a cluster that does not come back) writes its records
//! into a folder (`artifacts.rs`) and its failure message names that folder and the command
//! that reruns it.

use crate::artifacts::{self, RunRecord};
use crate::checks::{check_run, CheckSummary};
use crate::cluster::{connect, ClusterSpec, TestCluster, READY_LIMIT};
use crate::compactor::{run_compactor, Compaction};
use crate::faults::{
    initial_env, inject, FaultKind, FaultPlan, Timeline, FAILPOINTS_ENV, PLANTED_BUG_ENV,
};
use crate::record::{Clock, Kv, OpRecord, Outcome, Request, Response, Sink, UniqueValues};
use crate::traffic::{execute, TrafficClient, TrafficConfig, TrafficKind, ETCD_PREFIX, K8S_PREFIX};
use crate::watch::{run_watcher, watchers_for, Phase, Progress};
use anyhow::{anyhow, bail, Context, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The environment variable that overrides a run's (or a profile's) seed.
pub const SEED_ENV: &str = "CAIRN_ROBUST_SEED";
/// How long the linearizability check may take.
pub const LIN_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the members may take to converge after the fault is healed.
const CONVERGE_LIMIT: Duration = Duration::from_secs(30);
/// How long the watchers may take to catch up with the final revision.
const CATCH_UP_LIMIT: Duration = Duration::from_secs(20);
/// The client id of the final read.
const FINAL_CLIENT: u64 = 1 << 32;

/// A bug planted in cairn (feature `planted-bugs`), selected by `CAIRN_PLANTED_BUG`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PlantedBug {
    /// Writes acknowledged before the WAL is fsynced.
    AckBeforeFsync,
    /// Linearizable reads served without ReadIndex.
    ReadWithoutReadIndex,
    /// One watch event dropped when a compaction runs.
    DropWatchEventOnCompaction,
    /// A transaction's events split over two watch responses.
    SplitTxnEvents,
}

impl PlantedBug {
    /// Every planted bug.
    pub const ALL: [PlantedBug; 4] = [
        PlantedBug::AckBeforeFsync,
        PlantedBug::ReadWithoutReadIndex,
        PlantedBug::DropWatchEventOnCompaction,
        PlantedBug::SplitTxnEvents,
    ];

    /// The value of `CAIRN_PLANTED_BUG`.
    pub fn env_value(self) -> &'static str {
        match self {
            PlantedBug::AckBeforeFsync => "ack-before-fsync",
            PlantedBug::ReadWithoutReadIndex => "read-without-read-index",
            PlantedBug::DropWatchEventOnCompaction => "drop-watch-event-on-compaction",
            PlantedBug::SplitTxnEvents => "split-txn-events",
        }
    }

    /// Parses [`PlantedBug::env_value`].
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|b| b.env_value() == s)
    }
}

/// What one run does.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunSpec {
    /// Names the run (and its artifacts folder).
    pub name: String,
    /// 1 or 3.
    pub members: usize,
    /// The fault.
    pub fault: FaultKind,
    /// For `failpoint` faults: which (else drawn from the seed).
    pub failpoint: Option<String>,
    /// The traffic.
    pub traffic: TrafficConfig,
    /// How long the traffic runs (the fault happens inside).
    pub duration: Duration,
    /// A bug planted in every member.
    pub planted_bug: Option<PlantedBug>,
    /// Flags every member gets.
    pub flags: Vec<String>,
    /// Overrides how long the fault lasts (else drawn from the seed).
    pub fault_hold: Option<Duration>,
    /// Whether a failing run writes its artifacts (runs expected to fail, as with a planted
    /// bug, need not).
    pub write_artifacts: bool,
}

impl RunSpec {
    /// A run of `fault` on `members` members with `traffic`, named after them.
    pub fn new(members: usize, traffic: TrafficKind, fault: FaultKind) -> RunSpec {
        RunSpec {
            name: format!("{}-{members}m-{}", fault.name(), traffic.name()),
            members,
            fault,
            failpoint: None,
            traffic: TrafficConfig::new(traffic),
            duration: Duration::from_secs(6),
            planted_bug: None,
            flags: vec![
                "--snapshot-count=200".into(),
                "--snapshot-catchup-entries=50".into(),
            ],
            fault_hold: None,
            write_artifacts: true,
        }
    }

    /// Forces the failpoint of a `failpoint` run (and names the run after it).
    pub fn with_failpoint(mut self, fp: &str) -> RunSpec {
        self.failpoint = Some(fp.to_string());
        self.name = format!("{}-{fp}", self.name);
        self
    }

    /// The command that reruns this run with `seed`.
    pub fn repro_command(&self, seed: u64) -> String {
        let mut cmd = format!(
            "cargo build -p cairn --features failpoints,planted-bugs && cargo run -p \
             cairn-robust -- --members {} --traffic {} --fault {} --duration {} --seed {seed}",
            self.members,
            self.traffic.kind.name(),
            self.fault.name(),
            self.duration.as_secs_f64()
        );
        if let Some(fp) = &self.failpoint {
            cmd += &format!(" --failpoint {fp}");
        }
        if let Some(b) = self.planted_bug {
            cmd += &format!(" --planted-bug {}", b.env_value());
        }
        if self.traffic.multi_put_txns_only {
            cmd += " --multi-put-txns";
        }
        let defaults = TrafficConfig::new(self.traffic.kind);
        if self.traffic.clients_per_member != defaults.clients_per_member {
            cmd += &format!(" --clients {}", self.traffic.clients_per_member);
        }
        if self.traffic.request_timeout != defaults.request_timeout {
            cmd += &format!(
                " --request-timeout {}",
                self.traffic.request_timeout.as_secs_f64()
            );
        }
        if let Some(hold) = self.fault_hold {
            cmd += &format!(" --hold {}", hold.as_secs_f64());
        }
        cmd
    }
}

/// What a run did and found.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunOutcome {
    /// The run's name.
    pub name: String,
    /// Its seed.
    pub seed: u64,
    /// The fault as drawn.
    pub plan: FaultPlan,
    /// What the fault injector did.
    pub timeline: Timeline,
    /// A harness-level failure (the cluster did not start or come back, a watcher never
    /// caught up...): the run failed without (or before) checks.
    pub error: Option<String>,
    /// What the checks found.
    pub checks: CheckSummary,
    /// Requests sent.
    pub ops: usize,
    /// Requests that returned.
    pub ops_ok: usize,
    /// Watch events received (all watchers).
    pub watch_events: usize,
    /// Compactions that succeeded.
    pub compactions: usize,
    /// The final revision.
    pub final_revision: i64,
    /// Wall time of the run, checks included.
    pub elapsed: Duration,
    /// Where the artifacts went (failed runs only).
    pub artifacts: Option<PathBuf>,
    /// The command that reruns it.
    pub repro: String,
}

impl RunOutcome {
    /// Whether the run passed: no harness error, no violation.
    pub fn passed(&self) -> bool {
        self.error.is_none() && self.checks.violations.is_empty()
    }

    /// One line: name, seed, verdict, counts.
    pub fn line(&self) -> String {
        format!(
            "{} seed={} {} ops={} ok={} unknown={}/{} events={} compactions={} rev={} lin={} on {} ops ({:.1}s, check {:.1}s){}",
            self.name,
            self.seed,
            if self.passed() { "PASS" } else { "FAIL" },
            self.ops,
            self.ops_ok,
            self.checks.unresolved,
            self.checks.unknown_writes,
            self.watch_events,
            self.compactions,
            self.final_revision,
            self.checks.linearizability,
            self.checks.lin_ops,
            self.elapsed.as_secs_f64(),
            self.checks.lin_elapsed.as_secs_f64(),
            if self.timeline.fired { " fired" } else { "" }
        )
    }

    /// The failure message: what failed, the violations, the artifacts folder and the
    /// command that reproduces the run.
    pub fn failure_message(&self) -> String {
        let mut m = format!("run {} (seed {}) failed\n", self.name, self.seed);
        if let Some(e) = &self.error {
            m += &format!("harness error: {e}\n");
        }
        if !self.checks.violations.is_empty() {
            m += &format!(
                "{} violations ({:?}):\n{}",
                self.checks.violations.len(),
                self.checks.by_kind,
                self.checks.shown()
            );
        }
        if let Some(why) = &self.checks.explanation {
            m += &format!("linearizability failure:\n{why}\n");
        }
        if let Some(dir) = &self.artifacts {
            m += &format!(
                "artifacts (history, watches, member logs): {}\n",
                dir.display()
            );
        }
        m += &format!("reproduce: {}\n", self.repro);
        m
    }
}

/// The seed of `CAIRN_ROBUST_SEED`, if set.
pub fn seed_from_env() -> Option<u64> {
    std::env::var(SEED_ENV)
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

/// A seed from the clock.
pub fn fresh_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        % 1_000_000_000_000
}

/// Checks once per process that the cairn binary was built with the `failpoints` feature
/// (it refuses to start with `CAIRN_FAILPOINTS` set otherwise); fails with how to build it.
pub fn ensure_binary() -> Result<()> {
    static CHECKED: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    CHECKED
        .get_or_init(|| {
            let bin = cairn_tests::cairn_bin();
            let started = cairn_tests::Server::start_with_env(
                cairn_tests::Kind::Cairn,
                &[],
                &[
                    (FAILPOINTS_ENV, "raft_before_save=off"),
                    // Harmless in a server that only starts and stops.
                    (PLANTED_BUG_ENV, "split-txn-events"),
                ],
            );
            match started {
                Ok(_) => Ok(()),
                Err(e) => Err(format!(
                    "the cairn binary at {} does not start with {FAILPOINTS_ENV} and \
                     {PLANTED_BUG_ENV} set: it must be built with the harness's features: `cargo build -p cairn --features \
                     failpoints,planted-bugs` (then rerun). Its start:\n{e:#}",
                    bin.display()
                )),
            }
        })
        .clone()
        .map_err(|e| anyhow!(e))
}

/// Runs `spec` with `seed` on a runtime of its own and returns what happened; never panics on
/// a failing run (see [`RunOutcome::passed`]).
pub fn run(spec: &RunSpec, seed: u64) -> RunOutcome {
    run_recorded(spec, seed).0
}

/// [`run`], also returning everything the run recorded.
pub fn run_recorded(spec: &RunSpec, seed: u64) -> (RunOutcome, RunRecord) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("building a tokio runtime");
    let outcome = rt.block_on(run_async(spec, seed));
    // Tasks left (aborted ones finishing) must not hold the runtime up.
    rt.shutdown_timeout(Duration::from_secs(5));
    outcome
}

/// What a run's tasks recorded.
#[derive(Clone, Default)]
struct Sinks {
    ops: Sink<OpRecord>,
    watches: Sink<crate::record::WatchStreamRecord>,
    compactions: Sink<Compaction>,
}

/// A run's tasks and the channels that stop them; stopped (or aborted) at the end on every
/// path, so that even a failed run's watch streams end up in its records.
struct Tasks {
    clients: Vec<JoinHandle<usize>>,
    watchers: Vec<JoinHandle<()>>,
    compactor: Option<JoinHandle<()>>,
    /// The watchers' phase.
    phase: watch::Sender<Phase>,
    /// Stops the clients and the compactor.
    stop: watch::Sender<bool>,
}

impl Tasks {
    fn new() -> Self {
        Tasks {
            clients: Vec::new(),
            watchers: Vec::new(),
            compactor: None,
            phase: watch::channel(Phase::Run).0,
            stop: watch::channel(false).0,
        }
    }

    /// Stops every task, waiting a little for each to finish its records.
    async fn finish(&mut self) {
        let _ = self.stop.send(true);
        let _ = self.phase.send(Phase::Stop);
        for t in self.clients.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
        if let Some(t) = self.compactor.take() {
            let _ = tokio::time::timeout(Duration::from_secs(3), t).await;
        }
        for t in self.watchers.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(3), t).await;
        }
    }
}

impl Drop for Tasks {
    fn drop(&mut self) {
        for t in &self.clients {
            t.abort();
        }
        for t in &self.watchers {
            t.abort();
        }
        if let Some(t) = &self.compactor {
            t.abort();
        }
    }
}

async fn run_async(spec: &RunSpec, seed: u64) -> (RunOutcome, RunRecord) {
    let started = Instant::now();
    let clock = Clock::new();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut plan = FaultPlan::choose(
        spec.fault,
        spec.members,
        &mut rng,
        spec.failpoint.as_deref(),
    );
    if let Some(hold) = spec.fault_hold {
        plan.hold = hold;
    }
    println!(
        "== run {} seed={seed}: {} members, {} traffic, fault {}{}",
        spec.name,
        spec.members,
        spec.traffic.kind.name(),
        plan.describe(),
        spec.planted_bug
            .map(|b| format!(", planted bug {}", b.env_value()))
            .unwrap_or_default()
    );
    let sinks = Sinks::default();
    let mut timeline = Timeline::default();
    let mut slot: Option<TestCluster> = None;
    let mut final_read = None;
    let mut late = Vec::new();
    let mut error = None;
    let mut tasks = Tasks::new();
    if let Err(e) = ensure_binary() {
        error = Some(format!("{e:#}"));
    } else {
        let body = drive(
            spec,
            &plan,
            &mut rng,
            &clock,
            &sinks,
            &mut timeline,
            &mut slot,
            &mut final_read,
            &mut late,
            &mut tasks,
        );
        // The run's own bound: anything hanging past it is a failure, not a hang.
        let bound = spec.duration + Duration::from_secs(180);
        match tokio::time::timeout(bound, body).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => error = Some(format!("{e:#}")),
            Err(_) => error = Some(format!("the run did not finish within {bound:?}")),
        }
    }
    tasks.finish().await;
    let ops = sinks.ops.snapshot();
    let watches = sinks.watches.snapshot();
    let compactions = sinks.compactions.snapshot();
    let mut checks = if error.is_none() {
        let (o, w, c, f) = (
            ops.clone(),
            watches.clone(),
            compactions.clone(),
            final_read.clone(),
        );
        tokio::task::spawn_blocking(move || check_run(&o, &w, &c, f.as_ref(), LIN_TIMEOUT))
            .await
            .unwrap_or_else(|e| {
                let mut s = CheckSummary::default();
                s.add("checker", format!("the checks panicked: {e}"));
                s
            })
    } else {
        CheckSummary::default()
    };
    for (kind, v) in late {
        checks.add(kind, v);
    }
    let mut outcome = RunOutcome {
        name: spec.name.clone(),
        seed,
        plan: plan.clone(),
        timeline,
        error,
        ops: ops.len(),
        ops_ok: ops
            .iter()
            .filter(|o| matches!(o.outcome, Outcome::Ok(_)))
            .count(),
        watch_events: watches
            .iter()
            .flat_map(|w| &w.responses)
            .map(|r| r.events.len())
            .sum(),
        compactions: compactions.iter().filter(|c| c.result == "ok").count(),
        final_revision: final_read.as_ref().map_or(0, |(r, _)| *r),
        checks,
        elapsed: started.elapsed(),
        artifacts: None,
        repro: spec.repro_command(seed),
    };
    let mut record = RunRecord {
        name: spec.name.clone(),
        seed,
        meta: serde_json::Value::Null,
        compactions,
        ops,
        watches,
        final_read,
    };
    if !outcome.passed() && spec.write_artifacts {
        let logs: Vec<(String, PathBuf)> = match &slot {
            Some(c) => (0..c.len()).map(|i| (c.name(i), c.log_path(i))).collect(),
            None => Vec::new(),
        };
        record.meta = serde_json::json!({
            "spec": spec,
            "plan": plan,
            "outcome": &outcome,
        });
        let summary = format!(
            "{}\nspec: {spec:#?}\nfault: {}\ntimeline:\n{}\n",
            outcome.failure_message(),
            plan.describe(),
            outcome
                .timeline
                .entries
                .iter()
                .map(|e| format!("  [{:>7.3}s] {}", e.at as f64 / 1e9, e.what))
                .collect::<Vec<_>>()
                .join("\n")
        );
        match artifacts::write(&record, &summary, &logs) {
            Ok(dir) => outcome.artifacts = Some(dir),
            Err(e) => eprintln!("could not write the artifacts: {e:#}"),
        }
    }
    drop(slot);
    println!("   {}", outcome.line());
    (outcome, record)
}

/// The body of a run, up to the checks.
#[allow(clippy::too_many_arguments)]
async fn drive(
    spec: &RunSpec,
    plan: &FaultPlan,
    rng: &mut StdRng,
    clock: &Clock,
    sinks: &Sinks,
    timeline: &mut Timeline,
    slot: &mut Option<TestCluster>,
    final_read: &mut Option<(i64, Vec<Kv>)>,
    late: &mut Vec<(&'static str, String)>,
    tasks: &mut Tasks,
) -> Result<()> {
    let mut cspec = ClusterSpec::new(spec.members);
    cspec.flags = spec.flags.clone();
    cspec.env = initial_env(plan, spec.members);
    if let Some(bug) = spec.planted_bug {
        cspec
            .env_all
            .push((PLANTED_BUG_ENV.to_string(), bug.env_value().to_string()));
    }
    let cluster = slot.insert(
        TestCluster::start(&cspec)
            .await
            .context("starting the cluster")?,
    );
    let endpoints: Vec<String> = (0..cluster.len()).map(|i| cluster.endpoint(i)).collect();
    timeline.log(
        clock,
        format!("cluster up: {} members, leader {}", cluster.len(), {
            let l = cluster.wait_leader(READY_LIMIT).await?;
            cluster.name(l)
        }),
    );
    // No write before the watchers start: the whole-keyspace watchers watch from revision 1 of
    // a fresh store, which is how the harness found that such a watch was never synced
    // (tests/regressions.rs).
    // Watchers, on every member.
    let phase_rx = tasks.phase.subscribe();
    let (prefix, single) = match spec.traffic.kind {
        TrafficKind::Etcd => (ETCD_PREFIX, format!("{ETCD_PREFIX}1")),
        TrafficKind::Kubernetes => (K8S_PREFIX, format!("{K8S_PREFIX}default/pod-1")),
    };
    let watchers = watchers_for(&endpoints, prefix, &single, rng.gen());
    let mut progress = Vec::new();
    let mut guards = Vec::new();
    for w in watchers.iter().cloned() {
        let p = Arc::new(Progress::default());
        if w.spec.sees_everything() && w.spec.start_revision == 1 {
            guards.push(p.clone());
        }
        progress.push((w.clone(), p.clone()));
        tasks.watchers.push(tokio::spawn(run_watcher(
            w,
            *clock,
            sinks.watches.clone(),
            p,
            phase_rx.clone(),
        )));
    }
    wait_for(
        "every watcher to be created",
        Duration::from_secs(15),
        || {
            progress
                .iter()
                .all(|(_, p)| p.seen.load(Ordering::SeqCst) > 0)
        },
    )
    .await?;

    // The compactor.
    let stop_rx = tasks.stop.subscribe();
    let mut compactor_clients = Vec::new();
    for ep in &endpoints {
        compactor_clients.push(connect(ep).await?);
    }
    tasks.compactor = Some(tokio::spawn(run_compactor(
        compactor_clients,
        rng.gen(),
        *clock,
        guards,
        sinks.compactions.clone(),
        stop_rx.clone(),
    )));

    // The traffic.
    let values = Arc::new(UniqueValues::new());
    let mut id = 0;
    for (m, ep) in endpoints.iter().enumerate() {
        for _ in 0..spec.traffic.clients_per_member {
            let client = TrafficClient::new(
                id,
                m,
                connect(ep).await?,
                rng.gen(),
                spec.traffic.clone(),
                *clock,
                sinks.ops.clone(),
                values.clone(),
            );
            tasks
                .clients
                .push(tokio::spawn(client.run(stop_rx.clone())));
            id += 1;
        }
    }
    let traffic_start = Instant::now();
    timeline.log(clock, format!("traffic started: {id} clients"));

    // The fault.
    tokio::time::sleep(plan.after).await;
    inject(plan, cluster, clock, timeline)
        .await
        .with_context(|| format!("injecting {}", plan.describe()))?;
    let end = (traffic_start + spec.duration).max(Instant::now() + Duration::from_secs(1));
    tokio::time::sleep_until(end.into()).await;

    // Stop the traffic and the compactor.
    let _ = tasks.stop.send(true);
    let bound = spec.traffic.request_timeout + Duration::from_secs(3);
    for t in tasks.clients.drain(..) {
        if tokio::time::timeout(bound, t).await.is_err() {
            bail!("a client did not stop within {bound:?}");
        }
    }
    if let Some(t) = tasks.compactor.take() {
        let _ = tokio::time::timeout(Duration::from_secs(3), t).await;
    }
    timeline.log(
        clock,
        format!("traffic stopped: {} requests", sinks.ops.len()),
    );

    // Heal everything, restart whoever is down, and wait for the members to agree.
    heal(cluster, clock, timeline).await?;
    // Members that never agree (HashKV differing at one revision) are a violation; the run
    // goes on to its final read and checks.
    match cluster.wait_converged(CONVERGE_LIMIT).await {
        Ok((rev, hash)) => timeline.log(
            clock,
            format!("converged at revision {rev}, HashKV {hash:#x} on every member"),
        ),
        Err(e) => late.push(("convergence", format!("after healing: {e:#}"))),
    }

    // The final read: linearizable, whole keyspace.
    let (frev, kvs) = final_range(cluster, clock, sinks).await?;
    *final_read = Some((frev, kvs));

    // Watchers catch up with the final revision, then stop.
    let _ = tasks.phase.send(Phase::CatchUp(frev));
    let caught = wait_for("the watchers to catch up", CATCH_UP_LIMIT, || {
        progress
            .iter()
            .all(|(_, p)| p.seen.load(Ordering::SeqCst) >= frev)
    })
    .await;
    if caught.is_err() {
        for (w, p) in &progress {
            let seen = p.seen.load(Ordering::SeqCst);
            if seen < frev {
                late.push((
                    "watch",
                    format!(
                        "watcher {} (member {}, {:?}) reached revision {seen} only, {}s after the \
                     final read at revision {frev}",
                        w.id,
                        w.member,
                        w.spec,
                        CATCH_UP_LIMIT.as_secs()
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Lifts every fault and brings every member back (failpoints disarmed).
async fn heal(cluster: &mut TestCluster, clock: &Clock, timeline: &mut Timeline) -> Result<()> {
    cluster.heal_network();
    cluster.resume_all();
    for i in 0..cluster.len() {
        if !cluster.is_running(i) {
            timeline.log(
                clock,
                format!(
                    "{} is down ({:?}): restarting it",
                    cluster.name(i),
                    cluster.exit_status(i)
                ),
            );
            cluster.member_mut(i).set_env(FAILPOINTS_ENV, None);
            cluster.spawn(i)?;
        }
    }
    for i in 0..cluster.len() {
        cluster.wait_ready(i, READY_LIMIT).await?;
    }
    Ok(())
}

/// A linearizable Range over the whole keyspace through the leader (retried: reads change
/// nothing), recorded as an operation of its own client.
async fn final_range(
    cluster: &mut TestCluster,
    clock: &Clock,
    sinks: &Sinks,
) -> Result<(i64, Vec<Kv>)> {
    let req = Request::Range {
        start: String::new(),
        end: "\0".into(),
        limit: 0,
        serializable: false,
        revision: 0,
    };
    let mut last = String::new();
    for _ in 0..5 {
        let l = cluster.wait_leader(READY_LIMIT).await.unwrap_or(0);
        let client = connect(&cluster.endpoint(l)).await?;
        let call = clock.now();
        let r = tokio::time::timeout(Duration::from_secs(5), execute(&client, &req)).await;
        let ret = clock.now();
        match r {
            Ok(Ok(resp)) => {
                if let Response::Range { kvs, revision, .. } = &resp {
                    let out = (*revision, kvs.clone());
                    sinks.ops.push(OpRecord {
                        client: FINAL_CLIENT,
                        member: l,
                        call,
                        ret,
                        request: req,
                        outcome: Outcome::Ok(resp),
                    });
                    return Ok(out);
                }
                last = format!("unexpected response {resp:?}");
            }
            Ok(Err(e)) => last = format!("{e:#}"),
            Err(_) => last = "timed out".into(),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!("the final read failed: {last}")
}

/// Polls `cond` every 20 ms for up to `limit`.
async fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + limit;
    while !cond() {
        if Instant::now() > deadline {
            bail!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}
