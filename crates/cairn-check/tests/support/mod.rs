//! A simulated run for the watch and consistency tests: a sequence of requests applied to an
//! etcd keyspace, the events etcd would emit for each revision, and watchers over them.

#![allow(dead_code)]

use cairn_check::models::{EtcdInput, EtcdOutput, EtcdState, TxnOp};
use cairn_check::watch::{EventKind, WatchEvent, WatchRecord, WatchRequest, WatchResponse};

/// A sequential run: every request in order, with its response and the events it emitted.
#[derive(Debug, Clone, Default)]
pub struct Run {
    /// `states[i]` is the keyspace after the first `i` requests.
    pub states: Vec<EtcdState>,
    /// The requests and their responses.
    pub ops: Vec<(EtcdInput, EtcdOutput)>,
    /// The events of each revision from 2 on (with `prev` filled in), by revision.
    pub revisions: Vec<(i64, Vec<WatchEvent>)>,
}

impl Run {
    /// Runs `inputs` from a fresh store.
    pub fn new(inputs: impl IntoIterator<Item = EtcdInput>) -> Self {
        let mut run = Run {
            states: vec![EtcdState::default()],
            ..Run::default()
        };
        for input in inputs {
            run.apply(input);
        }
        run
    }

    /// Applies one more request.
    pub fn apply(&mut self, input: EtcdInput) -> EtcdOutput {
        let before = self.state().clone();
        let (after, output) = before.apply(&input);
        if after.revision() != before.revision() {
            let events = events(&before, &after, &input, &output);
            assert!(
                !events.is_empty(),
                "a new revision without events: {input:?}"
            );
            self.revisions.push((after.revision(), events));
        }
        self.states.push(after);
        self.ops.push((input, output.clone()));
        output
    }

    /// The keyspace now.
    pub fn state(&self) -> &EtcdState {
        self.states.last().expect("a run has a first state")
    }

    /// The keyspace at `revision`.
    pub fn state_at(&self, revision: i64) -> EtcdState {
        self.states
            .iter()
            .rev()
            .find(|s| s.revision() <= revision)
            .cloned()
            .unwrap_or_default()
    }

    /// The last revision.
    pub fn last_revision(&self) -> i64 {
        self.state().revision()
    }

    /// The events of `revision`.
    pub fn events(&self, revision: i64) -> &[WatchEvent] {
        self.revisions
            .iter()
            .find(|(r, _)| *r == revision)
            .map_or(&[], |(_, e)| e.as_slice())
    }

    /// What `request` delivers over revisions `first..=last`, a response per `chunk`
    /// consecutive revisions with events (every revision's events in one response).
    pub fn deliver(
        &self,
        request: &WatchRequest,
        first: i64,
        last: i64,
        chunk: usize,
    ) -> Vec<WatchResponse> {
        let mut per_revision: Vec<(i64, Vec<WatchEvent>)> = Vec::new();
        for (revision, events) in &self.revisions {
            if *revision < first || *revision > last {
                continue;
            }
            let matching: Vec<WatchEvent> = events
                .iter()
                .filter(|e| request.matches(e))
                .map(|e| WatchEvent {
                    prev: if request.prev_kv {
                        e.prev.clone()
                    } else {
                        None
                    },
                    ..e.clone()
                })
                .collect();
            if !matching.is_empty() {
                per_revision.push((*revision, matching));
            }
        }
        per_revision
            .chunks(chunk.max(1))
            .map(|group| WatchResponse {
                header_revision: group.last().map_or(0, |(r, _)| *r),
                events: group.iter().flat_map(|(_, e)| e.clone()).collect(),
                ..WatchResponse::default()
            })
            .collect()
    }

    /// A watcher over `first..=last` with `request` (its `start_revision` decides the start:
    /// when 0, the watch was created at revision `first - 1`).
    pub fn record(
        &self,
        watcher: u64,
        member: usize,
        request: WatchRequest,
        first: i64,
        last: i64,
        chunk: usize,
    ) -> WatchRecord {
        let created_at_revision = (request.start_revision == 0).then_some(first - 1);
        WatchRecord {
            watcher,
            member,
            responses: self.deliver(&request, first, last, chunk),
            request,
            created_at_revision,
            ended_by: None,
        }
    }

    /// A whole-keyspace watcher with `prev_kv` over the whole run, created at revision 1.
    pub fn full_watcher(&self, watcher: u64, member: usize) -> WatchRecord {
        let request = WatchRequest {
            prev_kv: true,
            ..everything()
        };
        self.record(watcher, member, request, 2, self.last_revision(), 3)
    }
}

/// A request for every key, no filters, from now.
pub fn everything() -> WatchRequest {
    WatchRequest {
        key: String::new(),
        end: "\0".into(),
        ..WatchRequest::default()
    }
}

/// A request for the keys with `prefix` (not empty, last byte below 0xff).
pub fn prefix(prefix: &str) -> WatchRequest {
    let mut end = prefix.as_bytes().to_vec();
    *end.last_mut().expect("a prefix") += 1;
    WatchRequest {
        key: prefix.into(),
        end: String::from_utf8(end).expect("ascii"),
        ..WatchRequest::default()
    }
}

/// The events etcd emits for `input`, which took `before` to `after` (a new revision).
fn events(
    before: &EtcdState,
    after: &EtcdState,
    input: &EtcdInput,
    output: &EtcdOutput,
) -> Vec<WatchEvent> {
    let revision = after.revision();
    let put = |key: &str| {
        let kv = after.get(key).expect("a put key exists after");
        WatchEvent {
            kind: EventKind::Put,
            key: key.into(),
            value: kv.value.clone(),
            mod_revision: revision,
            create_revision: kv.create_revision,
            version: kv.version,
            prev: before.get(key).cloned(),
        }
    };
    let delete = |key: &str| {
        before.get(key).map(|prev| WatchEvent {
            kind: EventKind::Delete,
            key: key.into(),
            value: String::new(),
            mod_revision: revision,
            create_revision: 0,
            version: 0,
            prev: Some(prev.clone()),
        })
    };
    match (input, output) {
        (EtcdInput::Put { key, .. }, _) | (EtcdInput::PutWithLease { key, .. }, _) => {
            vec![put(key)]
        }
        // Every key the revoke deleted, in key order (as etcd deletes them).
        (EtcdInput::LeaseRevoke { .. }, _) => before
            .keys()
            .filter(|(key, _)| after.get(key).is_none())
            .filter_map(|(key, _)| delete(key))
            .collect(),
        (EtcdInput::Delete { key }, _) => delete(key).into_iter().collect(),
        (EtcdInput::Txn(txn), EtcdOutput::Txn { succeeded, .. }) => {
            let ops = if *succeeded {
                &txn.success
            } else {
                &txn.failure
            };
            ops.iter()
                .filter_map(|op| match op {
                    TxnOp::Put { key, .. } => Some(put(key)),
                    TxnOp::Delete { key } => delete(key),
                    TxnOp::Get { .. } => None,
                })
                .collect()
        }
        _ => Vec::new(),
    }
}

pub fn put(key: &str, value: &str) -> EtcdInput {
    EtcdInput::Put {
        key: key.into(),
        value: value.into(),
    }
}

pub fn lput(key: &str, value: &str, lease: i64) -> EtcdInput {
    EtcdInput::PutWithLease {
        key: key.into(),
        value: value.into(),
        lease,
    }
}

pub fn grant(lease: i64) -> EtcdInput {
    EtcdInput::LeaseGrant { lease }
}

pub fn revoke(lease: i64) -> EtcdInput {
    EtcdInput::LeaseRevoke { lease }
}

pub fn del(key: &str) -> EtcdInput {
    EtcdInput::Delete { key: key.into() }
}

/// A transaction that always succeeds and runs `ops`.
pub fn txn(ops: Vec<TxnOp>) -> EtcdInput {
    EtcdInput::Txn(cairn_check::models::Txn {
        compare: Vec::new(),
        success: ops,
        failure: Vec::new(),
    })
}

pub fn tput(key: &str, value: &str) -> TxnOp {
    TxnOp::Put {
        key: key.into(),
        value: value.into(),
    }
}

pub fn tdel(key: &str) -> TxnOp {
    TxnOp::Delete { key: key.into() }
}
