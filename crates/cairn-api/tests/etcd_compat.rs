//! Checks cairn's wire contract against etcd's own sources.
//!
//! etcd 3.4's `.proto` files and `rpctypes/error.go` come from the Debian package
//! `golang-etcd-server-dev` (set `CAIRN_ETCD_SRC` to use another checkout of etcd 3.4's tree).
//! When they are missing these tests fail rather than pass silently.

use std::collections::BTreeMap;
use std::path::PathBuf;

use cairn_api::EtcdError;
use protox::file::{File, FileResolver};
use protox::prost_reflect::{
    Cardinality, DescriptorPool, EnumDescriptor, FieldDescriptor, Kind, MessageDescriptor,
};

const DEFAULT_ETCD_SRC: &str = "/usr/share/gocode/src/go.etcd.io/etcd";

/// etcd's proto files, by import name (relative to the directory above etcd's tree).
const ETCD_PROTOS: &[&str] = &[
    "etcd/mvcc/mvccpb/kv.proto",
    "etcd/auth/authpb/auth.proto",
    "etcd/etcdserver/etcdserverpb/rpc.proto",
    "etcd/etcdserver/api/v3election/v3electionpb/v3election.proto",
    "etcd/etcdserver/api/v3lock/v3lockpb/v3lock.proto",
];

fn etcd_src() -> PathBuf {
    let dir = std::env::var_os("CAIRN_ETCD_SRC")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_ETCD_SRC));
    assert!(
        dir.join("etcdserver/etcdserverpb/rpc.proto").is_file(),
        "etcd 3.4 sources not found at {}: install the Debian package `golang-etcd-server-dev` \
         (apt-get install golang-etcd-server-dev), or point CAIRN_ETCD_SRC at etcd 3.4's tree",
        dir.display()
    );
    dir
}

// ------------------------------------------------------------------ loading etcd's protos

/// Drops what only matters to etcd's Go build: gogoproto and grpc-gateway imports and options.
/// Comments go too, so braces inside them cannot confuse the option-block removal.
fn sanitize(src: &str) -> String {
    let mut lines = Vec::new();
    for line in src.lines() {
        let code = strip_comment(line);
        let t = code.trim();
        if t.starts_with("import \"gogoproto/") || t.starts_with("import \"google/api/") {
            continue;
        }
        if t.starts_with("option (gogoproto.") {
            continue;
        }
        lines.push(code.to_owned());
    }
    let text = lines.join("\n");
    // Remove every `option (google.api.http) = { ... };` block.
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(at) = rest.find("option (google.api.http)") {
        out.push_str(&rest[..at]);
        let after = &rest[at..];
        let open = after.find('{').expect("option block has a body");
        let mut depth = 0usize;
        let mut end = None;
        for (i, c) in after.char_indices().skip(open) {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = Some(i);
                        break;
                    }
                }
                _ => {}
            }
        }
        let end = end.expect("option block is closed");
        let tail = &after[end + 1..];
        rest = tail.trim_start().strip_prefix(';').unwrap_or(tail);
    }
    out.push_str(rest);
    out
}

/// The line without a trailing `//` comment (ignoring `//` inside string literals).
fn strip_comment(line: &str) -> &str {
    let bytes = line.as_bytes();
    let mut in_str = false;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if in_str => i += 1,
            b'"' => in_str = !in_str,
            b'/' if !in_str && bytes.get(i + 1) == Some(&b'/') => return &line[..i],
            _ => {}
        }
        i += 1;
    }
    line
}

struct EtcdResolver {
    /// The directory that contains etcd's tree, so `etcd/...` import names resolve.
    root: PathBuf,
    /// The directory of etcd's tree itself (may be named other than `etcd`).
    tree: PathBuf,
}

impl FileResolver for EtcdResolver {
    fn open_file(&self, name: &str) -> Result<File, protox::Error> {
        let path = match name.strip_prefix("etcd/") {
            Some(rest) => self.tree.join(rest),
            None => self.root.join(name),
        };
        match std::fs::read_to_string(&path) {
            Ok(src) => File::from_source(name, &sanitize(&src)),
            Err(_) => Err(protox::Error::file_not_found(name)),
        }
    }
}

fn etcd_pool() -> DescriptorPool {
    let tree = etcd_src();
    let root = tree.parent().map(PathBuf::from).unwrap_or_default();
    let mut compiler = protox::Compiler::with_file_resolver(EtcdResolver { root, tree });
    compiler.include_imports(true);
    compiler
        .open_files(ETCD_PROTOS)
        .unwrap_or_else(|e| panic!("compiling etcd's protos: {e:?}"));
    compiler.descriptor_pool()
}

fn our_pool() -> DescriptorPool {
    DescriptorPool::decode(cairn_api::FILE_DESCRIPTOR_SET).expect("our descriptor set decodes")
}

// ------------------------------------------------------------------ comparing

fn kind_name(kind: &Kind) -> String {
    match kind {
        Kind::Message(m) => format!("message {}", m.full_name()),
        Kind::Enum(e) => format!("enum {}", e.full_name()),
        other => format!("{other:?}"),
    }
}

fn cardinality_name(c: Cardinality) -> &'static str {
    match c {
        Cardinality::Optional => "optional",
        Cardinality::Required => "required",
        Cardinality::Repeated => "repeated",
    }
}

fn describe(f: &FieldDescriptor) -> String {
    format!(
        "{} {} = {} (json {}, oneof {:?}, packed {}, presence {})",
        cardinality_name(f.cardinality()),
        kind_name(&f.kind()),
        f.number(),
        f.json_name(),
        f.containing_oneof().map(|o| o.name().to_owned()),
        f.is_packed(),
        f.supports_presence(),
    )
}

fn compare_message(theirs: &MessageDescriptor, ours: &MessageDescriptor, errors: &mut Vec<String>) {
    let name = theirs.full_name();
    for tf in theirs.fields() {
        match ours.get_field_by_name(tf.name()) {
            None => errors.push(format!("{name}: field `{}` missing", tf.name())),
            Some(of) => {
                let (t, o) = (describe(&tf), describe(&of));
                if t != o {
                    errors.push(format!(
                        "{name}.{}: etcd has `{t}`, cairn has `{o}`",
                        tf.name()
                    ));
                }
            }
        }
        if let Some(of) = ours.get_field(tf.number()) {
            if of.name() != tf.name() {
                errors.push(format!(
                    "{name}: field number {} is `{}` in etcd but `{}` in cairn",
                    tf.number(),
                    tf.name(),
                    of.name()
                ));
            }
        }
    }
}

fn compare_enum(theirs: &EnumDescriptor, ours: &EnumDescriptor, errors: &mut Vec<String>) {
    let name = theirs.full_name();
    let map = |e: &EnumDescriptor| -> BTreeMap<String, i32> {
        e.values()
            .map(|v| (v.name().to_owned(), v.number()))
            .collect()
    };
    let (t, o) = (map(theirs), map(ours));
    for (value, number) in &t {
        match o.get(value) {
            None => errors.push(format!("enum {name}: value {value} missing")),
            Some(n) if n != number => errors.push(format!(
                "enum {name}: {value} is {number} in etcd, {n} in cairn"
            )),
            _ => {}
        }
    }
    for (value, number) in &o {
        if !t.contains_key(value) && t.values().any(|n| n == number) {
            errors.push(format!(
                "enum {name}: cairn's extra {value} reuses etcd's number {number}"
            ));
        }
    }
}

struct Comparison {
    errors: Vec<String>,
    messages: usize,
    enums: usize,
    methods: usize,
}

/// Every message, enum and service of `etcd` must exist in `ours` with identical fields, values
/// and methods; `ours` may add fields, values and methods on unused numbers.
fn compare_pools(etcd: &DescriptorPool, ours: &DescriptorPool) -> Comparison {
    let mut errors = Vec::new();
    let (mut messages, mut enums, mut methods) = (0, 0, 0);

    for theirs in etcd.all_messages() {
        // Skip descriptor.proto and friends, if any slipped in.
        if theirs.full_name().starts_with("google.") {
            continue;
        }
        messages += 1;
        match ours.get_message_by_name(theirs.full_name()) {
            None => errors.push(format!("message {} missing", theirs.full_name())),
            Some(o) => compare_message(&theirs, &o, &mut errors),
        }
    }
    for theirs in etcd.all_enums() {
        if theirs.full_name().starts_with("google.") {
            continue;
        }
        enums += 1;
        match ours.get_enum_by_name(theirs.full_name()) {
            None => errors.push(format!("enum {} missing", theirs.full_name())),
            Some(o) => compare_enum(&theirs, &o, &mut errors),
        }
    }
    for theirs in etcd.services() {
        let Some(o) = ours.get_service_by_name(theirs.full_name()) else {
            errors.push(format!("service {} missing", theirs.full_name()));
            continue;
        };
        for tm in theirs.methods() {
            methods += 1;
            let Some(om) = o.methods().find(|m| m.name() == tm.name()) else {
                errors.push(format!("method {} missing", tm.full_name()));
                continue;
            };
            let sig = |m: &protox::prost_reflect::MethodDescriptor| {
                format!(
                    "({}{}) returns ({}{})",
                    if m.is_client_streaming() {
                        "stream "
                    } else {
                        ""
                    },
                    m.input().full_name(),
                    if m.is_server_streaming() {
                        "stream "
                    } else {
                        ""
                    },
                    m.output().full_name(),
                )
            };
            if sig(&tm) != sig(&om) {
                errors.push(format!(
                    "{}: etcd {} vs cairn {}",
                    tm.full_name(),
                    sig(&tm),
                    sig(&om)
                ));
            }
        }
    }
    Comparison {
        errors,
        messages,
        enums,
        methods,
    }
}

#[test]
fn protos_match_etcd() {
    let c = compare_pools(&etcd_pool(), &our_pool());
    assert!(
        c.errors.is_empty(),
        "cairn's protos differ from etcd's:\n  {}",
        c.errors.join("\n  ")
    );
    // Guard against a vacuous pass (e.g. a sanitizer that dropped everything).
    assert!(
        c.messages >= 100,
        "only {} etcd messages compared",
        c.messages
    );
    assert!(c.enums >= 8, "only {} etcd enums compared", c.enums);
    assert!(c.methods >= 40, "only {} etcd methods compared", c.methods);
}

/// Serves our own proto dir, with some files' text replaced.
struct PatchedResolver {
    dir: PathBuf,
    patches: Vec<(&'static str, &'static str)>,
}

impl FileResolver for PatchedResolver {
    fn open_file(&self, name: &str) -> Result<File, protox::Error> {
        let mut src = std::fs::read_to_string(self.dir.join(name))
            .map_err(|_| protox::Error::file_not_found(name))?;
        for (from, to) in &self.patches {
            src = src.replace(from, to);
        }
        File::from_source(name, &src)
    }
}

/// The comparison really catches a changed number, type, label, streaming flag or enum value.
#[test]
fn comparison_catches_differences() {
    let etcd = etcd_pool();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("proto");
    let cases: &[(&str, &str, &str)] = &[
        (
            "  int64 deleted = 2;",
            "  int64 deleted = 9;",
            "etcdserverpb.DeleteRangeResponse.deleted",
        ),
        (
            "  int64 deleted = 2;",
            "  uint64 deleted = 2;",
            "etcdserverpb.DeleteRangeResponse.deleted",
        ),
        (
            "  int64 deleted = 2;",
            "  repeated int64 deleted = 2;",
            "etcdserverpb.DeleteRangeResponse.deleted",
        ),
        (
            "  uint32 hash = 2;\n  int64 compact_revision = 3;",
            "  uint32 hash = 2;\n  int64 compact_revision = 5;",
            "etcdserverpb.HashKVResponse",
        ),
        (
            "    DESCEND = 2;",
            "    DESCEND = 3;",
            "enum etcdserverpb.RangeRequest.SortOrder",
        ),
        (
            "rpc Snapshot(SnapshotRequest) returns (stream SnapshotResponse)",
            "rpc Snapshot(SnapshotRequest) returns (SnapshotResponse)",
            "etcdserverpb.Maintenance.Snapshot",
        ),
        (
            "  bytes range_end = 64;",
            "  bytes range_end = 63;",
            "etcdserverpb.Compare",
        ),
    ];
    for (from, to, expect) in cases {
        let mut compiler = protox::Compiler::with_file_resolver(PatchedResolver {
            dir: dir.clone(),
            patches: vec![(from, to)],
        });
        compiler.include_imports(true);
        compiler
            .open_files(["etcdserverpb/rpc.proto"])
            .unwrap_or_else(|e| panic!("patched rpc.proto: {e:?}"));
        let src = std::fs::read_to_string(dir.join("etcdserverpb/rpc.proto")).unwrap();
        assert!(src.contains(from), "patch source {from:?} not in rpc.proto");
        let c = compare_pools(&etcd, &compiler.descriptor_pool());
        assert!(
            c.errors.iter().any(|e| e.contains(expect)),
            "patch {from:?} -> {to:?} not caught; errors: {:?}",
            c.errors
        );
    }
}

/// The etcd 3.5 additions cairn carries on top of 3.4 (a guard against losing them).
#[test]
fn has_etcd_35_additions() {
    let ours = our_pool();
    let field = |msg: &str, name: &str| {
        ours.get_message_by_name(msg)
            .and_then(|m| m.get_field_by_name(name))
            .map(|f| f.number())
    };
    assert_eq!(
        field("etcdserverpb.MemberListRequest", "linearizable"),
        Some(1)
    );
    assert_eq!(
        field("etcdserverpb.HashKVResponse", "hash_revision"),
        Some(4)
    );
    assert_eq!(
        field("etcdserverpb.AuthUserAddRequest", "hashedPassword"),
        Some(4)
    );
    assert_eq!(
        field(
            "etcdserverpb.AuthUserChangePasswordRequest",
            "hashedPassword"
        ),
        Some(3)
    );
    assert_eq!(field("etcdserverpb.AuthStatusResponse", "enabled"), Some(2));
    assert_eq!(
        field("etcdserverpb.AuthStatusResponse", "authRevision"),
        Some(3)
    );
    assert_eq!(field("etcdserverpb.DowngradeRequest", "version"), Some(2));
    let method = |svc: &str, name: &str| {
        ours.get_service_by_name(svc)
            .and_then(|s| s.methods().find(|m| m.name() == name))
            .map(|m| {
                (
                    m.input().full_name().to_owned(),
                    m.output().full_name().to_owned(),
                )
            })
    };
    assert_eq!(
        method("etcdserverpb.Maintenance", "Downgrade"),
        Some((
            "etcdserverpb.DowngradeRequest".into(),
            "etcdserverpb.DowngradeResponse".into()
        ))
    );
    assert_eq!(
        method("etcdserverpb.Auth", "AuthStatus"),
        Some((
            "etcdserverpb.AuthStatusRequest".into(),
            "etcdserverpb.AuthStatusResponse".into()
        ))
    );
}

// ------------------------------------------------------------------ errors

fn go_code(name: &str) -> tonic::Code {
    use tonic::Code;
    match name {
        "OK" => Code::Ok,
        "Canceled" => Code::Cancelled,
        "Unknown" => Code::Unknown,
        "InvalidArgument" => Code::InvalidArgument,
        "DeadlineExceeded" => Code::DeadlineExceeded,
        "NotFound" => Code::NotFound,
        "AlreadyExists" => Code::AlreadyExists,
        "PermissionDenied" => Code::PermissionDenied,
        "ResourceExhausted" => Code::ResourceExhausted,
        "FailedPrecondition" => Code::FailedPrecondition,
        "Aborted" => Code::Aborted,
        "OutOfRange" => Code::OutOfRange,
        "Unimplemented" => Code::Unimplemented,
        "Internal" => Code::Internal,
        "Unavailable" => Code::Unavailable,
        "DataLoss" => Code::DataLoss,
        "Unauthenticated" => Code::Unauthenticated,
        other => panic!("unknown gRPC code name {other}"),
    }
}

/// `(Go name, code, message)` for every `ErrGRPC… = status.New(codes.X, "…")` in error.go.
fn parse_error_go(src: &str) -> Vec<(String, tonic::Code, String)> {
    let mut out = Vec::new();
    for line in src.lines() {
        let t = line.trim();
        let Some((name, rhs)) = t.split_once('=') else {
            continue;
        };
        let name = name.trim();
        if !name.starts_with("ErrG") || name.contains(' ') {
            continue;
        }
        let rhs = rhs.trim();
        let Some(args) = rhs
            .strip_prefix("status.New(codes.")
            .or_else(|| rhs.strip_prefix("status.Error(codes."))
        else {
            continue;
        };
        let (code, rest) = args.split_once(',').expect("code, message");
        let rest = rest.trim().strip_prefix('"').expect("message literal");
        let msg = &rest[..rest.find('"').expect("closing quote")];
        out.push((name.to_owned(), go_code(code.trim()), msg.to_owned()));
    }
    out
}

#[test]
fn errors_match_etcd_rpctypes() {
    let path = etcd_src().join("etcdserver/api/v3rpc/rpctypes/error.go");
    let src = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "reading {}: {e} (install golang-etcd-server-dev)",
            path.display()
        )
    });
    let theirs = parse_error_go(&src);
    assert!(
        theirs.len() >= 50,
        "parsed only {} errors from error.go",
        theirs.len()
    );

    for (name, code, msg) in &theirs {
        let ours = EtcdError::from_message(msg)
            .unwrap_or_else(|| panic!("{name} ({msg:?}) has no EtcdError variant"));
        assert_eq!(ours.code(), *code, "{name}: code of {msg:?}");
        assert_eq!(ours.message(), msg);
        assert_eq!(ours.to_string(), *msg);
    }

    // What cairn has beyond etcd 3.4's file must be exactly the 3.5 additions.
    let extra: Vec<&str> = EtcdError::ALL
        .iter()
        .map(|e| e.message())
        .filter(|m| !theirs.iter().any(|(_, _, t)| t == m))
        .collect();
    assert_eq!(
        extra,
        [
            "etcdserver: cluster version not found during downgrade",
            "etcdserver: wrong downgrade target version format",
            "etcdserver: invalid downgrade target version",
            "etcdserver: cluster has a downgrade job in progress",
            "etcdserver: no inflight downgrade job",
            "etcdserver: request canceled",
            "etcdserver: context deadline exceeded",
            // etcdserver.ErrTimeoutLeaderTransfer, returned by MoveLeader outside rpctypes.
            "etcdserver: request timed out, leader transfer took too long",
        ]
    );
}

#[test]
fn error_table() {
    use tonic::Code;
    let table = [
        (
            EtcdError::EmptyKey,
            Code::InvalidArgument,
            "etcdserver: key is not provided",
        ),
        (
            EtcdError::Compacted,
            Code::OutOfRange,
            "etcdserver: mvcc: required revision has been compacted",
        ),
        (
            EtcdError::FutureRev,
            Code::OutOfRange,
            "etcdserver: mvcc: required revision is a future revision",
        ),
        (
            EtcdError::RequestTooLarge,
            Code::InvalidArgument,
            "etcdserver: request is too large",
        ),
        (
            EtcdError::LeaseNotFound,
            Code::NotFound,
            "etcdserver: requested lease not found",
        ),
        (
            EtcdError::NoLeader,
            Code::Unavailable,
            "etcdserver: no leader",
        ),
        (
            EtcdError::NotLeader,
            Code::FailedPrecondition,
            "etcdserver: not leader",
        ),
        (
            EtcdError::PeerUrlExist,
            Code::FailedPrecondition,
            "etcdserver: Peer URLs already exists",
        ),
        (
            EtcdError::InvalidAuthToken,
            Code::Unauthenticated,
            "etcdserver: invalid auth token",
        ),
        (
            EtcdError::Corrupt,
            Code::DataLoss,
            "etcdserver: corrupt cluster",
        ),
        (
            EtcdError::WatchCanceled,
            Code::Cancelled,
            "etcdserver: watch canceled",
        ),
    ];
    for (err, code, msg) in table {
        assert_eq!(err.code(), code);
        assert_eq!(err.message(), msg);
        let status = tonic::Status::from(err);
        assert_eq!(status.code(), code);
        assert_eq!(status.message(), msg);
        assert_eq!(EtcdError::from_status(&status), Some(err));
    }
    // Messages are unique, so from_message is a true inverse.
    for e in EtcdError::ALL {
        assert_eq!(EtcdError::from_message(e.message()), Some(*e));
    }
}

// ------------------------------------------------------------------ generated code

#[test]
fn service_paths() {
    use cairn_api::etcdserverpb::{kv_server::KvServer, maintenance_server::MaintenanceServer};
    use tonic::server::NamedService;

    struct Nothing;
    assert_eq!(<KvServer<Nothing> as NamedService>::NAME, "etcdserverpb.KV");
    assert_eq!(
        <MaintenanceServer<Nothing> as NamedService>::NAME,
        "etcdserverpb.Maintenance"
    );
    assert_eq!(
        cairn_api::v3lockpb::lock_server::SERVICE_NAME,
        "v3lockpb.Lock"
    );
    assert_eq!(
        cairn_api::v3electionpb::election_server::SERVICE_NAME,
        "v3electionpb.Election"
    );

    // Every method of every service appears as its gRPC path in the generated code.
    let generated = [
        include_str!(concat!(env!("OUT_DIR"), "/etcdserverpb.rs")),
        include_str!(concat!(env!("OUT_DIR"), "/v3electionpb.rs")),
        include_str!(concat!(env!("OUT_DIR"), "/v3lockpb.rs")),
        include_str!(concat!(env!("OUT_DIR"), "/cairnpb.rs")),
    ]
    .concat();
    let mut n = 0;
    for svc in our_pool().services() {
        for m in svc.methods() {
            let path = format!("\"/{}/{}\"", svc.full_name(), m.name());
            assert!(generated.contains(&path), "generated code lacks {path}");
            n += 1;
        }
    }
    assert!(generated.contains("\"/etcdserverpb.KV/Range\""));
    assert!(n >= 48, "only {n} methods");
}

/// The paths other crates rely on exist and have the expected shapes.
#[test]
fn rust_paths() {
    #[allow(unused_imports)]
    use cairn_api::etcdserverpb::{
        compare::{CompareResult, CompareTarget, TargetUnion},
        kv_server::{Kv, KvServer},
        range_request::{SortOrder, SortTarget},
        request_op::Request,
        response_op::Response,
        RangeRequest,
    };
    use cairn_api::mvccpb::{event::EventType, Event, KeyValue};
    use prost::Message;

    let ev = Event {
        r#type: EventType::Delete as i32,
        kv: Some(KeyValue {
            key: b"k".to_vec(),
            mod_revision: 3,
            ..Default::default()
        }),
        prev_kv: None,
    };
    let back = Event::decode(ev.encode_to_vec().as_slice()).unwrap();
    assert_eq!(back, ev);
    assert_eq!(back.r#type(), EventType::Delete);

    let req = RangeRequest {
        key: b"a".to_vec(),
        sort_order: SortOrder::Descend as i32,
        sort_target: SortTarget::Mod as i32,
        ..Default::default()
    };
    assert_eq!(req.sort_order(), SortOrder::Descend);
    let _ = (
        CompareResult::NotEqual,
        CompareTarget::Lease,
        TargetUnion::Version(1),
    );

    let internal = cairn_api::cairnpb::InternalRequest {
        header: Some(cairn_api::cairnpb::RequestHeader {
            id: 7,
            ..Default::default()
        }),
        request: Some(cairn_api::cairnpb::internal_request::Request::Put(
            cairn_api::etcdserverpb::PutRequest {
                key: b"k".to_vec(),
                ..Default::default()
            },
        )),
    };
    let back =
        cairn_api::cairnpb::InternalRequest::decode(internal.encode_to_vec().as_slice()).unwrap();
    assert_eq!(back, internal);
}

#[test]
fn sanitize_strips_gateway_options() {
    let src = r#"import "google/api/annotations.proto"; // x
service S {
  // a comment with { braces
  rpc A(R) returns (R) {
      option (google.api.http) = {
        post: "/v3/a"
        body: "*"
        additional_bindings { post: "/v3/b" body: "*" }
    };
  }
}"#;
    let out = sanitize(src);
    assert!(!out.contains("google"), "{out}");
    assert!(out.contains("rpc A(R) returns (R) {"), "{out}");
    assert_eq!(out.matches('{').count(), out.matches('}').count(), "{out}");
}
