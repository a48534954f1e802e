//! One stream against the [`EventLog`]: every delivered event as the log has it, every
//! revision delivered whole (atomic), no matching revision skipped inside the delivered span
//! (reliable) or between a resume's start and its first event (resumable), and `prev_kv` as
//! the keyspace was before the event.

use std::collections::BTreeMap;

use super::log::{EventLog, Knowledge};
use super::merge::list;
use super::record::{EventKind, WatchEvent, WatchRecord};
use crate::violation::{Violation, ViolationKind};

/// Compares `record` with `log`; see the module doc.
pub(super) fn check_against_log(record: &WatchRecord, log: &EventLog, out: &mut Vec<Violation>) {
    let (Some(lower), Some(upper)) = (record.first_revision(), record.last_event_revision()) else {
        return;
    };
    // Revision -> the events delivered at it, the first per key.
    let mut delivered: BTreeMap<i64, Vec<&WatchEvent>> = BTreeMap::new();
    for event in record.events() {
        let events = delivered.entry(event.revision()).or_default();
        if !events.iter().any(|e| e.key == event.key) {
            events.push(event);
        }
    }
    for (&revision, events) in &delivered {
        check_delivered(record, log, revision, events, out);
        if record.request.prev_kv {
            for event in events {
                check_prev(record, log, event, out);
            }
        }
    }
    let first_delivered = delivered.keys().next().copied().unwrap_or(upper);
    for revision in lower.max(2)..=upper {
        if delivered.contains_key(&revision) {
            continue;
        }
        let (events, partially) = match log.knowledge(revision) {
            Knowledge::Complete(events) => (events, ""),
            Knowledge::Partial(events) => (events, " (other watchers saw it)"),
            Knowledge::Disputed | Knowledge::Unknown => continue,
        };
        let missing = expected(record, revision, events);
        if missing.is_empty() {
            continue;
        }
        let name = record.name();
        let violation = if revision < first_delivered && record.request.start_revision > 0 {
            Violation::new(
                ViolationKind::Resumable,
                format!(
                    "{name}: started at revision {} but its first event is at {first_delivered}; \
                     skipped revision {revision}{partially}: [{}]",
                    record.request.start_revision,
                    list(&missing)
                ),
            )
        } else {
            Violation::new(
                ViolationKind::Reliable,
                format!(
                    "{name}: skipped revision {revision}{partially} (delivered {lower}..={upper}): \
                     [{}]",
                    list(&missing)
                ),
            )
        };
        out.push(violation);
    }
}

/// The events of `revision` (from the log) the record must deliver: those its request
/// matches, without deletes where the revision may be the compact revision.
fn expected<'a>(
    record: &WatchRecord,
    revision: i64,
    events: &'a [WatchEvent],
) -> Vec<&'a WatchEvent> {
    let lossy = record.may_be_lossy_at(revision);
    events
        .iter()
        .filter(|e| record.request.matches(e) && !(lossy && e.kind == EventKind::Delete))
        .collect()
}

/// A delivered revision: each event as the log has it, none missing, in the log's order.
fn check_delivered(
    record: &WatchRecord,
    log: &EventLog,
    revision: i64,
    delivered: &[&WatchEvent],
    out: &mut Vec<Violation>,
) {
    let (events, complete) = match log.knowledge(revision) {
        Knowledge::Complete(events) => (events, true),
        Knowledge::Partial(events) => (events, false),
        Knowledge::Disputed | Knowledge::Unknown => return,
    };
    let name = record.name();
    for event in delivered {
        let at = format!("{name} at revision {revision}, key {:?}", event.key);
        match events.iter().find(|e| e.key == event.key) {
            Some(logged) if !logged.same_change(event) => out.push(Violation::new(
                ViolationKind::EventMismatch,
                format!("{at}: delivered {event}, but the log has {logged}"),
            )),
            None if complete => out.push(Violation::new(
                ViolationKind::EventMismatch,
                format!(
                    "{at}: delivered {event}, but the revision has no event on that key: [{}]",
                    list(events)
                ),
            )),
            _ => {}
        }
    }
    if !complete {
        return;
    }
    let wanted = expected(record, revision, events);
    let has = |key: &str| delivered.iter().any(|e| e.key == key);
    let missing: Vec<&WatchEvent> = wanted.iter().copied().filter(|e| !has(&e.key)).collect();
    if !missing.is_empty() {
        out.push(Violation::new(
            ViolationKind::Atomic,
            format!(
                "{name}: delivered only part of revision {revision}: [{}] without [{}]",
                list(delivered),
                list(&missing)
            ),
        ));
        return;
    }
    let order: Vec<&str> = delivered
        .iter()
        .filter(|d| wanted.iter().any(|e| e.key == d.key))
        .map(|e| e.key.as_str())
        .collect();
    let logged: Vec<&str> = wanted.iter().map(|e| e.key.as_str()).collect();
    if order != logged {
        out.push(Violation::new(
            ViolationKind::Ordered,
            format!(
                "{name}: the events of revision {revision} came in key order {order:?}, the log's \
                 is {logged:?}"
            ),
        ));
    }
}

/// A delivered event's `prev_kv` (asked for) against the key before its revision.
fn check_prev(record: &WatchRecord, log: &EventLog, event: &WatchEvent, out: &mut Vec<Violation>) {
    let revision = event.revision();
    let Some(before) = log.value_before(&event.key, revision) else {
        return;
    };
    if event.prev == before || (event.prev.is_none() && record.may_be_lossy_at(revision)) {
        return;
    }
    out.push(Violation::new(
        ViolationKind::PrevKv,
        format!(
            "{} at revision {revision}, key {:?}: {event} has prev_kv {:?}, but before revision \
             {revision} the key was {:?}",
            record.name(),
            event.key,
            event.prev,
            before
        ),
    ));
}
