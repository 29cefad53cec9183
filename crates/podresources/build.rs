//! Generates the PodResources client (and, with the `fixture` feature, the
//! server the test fake implements) from `proto/podresources.proto`.

fn main() {
    let src = "proto/podresources.proto";
    println!("cargo:rerun-if-changed={src}");
    let server = std::env::var_os("CARGO_FEATURE_FIXTURE").is_some();
    tonic_prost_build::configure()
        .build_server(server)
        .compile_protos(&[src], &["proto"])
        .expect("compile proto/podresources.proto");
}
