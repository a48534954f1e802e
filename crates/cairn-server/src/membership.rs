//! Member and cluster identities, derived exactly as etcd derives them so that ids match what
//! etcd would compute for the same flags, and a member of a different cluster is recognised;
//! and the live membership: every member as applied from the raft log so far (kept in the
//! backend's `members` table, mirrored in memory for the services and the peer transport).

use cairn_api::etcdserverpb;
use cairn_mvcc::{MvccError, Store};
use prost::Message as _;
use sha1::{Digest, Sha1};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::RwLock;
use tokio::sync::watch;

/// One member of the cluster as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Raft and member id.
    pub id: u64,
    /// `--name`.
    pub name: String,
    /// Peer URLs, sorted.
    pub peer_urls: Vec<String>,
    /// Advertised client URLs (known for this member only until members publish theirs).
    pub client_urls: Vec<String>,
    /// Learners receive the log but do not vote.
    pub is_learner: bool,
}

/// etcd's member id: SHA-1 over the sorted peer URLs concatenated, then the cluster token,
/// then (for members added at runtime) the Unix time in seconds as decimal text; the first
/// eight bytes, big endian.
pub fn member_id(peer_urls: &[String], token: &str, added_at_unix: Option<i64>) -> u64 {
    let mut urls: Vec<&str> = peer_urls.iter().map(String::as_str).collect();
    urls.sort_unstable();
    let mut h = Sha1::new();
    for u in urls {
        h.update(u.as_bytes());
    }
    h.update(token.as_bytes());
    if let Some(t) = added_at_unix {
        h.update(t.to_string().as_bytes());
    }
    first_u64(&h.finalize())
}

/// etcd's cluster id: SHA-1 over the sorted member ids as 8-byte big-endian words; the first
/// eight bytes, big endian.
pub fn cluster_id(member_ids: &[u64]) -> u64 {
    let mut ids = member_ids.to_vec();
    ids.sort_unstable();
    let mut h = Sha1::new();
    for id in ids {
        h.update(id.to_be_bytes());
    }
    first_u64(&h.finalize())
}

fn first_u64(digest: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(b)
}

impl Member {
    /// The wire form etcd's Cluster service returns.
    pub fn to_proto(&self) -> etcdserverpb::Member {
        etcdserverpb::Member {
            id: self.id,
            name: self.name.clone(),
            peer_ur_ls: self.peer_urls.clone(),
            client_ur_ls: self.client_urls.clone(),
            is_learner: self.is_learner,
        }
    }

    /// From the wire form.
    pub fn from_proto(m: etcdserverpb::Member) -> Member {
        Member {
            id: m.id,
            name: m.name,
            peer_urls: m.peer_ur_ls,
            client_urls: m.client_ur_ls,
            is_learner: m.is_learner,
        }
    }

    /// The bytes stored in the backend and carried in ConfChange contexts.
    pub fn encode(&self) -> Vec<u8> {
        self.to_proto().encode_to_vec()
    }

    /// Decodes [`encode`](Self::encode)'s bytes.
    pub fn decode(bytes: &[u8]) -> Option<Member> {
        etcdserverpb::Member::decode(bytes)
            .ok()
            .map(Member::from_proto)
    }
}

/// Every member and every removed id, at some applied index.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MembershipState {
    /// Current members by id.
    pub members: BTreeMap<u64, Member>,
    /// Ids removed from the cluster; they may never come back.
    pub removed: BTreeSet<u64>,
}

impl MembershipState {
    /// Reads the membership the backend holds.
    pub fn load(store: &Store) -> Result<MembershipState, MvccError> {
        let mut state = MembershipState::default();
        for (id, bytes) in store.members()? {
            match Member::decode(&bytes) {
                Some(m) => {
                    state.members.insert(id, m);
                }
                None => {
                    tracing::error!(member_id = %format!("{id:x}"), "undecodable member record ignored")
                }
            }
        }
        state.removed = store.removed_members()?.into_iter().collect();
        Ok(state)
    }

    /// The member whose (sorted) peer URLs are exactly `urls`.
    pub fn by_peer_urls(&self, urls: &[String]) -> Option<&Member> {
        let mut want = urls.to_vec();
        want.sort();
        self.members.values().find(|m| {
            let mut have = m.peer_urls.clone();
            have.sort();
            have == want
        })
    }

    /// The voting members' ids.
    pub fn voter_ids(&self) -> Vec<u64> {
        self.members
            .values()
            .filter(|m| !m.is_learner)
            .map(|m| m.id)
            .collect()
    }

    /// Voting members.
    pub fn voters(&self) -> usize {
        self.members.values().filter(|m| !m.is_learner).count()
    }

    /// Voting members other than `except` that have started (published their attributes),
    /// as etcd's `IsStarted`.
    pub fn started_voters_except(&self, except: u64) -> usize {
        self.members
            .values()
            .filter(|m| !m.is_learner && !m.name.is_empty() && m.id != except)
            .count()
    }
}

/// The live membership, shared by the apply thread (the only writer), the services and the
/// peer transport.
pub struct Membership {
    state: RwLock<MembershipState>,
    changed: watch::Sender<u64>,
}

impl Membership {
    /// Starts from `state`.
    pub fn new(state: MembershipState) -> Membership {
        Membership {
            state: RwLock::new(state),
            changed: watch::channel(0).0,
        }
    }

    /// A copy of the current state.
    pub fn state(&self) -> MembershipState {
        self.state
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// One member.
    pub fn get(&self, id: u64) -> Option<Member> {
        self.state
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .members
            .get(&id)
            .cloned()
    }

    /// Whether `id` was removed from the cluster.
    pub fn is_removed(&self, id: u64) -> bool {
        self.state
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .removed
            .contains(&id)
    }

    /// Every member, by id.
    pub fn list(&self) -> Vec<Member> {
        self.state
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .members
            .values()
            .cloned()
            .collect()
    }

    /// Replaces the state (after an apply batch or a snapshot install) and notifies watchers.
    pub fn replace(&self, state: MembershipState) {
        *self
            .state
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = state;
        self.changed.send_modify(|v| *v += 1);
    }

    /// Notified on every change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ids a default `etcd` prints: member 8e9e05c52164694d in cluster cdf818194e3a8c32.
    #[test]
    fn default_single_member_ids_match_etcd() {
        let id = member_id(&["http://localhost:2380".to_string()], "etcd-cluster", None);
        assert_eq!(format!("{id:x}"), "8e9e05c52164694d");
        assert_eq!(format!("{:x}", cluster_id(&[id])), "cdf818194e3a8c32");
    }

    #[test]
    fn member_round_trips_and_finds_by_urls() {
        let m = Member {
            id: 7,
            name: "a".into(),
            peer_urls: vec!["http://b:1".into(), "http://a:1".into()],
            client_urls: vec!["http://a:2".into()],
            is_learner: true,
        };
        assert_eq!(Member::decode(&m.encode()), Some(m.clone()));
        let mut st = MembershipState::default();
        st.members.insert(7, m);
        assert_eq!(
            st.by_peer_urls(&["http://a:1".into(), "http://b:1".into()])
                .map(|m| m.id),
            Some(7)
        );
        assert!(st.by_peer_urls(&["http://a:1".into()]).is_none());
        assert_eq!(st.voters(), 0);
    }

    #[test]
    fn url_order_does_not_matter() {
        let a = member_id(&["http://b:2380".into(), "http://a:2380".into()], "t", None);
        let b = member_id(&["http://a:2380".into(), "http://b:2380".into()], "t", None);
        assert_eq!(a, b);
        assert_ne!(
            a,
            member_id(&["http://a:2380".into(), "http://b:2380".into()], "u", None)
        );
    }
}
