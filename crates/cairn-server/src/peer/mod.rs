//! The peer port: raft messages between members, snapshots for members that fell behind, the
//! membership for members joining, and the lease requests only the leader can answer.
//!
//! Sending ([`PeerTransport`], the raft thread's [`Transport`]): one long-lived client-streaming
//! `Raft` call per peer, fed by a bounded queue. A queue that is full or a peer that cannot be
//! reached drops messages and tells raft the peer is unreachable; raft retries (it never relies
//! on delivery). Reconnects back off from 50 ms to 1 s. A `MsgSnapshot` goes out on its own
//! `Snapshot` call with a consistent copy of the backend ([`snapshot`]).
//!
//! Receiving ([`service::PeerService`]): every call names the sender's cluster and member; a
//! member of another cluster, or one removed from this one, is refused and logged.

pub mod dial;
pub mod forward;
pub mod service;
pub mod snapshot;
mod stream;

use crate::bootstrap::Identity;
use crate::membership::Membership;
use cairn_api::cairnpb::PeerHeader;
use cairn_mvcc::Store;
use cairn_raft::node::{NodeHandle, Transport};
use raft::eraftpb::{Message, MessageType};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Instant;
use tokio::sync::mpsc;

/// Messages queued per peer before the transport starts dropping them.
const PEER_QUEUE: usize = 4096;

/// What the sending and receiving sides share.
pub struct PeerContext {
    /// This member's and its cluster's ids.
    pub identity: Identity,
    /// Where peers are (their peer URLs).
    pub membership: Arc<Membership>,
    /// The raft thread, set once it has started.
    pub node: OnceLock<NodeHandle>,
    /// The backend, copied for snapshots.
    pub store: Arc<Store>,
    /// `member/snap`: snapshot files being sent or received.
    pub snap_dir: PathBuf,
    /// How connections to other members are made (plain or TLS by their URLs' scheme).
    pub dialer: dial::PeerDialer,
    /// Peers a snapshot is being sent to.
    snapshots_in_flight: Mutex<HashSet<u64>>,
    /// The connection forwarded requests use: (leader id, URL, channel).
    forward_channel: Mutex<Option<(u64, String, tonic::transport::Channel)>>,
    /// This member was removed from the cluster (its removal applied, or a peer refused it as
    /// removed); the server stops.
    removed: std::sync::atomic::AtomicBool,
    /// Each peer's outgoing queue; its task keeps a stream open even when idle, so that
    /// `active_since` tells which peers are reachable (etcd's `ActiveSince`).
    queues: Mutex<HashMap<u64, mpsc::Sender<Message>>>,
    /// Since when each reachable peer has been connected without interruption.
    active_since: Mutex<HashMap<u64, Instant>>,
    /// Where peer tasks run.
    runtime: tokio::runtime::Handle,
}

impl PeerContext {
    /// Context for a member with these ids.
    pub fn new(
        identity: Identity,
        membership: Arc<Membership>,
        store: Arc<Store>,
        snap_dir: PathBuf,
        dialer: dial::PeerDialer,
        runtime: tokio::runtime::Handle,
    ) -> Arc<PeerContext> {
        Arc::new(PeerContext {
            identity,
            membership,
            node: OnceLock::new(),
            store,
            snap_dir,
            dialer,
            snapshots_in_flight: Mutex::new(HashSet::new()),
            forward_channel: Mutex::new(None),
            removed: std::sync::atomic::AtomicBool::new(false),
            queues: Mutex::new(HashMap::new()),
            active_since: Mutex::new(HashMap::new()),
            runtime,
        })
    }

    fn queues(&self) -> MutexGuard<'_, HashMap<u64, mpsc::Sender<Message>>> {
        self.queues
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts `to`'s stream task unless it runs; returns its queue.
    fn ensure_stream(
        self: &Arc<Self>,
        queues: &mut HashMap<u64, mpsc::Sender<Message>>,
        to: u64,
    ) -> mpsc::Sender<Message> {
        if queues.get(&to).is_some_and(|q| q.is_closed()) {
            queues.remove(&to);
        }
        queues
            .entry(to)
            .or_insert_with(|| {
                let (tx, rx) = mpsc::channel(PEER_QUEUE);
                self.runtime.spawn(stream::run(self.clone(), to, rx));
                tx
            })
            .clone()
    }

    /// Keeps a stream open to every other member as membership changes, like etcd's peer
    /// transport, so reachability is known before any message needs to flow.
    pub fn spawn_connector(self: &Arc<Self>) {
        let ctx = self.clone();
        let mut changes = self.membership.subscribe();
        self.runtime.spawn(async move {
            loop {
                let ids: Vec<u64> = ctx
                    .membership
                    .list()
                    .iter()
                    .map(|m| m.id)
                    .filter(|id| *id != ctx.identity.member_id)
                    .collect();
                {
                    let mut queues = ctx.queues();
                    for id in ids {
                        ctx.ensure_stream(&mut queues, id);
                    }
                }
                if changes.changed().await.is_err() || ctx.is_removed() {
                    return;
                }
            }
        });
    }

    /// Records that the stream to `to` is up (keeping the first moment) or down.
    fn set_active(&self, to: u64, up: bool) {
        let mut active = self
            .active_since
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if up {
            active.entry(to).or_insert_with(Instant::now);
        } else {
            active.remove(&to);
        }
    }

    /// Since when `id` has been reachable, if it is.
    pub fn active_since(&self, id: u64) -> Option<Instant> {
        self.active_since
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&id)
            .copied()
    }

    /// How many of `ids` have been reachable since `since` or earlier (this member counts as
    /// reachable), as etcd's `numConnectedSince`.
    pub fn connected_since(&self, ids: &[u64], since: Instant) -> usize {
        ids.iter()
            .filter(|id| {
                **id == self.identity.member_id
                    || self.active_since(**id).is_some_and(|t| t <= since)
            })
            .count()
    }

    /// Records that this member is no longer part of the cluster.
    pub fn mark_removed(&self) {
        self.removed
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// Whether this member was removed from the cluster.
    pub fn is_removed(&self) -> bool {
        self.removed.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The header of a call to member `to`.
    pub fn header_to(&self, to: u64) -> PeerHeader {
        PeerHeader {
            cluster_id: self.identity.cluster_id,
            from: self.identity.member_id,
            to,
        }
    }

    fn report_unreachable(&self, to: u64) {
        if let Some(node) = self.node.get() {
            node.report_unreachable(to);
        }
    }

    /// A peer URL of member `id`, if it is a member.
    pub fn peer_url(&self, id: u64) -> Option<String> {
        self.membership
            .get(id)
            .and_then(|m| m.peer_urls.first().cloned())
    }
}

/// The raft thread's transport: routes each message to its peer's queue.
pub struct PeerTransport {
    ctx: Arc<PeerContext>,
}

impl PeerTransport {
    /// A transport over `ctx`'s peer streams.
    pub fn new(ctx: Arc<PeerContext>) -> PeerTransport {
        PeerTransport { ctx }
    }
}

impl Transport for PeerTransport {
    fn send(&mut self, msgs: Vec<Message>) {
        let mut queues = self.ctx.queues();
        for m in msgs {
            let to = m.to;
            if self.ctx.membership.get(to).is_none() {
                // Not (or no longer) a member: nowhere to send it. Raft retries or forgets.
                continue;
            }
            if m.get_msg_type() == MessageType::MsgSnapshot {
                let first = self
                    .ctx
                    .snapshots_in_flight
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .insert(to);
                // Raft pauses a follower while its snapshot is outstanding, so a second one is
                // a duplicate of the one already on its way.
                if first {
                    self.ctx.runtime.spawn(snapshot::send(self.ctx.clone(), m));
                }
                continue;
            }
            if self.ctx.ensure_stream(&mut queues, to).try_send(m).is_err() {
                self.ctx.report_unreachable(to);
            }
        }
    }
}
