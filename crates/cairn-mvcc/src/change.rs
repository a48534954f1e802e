//! One revision being written: the changes of one put, delete or txn, with an undo log so a
//! request that fails part-way leaves the batch exactly as it was.

use redb::{Table, WriteTransaction};

use cairn_api::etcdserverpb::{
    DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse, RangeRequest, RangeResponse,
};
use cairn_api::mvccpb::{event::EventType, Event, KeyValue};

use crate::error::{Context, MvccError};
use crate::layout::{
    count_prefixes, history_value, history_value_inline, inv, LiveVersion, RecordView,
    VersionRecord, COUNTS, HISTORY, KIND_DELETE, KIND_PUT, VERSIONS,
};
use crate::lease::{LEASES, LEASE_KEYS};
use crate::range::{header, View};
use crate::read::{collect, get, CountDeltas, Span};

/// The write-side handles of the tables a revision touches.
pub(crate) struct Tables<'t> {
    pub versions: Table<'t, (&'static [u8], u64), &'static [u8]>,
    pub history: Table<'t, (u64, u32), &'static [u8]>,
    pub counts: Table<'t, &'static [u8], u64>,
    /// Granted leases (see `lease.rs`).
    pub leases: Table<'t, i64, &'static [u8]>,
    /// Keys attached to each lease.
    pub lease_keys: Table<'t, (i64, &'static [u8]), ()>,
}

impl<'t> Tables<'t> {
    /// Opens the tables in a write transaction.
    pub fn open(wtx: &'t WriteTransaction) -> Result<Tables<'t>, MvccError> {
        Ok(Tables {
            versions: wtx.open_table(VERSIONS).ctx("opening versions")?,
            history: wtx.open_table(HISTORY).ctx("opening history")?,
            counts: wtx.open_table(COUNTS).ctx("opening counts")?,
            leases: wtx.open_table(LEASES).ctx("opening leases")?,
            lease_keys: wtx.open_table(LEASE_KEYS).ctx("opening lease_keys")?,
        })
    }
}

/// What to do to take one change back.
pub(crate) enum Undo {
    /// Restore a `versions` row (or remove it when it did not exist).
    Version {
        key: Vec<u8>,
        inv: u64,
        prev: Option<Vec<u8>>,
    },
    /// Remove a `history` row.
    History { main: u64, sub: u32 },
    /// Restore a `history` row's value.
    HistoryValue { main: u64, sub: u32, prev: Vec<u8> },
    /// Restore whether a `lease_keys` row exists.
    LeaseKey {
        lease: i64,
        key: Vec<u8>,
        present: bool,
    },
    /// Restore a `leases` row (or remove it when it did not exist).
    Lease { id: i64, prev: Option<Vec<u8>> },
}

/// The revision after `base`, being written.
pub(crate) struct Revision<'t> {
    pub(crate) tables: Tables<'t>,
    /// The batch's count changes so far (for reads).
    pending: &'t CountDeltas,
    /// This revision's count changes.
    deltas: CountDeltas,
    base: i64,
    compact: i64,
    sub: u32,
    events: Vec<Event>,
    pub(crate) undo: Vec<Undo>,
}

impl<'t> Revision<'t> {
    /// Starts the revision after `base` (the current revision) in `wtx`.
    pub fn begin(
        wtx: &'t WriteTransaction,
        pending: &'t CountDeltas,
        base: i64,
        compact: i64,
    ) -> Result<Revision<'t>, MvccError> {
        Ok(Revision {
            tables: Tables::open(wtx)?,
            pending,
            deltas: CountDeltas::new(),
            base,
            compact,
            sub: 0,
            events: Vec::new(),
            undo: Vec::new(),
        })
    }

    /// The revision before this one.
    pub fn base(&self) -> i64 {
        self.base
    }

    /// The revision being written.
    pub fn rev(&self) -> i64 {
        self.base + 1
    }

    /// The revision a reader inside this request sees: `base`, or `base + 1` once it changed
    /// something.
    pub fn view_rev(&self) -> i64 {
        if self.sub > 0 {
            self.base + 1
        } else {
            self.base
        }
    }

    /// The compact revision.
    pub fn compact(&self) -> i64 {
        self.compact
    }

    /// The latest live version of `key`, including this revision's writes.
    pub fn get(&self, key: &[u8]) -> Result<Option<KeyValue>, MvccError> {
        get(&self.tables.versions, key, self.rev())
    }

    /// The live keys of `span` including this revision's writes.
    pub fn collect(&self, span: Span<'_>) -> Result<Vec<KeyValue>, MvccError> {
        collect(&self.tables.versions, span, self.rev())
    }

    /// The latest live version of `key` before this revision.
    pub fn get_before(&self, key: &[u8]) -> Result<Option<KeyValue>, MvccError> {
        get(&self.tables.versions, key, self.base)
    }

    /// The live keys of `span` before this revision.
    pub fn collect_before(&self, span: Span<'_>) -> Result<Vec<KeyValue>, MvccError> {
        collect(&self.tables.versions, span, self.base)
    }

    /// A Range seeing this revision's writes so far.
    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse, MvccError> {
        View {
            versions: &self.tables.versions,
            counts: &self.tables.counts,
            pending: [Some(self.pending), Some(&self.deltas)],
            current: self.view_rev(),
            compact: self.compact,
        }
        .range(req)
    }

    /// A Put as etcd's applier does it once the lease is known to exist: `ignore_value` /
    /// `ignore_lease` take the old value / lease and need the key (else `KeyNotFound`).
    pub fn put(&mut self, req: &PutRequest) -> Result<PutResponse, MvccError> {
        let prev = self.get(&req.key)?;
        if (req.ignore_value || req.ignore_lease) && prev.is_none() {
            return Err(MvccError::KeyNotFound);
        }
        let value = match (&prev, req.ignore_value) {
            (Some(p), true) => p.value.clone(),
            _ => req.value.clone(),
        };
        let lease = match (&prev, req.ignore_lease) {
            (Some(p), true) => p.lease,
            _ => req.lease,
        };
        self.write_put(&req.key, value, lease, prev.clone())?;
        Ok(PutResponse {
            header: header(self.rev()),
            prev_kv: if req.prev_kv { prev } else { None },
        })
    }

    /// A DeleteRange of the keys live now (including this revision's writes).
    pub fn delete_range(
        &mut self,
        req: &DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, MvccError> {
        let span = Span::new(&req.key, &req.range_end);
        let doomed = self.collect(span)?;
        let deleted = doomed.len() as i64;
        for kv in &doomed {
            self.write_delete(kv.clone())?;
        }
        Ok(DeleteRangeResponse {
            header: header(self.view_rev()),
            deleted,
            prev_kvs: if req.prev_kv { doomed } else { Vec::new() },
        })
    }

    /// Writes a new live version of `key` whose previous live version is `prev`.
    fn write_put(
        &mut self,
        key: &[u8],
        value: Vec<u8>,
        lease: i64,
        prev: Option<KeyValue>,
    ) -> Result<(), MvccError> {
        let rev = self.rev();
        let (create_revision, version) = match &prev {
            Some(p) => (p.create_revision, p.version + 1),
            None => (rev, 1),
        };
        let record = VersionRecord {
            sub: self.sub,
            live: Some(LiveVersion {
                create_revision,
                version,
                lease,
                value,
            }),
        };
        self.write_version(key, &record)?;
        self.write_history(KIND_PUT, key)?;
        self.move_lease(key, prev.as_ref().map_or(0, |p| p.lease), lease)?;
        if prev.is_none() {
            self.bump_counts(key, 1);
        }
        let Some(LiveVersion { value, .. }) = record.live else {
            unreachable!("a put writes a live version")
        };
        let prev_kv = match prev {
            Some(p) if p.mod_revision == rev => self.get_before(key)?,
            prev => prev,
        };
        self.events.push(Event {
            r#type: EventType::Put as i32,
            kv: Some(KeyValue {
                key: key.to_vec(),
                create_revision,
                mod_revision: rev,
                version,
                value,
                lease,
            }),
            prev_kv,
        });
        self.sub += 1;
        Ok(())
    }

    /// Writes a tombstone for the live key-value `prev`.
    pub(crate) fn write_delete(&mut self, prev: KeyValue) -> Result<(), MvccError> {
        let rev = self.rev();
        self.write_version(
            &prev.key,
            &VersionRecord {
                sub: self.sub,
                live: None,
            },
        )?;
        self.write_history(KIND_DELETE, &prev.key)?;
        self.move_lease(&prev.key, prev.lease, 0)?;
        self.bump_counts(&prev.key, -1);
        let kv = KeyValue {
            key: prev.key.clone(),
            mod_revision: rev,
            ..KeyValue::default()
        };
        // As etcd's watch reports it: the version before this revision.
        let prev_kv = if prev.mod_revision == rev {
            self.get_before(&prev.key)?
        } else {
            Some(prev)
        };
        self.events.push(Event {
            r#type: EventType::Delete as i32,
            kv: Some(kv),
            prev_kv,
        });
        self.sub += 1;
        Ok(())
    }

    /// Writes the `versions` row of `key` at this revision. When it replaces a put made earlier
    /// in this revision, that put's record moves into its `history` entry.
    fn write_version(&mut self, key: &[u8], record: &VersionRecord) -> Result<(), MvccError> {
        let main = self.rev() as u64;
        let i = inv(self.rev());
        let prev = self
            .tables
            .versions
            .insert((key, i), record.encode().as_slice())
            .ctx("writing a version")?
            .map(|g| g.value().to_vec());
        self.undo.push(Undo::Version {
            key: key.to_vec(),
            inv: i,
            prev: prev.clone(),
        });
        if let Some(replaced) = prev {
            let view = RecordView::new(&replaced)?;
            if !view.is_tombstone() {
                let sub = view.sub();
                let old = self
                    .tables
                    .history
                    .insert((main, sub), history_value_inline(key, &replaced).as_slice())
                    .ctx("writing history")?
                    .map(|g| g.value().to_vec())
                    .ok_or_else(|| MvccError::Corrupt {
                        table: "history",
                        detail: format!("no entry for revision {main} sub {sub}"),
                    })?;
                self.undo.push(Undo::HistoryValue {
                    main,
                    sub,
                    prev: old,
                });
            }
        }
        Ok(())
    }

    fn write_history(&mut self, kind: u8, key: &[u8]) -> Result<(), MvccError> {
        let main = self.rev() as u64;
        self.tables
            .history
            .insert((main, self.sub), history_value(kind, key).as_slice())
            .ctx("writing history")?;
        self.undo.push(Undo::History {
            main,
            sub: self.sub,
        });
        Ok(())
    }

    fn bump_counts(&mut self, key: &[u8], delta: i64) {
        for prefix in count_prefixes(key) {
            match self.deltas.get_mut(prefix) {
                Some(d) => *d += delta,
                None => {
                    self.deltas.insert(prefix.to_vec(), delta);
                }
            }
        }
    }

    /// Takes back every change of this revision, newest first.
    pub fn rollback(mut self) -> Result<(), MvccError> {
        while let Some(undo) = self.undo.pop() {
            match undo {
                Undo::Version { key, inv, prev } => match prev {
                    Some(bytes) => {
                        self.tables
                            .versions
                            .insert((key.as_slice(), inv), bytes.as_slice())
                            .ctx("undoing a version")?;
                    }
                    None => {
                        self.tables
                            .versions
                            .remove((key.as_slice(), inv))
                            .ctx("undoing a version")?;
                    }
                },
                Undo::History { main, sub } => {
                    self.tables
                        .history
                        .remove((main, sub))
                        .ctx("undoing history")?;
                }
                Undo::HistoryValue { main, sub, prev } => {
                    self.tables
                        .history
                        .insert((main, sub), prev.as_slice())
                        .ctx("undoing history")?;
                }
                Undo::LeaseKey {
                    lease,
                    key,
                    present,
                } => {
                    let row = (lease, key.as_slice());
                    if present {
                        self.tables
                            .lease_keys
                            .insert(row, ())
                            .ctx("undoing a lease key")?;
                    } else {
                        self.tables
                            .lease_keys
                            .remove(row)
                            .ctx("undoing a lease key")?;
                    }
                }
                Undo::Lease { id, prev } => match prev {
                    Some(bytes) => {
                        self.tables
                            .leases
                            .insert(id, bytes.as_slice())
                            .ctx("undoing a lease")?;
                    }
                    None => {
                        self.tables.leases.remove(id).ctx("undoing a lease")?;
                    }
                },
            }
        }
        Ok(())
    }

    /// Ends the revision: its events (`None` when it changed nothing) and count changes.
    pub fn finish(self) -> (Option<Vec<Event>>, CountDeltas) {
        ((self.sub > 0).then_some(self.events), self.deltas)
    }
}
