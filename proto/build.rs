//! Compiles every `.proto` under this crate with protox (no system `protoc`) and tonic-prost-build,
//! and writes the encoded file descriptor set used by gRPC server reflection.

use std::{
    env, fs,
    path::{Path, PathBuf},
};

use prost::Message;

fn collect_protos(dir: &Path, found: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_protos(&path, found)?;
        } else if path.extension().is_some_and(|ext| ext == "proto") {
            found.push(path);
        }
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let mut files = Vec::new();
    for top in ["clawx", "xmtp"] {
        let dir = root.join(top);
        println!("cargo:rerun-if-changed={}", dir.display());
        if dir.exists() {
            collect_protos(&dir, &mut files)?;
        }
    }
    files.sort();

    let descriptors = protox::compile(&files, [&root])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(out_dir.join("descriptor.bin"), descriptors.encode_to_vec())?;

    tonic_prost_build::configure().include_file("_includes.rs").compile_fds(descriptors)?;
    Ok(())
}
