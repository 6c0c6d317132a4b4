//! HTTP responses from a model server, fed to the parser in random splits.
//! Run (from the repository root): cargo +nightly fuzz run http_response
//! (or with the stable toolchain: RUSTC_BOOTSTRAP=1 cargo fuzz run http_response).
//! The checks are in ../cores.rs, shared with tests/fuzz_props.rs.
#![no_main]

#[path = "../cores.rs"]
mod cores;

libfuzzer_sys::fuzz_target!(|data: &[u8]| cores::http_response(data));
