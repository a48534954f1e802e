//! A value built from files, rebuilt when the files change on disk: how replaced certificates,
//! keys, CA bundles and CRLs reach new connections without a restart.
//!
//! [`Reloading::get`] stats the files (cheap next to a handshake) and compares modification
//! time, size and inode with those the current value was built from. On a change it rebuilds;
//! if the rebuild fails (a file half written, a key not matching its certificate yet) the
//! previous value stays in use, the failure is logged once for that state of the files, and
//! the next change tries again.

use super::TlsError;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// The state of one file as far as reloading cares; `None` when it cannot be stat'ed.
type FileStamp = Option<(SystemTime, u64, u64)>;

/// The states of every watched file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp(Vec<FileStamp>);

impl Stamp {
    /// Stats `paths` now.
    pub fn of(paths: &[PathBuf]) -> Stamp {
        Stamp(
            paths
                .iter()
                .map(|p| {
                    std::fs::metadata(p)
                        .ok()
                        .and_then(|m| Some((m.modified().ok()?, m.len(), m.ino())))
                })
                .collect(),
        )
    }
}

struct State<T> {
    current: Arc<T>,
    /// The files' state `current` was built from.
    built_from: Stamp,
    /// A state of the files that failed to build (logged already).
    failed: Option<Stamp>,
}

/// A value built from files by `build`, rebuilt when they change.
pub struct Reloading<T> {
    what: String,
    paths: Vec<PathBuf>,
    build: Box<dyn Fn() -> Result<T, TlsError> + Send + Sync>,
    state: Mutex<State<T>>,
}

impl<T> Reloading<T> {
    /// Builds the first value; its error is the caller's (a start refused).
    pub fn new(
        what: impl Into<String>,
        paths: Vec<PathBuf>,
        build: impl Fn() -> Result<T, TlsError> + Send + Sync + 'static,
    ) -> Result<Reloading<T>, TlsError> {
        // Stamped before reading, so a change during the build is seen next time.
        let built_from = Stamp::of(&paths);
        let current = Arc::new(build()?);
        Ok(Reloading {
            what: what.into(),
            paths,
            build: Box::new(build),
            state: Mutex::new(State {
                current,
                built_from,
                failed: None,
            }),
        })
    }

    /// The value for a new connection: rebuilt first if the files changed.
    pub fn get(&self) -> Arc<T> {
        let stamp = Stamp::of(&self.paths);
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if stamp == state.built_from || state.failed.as_ref() == Some(&stamp) {
            return state.current.clone();
        }
        match (self.build)() {
            Ok(value) => {
                tracing::info!(what = %self.what, files = ?self.paths, "reloaded TLS files");
                state.current = Arc::new(value);
                state.built_from = stamp;
                state.failed = None;
            }
            Err(e) => {
                tracing::warn!(what = %self.what, error = %e, "TLS files changed but do not load; still using the previous ones");
                state.failed = Some(stamp);
            }
        }
        state.current.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rebuilds_on_change_and_keeps_the_last_good_value() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v");
        std::fs::write(&path, "1").unwrap();
        let p = path.clone();
        let builds = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = builds.clone();
        let cell = Reloading::new("test", vec![path.clone()], move || {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let text = std::fs::read_to_string(&p).map_err(|e| TlsError::Config(e.to_string()))?;
            text.trim()
                .parse::<u32>()
                .map_err(|e| TlsError::Config(e.to_string()))
        })
        .unwrap();
        assert_eq!(*cell.get(), 1);
        assert_eq!(*cell.get(), 1);
        assert_eq!(builds.load(std::sync::atomic::Ordering::SeqCst), 1);
        std::fs::write(&path, "22").unwrap();
        assert_eq!(*cell.get(), 22);
        // A broken replacement keeps the old value and is tried once per state.
        std::fs::write(&path, "x").unwrap();
        assert_eq!(*cell.get(), 22);
        assert_eq!(*cell.get(), 22);
        assert_eq!(builds.load(std::sync::atomic::Ordering::SeqCst), 3);
        // Replaced by rename (a new inode), the way tools rotate files atomically.
        let tmp = dir.path().join("v.tmp");
        std::fs::write(&tmp, "333").unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        assert_eq!(*cell.get(), 333);
    }
}
