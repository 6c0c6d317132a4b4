//! Any datagram, from any of a few sources, at any time: the proxy core
//! must not panic, and must keep its in-flight bytes within the limit.
//! Run: cargo +nightly fuzz run datagram (from the repository root).
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tensorwire::config::Config;
use tensorwire::pipeline::Pipelines;
use tensorwire::proxy::Proxy;

static PIPELINES: OnceLock<(Config, Pipelines)> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let (cfg, pipelines) = PIPELINES.get_or_init(|| {
        let mut c = Config::builtin();
        c.limits.max_bytes_in_flight = 1 << 16;
        let p = c.build_pipelines().unwrap();
        (c, p)
    });
    let mut proxy: Proxy = cfg
        .build_proxy_with(pipelines.clone())
        .expect("the builtin config has no model servers");
    let t0 = Instant::now();
    let mut out: Vec<(SocketAddr, Vec<u8>)> = Vec::new();
    // Split the input into datagrams at 0xFF 0xFF markers.
    for (i, d) in data.split(|&b| b == 0xff).enumerate() {
        let from: SocketAddr = ([10, 0, 0, (i % 3) as u8 + 1], 9000).into();
        proxy.handle(t0 + Duration::from_millis(i as u64 * 7), from, d, &mut out);
        assert!(proxy.stats().bytes_in_flight <= 1 << 16);
    }
    proxy.on_timeout(t0 + Duration::from_secs(10), &mut out);
    assert_eq!(proxy.stats().requests_in_flight, 0);
});
