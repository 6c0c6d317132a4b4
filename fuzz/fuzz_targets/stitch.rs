//! Texts streamed into the tokenizer stitcher in random chunkings.
//! Run (from the repository root): cargo +nightly fuzz run stitch
//! (or with the stable toolchain: RUSTC_BOOTSTRAP=1 cargo fuzz run stitch).
//! The checks are in ../cores.rs, shared with tests/fuzz_props.rs.
#![no_main]

#[path = "../cores.rs"]
mod cores;

libfuzzer_sys::fuzz_target!(|data: &[u8]| cores::stitch(data));
