//! Any UTF-8 text as a configuration file (Config::from_toml).
//! Run (from the repository root): cargo +nightly fuzz run config
//! (or with the stable toolchain: RUSTC_BOOTSTRAP=1 cargo fuzz run config).
//! The checks are in ../cores.rs, shared with tests/fuzz_props.rs.
#![no_main]

#[path = "../cores.rs"]
mod cores;

libfuzzer_sys::fuzz_target!(|data: &[u8]| cores::config(data));
