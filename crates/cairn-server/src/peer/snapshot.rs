//! Snapshots between members. Raft's snapshot carries only metadata (index, term, ConfState);
//! the backend travels beside it.
//!
//! Leader side: when raft asks storage for a snapshot newer than the one prepared, storage
//! answers "temporarily unavailable" and calls [`spawn_preparer`]'s hook; the preparer makes a
//! consistent copy of the backend (`member/snap/<index>.send.db`, one read transaction) and
//! tells storage to offer a snapshot at exactly the copy's applied index. Raft retries, gets
//! it, and the transport streams that file in chunks with a CRC-32C (`send`). So the
//! snapshot's index is exactly the applied index of the backend that comes with it.
//!
//! Failpoint `snapshot_send` (see `crate::faults`): after the first chunk of a stream was
//! handed to the call.
//!
//! Follower side ([`receive`]): the file goes to `member/snap/<index>.snap.db`, is verified
//! and made durable, and only then is the raft message stepped. The Ready loop records the
//! metadata in the WAL and the apply thread swaps the file in ([`install_path`]); a crash in
//! between finds the file on restart.

use super::PeerContext;
use cairn_api::cairnpb::{peer_client::PeerClient, SnapshotChunk};
use protobuf::Message as _;
use raft::eraftpb::{Message, MessageType};
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

/// Bytes of backend per chunk.
const CHUNK: usize = 1 << 20;

/// Where the backend received with the snapshot at `index` waits to be installed.
pub fn install_path(snap_dir: &Path, index: u64) -> PathBuf {
    snap_dir.join(format!("{index:016x}.snap.db"))
}

/// Where the leader keeps its copy of the backend at applied index `index` for sending.
fn prepared_path(snap_dir: &Path, index: u64) -> PathBuf {
    snap_dir.join(format!("{index:016x}.send.db"))
}

/// Makes backend copies when raft's storage asks for a snapshot (see the module docs). Only
/// the newest copy is kept; requests that arrive while a copy is being made are served by
/// the next one.
pub fn spawn_preparer(ctx: Arc<PeerContext>, storage: cairn_raft::storage::DiskStorage) {
    let wanted = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let wake = Arc::new(tokio::sync::Notify::new());
    let (w, n) = (wanted.clone(), wake.clone());
    storage.on_snapshot_request(Box::new(move |index| {
        w.fetch_max(index.max(1), std::sync::atomic::Ordering::AcqRel);
        n.notify_one();
    }));
    ctx.runtime.clone().spawn(async move {
        loop {
            wake.notified().await;
            if ctx.is_removed() {
                return;
            }
            let want = wanted.load(std::sync::atomic::Ordering::Acquire);
            if want == 0 {
                continue;
            }
            match prepare(&ctx).await {
                Ok(index) => {
                    storage.set_prepared_snapshot(index);
                    remove_prepared_before(&ctx.snap_dir, index);
                    tracing::info!(index, "prepared a database snapshot for followers");
                    if index < want {
                        // Raced ahead of apply: try again shortly.
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        wake.notify_one();
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "failed to prepare a database snapshot");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    wake.notify_one();
                }
            }
        }
    });
}

/// Copies the backend; returns the copy's applied index.
async fn prepare(ctx: &Arc<PeerContext>) -> Result<u64, String> {
    let tmp = ctx.snap_dir.join("prepare.tmp.db");
    let _ = std::fs::remove_file(&tmp);
    let store = ctx.store.clone();
    let copy_to = tmp.clone();
    let info = tokio::task::spawn_blocking(move || store.copy_to(&copy_to))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("copying the backend: {e}"))?;
    let path = prepared_path(&ctx.snap_dir, info.applied_index);
    std::fs::rename(&tmp, &path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(info.applied_index)
}

/// Removes prepared copies older than `index`; a send already reading one keeps its open file.
fn remove_prepared_before(snap_dir: &Path, index: u64) {
    let Ok(dir) = std::fs::read_dir(snap_dir) else {
        return;
    };
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let old = name
            .strip_suffix(".send.db")
            .and_then(|hex| u64::from_str_radix(hex, 16).ok())
            .is_some_and(|i| i < index);
        if old {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Sends `msg` (a MsgSnapshot) with a copy of the backend, then reports the outcome to raft.
pub(super) async fn send(ctx: Arc<PeerContext>, msg: Message) {
    let to = msg.to;
    let index = msg.get_snapshot().get_metadata().index;
    let started = std::time::Instant::now();
    let outcome = send_inner(&ctx, msg).await;
    match &outcome {
        Ok(size) => tracing::info!(
            remote_peer_id = %format!("{to:x}"),
            index,
            bytes = size,
            took = ?started.elapsed(),
            "sent database snapshot to peer"
        ),
        Err(e) => tracing::warn!(
            remote_peer_id = %format!("{to:x}"),
            index,
            error = %e,
            "failed to send database snapshot to peer"
        ),
    }
    ctx.snapshots_in_flight
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .remove(&to);
    if let Some(node) = ctx.node.get() {
        node.report_snapshot(to, outcome.is_ok());
    }
}

async fn send_inner(ctx: &Arc<PeerContext>, msg: Message) -> Result<u64, String> {
    let url = ctx.peer_url(msg.to).ok_or("not a member")?;
    let index = msg.get_snapshot().get_metadata().index;
    let file = prepared_path(&ctx.snap_dir, index);
    if !file.exists() {
        return Err(format!("no prepared backend copy at index {index}"));
    }
    stream_file(ctx, &url, msg, &file).await
}

async fn stream_file(
    ctx: &Arc<PeerContext>,
    url: &str,
    msg: Message,
    file: &Path,
) -> Result<u64, String> {
    let to = msg.to;
    let message = msg.write_to_bytes().map_err(|e| e.to_string())?;
    let total = std::fs::metadata(file).map_err(|e| e.to_string())?.len();
    let (tx, rx) = mpsc::channel::<SnapshotChunk>(4);
    let header = ctx.header_to(to);
    let path = file.to_path_buf();
    // Reading runs on a blocking thread, feeding the call through a small queue.
    let reader = tokio::task::spawn_blocking(move || -> Result<(), String> {
        let mut f = std::fs::File::open(&path).map_err(|e| e.to_string())?;
        let mut crc = 0u32;
        let mut first = Some((header, message));
        let mut sent = 0u64;
        loop {
            let mut buf = vec![0u8; CHUNK];
            let mut n = 0;
            while n < CHUNK {
                let r = f.read(&mut buf[n..]).map_err(|e| e.to_string())?;
                if r == 0 {
                    break;
                }
                n += r;
            }
            buf.truncate(n);
            crc = crc32c::crc32c_append(crc, &buf);
            sent += n as u64;
            let last = sent >= total;
            let (header, message) = first.take().unzip();
            let is_first = header.is_some();
            let chunk = SnapshotChunk {
                header,
                message: message.unwrap_or_default(),
                data: buf,
                total_size: total,
                crc32c: if last { crc } else { 0 },
                last,
            };
            if tx.blocking_send(chunk).is_err() {
                return Err("snapshot stream closed".into());
            }
            if is_first {
                // The first chunk is on its way: the follower is mid-stream (or, for a backend
                // of one chunk, has it all but may not have answered yet).
                crate::faults::crash_point!("snapshot_send");
            }
            if last {
                return Ok(());
            }
        }
    });
    let channel = ctx
        .dialer
        .channel(url, super::dial::DialOptions::now(Duration::from_secs(2)))
        .await
        .map_err(|e| e.to_string())?;
    let mut client = PeerClient::new(channel).max_encoding_message_size(usize::MAX);
    let call = client.snapshot(ReceiverStream::new(rx)).await;
    let read = reader.await.map_err(|e| e.to_string())?;
    call.map_err(|s| s.message().to_string())?;
    read?;
    Ok(total)
}

/// Receives a snapshot stream into `snap_dir`; returns the raft message to step once the file
/// is complete, verified and durable.
pub async fn receive(
    ctx: &PeerContext,
    mut chunks: tonic::Streaming<SnapshotChunk>,
) -> Result<Message, Status> {
    let first = chunks
        .message()
        .await?
        .ok_or_else(|| Status::invalid_argument("empty snapshot stream"))?;
    super::service::check_header(ctx, first.header.as_ref())?;
    let msg = Message::parse_from_bytes(&first.message)
        .map_err(|e| Status::invalid_argument(format!("bad snapshot message: {e}")))?;
    if msg.get_msg_type() != MessageType::MsgSnapshot || msg.to != ctx.identity.member_id {
        return Err(Status::invalid_argument("not a snapshot for this member"));
    }
    let index = msg.get_snapshot().get_metadata().index;
    let total = first.total_size;
    let final_path = install_path(&ctx.snap_dir, index);
    let part = final_path.with_extension("part");
    let io = |e: std::io::Error| Status::internal(format!("{}: {e}", part.display()));
    let mut file = std::fs::File::create(&part).map_err(io)?;
    let mut crc = 0u32;
    let mut received = 0u64;
    let mut chunk = first;
    loop {
        crc = crc32c::crc32c_append(crc, &chunk.data);
        received += chunk.data.len() as u64;
        file.write_all(&chunk.data).map_err(io)?;
        if chunk.last {
            if received != total || chunk.crc32c != crc {
                drop(file);
                let _ = std::fs::remove_file(&part);
                return Err(Status::data_loss(format!(
                    "snapshot at index {index}: got {received} of {total} bytes, crc {crc:08x}, expected {:08x}",
                    chunk.crc32c
                )));
            }
            break;
        }
        chunk = match chunks.message().await? {
            Some(c) => c,
            None => {
                drop(file);
                let _ = std::fs::remove_file(&part);
                return Err(Status::data_loss("snapshot stream ended early"));
            }
        };
    }
    file.sync_all().map_err(io)?;
    drop(file);
    std::fs::rename(&part, &final_path).map_err(io)?;
    std::fs::File::open(&ctx.snap_dir)
        .and_then(|d| d.sync_all())
        .map_err(io)?;
    tracing::info!(
        index,
        bytes = total,
        "received database snapshot from the leader"
    );
    Ok(msg)
}

/// Removes leftovers: partial receptions, copies made for sending (a new leader prepares its
/// own), and received snapshots at or below `installed` (already in the backend).
pub fn clean_snap_dir(snap_dir: &Path, installed: u64) {
    let Ok(dir) = std::fs::read_dir(snap_dir) else {
        return;
    };
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let stale = name.ends_with(".part")
            || name.ends_with(".tmp.db")
            || name.ends_with(".send.db")
            || snapshot_index(&name).is_some_and(|i| i <= installed);
        if stale {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// The index in a received snapshot's file name.
pub fn snapshot_index(file_name: &str) -> Option<u64> {
    let hex = file_name.strip_suffix(".snap.db")?;
    u64::from_str_radix(hex, 16).ok()
}
