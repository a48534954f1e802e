//! Spawned cairn clusters of 1 or 3 members with a fault proxy in front of every member's peer
//! listener.
//!
//! Members are real `cairn` processes ([`cairn_tests::cluster`]: their own ports, data dir
//! and log file, SIGKILLed when dropped). Member `i` listens on its real peer port and
//! advertises proxy `i`'s address, so every peer connection *into* `i` passes through proxy
//! `i` (see [`cairn_tests::proxy`] for what each proxy fault does). Clients talk to the
//! members' client ports directly.
//!
//! Every wait here is bounded and polls a condition; nothing blocks a tokio worker for long
//! (the process operations it calls are quick: spawn, kill, signal).

use anyhow::{anyhow, bail, ensure, Context, Result};
use cairn_tests::cluster::{Cluster, Member};
use cairn_tests::proxy::Proxy;
use cairn_tests::Kind;
use etcd_client::{Client, ConnectOptions};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Heartbeat interval given to members (ms), as the e2e harness.
pub const HEARTBEAT_MS: u64 = 50;
/// Election timeout given to members (ms): faults that must outlast it (SIGSTOP) do.
pub const ELECTION_MS: u64 = 500;
/// How long a member may take to become ready after a (re)start.
pub const READY_LIMIT: Duration = Duration::from_secs(30);
/// How long one admin request (status, hash, member changes) may take.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(3);

/// What to start.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// 1 or 3.
    pub members: usize,
    /// Flags every member gets.
    pub flags: Vec<String>,
    /// Environment variables per member index (e.g. `CAIRN_FAILPOINTS`), for the first start.
    pub env: Vec<Vec<(String, String)>>,
    /// Environment variables every member gets on every start (e.g. `CAIRN_PLANTED_BUG`).
    pub env_all: Vec<(String, String)>,
}

impl ClusterSpec {
    /// `members` members with default flags.
    pub fn new(members: usize) -> Self {
        ClusterSpec {
            members,
            flags: Vec::new(),
            env: vec![Vec::new(); members],
            env_all: Vec::new(),
        }
    }
}

/// A running test cluster.
pub struct TestCluster {
    inner: Cluster,
    proxies: Vec<Proxy>,
    /// Member ids by index (a replaced member gets a new one).
    ids: Vec<u64>,
    /// An admin client per member (status, hash, member changes).
    admin: Vec<Client>,
    /// Members SIGSTOPped and not yet continued.
    stopped: Vec<bool>,
}

/// Connects an `etcd-client` to one endpoint; connecting is lazy, so this never waits on the
/// member.
pub async fn connect(endpoint: &str) -> Result<Client> {
    let opts = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(1))
        .with_keep_alive(Duration::from_secs(1), Duration::from_secs(2));
    Ok(Client::connect([endpoint], Some(opts)).await?)
}

/// `GET /health` over HTTP/1.1 on `addr`: whether the member says it is healthy.
pub async fn healthy(addr: &str) -> bool {
    let probe = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        let req = format!("GET /health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.ok()?;
        let text = String::from_utf8_lossy(&raw);
        Some(text.starts_with("HTTP/1.1 200") && text.contains("true"))
    };
    tokio::time::timeout(Duration::from_secs(1), probe)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

impl TestCluster {
    /// Starts the members behind their proxies and waits until all are ready and agree on a
    /// leader. Retried on fresh ports if a port turned out to be taken.
    pub async fn start(spec: &ClusterSpec) -> Result<TestCluster> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match Self::try_start(spec).await {
                Err(e)
                    if attempt < 3
                        && format!("{e:#}")
                            .to_ascii_lowercase()
                            .contains("address already in use") => {}
                other => return other,
            }
        }
    }

    async fn try_start(spec: &ClusterSpec) -> Result<TestCluster> {
        ensure!(spec.members > 0, "a cluster needs members");
        let flags = spec.flags.clone();
        let mut inner = Cluster::create(Kind::Cairn, spec.members, |_| {
            let mut f = vec![
                format!("--heartbeat-interval={HEARTBEAT_MS}"),
                format!("--election-timeout={ELECTION_MS}"),
            ];
            f.extend(flags.iter().cloned());
            f
        })?;
        let mut proxies = Vec::new();
        for i in 0..spec.members {
            let target: SocketAddr = inner.member(i).peer_addr.parse()?;
            let proxy = Proxy::start(target).await?;
            let m = inner.member_mut(i);
            m.set_advertise_peer_addr(Some(&proxy.addr().to_string()))?;
            for (k, v) in spec.env.get(i).into_iter().flatten() {
                m.set_env(k, Some(v));
            }
            for (k, v) in &spec.env_all {
                m.set_env(k, Some(v));
            }
            proxies.push(proxy);
        }
        inner.spawn_all()?;
        let mut admin = Vec::new();
        for i in 0..spec.members {
            admin.push(connect(&inner.member(i).endpoint()).await?);
        }
        let mut c = TestCluster {
            inner,
            proxies,
            ids: vec![0; spec.members],
            admin,
            stopped: vec![false; spec.members],
        };
        for i in 0..spec.members {
            c.wait_ready(i, READY_LIMIT).await?;
        }
        for i in 0..spec.members {
            c.ids[i] = c.status(i).await?.0;
        }
        c.wait_leader(READY_LIMIT).await?;
        Ok(c)
    }

    /// How many members.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether there are no members.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Member `i`'s name.
    pub fn name(&self, i: usize) -> String {
        self.inner.member(i).name.clone()
    }

    /// Member `i`'s client URL.
    pub fn endpoint(&self, i: usize) -> String {
        self.inner.member(i).endpoint()
    }

    /// Member `i`'s id.
    pub fn id(&self, i: usize) -> u64 {
        self.ids[i]
    }

    /// Member `i`'s data dir.
    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.inner.member(i).data_dir()
    }

    /// Member `i`'s WAL directory.
    pub fn wal_dir(&self, i: usize) -> PathBuf {
        self.data_dir(i).join("member").join("wal")
    }

    /// Member `i`'s log file.
    pub fn log_path(&self, i: usize) -> PathBuf {
        self.inner.member(i).log_path().to_path_buf()
    }

    /// Member `i`'s process.
    pub fn member_mut(&mut self, i: usize) -> &mut Member {
        self.inner.member_mut(i)
    }

    /// Member `i`'s proxy (every peer connection into `i`).
    pub fn proxy(&self, i: usize) -> &Proxy {
        &self.proxies[i]
    }

    /// Whether member `i`'s process is running (SIGSTOPped counts as running).
    pub fn is_running(&mut self, i: usize) -> bool {
        self.inner.member_mut(i).is_running()
    }

    /// How member `i`'s last process exited, if it has and the harness did not kill it.
    pub fn exit_status(&mut self, i: usize) -> Option<ExitStatus> {
        let m = self.inner.member_mut(i);
        if m.is_running() {
            None
        } else {
            m.last_exit()
        }
    }

    /// Member `i`'s id and the leader it knows (0: none), from its status.
    pub async fn status(&self, i: usize) -> Result<(u64, u64, i64)> {
        let mut mc = self.admin[i].maintenance_client();
        let st = tokio::time::timeout(ADMIN_TIMEOUT, mc.status())
            .await
            .map_err(|_| anyhow!("status of {} timed out", self.name(i)))??;
        let h = st
            .header()
            .ok_or_else(|| anyhow!("status without header"))?;
        Ok((h.member_id(), st.leader(), h.revision()))
    }

    /// The leader's index if every running, not stopped member answers and all name the same
    /// leader, which is one of them.
    pub async fn leader(&mut self) -> Result<usize> {
        let up: Vec<usize> = (0..self.len())
            .filter(|&i| !self.stopped[i])
            .filter(|&i| self.inner.member_mut(i).is_running())
            .collect();
        ensure!(!up.is_empty(), "no member is running");
        let mut leaders = Vec::new();
        for &i in &up {
            leaders.push(self.status(i).await?.1);
        }
        let l = leaders[0];
        ensure!(l != 0, "{} has no leader", self.name(up[0]));
        ensure!(
            leaders.iter().all(|&x| x == l),
            "members disagree on the leader: {leaders:x?}"
        );
        self.ids
            .iter()
            .position(|&id| id == l)
            .ok_or_else(|| anyhow!("leader {l:x} is not a member"))
    }

    /// Polls [`TestCluster::leader`] until it answers.
    pub async fn wait_leader(&mut self, limit: Duration) -> Result<usize> {
        let deadline = Instant::now() + limit;
        loop {
            match self.leader().await {
                Ok(l) => return Ok(l),
                Err(e) if Instant::now() > deadline => {
                    bail!("no agreed leader within {limit:?}: {e:#}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// Waits until member `i` is healthy (has a leader and serves clients). Fails at once
    /// if its process exits.
    pub async fn wait_ready(&mut self, i: usize, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        let addr = self.inner.member(i).client_addr.clone();
        loop {
            if !self.inner.member_mut(i).is_running() {
                bail!(
                    "member {} is not running (exit {:?}):\n{}",
                    self.name(i),
                    self.inner.member(i).last_exit(),
                    self.inner.member(i).log_tail(30)
                );
            }
            if healthy(&addr).await {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "member {} not ready after {limit:?}:\n{}",
                    self.name(i),
                    self.inner.member(i).log_tail(30)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILLs member `i` (continuing it first if stopped, so it is reaped at once).
    pub fn kill(&mut self, i: usize) {
        if self.stopped[i] {
            let _ = self.inner.member_mut(i).signal(libc::SIGCONT);
            self.stopped[i] = false;
        }
        self.inner.member_mut(i).kill();
    }

    /// Starts member `i` again on its data dir (without waiting).
    pub fn spawn(&mut self, i: usize) -> Result<()> {
        self.inner.member_mut(i).spawn()
    }

    /// Starts member `i` again and waits until it is ready.
    pub async fn restart(&mut self, i: usize) -> Result<()> {
        self.kill(i);
        self.spawn(i)?;
        self.wait_ready(i, READY_LIMIT).await
    }

    /// SIGSTOPs member `i`.
    pub fn pause(&mut self, i: usize) -> Result<()> {
        self.inner.member_mut(i).signal(libc::SIGSTOP)?;
        self.stopped[i] = true;
        Ok(())
    }

    /// SIGCONTs member `i`.
    pub fn resume(&mut self, i: usize) -> Result<()> {
        if self.stopped[i] {
            self.stopped[i] = false;
            self.inner.member_mut(i).signal(libc::SIGCONT)?;
        }
        Ok(())
    }

    /// Continues every stopped member.
    pub fn resume_all(&mut self) {
        for i in 0..self.len() {
            let _ = self.resume(i);
        }
    }

    /// Cuts member `i` off both ways (a symmetric partition); `swallow` blackholes the
    /// traffic (connections stay up and carry nothing), otherwise connections are refused
    /// and cut.
    pub fn partition(&self, i: usize, swallow: bool) {
        let id = self.ids[i];
        if swallow {
            self.proxies[i].set_blackhole(true);
        } else {
            self.proxies[i].set_blocked(true);
        }
        for (j, p) in self.proxies.iter().enumerate() {
            if j != i {
                if swallow {
                    p.blackhole_source(id, true);
                } else {
                    p.block_source(id, true);
                }
            }
        }
    }

    /// Drops what member `i` receives (`inbound`) or what it sends (not `inbound`), silently.
    pub fn drop_one_way(&self, i: usize, inbound: bool) {
        if inbound {
            self.proxies[i].set_blackhole(true);
        } else {
            let id = self.ids[i];
            for (j, p) in self.proxies.iter().enumerate() {
                if j != i {
                    p.blackhole_source(id, true);
                }
            }
        }
    }

    /// Delays every peer link by `delay` plus up to `jitter`.
    pub fn delay_all(&self, delay: Duration, jitter: Duration) {
        for p in &self.proxies {
            p.set_delay_jitter(delay, jitter);
        }
    }

    /// Makes every peer link cut its connection with probability `chance` per chunk.
    pub fn cut_chance_all(&self, chance: f64) {
        for p in &self.proxies {
            p.set_cut_chance(chance);
        }
    }

    /// Lifts every network fault.
    pub fn heal_network(&self) {
        for p in &self.proxies {
            p.heal();
        }
    }

    /// Removes member `i` from the cluster, wipes its data dir and adds it back as a new
    /// member (same name, ports and proxy; a new id), started with `--initial-cluster-state
    /// existing`; waits until it is ready.
    pub async fn replace(&mut self, i: usize) -> Result<()> {
        ensure!(self.len() > 1, "cannot replace the only member");
        let other = (0..self.len())
            .find(|&j| j != i && !self.stopped[j] && self.inner.member_mut(j).is_running())
            .ok_or_else(|| anyhow!("no other running member"))?;
        let old_id = self.ids[i];
        let cc = self.admin[other].cluster_client();
        retry("member remove", Duration::from_secs(15), || {
            let mut cc = cc.clone();
            async move {
                match cc.member_remove(old_id).await {
                    Ok(_) => Ok(()),
                    // Already removed by an earlier attempt that timed out.
                    Err(e) if e.to_string().contains("member not found") => Ok(()),
                    Err(e) => Err(anyhow!(e)),
                }
            }
        })
        .await?;
        // A removed member stops by itself once it applies its removal; do not wait for it.
        self.kill(i);
        self.inner.member_mut(i).wipe_data_dir()?;
        let url = self.proxies[i].url();
        let added = retry("member add", Duration::from_secs(20), || {
            let mut cc = cc.clone();
            let url = url.clone();
            async move {
                let r = cc.member_add([url], None).await?;
                Ok::<_, anyhow::Error>(r)
            }
        })
        .await?;
        let new = added
            .member()
            .ok_or_else(|| anyhow!("member add answered no member"))?;
        let new_id = new.id();
        let mut names: HashMap<u64, String> = HashMap::new();
        for (j, id) in self.ids.iter().enumerate() {
            names.insert(*id, self.name(j));
        }
        let initial = added
            .member_list()
            .iter()
            .map(|m| {
                let name = if m.id() == new_id {
                    self.name(i)
                } else {
                    names
                        .get(&m.id())
                        .cloned()
                        .unwrap_or_else(|| m.name().to_string())
                };
                format!("{name}={}", m.peer_urls().join(","))
            })
            .collect::<Vec<_>>()
            .join(",");
        self.ids[i] = new_id;
        let m = self.inner.member_mut(i);
        m.set_initial_cluster(&initial, "existing")?;
        m.spawn()?;
        self.wait_ready(i, READY_LIMIT)
            .await
            .context("the replacing member")
    }

    /// Waits until every member is at the same revision with the same HashKV at it; returns
    /// the revision and the hash.
    pub async fn wait_converged(&self, limit: Duration) -> Result<(i64, u32)> {
        let deadline = Instant::now() + limit;
        loop {
            let attempt = async {
                let mut revs = Vec::new();
                for i in 0..self.len() {
                    revs.push(self.status(i).await?.2);
                }
                let rev = revs[0];
                ensure!(revs.iter().all(|&r| r == rev), "revisions differ: {revs:?}");
                let mut hashes = Vec::new();
                for i in 0..self.len() {
                    let mut mc = self.admin[i].maintenance_client();
                    let h = tokio::time::timeout(ADMIN_TIMEOUT, mc.hash_kv(rev))
                        .await
                        .map_err(|_| anyhow!("hash_kv timed out"))??;
                    hashes.push((h.hash(), h.header().map_or(0, |h| h.revision())));
                }
                ensure!(
                    hashes.iter().all(|&(h, _)| h == hashes[0].0),
                    "HashKV at revision {rev} differs: {hashes:?}"
                );
                Ok((rev, hashes[0].0))
            };
            match attempt.await {
                Ok(v) => return Ok(v),
                Err(e) if Instant::now() > deadline => {
                    bail!("members did not converge within {limit:?}: {e:#}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// The last `n` lines of every member's log.
    pub fn logs_tail(&self, n: usize) -> String {
        self.inner.logs_tail(n)
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for i in 0..self.len() {
            self.kill(i);
        }
    }
}

/// Runs `f` until it succeeds, every 200 ms, for up to `limit`; each attempt is bounded by
/// [`ADMIN_TIMEOUT`].
pub async fn retry<T, F, Fut>(what: &str, limit: Duration, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        let err = match tokio::time::timeout(ADMIN_TIMEOUT, f()).await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) => e,
            Err(_) => anyhow!("timed out after {ADMIN_TIMEOUT:?}"),
        };
        if Instant::now() > deadline {
            bail!("{what}: still failing after {limit:?}: {err:#}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
