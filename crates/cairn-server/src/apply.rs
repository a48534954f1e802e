//! The apply thread: committed raft entries, in log order, into the MVCC store, one backend
//! transaction per batch; then the waiting clients are woken and raft is told how far apply
//! got.
//!
//! Durability: each batch commits non-durably (the WAL already holds the entries) together
//! with the applied index, so after a crash the store is at some earlier durable batch and the
//! WAL replays exactly the entries after it. A durable commit happens every
//! [`DURABLE_INTERVAL`], on shutdown, and before the raft log is compacted, since compaction
//! forgets entries only the durable store then covers.

use crate::core::Core;
use crate::errors::mvcc_error;
use crate::lease::PendingLessor;
use cairn_api::cairnpb::{internal_request::Request, InternalRequest};
use cairn_api::etcdserverpb::{
    CompactionResponse, DeleteRangeResponse, LeaseCheckpointResponse, LeaseGrantResponse,
    LeaseRevokeResponse, PutResponse, TxnResponse,
};
use cairn_api::EtcdError;
use cairn_mvcc::{GrantedLeases, MvccError, WriteBatch};
use cairn_raft::node::CommittedEntries;
use prost::Message as _;
use raft::eraftpb::EntryType;
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
}

/// The outcome a waiting client receives: the response and the store revision after it.
pub type ApplyResult = Result<(Applied, i64), EtcdError>;

/// Why the apply thread stopped on its own; fatal for the server.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The backend failed to read or write.
    #[error("backend: {0}")]
    Backend(#[from] MvccError),
}

/// Runs until the raft side hangs up, then makes the store durable.
pub fn apply_loop(core: Arc<Core>, entries: Receiver<CommittedEntries>) -> Result<(), ApplyError> {
    let mut last_durable = Instant::now();
    let mut durable_index = core.store.applied_index().0;
    let mut compacted_log_to = durable_index;
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
            let mut batch = vec![first];
            let mut count = batch[0].entries.len();
            while count < MAX_BATCH_ENTRIES {
                match entries.try_recv() {
                    Ok(b) => {
                        count += b.entries.len();
                        batch.push(b);
                    }
                    Err(_) => break,
                }
            }
            let durable = last_durable.elapsed() >= DURABLE_INTERVAL;
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
            // Log compaction: only what the durable store covers may be forgotten.
            if durable_index.saturating_sub(compacted_log_to) >= core.cfg.snapshot_count {
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
    leases.commit(core);
    core.set_applied_index(out.applied);
    Ok(out)
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
        Request::Alarm(_) => {
            // This member does not propose these yet; one written by a newer member is
            // answered as etcd answers a request it lacks the capability for.
            return Err(EtcdError::NotCapable);
        }
    };
    Ok((applied, wb.revision()))
}
