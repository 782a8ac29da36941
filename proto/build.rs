//! Compiles `proto/evlog/v1/evlog.proto` with protox (pure Rust), so building evlog needs no
//! system `protoc`. The file descriptor set is also embedded for gRPC server reflection.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/evlog/v1/evlog.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["proto"])?;
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("evlog_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        .bytes(".evlog.v1")
        .codec_path("crate::codec::ProtoCodec")
        .compile_fds(fds)?;
    Ok(())
}
