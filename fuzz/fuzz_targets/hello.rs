//! HELLO/TOKEN datagrams (address validation, rev 3) into the proxy core.
//! Run (from the repository root): cargo +nightly fuzz run hello
//! (or with the stable toolchain: RUSTC_BOOTSTRAP=1 cargo fuzz run hello).
//! The checks are in ../cores.rs, shared with tests/fuzz_props.rs.
#![no_main]

#[path = "../cores.rs"]
mod cores;

libfuzzer_sys::fuzz_target!(|data: &[u8]| cores::hello(data));
