//! What a watcher saw: its request, the responses of one stream, and how the stream ended.

use std::fmt;

use crate::models::{key_in_range, KeyValue};

/// The type of a watch event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventKind {
    /// A key was set.
    Put,
    /// A key was deleted.
    Delete,
}

/// One event as a watcher received it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WatchEvent {
    /// Put or delete.
    pub kind: EventKind,
    /// The key.
    pub key: String,
    /// The new value; empty for a delete.
    pub value: String,
    /// The revision of the write: the event's revision.
    pub mod_revision: i64,
    /// The key's create revision after a put (0 in etcd's delete events).
    pub create_revision: i64,
    /// The key's version after a put; 0 for a delete.
    pub version: i64,
    /// The key before this revision, when the watch asked for `prev_kv` and the key existed.
    pub prev: Option<KeyValue>,
}

impl WatchEvent {
    /// The event's revision (its `mod_revision`).
    pub fn revision(&self) -> i64 {
        self.mod_revision
    }

    /// Whether `self` and `other` report the same change, whatever their `prev`.
    pub fn same_change(&self, other: &WatchEvent) -> bool {
        self.kind == other.kind
            && self.key == other.key
            && self.value == other.value
            && self.mod_revision == other.mod_revision
            && self.create_revision == other.create_revision
            && self.version == other.version
    }

    /// The key-value a put event leaves (`None` for a delete).
    pub fn kv(&self) -> Option<KeyValue> {
        (self.kind == EventKind::Put).then(|| KeyValue {
            value: self.value.clone(),
            mod_revision: self.mod_revision,
            create_revision: self.create_revision,
            version: self.version,
        })
    }

    /// This event without its `prev`.
    pub(crate) fn without_prev(&self) -> WatchEvent {
        WatchEvent {
            prev: None,
            ..self.clone()
        }
    }
}

impl fmt::Display for WatchEvent {
    /// `PUT "k"="v" @r (create c, version n)` or `DELETE "k" @r`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            EventKind::Put => write!(
                f,
                "PUT {:?}={:?} @{} (create {}, version {})",
                self.key, self.value, self.mod_revision, self.create_revision, self.version
            ),
            EventKind::Delete => write!(f, "DELETE {:?} @{}", self.key, self.mod_revision),
        }
    }
}

/// One response of a watch stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchResponse {
    /// The response header's revision (0 when the response carries none, as etcd's compacted
    /// cancel).
    pub header_revision: i64,
    /// The compact revision of a compacted cancel, else 0.
    pub compact_revision: i64,
    /// Whether the server canceled the watch with this response.
    pub canceled: bool,
    /// The events, in the order received.
    pub events: Vec<WatchEvent>,
}

/// What a watch asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct WatchRequest {
    /// The first key.
    pub key: String,
    /// The range end as etcd takes it: `""` for the single key, `"\0"` for every key from
    /// `key` on (`key == ""` too: the whole keyspace), otherwise `[key, end)`.
    pub end: String,
    /// The first revision to deliver; 0 for "after the current revision".
    pub start_revision: i64,
    /// Whether events carry the key's previous value.
    pub prev_kv: bool,
    /// Filter out puts.
    pub no_put: bool,
    /// Filter out deletes.
    pub no_delete: bool,
}

impl WatchRequest {
    /// Whether the watch covers `key`.
    pub fn covers_key(&self, key: &str) -> bool {
        key_in_range(&self.key, &self.end, key)
    }

    /// Whether the watch should deliver `event` (its key is in range and its type not
    /// filtered out); the revision is not considered.
    pub fn matches(&self, event: &WatchEvent) -> bool {
        let filtered = match event.kind {
            EventKind::Put => self.no_put,
            EventKind::Delete => self.no_delete,
        };
        !filtered && self.covers_key(&event.key)
    }

    /// Whether the watch sees every event: the whole keyspace (`""` to `"\0"`), no filters.
    pub fn sees_everything(&self) -> bool {
        self.key.is_empty() && self.end == "\0" && !self.no_put && !self.no_delete
    }
}

/// One watch stream, from its creation to its end. A reconnect is a new record, whose
/// `start_revision` is the previous record's last event revision + 1.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchRecord {
    /// The watcher (the same across its reconnects).
    pub watcher: u64,
    /// The member the stream was connected to.
    pub member: usize,
    /// What was asked.
    pub request: WatchRequest,
    /// The header revision of the `created` response, when `start_revision` is 0: the watch
    /// delivers the revisions after it.
    pub created_at_revision: Option<i64>,
    /// The responses with events or a cancel, in the order received (the `created` response
    /// may be left out).
    pub responses: Vec<WatchResponse>,
    /// Why the stream ended: an error's text, a compaction, the end of the run.
    pub ended_by: Option<String>,
}

impl WatchRecord {
    /// `watcher W (member M)`, for messages.
    pub fn name(&self) -> String {
        format!("watcher {} (member {})", self.watcher, self.member)
    }

    /// The first revision the stream is responsible for: its start revision, the revision
    /// after its creation, or (if neither is known) its first delivered event's.
    pub fn first_revision(&self) -> Option<i64> {
        if self.request.start_revision > 0 {
            Some(self.request.start_revision)
        } else if let Some(created) = self.created_at_revision {
            Some(created + 1)
        } else {
            self.events().next().map(WatchEvent::revision)
        }
    }

    /// The highest event revision delivered.
    pub fn last_event_revision(&self) -> Option<i64> {
        self.events().map(WatchEvent::revision).max()
    }

    /// Every delivered event, in order.
    pub fn events(&self) -> impl Iterator<Item = &WatchEvent> {
        self.responses.iter().flat_map(|r| r.events.iter())
    }

    /// Whether the stream may legitimately miss delete events (and `prev_kv`s) at `revision`:
    /// only at an explicit start revision, which may be the compact revision, where etcd keeps
    /// only the live puts and no longer has the revision before.
    pub fn may_be_lossy_at(&self, revision: i64) -> bool {
        self.request.start_revision > 0 && revision == self.request.start_revision
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(key: &str, end: &str) -> WatchRequest {
        WatchRequest {
            key: key.into(),
            end: end.into(),
            ..WatchRequest::default()
        }
    }

    #[test]
    fn whole_keyspace_without_filters_sees_everything() {
        assert!(request("", "\0").sees_everything());
        assert!(!request("a", "\0").sees_everything());
        assert!(!request("", "").sees_everything());
        let filtered = WatchRequest {
            no_delete: true,
            ..request("", "\0")
        };
        assert!(!filtered.sees_everything());
    }

    #[test]
    fn first_revision_prefers_the_request() {
        let mut record = WatchRecord {
            request: WatchRequest {
                start_revision: 7,
                ..request("", "\0")
            },
            created_at_revision: Some(3),
            ..WatchRecord::default()
        };
        assert_eq!(record.first_revision(), Some(7));
        record.request.start_revision = 0;
        assert_eq!(record.first_revision(), Some(4));
        record.created_at_revision = None;
        assert_eq!(record.first_revision(), None);
    }
}
