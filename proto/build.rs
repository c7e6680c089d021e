//! Compiles `veil/v1/*.proto` with protox (pure Rust): no system `protoc` needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "veil/v1/common.proto",
        "veil/v1/ingest.proto",
        "veil/v1/policy.proto",
        "veil/v1/ledger.proto",
        "veil/v1/federated.proto",
        "veil/v1/audit.proto",
        "veil/v1/query.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["."])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
