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
use std::sync::{Arc, Mutex, OnceLock};
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
    /// Peers a snapshot is being sent to.
    snapshots_in_flight: Mutex<HashSet<u64>>,
    /// The connection forwarded requests use: (leader id, URL, channel).
    forward_channel: Mutex<Option<(u64, String, tonic::transport::Channel)>>,
    /// This member was removed from the cluster (its removal applied, or a peer refused it as
    /// removed); the server stops.
    removed: std::sync::atomic::AtomicBool,
}

impl PeerContext {
    /// Context for a member with these ids.
    pub fn new(
        identity: Identity,
        membership: Arc<Membership>,
        store: Arc<Store>,
        snap_dir: PathBuf,
    ) -> Arc<PeerContext> {
        Arc::new(PeerContext {
            identity,
            membership,
            node: OnceLock::new(),
            store,
            snap_dir,
            snapshots_in_flight: Mutex::new(HashSet::new()),
            forward_channel: Mutex::new(None),
            removed: std::sync::atomic::AtomicBool::new(false),
        })
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
    runtime: tokio::runtime::Handle,
    queues: HashMap<u64, mpsc::Sender<Message>>,
}

impl PeerTransport {
    /// A transport spawning its tasks on `runtime`.
    pub fn new(ctx: Arc<PeerContext>, runtime: tokio::runtime::Handle) -> PeerTransport {
        PeerTransport {
            ctx,
            runtime,
            queues: HashMap::new(),
        }
    }

    fn queue(&mut self, to: u64) -> &mpsc::Sender<Message> {
        let closed = self.queues.get(&to).is_some_and(|q| q.is_closed());
        if closed {
            self.queues.remove(&to);
        }
        self.queues.entry(to).or_insert_with(|| {
            let (tx, rx) = mpsc::channel(PEER_QUEUE);
            self.runtime.spawn(stream::run(self.ctx.clone(), to, rx));
            tx
        })
    }
}

impl Transport for PeerTransport {
    fn send(&mut self, msgs: Vec<Message>) {
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
                    self.runtime.spawn(snapshot::send(self.ctx.clone(), m));
                }
                continue;
            }
            if self.queue(to).try_send(m).is_err() {
                self.ctx.report_unreachable(to);
            }
        }
    }
}
