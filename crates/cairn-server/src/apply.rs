//! The apply thread: committed raft entries, in log order, into the MVCC store, one backend
//! transaction per batch; then the waiting clients are woken and raft is told how far apply
//! got.
//!
//! Durability: each batch commits non-durably (the WAL already holds the entries) together
//! with the applied index, so after a crash the store is at some earlier durable batch and the
//! WAL replays exactly the entries after it. A durable commit happens every
//! [`DURABLE_INTERVAL`], on shutdown, and before the raft log is compacted, since compaction
//! forgets entries only the durable store then covers. Every entry arriving here is already
//! fsynced in the WAL (see `cairn_raft::node`), so no backend state, durable or not, is ahead
//! of the durable log.
//!
//! Failpoints (see `crate::faults`): `snapshot_before_install` / `snapshot_after_install`
//! around the swap of a received backend; the backend and compaction ones are in cairn-mvcc.

use crate::core::Core;
use crate::errors::mvcc_error;
use crate::lease::PendingLessor;
use crate::membership::{Member, MembershipState};
use cairn_api::cairnpb::{internal_request::Request, InternalRequest};
use cairn_api::etcdserverpb::{
    CompactionResponse, DeleteRangeResponse, LeaseCheckpointResponse, LeaseGrantResponse,
    LeaseRevokeResponse, PutResponse, TxnResponse,
};
use cairn_api::EtcdError;
use cairn_mvcc::{GrantedLeases, MvccError, WriteBatch};
use cairn_raft::node::CommittedEntries;
use prost::Message as _;
use protobuf::Message as _;
use raft::eraftpb::{ConfChange, ConfChangeType, EntryType, SnapshotMetadata};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the backend is made durable while entries keep arriving.
pub const DURABLE_INTERVAL: Duration = Duration::from_secs(1);
/// Keys removed per physical compaction step, between apply batches.
const COMPACTION_STEP_KEYS: usize = 1_000;
/// Entries applied in one backend transaction at most.
const MAX_BATCH_ENTRIES: usize = 4_096;

/// What applying one request produced; the header is filled by the service.
#[derive(Debug, Clone)]
pub enum Applied {
    /// Put's response.
    Put(PutResponse),
    /// DeleteRange's response.
    DeleteRange(DeleteRangeResponse),
    /// Txn's response.
    Txn(TxnResponse),
    /// Compaction's response.
    Compaction(CompactionResponse),
    /// LeaseGrant's response.
    LeaseGrant(LeaseGrantResponse),
    /// LeaseRevoke's response.
    LeaseRevoke(LeaseRevokeResponse),
    /// LeaseCheckpoint's response.
    LeaseCheckpoint(LeaseCheckpointResponse),
    /// A membership change (or a member's published attributes); the service reads the new
    /// membership.
    Membership,
}

/// The outcome a waiting client receives: the response and the store revision after it.
pub type ApplyResult = Result<(Applied, i64), EtcdError>;

/// Why the apply thread stopped on its own; fatal for the server.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The backend failed to read or write.
    #[error("backend: {0}")]
    Backend(#[from] MvccError),
    /// A snapshot from the leader could not be installed.
    #[error("installing the snapshot at index {index}: {source}")]
    Snapshot {
        /// The snapshot's raft index.
        index: u64,
        /// What failed.
        source: MvccError,
    },
}

/// Runs until the raft side hangs up, then makes the store durable.
pub fn apply_loop(core: Arc<Core>, entries: Receiver<CommittedEntries>) -> Result<(), ApplyError> {
    let mut last_durable = Instant::now();
    let mut durable_index = core.store.applied_index().0;
    let mut compacted_log_to = durable_index;
    let mut last_snapshot_index = durable_index;
    // Clients waiting for a physical compaction to finish: (request id, their result).
    let mut physical_waiters: Vec<(u64, ApplyResult)> = Vec::new();
    let mut compaction_pending = !core.store.compact_step(0)?;
    loop {
        let first = if compaction_pending {
            match entries.recv_timeout(Duration::from_millis(1)) {
                Ok(b) => Some(b),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => break,
            }
        } else {
            match entries.recv() {
                Ok(b) => Some(b),
                Err(_) => break,
            }
        };
        if let Some(first) = first {
            let mut snapshot = None;
            let mut batch = Vec::new();
            let mut count = 0;
            let mut next = Some(first);
            while let Some(b) = next.take() {
                // A snapshot replaces the store: everything before it is applied first,
                // everything after it goes to the next batch.
                if b.snapshot.is_some() {
                    snapshot = b.snapshot;
                    break;
                }
                count += b.entries.len();
                batch.push(b);
                if count < MAX_BATCH_ENTRIES {
                    next = entries.try_recv().ok();
                }
            }
            let durable = last_durable.elapsed() >= DURABLE_INTERVAL || snapshot.is_some();
            let outcome = apply_batch(&core, batch, durable)?;
            if durable {
                last_durable = Instant::now();
                durable_index = outcome.applied;
            }
            compaction_pending |= outcome.compaction_scheduled;
            for (id, result) in outcome.results {
                if outcome.physical.contains(&id) {
                    physical_waiters.push((id, result));
                } else {
                    core.waiters.trigger(id, result);
                }
            }
            if let Some(meta) = snapshot {
                install_snapshot(&core, &meta)?;
                durable_index = core.applied_index();
                last_durable = Instant::now();
                compaction_pending = !core.store.compact_step(0)?;
            }
            // Log compaction, every --snapshot-count applied entries as etcd snapshots: only
            // what the durable store covers may be forgotten, so the store is made durable
            // first, then the log is cut --snapshot-catchup-entries behind it.
            let applied = core.applied_index();
            if applied.saturating_sub(last_snapshot_index) >= core.cfg.snapshot_count {
                if durable_index < applied {
                    core.store.sync()?;
                    durable_index = applied;
                    last_durable = Instant::now();
                }
                last_snapshot_index = applied;
                let keep = core.cfg.snapshot_catchup_entries;
                let to = durable_index.saturating_sub(keep);
                if to > compacted_log_to {
                    core.node.compact_log(to);
                    compacted_log_to = to;
                }
            }
        }
        if compaction_pending {
            let done = core.store.compact_step(COMPACTION_STEP_KEYS)?;
            if done {
                compaction_pending = false;
                for (id, result) in physical_waiters.drain(..) {
                    core.waiters.trigger(id, result);
                }
            }
        }
    }
    core.store.sync()?;
    for (id, result) in physical_waiters.drain(..) {
        core.waiters.trigger(id, result);
    }
    Ok(())
}

struct BatchOutcome {
    applied: u64,
    results: Vec<(u64, ApplyResult)>,
    /// Request ids of physical compactions in this batch.
    physical: Vec<u64>,
    compaction_scheduled: bool,
}

/// Applies a batch of committed entries in one backend transaction, then publishes the applied
/// index.
fn apply_batch(
    core: &Core,
    batch: Vec<CommittedEntries>,
    durable: bool,
) -> Result<BatchOutcome, ApplyError> {
    let already = core.applied_index();
    let mut wb = core.store.begin_write()?;
    let mut out = BatchOutcome {
        applied: already,
        results: Vec::new(),
        physical: Vec::new(),
        compaction_scheduled: false,
    };
    let mut term = 0;
    let mut leases = PendingLessor::new(core);
    // Copied on the first membership change of the batch, published after the commit.
    let mut members: Option<MembershipState> = None;
    for committed in batch {
        for entry in committed.entries {
            // Entries at or below the durable applied index are replays of what the store
            // already holds.
            if entry.index <= out.applied {
                continue;
            }
            out.applied = entry.index;
            term = entry.term;
            if entry.get_entry_type() == EntryType::EntryNormal && entry.data.is_empty() {
                leases.empty_entry(core, entry.term);
            }
            if entry.get_entry_type() == EntryType::EntryConfChange {
                let rejected = committed.rejected_conf_changes.contains(&entry.index);
                let state = members.get_or_insert_with(|| core.membership.state());
                if let Some((id, result)) =
                    apply_conf_change(core, &mut wb, state, &entry.data, rejected)?
                {
                    out.results
                        .push((id, result.map(|()| (Applied::Membership, wb.revision()))));
                }
                continue;
            }
            if entry.get_entry_type() != EntryType::EntryNormal || entry.data.is_empty() {
                continue;
            }
            let request = match InternalRequest::decode(&entry.data[..]) {
                Ok(r) => r,
                Err(e) => {
                    // Every member decodes the same bytes the same way, so skipping keeps
                    // members identical; it can only come from a foreign writer.
                    tracing::error!(index = entry.index, error = %e, "undecodable raft entry skipped");
                    continue;
                }
            };
            let id = request.header.map(|h| h.id).unwrap_or(0);
            let Some(req) = request.request else {
                continue;
            };
            if let Request::Compaction(c) = &req {
                if c.physical {
                    out.physical.push(id);
                }
            }
            if let Request::MemberAttrSet(_) | Request::MemberUpdate(_) = &req {
                let state = members.get_or_insert_with(|| core.membership.state());
                let result = apply_member_request(&mut wb, state, req)
                    .map(|()| (Applied::Membership, wb.revision()));
                out.results.push((id, result));
                continue;
            }
            let result = apply_request(&mut wb, req, &mut out.compaction_scheduled, &mut leases);
            out.results.push((id, result));
        }
    }
    if out.applied > already {
        wb.set_applied_index(out.applied, term);
    }
    let events = wb.commit(durable)?;
    // Watchers get a revision before its writer is answered, so a client that watches from
    // an acknowledged revision never misses it.
    core.watch.publish(&events);
    #[cfg(feature = "planted-bugs")]
    if out.compaction_scheduled {
        core.watch.compaction_applied();
    }
    leases.commit(core);
    if let Some(state) = members {
        core.membership.replace(state);
    }
    core.set_applied_index(out.applied);
    Ok(out)
}

/// A waiter to wake (request id) and what to tell it.
type Wake = (u64, Result<(), EtcdError>);

/// Applies a committed ConfChange to the membership (raft's configuration was already changed
/// on the raft thread, or the change was refused there). Returns the waiter to wake.
fn apply_conf_change(
    core: &Core,
    wb: &mut WriteBatch<'_>,
    state: &mut MembershipState,
    data: &[u8],
    rejected: bool,
) -> Result<Option<Wake>, ApplyError> {
    let Ok(cc) = ConfChange::parse_from_bytes(data) else {
        tracing::error!("undecodable ConfChange entry skipped");
        return Ok(None);
    };
    let id = cc.id;
    let node = cc.node_id;
    if rejected {
        let err = match cc.get_change_type() {
            ConfChangeType::RemoveNode => EtcdError::MemberNotFound,
            _ => EtcdError::MemberExist,
        };
        return Ok(Some((id, Err(err))));
    }
    let from_context = Member::decode(&cc.context);
    match cc.get_change_type() {
        ConfChangeType::AddNode | ConfChangeType::AddLearnerNode => {
            let learner = cc.get_change_type() == ConfChangeType::AddLearnerNode;
            let member = match (state.members.get(&node), from_context) {
                // Promotion: the member stays, as a voter.
                (Some(existing), _) => Member {
                    is_learner: learner && existing.is_learner,
                    ..existing.clone()
                },
                (None, Some(m)) => Member {
                    id: node,
                    is_learner: learner,
                    ..m
                },
                (None, None) => {
                    tracing::error!(member_id = %format!("{node:x}"), "ConfChange without a member skipped");
                    return Ok(Some((id, Err(EtcdError::MemberBadUrls))));
                }
            };
            wb.put_member(node, &member.encode())?;
            tracing::info!(
                member_id = %format!("{node:x}"),
                peer_urls = %member.peer_urls.join(","),
                learner = member.is_learner,
                "added member"
            );
            state.members.insert(node, member);
        }
        ConfChangeType::RemoveNode => {
            wb.remove_member(node)?;
            state.members.remove(&node);
            state.removed.insert(node);
            tracing::info!(member_id = %format!("{node:x}"), "removed member");
            if node == core.member.id {
                core.mark_removed();
            }
        }
    }
    Ok(Some((id, Ok(()))))
}

fn apply_member_request(
    wb: &mut WriteBatch<'_>,
    state: &mut MembershipState,
    req: Request,
) -> Result<(), EtcdError> {
    let id = match &req {
        Request::MemberAttrSet(a) => a.member_id,
        Request::MemberUpdate(u) => u.member_id,
        _ => return Ok(()),
    };
    let Some(member) = state.members.get_mut(&id) else {
        return Err(EtcdError::MemberNotFound);
    };
    match req {
        Request::MemberAttrSet(a) => {
            member.name = a.name;
            member.client_urls = a.client_urls;
        }
        Request::MemberUpdate(u) => {
            let mut urls = u.peer_urls;
            urls.sort();
            member.peer_urls = urls;
        }
        _ => {}
    }
    wb.put_member(id, &member.encode()).map_err(mvcc_error)?;
    Ok(())
}

/// Replaces the store with the backend received with a snapshot, then rebuilds everything
/// kept beside it: membership, leases, watchers, the applied index.
fn install_snapshot(core: &Core, meta: &SnapshotMetadata) -> Result<(), ApplyError> {
    let snap_dir = core.cfg.snap_path();
    let path = crate::peer::snapshot::install_path(&snap_dir, meta.index);
    let wrap = |source| ApplyError::Snapshot {
        index: meta.index,
        source,
    };
    // The snapshot's WAL record is durable (the raft thread wrote and synced it before handing
    // the snapshot over); the received file is durable too.
    crate::faults::crash_point!("snapshot_before_install");
    core.store.replace_with(&path).map_err(wrap)?;
    crate::faults::crash_point!("snapshot_after_install");
    let (applied, _) = core.store.applied_index();
    core.membership
        .replace(MembershipState::load(&core.store).map_err(wrap)?);
    core.lessor.recover(core.store.leases().map_err(wrap)?);
    core.watch.resync_after_snapshot();
    crate::peer::snapshot::clean_snap_dir(&snap_dir, meta.index);
    tracing::info!(
        index = meta.index,
        applied_index = applied,
        revision = core.store.current_revision(),
        "installed snapshot from the leader"
    );
    core.set_applied_index(applied.max(core.applied_index()));
    Ok(())
}

fn apply_request(
    wb: &mut WriteBatch<'_>,
    req: Request,
    compaction_scheduled: &mut bool,
    leases: &mut PendingLessor,
) -> ApplyResult {
    let applied = match req {
        Request::Put(r) => Applied::Put(wb.put(&r, &GrantedLeases).map_err(mvcc_error)?),
        Request::DeleteRange(r) => Applied::DeleteRange(wb.delete_range(&r).map_err(mvcc_error)?),
        Request::Txn(r) => Applied::Txn(wb.txn(&r, &GrantedLeases).map_err(mvcc_error)?),
        Request::Compaction(r) => {
            wb.compact(r.revision).map_err(mvcc_error)?;
            *compaction_scheduled = true;
            Applied::Compaction(CompactionResponse::default())
        }
        req @ (Request::LeaseGrant(_) | Request::LeaseRevoke(_) | Request::LeaseCheckpoint(_)) => {
            leases.apply(wb, req)?
        }
        Request::MemberAttrSet(_) | Request::MemberUpdate(_) => {
            // Routed to apply_member_request before this.
            return Err(EtcdError::NotCapable);
        }
        Request::Alarm(_) => {
            // This member does not propose these yet; one written by a newer member is
            // answered as etcd answers a request it lacks the capability for.
            return Err(EtcdError::NotCapable);
        }
    };
    Ok((applied, wb.revision()))
}
