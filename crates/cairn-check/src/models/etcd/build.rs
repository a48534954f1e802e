//! Building an [`EtcdState`] from outside a model run: from the keys a whole-keyspace Range
//! returned, or by replaying a watch's events one revision at a time.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{EtcdState, KeyValue};

impl EtcdState {
    /// The keyspace holding exactly `keys`, at `revision` (e.g. what a Range over the whole
    /// keyspace returned, with its header revision), without leases (a Range does not show
    /// them; add some with [`EtcdState::with_lease`]).
    pub fn from_keys(revision: i64, keys: impl IntoIterator<Item = (String, KeyValue)>) -> Self {
        EtcdState {
            revision,
            keys: Arc::new(keys.into_iter().collect::<BTreeMap<_, _>>()),
            leases: Arc::default(),
        }
    }

    /// Sets `key` to `kv`, or removes it for `None`; the revision and the leases are left
    /// alone (a replay of watch events knows nothing of leases).
    pub(crate) fn set_key(&mut self, key: &str, kv: Option<KeyValue>) {
        let keys = Arc::make_mut(&mut self.keys);
        match kv {
            Some(kv) => {
                keys.insert(key.to_string(), kv);
            }
            None => {
                keys.remove(key);
            }
        }
    }

    /// Moves the store to `revision`.
    pub(crate) fn set_revision(&mut self, revision: i64) {
        self.revision = revision;
    }
}
