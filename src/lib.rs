//! tensorwire: AI inference preprocessing on the packet path.
//!
//! One datagram's path: `ingress` (UDP socket or AF_XDP) -> `wire` (TWP/1
//! views) -> `reassembly` (per-request state, limits, timeouts) ->
//! `transform` (resize, normalize, tokenize) via `pipeline` -> `upstream`
//! (echo, ...) -> reply fragments back out the same ingress.
//! `proxy` ties the pure parts together; only `ingress` does I/O.

pub mod admin;
pub mod bench;
pub mod bench_upstream;
pub mod cli;
pub mod client;
pub mod config;
pub mod ingress;
pub mod netns;
pub mod pipeline;
pub mod proxy;
pub mod reassembly;
pub mod server;
pub mod transform;
pub mod upstream;
pub mod wire;
