//! [`EventLog::from_records`]: merging every watcher's view of each revision into the log.
//!
//! A record's *view* of a revision is the events it delivered at it (without `prev`, the first
//! one per key). Views from watchers that see everything must be identical; if they are, the
//! revision is complete and any narrower view that departs from it is that watcher's fault,
//! which [`check_watches`](super::check_watches) reports. Without such a view, narrower views
//! must agree on what they both cover, and their union is the revision's partial knowledge.
//! A contradiction the log cannot attribute is a [`ViolationKind::Disagreement`] and leaves
//! the revision disputed.

use std::collections::BTreeMap;

use super::log::{Entry, EventLog};
use super::record::{EventKind, WatchEvent, WatchRecord};
use crate::violation::{Violation, ViolationKind};

/// One record's view of one revision.
struct View<'a> {
    record: &'a WatchRecord,
    /// At the record's start revision, which may be the compact revision, deletes may be
    /// missing: the view then covers puts only.
    puts_only: bool,
    events: Vec<WatchEvent>,
}

impl View<'_> {
    fn covers(&self, event: &WatchEvent) -> bool {
        self.record.request.matches(event) && !(self.puts_only && event.kind == EventKind::Delete)
    }

    fn sees_everything(&self) -> bool {
        self.record.request.sees_everything() && !self.puts_only
    }

    /// This view's events that `other` covers.
    fn seen_by(&self, other: &View<'_>) -> Vec<&WatchEvent> {
        self.events.iter().filter(|e| other.covers(e)).collect()
    }
}

impl EventLog {
    /// Merges what every watch stream delivered into the log of the run (see the module doc),
    /// with the contradictions it cannot attribute to one watcher and the events that
    /// contradict the keyspace before them.
    pub fn from_records(records: &[WatchRecord]) -> (EventLog, Vec<Violation>) {
        let mut violations = Vec::new();
        let mut views: BTreeMap<i64, Vec<View<'_>>> = BTreeMap::new();
        for record in records {
            for (revision, events) in record_views(record, &mut violations) {
                let puts_only = record.may_be_lossy_at(revision);
                let events = events
                    .into_iter()
                    .filter(|e| !(puts_only && e.kind == EventKind::Delete))
                    .collect();
                views.entry(revision).or_default().push(View {
                    record,
                    puts_only,
                    events,
                });
            }
        }
        let entries = views
            .into_iter()
            .map(|(revision, views)| (revision, merge(revision, &views, &mut violations)))
            .collect();
        let mut log = EventLog::index(entries);
        log.build_checkpoints();
        violations.extend(log.inconsistencies());
        (log, violations)
    }
}

/// A record's events by revision, first event per key; events at revisions before 2 (the
/// fresh store is at 1) are reported and left out.
fn record_views(
    record: &WatchRecord,
    violations: &mut Vec<Violation>,
) -> BTreeMap<i64, Vec<WatchEvent>> {
    let mut views: BTreeMap<i64, Vec<WatchEvent>> = BTreeMap::new();
    for event in record.events() {
        let revision = event.revision();
        if revision < 2 {
            violations.push(Violation::new(
                ViolationKind::LogInconsistent,
                format!(
                    "{} delivered {event} at revision {revision}; a fresh store starts at \
                     revision 1 and every write creates a later one",
                    record.name()
                ),
            ));
            continue;
        }
        let view = views.entry(revision).or_default();
        if !view.iter().any(|e| e.key == event.key) {
            view.push(event.without_prev());
        }
    }
    views
}

/// The log's entry for `revision` from its views, reporting contradictions.
fn merge(revision: i64, views: &[View<'_>], violations: &mut Vec<Violation>) -> Entry {
    let before = violations.len();
    let everything: Vec<&View<'_>> = views.iter().filter(|v| v.sees_everything()).collect();
    if let Some((reference, others)) = everything.split_first() {
        for other in others {
            if !same(&reference.events, &other.events) {
                violations.push(disagreement(
                    revision,
                    reference,
                    other,
                    &reference.events,
                    &other.events,
                ));
            }
        }
        return if violations.len() > before {
            Entry::Disputed
        } else {
            Entry::Complete(reference.events.clone())
        };
    }
    for (i, a) in views.iter().enumerate() {
        for b in &views[i + 1..] {
            let (a_seen, b_seen) = (a.seen_by(b), b.seen_by(a));
            if !same(&a_seen, &b_seen) {
                violations.push(disagreement(revision, a, b, &a_seen, &b_seen));
            }
        }
    }
    if violations.len() > before {
        return Entry::Disputed;
    }
    let mut union: Vec<WatchEvent> = Vec::new();
    for view in views {
        for event in &view.events {
            if !union.iter().any(|e| e.key == event.key) {
                union.push(event.clone());
            }
        }
    }
    Entry::Partial(union)
}

fn same<E: std::borrow::Borrow<WatchEvent>>(a: &[E], b: &[E]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.borrow().same_change(y.borrow()))
}

fn disagreement<E: std::borrow::Borrow<WatchEvent>>(
    revision: i64,
    a: &View<'_>,
    b: &View<'_>,
    a_events: &[E],
    b_events: &[E],
) -> Violation {
    Violation::new(
        ViolationKind::Disagreement,
        format!(
            "revision {revision}: {} saw [{}] but {} saw [{}] (restricted to what both watch)",
            a.record.name(),
            list(a_events),
            b.record.name(),
            list(b_events)
        ),
    )
}

/// `e1, e2, ...` for messages.
pub(super) fn list<E: std::borrow::Borrow<WatchEvent>>(events: &[E]) -> String {
    events
        .iter()
        .map(|e| e.borrow().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
