//! Cluster membership in the backend, written by the apply thread in the same transaction as
//! the entries that change it, so a member's view of the cluster always matches its applied
//! index (and travels with a snapshot of the store).
//!
//! | table             | key       | value                                   |
//! |-------------------|-----------|-----------------------------------------|
//! | `members`         | member id | the member, encoded by the server       |
//! | `removed_members` | member id | `()`                                    |
//!
//! The member bytes are opaque here. Membership is not part of the keyspace: its writes never
//! take a revision and produce no watch events. An id, once in `removed_members`, stays there
//! (etcd refuses to re-add a removed id; that check is the server's).

use redb::{ReadableTable, TableDefinition};

use crate::batch::WriteBatch;
use crate::error::{Context, MvccError};
use crate::store::Store;

/// Current members: id → encoded member.
pub(crate) const MEMBERS: TableDefinition<u64, &[u8]> = TableDefinition::new("members");
/// Ids of removed members.
pub(crate) const REMOVED_MEMBERS: TableDefinition<u64, ()> =
    TableDefinition::new("removed_members");

impl WriteBatch<'_> {
    /// Adds member `id`, or replaces its encoding (`encoded` is opaque to the store). Never a
    /// new revision. It does not clear `id` from the removed members.
    pub fn put_member(&mut self, id: u64, encoded: &[u8]) -> Result<(), MvccError> {
        self.with_wtx(|wtx| {
            wtx.open_table(MEMBERS)
                .ctx("opening members")?
                .insert(id, encoded)
                .ctx("writing a member")?;
            Ok(())
        })
    }

    /// Removes member `id` (if present) and records `id` as removed. Never a new revision.
    pub fn remove_member(&mut self, id: u64) -> Result<(), MvccError> {
        self.with_wtx(|wtx| {
            wtx.open_table(MEMBERS)
                .ctx("opening members")?
                .remove(id)
                .ctx("removing a member")?;
            wtx.open_table(REMOVED_MEMBERS)
                .ctx("opening removed_members")?
                .insert(id, ())
                .ctx("recording a removed member")?;
            Ok(())
        })
    }
}

impl Store {
    /// Every member as `(id, encoded member)`, in id order, as of the last commit.
    pub fn members(&self) -> Result<Vec<(u64, Vec<u8>)>, MvccError> {
        let rtx = self.read_txn()?;
        let table = rtx.open_table(MEMBERS).ctx("opening members")?;
        let mut out = Vec::new();
        for entry in table.iter().ctx("reading members")? {
            let (k, v) = entry.ctx("reading members")?;
            out.push((k.value(), v.value().to_vec()));
        }
        Ok(out)
    }

    /// The ids of every removed member, ascending, as of the last commit.
    pub fn removed_members(&self) -> Result<Vec<u64>, MvccError> {
        let rtx = self.read_txn()?;
        let table = rtx
            .open_table(REMOVED_MEMBERS)
            .ctx("opening removed_members")?;
        let mut out = Vec::new();
        for entry in table.iter().ctx("reading removed_members")? {
            out.push(entry.ctx("reading removed_members")?.0.value());
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use crate::testutil::*;

    #[test]
    fn put_remove_and_reload() {
        let (dir, s) = store();
        assert!(s.members().unwrap().is_empty());
        assert!(s.removed_members().unwrap().is_empty());
        put(&s, "a", "1");
        let mut b = s.begin_write().unwrap();
        b.put_member(30, b"m30").unwrap();
        b.put_member(10, b"m10").unwrap();
        b.put_member(20, b"m20").unwrap();
        b.put_member(10, b"m10 again").unwrap();
        assert_eq!(b.revision(), 2, "member writes take no revision");
        assert!(b.commit(false).unwrap().is_empty(), "and emit no events");
        assert_eq!(s.current_revision(), 2);
        assert_eq!(
            s.members().unwrap(),
            vec![
                (10, b"m10 again".to_vec()),
                (20, b"m20".to_vec()),
                (30, b"m30".to_vec())
            ]
        );
        let mut b = s.begin_write().unwrap();
        b.remove_member(20).unwrap();
        b.remove_member(99).unwrap(); // not a member: still recorded as removed
        assert!(b.commit(false).unwrap().is_empty());
        assert_eq!(
            s.members().unwrap(),
            vec![(10, b"m10 again".to_vec()), (30, b"m30".to_vec())]
        );
        assert_eq!(s.removed_members().unwrap(), vec![20, 99]);
        // A dropped batch writes nothing.
        let mut b = s.begin_write().unwrap();
        b.remove_member(10).unwrap();
        drop(b);
        assert_eq!(s.members().unwrap().len(), 2);
        drop(s); // a clean close keeps the non-durable commits
        let s = open_at(&dir);
        assert_eq!(
            s.members().unwrap(),
            vec![(10, b"m10 again".to_vec()), (30, b"m30".to_vec())]
        );
        assert_eq!(s.removed_members().unwrap(), vec![20, 99]);
        assert_eq!(s.current_revision(), 2);
    }

    #[test]
    fn a_file_from_before_members_gets_the_tables() {
        let (dir, s) = store();
        put(&s, "a", "1");
        let db = s.db();
        let wtx = db.begin_write().unwrap();
        wtx.delete_table(super::MEMBERS).unwrap();
        wtx.delete_table(super::REMOVED_MEMBERS).unwrap();
        wtx.commit().unwrap();
        drop(db);
        drop(s);
        let s = open_at(&dir);
        assert!(s.members().unwrap().is_empty());
        assert!(s.removed_members().unwrap().is_empty());
        let mut b = s.begin_write().unwrap();
        b.put_member(1, b"one").unwrap();
        b.commit(true).unwrap();
        assert_eq!(s.members().unwrap(), vec![(1, b"one".to_vec())]);
        assert_eq!(get(&s, "a").unwrap().value, b"1");
    }
}
