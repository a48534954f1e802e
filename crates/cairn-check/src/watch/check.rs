//! [`check_watches`]: etcd's watch guarantees, stream by stream.
//!
//! This file checks what a stream shows on its own: ordered (event revisions never go back,
//! header revisions never decrease), unique (no revision and key twice), atomic (no revision
//! split over responses), filters and range, no `prev_kv` unless asked, no event before the
//! start, and that a compaction cancel was due. `against_log.rs` compares the stream with the
//! [`EventLog`]: reliable, resumable, atomic (every matching event of a delivered revision),
//! content and `prev_kv`.

use std::collections::{BTreeMap, HashSet};

use super::against_log::check_against_log;
use super::log::EventLog;
use super::record::{EventKind, WatchRecord};
use crate::violation::{Violation, ViolationKind};

/// Checks every watch stream against etcd's watch guarantees (ordered, unique, atomic,
/// reliable, resumable, `prev_kv`, filters) and its events against `log`, which should be
/// built from the same records by [`EventLog::from_records`] (whose own violations are not
/// repeated here). Revisions the log does not know completely are checked only as far as the
/// stream alone allows.
pub fn check_watches(records: &[WatchRecord], log: &EventLog) -> Vec<Violation> {
    let mut violations = Vec::new();
    for record in records {
        check_stream(record, &mut violations);
        check_against_log(record, log, &mut violations);
    }
    violations
}

/// The guarantees one stream shows on its own.
fn check_stream(record: &WatchRecord, out: &mut Vec<Violation>) {
    let name = record.name();
    let request = &record.request;
    let first = record.first_revision();
    let mut last_header = 0;
    let mut highest: Option<i64> = None;
    let mut seen: HashSet<(i64, &str)> = HashSet::new();
    // Revision -> the responses that carried it.
    let mut carried_by: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
    for (index, response) in record.responses.iter().enumerate() {
        if response.header_revision > 0 {
            if response.header_revision < last_header {
                out.push(Violation::new(
                    ViolationKind::Ordered,
                    format!(
                        "{name}: response {index} has header revision {} after {last_header}",
                        response.header_revision
                    ),
                ));
            }
            last_header = last_header.max(response.header_revision);
        }
        if response.canceled && response.compact_revision > 0 {
            let next = highest.map_or(first, |h| Some(h + 1));
            if let Some(next) = next.filter(|n| *n >= response.compact_revision) {
                out.push(Violation::new(
                    ViolationKind::Resumable,
                    format!(
                        "{name}: canceled as compacted at revision {}, but its next revision \
                         {next} is not compacted",
                        response.compact_revision
                    ),
                ));
            }
        }
        for event in &response.events {
            let revision = event.revision();
            let at = format!("{name} at revision {revision}, key {:?}", event.key);
            if let Some(h) = highest.filter(|h| revision < *h) {
                out.push(Violation::new(
                    ViolationKind::Ordered,
                    format!("{at}: {event} delivered after revision {h}"),
                ));
            }
            highest = Some(highest.map_or(revision, |h| h.max(revision)));
            if let Some(first) = first.filter(|f| revision < *f) {
                out.push(Violation::new(
                    ViolationKind::Resumable,
                    format!("{at}: {event} delivered, before the stream's first revision {first}"),
                ));
            }
            if !seen.insert((revision, &event.key)) {
                out.push(Violation::new(
                    ViolationKind::Unique,
                    format!("{at}: delivered twice (again as {event})"),
                ));
            }
            if !request.covers_key(&event.key) {
                out.push(Violation::new(
                    ViolationKind::Filter,
                    format!(
                        "{at}: {event} is outside the watched range [{:?}, {:?})",
                        request.key, request.end
                    ),
                ));
            } else if !request.matches(event) {
                let filter = match event.kind {
                    EventKind::Put => "no_put",
                    EventKind::Delete => "no_delete",
                };
                out.push(Violation::new(
                    ViolationKind::Filter,
                    format!("{at}: {event} delivered despite {filter}"),
                ));
            }
            if !request.prev_kv && event.prev.is_some() {
                out.push(Violation::new(
                    ViolationKind::PrevKv,
                    format!("{at}: {event} carries a prev_kv the watch did not ask for"),
                ));
            }
            let carriers = carried_by.entry(revision).or_default();
            if carriers.last() != Some(&index) {
                carriers.push(index);
            }
        }
    }
    for (revision, carriers) in carried_by {
        if carriers.len() > 1 {
            out.push(Violation::new(
                ViolationKind::Atomic,
                format!("{name}: revision {revision} is split over responses {carriers:?}"),
            ));
        }
    }
}
