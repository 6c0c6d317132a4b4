//! The fuzz targets' checks (fuzz/cores.rs) on a few thousand seeded
//! random inputs each, on the stable toolchain: `make test` runs what the
//! nightly fuzzers run, with inputs shaped like the real thing (HTTP
//! answers with hostile sizes, TWP datagrams, mutated configs, texts).
//! A failure prints its seed; `FUZZ_PROPS_CASES` scales the counts.

#[path = "../fuzz/cores.rs"]
mod cores;

use fastrand::Rng;

fn cases(n: usize) -> usize {
    std::env::var("FUZZ_PROPS_CASES")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .map_or(n, |scale| n * scale / 1000)
}

/// Runs `core` on `n` inputs made by `gen`, naming the seed of a failure.
fn run(n: usize, seed: u64, gen: impl Fn(&mut Rng) -> Vec<u8>, core: fn(&[u8])) {
    for i in 0..cases(n) {
        let s = seed.wrapping_mul(1_000_003).wrapping_add(i as u64);
        let input = gen(&mut Rng::with_seed(s));
        let r = std::panic::catch_unwind(|| core(&input));
        if let Err(e) = r {
            panic!("case {i} (seed {s}) failed on input {input:?}: {e:?}");
        }
    }
}

/// Random edits: byte flips, insertions of `pieces`, deletions, cuts.
fn mutate(rng: &mut Rng, mut b: Vec<u8>, pieces: &[&[u8]]) -> Vec<u8> {
    for _ in 0..rng.usize(0..4) {
        let at = rng.usize(0..=b.len());
        match rng.u8(0..5) {
            0 if !b.is_empty() => {
                let i = rng.usize(0..b.len());
                b[i] ^= 1 << rng.u8(0..8);
            }
            1 => {
                let p = pieces[rng.usize(0..pieces.len())];
                b.splice(at..at, p.iter().copied());
            }
            2 if at < b.len() => {
                let end = (at + rng.usize(1..8)).min(b.len());
                b.drain(at..end);
            }
            3 => b.truncate(at),
            _ => {}
        }
    }
    b
}

// ---------------------------------------------------------------- http

const HTTP_PIECES: &[&[u8]] = &[
    b"\r\n",
    b"\n",
    b"\r\n\r\n",
    b"ffffffffffffffff",
    b"1ffffffffffffffff",
    b"10000000",
    b"0\r\n\r\n",
    b";ext=1",
    b"Content-Length: 9223372036854775808\r\n",
    b"Content-Length: 18446744073709551616\r\n",
    b"Content-Length: 3\r\n",
    b"Transfer-Encoding: chunked\r\n",
    b"Connection: close\r\n",
    b"HTTP/1.0 200 OK\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\n",
    b"\x00",
    b"\xff\xfe",
];

fn http_answer(rng: &mut Rng) -> Vec<u8> {
    let status = [
        "200 OK",
        "500 Internal Server Error",
        "204 No Content",
        "100 Continue",
        "404 Not Found",
    ][rng.usize(0..5)];
    let version = if rng.u8(0..4) == 0 { "1.0" } else { "1.1" };
    let mut a = format!("HTTP/{version} {status}\r\n").into_bytes();
    for i in 0..rng.usize(0..4) {
        a.extend_from_slice(format!("X-H{i}: {}\r\n", "v".repeat(rng.usize(0..20))).as_bytes());
    }
    if rng.bool() {
        a.extend_from_slice(b"Connection: close\r\n");
    }
    let body: Vec<u8> = (0..rng.usize(0..300)).map(|_| rng.u8(..)).collect();
    match rng.u8(0..4) {
        0 => {
            a.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
            a.extend_from_slice(&body);
        }
        1 | 2 => {
            a.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
            let mut at = 0;
            while at < body.len() {
                let n = rng.usize(1..=64).min(body.len() - at);
                let ext = if rng.u8(0..8) == 0 { ";a=b" } else { "" };
                a.extend_from_slice(format!("{n:x}{ext}\r\n").as_bytes());
                a.extend_from_slice(&body[at..at + n]);
                a.extend_from_slice(b"\r\n");
                at += n;
            }
            a.extend_from_slice(b"0\r\n");
            if rng.bool() {
                a.extend_from_slice(b"Trailer-X: 1\r\n");
            }
            a.extend_from_slice(b"\r\n");
        }
        _ => {
            a.extend_from_slice(b"\r\n");
            a.extend_from_slice(&body);
        }
    }
    a
}

#[test]
fn http_response_parser_in_random_splits() {
    run(
        4000,
        1,
        |rng| {
            let answer = match rng.u8(0..10) {
                0 => (0..rng.usize(0..200)).map(|_| rng.u8(..)).collect(),
                1..=3 => http_answer(rng),
                _ => {
                    let a = http_answer(rng);
                    mutate(rng, a, HTTP_PIECES)
                }
            };
            let mut input = vec![rng.u8(..), rng.u8(..)];
            input.extend(answer);
            input
        },
        cores::http_response,
    );
}

#[test]
fn http_response_parser_on_the_reported_answers() {
    // Issue 12: one byte, then a chunk size that overflows `len + size`.
    for split in [0u8, 1, 2, 3] {
        let mut input = vec![0, split];
        input.extend_from_slice(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\nffffffffffffffff\r\nabc",
        );
        cores::http_response(&input);
    }
    // A body that fills the limit exactly, then one more byte.
    let mut input = vec![0, 1];
    input.extend_from_slice(b"HTTP/1.1 200 OK\r\n\r\n");
    input.resize(input.len() + cores::HTTP_MAX_BODY + 1, b'x');
    cores::http_response(&input);
}

// ------------------------------------------------------------ datagram

/// A TWP datagram: a plausible header and body, often mutated.
fn twp_datagram(rng: &mut Rng) -> Vec<u8> {
    let kind = [1u8, 2, 3, 3, 3, 4, 5, 0x81, 9][rng.usize(0..9)];
    let pipeline = [0u16, 1, 2, 3][rng.usize(0..4)];
    let count = rng.u32(1..4);
    let mut d = vec![0x54, 0x57, 1, kind, 0, 0];
    d.extend_from_slice(&pipeline.to_be_bytes());
    d.extend_from_slice(&rng.u64(0..4).to_be_bytes());
    d.extend_from_slice(&rng.u32(0..count + 1).to_be_bytes());
    d.extend_from_slice(&count.to_be_bytes());
    match kind {
        3 => {
            let total = rng.u32(0..64);
            let off = rng.u32(0..=total);
            let len = rng.u32(0..=total - off);
            d.extend_from_slice(&off.to_be_bytes());
            d.extend_from_slice(&total.to_be_bytes());
            d.extend_from_slice(&[0; 4]);
            d.extend((0..len).map(|_| b"ab c\xc3\xa9"[rng.usize(0..6)]));
        }
        1 | 2 => {
            let (w, h) = (rng.u16(1..8), rng.u16(1..8));
            for v in [w, h] {
                d.extend_from_slice(&v.to_be_bytes());
            }
            d.push(rng.u8(0..6));
            d.push(0);
            let (rw, rh) = (rng.u16(1..=w), rng.u16(1..=h));
            for v in [0, 0, rw, rh, 0, 0, 0, 0, 0] {
                d.extend_from_slice(&v.to_be_bytes());
            }
            d.extend((0..rw as usize * rh as usize * 3).map(|_| rng.u8(..)));
        }
        _ => {}
    }
    mutate(rng, d, &[b"\x00", b"\xff\xff\xff\xff", b"TW\x01"])
}

#[test]
fn datagrams_into_the_core() {
    run(
        2000,
        2,
        |rng| {
            let mut input = Vec::new();
            for _ in 0..rng.usize(1..8) {
                // 0xFF separates datagrams in this target's input.
                let d: Vec<u8> = twp_datagram(rng)
                    .into_iter()
                    .filter(|&b| b != 0xff)
                    .collect();
                input.extend(d);
                input.push(0xff);
            }
            input
        },
        cores::datagram,
    );
}

#[test]
fn hello_and_token_into_the_core() {
    run(
        2000,
        3,
        |rng| (0..rng.usize(0..300)).map(|_| rng.u8(..)).collect(),
        cores::hello,
    );
}

// -------------------------------------------------------------- config

const CONFIG_PIECES: &[&[u8]] = &[
    b"0",
    b"-1",
    b"18446744073709551616",
    b"1e309",
    b"nan",
    b"\"\"",
    b"\"x\"",
    b"[]",
    b"{}",
    b"\n[limits]\n",
    b"\n[[pipelines]]\nid = 1\n",
    b"\n[upstreams.m]\nkind = \"kserve\"\nurl = \"http://\"\nmodel = \"m\"\n",
    b"max_fragments = 0\n",
    b"mtu = 70000\n",
    b"width = 0\n",
    b"tokenizer = \"builtin:nope\"\n",
    b"=",
    b"\xc3\xa9",
];

#[test]
fn configs_into_the_loader() {
    let shipped = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/tensorwire.toml"
    ))
    .unwrap();
    run(
        1500,
        4,
        |rng| {
            let lines: Vec<&[u8]> = shipped.split(|&b| b == b'\n').collect();
            // Drop or repeat whole lines, then byte-level edits.
            let mut t = Vec::new();
            for l in lines {
                match rng.u8(0..20) {
                    0 => {}
                    1 => {
                        t.extend_from_slice(l);
                        t.push(b'\n');
                        t.extend_from_slice(l);
                        t.push(b'\n');
                    }
                    _ => {
                        t.extend_from_slice(l);
                        t.push(b'\n');
                    }
                }
            }
            for _ in 0..rng.usize(0..3) {
                t = mutate(rng, t, CONFIG_PIECES);
            }
            t
        },
        cores::config,
    );
}

// ------------------------------------------------------------- stitch

fn text(rng: &mut Rng) -> Vec<u8> {
    const CHARS: &[&str] = &[
        "a", "b", "Z", "7", " ", "  ", "\t", "\n", ".", ",", "'", "-", "é", "\u{301}", "ß", "İ",
        "中", "文", "😀", "\u{200b}", "\u{a0}", "[CLS]", "[SEP]", "word", "tokenization",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    ];
    let mut t: Vec<u8> = Vec::new();
    for _ in 0..rng.usize(0..80) {
        t.extend_from_slice(CHARS[rng.usize(0..CHARS.len())].as_bytes());
    }
    if rng.u8(0..10) == 0 && !t.is_empty() {
        // Invalid UTF-8 somewhere.
        let i = rng.usize(0..t.len());
        t[i] = [0xff, 0xc3, 0x80][rng.usize(0..3)];
    }
    t
}

#[test]
fn texts_into_the_stitcher() {
    run(
        1500,
        5,
        |rng| {
            let mut input = vec![rng.u8(..), rng.u8(..), rng.u8(..), rng.u8(..)];
            input.extend(text(rng));
            input
        },
        cores::stitch,
    );
}
