//! [`EventLog`]: the ground truth merged from every watcher's events, revision by revision,
//! and what it knows for sure.
//!
//! A revision is *complete* when a watcher that sees everything (whole keyspace, no filters)
//! delivered it: its events are then exactly that watcher's, in etcd's order. A revision seen
//! only by narrower watchers is *partial* (the union of their agreeing views); one on which
//! views contradict each other is *disputed*; one nobody saw is *unknown*. Revision 1 is the
//! fresh store's and has no events. Gaps are reported ([`EventLog::gaps`]), never guessed.

use std::collections::{BTreeMap, HashMap};

use super::record::WatchEvent;
use crate::models::EtcdState;

/// What the log knows of one revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Knowledge<'a> {
    /// Every event of the revision, in etcd's order.
    Complete(&'a [WatchEvent]),
    /// Some of its events: those narrower watchers saw, which agree with each other.
    Partial(&'a [WatchEvent]),
    /// Watchers' views of it contradict each other (reported when the log was built).
    Disputed,
    /// No watcher delivered it.
    Unknown,
}

/// One revision's entry (events without `prev`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Entry {
    Complete(Vec<WatchEvent>),
    Partial(Vec<WatchEvent>),
    Disputed,
}

impl Entry {
    fn known_events(&self) -> &[WatchEvent] {
        match self {
            Entry::Complete(events) | Entry::Partial(events) => events,
            Entry::Disputed => &[],
        }
    }
}

/// How many revisions apart [`EventLog::state_at`]'s stored states are.
pub(super) const CHECKPOINT_EVERY: i64 = 256;

/// The events of the run, per revision, merged from every watch record; see the module doc.
/// Built by [`EventLog::from_records`].
#[derive(Debug, Clone, Default)]
pub struct EventLog {
    pub(super) entries: BTreeMap<i64, Entry>,
    /// Maximal runs `[first, last]` of complete revisions; revision 1 (no events) counts as
    /// complete, so the first run starts at 1.
    pub(super) complete_runs: Vec<(i64, i64)>,
    /// Key -> the revisions (complete or partial) with a known event on it, ascending.
    pub(super) by_key: HashMap<String, Vec<i64>>,
    /// (key, value) -> the revisions of the puts that wrote it, ascending.
    pub(super) puts: HashMap<(String, String), Vec<i64>>,
    /// The state at revisions 1, 1 + CHECKPOINT_EVERY, ..., up to `complete_through`.
    pub(super) checkpoints: Vec<EtcdState>,
}

impl EventLog {
    /// The log of `entries`, with its indexes (no checkpoints yet).
    pub(super) fn index(entries: BTreeMap<i64, Entry>) -> Self {
        let mut complete_runs: Vec<(i64, i64)> = vec![(1, 1)];
        let mut by_key: HashMap<String, Vec<i64>> = HashMap::new();
        let mut puts: HashMap<(String, String), Vec<i64>> = HashMap::new();
        for (&revision, entry) in &entries {
            if matches!(entry, Entry::Complete(_)) {
                match complete_runs.last_mut() {
                    Some((_, last)) if *last + 1 == revision => *last = revision,
                    _ => complete_runs.push((revision, revision)),
                }
            }
            for event in entry.known_events() {
                by_key.entry(event.key.clone()).or_default().push(revision);
                if event.kv().is_some() {
                    let kv = (event.key.clone(), event.value.clone());
                    puts.entry(kv).or_default().push(revision);
                }
            }
        }
        EventLog {
            entries,
            complete_runs,
            by_key,
            puts,
            checkpoints: Vec::new(),
        }
    }

    /// What the log knows of `revision`.
    pub fn knowledge(&self, revision: i64) -> Knowledge<'_> {
        match self.entries.get(&revision) {
            Some(Entry::Complete(events)) => Knowledge::Complete(events),
            Some(Entry::Partial(events)) => Knowledge::Partial(events),
            Some(Entry::Disputed) => Knowledge::Disputed,
            None => Knowledge::Unknown,
        }
    }

    /// Every event of `revision` (without `prev`), if the revision is complete.
    pub fn events(&self, revision: i64) -> Option<&[WatchEvent]> {
        match self.entries.get(&revision) {
            Some(Entry::Complete(events)) => Some(events),
            _ => None,
        }
    }

    /// The revisions some watcher delivered, each with what the log knows of it, ascending.
    pub fn revisions(&self) -> impl Iterator<Item = (i64, Knowledge<'_>)> {
        self.entries
            .keys()
            .map(|&revision| (revision, self.knowledge(revision)))
    }

    /// Whether the log has every event of `revision` (revision 1, the fresh store's, has none).
    pub fn is_complete(&self, revision: i64) -> bool {
        revision == 1 || matches!(self.entries.get(&revision), Some(Entry::Complete(_)))
    }

    /// Whether every revision of `first..=last` is complete (true when the span is empty).
    pub fn all_complete(&self, first: i64, last: i64) -> bool {
        if first > last {
            return true;
        }
        let after = self
            .complete_runs
            .partition_point(|(start, _)| *start <= first);
        after > 0 && {
            let (_, end) = self.complete_runs[after - 1];
            end >= last
        }
    }

    /// The highest revision `r` such that every revision `2..=r` is complete (1 if revision 2
    /// is not).
    pub fn complete_through(&self) -> i64 {
        self.complete_runs.first().map_or(1, |(_, last)| *last)
    }

    /// The highest revision any watcher delivered (1 if none).
    pub fn last_revision(&self) -> i64 {
        self.entries.keys().next_back().copied().unwrap_or(1).max(1)
    }

    /// The spans `[first, last]` of revisions in `2..=last_revision()` that are not complete.
    pub fn gaps(&self) -> Vec<(i64, i64)> {
        let mut gaps = Vec::new();
        let mut next = 1;
        for &(first, last) in &self.complete_runs {
            if first > next {
                gaps.push((next, first - 1));
            }
            next = last + 1;
        }
        if next <= self.last_revision() {
            gaps.push((next, self.last_revision()));
        }
        gaps
    }

    /// The revisions at which a put wrote `value` under `key` (complete or partial
    /// revisions), ascending.
    pub fn put_revisions(&self, key: &str, value: &str) -> &[i64] {
        self.puts
            .get(&(key.to_string(), value.to_string()))
            .map_or(&[], Vec::as_slice)
    }

    /// Every known put and delete (complete or partial revisions), by revision.
    pub fn known_events(&self) -> impl Iterator<Item = &WatchEvent> {
        self.entries.values().flat_map(Entry::known_events)
    }
}
