//! Compiles the protobuf with protox (pure Rust), so building evlog needs no system `protoc`:
//! `proto/evlog/v1/evlog.proto` (the client API, whose file descriptor set is embedded for
//! gRPC server reflection) and `proto/evlog/internal/v1/peer.proto` (the peer protocol,
//! compiled apart so that the reflected descriptor set never holds it).

/// Compiles `proto` (package `package`) and writes its file descriptor set to `descriptor`.
fn compile(proto: &str, package: &str, descriptor: &str) -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["proto"])?;
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join(descriptor),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        .bytes(format!(".{package}"))
        .codec_path("crate::codec::ProtoCodec")
        .compile_fds(fds)?;
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    compile(
        "proto/evlog/v1/evlog.proto",
        "evlog.v1",
        "evlog_descriptor.bin",
    )?;
    compile(
        "proto/evlog/internal/v1/peer.proto",
        "evlog.internal.v1",
        "evlog_peer_descriptor.bin",
    )
}
