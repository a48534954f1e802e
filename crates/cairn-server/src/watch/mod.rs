//! The watch hub: every watcher of every stream, the fan-out of applied revisions to them, and
//! the catch-up of watchers that start in the past or fell behind.
//!
//! - [`hub::Hub`] (held in `Core`) keeps, under one lock, the last published revision, every
//!   stream's watchers and its bounded outgoing queue, and an index of the *synced* watchers
//!   by key and range. The apply thread calls [`hub::Hub::publish`] right after each backend
//!   commit and before the writers are woken; publishing only appends to queues and never
//!   waits.
//! - A watcher is *synced* (it receives live events as they are published) or *unsynced* (it
//!   starts in the past, or its stream's queue was full when an event for it was published).
//!   Every watcher has a watermark, `next_rev`: everything below it has been queued for it.
//!   An unsynced watcher receives nothing from `publish`; the stream's driver replays
//!   `Store::history` from the smallest watermark of its unsynced watchers
//!   ([`catchup`]), queues what each of them misses, and under the same lock as `publish`
//!   moves a watcher back to the synced index once its watermark is past the last published
//!   revision — so no revision is skipped or sent twice across the handover.
//! - [`stream::drive`] is one task per gRPC stream: it drains the queue into the response
//!   stream (fragmenting when asked), runs catch-up rounds while the queue has room, and sends
//!   the periodic progress notifications.

pub mod catchup;
pub mod hub;
#[cfg(feature = "planted-bugs")]
mod planted;
pub mod stream;

pub use hub::{CreateError, Hub, HubLimits, KeyRange, Outgoing, Signals, StreamId, WatchSpec};
