//! tensorwire: AI inference preprocessing on the packet path.
//!
//! One datagram's path: `ingress` (UDP socket or AF_XDP) -> `proxy` (the
//! sans-I/O core) -> `wire` (TWP/1 views) -> `reassembly` (per-request
//! state, limits, timeouts) -> `pipeline` (the fragment's rules, the
//! transforms of `transform`) -> `upstream` (echo, or a request for a
//! model server, carried by `http_pool`) -> reply fragments back out the
//! same ingress. See docs/ARCHITECTURE.md.
//!
//! Layers, lowest first; a module imports only from layers below it:
//! - pure: `wire`, `transform`, `reassembly`, `pipeline`, `upstream`
//!   (codec, request building, breaker), `proxy` (the core: time passed
//!   in, no sockets, no DNS), `client` (fragmenters and a blocking client);
//! - I/O at the edges: `ingress` (socket and AF_XDP loops), `http_pool`
//!   (model-server connections), `admin`, `netns` (test networks),
//!   `privileges` (capabilities);
//! - the binary: `config` (TOML -> each layer's settings), `server`
//!   (workers wired to ingresses), `cli`, `bench`, `bench_upstream`.

pub mod admin;
pub mod bench;
pub mod bench_upstream;
pub mod cli;
pub mod client;
pub mod config;
pub mod http_pool;
pub mod ingress;
pub mod netns;
pub mod perf;
pub mod pipeline;
pub mod privileges;
pub mod proxy;
pub mod reassembly;
pub mod server;
pub mod transform;
pub mod upstream;
pub mod wire;
