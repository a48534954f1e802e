//! Catch-up: replaying `Store::history` to a stream's unsynced watchers and handing them back
//! to the synced index.
//!
//! One round, run by the stream's driver on the blocking pool:
//!
//! 1. under the hub lock, copy the stream's unsynced watchers and the room left in its queue;
//!    the smallest watermark (`next_rev`) is where to read from;
//! 2. without the lock, read up to `catchup_revisions` whole revisions from that revision on
//!    (every revision from there to the last one read is complete in that snapshot) and build
//!    each watcher's responses, cut at revision boundaries, within the room measured;
//! 3. under the lock again, queue them for every watcher that is still the same unsynced
//!    watcher (its serial tells it from a later watcher reusing the id), advance its
//!    watermark, and if it has now seen every published revision, put it back in the synced
//!    index. `publish` runs under the same lock and skips revisions below a synced watcher's
//!    watermark, so nothing is lost or repeated across the handover — the watermark may even be
//!    ahead of the published revision (the read saw commits not yet published).
//!
//! A read from a compacted revision cancels the watchers that need it with the compacted
//! response.

use super::hub::{compacted_response, Hub, Inner, Outgoing, State, StreamId, Watcher};
use cairn_api::etcdserverpb::WatchResponse;
use cairn_mvcc::MvccError;
use prost::Message as _;

/// What a catch-up round did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Round {
    /// Nothing to do now (no unsynced watcher, or no room in the queue).
    Idle,
    /// Queued something or changed a watcher's state; run another round.
    Progressed,
    /// The stream is gone.
    Closed,
}

/// One watcher's share of a round, built outside the lock.
struct Planned {
    id: i64,
    serial: u64,
    /// Its watermark when the round began.
    from: i64,
    /// Responses with the watermark each one advances to.
    chunks: Vec<(Outgoing, i64)>,
    /// Every revision read was considered (not cut short by the room left).
    complete: bool,
}

impl Hub {
    /// Whether the stream has unsynced watchers and room to catch them up.
    pub fn needs_catchup(&self, stream: StreamId) -> bool {
        let g = self.lock();
        g.streams
            .get(&stream)
            .is_some_and(|st| st.unsynced > 0 && st.queue.has_space(&self.limits))
    }

    /// One catch-up round for `stream` (see the module docs). Reads the backend: call it on a
    /// thread that may block.
    pub fn catchup_round(&self, stream: StreamId) -> Result<Round, MvccError> {
        let (watchers, room, published) = {
            let g = self.lock();
            let Some(st) = g.streams.get(&stream) else {
                return Ok(Round::Closed);
            };
            if st.unsynced == 0 || !st.queue.has_space(&self.limits) {
                return Ok(Round::Idle);
            }
            let mut ws: Vec<(i64, Watcher)> = st
                .watchers
                .iter()
                .filter(|(_, w)| w.state == State::Unsynced)
                .map(|(id, w)| (*id, w.clone()))
                .collect();
            ws.sort_unstable_by_key(|(id, _)| *id);
            (ws, st.queue.room(&self.limits), g.rev)
        };
        let Some(from) = watchers.iter().map(|(_, w)| w.next_rev).min() else {
            return Ok(Round::Idle);
        };
        let revs = match self.store.history(from, self.limits.catchup_revisions) {
            Ok(revs) => revs,
            Err(MvccError::Compacted) => return Ok(self.cancel_compacted(stream)),
            Err(e) => return Err(e),
        };
        // Revisions are published only after they are committed, so the history read (a
        // later snapshot) holds every revision up to `published`. Unless the read stopped at
        // `catchup_revisions`, it therefore covered everything up to `published` even where
        // revisions had no events: without this, a watch from revision 1 on a fresh store
        // (revision 1 has no events) read nothing, never reached `published` and never
        // synced (found by the robustness harness).
        let last_read = revs.last().map_or(from - 1, |r| r.revision);
        let covered_to = if revs.len() < self.limits.catchup_revisions.max(1) {
            last_read.max(published)
        } else {
            last_read
        };

        let (mut msgs_left, mut bytes_left) = room;
        let mut planned = Vec::with_capacity(watchers.len());
        for (id, w) in &watchers {
            if msgs_left == 0 || bytes_left == 0 {
                break;
            }
            let mut p = Planned {
                id: *id,
                serial: w.serial,
                from: w.next_rev,
                chunks: Vec::new(),
                complete: true,
            };
            let mut pending = Vec::new();
            let mut pending_bytes = 0usize;
            let first = revs.partition_point(|r| r.revision < w.next_rev);
            for re in &revs[first..] {
                let events = w.select(re.events.iter());
                if events.is_empty() {
                    continue;
                }
                let size: usize = events.iter().map(|e| e.encoded_len()).sum();
                if !pending.is_empty() && pending_bytes + size > self.limits.catchup_response_bytes
                {
                    p.chunks.push((
                        response(*id, w, std::mem::take(&mut pending), re.revision - 1),
                        re.revision,
                    ));
                    msgs_left -= 1;
                    bytes_left = bytes_left.saturating_sub(pending_bytes);
                    pending_bytes = 0;
                    if msgs_left == 0 || bytes_left == 0 {
                        p.complete = false;
                        break;
                    }
                }
                pending.extend(events);
                pending_bytes += size;
            }
            if p.complete && !pending.is_empty() {
                p.chunks
                    .push((response(*id, w, pending, covered_to), covered_to + 1));
                msgs_left = msgs_left.saturating_sub(1);
                bytes_left = bytes_left.saturating_sub(pending_bytes);
            }
            planned.push(p);
        }

        let mut g = self.lock();
        let Inner {
            rev,
            streams,
            synced,
            ..
        } = &mut *g;
        let Some(st) = streams.get_mut(&stream) else {
            return Ok(Round::Closed);
        };
        let mut changed = false;
        for p in planned {
            let Some(w) = st.watchers.get_mut(&p.id) else {
                continue;
            };
            if w.serial != p.serial || w.state != State::Unsynced || w.next_rev != p.from {
                continue;
            }
            let mut complete = p.complete;
            for (out, next) in p.chunks {
                if !st.queue.has_space(&self.limits) {
                    complete = false;
                    break;
                }
                st.queue.push(out);
                w.next_rev = next;
                changed = true;
            }
            if complete {
                if w.next_rev <= covered_to {
                    w.next_rev = covered_to + 1;
                    changed = true;
                }
                if w.next_rev > *rev {
                    w.state = State::Synced;
                    st.unsynced -= 1;
                    synced.insert(&w.range, (stream, p.id));
                    changed = true;
                }
            }
        }
        if !changed {
            return Ok(Round::Idle);
        }
        st.signals.wake.notify_one();
        Ok(Round::Progressed)
    }

    /// Cancels, with the compacted response, every unsynced watcher of `stream` whose next
    /// revision is compacted (as queue room allows; the rest on the next round).
    fn cancel_compacted(&self, stream: StreamId) -> Round {
        let compact = self.store.compact_revision();
        let mut g = self.lock();
        let Some(st) = g.streams.get_mut(&stream) else {
            return Round::Closed;
        };
        let mut ids: Vec<i64> = st
            .watchers
            .iter()
            .filter(|(_, w)| w.state == State::Unsynced && w.next_rev < compact)
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        let mut changed = false;
        for id in ids {
            if !st.queue.has_space(&self.limits) {
                break;
            }
            let Some(w) = st.watchers.get_mut(&id) else {
                continue;
            };
            w.state = State::Compacted;
            st.unsynced -= 1;
            st.queue.push(compacted_response(id, compact));
            changed = true;
        }
        if changed {
            st.signals.wake.notify_one();
            Round::Progressed
        } else {
            Round::Idle
        }
    }
}

/// A catch-up response: `events` of one or more whole revisions; the header revision is the
/// revision the watcher has now seen everything up to.
fn response(id: i64, w: &Watcher, events: Vec<cairn_api::mvccpb::Event>, seen_to: i64) -> Outgoing {
    Outgoing {
        resp: WatchResponse {
            watch_id: id,
            events,
            ..Default::default()
        },
        header_revision: seen_to,
        fragment: w.fragment,
    }
}
