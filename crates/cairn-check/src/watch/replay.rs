//! Replaying the [`EventLog`]: the keyspace at a revision, a key's value before a revision,
//! and the log's own consistency (each event must follow from the keyspace before it).
//! Leases are invisible in watch events, so the replayed keyspace has none.

use super::log::{Entry, EventLog, CHECKPOINT_EVERY};
use super::record::{EventKind, WatchEvent};
use crate::models::{EtcdState, KeyValue};
use crate::violation::{Violation, ViolationKind};

impl EventLog {
    /// The keyspace at `revision`: the events of revisions `2..=revision` replayed onto an
    /// empty store at revision 1. `None` unless every one of those revisions is complete.
    ///
    /// A revision may hold any number of puts and deletes (a transaction, or a lease revoke
    /// deleting every key attached to the lease at once); each is applied in turn. The replay
    /// ignores leases: watch events do not show which lease a key is attached to, so the state
    /// has no leases ([`EtcdState::has_lease`] is false for every ID). Its keys, values and
    /// metadata are exact, which is all the value checks compare.
    pub fn state_at(&self, revision: i64) -> Option<EtcdState> {
        if revision < 1 || revision > self.complete_through() {
            return None;
        }
        let slot = usize::try_from((revision - 1) / CHECKPOINT_EVERY).ok()?;
        let mut state = match self.checkpoints.get(slot) {
            Some(state) => state.clone(),
            None => EtcdState::new(1),
        };
        for r in state.revision() + 1..=revision {
            self.apply(&mut state, r);
        }
        Some(state)
    }

    /// `key` just before `revision` (after revision `revision - 1`): `Some(None)` if it did not
    /// exist, `None` if the log cannot tell (a revision in between is not complete).
    pub fn value_before(&self, key: &str, revision: i64) -> Option<Option<KeyValue>> {
        let revisions = self.by_key.get(key).map_or(&[][..], Vec::as_slice);
        let last = revisions
            .partition_point(|r| *r < revision)
            .checked_sub(1)
            .map(|i| revisions[i]);
        match last {
            None => self.all_complete(2, revision - 1).then_some(None),
            Some(last) => {
                if !self.all_complete(last + 1, revision - 1) {
                    return None;
                }
                let entry = self.entries.get(&last)?;
                let events = match entry {
                    Entry::Complete(events) | Entry::Partial(events) => events,
                    Entry::Disputed => return None,
                };
                Some(events.iter().find(|e| e.key == key)?.kv())
            }
        }
    }

    /// Applies revision `revision`'s events (which must be complete) to `state`.
    fn apply(&self, state: &mut EtcdState, revision: i64) {
        if let Some(events) = self.events(revision) {
            for event in events {
                state.set_key(&event.key, event.kv());
            }
        }
        state.set_revision(revision);
    }

    /// Stores the states [`EventLog::state_at`] starts from.
    pub(super) fn build_checkpoints(&mut self) {
        let mut state = EtcdState::new(1);
        let mut checkpoints = vec![state.clone()];
        for revision in 2..=self.complete_through() {
            self.apply(&mut state, revision);
            if (revision - 1) % CHECKPOINT_EVERY == 0 {
                checkpoints.push(state.clone());
            }
        }
        self.checkpoints = checkpoints;
    }

    /// Every known event that contradicts the keyspace before it, where the log knows it: a
    /// put whose version or create revision does not follow, a delete of a missing key or
    /// one that carries a value or version.
    pub(super) fn inconsistencies(&self) -> Vec<Violation> {
        let mut found = Vec::new();
        for (&revision, entry) in &self.entries {
            let events = match entry {
                Entry::Complete(events) | Entry::Partial(events) => events,
                Entry::Disputed => continue,
            };
            for event in events {
                if let Some(problem) = self.inconsistency(event, revision) {
                    found.push(Violation::new(
                        ViolationKind::LogInconsistent,
                        format!(
                            "revision {revision}, key {:?}: {event} {problem}",
                            event.key
                        ),
                    ));
                }
            }
        }
        found
    }

    fn inconsistency(&self, event: &WatchEvent, revision: i64) -> Option<String> {
        if event.kind == EventKind::Delete && (!event.value.is_empty() || event.version != 0) {
            return Some(format!(
                "carries value {:?} and version {} (a delete event has neither)",
                event.value, event.version
            ));
        }
        let before = self.value_before(&event.key, revision)?;
        match (event.kind, before) {
            (EventKind::Delete, None) => Some("deletes a key that did not exist".into()),
            (EventKind::Delete, Some(_)) => None,
            (EventKind::Put, before) => {
                let (create, version) = match &before {
                    Some(kv) => (kv.create_revision, kv.version + 1),
                    None => (revision, 1),
                };
                (event.create_revision != create || event.version != version).then(|| {
                    format!(
                        "does not follow {}: expected create revision {create}, version {version}",
                        before.map_or("a missing key".to_string(), |kv| format!("{kv:?}"))
                    )
                })
            }
        }
    }
}
