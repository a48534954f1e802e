//! [`Hub`]: the registry of watch streams and watchers, the synced-watcher index, and the
//! fan-out of published revisions into each stream's bounded queue.
//!
//! Everything lives under one mutex. It is taken by the apply thread for [`Hub::publish`], by
//! each stream's driver to pop its queue and to hand over catch-up results, and by the request
//! side to create and cancel watchers; no holder ever waits for anything else while holding
//! it (no I/O, no await), so publishing never blocks for long.

use cairn_api::etcdserverpb::WatchResponse;
use cairn_api::mvccpb::{event::EventType, Event};
use cairn_api::EtcdError;
use cairn_mvcc::{RevisionEvents, Store};
use prost::Message as _;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::Notify;

/// Identifies one gRPC watch stream inside the hub.
pub type StreamId = u64;

/// clientv3's `InvalidWatchID`: the watch id of failed creations and of stream-wide progress
/// notifications.
pub const INVALID_WATCH_ID: i64 = -1;
/// clientv3's `AutoWatchID`: a create request with this id gets the next free id.
pub const AUTO_WATCH_ID: i64 = 0;

/// etcd's `mvcc.ErrEmptyWatcherRange`, as the cancel reason of a refused creation.
pub const ERR_EMPTY_RANGE: &str = "mvcc: watcher range is empty";
/// etcd's `mvcc.ErrWatcherDuplicateID`, as the cancel reason of a refused creation.
pub const ERR_DUPLICATE_ID: &str = "mvcc: duplicate watch ID provided on the WatchStream";

/// The keys a watcher watches, normalised as etcd's watch server does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRange {
    /// First key (never empty: an empty key means `"\0"`, the smallest key).
    pub key: Vec<u8>,
    /// `None`: only `key`. `Some(empty)`: every key from `key` on. `Some(end)`: `[key, end)`.
    pub end: Option<Vec<u8>>,
}

impl KeyRange {
    /// etcd's reading of a create request's `key` / `range_end`: an empty key is `"\0"`, an
    /// empty end a single key, an end of `"\0"` every key from `key` on; `key >= end` is an
    /// empty range.
    pub fn from_request(key: &[u8], range_end: &[u8]) -> Result<KeyRange, CreateError> {
        let key = if key.is_empty() {
            vec![0]
        } else {
            key.to_vec()
        };
        let end = match range_end {
            [] => None,
            [0] => Some(Vec::new()),
            e => Some(e.to_vec()),
        };
        if let Some(e) = &end {
            if !e.is_empty() && key.as_slice() >= e.as_slice() {
                return Err(CreateError::EmptyRange);
            }
        }
        Ok(KeyRange { key, end })
    }

    /// Whether `k` is watched.
    pub fn contains(&self, k: &[u8]) -> bool {
        match &self.end {
            None => k == self.key.as_slice(),
            Some(e) => k >= self.key.as_slice() && (e.is_empty() || k < e.as_slice()),
        }
    }
}

/// Why a create request was refused (answered `created` and `canceled` with watch id -1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateError {
    /// `key >= range_end`.
    EmptyRange,
    /// The client chose a watch id already used on the stream.
    DuplicateId,
    /// A negative start revision (etcd ≥ 3.5 refuses it as compacted).
    NegativeRevision,
}

impl CreateError {
    /// The `cancel_reason` etcd sends.
    pub fn reason(&self) -> String {
        match self {
            CreateError::EmptyRange => ERR_EMPTY_RANGE.to_string(),
            CreateError::DuplicateId => ERR_DUPLICATE_ID.to_string(),
            CreateError::NegativeRevision => EtcdError::Compacted.to_string(),
        }
    }
}

/// A create request, as the hub needs it.
#[derive(Debug, Clone)]
pub struct WatchSpec {
    /// The client's id, or [`AUTO_WATCH_ID`].
    pub watch_id: i64,
    /// Raw `key`.
    pub key: Vec<u8>,
    /// Raw `range_end`.
    pub range_end: Vec<u8>,
    /// 0 = from the next revision.
    pub start_revision: i64,
    /// Keep `prev_kv` in events.
    pub prev_kv: bool,
    /// Drop PUT events.
    pub no_put: bool,
    /// Drop DELETE events.
    pub no_delete: bool,
    /// Periodic progress notifications for this watcher.
    pub progress_notify: bool,
    /// Split responses larger than the request limit.
    pub fragment: bool,
}

impl WatchSpec {
    /// A plain watch on `range` from `start_revision`, with an automatic id.
    pub fn new(key: &[u8], range_end: &[u8], start_revision: i64) -> WatchSpec {
        WatchSpec {
            watch_id: AUTO_WATCH_ID,
            key: key.to_vec(),
            range_end: range_end.to_vec(),
            start_revision,
            prev_kv: false,
            no_put: false,
            no_delete: false,
            progress_notify: false,
            fragment: false,
        }
    }
}

/// One queued response. The header is filled when it is sent (etcd fills the raft term then).
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    /// The response without its header.
    pub resp: WatchResponse,
    /// The revision the header will carry.
    pub header_revision: i64,
    /// Split into fragments if too large (the watcher asked for it).
    pub fragment: bool,
}

/// Wake-ups for a stream's tasks.
#[derive(Debug, Default)]
pub struct Signals {
    /// The stream's driver: something was queued, or a watcher needs catching up.
    pub wake: Notify,
    /// The request side: the queue got room (a create waits for it), or the stream closed.
    pub space: Notify,
}

/// Bounds of the hub's queues and catch-up.
#[derive(Debug, Clone)]
pub struct HubLimits {
    /// Responses a stream's queue holds before its watchers fall back to catch-up.
    pub queue_messages: usize,
    /// Event bytes a stream's queue holds before its watchers fall back to catch-up.
    pub queue_bytes: usize,
    /// Revisions read from history per catch-up round.
    pub catchup_revisions: usize,
    /// A catch-up response is cut at a revision boundary once it holds this many bytes.
    pub catchup_response_bytes: usize,
}

impl Default for HubLimits {
    fn default() -> Self {
        HubLimits {
            queue_messages: 1024,
            queue_bytes: 4 << 20,
            catchup_revisions: 256,
            catchup_response_bytes: 1 << 20,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum State {
    /// In the synced index: receives events as they are published.
    Synced,
    /// Waiting for catch-up from `next_rev`.
    Unsynced,
    /// Told its start was compacted; keeps its id until canceled, as in etcd.
    Compacted,
}

#[derive(Debug, Clone)]
pub(super) struct Watcher {
    pub(super) range: KeyRange,
    pub(super) prev_kv: bool,
    pub(super) no_put: bool,
    pub(super) no_delete: bool,
    pub(super) progress_notify: bool,
    /// etcd's `progress[id]`: no event response went out since the last periodic tick.
    pub(super) progress_due: bool,
    pub(super) fragment: bool,
    /// Everything below this revision has been queued for the watcher.
    pub(super) next_rev: i64,
    pub(super) state: State,
    /// Unique in the hub's lifetime: tells a watcher from a later one reusing its id.
    pub(super) serial: u64,
}

impl Watcher {
    /// What the watcher gets of `events` (all of one or more revisions, in order): its keys,
    /// minus filtered types, `prev_kv` only if asked.
    pub(super) fn select<'a>(&self, events: impl Iterator<Item = &'a Event>) -> Vec<Event> {
        events
            .filter(|e| {
                let put = e.r#type == EventType::Put as i32;
                !((put && self.no_put) || (!put && self.no_delete))
                    && self
                        .range
                        .contains(e.kv.as_ref().map_or(&[][..], |kv| &kv.key))
            })
            .map(|e| {
                let mut e = e.clone();
                if !self.prev_kv {
                    e.prev_kv = None;
                }
                e
            })
            .collect()
    }
}

/// A stream's bounded outgoing queue.
#[derive(Debug, Default)]
pub(super) struct Queue {
    items: VecDeque<(Outgoing, usize)>,
    bytes: usize,
}

impl Queue {
    pub(super) fn has_space(&self, limits: &HubLimits) -> bool {
        self.items.len() < limits.queue_messages && self.bytes < limits.queue_bytes
    }

    /// Room left, as (responses, bytes).
    pub(super) fn room(&self, limits: &HubLimits) -> (usize, usize) {
        (
            limits.queue_messages.saturating_sub(self.items.len()),
            limits.queue_bytes.saturating_sub(self.bytes),
        )
    }

    pub(super) fn push(&mut self, out: Outgoing) {
        let size = out.resp.encoded_len();
        self.bytes += size;
        self.items.push_back((out, size));
    }

    fn pop(&mut self) -> Option<Outgoing> {
        let (out, size) = self.items.pop_front()?;
        self.bytes -= size;
        Some(out)
    }
}

#[derive(Debug)]
pub(super) struct StreamState {
    pub(super) watchers: HashMap<i64, Watcher>,
    next_auto_id: i64,
    pub(super) queue: Queue,
    /// Watchers in [`State::Unsynced`].
    pub(super) unsynced: usize,
    pub(super) signals: Arc<Signals>,
}

/// A watcher's place: its stream and watch id.
pub(super) type WatcherRef = (StreamId, i64);

/// The synced watchers by what they watch.
#[derive(Debug, Default)]
pub(super) struct SyncedIndex {
    keys: HashMap<Vec<u8>, Vec<WatcherRef>>,
    /// start → end (empty = no end) → watchers.
    ranges: BTreeMap<Vec<u8>, BTreeMap<Vec<u8>, Vec<WatcherRef>>>,
}

impl SyncedIndex {
    pub(super) fn insert(&mut self, range: &KeyRange, w: WatcherRef) {
        match &range.end {
            None => self.keys.entry(range.key.clone()).or_default().push(w),
            Some(end) => self
                .ranges
                .entry(range.key.clone())
                .or_default()
                .entry(end.clone())
                .or_default()
                .push(w),
        }
    }

    pub(super) fn remove(&mut self, range: &KeyRange, w: WatcherRef) {
        fn take(list: &mut Vec<WatcherRef>, w: WatcherRef) {
            if let Some(i) = list.iter().position(|x| *x == w) {
                list.swap_remove(i);
            }
        }
        match &range.end {
            None => {
                if let Some(list) = self.keys.get_mut(&range.key) {
                    take(list, w);
                    if list.is_empty() {
                        self.keys.remove(&range.key);
                    }
                }
            }
            Some(end) => {
                if let Some(ends) = self.ranges.get_mut(&range.key) {
                    if let Some(list) = ends.get_mut(end) {
                        take(list, w);
                        if list.is_empty() {
                            ends.remove(end);
                        }
                    }
                    if ends.is_empty() {
                        self.ranges.remove(&range.key);
                    }
                }
            }
        }
    }

    /// Calls `f` once for every synced watcher of `key`.
    pub(super) fn matching(&self, key: &[u8], mut f: impl FnMut(WatcherRef)) {
        if let Some(list) = self.keys.get(key) {
            list.iter().copied().for_each(&mut f);
        }
        for (_, ends) in self
            .ranges
            .range::<[u8], _>((Bound::Unbounded, Bound::Included(key)))
        {
            if let Some(list) = ends.get(&[][..]) {
                list.iter().copied().for_each(&mut f);
            }
            for (_, list) in ends.range::<[u8], _>((Bound::Excluded(key), Bound::Unbounded)) {
                list.iter().copied().for_each(&mut f);
            }
        }
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.keys.values().map(Vec::len).sum::<usize>()
            + self
                .ranges
                .values()
                .flat_map(|e| e.values())
                .map(Vec::len)
                .sum::<usize>()
    }
}

#[derive(Debug)]
pub(super) struct Inner {
    /// The last revision published.
    pub(super) rev: i64,
    pub(super) streams: HashMap<StreamId, StreamState>,
    pub(super) synced: SyncedIndex,
    next_stream: StreamId,
    pub(super) next_serial: u64,
    /// The server is stopping: every stream ends.
    shut_down: bool,
}

/// What [`Hub::create`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateResult {
    /// Answered (created, or refused with a reason).
    Done,
    /// The queue is full: wait for [`Signals::space`] and try again.
    NoSpace,
    /// The stream is gone.
    Closed,
}

/// The registry of every watch stream and watcher; see the module docs.
pub struct Hub {
    pub(super) store: Arc<Store>,
    pub(super) limits: HubLimits,
    pub(super) inner: Mutex<Inner>,
    /// Times a synced watcher fell back to catch-up because its stream's queue was full.
    fell_behind: AtomicU64,
    /// Planted bugs (feature `planted-bugs`, see `super::planted`).
    #[cfg(feature = "planted-bugs")]
    pub(super) planted: super::planted::PlantedWatchBugs,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub").field("limits", &self.limits).finish()
    }
}

/// The response telling a watcher its next revision is compacted: as in etcd, it carries the
/// compact revision, the smallest revision still replayed.
pub(super) fn compacted_response(watch_id: i64, compact: i64) -> Outgoing {
    Outgoing {
        resp: WatchResponse {
            watch_id,
            canceled: true,
            compact_revision: compact,
            ..Default::default()
        },
        // etcd's compacted response carries no revision.
        header_revision: 0,
        fragment: false,
    }
}

impl Hub {
    /// A hub over `store`, starting at its current revision.
    pub fn new(store: Arc<Store>, limits: HubLimits) -> Hub {
        let rev = store.current_revision();
        Hub {
            store,
            limits,
            inner: Mutex::new(Inner {
                rev,
                streams: HashMap::new(),
                synced: SyncedIndex::default(),
                next_stream: 1,
                next_serial: 1,
                shut_down: false,
            }),
            fell_behind: AtomicU64::new(0),
            #[cfg(feature = "planted-bugs")]
            planted: super::planted::PlantedWatchBugs::from_process(),
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The store the hub replays from.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// How many times a synced watcher fell back to catch-up (its stream's queue was full).
    pub fn fell_behind(&self) -> u64 {
        self.fell_behind.load(Ordering::Relaxed)
    }

    /// The last published revision.
    pub fn revision(&self) -> i64 {
        self.lock().rev
    }

    /// Open streams and watchers (canceled and closed ones are gone).
    pub fn counts(&self) -> (usize, usize) {
        let g = self.lock();
        (
            g.streams.len(),
            g.streams.values().map(|s| s.watchers.len()).sum(),
        )
    }

    /// Ends every stream (their drivers answer `server stopped`) and refuses new watchers;
    /// called when the server stops.
    pub fn shut_down(&self) {
        let mut g = self.lock();
        g.shut_down = true;
        for st in g.streams.values() {
            st.signals.wake.notify_one();
            st.signals.space.notify_waiters();
        }
    }

    /// Whether [`Hub::shut_down`] was called.
    pub fn is_shut_down(&self) -> bool {
        self.lock().shut_down
    }

    /// Registers a new stream.
    pub fn open_stream(&self) -> (StreamId, Arc<Signals>) {
        let mut g = self.lock();
        let id = g.next_stream;
        g.next_stream += 1;
        let signals = Arc::new(Signals::default());
        g.streams.insert(
            id,
            StreamState {
                watchers: HashMap::new(),
                next_auto_id: 0,
                queue: Queue::default(),
                unsynced: 0,
                signals: signals.clone(),
            },
        );
        (id, signals)
    }

    /// Removes a stream with all its watchers and queued responses.
    pub fn close_stream(&self, stream: StreamId) {
        let mut g = self.lock();
        let inner = &mut *g;
        if let Some(st) = inner.streams.remove(&stream) {
            for (id, w) in st.watchers {
                if w.state == State::Synced {
                    inner.synced.remove(&w.range, (stream, id));
                }
            }
            st.signals.space.notify_waiters();
        }
    }

    /// etcd's watch creation: answers `created` (then, if the start is compacted, the
    /// compacted cancel), or `created` + `canceled` with a reason and watch id -1.
    pub fn create(&self, stream: StreamId, spec: &WatchSpec) -> CreateResult {
        let mut g = self.lock();
        let inner = &mut *g;
        let published = inner.rev;
        if inner.shut_down {
            return CreateResult::Closed;
        }
        let Some(st) = inner.streams.get_mut(&stream) else {
            return CreateResult::Closed;
        };
        if !st.queue.has_space(&self.limits) {
            return CreateResult::NoSpace;
        }
        let current = self.store.current_revision();
        let refused = |e: CreateError| Outgoing {
            resp: WatchResponse {
                watch_id: INVALID_WATCH_ID,
                created: true,
                canceled: true,
                cancel_reason: e.reason(),
                ..Default::default()
            },
            header_revision: current,
            fragment: false,
        };
        let checked = if spec.start_revision < 0 {
            Err(CreateError::NegativeRevision)
        } else {
            KeyRange::from_request(&spec.key, &spec.range_end).and_then(|range| {
                if spec.watch_id != AUTO_WATCH_ID && st.watchers.contains_key(&spec.watch_id) {
                    Err(CreateError::DuplicateId)
                } else {
                    Ok(range)
                }
            })
        };
        let range = match checked {
            Ok(r) => r,
            Err(e) => {
                st.queue.push(refused(e));
                st.signals.wake.notify_one();
                return CreateResult::Done;
            }
        };
        let id = if spec.watch_id == AUTO_WATCH_ID {
            while st.watchers.contains_key(&st.next_auto_id) {
                st.next_auto_id += 1;
            }
            st.next_auto_id += 1;
            st.next_auto_id - 1
        } else {
            spec.watch_id
        };
        let serial = inner.next_serial;
        inner.next_serial += 1;
        let mut w = Watcher {
            range,
            prev_kv: spec.prev_kv,
            no_put: spec.no_put,
            no_delete: spec.no_delete,
            progress_notify: spec.progress_notify,
            progress_due: true,
            fragment: spec.fragment,
            next_rev: spec.start_revision,
            state: State::Synced,
            serial,
        };
        st.queue.push(Outgoing {
            resp: WatchResponse {
                watch_id: id,
                created: true,
                ..Default::default()
            },
            header_revision: current,
            fragment: false,
        });
        let compact = self.store.compact_revision();
        let start = spec.start_revision;
        if start > 0 && start < compact {
            w.state = State::Compacted;
            st.queue.push(compacted_response(id, compact));
        } else if start == 0 || start > published {
            if start == 0 {
                w.next_rev = current.max(published) + 1;
            }
            inner.synced.insert(&w.range, (stream, id));
        } else {
            w.state = State::Unsynced;
            st.unsynced += 1;
        }
        st.watchers.insert(id, w);
        st.signals.wake.notify_one();
        CreateResult::Done
    }

    /// etcd's cancel: removes the watcher and answers `canceled`; an unknown id gets nothing.
    pub fn cancel(&self, stream: StreamId, watch_id: i64) {
        let mut g = self.lock();
        let inner = &mut *g;
        let Some(st) = inner.streams.get_mut(&stream) else {
            return;
        };
        let Some(w) = st.watchers.remove(&watch_id) else {
            return;
        };
        match w.state {
            State::Synced => inner.synced.remove(&w.range, (stream, watch_id)),
            State::Unsynced => st.unsynced -= 1,
            State::Compacted => {}
        }
        // A control response: queued even when the queue is full (one per watcher at most).
        st.queue.push(Outgoing {
            resp: WatchResponse {
                watch_id,
                canceled: true,
                ..Default::default()
            },
            header_revision: self.store.current_revision(),
            fragment: false,
        });
        st.signals.wake.notify_one();
    }

    /// etcd 3.5's `RequestProgressAll`: when every watcher of the stream is synced, one
    /// response with watch id -1 and the published revision, queued after every event up to
    /// it; otherwise (or with no watchers, or a full queue) nothing.
    pub fn request_progress(&self, stream: StreamId) {
        let mut g = self.lock();
        let rev = g.rev;
        let Some(st) = g.streams.get_mut(&stream) else {
            return;
        };
        if st.watchers.is_empty()
            || st.watchers.values().any(|w| w.state != State::Synced)
            || !st.queue.has_space(&self.limits)
        {
            return;
        }
        st.queue.push(Outgoing {
            resp: WatchResponse {
                watch_id: INVALID_WATCH_ID,
                ..Default::default()
            },
            header_revision: rev,
            fragment: false,
        });
        st.signals.wake.notify_one();
    }

    /// The periodic progress tick of one stream: each synced `progress_notify` watcher that
    /// got no event response since the last tick gets an empty response at the published
    /// revision.
    pub fn progress_tick(&self, stream: StreamId) {
        let mut g = self.lock();
        let rev = g.rev;
        let Some(st) = g.streams.get_mut(&stream) else {
            return;
        };
        let mut due = Vec::new();
        for (id, w) in st.watchers.iter_mut() {
            if w.progress_notify {
                if w.progress_due && w.state == State::Synced {
                    due.push(*id);
                }
                w.progress_due = true;
            }
        }
        due.sort_unstable();
        let mut queued = false;
        for id in due {
            if !st.queue.has_space(&self.limits) {
                break;
            }
            st.queue.push(Outgoing {
                resp: WatchResponse {
                    watch_id: id,
                    ..Default::default()
                },
                header_revision: rev,
                fragment: false,
            });
            queued = true;
        }
        if queued {
            st.signals.wake.notify_one();
        }
    }

    /// Fans the events of newly applied revisions out to the synced watchers. Called by the
    /// apply thread after each commit, before the writers are woken. Never waits: a watcher
    /// whose stream's queue is full becomes unsynced at the revision it missed, and its
    /// stream's driver replays it from history.
    pub fn publish(&self, batch: &[RevisionEvents]) {
        if batch.is_empty() {
            return;
        }
        let mut g = self.lock();
        let Inner {
            rev,
            streams,
            synced,
            ..
        } = &mut *g;
        let mut hits: Vec<(WatcherRef, usize)> = Vec::new();
        for re in batch {
            if re.revision <= *rev {
                continue;
            }
            hits.clear();
            for (i, ev) in re.events.iter().enumerate() {
                let key = ev.kv.as_ref().map_or(&[][..], |kv| &kv.key);
                synced.matching(key, |w| hits.push((w, i)));
            }
            hits.sort_unstable();
            for group in hits.chunk_by(|a, b| a.0 == b.0) {
                let wref = group[0].0;
                let Some(st) = streams.get_mut(&wref.0) else {
                    continue;
                };
                let Some(w) = st.watchers.get_mut(&wref.1) else {
                    continue;
                };
                if re.revision < w.next_rev {
                    continue;
                }
                let events = w.select(group.iter().map(|(_, i)| &re.events[*i]));
                if events.is_empty() {
                    continue;
                }
                if st.queue.has_space(&self.limits) {
                    st.queue.push(Outgoing {
                        resp: WatchResponse {
                            watch_id: wref.1,
                            events,
                            ..Default::default()
                        },
                        header_revision: re.revision,
                        fragment: w.fragment,
                    });
                    w.next_rev = re.revision + 1;
                } else {
                    w.state = State::Unsynced;
                    w.next_rev = re.revision;
                    st.unsynced += 1;
                    synced.remove(&w.range, wref);
                    self.fell_behind.fetch_add(1, Ordering::Relaxed);
                }
                st.signals.wake.notify_one();
            }
            *rev = re.revision;
        }
    }

    /// The store was replaced by a snapshot from the leader: revisions between what was
    /// published and the new current revision never went through [`publish`](Self::publish).
    /// Every synced watcher becomes unsynced at its next revision, so its stream's driver
    /// replays the gap from the new store's history (or reports it compacted).
    pub fn resync_after_snapshot(&self) {
        let current = self.store.current_revision();
        let mut g = self.lock();
        let Inner {
            rev,
            streams,
            synced,
            ..
        } = &mut *g;
        for (sid, st) in streams.iter_mut() {
            for (wid, w) in st.watchers.iter_mut() {
                if w.state == State::Synced {
                    w.state = State::Unsynced;
                    st.unsynced += 1;
                    synced.remove(&w.range, (*sid, *wid));
                }
            }
            st.signals.wake.notify_one();
        }
        *rev = (*rev).max(current);
    }

    /// Up to `max` queued responses of `stream`, oldest first; `None` once the stream is
    /// closed or the hub shut down. Clears the progress-due mark of watchers that get events.
    pub fn pop(&self, stream: StreamId, max: usize) -> Option<Vec<Outgoing>> {
        let mut g = self.lock();
        if g.shut_down {
            return None;
        }
        let st = g.streams.get_mut(&stream)?;
        let mut out = Vec::new();
        while out.len() < max {
            let Some(o) = st.queue.pop() else { break };
            if !o.resp.events.is_empty() {
                if let Some(w) = st.watchers.get_mut(&o.resp.watch_id) {
                    w.progress_due = false;
                }
            }
            #[cfg(feature = "planted-bugs")]
            self.planted.deliver(o, &mut out);
            #[cfg(not(feature = "planted-bugs"))]
            out.push(o);
        }
        if !out.is_empty() {
            st.signals.space.notify_waiters();
        }
        Some(out)
    }
}

#[cfg(test)]
#[path = "hub_tests.rs"]
mod tests;
