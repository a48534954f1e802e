//! The Ready loop: one thread owns the raft-rs `RawNode` and its storage, ticks it, feeds it
//! proposals, read requests and peer messages, persists every Ready (one fsync) and hands
//! committed entries to the apply side.
//!
//! Order per Ready (RAFT-NOTES §1): send the leader's messages, persist entries and HardState
//! with one sync, hand committed entries to apply, send the persisted messages, then
//! `advance_append` and do the same for the LightReady. Apply runs on another thread and reports
//! back with [`NodeHandle::report_applied`], which drives `advance_apply_to`.
//!
//! Committed entries are handed out only after the HardState naming them committed has been
//! written in the same Ready, so the durable applied index of the state machine never runs
//! ahead of the log it came from.
//!
//! Durability invariant: nothing reaches the apply side before the WAL records it depends on
//! are fsynced. raft-rs hands out committed entries only up to its persisted index
//! (`min(committed, persisted)`), which moves only on `advance_append`, called after the
//! Ready's sync; a Ready's committed entries (and a snapshot's metadata) are handed out only
//! after that sync anyway; and raft is told `applied = min(reported, committed, persisted)`.
//! So every state the backend can be in, durable or not, covers only fsynced log entries, and
//! cutting the WAL back to what was fsynced (a power loss) never leaves the backend ahead of
//! it. The planted [`NodeConfig::ack_before_fsync`] bug breaks exactly this.
//!
//! Failpoints (feature `failpoints`; `return` means crash the process, exit status 86):
//! `raft_before_save` before a Ready's snapshot metadata, entries and HardState are written
//! (after the leader's own messages went out, as raft allows), `raft_after_save` after they
//! are written and fsynced, before the persisted messages are sent and the committed entries
//! handed to apply. Both are evaluated only for Readies that write something.

use crate::error::WalError;
use crate::logger::raft_logger;
use crate::storage::DiskStorage;
use protobuf::Message as _;
use raft::eraftpb::{ConfChange, ConfChangeV2, Entry, EntryType, Message, SnapshotMetadata};
use raft::{RawNode, ReadOnlyOption, SnapshotStatus, StateRole, Storage};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, watch};

/// How the Ready loop is configured; derived from etcd's flags by the server.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// This member's raft id (etcd uses the member id).
    pub id: u64,
    /// Wall time of one tick (`--heartbeat-interval`).
    pub tick_interval: Duration,
    /// Ticks without a leader before campaigning (`--election-timeout` / heartbeat).
    pub election_tick: usize,
    /// Ticks between leader heartbeats (1, as etcd).
    pub heartbeat_tick: usize,
    /// The state machine's durable applied index: entries up to it are not handed out again.
    pub applied: u64,
    /// `--pre-vote`.
    pub pre_vote: bool,
    /// Largest append message (bytes).
    pub max_size_per_msg: u64,
    /// In-flight append messages per follower.
    pub max_inflight_msgs: usize,
    /// Uncommitted bytes the leader accepts before dropping proposals.
    pub max_uncommitted_size: u64,
    /// Campaign immediately at start when this member is the only voter, instead of waiting
    /// for an election timeout: a lone member cannot split a vote.
    pub campaign_if_sole_voter: bool,
    /// PLANTED BUG, for checking that the robustness harness notices it; `false` in every real
    /// configuration. When set, a Ready's WAL records are only handed to the kernel and the
    /// fsync is done at most about once per [`LAZY_FSYNC_INTERVAL`], while the Ready's entries
    /// are still treated as persisted: acknowledged and applied before they are durable.
    pub ack_before_fsync: bool,
}

/// How often the WAL is really fsynced under the planted [`NodeConfig::ack_before_fsync`] bug.
pub const LAZY_FSYNC_INTERVAL: Duration = Duration::from_secs(1);

/// The crash of a failpoint's `return` action: logs and exits at once with status 86, with no
/// cleanup (no destructors, no WAL flush), as a `kill -9` at that spot would.
#[cfg(feature = "failpoints")]
pub(crate) fn crash_at(name: &str) -> ! {
    tracing::error!("failpoint {name}: crashing");
    std::process::exit(86)
}

/// A failpoint (fail crate) whose `return` action crashes the process ([`crash_at`]); compiled
/// to nothing without the `failpoints` feature.
macro_rules! crash_point {
    ($name:literal) => {
        fail::fail_point!($name, |_| crate::node::crash_at($name))
    };
}

/// Why a proposal or read could not be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeError {
    /// Raft refused the proposal: no leader known, a leader transfer in progress, or too much
    /// uncommitted data.
    #[error("proposal dropped: no leader or leader busy")]
    ProposalDropped,
    /// The proposal is larger than raft accepts.
    #[error("proposal too large")]
    ProposalTooLarge,
    /// Leadership changed before a read index was confirmed.
    #[error("leader changed")]
    LeaderChanged,
    /// The node has stopped.
    #[error("raft node stopped")]
    Stopped,
}

/// Why the Ready loop stopped on its own: each of these is fatal for the server.
#[derive(Debug, thiserror::Error)]
pub enum LoopError {
    /// Writing or syncing the WAL failed.
    #[error(transparent)]
    Wal(#[from] WalError),
    /// The apply side went away.
    #[error("apply side has stopped")]
    ApplyStopped,
}

/// A batch of committed entries, in log order, for the apply side.
#[derive(Debug, Default)]
pub struct CommittedEntries {
    /// Entries to apply, contiguous and increasing.
    pub entries: Vec<Entry>,
    /// Raft term at hand-out time (for response headers).
    pub term: u64,
    /// Indexes of configuration-change entries in `entries` that raft refused (membership
    /// stays as it was for those, as etcd treats an invalid change as a no-op).
    pub rejected_conf_changes: Vec<u64>,
    /// A snapshot from the leader to install before anything after it: the state machine is
    /// replaced by the backend received with it. Its WAL metadata is already durable. Comes
    /// with no entries.
    pub snapshot: Option<SnapshotMetadata>,
}

/// How far one member's log matches the leader's (leader only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerProgress {
    /// Member id.
    pub id: u64,
    /// Highest index known to match the leader's log.
    pub matched: u64,
    /// Whether the member is a learner.
    pub is_learner: bool,
    /// Whether the member was heard from within the last election timeout.
    pub recent_active: bool,
}

/// A snapshot of the leader's view of its followers.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    /// Whether this member is the leader (otherwise `peers` is empty).
    pub is_leader: bool,
    /// The leader's last log index.
    pub last_index: u64,
    /// Every member in the configuration, the leader included.
    pub peers: Vec<PeerProgress>,
}

/// Live facts about the node, readable without talking to the raft thread.
#[derive(Debug, Default)]
pub struct NodeStatus {
    leader_id: AtomicU64,
    term: AtomicU64,
    commit_index: AtomicU64,
    last_index: AtomicU64,
    applied_index: AtomicU64,
    is_leader: AtomicBool,
    is_learner: AtomicBool,
}

impl NodeStatus {
    /// Current leader's id, 0 when none is known.
    pub fn leader_id(&self) -> u64 {
        self.leader_id.load(Ordering::Acquire)
    }
    /// Current raft term.
    pub fn term(&self) -> u64 {
        self.term.load(Ordering::Acquire)
    }
    /// Highest committed index known.
    pub fn commit_index(&self) -> u64 {
        self.commit_index.load(Ordering::Acquire)
    }
    /// Last index in the local log.
    pub fn last_index(&self) -> u64 {
        self.last_index.load(Ordering::Acquire)
    }
    /// Highest index the apply side reported applied.
    pub fn applied_index(&self) -> u64 {
        self.applied_index.load(Ordering::Acquire)
    }
    /// Whether this member is the leader.
    pub fn is_leader(&self) -> bool {
        self.is_leader.load(Ordering::Acquire)
    }
    /// Whether this member is a learner in the current configuration.
    pub fn is_learner(&self) -> bool {
        self.is_learner.load(Ordering::Acquire)
    }
}

/// Carries raft messages to other members. A single-member node never produces any.
pub trait Transport: Send + 'static {
    /// Sends messages to their `to` members; failures are reported through
    /// [`NodeHandle::report_unreachable`] by the transport itself. A `MsgSnapshot` is sent
    /// with the backend it describes, and its outcome reported through
    /// [`NodeHandle::report_snapshot`].
    fn send(&mut self, msgs: Vec<Message>);
}

enum Command {
    Propose {
        data: Vec<u8>,
        done: oneshot::Sender<Result<(), NodeError>>,
    },
    ProposeConfChange {
        change: ConfChange,
        done: oneshot::Sender<Result<(), NodeError>>,
    },
    ReadIndex {
        done: oneshot::Sender<Result<u64, NodeError>>,
    },
    Step(Message),
    Unreachable(u64),
    SnapshotSent {
        to: u64,
        ok: bool,
    },
    TransferLeader(u64),
    Progress(oneshot::Sender<Progress>),
    Applied(u64),
    CompactLog(u64),
    Stop,
}

/// The async side's handle on the raft thread. Cheap to clone.
#[derive(Clone)]
pub struct NodeHandle {
    commands: Sender<Command>,
    status: Arc<NodeStatus>,
    leader: watch::Receiver<u64>,
}

impl NodeHandle {
    /// Proposes `data` as a normal entry. Resolves once raft accepted it into the log (not when
    /// committed: the apply side wakes the caller by request id).
    pub async fn propose(&self, data: Vec<u8>) -> Result<(), NodeError> {
        let (done, rx) = oneshot::channel();
        self.commands
            .send(Command::Propose { data, done })
            .map_err(|_| NodeError::Stopped)?;
        rx.await.map_err(|_| NodeError::Stopped)?
    }

    /// Proposes a membership change (etcd's ConfChange: `id` is the request id, `context` the
    /// member). Resolves once raft accepted it into the log; raft accepts one pending change at
    /// a time and silently turns a second into an empty entry, so callers wait for the entry to
    /// be applied by request id.
    pub async fn propose_conf_change(&self, change: ConfChange) -> Result<(), NodeError> {
        let (done, rx) = oneshot::channel();
        self.commands
            .send(Command::ProposeConfChange { change, done })
            .map_err(|_| NodeError::Stopped)?;
        rx.await.map_err(|_| NodeError::Stopped)?
    }

    /// Reports how sending a snapshot to `to` ended, so raft resumes replicating to it.
    pub fn report_snapshot(&self, to: u64, ok: bool) {
        let _ = self.commands.send(Command::SnapshotSent { to, ok });
    }

    /// Asks the leader to hand leadership to `to` (MsgTimeoutNow once `to` is caught up).
    /// Success is seen in [`leader_watch`](Self::leader_watch); raft gives up silently after
    /// an election timeout.
    pub fn transfer_leader(&self, to: u64) {
        let _ = self.commands.send(Command::TransferLeader(to));
    }

    /// The leader's view of every member's log.
    pub async fn progress(&self) -> Result<Progress, NodeError> {
        let (done, rx) = oneshot::channel();
        self.commands
            .send(Command::Progress(done))
            .map_err(|_| NodeError::Stopped)?;
        rx.await.map_err(|_| NodeError::Stopped)
    }

    /// Asks for a read index: the commit index at a moment this member was certainly leader
    /// (ReadIndex, Safe mode). Concurrent callers share one raft round.
    pub async fn read_index(&self) -> Result<u64, NodeError> {
        let (done, rx) = oneshot::channel();
        self.commands
            .send(Command::ReadIndex { done })
            .map_err(|_| NodeError::Stopped)?;
        rx.await.map_err(|_| NodeError::Stopped)?
    }

    /// Feeds a message received from a peer.
    pub fn step(&self, msg: Message) {
        let _ = self.commands.send(Command::Step(msg));
    }

    /// Tells raft a peer could not be reached.
    pub fn report_unreachable(&self, id: u64) {
        let _ = self.commands.send(Command::Unreachable(id));
    }

    /// Reports that every entry up to `index` has been applied. Must not decrease.
    pub fn report_applied(&self, index: u64) {
        self.status.applied_index.store(index, Ordering::Release);
        let _ = self.commands.send(Command::Applied(index));
    }

    /// Drops log entries up to `index`, which must be durably applied.
    pub fn compact_log(&self, index: u64) {
        let _ = self.commands.send(Command::CompactLog(index));
    }

    /// Live status.
    pub fn status(&self) -> &NodeStatus {
        &self.status
    }

    /// Leader id updates (0 = no leader).
    pub fn leader_watch(&self) -> watch::Receiver<u64> {
        self.leader.clone()
    }

    /// Asks the loop to stop after its current Ready; the final state is synced.
    pub fn stop(&self) {
        let _ = self.commands.send(Command::Stop);
    }
}

/// The bytes of read context `counter` of member `member`.
fn read_ctx_bytes(member: u64, counter: u64) -> Vec<u8> {
    let mut ctx = Vec::with_capacity(16);
    ctx.extend_from_slice(&member.to_be_bytes());
    ctx.extend_from_slice(&counter.to_be_bytes());
    ctx
}

/// (member, counter) of a read context made by [`read_ctx_bytes`].
fn parse_read_ctx(ctx: &[u8]) -> Option<(u64, u64)> {
    let bytes = <[u8; 16]>::try_from(ctx).ok()?;
    let (member, counter) = bytes.split_at(8);
    Some((
        u64::from_be_bytes(member.try_into().ok()?),
        u64::from_be_bytes(counter.try_into().ok()?),
    ))
}

/// A read index round in flight.
struct PendingRead {
    ctx: u64,
    issued_tick: u64,
    waiters: Vec<oneshot::Sender<Result<u64, NodeError>>>,
}

struct Loop {
    node: RawNode<DiskStorage>,
    storage: DiskStorage,
    cfg: NodeConfig,
    commands: Receiver<Command>,
    apply: Sender<CommittedEntries>,
    transport: Option<Box<dyn Transport>>,
    status: Arc<NodeStatus>,
    leader_tx: watch::Sender<u64>,
    ticks: u64,
    read_queue: Vec<oneshot::Sender<Result<u64, NodeError>>>,
    read_inflight: Option<PendingRead>,
    next_read_ctx: u64,
    /// What raft has been told is applied (`advance_apply_to`).
    applied: u64,
    /// What the apply side reported; may run ahead of raft's commit index right after a
    /// snapshot install (the received backend is newer than the snapshot's index), so raft is
    /// told `min(reported, committed, persisted)`.
    reported_applied: u64,
    /// When the WAL was last fsynced (only used by the planted `ack_before_fsync` bug).
    last_fsync: Instant,
}

/// Starts the Ready loop on its own thread. Returns the handle and the thread, which ends with
/// the loop's result (a WAL error is fatal: the server must stop).
pub fn start(
    cfg: NodeConfig,
    storage: DiskStorage,
    apply: Sender<CommittedEntries>,
    transport: Option<Box<dyn Transport>>,
) -> Result<(NodeHandle, JoinHandle<Result<(), LoopError>>), raft::Error> {
    let raft_cfg = raft::Config {
        id: cfg.id,
        election_tick: cfg.election_tick,
        heartbeat_tick: cfg.heartbeat_tick,
        applied: cfg.applied,
        max_size_per_msg: cfg.max_size_per_msg,
        max_inflight_msgs: cfg.max_inflight_msgs,
        check_quorum: true,
        pre_vote: cfg.pre_vote,
        read_only_option: ReadOnlyOption::Safe,
        max_uncommitted_size: cfg.max_uncommitted_size,
        max_committed_size_per_ready: 32 << 20,
        ..Default::default()
    };
    raft_cfg.validate()?;
    let mut node = RawNode::new(&raft_cfg, storage.clone(), &raft_logger())?;
    let voters = storage.conf_state().voters.clone();
    if cfg.campaign_if_sole_voter && voters == [cfg.id] {
        node.campaign()?;
    }
    let status = Arc::new(NodeStatus::default());
    status.term.store(node.raft.term, Ordering::Release);
    status
        .last_index
        .store(storage.last_index().unwrap_or(0), Ordering::Release);
    status.applied_index.store(cfg.applied, Ordering::Release);
    status.is_learner.store(
        storage.conf_state().learners.contains(&cfg.id),
        Ordering::Release,
    );
    status
        .commit_index
        .store(node.raft.raft_log.committed, Ordering::Release);
    let (leader_tx, leader_rx) = watch::channel(0);
    let (tx, rx) = mpsc::channel();
    let handle = NodeHandle {
        commands: tx,
        status: status.clone(),
        leader: leader_rx,
    };
    let mut lp = Loop {
        node,
        storage,
        applied: cfg.applied,
        reported_applied: cfg.applied,
        cfg,
        commands: rx,
        apply,
        transport,
        status,
        leader_tx,
        ticks: 0,
        read_queue: Vec::new(),
        read_inflight: None,
        // Read contexts must be unique cluster-wide and across restarts: raft-rs keys pending
        // reads and heartbeat acknowledgements by context alone, and a follower's forwarded
        // read keeps its context, so a context another member (or an earlier life of this
        // one) used could be confirmed by a quorum round that began before this read did.
        // Hence (member id, counter seeded from the clock).
        next_read_ctx: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64),
        last_fsync: Instant::now(),
    };
    let thread = std::thread::Builder::new()
        .name("raft".into())
        .spawn(move || lp.run())
        .expect("spawning the raft thread");
    Ok((handle, thread))
}

impl Loop {
    fn run(&mut self) -> Result<(), LoopError> {
        let mut next_tick = Instant::now() + self.cfg.tick_interval;
        // A campaign at start leaves a Ready waiting; do not make it wait for the first tick.
        let first = self.on_ready();
        let result = first.and_then(|()| loop {
            let now = Instant::now();
            let wait = next_tick.saturating_duration_since(now);
            let mut stop = false;
            match self.commands.recv_timeout(wait) {
                Ok(cmd) => stop |= self.on_command(cmd),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => stop = true,
            }
            // Drain whatever else is queued so one Ready (one fsync) covers it all.
            while !stop {
                match self.commands.try_recv() {
                    Ok(cmd) => stop |= self.on_command(cmd),
                    Err(_) => break,
                }
            }
            if Instant::now() >= next_tick {
                self.node.tick();
                self.ticks += 1;
                next_tick += self.cfg.tick_interval;
                if next_tick < Instant::now() {
                    next_tick = Instant::now() + self.cfg.tick_interval;
                }
            }
            if self.cfg.ack_before_fsync && self.last_fsync.elapsed() >= LAZY_FSYNC_INTERVAL {
                // The planted bug's only real fsyncs (besides rotation and log compaction).
                if let Err(e) = self.storage.sync() {
                    break Err(e.into());
                }
                self.last_fsync = Instant::now();
            }
            self.issue_reads();
            if let Err(e) = self.on_ready() {
                break Err(e);
            }
            // Reads that queued while a round was in flight start their own round now that it
            // has resolved, instead of waiting for the next command or tick.
            if self.read_inflight.is_none() && !self.read_queue.is_empty() {
                self.issue_reads();
                if let Err(e) = self.on_ready() {
                    break Err(e);
                }
            }
            if stop {
                break self.storage.sync().map_err(LoopError::from);
            }
        });
        self.fail_reads(NodeError::Stopped);
        result
    }

    /// Returns true when the loop must stop.
    fn on_command(&mut self, cmd: Command) -> bool {
        match cmd {
            Command::Propose { data, done } => {
                let res = self.node.propose(vec![], data).map_err(|e| match e {
                    raft::Error::ProposalDropped => NodeError::ProposalDropped,
                    _ => NodeError::ProposalTooLarge,
                });
                let _ = done.send(res);
            }
            Command::ProposeConfChange { change, done } => {
                let res = self
                    .node
                    .propose_conf_change(vec![], change)
                    .map_err(|e| match e {
                        raft::Error::ProposalDropped => NodeError::ProposalDropped,
                        _ => NodeError::ProposalTooLarge,
                    });
                let _ = done.send(res);
            }
            Command::ReadIndex { done } => self.read_queue.push(done),
            Command::Step(msg) => {
                // Messages from unknown peers or local message types are ignored, as etcd does.
                let _ = self.node.step(msg);
            }
            Command::Unreachable(id) => self.node.report_unreachable(id),
            Command::SnapshotSent { to, ok } => {
                let status = if ok {
                    SnapshotStatus::Finish
                } else {
                    SnapshotStatus::Failure
                };
                self.node.report_snapshot(to, status);
            }
            Command::TransferLeader(to) => {
                if self.node.raft.state == StateRole::Leader && to != self.cfg.id {
                    self.node.transfer_leader(to);
                }
            }
            Command::Progress(done) => {
                let _ = done.send(self.progress());
            }
            Command::Applied(index) => {
                self.reported_applied = self.reported_applied.max(index);
                self.advance_applied();
            }
            Command::CompactLog(index) => {
                let index = index.min(self.applied);
                if index > self.storage.first_index().unwrap_or(1).saturating_sub(1) {
                    if let Err(e) = self.storage.compact(index) {
                        tracing::warn!(error = %e, index, "raft log compaction failed");
                    }
                }
            }
            Command::Stop => return true,
        }
        false
    }

    /// Tells raft how far apply got, never beyond what raft itself knows is committed and
    /// persisted (raft panics otherwise).
    fn advance_applied(&mut self) {
        let log = &self.node.raft.raft_log;
        let target = self.reported_applied.min(log.committed).min(log.persisted);
        if target > self.applied {
            self.applied = target;
            self.node.advance_apply_to(target);
        }
    }

    fn progress(&self) -> Progress {
        let raft = &self.node.raft;
        if raft.state != StateRole::Leader {
            return Progress::default();
        }
        let learners = raft.prs().conf().learners();
        let mut peers: Vec<PeerProgress> = raft
            .prs()
            .iter()
            .map(|(id, pr)| PeerProgress {
                id: *id,
                matched: pr.matched,
                is_learner: learners.contains(id),
                recent_active: pr.recent_active || *id == self.cfg.id,
            })
            .collect();
        peers.sort_by_key(|p| p.id);
        Progress {
            is_leader: true,
            last_index: raft.raft_log.last_index(),
            peers,
        }
    }

    /// Starts a read-index round for every queued reader if none is in flight, and re-issues a
    /// round that raft silently dropped (no leader yet, or the leader has not committed in its
    /// term) after an election timeout.
    fn issue_reads(&mut self) {
        if let Some(inflight) = &mut self.read_inflight {
            if self.ticks.saturating_sub(inflight.issued_tick) < self.cfg.election_tick as u64 {
                return;
            }
            let mut stale = self.read_inflight.take().expect("checked above");
            self.read_queue.append(&mut stale.waiters);
        }
        if self.read_queue.is_empty() {
            return;
        }
        let ctx = self.next_read_ctx;
        self.next_read_ctx += 1;
        self.node.read_index(read_ctx_bytes(self.cfg.id, ctx));
        self.read_inflight = Some(PendingRead {
            ctx,
            issued_tick: self.ticks,
            waiters: std::mem::take(&mut self.read_queue),
        });
    }

    fn fail_reads(&mut self, err: NodeError) {
        if let Some(r) = self.read_inflight.take() {
            for w in r.waiters {
                let _ = w.send(Err(err.clone()));
            }
        }
        for w in self.read_queue.drain(..) {
            let _ = w.send(Err(err.clone()));
        }
    }

    fn send(&mut self, msgs: Vec<Message>) {
        if msgs.is_empty() {
            return;
        }
        match &mut self.transport {
            Some(t) => t.send(msgs),
            None => tracing::warn!(count = msgs.len(), "raft messages with no transport"),
        }
    }

    fn on_ready(&mut self) -> Result<(), LoopError> {
        if !self.node.has_ready() {
            return Ok(());
        }
        let mut rd = self.node.ready();
        if let Some(ss) = rd.ss() {
            let leader = ss.leader_id;
            let is_leader = ss.raft_state == StateRole::Leader;
            let was_leader = self.status.is_leader.swap(is_leader, Ordering::AcqRel);
            let old_leader = self.status.leader_id.swap(leader, Ordering::AcqRel);
            if old_leader != leader {
                self.leader_tx.send_replace(leader);
                tracing::info!(
                    leader = leader,
                    term = self.node.raft.term,
                    "raft leader changed"
                );
            }
            if was_leader != is_leader || old_leader != leader {
                // Read rounds in flight are lost on a role change; start them again.
                if let Some(mut stale) = self.read_inflight.take() {
                    self.read_queue.append(&mut stale.waiters);
                }
            }
        }
        self.send(rd.take_messages());
        let saves = !rd.snapshot().is_empty() || !rd.entries().is_empty() || rd.hs().is_some();
        if saves {
            crash_point!("raft_before_save");
        }
        let snapshot = if rd.snapshot().is_empty() {
            None
        } else {
            // The backend it describes was received and made durable by the transport before
            // the message was stepped. Recording the metadata durably first means a crash
            // before the store swap finds the snapshot file on restart and installs it then.
            let meta = rd.snapshot().get_metadata().clone();
            self.storage.apply_snapshot_metadata(&meta)?;
            tracing::info!(
                index = meta.index,
                term = meta.term,
                "installing snapshot from the leader"
            );
            Some(meta)
        };
        for rs in rd.take_read_states() {
            self.resolve_read(&rs.request_ctx, rs.index);
        }
        let committed = rd.take_committed_entries();
        if !rd.entries().is_empty() {
            self.storage.append(rd.entries())?;
        }
        if let Some(hs) = rd.hs() {
            self.storage.set_hard_state(hs)?;
            self.status.term.store(hs.term, Ordering::Release);
        }
        if rd.must_sync() {
            self.sync_ready()?;
        }
        if saves {
            crash_point!("raft_after_save");
        }
        self.status
            .last_index
            .store(self.storage.last_index().unwrap_or(0), Ordering::Release);
        if let Some(meta) = snapshot {
            let index = meta.index;
            let installed = CommittedEntries {
                term: self.node.raft.term,
                snapshot: Some(meta),
                ..Default::default()
            };
            if self.apply.send(installed).is_err() {
                return Err(LoopError::ApplyStopped);
            }
            self.status
                .commit_index
                .store(self.status.commit_index().max(index), Ordering::Release);
            self.reported_applied = self.reported_applied.max(index);
        }
        self.hand_out(committed)?;
        self.send(rd.take_persisted_messages());

        let mut light = self.node.advance_append(rd);
        if let Some(commit) = light.commit_index() {
            // Recorded without a sync: a lost commit index is recomputed by raft, and the
            // server raises it to the durable applied index on restart.
            let mut hs = self.storage.hard_state();
            hs.commit = commit;
            self.storage.set_hard_state(&hs)?;
            self.status.commit_index.store(commit, Ordering::Release);
        }
        self.send(light.take_messages());
        self.hand_out(light.take_committed_entries())?;
        // Right after a snapshot, raft must learn it is applied up to the snapshot's index
        // (it does not assume so itself), and a report that ran ahead may now fit.
        self.advance_applied();
        Ok(())
    }

    /// Makes a Ready's WAL records durable before anything depends on them: one fdatasync.
    /// Under the planted `ack_before_fsync` bug, only hands them to the kernel (they survive
    /// the process dying, not the machine) unless the last real fsync is
    /// [`LAZY_FSYNC_INTERVAL`] old.
    fn sync_ready(&mut self) -> Result<(), WalError> {
        if self.cfg.ack_before_fsync && self.last_fsync.elapsed() < LAZY_FSYNC_INTERVAL {
            return self.storage.write_out();
        }
        self.storage.sync()?;
        self.last_fsync = Instant::now();
        Ok(())
    }

    fn resolve_read(&mut self, ctx: &[u8], index: u64) {
        let Some((member, ctx)) = parse_read_ctx(ctx) else {
            return;
        };
        if member != self.cfg.id {
            return;
        }
        // A quorum acknowledging round `ctx` also confirms every earlier round; only the
        // newest round is ever in flight, so an exact match is enough.
        if self.read_inflight.as_ref().is_some_and(|r| r.ctx == ctx) {
            let r = self.read_inflight.take().expect("checked above");
            for w in r.waiters {
                let _ = w.send(Ok(index));
            }
        }
    }

    /// Applies membership changes (which raft requires on its own thread) and passes every
    /// committed entry on to the apply side.
    fn hand_out(&mut self, entries: Vec<Entry>) -> Result<(), LoopError> {
        let Some(last) = entries.last() else {
            return Ok(());
        };
        let last_index = last.index;
        if self.status.commit_index() < last_index {
            self.status
                .commit_index
                .store(last_index, Ordering::Release);
        }
        let mut rejected_conf_changes = Vec::new();
        for e in &entries {
            let accepted = match e.get_entry_type() {
                EntryType::EntryConfChange => {
                    let mut cc = ConfChange::default();
                    cc.merge_from_bytes(e.get_data()).is_ok() && self.apply_conf_change(&cc)?
                }
                EntryType::EntryConfChangeV2 => {
                    let mut cc = ConfChangeV2::default();
                    cc.merge_from_bytes(e.get_data()).is_ok() && self.apply_conf_change(&cc)?
                }
                EntryType::EntryNormal => true,
            };
            if !accepted {
                rejected_conf_changes.push(e.index);
            }
        }
        let term = self.node.raft.term;
        let batch = CommittedEntries {
            entries,
            term,
            rejected_conf_changes,
            snapshot: None,
        };
        if self.apply.send(batch).is_err() {
            return Err(LoopError::ApplyStopped);
        }
        Ok(())
    }

    /// Returns whether raft accepted the change.
    fn apply_conf_change(&mut self, cc: &impl raft_proto::ConfChangeI) -> Result<bool, LoopError> {
        match self.node.apply_conf_change(cc) {
            Ok(cs) => {
                self.status
                    .is_learner
                    .store(cs.learners.contains(&self.cfg.id), Ordering::Release);
                self.storage.set_conf_state(&cs)?;
                Ok(true)
            }
            Err(e) => {
                // An invalid change leaves membership as it was, as etcd does.
                tracing::warn!(error = %e, "rejected raft configuration change");
                Ok(false)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_contexts_name_their_member() {
        let a = read_ctx_bytes(7, 1);
        let b = read_ctx_bytes(8, 1);
        assert_ne!(a, b, "the same counter on two members must differ");
        assert_eq!(parse_read_ctx(&a), Some((7, 1)));
        assert_eq!(parse_read_ctx(&b), Some((8, 1)));
        assert_eq!(parse_read_ctx(&[0; 8]), None);
    }

    /// With `synced.txt` (feature `failpoints`): how far the WAL is fsynced, and where the
    /// record of the first committed entry carrying `payload` ends, right when that entry
    /// reaches the apply side of a single-member node.
    #[cfg(feature = "failpoints")]
    fn synced_and_entry_end(ack_before_fsync: bool, payload: &[u8]) -> (u64, u64, Duration) {
        use crate::storage::WalOptions;
        use crate::wal::{scan_segment_bytes, Record};
        use raft::eraftpb::ConfState;

        let dir = tempfile::tempdir().unwrap();
        let (storage, _) = DiskStorage::open(dir.path(), WalOptions::default()).unwrap();
        storage
            .bootstrap(ConfState {
                voters: vec![1],
                ..Default::default()
            })
            .unwrap();
        let (tx, rx) = mpsc::channel();
        let started = Instant::now();
        let cfg = NodeConfig {
            id: 1,
            tick_interval: Duration::from_millis(10),
            election_tick: 10,
            heartbeat_tick: 1,
            applied: 0,
            pre_vote: false,
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 256,
            max_uncommitted_size: 1 << 30,
            campaign_if_sole_voter: true,
            ack_before_fsync,
        };
        let (handle, thread) = start(cfg, storage.clone(), tx, None).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        while rt.block_on(handle.propose(payload.to_vec())).is_err() {
            std::thread::sleep(Duration::from_millis(5));
        }
        'wait: loop {
            let batch: CommittedEntries = rx.recv_timeout(Duration::from_secs(10)).unwrap();
            if batch.entries.iter().any(|e| e.data.as_ref() == payload) {
                break 'wait;
            }
        }
        let elapsed = started.elapsed();
        let seg = storage.wal_segments().pop().unwrap();
        let synced: u64 = std::fs::read_to_string(dir.path().join(crate::wal::SYNCED_FILE))
            .unwrap()
            .lines()
            .filter_map(|l| l.split_once(' '))
            .filter(|(n, _)| seg.ends_with(n))
            .map(|(_, len)| len.parse().unwrap())
            .next()
            .unwrap();
        let bytes = std::fs::read(&seg).unwrap();
        let end = scan_segment_bytes(&bytes)
            .records
            .iter()
            .find(|r| matches!(&r.record, Record::Entry(e) if e.data.as_ref() == payload))
            .map(|r| r.offset + r.frame_len)
            .expect("the entry is in the file");
        handle.stop();
        thread.join().unwrap().unwrap();
        (synced, end, elapsed)
    }

    #[cfg(feature = "failpoints")]
    #[test]
    fn entries_reach_apply_only_once_fsynced() {
        let (synced, end, _) = synced_and_entry_end(false, b"durable first");
        assert!(
            synced >= end,
            "applied entry ends at {end}, fsynced only {synced}"
        );
    }

    #[cfg(feature = "failpoints")]
    #[test]
    fn planted_ack_before_fsync_applies_unsynced_entries() {
        // The bug fsyncs once a LAZY_FSYNC_INTERVAL: only a run that got its entry applied
        // sooner than that after start tells anything; a slow machine gets a few tries.
        for _ in 0..5 {
            let (synced, end, elapsed) = synced_and_entry_end(true, b"acked, not durable");
            if elapsed < LAZY_FSYNC_INTERVAL / 2 {
                assert!(synced < end, "entry ending at {end} was fsynced ({synced})");
                return;
            }
        }
        panic!("never got an entry applied within half a second of starting");
    }
}
