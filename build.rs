//! Builds the XDP programs (bpf/*.bpf.c) with clang and generates their
//! libbpf-rs skeletons.

use std::path::PathBuf;
use std::process::Command;

/// (source, skeleton file): the steering program and the benchmark's
/// traffic generator.
const PROGRAMS: [(&str, &str); 2] = [
    ("bpf/steer.bpf.c", "steer.skel.rs"),
    ("bpf/trafficgen.bpf.c", "trafficgen.skel.rs"),
];

fn main() {
    if Command::new("clang").arg("--version").output().is_err() {
        panic!(
            "clang is needed to build the XDP programs (bpf/): run scripts/install-deps.sh \
             (or apt-get install clang llvm libbpf-dev libelf-dev zlib1g-dev m4 pkg-config)"
        );
    }
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    // Debian keeps asm/types.h under the multiarch include directory.
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let multiarch = format!("-I/usr/include/{arch}-linux-gnu");
    for (src, skel) in PROGRAMS {
        println!("cargo:rerun-if-changed={src}");
        libbpf_cargo::SkeletonBuilder::new()
            .source(src)
            .clang_args([multiarch.as_str()])
            .build_and_generate(out_dir.join(skel))
            .unwrap_or_else(|e| panic!("building {src}: {e:#}"));
    }
}
