//! Builds the XDP program (bpf/steer.bpf.c) with clang and generates its
//! libbpf-rs skeleton.

use std::path::PathBuf;
use std::process::Command;

const SRC: &str = "bpf/steer.bpf.c";

fn main() {
    println!("cargo:rerun-if-changed={SRC}");
    if Command::new("clang").arg("--version").output().is_err() {
        panic!(
            "clang is needed to build the XDP program ({SRC}): run scripts/install-deps.sh \
             (or apt-get install clang llvm libbpf-dev libelf-dev zlib1g-dev m4 pkg-config)"
        );
    }
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"))
        .join("steer.skel.rs");
    // Debian keeps asm/types.h under the multiarch include directory.
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let multiarch = format!("-I/usr/include/{arch}-linux-gnu");
    libbpf_cargo::SkeletonBuilder::new()
        .source(SRC)
        .clang_args([multiarch.as_str()])
        .build_and_generate(&out)
        .unwrap_or_else(|e| panic!("building {SRC}: {e:#}"));
}
