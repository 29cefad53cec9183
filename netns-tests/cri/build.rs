//! Generates the CRI client from `proto/api.proto` (k8s.io/cri-api v0.25.0,
//! verbatim) after stripping its gogoproto import and options, which only
//! steer Go code generation and would need gogo.proto on the include path.

use std::path::PathBuf;

fn main() {
    let src = "proto/api.proto";
    println!("cargo:rerun-if-changed={src}");
    let text = std::fs::read_to_string(src).expect("read proto/api.proto");
    let stripped: String = text
        .lines()
        .filter(|l| !l.contains("gogoproto"))
        .map(|l| format!("{l}\n"))
        .collect();
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    let dir = out.join("proto");
    std::fs::create_dir_all(&dir).expect("create OUT_DIR/proto");
    let file = dir.join("api.proto");
    std::fs::write(&file, stripped).expect("write stripped api.proto");
    tonic_prost_build::configure()
        .build_server(false)
        .compile_protos(&[file], &[dir])
        .expect("compile the CRI api.proto");
}
