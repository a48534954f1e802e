//! Network faults between the members of in-process 3-member clusters: an isolated leader, an
//! isolated follower, slow links, and a follower so far behind that it must catch up from a
//! snapshot.
//!
//! Each member runs in this process (`cairn_server::start`) with its peer traffic going through
//! a [`Proxy`] (see `cairn_tests::proxy` for what each fault cuts). [`Cluster::isolate`] is a
//! symmetric partition: nothing reaches the member and nothing it sends reaches anyone, while
//! the other two still talk to each other. Clients are `etcd-client` connections to each
//! member's client URL (never proxied).
//!
//! Members run with a 50 ms heartbeat and a 500 ms election timeout, so the server's request
//! timeout (etcd's 5 s + 2 election timeouts) is 6 s: requests that must fail take that long,
//! and the tests overlap them with other work.
//!
//! A blocked proxy refuses connections (its port is closed) rather than accepting and closing
//! them, as a member that is down does (see `cairn_tests::proxy`).

use cairn_server::core::Core;
use cairn_server::{RunningServer, ServerConfig};
use cairn_tests::proxy::Proxy;
use etcd_client::{Client, GetOptions, KvClient};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

const HEARTBEAT: Duration = Duration::from_millis(50);
const ELECTION: Duration = Duration::from_millis(500);
/// How long a new cluster may take to start and elect a leader.
const START_LIMIT: Duration = Duration::from_secs(30);
/// How long the majority may take to elect a leader after losing the old one: a few election
/// timeouts (the followers wait out one, randomized up to two, then pre-vote and vote).
const FAILOVER_LIMIT: Duration = Duration::from_millis(8 * 500);
/// How long a healed member may take to catch up and the cluster to agree.
const CONVERGE_LIMIT: Duration = Duration::from_secs(20);
/// How long past the server's request timeout a request that must fail may take to fail.
const SLACK: Duration = Duration::from_secs(3);

/// Every port [`fresh_port`] handed out in this process.
static PORTS_GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A free port on 127.0.0.1 not handed out before in this process (the kernel readily gives a
/// just-released port out again, and the tests run concurrently).
fn fresh_port() -> u16 {
    let mut given = PORTS_GIVEN.lock().unwrap_or_else(PoisonError::into_inner);
    let given = given.get_or_insert_with(HashSet::new);
    let mut held = Vec::new();
    loop {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("binding an ephemeral port");
        let port = l.local_addr().expect("bound address").port();
        held.push(l);
        if given.insert(port) {
            return port;
        }
    }
}

/// One in-process member.
struct Member {
    name: String,
    /// Member (and raft) id.
    id: u64,
    /// Every peer connection into this member goes through it.
    proxy: Proxy,
    server: Option<RunningServer>,
    client: Client,
    /// The request timeout the server applies.
    request_timeout: Duration,
    _dir: tempfile::TempDir,
}

/// A cluster of in-process members. Dropping it (also when a test panics) stops every
/// member's raft loop; [`Cluster::shutdown`] stops them cleanly.
struct Cluster {
    members: Vec<Member>,
}

impl Cluster {
    /// Starts `n` members; `proxy_setup` runs on each proxy before any member starts,
    /// `tweak` on each member's configuration.
    async fn start(
        n: usize,
        proxy_setup: impl Fn(&Proxy),
        tweak: impl Fn(&mut ServerConfig),
    ) -> Self {
        let token = format!("cluster-faults-{}-{}", std::process::id(), fresh_port());
        let mut proxies = Vec::new();
        let mut peers = Vec::new();
        for _ in 0..n {
            let peer = SocketAddr::from(([127, 0, 0, 1], fresh_port()));
            let proxy = Proxy::start(peer).await.expect("starting a proxy");
            proxy_setup(&proxy);
            proxies.push(proxy);
            peers.push(peer);
        }
        let names: Vec<String> = (0..n).map(|i| format!("m{i}")).collect();
        let initial_cluster: Vec<(String, String)> = names
            .iter()
            .zip(&proxies)
            .map(|(name, p)| (name.clone(), p.url()))
            .collect();
        let mut starts = Vec::new();
        let mut dirs = Vec::new();
        for i in 0..n {
            let dir = tempfile::Builder::new()
                .prefix("cairn-faults-")
                .tempdir()
                .expect("temp dir");
            let mut cfg = ServerConfig::with_defaults(&names[i], dir.path().join("data"));
            // Client listeners take any free port (bound once the member has a leader, long
            // after a port picked now could have gone to some connection); what they advertise
            // is only displayed.
            cfg.listen_client_urls = vec!["http://127.0.0.1:0".into()];
            cfg.advertise_client_urls = cfg.listen_client_urls.clone();
            cfg.listen_peer_urls = vec![format!("http://{}", peers[i])];
            cfg.initial_advertise_peer_urls = vec![proxies[i].url()];
            cfg.initial_cluster = initial_cluster.clone();
            cfg.initial_cluster_token = token.clone();
            cfg.heartbeat_interval = HEARTBEAT;
            cfg.election_timeout = ELECTION;
            tweak(&mut cfg);
            let request_timeout = cfg.request_timeout();
            // `start` returns once the member has a leader: every member must be starting.
            starts.push((tokio::spawn(cairn_server::start(cfg)), request_timeout));
            dirs.push(dir);
        }
        let mut cluster = Cluster {
            members: Vec::new(),
        };
        let deadline = Instant::now() + START_LIMIT;
        let mut failure = None;
        for (i, ((start, request_timeout), (proxy, dir))) in starts
            .into_iter()
            .zip(proxies.into_iter().zip(dirs))
            .enumerate()
        {
            let abort = start.abort_handle();
            let why = match tokio::time::timeout_at(deadline.into(), start).await {
                Ok(Ok(Ok(server))) => Ok(server),
                Ok(Ok(Err(e))) => Err(e.to_string()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!("no leader within {START_LIMIT:?}")),
            };
            let server = match why {
                Ok(server) => server,
                Err(why) => {
                    abort.abort();
                    failure.get_or_insert(format!("member {} did not start: {why}", names[i]));
                    continue;
                }
            };
            let url = format!("http://{}", server.client_addrs[0]);
            let client = match Client::connect([url], None).await {
                Ok(client) => client,
                Err(e) => {
                    server.core().node.stop();
                    failure.get_or_insert(format!("connecting to {}: {e}", names[i]));
                    continue;
                }
            };
            cluster.members.push(Member {
                name: names[i].clone(),
                id: server.core().member.id,
                proxy,
                server: Some(server),
                client,
                request_timeout,
                _dir: dir,
            });
        }
        if let Some(f) = failure {
            panic!("{f}");
        }
        cluster
    }

    fn core(&self, i: usize) -> &Arc<Core> {
        self.members[i]
            .server
            .as_ref()
            .expect("member is running")
            .core()
    }

    fn kv(&self, i: usize) -> KvClient {
        self.members[i].client.kv_client()
    }

    /// One line per member: who it thinks leads, term, commit, applied, revision.
    fn dump(&self) -> String {
        let mut out = String::new();
        for (i, m) in self.members.iter().enumerate() {
            let c = self.core(i);
            let st = c.node.status();
            out.push_str(&format!(
                "\n  {} id={:x} leader={:x} is_leader={} term={} commit={} applied={} revision={} proxy={:?}",
                m.name,
                m.id,
                st.leader_id(),
                st.is_leader(),
                st.term(),
                st.commit_index(),
                c.applied_index(),
                c.store.current_revision(),
                m.proxy.stats(),
            ));
        }
        out
    }

    /// The member of `among` that leads, if every member of `among` agrees it does.
    fn leader_among(&self, among: &[usize]) -> Option<usize> {
        let l = *among
            .iter()
            .find(|&&i| self.core(i).node.status().is_leader())?;
        among
            .iter()
            .all(|&i| self.core(i).node.status().leader_id() == self.members[l].id)
            .then_some(l)
    }

    /// Waits until `among` agree on a leader among themselves.
    async fn wait_leader(&self, among: &[usize], limit: Duration) -> usize {
        self.wait(
            &format!("a leader agreed by {among:?}"),
            limit,
            async || self.leader_among(among),
        )
        .await
    }

    /// Polls `check` every 20 ms until it gives a value; panics with the cluster's state after
    /// `limit`.
    async fn wait<T>(
        &self,
        what: &str,
        limit: Duration,
        mut check: impl AsyncFnMut() -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(v) = check().await {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {limit:?} waiting for {what}; state:{}",
                self.dump()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Cuts member `i` off from everyone, both ways; the others still reach each other.
    fn isolate(&self, i: usize) {
        self.members[i].proxy.set_blocked(true);
        for (j, m) in self.members.iter().enumerate() {
            if j != i {
                m.proxy.block_source(self.members[i].id, true);
            }
        }
    }

    /// Lifts every fault.
    fn heal(&self) {
        for m in &self.members {
            m.proxy.heal();
        }
    }

    /// Checks that the proxies identified the sender of every connection they carried, so
    /// [`Cluster::isolate`] really cuts outgoing traffic too, and that the leader's proxy saw
    /// both followers.
    fn check_proxies(&self, leader: usize) {
        let ids: HashSet<u64> = self.members.iter().map(|m| m.id).collect();
        for (i, m) in self.members.iter().enumerate() {
            let stats = m.proxy.stats();
            assert_eq!(
                stats.undecodable, 0,
                "{}: unidentified connections: {stats:?}",
                m.name
            );
            for src in stats.sources.keys() {
                assert!(
                    ids.contains(src) && *src != m.id,
                    "{}: bad source {src:x}",
                    m.name
                );
            }
            if i == leader {
                assert_eq!(
                    stats.sources.len(),
                    ids.len() - 1,
                    "leader's proxy: {stats:?}"
                );
            }
        }
    }

    /// A put through member `i`; a request hanging past the server's request timeout fails
    /// the test.
    async fn put(&self, i: usize, key: &str, value: &str) -> Result<i64, etcd_client::Error> {
        let mut kv = self.kv(i);
        let limit = self.members[i].request_timeout + SLACK;
        let r = tokio::time::timeout(limit, kv.put(key, value, None))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "put {key} through {} hung for {limit:?}",
                    self.members[i].name
                )
            });
        r.map(|resp| resp.header().map_or(0, |h| h.revision()))
    }

    /// The value of `key` read through member `i` (linearizable unless `serializable`).
    async fn get(
        &self,
        i: usize,
        key: &str,
        serializable: bool,
    ) -> Result<Option<String>, etcd_client::Error> {
        let mut kv = self.kv(i);
        let opts = serializable.then(|| GetOptions::new().with_serializable());
        let limit = self.members[i].request_timeout + SLACK;
        let r = tokio::time::timeout(limit, kv.get(key, opts))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "get {key} through {} hung for {limit:?}",
                    self.members[i].name
                )
            });
        r.map(|resp| {
            resp.kvs()
                .first()
                .map(|kv| String::from_utf8_lossy(kv.value()).into_owned())
        })
    }

    /// How many keys start with `prefix`, read through member `i` (serializable).
    async fn count_local(&self, i: usize, prefix: &str) -> i64 {
        let opts = GetOptions::new()
            .with_prefix()
            .with_count_only()
            .with_serializable();
        self.kv(i)
            .get(prefix, Some(opts))
            .await
            .expect("serializable count")
            .count()
    }

    /// Waits until every member has applied the same index and reached the same revision, and
    /// their `HashKV` at that revision agree; returns the revision.
    async fn wait_converged(&self) -> i64 {
        self.wait("every member to converge", CONVERGE_LIMIT, async || {
            let n = self.members.len();
            let applied: HashSet<u64> = (0..n).map(|i| self.core(i).applied_index()).collect();
            let revs: HashSet<i64> = (0..n)
                .map(|i| self.core(i).store.current_revision())
                .collect();
            if applied.len() != 1 || revs.len() != 1 {
                return None;
            }
            let rev = *revs.iter().next()?;
            let mut hashes = HashSet::new();
            for m in &self.members {
                let mut mc = m.client.maintenance_client();
                hashes.insert(mc.hash_kv(rev).await.ok()?.hash());
            }
            (hashes.len() == 1).then_some(rev)
        })
        .await
    }

    /// Stops every member: peer links are cut first so the members' graceful stops do not
    /// wait on each other's long-lived raft streams.
    async fn shutdown(mut self) {
        for m in &self.members {
            m.proxy.set_blocked(true);
        }
        let stops: Vec<_> = self
            .members
            .iter_mut()
            .filter_map(|m| {
                let name = m.name.clone();
                m.server.take().map(|s| (name, tokio::spawn(s.shutdown())))
            })
            .collect();
        for (name, stop) in stops {
            match stop.await {
                Ok(Ok(())) => {}
                other => panic!("{name} did not shut down cleanly: {other:?}"),
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Reached with servers still running only when a test failed: stop their raft loops
        // (the apply threads follow); listeners end with the test's runtime.
        for m in &mut self.members {
            if let Some(s) = m.server.take() {
                s.core().watch.shut_down();
                s.core().node.stop();
            }
        }
    }
}

/// The error a request that cannot be served must end with: etcd's "request timed out",
/// "no leader" or "leader changed" (all `Unavailable`), never a value.
fn assert_unavailable<T: std::fmt::Debug>(r: &Result<T, etcd_client::Error>, what: &str) {
    match r {
        Err(etcd_client::Error::GRpcStatus(s))
            if s.code() == tonic::Code::Unavailable
                && (s.message().contains("timed out") || s.message().contains("leader")) => {}
        other => panic!("{what}: expected an Unavailable timeout/no-leader error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolated_leader_loses_leadership_serves_no_stale_reads_and_rejoins() {
    let t0 = Instant::now();
    let c = Cluster::start(3, |_| {}, |_| {}).await;
    let l = c.wait_leader(&[0, 1, 2], START_LIMIT).await;
    c.put(l, "k", "v1").await.expect("put v1");
    c.wait_converged().await;
    c.check_proxies(l);
    let others: Vec<usize> = (0..3).filter(|&i| i != l).collect();
    let old_term = c.core(l).node.status().term();

    c.isolate(l);
    let isolated_at = Instant::now();
    // A write sent to the isolated leader right away: it may append it, but never commit it.
    let stale_put = tokio::spawn({
        let mut kv = c.kv(l);
        let limit = c.members[l].request_timeout + SLACK;
        async move {
            let t = Instant::now();
            let r = tokio::time::timeout(limit, kv.put("k", "stale", None)).await;
            (r, t.elapsed())
        }
    });

    let nl = c.wait_leader(&others, FAILOVER_LIMIT).await;
    let failover = isolated_at.elapsed();
    let new_term = c.core(nl).node.status().term();
    assert!(
        new_term > old_term,
        "new leader's term {new_term} <= old {old_term}"
    );
    // Check quorum: the old leader notices it hears from no one and steps down.
    c.wait(
        "the isolated leader to step down",
        FAILOVER_LIMIT,
        async || (!c.core(l).node.status().is_leader()).then_some(()),
    )
    .await;

    // The majority serves writes, through the new leader and through its follower.
    for &i in &others {
        c.put(i, "k", "v2").await.expect("put v2 on the majority");
    }
    c.put(nl, "after", "x")
        .await
        .expect("put on the new leader");

    // The isolated member still serves its (old) data to serializable reads...
    assert_eq!(
        c.get(l, "k", true)
            .await
            .expect("serializable get on the isolated member"),
        Some("v1".into())
    );
    // ...but a linearizable read must fail, not return v1 now that v2 is committed.
    let t = Instant::now();
    let lin = c.get(l, "k", false).await;
    assert_unavailable(&lin, "linearizable get on the isolated old leader");
    assert!(t.elapsed() <= c.members[l].request_timeout + SLACK);

    let (stale, took) = stale_put.await.expect("stale put task");
    let stale = stale.expect("the put to the isolated leader hung past its request timeout");
    assert_unavailable(&stale, "put through the isolated old leader");
    assert!(
        took <= c.members[l].request_timeout + SLACK,
        "stale put took {took:?}"
    );

    c.heal();
    c.wait(
        "the old leader to rejoin as a follower",
        CONVERGE_LIMIT,
        async || {
            let st = c.core(l).node.status();
            (!st.is_leader() && st.leader_id() == c.members[nl].id).then_some(())
        },
    )
    .await;
    c.wait("the old leader to see v2", CONVERGE_LIMIT, async || {
        (c.get(l, "k", true).await.ok()? == Some("v2".into())).then_some(())
    })
    .await;
    c.wait_converged().await;
    for i in 0..3 {
        // The write the old leader appended while isolated was overwritten, never applied.
        assert_eq!(
            c.get(i, "k", false).await.expect("linearizable get"),
            Some("v2".into())
        );
        assert_eq!(
            c.get(i, "after", false).await.expect("linearizable get"),
            Some("x".into())
        );
    }
    println!(
        "isolated leader: failover {failover:?}, stale put failed after {took:?}, total {:?}",
        t0.elapsed()
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolated_follower_cannot_serve_linearizable_reads_and_catches_up() {
    let t0 = Instant::now();
    let c = Cluster::start(3, |_| {}, |_| {}).await;
    let l = c.wait_leader(&[0, 1, 2], START_LIMIT).await;
    let f = (l + 1) % 3;
    let o = (l + 2) % 3;
    c.put(l, "before", "1").await.expect("put before");
    c.wait_converged().await;
    c.check_proxies(l);
    let term = c.core(l).node.status().term();

    c.isolate(f);
    // A linearizable read needs the leader's read index: the isolated follower cannot get one.
    let lin = tokio::spawn({
        let mut kv = c.kv(f);
        let limit = c.members[f].request_timeout + SLACK;
        async move { tokio::time::timeout(limit, kv.get("before", None)).await }
    });
    // Writes go on through the majority, through the leader and through the other follower.
    for n in 0..20 {
        let via = if n % 2 == 0 { l } else { o };
        c.put(via, &format!("during/{n:02}"), &n.to_string())
            .await
            .unwrap_or_else(|e| panic!("put {n} through {} failed: {e}", c.members[via].name));
    }
    assert_eq!(
        c.get(o, "during/19", false).await.expect("get on majority"),
        Some("19".into())
    );
    // Serializable reads on the isolated follower serve what it has: the old key, not the new.
    assert_eq!(
        c.get(f, "before", true).await.expect("serializable get"),
        Some("1".into())
    );
    assert_eq!(
        c.get(f, "during/19", true).await.expect("serializable get"),
        None
    );
    let lin = lin.await.expect("linearizable get task");
    let lin = lin.expect("linearizable get on the isolated follower hung past its request timeout");
    assert_unavailable(&lin, "linearizable get on the isolated follower");
    assert!(
        c.core(l).node.status().is_leader(),
        "leader lost leadership:{}",
        c.dump()
    );

    c.heal();
    c.wait_converged().await;
    assert_eq!(c.count_local(f, "during/").await, 20);
    assert_eq!(
        c.get(f, "during/19", false)
            .await
            .expect("linearizable get"),
        Some("19".into())
    );
    c.put(f, "after", "x")
        .await
        .expect("put through the healed follower");
    assert_eq!(
        c.get(l, "after", false).await.expect("get"),
        Some("x".into())
    );
    // Pre-vote: the follower's failed elections while cut off did not disturb the majority.
    assert_eq!(
        c.leader_among(&[0, 1, 2]),
        Some(l),
        "leader changed:{}",
        c.dump()
    );
    assert_eq!(
        c.core(l).node.status().term(),
        term,
        "term changed:{}",
        c.dump()
    );
    println!("isolated follower: total {:?}", t0.elapsed());
    c.shutdown().await;
}

/// One-way delay the slow-link tests put on every peer message (each crosses one proxy).
const DELAY: Duration = Duration::from_millis(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_links_still_elect_and_serve_correctly() {
    let t0 = Instant::now();
    // Delayed from the start: the first election happens over slow links too.
    let c = Cluster::start(3, |p| p.set_delay(DELAY), |_| {}).await;
    let l = c.wait_leader(&[0, 1, 2], START_LIMIT).await;

    // Read-your-writes across members: a write acknowledged by one member is seen by a
    // linearizable read on every member, at once.
    let mut put_through_leader = Duration::MAX;
    for n in 0..9 {
        let w = n % 3;
        let t = Instant::now();
        c.put(w, "slow/last", &n.to_string())
            .await
            .unwrap_or_else(|e| panic!("put {n} through {} failed: {e}", c.members[w].name));
        if w == l {
            put_through_leader = put_through_leader.min(t.elapsed());
        }
        for r in 0..3 {
            let got = c
                .get(r, "slow/last", false)
                .await
                .expect("linearizable get");
            assert_eq!(
                got,
                Some(n.to_string()),
                "read on {} after put {n}",
                c.members[r].name
            );
        }
    }
    // Committing needs a follower's ack: a round trip through the proxies, so at least two
    // delays (or the delay is not applied).
    assert!(
        put_through_leader >= 2 * DELAY,
        "put took {put_through_leader:?}"
    );

    // Concurrent writers on every member.
    let writers: Vec<_> = (0..3)
        .map(|w| {
            let mut kv = c.kv(w);
            tokio::spawn(async move {
                for n in 0..10 {
                    kv.put(format!("slow/{w}/{n}"), "v", None).await?;
                }
                Ok::<_, etcd_client::Error>(())
            })
        })
        .collect();
    for w in writers {
        w.await.expect("writer task").expect("concurrent put");
    }
    for i in 0..3 {
        let resp = c
            .kv(i)
            .get(
                "slow/",
                Some(GetOptions::new().with_prefix().with_count_only()),
            )
            .await
            .expect("linearizable count");
        assert_eq!(resp.count(), 31, "keys seen by {}", c.members[i].name);
    }
    c.wait_converged().await;
    println!(
        "slow links: put via leader >= {put_through_leader:?}, total {:?}",
        t0.elapsed()
    );
    c.shutdown().await;
}

/// A linearizable read must be confirmed by a quorum *after* it began (ReadIndex: the leader
/// sends a heartbeat carrying the read's context and waits for a quorum to echo it). Over
/// links with a one-way delay D that takes at least 2·D on the leader and 4·D on a follower
/// (forward to the leader, its heartbeat round, the answer back); anything faster was
/// confirmed by an acknowledgement sent before the read began.
///
/// Regression test: raft-rs keys pending reads and heartbeat acks by context alone, and a
/// follower's forwarded read keeps its own context; when every member numbered its contexts
/// from 1, a leader read numbered like a follower's just-answered round was confirmed by that
/// round's late acks (in a few milliseconds here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_index_waits_for_a_fresh_quorum_round() {
    let c = Cluster::start(3, |p| p.set_delay(DELAY), |_| {}).await;
    let l = c.wait_leader(&[0, 1, 2], START_LIMIT).await;
    let f = (l + 1) % 3;
    c.put(l, "x", "1").await.expect("put");
    let mut early = Vec::new();
    // A follower read, then a leader read right after it: with both members numbering from 1
    // the two use the same context. Whether the follower round's late acks are still in
    // flight is a matter of timing, so several rounds per offset; extra reads between groups
    // shift one member's numbering against the other's (0, +1, +2, +3, then -1, -2, -3) in
    // case they do not start level. Stops at the first early read.
    let groups = [(0, 0), (1, 0), (1, 0), (1, 0), (0, 4), (0, 1), (0, 1)];
    'sweep: for (g, (extra_f, extra_l)) in groups.into_iter().enumerate() {
        for _ in 0..extra_f {
            c.get(f, "x", false).await.expect("follower read");
        }
        for _ in 0..extra_l {
            c.get(l, "x", false).await.expect("leader read");
        }
        for round in 0..4 {
            let t = Instant::now();
            c.get(f, "x", false).await.expect("follower read");
            let on_f = t.elapsed();
            let t = Instant::now();
            c.get(l, "x", false).await.expect("leader read");
            let on_l = t.elapsed();
            if on_f < 4 * DELAY || on_l < 2 * DELAY {
                early.push(format!(
                    "group {g} round {round}: follower {on_f:?}, leader {on_l:?}"
                ));
                break 'sweep;
            }
        }
    }
    assert!(
        early.is_empty(),
        "reads confirmed faster than a quorum round trip (one-way delay {DELAY:?}):\n{}",
        early.join("\n")
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_follower_catches_up_from_a_snapshot() {
    let t0 = Instant::now();
    let c = Cluster::start(
        3,
        |_| {},
        |cfg| {
            cfg.snapshot_count = 50;
            cfg.snapshot_catchup_entries = 10;
        },
    )
    .await;
    let l = c.wait_leader(&[0, 1, 2], START_LIMIT).await;
    let f = (l + 1) % 3;
    c.put(l, "warm", "1").await.expect("put");
    c.wait_converged().await;
    let applied_before = c.core(f).applied_index();
    // Installing a snapshot replaces the member's membership (see apply.rs); the only other
    // change is applying a membership entry, and none is proposed from here on.
    let membership = c.core(f).membership.subscribe();
    let membership_before = *membership.borrow();

    c.isolate(f);
    // Far more entries than the leader keeps (it compacts its log every 50 applied entries,
    // keeping 10) — and for long enough that its backend was made durable (every second),
    // which compaction waits for.
    let started = Instant::now();
    let mut written = 0usize;
    while written < 300 || started.elapsed() < Duration::from_millis(2500) {
        let batch: Vec<_> = (0..4)
            .map(|k| {
                let mut kv = c.kv(l);
                let key = format!("snap/{:05}", written + k);
                tokio::spawn(async move { kv.put(key, "v", None).await })
            })
            .collect();
        for b in batch {
            b.await.expect("writer task").expect("put on the majority");
        }
        written += 4;
    }
    assert_eq!(
        c.core(f).applied_index(),
        applied_before,
        "the follower was not cut off"
    );

    c.heal();
    c.wait_converged().await;
    assert_eq!(c.count_local(f, "snap/").await, written as i64);
    assert_ne!(
        *membership.borrow(),
        membership_before,
        "the follower caught up without installing a snapshot (applied {applied_before} -> {}):{}",
        c.core(f).applied_index(),
        c.dump()
    );
    // The member serves normally after the install.
    let last = format!("snap/{:05}", written - 1);
    assert_eq!(
        c.get(f, &last, false).await.expect("linearizable get"),
        Some("v".into())
    );
    c.put(f, "after", "x")
        .await
        .expect("put through the caught-up follower");
    c.wait_converged().await;
    println!(
        "snapshot catch-up: {written} keys, total {:?}",
        t0.elapsed()
    );
    c.shutdown().await;
}
