//! Compiles cairn's own `.proto` files (no system `protoc`) and generates prost messages plus
//! tonic clients and servers for them.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "mvccpb/kv.proto",
    "authpb/auth.proto",
    "etcdserverpb/rpc.proto",
    "v3electionpb/v3election.proto",
    "v3lockpb/v3lock.proto",
    "cairnpb/internal.proto",
    "cairnpb/peer.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("proto");
    println!("cargo:rerun-if-changed={}", dir.display());
    for p in PROTOS {
        println!("cargo:rerun-if-changed={}", dir.join(p).display());
    }
    let fds = protox::compile(PROTOS, [&dir])?;
    // Also keep the descriptor set itself: gRPC reflection and the wire-compat tests use it.
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("cairn_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // Every RPC gets a default body answering `Unimplemented`, so a service can be
        // registered before all of its RPCs are built, and never answers a fake success.
        .generate_default_stubs(true)
        .compile_fds(fds)?;
    Ok(())
}
