//! The cores of the fuzz targets: one function per target, taking the
//! fuzzer's bytes and panicking on a bug. The cargo-fuzz targets
//! (`fuzz_targets/*.rs`, nightly, libFuzzer) and the stable property test
//! (`tests/fuzz_props.rs`, a few thousand seeded random inputs in `make
//! test`) both include this file, so CI runs the same checks without
//! nightly. Only `tensorwire` and `std` are used here.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tensorwire::config::Config;
use tensorwire::pipeline::Pipelines;
use tensorwire::proxy::Proxy;
use tensorwire::upstream::codec::{HttpResponse, ResponseParser, MAX_HEAD};

/// Reads numbers off the front of fuzz input (zeros once it runs out).
pub struct Input<'a>(pub &'a [u8]);

impl<'a> Input<'a> {
    pub fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }
    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
    pub fn rest(&mut self) -> &'a [u8] {
        self.bytes(self.0.len())
    }
}

// ---------------------------------------------------------------- http

/// Body limit of the fuzzed parser: small, so the limit itself is reached.
pub const HTTP_MAX_BODY: usize = 1 << 16;

fn feed_all(p: &mut ResponseParser, parts: &[&[u8]]) -> Result<Option<HttpResponse>, String> {
    for part in parts {
        let r = p.feed(part, false);
        assert!(
            p.buffered() <= 2 * (MAX_HEAD + HTTP_MAX_BODY),
            "parser holds {} bytes",
            p.buffered()
        );
        if !matches!(r, Ok(None)) {
            return r;
        }
    }
    p.feed(&[], true)
}

/// An HTTP response (first byte: how to split it) fed in random splits
/// gives what it gives fed whole: the same answer (status, headers, body)
/// or an error in both cases; never a panic, never more memory than the
/// limits.
pub fn http_response(data: &[u8]) {
    let mut input = Input(data);
    let split_seed = input.u16();
    let bytes = input.rest();
    let whole = feed_all(&mut ResponseParser::with_max_body(HTTP_MAX_BODY), &[bytes]);
    // Cut at lengths drawn from the seed (1..=16 bytes, or single bytes).
    let mut parts: Vec<&[u8]> = Vec::new();
    let (mut at, mut x) = (0usize, u32::from(split_seed) | 1);
    while at < bytes.len() {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let n = if split_seed & 1 == 0 {
            1
        } else {
            1 + (x % 16) as usize
        };
        let end = (at + n).min(bytes.len());
        parts.push(&bytes[at..end]);
        at = end;
    }
    let split = feed_all(&mut ResponseParser::with_max_body(HTTP_MAX_BODY), &parts);
    match (&whole, &split) {
        (Ok(Some(a)), Ok(Some(b))) => {
            assert_eq!(
                (a.status, &a.headers, &a.body),
                (b.status, &b.headers, &b.body)
            );
            assert!(a.body.len() <= HTTP_MAX_BODY);
        }
        (Err(_), Err(_)) => {}
        (a, b) => panic!("whole: {a:?}\nsplit: {b:?}"),
    }
}

// ------------------------------------------------------------ datagram

fn builtin_proxy() -> Proxy {
    static PIPELINES: OnceLock<(Config, Pipelines)> = OnceLock::new();
    let (cfg, pipelines) = PIPELINES.get_or_init(|| {
        let mut c = Config::builtin();
        c.limits.max_bytes_in_flight = 1 << 16;
        let p = c.build_pipelines().unwrap();
        (c, p)
    });
    cfg.build_proxy_with(pipelines.clone())
        .expect("the builtin config has no model servers")
}

/// Any datagram, from any of a few sources, at any time: the proxy core
/// must not panic, and must keep its in-flight bytes within the limit.
/// Datagrams are split at 0xFF bytes.
pub fn datagram(data: &[u8]) {
    let mut proxy = builtin_proxy();
    let t0 = Instant::now();
    let mut out: Vec<(SocketAddr, Vec<u8>)> = Vec::new();
    for (i, d) in data.split(|&b| b == 0xff).enumerate() {
        let from: SocketAddr = ([10, 0, 0, (i % 3) as u8 + 1], 9000).into();
        proxy.handle(t0 + Duration::from_millis(i as u64 * 7), from, d, &mut out);
        assert!(proxy.stats().bytes_in_flight <= 1 << 16);
    }
    proxy.on_timeout(t0 + Duration::from_secs(30), &mut out);
    assert_eq!(proxy.stats().requests_in_flight, 0);
}

// --------------------------------------------------------- HELLO/TOKEN

/// The common header (PROTOCOL.md "Byte order and header").
fn header(kind: u8, pipeline: u16, request_id: u64, seq: u32, count: u32) -> Vec<u8> {
    let mut h = vec![0x54, 0x57, 1, kind, 0, 0];
    h.extend_from_slice(&pipeline.to_be_bytes());
    h.extend_from_slice(&request_id.to_be_bytes());
    h.extend_from_slice(&seq.to_be_bytes());
    h.extend_from_slice(&count.to_be_bytes());
    h
}

/// HELLO and TOKEN datagrams (rev 3 "Address validation") built from the
/// input after the spec's byte layout: HELLO `token_len` (2), token,
/// padding; sometimes with a token_len that lies, a short or long padding,
/// odd header fields, or the token of a TOKEN the proxy sent back (as is,
/// bit-flipped, or replayed from another address); mixed with DESCRIBEs
/// and a TOKEN sent to the proxy. Only `Proxy::handle` is used, so this
/// exercises whatever the core does with kind 0x05. Checks: no panic;
/// every reply is a TWP reply to the sender's request_id; a TOKEN body is
/// consistent (token_len within the datagram, at most 64, validated 0 or
/// 1); and when DESCRIBE says `"address_validation":true`, no address
/// that was never validated gets more than 3 times the UDP payload bytes
/// it sent.
pub fn hello(data: &[u8]) {
    let mut proxy = builtin_proxy();
    let validation = std::str::from_utf8(proxy.describe_json())
        .is_ok_and(|d| d.contains("\"address_validation\":true"));
    let mut input = Input(data);
    let t0 = Instant::now();
    let addrs: [SocketAddr; 3] = [
        ([10, 0, 0, 1], 9000).into(),
        ([10, 0, 0, 2], 9000).into(),
        "[2001:db8::1]:9001".parse().unwrap(),
    ];
    let mut tokens: Vec<Vec<u8>> = Vec::new();
    let mut received: HashMap<SocketAddr, usize> = HashMap::new();
    let mut sent: HashMap<SocketAddr, usize> = HashMap::new();
    let mut validated: Vec<SocketAddr> = Vec::new();
    let mut now = t0;
    let mut step = 0u64;
    while !input.0.is_empty() && step < 64 {
        step += 1;
        let op = input.u8();
        let from = addrs[(op as usize >> 4) % addrs.len()];
        now += Duration::from_millis(u64::from(input.u8()) * 40);
        let request_id = step;
        let d = match op & 0x0f {
            // A HELLO without a token, padded to the input's length.
            0..=5 => {
                let pad = match input.u8() {
                    0..=127 => 1200 - 26,
                    128..=191 => input.u16() as usize % 1500,
                    _ => 0,
                };
                let mut d = header(0x05, 0, request_id, 0, 1);
                d.extend_from_slice(&0u16.to_be_bytes());
                d.resize(d.len() + pad, 0);
                d
            }
            // A HELLO with a token seen before (maybe mutated) or made up.
            6..=10 => {
                let mut token = if tokens.is_empty() || op & 0x80 != 0 {
                    input.bytes(input.0.len().min(70) & 0x7f).to_vec()
                } else {
                    tokens[input.u8() as usize % tokens.len()].clone()
                };
                let flip = input.u8();
                if flip & 1 == 1 && !token.is_empty() {
                    let i = (flip as usize >> 1) % token.len();
                    token[i] ^= 1 << (flip % 8);
                }
                let token_len = match input.u8() {
                    0..=223 => token.len() as u16,
                    _ => input.u16(),
                };
                let mut d = header(0x05, 0, request_id, 0, 1);
                d.extend_from_slice(&token_len.to_be_bytes());
                d.extend_from_slice(&token);
                if input.u8() < 128 {
                    d.resize(d.len().max(1200), 0);
                }
                d
            }
            // Odd header fields on a HELLO (pipeline, seq, count, flags,
            // a truncated body), or raw bytes after a HELLO header.
            11 | 12 => {
                let mut d = header(
                    0x05,
                    input.u16() % 3,
                    request_id,
                    input.u8() as u32 % 3,
                    input.u8() as u32 % 3,
                );
                d[5] = input.u8();
                let n = input.u16() as usize % 1400;
                d.extend_from_slice(input.bytes(n));
                d.truncate(input.u16() as usize % 1500);
                d
            }
            // A TOKEN sent to the proxy (a reply kind: never answered).
            13 => {
                let mut d = header(0x83, 0, request_id, 0, 1);
                d.extend_from_slice(input.bytes(40));
                d
            }
            // DESCRIBE (its answer counts against the budget).
            _ => header(0x04, 0, request_id, 0, 1),
        };
        *received.entry(from).or_default() += d.len();
        let mut out: Vec<(SocketAddr, Vec<u8>)> = Vec::new();
        proxy.handle(now, from, &d, &mut out);
        for (to, r) in &out {
            assert_eq!(*to, from, "a reply goes to the sender");
            assert!(r.len() >= 24, "reply shorter than a header");
            assert_eq!(&r[..3], &[0x54, 0x57, 1]);
            assert!(r[3] & 0x80 != 0, "reply kind {:#x}", r[3]);
            assert_eq!(&r[8..16], &request_id.to_be_bytes(), "request_id copied");
            *sent.entry(*to).or_default() += r.len();
            if r[3] == 0x83 {
                // TOKEN: token_len (2), validated (1), reserved (1),
                // lifetime_s (4), token.
                assert!(r.len() >= 32, "TOKEN body too short");
                let token_len = u16::from_be_bytes([r[24], r[25]]) as usize;
                assert!(token_len <= 64, "token of {token_len} bytes");
                assert_eq!(r.len(), 32 + token_len, "TOKEN length");
                assert!(r[26] <= 1, "validated {}", r[26]);
                assert_eq!(r[27], 0, "reserved");
                if r[26] == 1 && !validated.contains(to) {
                    validated.push(*to);
                }
                tokens.push(r[32..].to_vec());
            }
        }
        if validation {
            for (a, &s) in &sent {
                if !validated.contains(a) {
                    let got = received.get(a).copied().unwrap_or(0);
                    assert!(
                        s <= 3 * got,
                        "{a}: sent {s} bytes for {got} received before validation"
                    );
                }
            }
        }
    }
    let mut out: Vec<(SocketAddr, Vec<u8>)> = Vec::new();
    proxy.on_timeout(now + Duration::from_secs(30), &mut out);
    assert_eq!(proxy.stats().requests_in_flight, 0);
}

// -------------------------------------------------------------- config

/// Any UTF-8 text as a configuration: an error or a valid config, never
/// a panic. (Validation runs inside `from_toml`.)
pub fn config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(cfg) = Config::from_toml(text) {
            // What validation accepted builds each layer's settings.
            if let Ok(security) = cfg.security_settings() {
                let _ = cfg.proxy_settings(security);
            }
            let _ = cfg.udp_settings();
        }
    }
}

// ------------------------------------------------------------- stitch

fn minilm() -> &'static Arc<tensorwire::transform::text::TextPlan> {
    use tensorwire::transform::text::{Padding, SpanTokenizer, TextOutput, TextPlan};
    static P: OnceLock<Arc<TextPlan>> = OnceLock::new();
    P.get_or_init(|| {
        let json = tensorwire::pipeline::BUILTIN_TOKENIZERS[0].1;
        Arc::new(
            TextPlan::from_json(
                json,
                SpanTokenizer::Fastest,
                1 << 16,
                true,
                Padding::None,
                vec![TextOutput::InputIds, TextOutput::AttentionMask],
                tensorwire::transform::DType::Int64,
            )
            .unwrap(),
        )
    })
}

/// A text (the input after a 4-byte header: its UTF-8 or not) streamed
/// into the tokenizer stitcher in random chunks (cut anywhere, even inside
/// a character; overlapping; in order, reversed or shuffled) gives the
/// ids of the whole text, or, for invalid UTF-8, an error; never a panic.
pub fn stitch(data: &[u8]) {
    let mut input = Input(data);
    let (max_chunk, overlap, order, min_span) = (
        1 + input.u8() as usize % 48,
        input.u8() as usize % 12,
        input.u8(),
        input.u8() as usize % 40,
    );
    let text = input.rest();
    let plan = minilm();
    let mut x = u32::from(order).wrapping_mul(2654435761) | 1;
    let mut next = |m: usize| {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        x as usize % m
    };
    let mut parts: Vec<(usize, usize)> = Vec::new();
    let mut at = 0;
    while at < text.len() {
        let end = (at + 1 + next(max_chunk)).min(text.len());
        parts.push((at.saturating_sub(next(overlap + 1)), end));
        at = end;
    }
    if parts.is_empty() {
        parts.push((0, 0));
    }
    match order % 3 {
        0 => {}
        1 => parts.reverse(),
        _ => {
            for i in (1..parts.len()).rev() {
                parts.swap(i, next(i + 1));
            }
        }
    }
    let mut s = plan.stream_with_min_span(text.len(), min_span);
    let mut r = Ok(());
    for &(a, b) in &parts {
        r = s.add(a, &text[a..b]);
        if r.is_err() {
            break;
        }
    }
    let got = r.and_then(|()| s.finish());
    match std::str::from_utf8(text) {
        Ok(t) => assert_eq!(got.unwrap(), plan.encode(t).unwrap(), "text {t:?}"),
        Err(_) => assert!(got.is_err(), "invalid UTF-8 accepted"),
    }
}
