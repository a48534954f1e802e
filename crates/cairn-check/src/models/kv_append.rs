//! [`KvAppend`]: a map of string keys with get, put and append, checked key by key.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::history::History;
use crate::model::{partition_by_key, Model};

/// An operation on a [`KvAppend`] map.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KvInput {
    /// Read the string under `key`.
    Get {
        /// The key.
        key: String,
    },
    /// Replace the string under `key`.
    Put {
        /// The key.
        key: String,
        /// The new string.
        value: String,
    },
    /// Add `value` at the end of the string under `key`.
    Append {
        /// The key.
        key: String,
        /// What is appended.
        value: String,
    },
}

impl KvInput {
    /// The key the operation works on.
    pub fn key(&self) -> &str {
        match self {
            KvInput::Get { key } | KvInput::Put { key, .. } | KvInput::Append { key, .. } => key,
        }
    }
}

/// What an operation on a [`KvAppend`] map returned.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KvOutput {
    /// The string read (`""` for a key never written).
    Get(String),
    /// The put happened.
    Put,
    /// The append happened.
    Append,
}

/// The map's contents; a key holding `""` is absent, so equal maps have equal states.
/// Cloning is cheap (shared until written).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct KvState(Arc<BTreeMap<String, String>>);

impl KvState {
    /// The string under `key` (`""` if none).
    pub fn get(&self, key: &str) -> &str {
        self.0.get(key).map_or("", String::as_str)
    }

    fn with(&self, key: &str, value: String) -> KvState {
        let mut next = self.clone();
        let map = Arc::make_mut(&mut next.0);
        if value.is_empty() {
            map.remove(key);
        } else {
            map.insert(key.to_string(), value);
        }
        next
    }
}

/// A map of string keys, all `""` at first, with get, put and append. Keys are independent, so
/// the history is checked key by key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KvAppend;

impl Model for KvAppend {
    type Input = KvInput;
    type Output = KvOutput;
    type State = KvState;

    fn init(&self) -> KvState {
        KvState::default()
    }

    fn step(&self, state: &KvState, input: &KvInput, output: Option<&KvOutput>) -> Option<KvState> {
        match (input, output) {
            (KvInput::Get { .. }, None) => Some(state.clone()),
            (KvInput::Get { key }, Some(KvOutput::Get(seen))) => {
                (state.get(key) == seen).then(|| state.clone())
            }
            (KvInput::Put { key, value }, None | Some(KvOutput::Put)) => {
                Some(state.with(key, value.clone()))
            }
            (KvInput::Append { key, value }, None | Some(KvOutput::Append)) => {
                Some(state.with(key, format!("{}{value}", state.get(key))))
            }
            _ => None,
        }
    }

    fn is_read_only(&self, input: &KvInput) -> bool {
        matches!(input, KvInput::Get { .. })
    }

    fn partition(&self, history: &History<KvInput, KvOutput>) -> Vec<Vec<usize>> {
        partition_by_key(history, |input| input.key().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::{KvAppend, KvInput, KvOutput, KvState};
    use crate::model::Model;

    fn key(k: &str) -> String {
        k.to_string()
    }

    #[test]
    fn append_then_get() {
        let m = KvAppend;
        let s = m.init();
        let append = |v: &str| KvInput::Append {
            key: key("k"),
            value: v.to_string(),
        };
        let s = m.step(&s, &append("a"), Some(&KvOutput::Append)).unwrap();
        let s = m.step(&s, &append("b"), None).unwrap();
        let get = KvInput::Get { key: key("k") };
        assert!(m
            .step(&s, &get, Some(&KvOutput::Get("ab".into())))
            .is_some());
        assert!(m.step(&s, &get, Some(&KvOutput::Get("a".into()))).is_none());
        let other = KvInput::Get { key: key("x") };
        assert!(m
            .step(&s, &other, Some(&KvOutput::Get(String::new())))
            .is_some());
        let put = KvInput::Put {
            key: key("k"),
            value: String::new(),
        };
        assert_eq!(
            m.step(&s, &put, Some(&KvOutput::Put)),
            Some(KvState::default())
        );
    }
}
