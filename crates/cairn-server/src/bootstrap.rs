//! Who this member is, decided once per data directory: a member of a new cluster (ids derived
//! from `--initial-cluster` and `--initial-cluster-token` as etcd derives them, and a log
//! started with one ConfChange entry per member), a member joining an existing cluster (its id
//! learnt from the cluster's members over the peer port), or a member restarting (its ids read
//! back from `member/identity`).

use crate::config::{ClusterState, ServerConfig};
use crate::membership::{cluster_id, member_id, Member, MembershipState};
use crate::peer::dial::{DialOptions, PeerDialer};
use crate::server::ServerError;
use cairn_api::cairnpb::{peer_client::PeerClient, MembersRequest, PeerHeader};
use cairn_raft::storage::DiskStorage;
use protobuf::Message as _;
use raft::eraftpb::{ConfChange, ConfChangeType, ConfState, Entry, EntryType};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// This member's identity within its cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    /// Member (and raft) id.
    pub member_id: u64,
    /// Cluster id.
    pub cluster_id: u64,
}

/// What starting needs to know about the cluster.
#[derive(Debug)]
pub struct Prepared {
    /// Ids.
    pub identity: Identity,
    /// This member as configured (name, peer and client URLs).
    pub me: Member,
    /// The membership to use until the backend holds one (a data dir written before members
    /// were stored, or a joining member that has not received the log yet).
    pub initial: MembershipState,
}

fn identity_path(cfg: &ServerConfig) -> PathBuf {
    cfg.data_dir.join("member").join("identity")
}

fn read_identity(path: &Path) -> Result<Option<Identity>, ServerError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(ServerError::Config(format!("{}: {e}", path.display()))),
    };
    let mut member = None;
    let mut cluster = None;
    for line in text.lines() {
        let parse = |v: &str| u64::from_str_radix(v.trim(), 16).ok();
        if let Some(v) = line.strip_prefix("member_id=") {
            member = parse(v);
        } else if let Some(v) = line.strip_prefix("cluster_id=") {
            cluster = parse(v);
        }
    }
    match (member, cluster) {
        (Some(member_id), Some(cluster_id)) => Ok(Some(Identity {
            member_id,
            cluster_id,
        })),
        _ => Err(ServerError::Config(format!(
            "{}: corrupt identity file (expected member_id=<hex> and cluster_id=<hex>)",
            path.display()
        ))),
    }
}

/// Written (and synced, with its directory) before the WAL is bootstrapped, so a WAL never
/// exists without the ids it belongs to.
fn write_identity(path: &Path, id: Identity) -> Result<(), ServerError> {
    let io = |e: std::io::Error| ServerError::Config(format!("{}: {e}", path.display()));
    let tmp = path.with_extension("tmp");
    let text = format!(
        "member_id={:x}\ncluster_id={:x}\n",
        id.member_id, id.cluster_id
    );
    {
        use std::io::Write as _;
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(text.as_bytes()).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    std::fs::rename(&tmp, path).map_err(io)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io)?;
    }
    Ok(())
}

/// This member and the whole initial cluster, with etcd's ids.
pub fn initial_members(cfg: &ServerConfig) -> Result<(Member, Vec<Member>), ServerError> {
    let mut by_name: Vec<(String, Vec<String>)> = Vec::new();
    for (name, url) in &cfg.initial_cluster {
        match by_name.iter_mut().find(|(n, _)| n == name) {
            Some((_, urls)) => urls.push(url.clone()),
            None => by_name.push((name.clone(), vec![url.clone()])),
        }
    }
    let members: Vec<Member> = by_name
        .into_iter()
        .map(|(name, mut peer_urls)| {
            peer_urls.sort();
            Member {
                id: member_id(&peer_urls, &cfg.initial_cluster_token, None),
                client_urls: if name == cfg.name {
                    cfg.advertise_client_urls.clone()
                } else {
                    vec![]
                },
                name,
                peer_urls,
                is_learner: false,
            }
        })
        .collect();
    let Some(me) = members.iter().find(|m| m.name == cfg.name).cloned() else {
        return Err(ServerError::Config(format!(
            "couldn't find local name {:?} in the initial cluster configuration",
            cfg.name
        )));
    };
    let mut advertised = cfg.initial_advertise_peer_urls.clone();
    advertised.sort();
    if advertised != me.peer_urls {
        return Err(ServerError::Config(format!(
            "--initial-cluster has {}={} but missing from --initial-advertise-peer-urls={}",
            me.name,
            me.peer_urls.join(","),
            cfg.initial_advertise_peer_urls.join(",")
        )));
    }
    let mut seen = std::collections::BTreeSet::new();
    for m in &members {
        for u in &m.peer_urls {
            if !seen.insert(u.clone()) {
                return Err(ServerError::Config(format!(
                    "--initial-cluster has duplicate url {u}"
                )));
            }
        }
    }
    Ok((me, members))
}

/// The first entries of a new cluster's log, identical on every member: one committed
/// `AddNode` per member, in id order, at term 1. A member that joins later and replays the log
/// from index 1 learns the whole membership from them.
pub fn bootstrap_entries(members: &[Member]) -> Vec<Entry> {
    let mut sorted: Vec<&Member> = members.iter().collect();
    sorted.sort_by_key(|m| m.id);
    sorted
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            let mut cc = ConfChange::default();
            cc.set_change_type(ConfChangeType::AddNode);
            cc.node_id = m.id;
            cc.context = m.encode().into();
            let mut e = Entry::default();
            e.set_entry_type(EntryType::EntryConfChange);
            e.index = i as u64 + 1;
            e.term = 1;
            e.data = cc.write_to_bytes().expect("encoding a ConfChange").into();
            e
        })
        .collect()
}

/// Decides this member's identity, bootstrapping a fresh WAL for a new cluster.
pub async fn prepare(
    cfg: &ServerConfig,
    storage: &DiskStorage,
    fresh_wal: bool,
    applied: u64,
    dialer: &PeerDialer,
) -> Result<Prepared, ServerError> {
    let path = identity_path(cfg);
    if !fresh_wal {
        if let Some(identity) = read_identity(&path)? {
            // A restart: the flags that describe the initial cluster no longer matter (they
            // may be stale after `member update`), as etcd ignores them.
            let me = Member {
                id: identity.member_id,
                name: cfg.name.clone(),
                peer_urls: cfg.initial_advertise_peer_urls.clone(),
                client_urls: cfg.advertise_client_urls.clone(),
                is_learner: false,
            };
            // Used only while the backend holds no members yet (a crash before the bootstrap
            // entries were applied); flags that do not parse then mean no fallback.
            let initial = initial_members(cfg)
                .map(|(_, members)| MembershipState {
                    members: members.into_iter().map(|m| (m.id, m)).collect(),
                    removed: Default::default(),
                })
                .unwrap_or_default();
            return Ok(Prepared {
                identity,
                me,
                initial,
            });
        }
    }
    let (me, members) = initial_members(cfg)?;
    let initial = MembershipState {
        members: members.iter().map(|m| (m.id, m.clone())).collect(),
        removed: Default::default(),
    };
    if !fresh_wal {
        let identity = match read_identity(&path)? {
            Some(id) => id,
            None => {
                // A data dir from before identities were recorded: a single member whose ids
                // come from its flags, as they did then.
                let id = Identity {
                    member_id: me.id,
                    cluster_id: cluster_id(&members.iter().map(|m| m.id).collect::<Vec<_>>()),
                };
                write_identity(&path, id)?;
                id
            }
        };
        let me = Member {
            id: identity.member_id,
            ..me
        };
        return Ok(Prepared {
            identity,
            me,
            initial,
        });
    }
    if applied > 0 {
        return Err(ServerError::Config(format!(
            "the backend {} has applied raft index {applied} but the WAL in {} is empty; refusing to start with a lost log",
            cfg.backend_path().display(),
            cfg.wal_path().display()
        )));
    }
    match cfg.initial_cluster_state {
        ClusterState::New => {
            let identity = Identity {
                member_id: me.id,
                cluster_id: cluster_id(&members.iter().map(|m| m.id).collect::<Vec<_>>()),
            };
            write_identity(&path, identity)?;
            storage.bootstrap_log(
                ConfState {
                    voters: members.iter().map(|m| m.id).collect(),
                    ..Default::default()
                },
                &bootstrap_entries(&members),
            )?;
            tracing::info!(
                member_id = %format!("{:x}", me.id),
                members = members.len(),
                "started a new cluster"
            );
            Ok(Prepared {
                identity,
                me,
                initial,
            })
        }
        ClusterState::Existing => {
            let (cid, existing) = fetch_members(cfg, &me, dialer).await?;
            let Some(found) = existing.by_peer_urls(&me.peer_urls).cloned() else {
                return Err(ServerError::Config(format!(
                    "error validating peerURLs: member with peer URLs {} is not in the existing cluster {cid:x}; add it with `etcdctl member add` first",
                    me.peer_urls.join(",")
                )));
            };
            let identity = Identity {
                member_id: found.id,
                cluster_id: cid,
            };
            write_identity(&path, identity)?;
            tracing::info!(
                member_id = %format!("{:x}", found.id),
                cluster_id = %format!("{cid:x}"),
                "joining an existing cluster"
            );
            let me = Member {
                id: found.id,
                is_learner: found.is_learner,
                ..me
            };
            Ok(Prepared {
                identity,
                me,
                initial: existing,
            })
        }
    }
}

/// `--force-new-cluster` on an existing data dir (etcd's semantics): entries not known to be
/// committed are dropped, and committed `RemoveNode` entries for every other member are
/// appended, so the log itself records that this member became the only one; raft's
/// configuration becomes this member alone.
pub fn force_new_cluster(
    storage: &DiskStorage,
    me: u64,
    known_members: impl IntoIterator<Item = u64>,
) -> Result<(), ServerError> {
    let cs = storage.conf_state();
    let mut others: std::collections::BTreeSet<u64> = cs
        .voters
        .iter()
        .chain(cs.learners.iter())
        .copied()
        .chain(known_members)
        .collect();
    others.remove(&me);
    let mut hs = storage.hard_state();
    let entries: Vec<Entry> = others
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let mut cc = ConfChange::default();
            cc.set_change_type(ConfChangeType::RemoveNode);
            cc.node_id = *id;
            let mut e = Entry::default();
            e.set_entry_type(EntryType::EntryConfChange);
            e.index = hs.commit + 1 + i as u64;
            e.term = hs.term;
            e.data = cc.write_to_bytes().expect("encoding a ConfChange").into();
            e
        })
        .collect();
    if let Some(last) = entries.last() {
        storage.append(&entries)?;
        hs.commit = last.index;
        storage.set_hard_state(&hs)?;
    }
    storage.set_conf_state(&ConfState {
        voters: vec![me],
        ..Default::default()
    })?;
    storage.sync()?;
    tracing::warn!(
        member_id = %format!("{me:x}"),
        removed = others.len(),
        commit = hs.commit,
        "forcing restart as a new single-member cluster (--force-new-cluster)"
    );
    Ok(())
}

/// Asks the other members listed in `--initial-cluster` for the cluster's membership.
async fn fetch_members(
    cfg: &ServerConfig,
    me: &Member,
    dialer: &PeerDialer,
) -> Result<(u64, MembershipState), ServerError> {
    let urls: Vec<&String> = cfg
        .initial_cluster
        .iter()
        .filter(|(name, url)| name != &me.name && !me.peer_urls.contains(url))
        .map(|(_, url)| url)
        .collect();
    if urls.is_empty() {
        return Err(ServerError::Config(
            "--initial-cluster-state existing needs the other members' peer URLs in --initial-cluster".into(),
        ));
    }
    let mut errors = Vec::new();
    for url in urls {
        match members_from(dialer, url).await {
            Ok(found) => return Ok(found),
            Err(e) => errors.push(format!("{url}: {e}")),
        }
    }
    Err(ServerError::Config(format!(
        "cannot fetch cluster info from peer urls: {}",
        errors.join("; ")
    )))
}

async fn members_from(dialer: &PeerDialer, url: &str) -> Result<(u64, MembershipState), String> {
    let opts = DialOptions {
        request_timeout: Some(Duration::from_secs(5)),
        ..DialOptions::now(Duration::from_secs(2))
    };
    let channel = dialer.channel(url, opts).await.map_err(|e| e.to_string())?;
    let resp = PeerClient::new(channel)
        .members(MembersRequest {
            header: Some(PeerHeader::default()),
        })
        .await
        .map_err(|s| s.message().to_string())?
        .into_inner();
    let state = MembershipState {
        members: resp
            .members
            .into_iter()
            .map(|m| (m.id, Member::from_proto(m)))
            .collect(),
        removed: resp.removed.into_iter().collect(),
    };
    Ok((resp.cluster_id, state))
}
