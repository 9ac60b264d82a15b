//! Compiles our .proto files with `protox` (pure Rust, no system `protoc`)
//! and generates prost messages plus tonic clients and servers.

use std::path::PathBuf;

const PROTO_DIR: &str = "proto";

const PROTOS: &[&str] = &[
    "mvccpb/kv.proto",
    "authpb/auth.proto",
    "etcdserverpb/rpc.proto",
    "v3lockpb/v3lock.proto",
    "v3electionpb/v3election.proto",
    "cairnpb/internal.proto",
    "cairnpb/peer.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed={PROTO_DIR}");
    for p in PROTOS {
        println!("cargo:rerun-if-changed={PROTO_DIR}/{p}");
    }

    let files: Vec<PathBuf> = PROTOS
        .iter()
        .map(|p| PathBuf::from(PROTO_DIR).join(p))
        .collect();
    let fds = protox::compile(&files, [PROTO_DIR])?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
