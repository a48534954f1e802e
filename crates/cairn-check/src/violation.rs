//! [`Violation`]: one broken guarantee found by the watch and consistency checks, with a
//! [`ViolationKind`] to group by and a message naming the watcher, member, revision and key.

use std::fmt;

/// Which guarantee a [`Violation`] breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ViolationKind {
    /// Watch: events out of revision order, or header revisions going back.
    Ordered,
    /// Watch: the same (revision, key) delivered twice on one stream.
    Unique,
    /// Watch: a revision's events split over several responses, or only some of them delivered.
    Atomic,
    /// Watch: a revision with matching events skipped inside the delivered span.
    Reliable,
    /// Watch: a resumed (or started-at-revision) stream that starts too late or too early, or
    /// a compaction cancel for a revision that was not compacted.
    Resumable,
    /// Watch: a `prev_kv` that is wrong, or present when not asked for.
    PrevKv,
    /// Watch: an event outside the watched range or of a filtered-out type.
    Filter,
    /// Watch: an event whose content differs from the event log's for that revision and key.
    EventMismatch,
    /// Event log: two watchers' views of one revision that contradict each other, with no
    /// whole-keyspace view to say which is right.
    Disagreement,
    /// Event log: events that contradict the keyspace before them (a version that does not
    /// follow, a delete of a missing key).
    LogInconsistent,
    /// A serializable read that matches no replay of the log at its revision.
    SerializableRead,
    /// An acknowledged write missing from the log at its revision, or not as acknowledged.
    AcknowledgedWrite,
    /// A logged write no operation asked for, or one applied twice.
    InventedWrite,
    /// The replay of the log differs from the keyspace read at the end.
    FinalState,
}

impl ViolationKind {
    /// A short lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            ViolationKind::Ordered => "ordered",
            ViolationKind::Unique => "unique",
            ViolationKind::Atomic => "atomic",
            ViolationKind::Reliable => "reliable",
            ViolationKind::Resumable => "resumable",
            ViolationKind::PrevKv => "prev_kv",
            ViolationKind::Filter => "filter",
            ViolationKind::EventMismatch => "event mismatch",
            ViolationKind::Disagreement => "watcher disagreement",
            ViolationKind::LogInconsistent => "inconsistent log",
            ViolationKind::SerializableRead => "serializable read",
            ViolationKind::AcknowledgedWrite => "acknowledged write",
            ViolationKind::InventedWrite => "invented write",
            ViolationKind::FinalState => "final state",
        }
    }
}

impl fmt::Display for ViolationKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A broken guarantee: what kind, and a one-line account of where and how.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Violation {
    /// The guarantee broken.
    pub kind: ViolationKind,
    /// What happened, naming the watcher, member, revision and key involved.
    pub message: String,
}

impl Violation {
    /// A violation of `kind`.
    pub fn new(kind: ViolationKind, message: impl Into<String>) -> Self {
        Violation {
            kind,
            message: message.into(),
        }
    }
}

impl fmt::Display for Violation {
    /// `kind: message`, on one line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_one_line() {
        let v = Violation::new(ViolationKind::Unique, "watcher 3 (member 1) ...");
        assert_eq!(v.to_string(), "unique: watcher 3 (member 1) ...");
        assert!(!v.to_string().contains('\n'));
    }
}
