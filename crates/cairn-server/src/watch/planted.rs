//! Planted watch bugs (feature `planted-bugs`, chosen by `CAIRN_PLANTED_BUG`; see
//! `crate::faults`), applied where the hub hands responses to a stream's driver
//! ([`Hub::pop`]), so live and catch-up events are affected alike.
//!
//! - `drop-watch-event-on-compaction`: [`Hub::compaction_applied`] (called by the apply thread
//!   after each batch that applied a compaction) arms a one-shot: the next response with events
//!   that any stream pops loses its first event, silently (a response left empty is not sent).
//! - `split-txn-events`: a response with several events of one revision is cut in two between
//!   the first two events that share a revision, so that revision arrives in two responses.

use super::hub::{Hub, Outgoing};
use crate::faults::{planted, Bug};
use std::sync::atomic::{AtomicBool, Ordering};

/// Which planted watch bugs a hub runs with.
#[derive(Debug, Default)]
pub(super) struct PlantedWatchBugs {
    drop_after_compaction: bool,
    split_revisions: bool,
    /// A compaction was applied and no event was dropped since.
    drop_armed: AtomicBool,
}

impl PlantedWatchBugs {
    /// The bugs planted in this process.
    pub(super) fn from_process() -> PlantedWatchBugs {
        PlantedWatchBugs {
            drop_after_compaction: planted(Bug::DropWatchEventOnCompaction),
            split_revisions: planted(Bug::SplitTxnEvents),
            drop_armed: AtomicBool::new(false),
        }
    }

    /// Hands `o` to the driver through `out`, mangled by the bugs planted.
    pub(super) fn deliver(&self, mut o: Outgoing, out: &mut Vec<Outgoing>) {
        if self.drop_after_compaction
            && !o.resp.events.is_empty()
            && self.drop_armed.swap(false, Ordering::AcqRel)
        {
            let ev = o.resp.events.remove(0);
            tracing::warn!(
                watch_id = o.resp.watch_id,
                revision = ev.kv.as_ref().map_or(0, |kv| kv.mod_revision),
                "planted bug drop-watch-event-on-compaction: dropped a watch event"
            );
            if o.resp.events.is_empty() {
                return;
            }
        }
        if self.split_revisions {
            let events = &o.resp.events;
            let rev = |i: usize| events[i].kv.as_ref().map(|kv| kv.mod_revision);
            if let Some(at) = (1..events.len()).find(|&i| rev(i) == rev(i - 1)) {
                let mut second = o.clone();
                second.resp.events = o.resp.events.split_off(at);
                out.push(o);
                out.push(second);
                return;
            }
        }
        out.push(o);
    }
}

impl Hub {
    /// This hub with `bug` planted, whatever the process runs with (for tests).
    pub fn with_planted_bug(mut self, bug: Bug) -> Hub {
        match bug {
            Bug::DropWatchEventOnCompaction => self.planted.drop_after_compaction = true,
            Bug::SplitTxnEvents => self.planted.split_revisions = true,
            Bug::AckBeforeFsync | Bug::ReadWithoutReadIndex => {}
        }
        self
    }

    /// A compaction was applied: under `drop-watch-event-on-compaction`, the next event
    /// delivered is dropped.
    pub fn compaction_applied(&self) {
        if self.planted.drop_after_compaction {
            self.planted.drop_armed.store(true, Ordering::Release);
        }
    }
}
