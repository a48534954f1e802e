//! KV end-to-end tests through the `etcd-client` crate, for what etcdctl cannot express: range
//! filters combined with limit/sort/count, nested transactions and every kind of compare,
//! revision rules, exact error codes and messages, prev_kv / keys_only / count_only.
//!
//! Every scenario is one async function over a [`Ctx`]. It checks what is known for certain
//! (hard-coded facts and a small in-memory model of etcd's range semantics) and records a
//! transcript of every response, normalised so that two servers can be compared (ids, terms
//! and lease ids masked). Each scenario yields two tests: `<scenario>::etcd` runs it against
//! real etcd (so the expectations are etcd's real behaviour) and `<scenario>::cairn` runs it
//! against etcd and then cairn, and requires cairn's checks to pass and its transcript to equal
//! etcd's, step by step.
//!
//! What needs the Lease service (granting and revoking leases, keys attached to a lease, LEASE
//! compares on leased keys) lives in separate `<scenario>_with_leases` scenarios, so that the rest
//! ran against cairn before it had leases. Both their `etcd` and `cairn` tests run now that
//! cairn has the Lease service.

use cairn_tests::{Kind, Server};
use etcd_client::{
    Client, Compare, CompareOp, DeleteOptions, DeleteResponse, GetOptions, GetResponse, KeyValue,
    PutOptions, PutResponse, ResponseHeader, SortOrder, SortTarget, Txn, TxnOp, TxnOpResponse,
    TxnResponse,
};
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::future::Future;
use std::time::Duration;

/// Upper bound for one scenario against one server.
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(240);

// ---------------------------------------------------------------------------------------------
// Test plumbing
// ---------------------------------------------------------------------------------------------

/// One run of a scenario against one server.
struct Ctx {
    kind: Kind,
    server: Server,
    c: Client,
    /// (step label, normalised response); compared between cairn and etcd.
    transcript: Vec<(String, String)>,
    /// Failed checks.
    failures: Vec<String>,
    /// Lease ids granted so far, so that they print as `L0`, `L1`, … on both servers.
    leases: Vec<i64>,
}

async fn run_on<F, Fut>(kind: Kind, scenario: &F) -> Ctx
where
    F: Fn(Ctx) -> Fut,
    Fut: Future<Output = Ctx>,
{
    let server = Server::start(kind, &[]).unwrap_or_else(|e| panic!("starting {kind:?}: {e:#}"));
    let c = server
        .client()
        .await
        .unwrap_or_else(|e| panic!("connecting to {kind:?}: {e:#}"));
    let cx = Ctx {
        kind,
        server,
        c,
        transcript: Vec::new(),
        failures: Vec::new(),
        leases: Vec::new(),
    };
    let cx = tokio::time::timeout(SCENARIO_TIMEOUT, scenario(cx))
        .await
        .unwrap_or_else(|_| {
            panic!("{kind:?}: scenario did not finish within {SCENARIO_TIMEOUT:?}")
        });
    if std::env::var_os("CAIRN_TEST_TRANSCRIPT").is_some() {
        for (i, (label, value)) in cx.transcript.iter().enumerate() {
            println!("{kind:?} {i:4} {label}\n         {value}");
        }
    }
    cx
}

/// Runs the scenario against etcd: validates the test's own expectations.
async fn against_etcd<F, Fut>(scenario: F)
where
    F: Fn(Ctx) -> Fut,
    Fut: Future<Output = Ctx>,
{
    let cx = run_on(Kind::Etcd, &scenario).await;
    assert!(
        cx.failures.is_empty(),
        "{} checks fail against etcd:\n{}",
        cx.failures.len(),
        cx.failures.join("\n")
    );
    assert!(!cx.transcript.is_empty(), "scenario recorded nothing");
}

/// Runs the scenario against etcd and cairn; cairn must pass the checks and answer every step
/// exactly as etcd did.
async fn against_cairn<F, Fut>(scenario: F)
where
    F: Fn(Ctx) -> Fut,
    Fut: Future<Output = Ctx>,
{
    let etcd = run_on(Kind::Etcd, &scenario).await;
    assert!(
        etcd.failures.is_empty(),
        "the test's expectations fail against etcd itself:\n{}",
        etcd.failures.join("\n")
    );
    let cairn = run_on(Kind::Cairn, &scenario).await;
    let mut problems: Vec<String> = cairn.failures.iter().take(40).cloned().collect();
    if cairn.failures.len() > 40 {
        problems.push(format!(
            "… and {} more failed checks",
            cairn.failures.len() - 40
        ));
    }
    let (e, c) = (&etcd.transcript, &cairn.transcript);
    let mut diffs = 0;
    for i in 0..e.len().max(c.len()) {
        let (el, ev) = e
            .get(i)
            .map(|(l, v)| (l.as_str(), v.as_str()))
            .unwrap_or(("<none>", ""));
        let (cl, cv) = c
            .get(i)
            .map(|(l, v)| (l.as_str(), v.as_str()))
            .unwrap_or(("<none>", ""));
        if el != cl || ev != cv {
            diffs += 1;
            if diffs <= 40 {
                problems.push(format!(
                    "step {i} differs from etcd:\n    step:  {el}\n    etcd:  {ev}\n    cairn: {cv}{}",
                    if el != cl { format!("\n    (cairn step label: {cl})") } else { String::new() }
                ));
            }
        }
    }
    if diffs > 40 {
        problems.push(format!("… and {} more differing steps", diffs - 40));
    }
    if !problems.is_empty() {
        let state = process_state(&cairn.server);
        let log = cairn.server.log();
        let tail: Vec<&str> = log
            .lines()
            .rev()
            .take(if state == "running" { 0 } else { 30 })
            .collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        panic!(
            "cairn differs from etcd ({} failed checks, {diffs} of {} transcript steps differ):\n{}\n\n\
             cairn process: {state}; last lines of its log (if it died):\n{}",
            cairn.failures.len(),
            e.len(),
            problems.join("\n"),
            tail.join("\n")
        );
    }
}

/// "running" or "exited" (from `/proc/<pid>/stat`: an exited child is a zombie until reaped).
fn process_state(server: &Server) -> &'static str {
    let Some(pid) = server.pid() else {
        return "not running";
    };
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => match stat
            .rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().next())
        {
            Some("Z") | Some("X") => "exited",
            Some(_) => "running",
            None => "unknown",
        },
        Err(_) => "gone",
    }
}

/// For each scenario function, a module with an `etcd` and a `cairn` test. Attributes written
/// before a scenario's name apply to its `cairn` test only (such as `#[ignore = "…"]`).
macro_rules! scenario_tests {
    ($($(#[$cairn_attr:meta])* $name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn etcd() {
                super::against_etcd(super::$name).await
            }
            #[tokio::test]
            $(#[$cairn_attr])*
            async fn cairn() {
                super::against_cairn(super::$name).await
            }
        }
    )*};
}

scenario_tests!(
    revision_rules,
    range_filters_limit_sort_count,
    sort_every_target_and_order,
    prev_kv_keys_only_count_only,
    txn_compares,
    txn_nested_responses,
    errors_leave_store_unchanged,
);

// The parts of the scenarios above that need the Lease service.
scenario_tests!(
    revision_rules_with_leases,
    txn_compares_with_leases,
    txn_nested_responses_with_leases,
    errors_leave_store_unchanged_with_leases,
);

fn err_s(e: &etcd_client::Error) -> String {
    match e {
        etcd_client::Error::GRpcStatus(s) => format!("ERR {:?}: {}", s.code(), s.message()),
        other => format!("ERR (client side) {other}"),
    }
}

fn hdr_rev(h: Option<&ResponseHeader>) -> String {
    match h {
        Some(h) => format!("rev {}", h.revision()),
        None => "no header".to_string(),
    }
}

fn txn(when: Vec<Compare>, then: Vec<TxnOp>, els: Vec<TxnOp>) -> Txn {
    Txn::new().when(when).and_then(then).or_else(els)
}

fn put(k: &str, v: &str) -> TxnOp {
    TxnOp::put(k, v, None)
}

fn get(k: &str) -> TxnOp {
    TxnOp::get(k, None)
}

/// Options for a prefix range (the prefix is the request's key).
fn prefix() -> GetOptions {
    GetOptions::new().with_prefix()
}

impl Ctx {
    fn rec(&mut self, label: &str, value: String) {
        self.transcript.push((label.to_string(), value));
    }

    fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            let w = what();
            self.failures.push(format!("[{:?}] {w}", self.kind));
        }
    }

    fn expect<T: PartialEq + Debug>(&mut self, what: &str, actual: T, expected: T) {
        if actual != expected {
            self.failures.push(format!(
                "[{:?}] {what}:\n    expected {expected:?}\n    actual   {actual:?}",
                self.kind
            ));
        }
    }

    fn lease_name(&self, id: i64) -> String {
        if id == 0 {
            return "0".into();
        }
        match self.leases.iter().position(|&l| l == id) {
            Some(i) => format!("L{i}"),
            None => format!("unknown-lease({id})"),
        }
    }

    fn kv_s(&self, kv: &KeyValue) -> String {
        format!(
            "{}={:?} c{} m{} v{} l{}",
            String::from_utf8_lossy(kv.key()),
            String::from_utf8_lossy(kv.value()),
            kv.create_revision(),
            kv.mod_revision(),
            kv.version(),
            self.lease_name(kv.lease())
        )
    }

    fn kvs_s(&self, kvs: &[KeyValue]) -> String {
        kvs.iter()
            .map(|kv| self.kv_s(kv))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn get_s(&self, r: &GetResponse) -> String {
        format!(
            "Range[{}] count {} more {} kvs [{}]",
            hdr_rev(r.header()),
            r.count(),
            r.more(),
            self.kvs_s(r.kvs())
        )
    }

    fn put_s(&self, r: &PutResponse) -> String {
        format!(
            "Put[{}] prev {}",
            hdr_rev(r.header()),
            r.prev_key()
                .map(|kv| self.kv_s(kv))
                .unwrap_or_else(|| "none".into())
        )
    }

    fn del_s(&self, r: &DeleteResponse) -> String {
        format!(
            "Delete[{}] deleted {} prev [{}]",
            hdr_rev(r.header()),
            r.deleted(),
            self.kvs_s(r.prev_kvs())
        )
    }

    fn txn_s(&self, r: &TxnResponse) -> String {
        let ops: Vec<String> = r
            .op_responses()
            .iter()
            .map(|op| match op {
                TxnOpResponse::Put(p) => self.put_s(p),
                TxnOpResponse::Get(g) => self.get_s(g),
                TxnOpResponse::Delete(d) => self.del_s(d),
                TxnOpResponse::Txn(t) => self.txn_s(t),
            })
            .collect();
        format!(
            "Txn[{}] succeeded {} ops ({})",
            hdr_rev(r.header()),
            r.succeeded(),
            ops.join(", ")
        )
    }

    /// The header of a top-level response must be fully filled in.
    fn check_outer_header(&mut self, label: &str, h: Option<&ResponseHeader>) {
        let ok = h.is_some_and(|h| h.cluster_id() != 0 && h.member_id() != 0 && h.raft_term() != 0);
        self.check(ok, || format!("{label}: incomplete response header {h:?}"));
    }

    fn unexpected(&mut self, label: &str, e: &etcd_client::Error) {
        let s = err_s(e);
        self.failures
            .push(format!("[{:?}] {label}: unexpected error {s}", self.kind));
        self.rec(label, s);
    }

    async fn get(
        &mut self,
        label: &str,
        key: &str,
        opts: Option<GetOptions>,
    ) -> Option<GetResponse> {
        match self.c.get(key, opts).await {
            Ok(r) => {
                self.check_outer_header(label, r.header());
                let s = self.get_s(&r);
                self.rec(label, s);
                Some(r)
            }
            Err(e) => {
                self.unexpected(label, &e);
                None
            }
        }
    }

    async fn put(
        &mut self,
        label: &str,
        key: &str,
        value: &str,
        opts: Option<PutOptions>,
    ) -> Option<PutResponse> {
        match self.c.put(key, value, opts).await {
            Ok(r) => {
                self.check_outer_header(label, r.header());
                let s = self.put_s(&r);
                self.rec(label, s);
                Some(r)
            }
            Err(e) => {
                self.unexpected(label, &e);
                None
            }
        }
    }

    async fn delete(
        &mut self,
        label: &str,
        key: &str,
        opts: Option<DeleteOptions>,
    ) -> Option<DeleteResponse> {
        match self.c.delete(key, opts).await {
            Ok(r) => {
                self.check_outer_header(label, r.header());
                let s = self.del_s(&r);
                self.rec(label, s);
                Some(r)
            }
            Err(e) => {
                self.unexpected(label, &e);
                None
            }
        }
    }

    async fn txn(&mut self, label: &str, t: Txn) -> Option<TxnResponse> {
        match self.c.txn(t).await {
            Ok(r) => {
                self.check_outer_header(label, r.header());
                let s = self.txn_s(&r);
                self.rec(label, s);
                Some(r)
            }
            Err(e) => {
                self.unexpected(label, &e);
                None
            }
        }
    }

    async fn grant(&mut self, label: &str) -> i64 {
        match self.c.lease_grant(600, None).await {
            Ok(r) => {
                self.leases.push(r.id());
                let s = format!(
                    "LeaseGrant[{}] id {} ttl {}",
                    hdr_rev(r.header()),
                    self.lease_name(r.id()),
                    r.ttl()
                );
                self.rec(label, s);
                r.id()
            }
            Err(e) => {
                self.unexpected(label, &e);
                0
            }
        }
    }

    async fn revoke(&mut self, label: &str, id: i64) {
        match self.c.lease_revoke(id).await {
            Ok(r) => {
                let s = format!("LeaseRevoke[{}]", hdr_rev(r.header()));
                self.rec(label, s);
            }
            Err(e) => self.unexpected(label, &e),
        }
    }

    async fn compact(&mut self, label: &str, rev: i64) {
        match self.c.compact(rev, None).await {
            Ok(r) => {
                let s = format!("Compact[{}]", hdr_rev(r.header()));
                self.rec(label, s);
            }
            Err(e) => self.unexpected(label, &e),
        }
    }

    /// The whole store: every key (and its metadata) and the header revision.
    async fn state(&mut self) -> String {
        match self
            .c
            .get(vec![0u8], Some(GetOptions::new().with_range(vec![0u8])))
            .await
        {
            Ok(r) => format!("store {} [{}]", hdr_rev(r.header()), self.kvs_s(r.kvs())),
            Err(e) => format!("store unreadable: {}", err_s(&e)),
        }
    }

    async fn rec_state(&mut self, label: &str) -> String {
        let s = self.state().await;
        self.rec(label, s.clone());
        s
    }

    /// The current store revision, read from the header of a range.
    async fn rev(&mut self) -> i64 {
        match self.c.get("any", None).await {
            Ok(r) => r.header().map_or(-1, |h| h.revision()),
            Err(e) => {
                let s = err_s(&e);
                self.failures
                    .push(format!("[{:?}] reading the revision: {s}", self.kind));
                -1
            }
        }
    }

    /// The current store revision must be `expected`.
    async fn expect_rev(&mut self, what: &str, expected: i64) {
        let rev = self.rev().await;
        self.expect(what, rev, expected);
    }

    /// Records an outcome that must be the error `code`/`msg`.
    fn expect_err<T>(
        &mut self,
        label: &str,
        r: Result<T, etcd_client::Error>,
        code: &str,
        msg: &str,
    ) {
        let got = match &r {
            Ok(_) => "unexpected success".to_string(),
            Err(e) => err_s(e),
        };
        let want = format!("ERR {code}: {msg}");
        self.check(got == want, || {
            format!("{label}:\n    expected {want}\n    actual   {got}")
        });
        self.rec(label, got);
    }

    /// The store (contents and revision) must equal `before`.
    async fn expect_unchanged(&mut self, label: &str, before: &str) {
        let after = self.state().await;
        self.check(after == before, || {
            format!("{label}: the store changed after a failed request:\n    before {before}\n    after  {after}")
        });
    }
}

fn succeeded(r: &Option<TxnResponse>) -> Option<bool> {
    r.as_ref().map(|r| r.succeeded())
}

fn rev_of(h: Option<&ResponseHeader>) -> i64 {
    h.map_or(-1, |h| h.revision())
}

// ---------------------------------------------------------------------------------------------
// A model of etcd's range semantics over a history of single-key writes
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct MKv {
    key: String,
    value: String,
    create: i64,
    modr: i64,
    version: i64,
}

/// History of single-key puts/deletes (one revision each), mirrored on the server.
struct Model {
    rev: i64,
    hist: Vec<(i64, String, Option<String>)>,
}

/// One range request.
#[derive(Clone, Debug, Default)]
struct Q {
    key: String,
    /// None: single key; Some("\0"): every key ≥ key.
    end: Option<String>,
    rev: i64,
    limit: i64,
    sort: Option<(SortTarget, SortOrder)>,
    min_mod: i64,
    max_mod: i64,
    min_create: i64,
    max_create: i64,
    keys_only: bool,
    count_only: bool,
}

impl Q {
    fn opts(&self) -> GetOptions {
        let mut o = GetOptions::new()
            .with_limit(self.limit)
            .with_revision(self.rev)
            .with_min_mod_revision(self.min_mod)
            .with_max_mod_revision(self.max_mod)
            .with_min_create_revision(self.min_create)
            .with_max_create_revision(self.max_create);
        if let Some(end) = &self.end {
            o = o.with_range(end.as_bytes().to_vec());
        }
        if let Some((t, ord)) = self.sort {
            // Note: etcd-client sends KEY/ASCEND as KEY/NONE (same result).
            o = o.with_sort(t, ord);
        }
        if self.keys_only {
            o = o.with_keys_only();
        }
        if self.count_only {
            o = o.with_count_only();
        }
        o
    }

    fn label(&self) -> String {
        let mut s = format!(
            "range [{}, {}) rev {}",
            self.key,
            self.end.as_deref().unwrap_or("<single>"),
            self.rev
        );
        if self.limit != 0 {
            s += &format!(" limit {}", self.limit);
        }
        if let Some((t, o)) = self.sort {
            s += &format!(" sort {t:?}/{o:?}");
        }
        for (n, v) in [
            ("min_mod", self.min_mod),
            ("max_mod", self.max_mod),
            ("min_create", self.min_create),
            ("max_create", self.max_create),
        ] {
            if v != 0 {
                s += &format!(" {n} {v}");
            }
        }
        if self.keys_only {
            s += " keys_only";
        }
        if self.count_only {
            s += " count_only";
        }
        s
    }
}

impl Model {
    fn new() -> Model {
        Model {
            rev: 1,
            hist: Vec::new(),
        }
    }

    fn state_at(&self, rev: i64) -> BTreeMap<String, MKv> {
        let mut m: BTreeMap<String, MKv> = BTreeMap::new();
        for (r, k, v) in &self.hist {
            if *r > rev {
                break;
            }
            match v {
                Some(v) => {
                    let e = m.entry(k.clone()).or_insert_with(|| MKv {
                        key: k.clone(),
                        value: String::new(),
                        create: *r,
                        modr: 0,
                        version: 0,
                    });
                    e.value = v.clone();
                    e.modr = *r;
                    e.version += 1;
                }
                None => {
                    m.remove(k);
                }
            }
        }
        m
    }

    /// What etcd answers to `q`, formatted like [`Ctx::get_s`].
    fn range(&self, q: &Q) -> String {
        let at = if q.rev <= 0 { self.rev } else { q.rev };
        let mut kvs: Vec<MKv> = self
            .state_at(at)
            .into_values()
            .filter(|kv| match q.end.as_deref() {
                None => kv.key == q.key,
                Some("\0") => kv.key >= q.key,
                Some(end) => kv.key >= q.key && kv.key.as_str() < end,
            })
            .collect();
        let count = kvs.len();
        let mut more = false;
        if q.count_only {
            kvs.clear();
        } else {
            kvs.retain(|kv| {
                (q.min_mod == 0 || kv.modr >= q.min_mod)
                    && (q.max_mod == 0 || kv.modr <= q.max_mod)
                    && (q.min_create == 0 || kv.create >= q.min_create)
                    && (q.max_create == 0 || kv.create <= q.max_create)
            });
            // etcd quirk, modelled as is: when the request's sort order is NONE (on the wire)
            // and no revision filter is set, the limit is applied while reading, in key order,
            // *before* sorting on a non-key target (it reads `limit + 1` keys).
            let wire_order = match q.sort {
                None | Some((SortTarget::Key, SortOrder::Ascend)) => SortOrder::None,
                Some((_, o)) => o,
            };
            let no_filters =
                q.min_mod == 0 && q.max_mod == 0 && q.min_create == 0 && q.max_create == 0;
            if wire_order == SortOrder::None && no_filters && q.limit > 0 {
                kvs.truncate(q.limit as usize + 1);
            }
            if let Some((target, order)) = q.sort {
                // etcd-client turns KEY/ASCEND into KEY/NONE; NONE with another target sorts
                // ascending. Ties keep key order (etcd's sort is stable for ≤ 12 items).
                let order = if order == SortOrder::None && target != SortTarget::Key {
                    SortOrder::Ascend
                } else {
                    order
                };
                let cmp = |a: &MKv, b: &MKv| match target {
                    SortTarget::Key => a.key.cmp(&b.key),
                    SortTarget::Version => a.version.cmp(&b.version),
                    SortTarget::Create => a.create.cmp(&b.create),
                    SortTarget::Mod => a.modr.cmp(&b.modr),
                    SortTarget::Value => a.value.cmp(&b.value),
                };
                match order {
                    SortOrder::None => {}
                    SortOrder::Ascend => kvs.sort_by(cmp),
                    SortOrder::Descend => kvs.sort_by(|a, b| cmp(b, a)),
                }
            }
            if q.limit > 0 && kvs.len() > q.limit as usize {
                kvs.truncate(q.limit as usize);
                more = true;
            }
        }
        let kvs: Vec<String> = kvs
            .iter()
            .map(|kv| {
                let value = if q.keys_only { "" } else { kv.value.as_str() };
                format!(
                    "{}={:?} c{} m{} v{} l0",
                    kv.key, value, kv.create, kv.modr, kv.version
                )
            })
            .collect();
        format!(
            "Range[rev {}] count {count} more {more} kvs [{}]",
            self.rev,
            kvs.join("; ")
        )
    }
}

/// Applies `ops` (put when `Some`, delete when `None`) one request each, to the server and the
/// model, checking that each write takes exactly the next revision.
async fn load(cx: &mut Ctx, m: &mut Model, ops: &[(&str, Option<&str>)]) {
    for (k, v) in ops {
        match v {
            Some(v) => {
                m.rev += 1;
                m.hist.push((m.rev, k.to_string(), Some(v.to_string())));
                let r = cx.put(&format!("load put {k}={v}"), k, v, None).await;
                let rev = r.map_or(-1, |r| rev_of(r.header()));
                cx.expect(&format!("revision of put {k}"), rev, m.rev);
            }
            None => {
                m.rev += 1;
                m.hist.push((m.rev, k.to_string(), None));
                let r = cx.delete(&format!("load delete {k}"), k, None).await;
                let rev = r.map_or(-1, |r| rev_of(r.header()));
                cx.expect(&format!("revision of delete {k}"), rev, m.rev);
            }
        }
    }
}

/// The data set of the range tests: 9 keys under `r/` with varied create/mod revisions,
/// versions, a deleted-and-recreated key, equal values, plus neighbours outside the prefix.
/// Revisions: 2..=18.
const RANGE_DATA: &[(&str, Option<&str>)] = &[
    ("r/a", Some("m")),   // 2
    ("r/b", Some("z")),   // 3
    ("r/c", Some("a")),   // 4
    ("r/a", Some("b")),   // 5
    ("r/d", Some("q")),   // 6
    ("r/e", Some("c")),   // 7
    ("r/b", Some("y")),   // 8
    ("r/f", Some("x")),   // 9
    ("r/c", None),        // 10
    ("r/c", Some("k")),   // 11
    ("r/g", Some("d")),   // 12
    ("r/a", Some("e")),   // 13
    ("s/x", Some("out")), // 14
    ("r/h", Some("c")),   // 15
    ("r/d", Some("q")),   // 16
    ("r0", Some("edge")), // 17
    ("r/", Some("root")), // 18
];

async fn check_query(cx: &mut Ctx, m: &Model, q: &Q) {
    let label = q.label();
    let expected = m.range(q);
    let got = cx.get(&label, &q.key, Some(q.opts())).await;
    if let Some(got) = got {
        let got = cx.get_s(&got);
        if got != expected {
            cx.failures.push(format!(
                "[{:?}] {label}:\n    expected {expected}\n    actual   {got}",
                cx.kind
            ));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------------------------

/// Revision 1 on a fresh store, 2 for the first write, one per write request however many keys
/// it touches; reads, read-only txns, txns whose taken branch changes nothing, deletes of
/// nothing and compaction leave it alone. (Leases: [`revision_rules_with_leases`].)
async fn revision_rules(mut cx: Ctx) -> Ctx {
    revision_rules_writes(&mut cx).await;
    compaction_keeps_the_revision(&mut cx, 7).await;
    cx
}

/// The same history as [`revision_rules`], with leases between the writes and the compaction:
/// lease grants leave the revision alone, revoking a lease without keys too, revoking a lease
/// with 2 keys is one revision and deletes them.
async fn revision_rules_with_leases(mut cx: Ctx) -> Ctx {
    revision_rules_writes(&mut cx).await;
    let l0 = cx.grant("grant L0").await;
    cx.expect_rev("lease grant does not bump", 7).await;
    cx.put(
        "put k1 with L0",
        "k1",
        "v",
        Some(PutOptions::new().with_lease(l0)),
    )
    .await;
    cx.put(
        "put k2 with L0",
        "k2",
        "v",
        Some(PutOptions::new().with_lease(l0)),
    )
    .await;
    let l1 = cx.grant("grant L1").await;
    cx.revoke("revoke L1 (no keys)", l1).await;
    cx.expect_rev("revoking a lease without keys does not bump", 9)
        .await;
    cx.revoke("revoke L0 (2 keys)", l0).await;
    cx.expect_rev("revoking a lease with 2 keys is one revision", 10)
        .await;
    let s = cx.rec_state("after revoking L0").await;
    cx.expect(
        "revoke deleted the lease's keys",
        s.as_str(),
        "store rev 10 [a=\"3\" c6 m6 v1 l0]",
    );
    compaction_keeps_the_revision(&mut cx, 10).await;
    cx
}

/// The first part of [`revision_rules`]: writes, reads and requests that change nothing; the
/// store ends at revision 7 holding only `a="3" c6 m6 v1`.
async fn revision_rules_writes(cx: &mut Ctx) {
    let r = cx.get("fresh store", "a", None).await;
    cx.expect(
        "revision of a fresh store",
        r.map(|r| rev_of(r.header())),
        Some(1),
    );
    let r = cx.put("first put", "a", "1", None).await;
    cx.expect(
        "revision of the first write",
        r.map(|r| rev_of(r.header())),
        Some(2),
    );

    let r = cx
        .txn(
            "txn with 3 puts",
            txn(
                vec![],
                vec![put("b", "1"), put("c", "1"), put("a", "2")],
                vec![],
            ),
        )
        .await;
    cx.expect(
        "revision of a 3-put txn",
        r.map(|r| rev_of(r.header())),
        Some(3),
    );
    let s = cx.rec_state("after 3-put txn").await;
    cx.expect(
        "keys written by one txn share its revision",
        s.as_str(),
        "store rev 3 [a=\"2\" c2 m3 v2 l0; b=\"1\" c3 m3 v1 l0; c=\"1\" c3 m3 v1 l0]",
    );

    let r = cx
        .txn(
            "read-only txn",
            txn(
                vec![Compare::version("a", CompareOp::Greater, 0)],
                vec![get("a"), TxnOp::get("", Some(prefix()))],
                vec![],
            ),
        )
        .await;
    cx.expect(
        "read-only txn header",
        r.map(|r| rev_of(r.header())),
        Some(3),
    );
    cx.expect_rev("revision after a read-only txn", 3).await;

    let r = cx
        .txn(
            "txn whose writes are in the branch not taken",
            txn(
                vec![Compare::value("a", CompareOp::Equal, "nope")],
                vec![put("x", "1")],
                vec![get("a")],
            ),
        )
        .await;
    cx.expect("branch-not-taken txn succeeded", succeeded(&r), Some(false));
    cx.expect(
        "branch-not-taken txn header",
        r.map(|r| rev_of(r.header())),
        Some(3),
    );

    let r = cx
        .txn(
            "txn deleting a missing key",
            txn(vec![], vec![TxnOp::delete("missing", None)], vec![]),
        )
        .await;
    cx.expect(
        "no-op delete txn header",
        r.map(|r| rev_of(r.header())),
        Some(3),
    );
    cx.expect_rev("revision after a txn that changed nothing", 3)
        .await;

    let r = cx.delete("delete missing key", "missing", None).await;
    cx.expect(
        "delete of nothing: deleted",
        r.as_ref().map(|r| r.deleted()),
        Some(0),
    );
    cx.expect(
        "delete of nothing: header",
        r.map(|r| rev_of(r.header())),
        Some(3),
    );
    let r = cx
        .delete(
            "delete empty range",
            "m",
            Some(DeleteOptions::new().with_range("n")),
        )
        .await;
    cx.expect(
        "delete of an empty range: header",
        r.map(|r| rev_of(r.header())),
        Some(3),
    );
    cx.expect_rev("revision after deletes of nothing", 3).await;

    let r = cx.put("put the same value again", "a", "2", None).await;
    cx.expect(
        "rewriting the same value bumps",
        r.map(|r| rev_of(r.header())),
        Some(4),
    );
    let r = cx.delete("delete a", "a", None).await;
    cx.expect("delete existing", r.map(|r| rev_of(r.header())), Some(5));
    cx.put("recreate a", "a", "3", None).await;
    let r = cx.get("a after recreate", "a", None).await;
    let kv = r.and_then(|r| {
        r.kvs()
            .first()
            .map(|kv| (kv.create_revision(), kv.mod_revision(), kv.version()))
    });
    cx.expect("recreated key: create, mod, version", kv, Some((6, 6, 1)));
    let r = cx
        .delete(
            "delete range of 2 keys",
            "b",
            Some(DeleteOptions::new().with_range("d")),
        )
        .await;
    cx.expect(
        "range delete of 2 keys: deleted",
        r.as_ref().map(|r| r.deleted()),
        Some(2),
    );
    cx.expect(
        "range delete of 2 keys is one revision",
        r.map(|r| rev_of(r.header())),
        Some(7),
    );
}

/// Compaction (to revision 5) leaves the revision at `rev`; the next write takes `rev + 1`.
async fn compaction_keeps_the_revision(cx: &mut Ctx, rev: i64) {
    cx.compact("compact to 5", 5).await;
    cx.expect_rev("compaction does not bump", rev).await;
    cx.put("put after compaction", "z", "1", None).await;
    cx.expect_rev("next write after compaction", rev + 1).await;
    cx.rec_state("final").await;
}

/// min/max mod/create revision filters, alone and combined, with limit, sorts, count_only and
/// historical revisions, over single keys, prefixes, sub-ranges and from-key ranges.
async fn range_filters_limit_sort_count(mut cx: Ctx) -> Ctx {
    let mut m = Model::new();
    load(&mut cx, &mut m, RANGE_DATA).await;
    let ranges: [(&str, Option<&str>); 4] = [
        ("r/", Some("r0")),
        ("r/b", Some("r/f")),
        ("r/d", Some("\0")),
        ("r/a", None),
    ];
    let filters: [(i64, i64, i64, i64); 10] = [
        (0, 0, 0, 0),
        (8, 0, 0, 0),
        (0, 8, 0, 0),
        (5, 11, 0, 0),
        (0, 0, 3, 0),
        (0, 0, 0, 6),
        (0, 0, 3, 9),
        (9, 0, 0, 6),
        (0, 0, 11, 11),
        (20, 0, 0, 0),
    ];
    let sorts = [
        None,
        Some((SortTarget::Mod, SortOrder::Descend)),
        Some((SortTarget::Value, SortOrder::Ascend)),
        Some((SortTarget::Create, SortOrder::None)),
        Some((SortTarget::Key, SortOrder::Descend)),
        Some((SortTarget::Version, SortOrder::Descend)),
    ];
    for (key, end) in ranges {
        for rev in [0, 10] {
            for (min_mod, max_mod, min_create, max_create) in filters {
                for limit in [0, 1, 3] {
                    for sort in sorts {
                        let q = Q {
                            key: key.into(),
                            end: end.map(Into::into),
                            rev,
                            limit,
                            sort,
                            min_mod,
                            max_mod,
                            min_create,
                            max_create,
                            ..Q::default()
                        };
                        check_query(&mut cx, &m, &q).await;
                    }
                }
                for limit in [0, 2] {
                    let q = Q {
                        key: key.into(),
                        end: end.map(Into::into),
                        rev,
                        limit,
                        min_mod,
                        max_mod,
                        min_create,
                        max_create,
                        count_only: true,
                        ..Q::default()
                    };
                    check_query(&mut cx, &m, &q).await;
                }
            }
        }
    }
    cx
}

/// Every sort target in every order, with and without limit and keys_only, now and in the past.
async fn sort_every_target_and_order(mut cx: Ctx) -> Ctx {
    let mut m = Model::new();
    load(&mut cx, &mut m, RANGE_DATA).await;
    let targets = [
        SortTarget::Key,
        SortTarget::Version,
        SortTarget::Create,
        SortTarget::Mod,
        SortTarget::Value,
    ];
    let orders = [SortOrder::None, SortOrder::Ascend, SortOrder::Descend];
    for rev in [0, 12] {
        for target in targets {
            for order in orders {
                for limit in [0, 2, 5] {
                    for keys_only in [false, true] {
                        let q = Q {
                            key: "r/".into(),
                            end: Some("r0".into()),
                            rev,
                            limit,
                            sort: Some((target, order)),
                            keys_only,
                            ..Q::default()
                        };
                        check_query(&mut cx, &m, &q).await;
                    }
                }
            }
        }
    }
    // The whole keyspace (crosses prefixes), descending by value.
    for target in targets {
        let q = Q {
            key: "\0".into(),
            end: Some("\0".into()),
            sort: Some((target, SortOrder::Descend)),
            limit: 4,
            ..Q::default()
        };
        check_query(&mut cx, &m, &q).await;
    }
    cx
}

/// prev_kv on put and delete (missing key, existing key, ranges, ignore_value, inside a txn),
/// keys_only and count_only alone and combined with limit, sort and a past revision.
async fn prev_kv_keys_only_count_only(mut cx: Ctx) -> Ctx {
    let pk = || Some(PutOptions::new().with_prev_key());
    let r = cx
        .put("put missing key with prev_kv", "p/a", "1", pk())
        .await;
    cx.expect(
        "prev_kv of a new key",
        r.map(|r| r.prev_key().is_none()),
        Some(true),
    );
    let r = cx.put("overwrite with prev_kv", "p/a", "2", pk()).await;
    let prev = r.and_then(|r| r.prev_key().map(|kv| cx.kv_s(kv)));
    cx.expect(
        "prev_kv is the version before the write",
        prev.as_deref(),
        Some("p/a=\"1\" c2 m2 v1 l0"),
    );
    cx.put("put p/b", "p/b", "x", None).await;
    cx.put("put p/c", "p/c", "y", None).await;
    let r = cx
        .put(
            "ignore_value with prev_kv",
            "p/a",
            "",
            Some(PutOptions::new().with_ignore_value().with_prev_key()),
        )
        .await;
    let prev = r.and_then(|r| r.prev_key().map(|kv| cx.kv_s(kv)));
    cx.expect(
        "prev_kv of an ignore_value put",
        prev.as_deref(),
        Some("p/a=\"2\" c2 m3 v2 l0"),
    );
    let r = cx.get("p/a after ignore_value", "p/a", None).await;
    let kv = r.and_then(|r| r.kvs().first().map(|kv| cx.kv_s(kv)));
    cx.expect(
        "ignore_value keeps the value",
        kv.as_deref(),
        Some("p/a=\"2\" c2 m6 v3 l0"),
    );

    let dp = || DeleteOptions::new().with_prev_key();
    let r = cx
        .delete("delete missing with prev_kv", "p/zz", Some(dp()))
        .await;
    cx.expect(
        "delete missing: deleted, prev_kvs",
        r.map(|r| (r.deleted(), r.prev_kvs().len())),
        Some((0, 0)),
    );
    let r = cx
        .delete("delete p/b with prev_kv", "p/b", Some(dp()))
        .await;
    let prev = r.map(|r| cx.kvs_s(r.prev_kvs()));
    cx.expect(
        "delete prev_kvs",
        prev.as_deref(),
        Some("p/b=\"x\" c4 m4 v1 l0"),
    );
    cx.put("put p/d", "p/d", "w", None).await;
    let r = cx
        .delete("delete prefix with prev_kv", "p/", Some(dp().with_prefix()))
        .await;
    cx.expect(
        "prefix delete count",
        r.as_ref().map(|r| r.deleted()),
        Some(3),
    );
    let prev = r.map(|r| cx.kvs_s(r.prev_kvs()));
    cx.expect(
        "prefix delete prev_kvs",
        prev.as_deref(),
        Some("p/a=\"2\" c2 m6 v3 l0; p/c=\"y\" c5 m5 v1 l0; p/d=\"w\" c8 m8 v1 l0"),
    );
    let r = cx.delete("delete without prev_kv", "p/none", None).await;
    cx.expect(
        "no prev_kvs unless asked",
        r.map(|r| r.prev_kvs().len()),
        Some(0),
    );

    // prev_kv inside a txn.
    cx.put("put q/a", "q/a", "1", None).await;
    cx.put("put q/b", "q/b", "2", None).await;
    cx.txn(
        "txn with prev_kv ops",
        txn(
            vec![],
            vec![
                TxnOp::put("q/a", "11", Some(PutOptions::new().with_prev_key())),
                TxnOp::put("q/new", "n", Some(PutOptions::new().with_prev_key())),
                TxnOp::delete("q/b", Some(DeleteOptions::new().with_prev_key())),
                TxnOp::delete("q/nothing", Some(DeleteOptions::new().with_prev_key())),
            ],
            vec![],
        ),
    )
    .await;

    // keys_only / count_only.
    for (k, v) in [
        ("k/a", "3"),
        ("k/b", "1"),
        ("k/c", "2"),
        ("k/d", "22"),
        ("k/b", "11"),
    ] {
        cx.put(&format!("put {k}"), k, v, None).await;
    }
    let r = cx
        .get("keys_only prefix", "k/", Some(prefix().with_keys_only()))
        .await;
    if let Some(r) = &r {
        let all_empty = r.kvs().iter().all(|kv| kv.value().is_empty());
        let shown = cx.get_s(r);
        cx.check(all_empty && r.kvs().len() == 4, || {
            format!("keys_only: {shown}")
        });
    }
    let r = cx
        .get("count_only prefix", "k/", Some(prefix().with_count_only()))
        .await;
    cx.expect(
        "count_only: kvs, count, more",
        r.map(|r| (r.kvs().len(), r.count(), r.more())),
        Some((0, 4, false)),
    );
    let r = cx
        .get(
            "count_only with limit",
            "k/",
            Some(prefix().with_count_only().with_limit(1)),
        )
        .await;
    cx.expect(
        "count_only+limit: kvs, count, more",
        r.map(|r| (r.kvs().len(), r.count(), r.more())),
        Some((0, 4, false)),
    );
    cx.get(
        "count_only and keys_only",
        "k/",
        Some(prefix().with_count_only().with_keys_only()),
    )
    .await;
    cx.get(
        "count_only of a missing key",
        "k/zz",
        Some(GetOptions::new().with_count_only()),
    )
    .await;
    cx.get(
        "count_only of one key",
        "k/a",
        Some(GetOptions::new().with_count_only()),
    )
    .await;
    let r = cx
        .get(
            "keys_only limit 2 sorted by value desc",
            "k/",
            Some(
                prefix()
                    .with_keys_only()
                    .with_limit(2)
                    .with_sort(SortTarget::Value, SortOrder::Descend),
            ),
        )
        .await;
    let keys = r.map(|r| {
        r.kvs()
            .iter()
            .map(|kv| String::from_utf8_lossy(kv.key()).to_string())
            .collect::<Vec<_>>()
    });
    // Values compare byte-wise: "3" > "22" > "2" > "11".
    cx.expect(
        "value-descending keys",
        keys,
        Some(vec!["k/a".to_string(), "k/d".to_string()]),
    );
    let now = cx.rev().await;
    cx.get(
        "keys_only in the past",
        "k/",
        Some(prefix().with_keys_only().with_revision(now - 1)),
    )
    .await;
    cx.get(
        "count_only in the past",
        "k/",
        Some(prefix().with_count_only().with_revision(now - 3)),
    )
    .await;
    cx.get(
        "keys_only single key",
        "k/b",
        Some(GetOptions::new().with_keys_only()),
    )
    .await;
    cx
}

/// Known state for compare tests: key → (version, create, mod, value, lease index).
type Known = BTreeMap<&'static str, (i64, i64, i64, &'static str, Option<usize>)>;

/// The data of the compare tests, revisions 2..=6: t/a, t/b, t/c, then t/l (attached to `lease`
/// if given, which must be the first lease granted, L0), then t/b again.
async fn compare_data(cx: &mut Ctx, lease: Option<i64>) -> Known {
    cx.put("put t/a", "t/a", "1", None).await; // 2
    cx.put("put t/b", "t/b", "2", None).await; // 3
    cx.put("put t/c", "t/c", "3", None).await; // 4
    let l = match lease {
        Some(l0) => {
            cx.put(
                "put t/l with L0",
                "t/l",
                "leased",
                Some(PutOptions::new().with_lease(l0)),
            )
            .await; // 5
            (1, 5, 5, "leased", Some(0))
        }
        None => {
            cx.put("put t/l", "t/l", "plain", None).await; // 5
            (1, 5, 5, "plain", None)
        }
    };
    cx.put("update t/b", "t/b", "22", None).await; // 6
    cx.rec_state("compare data").await;
    BTreeMap::from([
        ("t/a", (1, 2, 2, "1", None)),
        ("t/b", (2, 3, 6, "22", None)),
        ("t/l", l),
    ])
}

/// Whether `ord` (actual compared with reference) satisfies `op`.
fn holds(ord: std::cmp::Ordering, op: CompareOp) -> bool {
    match op {
        CompareOp::Equal => ord.is_eq(),
        CompareOp::NotEqual => ord.is_ne(),
        CompareOp::Greater => ord.is_gt(),
        CompareOp::Less => ord.is_lt(),
    }
}

/// Every compare target × every result kind on `key`, whose state is `k` (`None`: missing),
/// against reference values below, equal to and above the actual one.
async fn compare_every_target(
    cx: &mut Ctx,
    key: &str,
    k: Option<(i64, i64, i64, &str, Option<usize>)>,
) {
    let ops = [
        CompareOp::Equal,
        CompareOp::NotEqual,
        CompareOp::Greater,
        CompareOp::Less,
    ];
    let (ver, create, modr, value, lease) = k.unwrap_or((0, 0, 0, "", None));
    let lease_id = lease.map_or(0, |i| cx.leases.get(i).copied().unwrap_or(0));
    for op in ops {
        // Integer targets: one below, equal, one above the actual value.
        for (tname, actual) in [("version", ver), ("create", create), ("mod", modr)] {
            for refv in [actual - 1, actual, actual + 1] {
                let cmp = match tname {
                    "version" => Compare::version(key, op, refv),
                    "create" => Compare::create_revision(key, op, refv),
                    _ => Compare::mod_revision(key, op, refv),
                };
                let label = format!("compare {key} {tname} {op:?} {refv}");
                let r = cx.txn(&label, txn(vec![cmp], vec![get(key)], vec![])).await;
                let want = holds(actual.cmp(&refv), op);
                cx.expect(&label, succeeded(&r), Some(want));
            }
        }
        // Lease: 0, the key's lease, another (unknown) lease id.
        for (rname, refv) in [
            ("0", 0),
            ("its lease", lease_id),
            ("its lease + 1", lease_id + 1),
        ] {
            let label = format!("compare {key} lease {op:?} {rname}");
            let r = cx
                .txn(
                    &label,
                    txn(vec![Compare::lease(key, op, refv)], vec![], vec![get(key)]),
                )
                .await;
            let want = holds(lease_id.cmp(&refv), op);
            cx.expect(&label, succeeded(&r), Some(want));
        }
        // Value: below, equal, above (byte-wise); a missing key never matches a value.
        let below = if value.is_empty() {
            String::new()
        } else {
            value[..value.len() - 1].to_string()
        };
        for refv in [
            below,
            value.to_string(),
            format!("{value}0"),
            "x".to_string(),
        ] {
            let label = format!("compare {key} value {op:?} {refv:?}");
            let r = cx
                .txn(
                    &label,
                    txn(
                        vec![Compare::value(key, op, refv.as_str())],
                        vec![get(key)],
                        vec![],
                    ),
                )
                .await;
            let want = k.is_some() && holds(value.as_bytes().cmp(refv.as_bytes()), op);
            cx.expect(&label, succeeded(&r), Some(want));
        }
    }
}

/// Range and prefix compares: every key in the range must satisfy the compare.
async fn range_compares(cx: &mut Ctx, cases: Vec<(&str, Compare, bool)>) {
    for (label, cmp, want) in cases {
        let r = cx
            .txn(
                label,
                txn(
                    vec![cmp],
                    vec![TxnOp::get("t/", Some(prefix().with_keys_only()))],
                    vec![get("t/a")],
                ),
            )
            .await;
        cx.expect(label, succeeded(&r), Some(want));
    }
}

/// Several compares, `lease_on_t_l` (true) among them: all must hold.
async fn several_compares(cx: &mut Ctx, lease_on_t_l: Compare) {
    let all_true = vec![
        Compare::version("t/a", CompareOp::Equal, 1),
        Compare::create_revision("t/b", CompareOp::Greater, 2),
        Compare::mod_revision("t/c", CompareOp::Less, 5),
        Compare::value("t/b", CompareOp::Equal, "22"),
        lease_on_t_l,
        Compare::version("t/missing", CompareOp::Equal, 0),
    ];
    let r = cx
        .txn(
            "six true compares",
            txn(all_true.clone(), vec![get("t/a")], vec![get("t/b")]),
        )
        .await;
    cx.expect("six true compares", succeeded(&r), Some(true));
    let mut one_false = all_true;
    one_false.push(Compare::value("t/c", CompareOp::Greater, "3"));
    let r = cx
        .txn(
            "six true compares and a false one",
            txn(one_false, vec![get("t/a")], vec![get("t/b")]),
        )
        .await;
    cx.expect(
        "one false compare fails the txn",
        succeeded(&r),
        Some(false),
    );
}

/// Nothing the compare tests sent wrote anything.
async fn compares_wrote_nothing(cx: &mut Ctx) {
    let s = cx.rec_state("after compares").await;
    cx.check(s.starts_with("store rev 6 ["), || {
        format!("compares changed the store: {s}")
    });
}

/// Every compare target × every result kind, true and false outcomes, on existing keys and a
/// missing key; range and prefix compares; several compares at once. No key has a lease here
/// (LEASE compares against 0 and unknown ids only); a leased key: [`txn_compares_with_leases`].
async fn txn_compares(mut cx: Ctx) -> Ctx {
    let known = compare_data(&mut cx, None).await;
    for key in ["t/a", "t/b", "t/l", "t/missing"] {
        compare_every_target(&mut cx, key, known.get(key).copied()).await;
    }
    let cases: Vec<(&str, Compare, bool)> = vec![
        (
            "version > 0 over [t/a, t/d)",
            Compare::version("t/a", CompareOp::Greater, 0).with_range("t/d"),
            true,
        ),
        (
            "version = 1 over [t/a, t/d)",
            Compare::version("t/a", CompareOp::Equal, 1).with_range("t/d"),
            false,
        ),
        (
            "create < 5 over prefix t/",
            Compare::create_revision("t/", CompareOp::Less, 5).with_prefix(),
            false,
        ),
        (
            "create < 6 over prefix t/",
            Compare::create_revision("t/", CompareOp::Less, 6).with_prefix(),
            true,
        ),
        (
            "mod > 1 over prefix t/",
            Compare::mod_revision("t/", CompareOp::Greater, 1).with_prefix(),
            true,
        ),
        (
            "mod != 6 over prefix t/",
            Compare::mod_revision("t/", CompareOp::NotEqual, 6).with_prefix(),
            false,
        ),
        (
            "value != 3 over prefix t/",
            Compare::value("t/", CompareOp::NotEqual, "3").with_prefix(),
            false,
        ),
        (
            "value < 4 over [t/a, t/c)",
            Compare::value("t/a", CompareOp::Less, "4").with_range("t/c"),
            true,
        ),
        (
            "value > 0 over [t/a, t/c)",
            Compare::value("t/a", CompareOp::Greater, "0").with_range("t/c"),
            true,
        ),
        (
            "lease = 0 over prefix t/ (no leased key)",
            Compare::lease("t/", CompareOp::Equal, 0).with_prefix(),
            true,
        ),
        (
            "lease = 0 over [t/a, t/l)",
            Compare::lease("t/a", CompareOp::Equal, 0).with_range("t/l"),
            true,
        ),
        (
            "lease > 0 over prefix t/",
            Compare::lease("t/", CompareOp::Greater, 0).with_prefix(),
            false,
        ),
        (
            "version = 0 over empty prefix u/",
            Compare::version("u/", CompareOp::Equal, 0).with_prefix(),
            true,
        ),
        (
            "create = 0 over empty range [t/d, t/k)",
            Compare::create_revision("t/d", CompareOp::Equal, 0).with_range("t/k"),
            true,
        ),
        (
            "lease = 0 over empty prefix u/",
            Compare::lease("u/", CompareOp::Equal, 0).with_prefix(),
            true,
        ),
        (
            "value = \"\" over empty prefix u/",
            Compare::value("u/", CompareOp::Equal, "").with_prefix(),
            false,
        ),
        (
            "value != x over empty prefix u/",
            Compare::value("u/", CompareOp::NotEqual, "x").with_prefix(),
            false,
        ),
        (
            "version > 0 from t/b to the end",
            Compare::version("t/b", CompareOp::Greater, 0).with_range(vec![0u8]),
            true,
        ),
        (
            "version < 2 from t/b to the end",
            Compare::version("t/b", CompareOp::Less, 2).with_range(vec![0u8]),
            false,
        ),
    ];
    range_compares(&mut cx, cases).await;
    several_compares(&mut cx, Compare::lease("t/l", CompareOp::Equal, 0)).await;
    let r = cx
        .txn("no compares", txn(vec![], vec![], vec![get("t/a")]))
        .await;
    cx.expect("no compares succeeds", succeeded(&r), Some(true));
    compares_wrote_nothing(&mut cx).await;
    cx
}

/// [`txn_compares`] with t/l attached to a lease: every compare target on the leased key,
/// LEASE compares over ranges with and without it, a LEASE compare among several.
async fn txn_compares_with_leases(mut cx: Ctx) -> Ctx {
    let l0 = cx.grant("grant L0").await;
    let known = compare_data(&mut cx, Some(l0)).await;
    compare_every_target(&mut cx, "t/l", known.get("t/l").copied()).await;
    let cases: Vec<(&str, Compare, bool)> = vec![
        (
            "lease = 0 over prefix t/",
            Compare::lease("t/", CompareOp::Equal, 0).with_prefix(),
            false,
        ),
        (
            "lease = 0 over [t/a, t/l)",
            Compare::lease("t/a", CompareOp::Equal, 0).with_range("t/l"),
            true,
        ),
        (
            "lease = L0 over [t/l, t/m)",
            Compare::lease("t/l", CompareOp::Equal, l0).with_range("t/m"),
            true,
        ),
        (
            "lease > 0 over prefix t/",
            Compare::lease("t/", CompareOp::Greater, 0).with_prefix(),
            false,
        ),
    ];
    range_compares(&mut cx, cases).await;
    several_compares(&mut cx, Compare::lease("t/l", CompareOp::Equal, l0)).await;
    compares_wrote_nothing(&mut cx).await;
    cx
}

/// Nested txns in success and failure branches, responses of every op kind inside them with
/// their header revisions, compares of nested txns evaluated against the state before the txn,
/// and the revision rules for nested writes. (Leases: [`txn_nested_responses_with_leases`].)
async fn txn_nested_responses(mut cx: Ctx) -> Ctx {
    nested_t1_t2(
        &mut cx,
        None,
        "store rev 6 [t/a=\"10\" c2 m6 v2 l0; t/b=\"2\" c3 m3 v1 l0; t/deep=\"d\" c6 m6 v1 l0; \
         t/l=\"plain\" c5 m5 v1 l0; t/n=\"x\" c6 m6 v1 l0]",
    )
    .await;

    // Read-only nesting: no revision.
    let t3 = txn(
        vec![],
        vec![TxnOp::txn(txn(
            vec![],
            vec![get("t/a"), TxnOp::txn(txn(vec![], vec![], vec![]))],
            vec![],
        ))],
        vec![],
    );
    let r = cx.txn("T3 read-only nested", t3).await;
    cx.expect("T3 header", r.map(|r| rev_of(r.header())), Some(7));

    // Writes only in branches not taken, at several depths: no revision.
    let t4 = txn(
        vec![Compare::version("t/a", CompareOp::Greater, 0)],
        vec![
            get("t/a"),
            TxnOp::txn(txn(
                vec![Compare::version("t/a", CompareOp::Equal, 0)],
                vec![put("t/no1", "1")],
                vec![get("t/b"), TxnOp::delete("t/missing", None)],
            )),
        ],
        vec![put("t/no2", "2")],
    );
    let r = cx.txn("T4 writes only in branches not taken", t4).await;
    cx.expect("T4 header", r.map(|r| rev_of(r.header())), Some(7));
    cx.expect_rev("revision after T4", 7).await;

    // Writes at several depths in one request: one revision, every response sees it.
    let t5 = txn(
        vec![],
        vec![
            put("t/w1", "1"),
            TxnOp::txn(txn(
                vec![],
                vec![
                    put("t/w2", "2"),
                    TxnOp::txn(txn(vec![], vec![put("t/w3", "3")], vec![])),
                ],
                vec![],
            )),
            TxnOp::get("t/w", Some(prefix())),
        ],
        vec![],
    );
    let r = cx.txn("T5 writes at three depths", t5).await;
    cx.expect("T5 header", r.map(|r| rev_of(r.header())), Some(8));
    let s = cx.rec_state("after T5").await;
    cx.check(s.contains("t/w3=\"3\" c8 m8 v1"), || {
        format!("T5 nested writes missing: {s}")
    });
    // Same key written in the success branch and in the failure branch: allowed.
    let r = cx
        .txn(
            "same key in then and else",
            txn(
                vec![Compare::version("t/w1", CompareOp::Equal, 1)],
                vec![put("t/w1", "then")],
                vec![put("t/w1", "else")],
            ),
        )
        .await;
    cx.expect("then/else on the same key", succeeded(&r), Some(true));
    cx.rec_state("final").await;
    cx
}

/// [`txn_nested_responses`] with t/l attached to a lease: the lease is kept through T1, T2's
/// nested LEASE compare on t/l holds, and its nested delete returns the leased key.
async fn txn_nested_responses_with_leases(mut cx: Ctx) -> Ctx {
    let l0 = cx.grant("grant L0").await;
    nested_t1_t2(
        &mut cx,
        Some(l0),
        "store rev 6 [t/a=\"10\" c2 m6 v2 l0; t/b=\"2\" c3 m3 v1 l0; t/deep=\"d\" c6 m6 v1 l0; \
         t/l=\"leased\" c5 m5 v1 lL0; t/n=\"x\" c6 m6 v1 l0]",
    )
    .await;
    cx
}

/// The first part of the nested txn tests: t/a, t/b, t/c and t/l (attached to `lease` if given,
/// which must be the first lease granted, L0) at revisions 2..=5; T1 (revision 6), after which
/// the store must be `after_t1`; T2 (revision 7), whose innermost compare is t/l's LEASE.
async fn nested_t1_t2(cx: &mut Ctx, lease: Option<i64>, after_t1: &str) {
    cx.put("put t/a", "t/a", "1", None).await; // 2
    cx.put("put t/b", "t/b", "2", None).await; // 3
    cx.put("put t/c", "t/c", "3", None).await; // 4
    let t_l_lease = match lease {
        Some(l0) => {
            cx.put(
                "put t/l with L0",
                "t/l",
                "leased",
                Some(PutOptions::new().with_lease(l0)),
            )
            .await; // 5
            l0
        }
        None => {
            cx.put("put t/l", "t/l", "plain", None).await; // 5
            0
        }
    };

    // Outer success; nested txn in the success branch whose compare reads t/a *before* the
    // outer put (etcd evaluates every compare of the request on the state before it).
    let t1 = txn(
        vec![
            Compare::version("t/a", CompareOp::Equal, 1),
            Compare::value("t/b", CompareOp::Equal, "2"),
        ],
        vec![
            get("t/a"),
            TxnOp::put("t/a", "10", Some(PutOptions::new().with_prev_key())),
            get("t/a"),
            TxnOp::delete("t/c", Some(DeleteOptions::new().with_prev_key())),
            TxnOp::get("t/", Some(prefix().with_limit(2))),
            TxnOp::txn(txn(
                vec![Compare::value("t/a", CompareOp::Equal, "1")],
                vec![
                    put("t/n", "x"),
                    get("t/n"),
                    TxnOp::delete("t/missing", None),
                    TxnOp::txn(txn(
                        vec![Compare::version("t/zz", CompareOp::NotEqual, 0)],
                        vec![put("t/never", "1")],
                        vec![
                            get("t/a"),
                            TxnOp::put("t/deep", "d", Some(PutOptions::new().with_prev_key())),
                        ],
                    )),
                ],
                vec![put("t/wrong", "w")],
            )),
            TxnOp::get("t/", Some(prefix())),
        ],
        vec![put("t/else", "e")],
    );
    let r = cx.txn("T1 nested in success", t1).await;
    cx.expect("T1 succeeded", succeeded(&r), Some(true));
    cx.expect(
        "T1 is one revision",
        r.as_ref().map(|r| rev_of(r.header())),
        Some(6),
    );
    if let Some(r) = &r {
        let ops = r.op_responses();
        let nested = match ops.get(5) {
            Some(TxnOpResponse::Txn(t)) => Some(t.succeeded()),
            _ => None,
        };
        cx.expect(
            "nested compare sees the state before the txn",
            nested,
            Some(true),
        );
    }
    let s = cx.rec_state("after T1").await;
    cx.expect("state after T1", s.as_str(), after_t1);

    // Outer failure; nested txns three deep in the failure branch, reads before and after the
    // first write (their header revisions differ), a delete of nothing before any write.
    let t2 = txn(
        vec![Compare::value("t/a", CompareOp::Equal, "nope")],
        vec![put("t/x", "x")],
        vec![
            TxnOp::delete("t/nothing", None),
            get("t/a"),
            TxnOp::txn(txn(
                vec![Compare::create_revision("t/missing", CompareOp::Equal, 0)],
                vec![TxnOp::txn(txn(
                    vec![Compare::lease("t/l", CompareOp::Equal, t_l_lease)],
                    vec![
                        get("t/l"),
                        TxnOp::delete("t/l", Some(DeleteOptions::new().with_prev_key())),
                        get("t/l"),
                        TxnOp::delete("t/nothing2", None),
                    ],
                    vec![put("t/l2", "no")],
                ))],
                vec![],
            )),
            TxnOp::get("t/", Some(prefix().with_keys_only())),
            TxnOp::get("t/", Some(prefix().with_count_only())),
        ],
    );
    let r = cx.txn("T2 nested in failure", t2).await;
    cx.expect("T2 succeeded", succeeded(&r), Some(false));
    cx.expect("T2 header", r.as_ref().map(|r| rev_of(r.header())), Some(7));
    let s = cx.rec_state("after T2").await;
    cx.check(!s.contains("t/l=") && !s.contains("t/l2="), || {
        format!("T2: the nested compare on t/l's lease did not hold: {s}")
    });
}

/// A lease id never granted (the checks that use it must not depend on the Lease service).
const NO_SUCH_LEASE: i64 = 424_242;

/// Every client error of the KV API: exact gRPC code and message, and the store (contents and
/// revision) unchanged afterwards. Positive controls sit next to the limits. (A key attached to
/// a lease: [`errors_leave_store_unchanged_with_leases`].)
async fn errors_leave_store_unchanged(mut cx: Ctx) -> Ctx {
    const IA: &str = "InvalidArgument";
    const OOR: &str = "OutOfRange";
    const NO_KEY: &str = "etcdserver: key is not provided";
    const TOO_MANY: &str = "etcdserver: too many operations in txn request";
    const DUP: &str = "etcdserver: duplicate key given in txn request";
    const COMPACTED: &str = "etcdserver: mvcc: required revision has been compacted";
    const FUTURE: &str = "etcdserver: mvcc: required revision is a future revision";
    const NOT_FOUND: &str = "etcdserver: key not found";

    for (k, v) in [
        ("e/a", "1"),
        ("e/b", "2"),
        ("e/c", "3"),
        ("e/a", "4"),
        ("e/b", "5"),
        ("e/d", "6"),
    ] {
        cx.put(&format!("put {k}"), k, v, None).await; // revisions 2..=7
    }
    cx.put("put e/l", "e/l", "l", None).await; // 8

    macro_rules! err_case {
        ($label:expr, $code:expr, $msg:expr, $op:expr) => {{
            let before = cx.state().await;
            let r = $op.await;
            cx.expect_err($label, r, $code, $msg);
            cx.expect_unchanged($label, &before).await;
        }};
    }

    // Empty keys.
    err_case!("put empty key", IA, NO_KEY, cx.c.put("", "v", None));
    err_case!("range empty key", IA, NO_KEY, cx.c.get("", None));
    err_case!(
        "range empty key with range_end",
        IA,
        NO_KEY,
        cx.c.get("", Some(GetOptions::new().with_range("z")))
    );
    err_case!("delete empty key", IA, NO_KEY, cx.c.delete("", None));
    err_case!(
        "txn compare on empty key",
        IA,
        NO_KEY,
        cx.c.txn(txn(
            vec![Compare::version("", CompareOp::Equal, 0)],
            vec![],
            vec![]
        ))
    );
    err_case!(
        "txn put empty key",
        IA,
        NO_KEY,
        cx.c.txn(txn(vec![], vec![put("", "v")], vec![]))
    );
    err_case!(
        "txn delete empty key in failure",
        IA,
        NO_KEY,
        cx.c.txn(txn(vec![], vec![], vec![TxnOp::delete("", None)]))
    );
    err_case!(
        "nested txn range empty key",
        IA,
        NO_KEY,
        cx.c.txn(txn(
            vec![],
            vec![TxnOp::txn(txn(vec![], vec![get("")], vec![]))],
            vec![]
        ))
    );

    // Too many operations (--max-txn-ops 128).
    let puts = |n: usize| {
        (0..n)
            .map(|i| put(&format!("e/many/{i:03}"), "v"))
            .collect::<Vec<_>>()
    };
    let gets = |n: usize| {
        (0..n)
            .map(|i| get(&format!("e/many/{i:03}")))
            .collect::<Vec<_>>()
    };
    err_case!(
        "129 ops in success",
        IA,
        TOO_MANY,
        cx.c.txn(txn(vec![], puts(129), vec![]))
    );
    err_case!(
        "129 ops in failure",
        IA,
        TOO_MANY,
        cx.c.txn(txn(vec![], vec![], gets(129)))
    );
    let cmps = |n: usize| {
        (0..n)
            .map(|i| Compare::version(format!("e/many/{i:03}"), CompareOp::Equal, 0))
            .collect::<Vec<_>>()
    };
    err_case!(
        "129 compares",
        IA,
        TOO_MANY,
        cx.c.txn(txn(cmps(129), vec![], vec![]))
    );
    // A nested txn may use what the outer level leaves: 128 - 100 = 28 ops.
    let nested = |inner: usize| {
        let mut ops = gets(99);
        ops.push(TxnOp::txn(txn(vec![], gets(inner), vec![])));
        txn(vec![], ops, vec![])
    };
    err_case!(
        "100 ops with a nested txn of 29",
        IA,
        TOO_MANY,
        cx.c.txn(nested(29))
    );
    let before = cx.state().await;
    let r = cx.c.txn(nested(28)).await;
    cx.check(r.is_ok(), || {
        format!(
            "100 ops with a nested txn of 28 must pass: {:?}",
            r.as_ref().err().map(err_s)
        )
    });
    cx.expect_unchanged("100 ops with a nested txn of 28 (read only)", &before)
        .await;
    let r = cx.c.txn(txn(cmps(128), vec![], gets(128))).await;
    cx.rec(
        "128 compares and 128 gets",
        r.as_ref()
            .map_or_else(err_s, |r| format!("succeeded {}", r.succeeded())),
    );
    cx.check(r.is_ok(), || "128 compares and 128 ops must pass".into());

    // Duplicate keys.
    err_case!(
        "put+put same key",
        IA,
        DUP,
        cx.c.txn(txn(vec![], vec![put("e/d", "1"), put("e/d", "2")], vec![]))
    );
    err_case!(
        "put+put same key in failure",
        IA,
        DUP,
        cx.c.txn(txn(
            vec![],
            vec![get("e/a")],
            vec![put("e/d", "1"), put("e/d", "2")]
        ))
    );
    err_case!(
        "put inside a deleted range",
        IA,
        DUP,
        cx.c.txn(txn(
            vec![],
            vec![
                TxnOp::delete("e/", Some(DeleteOptions::new().with_prefix())),
                put("e/z", "1")
            ],
            vec![]
        ))
    );
    err_case!(
        "put then delete of the same key",
        IA,
        DUP,
        cx.c.txn(txn(
            vec![],
            vec![put("e/q", "1"), TxnOp::delete("e/q", None)],
            vec![]
        ))
    );
    err_case!(
        "put in outer and nested success",
        IA,
        DUP,
        cx.c.txn(txn(
            vec![],
            vec![
                put("e/d", "1"),
                TxnOp::txn(txn(vec![], vec![put("e/d", "2")], vec![]))
            ],
            vec![]
        ))
    );
    err_case!(
        "put in outer and nested failure",
        IA,
        DUP,
        cx.c.txn(txn(
            vec![],
            vec![
                put("e/d", "1"),
                TxnOp::txn(txn(vec![], vec![], vec![put("e/d", "2")]))
            ],
            vec![]
        ))
    );
    err_case!(
        "outer delete range, nested put",
        IA,
        DUP,
        cx.c.txn(txn(
            vec![],
            vec![
                TxnOp::delete("e/a", Some(DeleteOptions::new().with_range("e/c"))),
                TxnOp::txn(txn(vec![], vec![put("e/b", "2")], vec![])),
            ],
            vec![]
        ))
    );
    err_case!(
        "nested delete, outer put",
        IA,
        DUP,
        cx.c.txn(txn(
            vec![],
            vec![
                put("e/b", "1"),
                TxnOp::txn(txn(vec![], vec![TxnOp::delete("e/b", None)], vec![]))
            ],
            vec![]
        ))
    );
    err_case!(
        "two nested txns put the same key",
        IA,
        DUP,
        cx.c.txn(txn(
            vec![],
            vec![
                TxnOp::txn(txn(vec![], vec![put("e/d", "1")], vec![])),
                TxnOp::txn(txn(vec![], vec![], vec![put("e/d", "2")])),
            ],
            vec![]
        ))
    );
    err_case!(
        "duplicate two levels down",
        IA,
        DUP,
        cx.c.txn(txn(
            vec![],
            vec![TxnOp::txn(txn(
                vec![],
                vec![TxnOp::txn(txn(
                    vec![],
                    vec![put("e/d", "1"), put("e/d", "2")],
                    vec![]
                ))],
                vec![]
            ))],
            vec![]
        ))
    );
    // Allowed: the same key in mutually exclusive branches, and overlapping deletes.
    let r = cx
        .txn(
            "same key in nested then and else (allowed)",
            txn(
                vec![],
                vec![TxnOp::txn(txn(
                    vec![Compare::version("e/d", CompareOp::Equal, 1)],
                    vec![put("e/d", "t")],
                    vec![put("e/d", "f")],
                ))],
                vec![],
            ),
        )
        .await;
    cx.check(r.is_some(), || {
        "same key in nested then/else must be allowed".into()
    });
    let r = cx
        .txn(
            "overlapping deletes (allowed)",
            txn(
                vec![],
                vec![
                    TxnOp::delete("e/x", None),
                    TxnOp::delete("e/w", Some(DeleteOptions::new().with_range("e/y"))),
                ],
                vec![],
            ),
        )
        .await;
    cx.check(r.is_some(), || "overlapping deletes must be allowed".into());
    let rev_now = cx.rev().await;

    // Request too large (--max-request-bytes 1.5 MiB; below the gRPC limit of +512 KiB).
    let big = "x".repeat(1_600_000);
    err_case!(
        "put of 1.6 MB",
        IA,
        "etcdserver: request is too large",
        cx.c.put("e/big", big.as_str(), None)
    );

    // Future and compacted revisions.
    err_case!(
        "range at the next revision",
        OOR,
        FUTURE,
        cx.c.get("e/a", Some(GetOptions::new().with_revision(rev_now + 1)))
    );
    err_case!(
        "range far in the future",
        OOR,
        FUTURE,
        cx.c.get("e/a", Some(GetOptions::new().with_revision(rev_now + 1000)))
    );
    err_case!(
        "txn range in the future",
        OOR,
        FUTURE,
        cx.c.txn(txn(
            vec![],
            vec![TxnOp::get(
                "e/a",
                Some(GetOptions::new().with_revision(rev_now + 5))
            )],
            vec![]
        ))
    );
    err_case!(
        "compact in the future",
        OOR,
        FUTURE,
        cx.c.compact(rev_now + 1, None)
    );
    cx.compact("compact to 5", 5).await;
    err_case!(
        "range below the compact revision",
        OOR,
        COMPACTED,
        cx.c.get("e/a", Some(GetOptions::new().with_revision(4)))
    );
    err_case!(
        "range at revision 1 after compaction",
        OOR,
        COMPACTED,
        cx.c.get("e/a", Some(GetOptions::new().with_revision(1)))
    );
    let r = cx
        .get(
            "range at the compact revision",
            "e/",
            Some(prefix().with_revision(5)),
        )
        .await;
    cx.check(r.is_some(), || {
        "a range at exactly the compact revision must work".into()
    });
    err_case!(
        "txn range below the compact revision",
        OOR,
        COMPACTED,
        cx.c.txn(txn(
            vec![],
            vec![TxnOp::get("e/a", Some(GetOptions::new().with_revision(3)))],
            vec![]
        ))
    );
    err_case!(
        "compact at the compact revision",
        OOR,
        COMPACTED,
        cx.c.compact(5, None)
    );
    err_case!(
        "compact below the compact revision",
        OOR,
        COMPACTED,
        cx.c.compact(3, None)
    );

    // Put options.
    err_case!(
        "ignore_value on a missing key",
        IA,
        NOT_FOUND,
        cx.c.put("e/missing", "", Some(PutOptions::new().with_ignore_value()))
    );
    err_case!(
        "ignore_lease on a missing key",
        IA,
        NOT_FOUND,
        cx.c.put(
            "e/missing",
            "v",
            Some(PutOptions::new().with_ignore_lease())
        )
    );
    err_case!(
        "ignore_value in a txn on a missing key",
        IA,
        NOT_FOUND,
        cx.c.txn(txn(
            vec![],
            vec![TxnOp::put(
                "e/missing",
                "",
                Some(PutOptions::new().with_ignore_value())
            )],
            vec![]
        ))
    );
    err_case!(
        "value with ignore_value",
        IA,
        "etcdserver: value is provided",
        cx.c.put("e/a", "v", Some(PutOptions::new().with_ignore_value()))
    );
    err_case!(
        "lease with ignore_lease",
        IA,
        "etcdserver: lease is provided",
        cx.c.put(
            "e/l",
            "v",
            Some(
                PutOptions::new()
                    .with_ignore_lease()
                    .with_lease(NO_SUCH_LEASE)
            )
        )
    );
    err_case!(
        "put with an unknown lease",
        "NotFound",
        "etcdserver: requested lease not found",
        cx.c.put(
            "e/a",
            "v",
            Some(PutOptions::new().with_lease(NO_SUCH_LEASE))
        )
    );
    err_case!(
        "txn put with an unknown lease",
        "NotFound",
        "etcdserver: requested lease not found",
        cx.c.txn(txn(
            vec![],
            vec![TxnOp::put(
                "e/a",
                "v",
                Some(PutOptions::new().with_lease(NO_SUCH_LEASE))
            )],
            vec![]
        ))
    );
    // ignore_lease on an existing key keeps its lease (here: none).
    ignore_lease_keeps_the_lease(&mut cx, 0).await;
    cx.rec_state("final").await;
    cx
}

/// A put with ignore_lease on the existing key e/l passes and keeps e/l's lease, `lease`.
async fn ignore_lease_keeps_the_lease(cx: &mut Ctx, lease: i64) {
    let r = cx
        .put(
            "ignore_lease on an existing key",
            "e/l",
            "new",
            Some(PutOptions::new().with_ignore_lease()),
        )
        .await;
    cx.check(r.is_some(), || {
        "ignore_lease on an existing key must pass".into()
    });
    let r = cx.get("e/l after ignore_lease", "e/l", None).await;
    let got = r.and_then(|r| r.kvs().first().map(|kv| kv.lease()));
    cx.expect("ignore_lease keeps the lease", got, Some(lease));
}

/// [`errors_leave_store_unchanged`] with e/l attached to a lease: a rejected put on it (a lease
/// given with ignore_lease) leaves the key and its lease unchanged; ignore_lease keeps the lease.
async fn errors_leave_store_unchanged_with_leases(mut cx: Ctx) -> Ctx {
    for (k, v) in [
        ("e/a", "1"),
        ("e/b", "2"),
        ("e/c", "3"),
        ("e/a", "4"),
        ("e/b", "5"),
        ("e/d", "6"),
    ] {
        cx.put(&format!("put {k}"), k, v, None).await; // revisions 2..=7
    }
    let l0 = cx.grant("grant L0").await;
    cx.put(
        "put e/l with L0",
        "e/l",
        "l",
        Some(PutOptions::new().with_lease(l0)),
    )
    .await; // 8
    let before = cx.state().await;
    let r =
        cx.c.put(
            "e/l",
            "v",
            Some(
                PutOptions::new()
                    .with_ignore_lease()
                    .with_lease(NO_SUCH_LEASE),
            ),
        )
        .await;
    cx.expect_err(
        "lease with ignore_lease",
        r,
        "InvalidArgument",
        "etcdserver: lease is provided",
    );
    cx.expect_unchanged("lease with ignore_lease", &before)
        .await;
    ignore_lease_keeps_the_lease(&mut cx, l0).await;
    cx.rec_state("final").await;
    cx
}
