//! Generates the remotesapi message types and gRPC stubs from `proto/` with a
//! vendored `protoc`, so a build needs nothing installed beyond cargo.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY of intent: build scripts are single-threaded; prost-build reads PROTOC.
    unsafe { std::env::set_var("PROTOC", protoc) };
    let include = protoc_bin_vendored::include_path()?;
    tonic_prost_build::configure()
        .bytes(".")
        .build_server(true)
        .build_client(true)
        .build_transport(false)
        .compile_protos(
            &[
                PathBuf::from("proto/dolt/services/remotesapi/v1alpha1/chunkstore.proto"),
                PathBuf::from("proto/dolt/services/remotesapi/v1alpha1/credentials.proto"),
            ],
            &[PathBuf::from("proto"), include],
        )?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
