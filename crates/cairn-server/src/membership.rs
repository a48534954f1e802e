//! Member and cluster identities, derived exactly as etcd derives them so that ids match what
//! etcd would compute for the same flags, and a member of a different cluster is recognised.

use sha1::{Digest, Sha1};

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
