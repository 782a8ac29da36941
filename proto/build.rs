//! Compiles the protobuf with protox (pure Rust), so building evlog needs no system `protoc`:
//! `proto/evlog/v1/evlog.proto` (the client API, whose file descriptor set is embedded for
//! gRPC server reflection) and `proto/evlog/internal/v1/peer.proto` (the peer protocol,
//! compiled apart so that reflection never lists it).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let client = "proto/evlog/v1/evlog.proto";
    let peer = "proto/evlog/internal/v1/peer.proto";
    println!("cargo:rerun-if-changed={client}");
    println!("cargo:rerun-if-changed={peer}");
    let fds = protox::compile([client], ["proto"])?;
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("evlog_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        .bytes(".evlog.v1")
        .codec_path("crate::codec::ProtoCodec")
        .compile_fds(fds)?;
    let peer_fds = protox::compile([peer], ["proto"])?;
    std::fs::write(
        out_dir.join("evlog_peer_descriptor.bin"),
        prost::Message::encode_to_vec(&peer_fds),
    )?;
    tonic_prost_build::configure()
        .bytes(".evlog.internal.v1")
        .codec_path("crate::codec::ProtoCodec")
        .compile_fds(peer_fds)?;
    Ok(())
}
