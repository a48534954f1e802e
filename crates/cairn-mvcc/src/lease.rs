//! Leases in the backend: which leases are granted (with their TTL and last checkpointed
//! remaining TTL) and which keys are attached to each, kept in the same write transaction as
//! the keyspace.
//!
//! | table        | key                | value                                           |
//! |--------------|--------------------|-------------------------------------------------|
//! | `leases`     | lease id           | `ttl:i64le \| remaining_ttl:i64le` (0 = unset)  |
//! | `lease_keys` | `(lease id, key)`  | `()`                                            |
//!
//! Invariant: `(l, k)` is in `lease_keys` exactly when the latest version of `k` is live and
//! carries lease `l`. Every put and delete keeps it (a put moves the key from its old lease to
//! its new one; `ignore_lease` keeps the old one), so revoking a lease finds its keys with one
//! range read instead of a keyspace scan, and a restart reads only `leases`.
//!
//! Expiry is not stored: it is the lessor's business (in the server), which restarts every
//! lease from `remaining_ttl` when set, else from `ttl`, as etcd's lessor does on promotion.

use std::collections::HashSet;

use redb::{ReadableTable, TableDefinition};

use cairn_api::etcdserverpb::request_op::Request;
use cairn_api::etcdserverpb::TxnRequest;

use crate::batch::WriteBatch;
use crate::change::{Revision, Undo};
use crate::error::{Context, MvccError};
use crate::store::Store;
use crate::LeaseCheck;

/// Granted leases: id → [`encode`]d TTL and remaining TTL.
pub(crate) const LEASES: TableDefinition<i64, &[u8]> = TableDefinition::new("leases");
/// Keys attached to each lease: `(lease id, key)`.
pub(crate) const LEASE_KEYS: TableDefinition<(i64, &[u8]), ()> = TableDefinition::new("lease_keys");

const RECORD_LEN: usize = 16;

/// A granted lease as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseInfo {
    /// The lease id.
    pub id: i64,
    /// The granted TTL in seconds.
    pub ttl: i64,
    /// The remaining TTL recorded by the last checkpoint, in seconds; 0 when none is recorded
    /// (the full TTL applies).
    pub remaining_ttl: i64,
}

/// The [`LeaseCheck`] of a server: a lease exists only when granted in the store's `leases`
/// table (no extra leases).
pub struct GrantedLeases;

impl LeaseCheck for GrantedLeases {
    fn lease_exists(&self, _id: i64) -> bool {
        false
    }
}

fn encode(ttl: i64, remaining_ttl: i64) -> [u8; RECORD_LEN] {
    let mut out = [0u8; RECORD_LEN];
    out[..8].copy_from_slice(&ttl.to_le_bytes());
    out[8..].copy_from_slice(&remaining_ttl.to_le_bytes());
    out
}

fn decode(id: i64, bytes: &[u8]) -> Result<LeaseInfo, MvccError> {
    if bytes.len() < RECORD_LEN {
        return Err(MvccError::Corrupt {
            table: "leases",
            detail: format!("lease {id:016x}: record of {} bytes", bytes.len()),
        });
    }
    let field = |i: usize| i64::from_le_bytes(bytes[i..i + 8].try_into().expect("8 bytes"));
    Ok(LeaseInfo {
        id,
        ttl: field(0),
        remaining_ttl: field(8),
    })
}

/// Every lease id a put anywhere in `req` (either branch, nested txns included) attaches.
fn txn_lease_ids(req: &TxnRequest, out: &mut Vec<i64>) {
    for op in req.success.iter().chain(&req.failure) {
        match &op.request {
            Some(Request::RequestPut(p)) if p.lease != 0 => out.push(p.lease),
            Some(Request::RequestTxn(nested)) => txn_lease_ids(nested, out),
            _ => {}
        }
    }
}

/// The keys attached to lease `id`, in key order, from any handle on `lease_keys`.
fn keys_of<T: ReadableTable<(i64, &'static [u8]), ()>>(
    table: &T,
    id: i64,
) -> Result<Vec<Vec<u8>>, MvccError> {
    let mut keys = Vec::new();
    for entry in table.range((id, &[][..])..).ctx("reading lease_keys")? {
        let (k, _) = entry.ctx("reading lease_keys")?;
        let (lease, key) = k.value();
        if lease != id {
            break;
        }
        keys.push(key.to_vec());
    }
    Ok(keys)
}

impl Revision<'_> {
    /// True when lease `id` is granted (including this batch's grants and revokes).
    pub(crate) fn lease_granted(&self, id: i64) -> Result<bool, MvccError> {
        Ok(self.tables.leases.get(id).ctx("reading a lease")?.is_some())
    }

    /// Moves `key` from lease `from` to lease `to` in `lease_keys` (0 = no lease).
    pub(crate) fn move_lease(&mut self, key: &[u8], from: i64, to: i64) -> Result<(), MvccError> {
        if from == to {
            return Ok(());
        }
        if from != 0 {
            self.set_lease_key(from, key, false)?;
        }
        if to != 0 {
            self.set_lease_key(to, key, true)?;
        }
        Ok(())
    }

    fn set_lease_key(&mut self, lease: i64, key: &[u8], present: bool) -> Result<(), MvccError> {
        let was = if present {
            self.tables
                .lease_keys
                .insert((lease, key), ())
                .ctx("attaching a key to a lease")?
                .is_some()
        } else {
            self.tables
                .lease_keys
                .remove((lease, key))
                .ctx("detaching a key from a lease")?
                .is_some()
        };
        if was != present {
            self.undo.push(Undo::LeaseKey {
                lease,
                key: key.to_vec(),
                present: was,
            });
        }
        Ok(())
    }

    fn set_lease_row(&mut self, id: i64, row: Option<[u8; RECORD_LEN]>) -> Result<(), MvccError> {
        let prev = match row {
            Some(bytes) => self
                .tables
                .leases
                .insert(id, bytes.as_slice())
                .ctx("writing a lease")?
                .map(|g| g.value().to_vec()),
            None => self
                .tables
                .leases
                .remove(id)
                .ctx("removing a lease")?
                .map(|g| g.value().to_vec()),
        };
        self.undo.push(Undo::Lease { id, prev });
        Ok(())
    }

    fn lease_info(&self, id: i64) -> Result<Option<LeaseInfo>, MvccError> {
        match self.tables.leases.get(id).ctx("reading a lease")? {
            Some(g) => Ok(Some(decode(id, g.value())?)),
            None => Ok(None),
        }
    }
}

impl WriteBatch<'_> {
    /// Grants lease `id` with `ttl` seconds (the caller has applied etcd's minimum and maximum).
    /// `LeaseExists` when it is already granted. Never a new revision.
    pub fn lease_grant(&mut self, id: i64, ttl: i64) -> Result<(), MvccError> {
        self.with_revision(|rev| {
            if rev.lease_granted(id)? {
                return Err(MvccError::LeaseExists);
            }
            rev.set_lease_row(id, Some(encode(ttl, 0)))
        })
    }

    /// Revokes lease `id`: every key attached to it is deleted in one new revision (in key
    /// order, with delete events), then the lease is removed. A lease with no keys is removed
    /// without a new revision, as etcd's empty delete transaction leaves the revision alone.
    /// `LeaseNotFound` when it is not granted.
    pub fn lease_revoke(&mut self, id: i64) -> Result<(), MvccError> {
        self.with_revision(|rev| {
            if !rev.lease_granted(id)? {
                return Err(MvccError::LeaseNotFound);
            }
            for key in keys_of(&rev.tables.lease_keys, id)? {
                match rev.get(&key)? {
                    Some(kv) if kv.lease == id => rev.write_delete(kv)?,
                    other => {
                        // The invariant says this cannot happen; keep revoking rather than
                        // fail, and drop the stale attachment.
                        tracing::warn!(
                            lease = %format!("{id:016x}"),
                            key = %String::from_utf8_lossy(&key),
                            found_lease = other.map(|kv| kv.lease),
                            "lease_keys names a key not attached to the lease; detaching it"
                        );
                        rev.set_lease_key(id, &key, false)?;
                    }
                }
            }
            rev.set_lease_row(id, None)
        })
    }

    /// Records a checkpointed remaining TTL for lease `id` (0 clears it). Returns `false`, and
    /// changes nothing, when the lease is not granted (etcd ignores such checkpoints). Never a
    /// new revision.
    pub fn lease_checkpoint(&mut self, id: i64, remaining_ttl: i64) -> Result<bool, MvccError> {
        self.with_revision(|rev| match rev.lease_info(id)? {
            Some(info) => {
                rev.set_lease_row(id, Some(encode(info.ttl, remaining_ttl)))?;
                Ok(true)
            }
            None => Ok(false),
        })
    }

    /// The lease `id` as this batch sees it.
    pub fn lease(&mut self, id: i64) -> Result<Option<LeaseInfo>, MvccError> {
        self.with_revision(|rev| rev.lease_info(id))
    }
}

/// The leases among the ones a txn's puts attach that are granted, for the txn's pre-checks.
pub(crate) fn granted_in_txn(
    rev: &Revision<'_>,
    req: &TxnRequest,
) -> Result<HashSet<i64>, MvccError> {
    let mut ids = Vec::new();
    txn_lease_ids(req, &mut ids);
    let mut granted = HashSet::new();
    for id in ids {
        if rev.lease_granted(id)? {
            granted.insert(id);
        }
    }
    Ok(granted)
}

impl Store {
    /// Every granted lease, in id order, as of the last commit.
    pub fn leases(&self) -> Result<Vec<LeaseInfo>, MvccError> {
        let rtx = self.read_txn()?;
        let table = rtx.open_table(LEASES).ctx("opening leases")?;
        let mut out = Vec::new();
        for entry in table.iter().ctx("reading leases")? {
            let (k, v) = entry.ctx("reading leases")?;
            out.push(decode(k.value(), v.value())?);
        }
        Ok(out)
    }

    /// Lease `id`, if granted, as of the last commit.
    pub fn lease(&self, id: i64) -> Result<Option<LeaseInfo>, MvccError> {
        let rtx = self.read_txn()?;
        let table = rtx.open_table(LEASES).ctx("opening leases")?;
        let got = table.get(id).ctx("reading a lease")?;
        got.map(|g| decode(id, g.value())).transpose()
    }

    /// The keys attached to lease `id`, in key order, as of the last commit.
    pub fn lease_keys(&self, id: i64) -> Result<Vec<Vec<u8>>, MvccError> {
        let rtx = self.read_txn()?;
        keys_of(&rtx.open_table(LEASE_KEYS).ctx("opening lease_keys")?, id)
    }
}

#[cfg(test)]
mod tests {
    use cairn_api::etcdserverpb::request_op::Request;
    use cairn_api::etcdserverpb::{RequestOp, TxnRequest};
    use cairn_api::mvccpb::event::EventType;

    use super::{GrantedLeases, LeaseInfo};
    use crate::testutil::*;
    use crate::{MvccError, Store};

    fn grant(s: &Store, id: i64, ttl: i64) -> Result<(), MvccError> {
        let mut b = s.begin_write()?;
        b.lease_grant(id, ttl)?;
        b.commit(false)?;
        Ok(())
    }

    fn revoke(s: &Store, id: i64) -> Result<Vec<crate::RevisionEvents>, MvccError> {
        let mut b = s.begin_write()?;
        b.lease_revoke(id)?;
        b.commit(false)
    }

    fn leased_put(s: &Store, k: &str, lease: i64) -> Result<(), MvccError> {
        let mut req = put_req(k, "v");
        req.lease = lease;
        let mut b = s.begin_write()?;
        b.put(&req, &GrantedLeases)?;
        b.commit(false)?;
        Ok(())
    }

    fn keys(s: &Store, id: i64) -> Vec<String> {
        s.lease_keys(id)
            .unwrap()
            .into_iter()
            .map(|k| String::from_utf8(k).unwrap())
            .collect()
    }

    #[test]
    fn grant_checkpoint_and_read_back() {
        let (dir, s) = store();
        grant(&s, 7, 30).unwrap();
        grant(&s, -3, 5).unwrap();
        assert!(matches!(grant(&s, 7, 10), Err(MvccError::LeaseExists)));
        assert_eq!(s.current_revision(), 1, "grants never bump the revision");
        let mut b = s.begin_write().unwrap();
        assert!(b.lease_checkpoint(7, 12).unwrap());
        assert!(!b.lease_checkpoint(8, 12).unwrap());
        b.commit(false).unwrap();
        assert_eq!(
            s.leases().unwrap(),
            vec![
                LeaseInfo {
                    id: -3,
                    ttl: 5,
                    remaining_ttl: 0
                },
                LeaseInfo {
                    id: 7,
                    ttl: 30,
                    remaining_ttl: 12
                }
            ]
        );
        drop(s);
        let s = open_at(&dir);
        assert_eq!(s.lease(7).unwrap().map(|l| l.remaining_ttl), Some(12));
        assert_eq!(s.lease(8).unwrap(), None);
    }

    #[test]
    fn a_file_from_before_leases_gets_the_tables() {
        let (dir, s) = store();
        put(&s, "a", "1");
        let wtx = s.db().begin_write().unwrap();
        wtx.delete_table(super::LEASES).unwrap();
        wtx.delete_table(super::LEASE_KEYS).unwrap();
        wtx.commit().unwrap();
        drop(s);
        let s = open_at(&dir);
        assert!(s.leases().unwrap().is_empty());
        assert!(s.lease_keys(1).unwrap().is_empty());
        assert_eq!(get(&s, "a").unwrap().value, b"1");
        grant(&s, 1, 5).unwrap();
        leased_put(&s, "a", 1).unwrap();
        assert_eq!(keys(&s, 1), vec!["a"]);
    }

    #[test]
    fn puts_and_deletes_keep_lease_keys() {
        let (_d, s) = store();
        grant(&s, 1, 10).unwrap();
        grant(&s, 2, 10).unwrap();
        leased_put(&s, "a", 1).unwrap();
        leased_put(&s, "b", 1).unwrap();
        leased_put(&s, "c", 2).unwrap();
        assert_eq!(keys(&s, 1), vec!["a", "b"]);
        // Moving a key to another lease, dropping the lease with a plain put.
        leased_put(&s, "a", 2).unwrap();
        put(&s, "b", "plain");
        assert!(keys(&s, 1).is_empty());
        assert_eq!(keys(&s, 2), vec!["a", "c"]);
        // ignore_lease keeps the lease.
        let mut req = put_req("a", "again");
        req.ignore_lease = true;
        try_put(&s, &req).unwrap();
        assert_eq!(keys(&s, 2), vec!["a", "c"]);
        // A delete detaches.
        del(&s, "c", "");
        assert_eq!(keys(&s, 2), vec!["a"]);
        // Unknown lease: refused, nothing attached.
        assert!(matches!(
            leased_put(&s, "z", 99),
            Err(MvccError::LeaseNotFound)
        ));
        assert!(keys(&s, 99).is_empty());
    }

    #[test]
    fn revoke_deletes_the_keys_in_one_revision() {
        let (_d, s) = store();
        grant(&s, 1, 10).unwrap();
        grant(&s, 2, 10).unwrap();
        put(&s, "x", "plain"); // 2
        leased_put(&s, "b", 1).unwrap(); // 3
        leased_put(&s, "a", 1).unwrap(); // 4
        assert!(matches!(revoke(&s, 3), Err(MvccError::LeaseNotFound)));
        // No keys: no revision, no events.
        let events = revoke(&s, 2).unwrap();
        assert!(events.is_empty());
        assert_eq!(s.current_revision(), 4);
        let events = revoke(&s, 1).unwrap();
        assert_eq!(s.current_revision(), 5);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].revision, 5);
        let deleted: Vec<_> = events[0]
            .events
            .iter()
            .map(|e| {
                assert_eq!(e.r#type, EventType::Delete as i32);
                assert_eq!(e.prev_kv.as_ref().unwrap().lease, 1);
                e.kv.as_ref().unwrap().key.clone()
            })
            .collect();
        assert_eq!(deleted, vec![b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(get(&s, "a"), None);
        assert_eq!(get(&s, "x").unwrap().value, b"plain");
        assert!(s.leases().unwrap().is_empty());
        assert!(keys(&s, 1).is_empty());
        assert!(matches!(revoke(&s, 1), Err(MvccError::LeaseNotFound)));
    }

    #[test]
    fn grant_and_revoke_inside_one_batch_and_abort() {
        let (_d, s) = store();
        let mut b = s.begin_write().unwrap();
        b.lease_grant(5, 10).unwrap();
        let mut req = put_req("k", "v");
        req.lease = 5;
        b.put(&req, &GrantedLeases).unwrap();
        b.lease_revoke(5).unwrap();
        assert!(matches!(
            b.put(&req, &GrantedLeases),
            Err(MvccError::LeaseNotFound)
        ));
        b.lease_grant(5, 20).unwrap();
        drop(b); // aborted: nothing of it stays
        assert!(s.leases().unwrap().is_empty());
        assert_eq!(s.current_revision(), 1);
        grant(&s, 5, 10).unwrap();
        leased_put(&s, "k", 5).unwrap();
        assert_eq!(keys(&s, 5), vec!["k"]);
    }

    #[test]
    fn txn_lease_checks_and_attachments() {
        let (_d, s) = store();
        grant(&s, 1, 10).unwrap();
        let op = |k: &str, lease: i64| RequestOp {
            request: Some(Request::RequestPut({
                let mut p = put_req(k, "v");
                p.lease = lease;
                p
            })),
        };
        let t = TxnRequest {
            compare: vec![],
            success: vec![op("a", 1), op("b", 1)],
            failure: vec![op("c", 42)],
        };
        let mut b = s.begin_write().unwrap();
        b.txn(&t, &GrantedLeases).unwrap();
        // The failure branch's unknown lease is not checked; a nested one on the path is.
        let bad = TxnRequest {
            compare: vec![],
            success: vec![
                op("d", 1),
                RequestOp {
                    request: Some(Request::RequestTxn(TxnRequest {
                        compare: vec![],
                        success: vec![op("e", 42)],
                        failure: vec![],
                    })),
                },
            ],
            failure: vec![],
        };
        assert!(matches!(
            b.txn(&bad, &GrantedLeases),
            Err(MvccError::LeaseNotFound)
        ));
        b.commit(false).unwrap();
        assert_eq!(keys(&s, 1), vec!["a", "b"]);
        assert!(get(&s, "d").is_none());
        // A txn that puts a key and deletes it in one revision leaves it detached.
        let t = TxnRequest {
            compare: vec![],
            success: vec![
                op("f", 1),
                RequestOp {
                    request: Some(Request::RequestDeleteRange(del_req("f", ""))),
                },
            ],
            failure: vec![],
        };
        let mut b = s.begin_write().unwrap();
        b.txn(&t, &GrantedLeases).unwrap();
        b.commit(false).unwrap();
        assert_eq!(keys(&s, 1), vec!["a", "b"]);
    }
}
