//! Tokenization throughput on real English prose (testdata/text:
//! gpl-3.0.txt, rfc1951.txt, apache-2.0.txt; no code, no repeated text),
//! cut into 1 KB and 16 KB documents, single thread, in one run:
//!
//! (a) the `tokenizers` crate (=1.0.0-rc.3) encode on the whole text,
//!     warm (its word cache filled by earlier iterations) and cold (a
//!     freshly loaded tokenizer for each pass over the corpus);
//! (b) tensorwire's WordPiece on the whole text (no cache: cold = warm);
//! (c) tensorwire streaming: 1400-byte chunks with 64-byte overlap, in
//!     order, through the stitcher, then special tokens / truncation.
//!
//! For byte-level BPE (cl100k_base), (a) and (c) through the crate.
//! Throughput is in bytes; the token count of each corpus is printed so
//! tokens/s = bytes/s x tokens/byte. Run with `make bench`.

use criterion::measurement::WallTime;
use criterion::{
    criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion, SamplingMode,
    Throughput,
};
use std::hint::black_box;
use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tensorwire::transform::text::{Padding, SpanScratch, SpanTokenizer, TextOutput, TextPlan};
use tensorwire::transform::DType;

const CHUNK: usize = 1400;
const OVERLAP: usize = 64;

fn testdata(rel: &str) -> String {
    format!("{}/testdata/{rel}", env!("CARGO_MANIFEST_DIR"))
}

fn prose() -> String {
    ["gpl-3.0.txt", "rfc1951.txt", "apache-2.0.txt"]
        .iter()
        .map(|f| std::fs::read_to_string(testdata(&format!("text/{f}"))).unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The prose cut at whitespace into documents of about `size` bytes.
fn documents(text: &str, size: usize) -> Vec<String> {
    let mut docs = Vec::new();
    let mut rest = text;
    while rest.len() >= size {
        let cut = rest[..size].rfind(char::is_whitespace).unwrap_or(size);
        let cut = if cut == 0 { size } else { cut };
        docs.push(rest[..cut].to_string());
        rest = &rest[cut..];
    }
    docs
}

fn plan(json: &str, spans: SpanTokenizer) -> Arc<TextPlan> {
    Arc::new(
        TextPlan::from_json(
            json,
            spans,
            1 << 20,
            true,
            Padding::None,
            vec![TextOutput::InputIds],
            DType::Int64,
        )
        .unwrap(),
    )
}

fn streamed(plan: &Arc<TextPlan>, doc: &str) -> usize {
    let bytes = doc.as_bytes();
    let mut s = plan.stream(bytes.len());
    let mut at = 0;
    loop {
        let end = (at + CHUNK).min(bytes.len());
        s.add(at, &bytes[at..end]).unwrap();
        if end == bytes.len() {
            break;
        }
        at = end - OVERLAP;
    }
    s.finish().unwrap().ids.len()
}

/// Time of `iters` passes over `docs`, each with a freshly loaded
/// tokenizer (loading not timed): the crate's word cache starts empty.
fn cold(json: &str, docs: &[String], iters: u64) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let p = plan(json, SpanTokenizer::Crate);
        let t = Instant::now();
        for d in docs {
            black_box(p.encode(black_box(d)).unwrap());
        }
        total += t.elapsed();
    }
    total
}

/// A group for cold-cache runs: every iteration loads a tokenizer (not
/// timed, but slow), so few iterations: 30 samples of one or two.
fn cold_group(c: &mut Criterion, name: String) -> BenchmarkGroup<'_, WallTime> {
    let mut g = c.benchmark_group(name);
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(30)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_millis(20));
    g
}

fn wordpiece(c: &mut Criterion) {
    let json =
        std::fs::read_to_string(testdata("tokenizers/all-MiniLM-L6-v2/tokenizer.json")).unwrap();
    let crate_plan = plan(&json, SpanTokenizer::Crate);
    let fast = plan(&json, SpanTokenizer::Fastest);
    assert!(fast.uses_fast_wordpiece());
    let text = prose();
    for size in [1024, 16 * 1024] {
        let docs = documents(&text, size);
        let bytes: usize = docs.iter().map(String::len).sum();
        let tokens: usize = docs
            .iter()
            .map(|d| crate_plan.encode(d).unwrap().ids.len())
            .sum();
        eprintln!(
            "WordPiece {size} B docs: {} docs, {bytes} bytes, {tokens} tokens ({:.4} tokens/byte)",
            docs.len(),
            tokens as f64 / bytes as f64
        );
        let mut g = c.benchmark_group(format!("wordpiece MiniLM prose {}KB docs", size / 1024));
        g.throughput(Throughput::Bytes(bytes as u64));
        g.bench_function(BenchmarkId::new("a crate whole text", "warm"), |b| {
            b.iter(|| {
                for d in &docs {
                    black_box(crate_plan.encode(black_box(d)).unwrap());
                }
            })
        });
        let mut scratch = SpanScratch::default();
        g.bench_function(
            BenchmarkId::new("b tensorwire whole text", "no cache"),
            |b| {
                b.iter(|| {
                    for d in &docs {
                        black_box(fast.encode_spans(black_box(d), &mut scratch).unwrap());
                    }
                })
            },
        );
        g.bench_function(
            BenchmarkId::new("c tensorwire streaming 1400+64", "no cache"),
            |b| {
                b.iter(|| {
                    for d in &docs {
                        black_box(streamed(&fast, black_box(d)));
                    }
                })
            },
        );
        g.finish();
        let mut g = cold_group(
            c,
            format!("wordpiece MiniLM prose {}KB docs cold", size / 1024),
        );
        g.throughput(Throughput::Bytes(bytes as u64));
        g.bench_function(BenchmarkId::new("a crate whole text", "cold"), |b| {
            b.iter_custom(|iters| cold(&json, &docs, iters))
        });
        g.finish();
    }
}

fn byte_level_bpe(c: &mut Criterion) {
    let gz = std::fs::read(testdata("tokenizers/cl100k_base/tokenizer.json.gz")).unwrap();
    let mut json = String::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_string(&mut json)
        .unwrap();
    let p = plan(&json, SpanTokenizer::Fastest);
    let text = prose();
    for size in [1024, 16 * 1024] {
        let docs = documents(&text, size);
        let bytes: usize = docs.iter().map(String::len).sum();
        let tokens: usize = docs.iter().map(|d| p.encode(d).unwrap().ids.len()).sum();
        eprintln!(
            "cl100k {size} B docs: {} docs, {bytes} bytes, {tokens} tokens ({:.4} tokens/byte)",
            docs.len(),
            tokens as f64 / bytes as f64
        );
        let mut g = c.benchmark_group(format!(
            "byte-level BPE cl100k prose {}KB docs",
            size / 1024
        ));
        g.throughput(Throughput::Bytes(bytes as u64));
        g.bench_function(BenchmarkId::new("a crate whole text", "warm"), |b| {
            b.iter(|| {
                for d in &docs {
                    black_box(p.encode(black_box(d)).unwrap());
                }
            })
        });
        g.bench_function(BenchmarkId::new("c crate streaming 1400+64", "warm"), |b| {
            b.iter(|| {
                for d in &docs {
                    black_box(streamed(&p, black_box(d)));
                }
            })
        });
        g.finish();
        let mut g = cold_group(
            c,
            format!("byte-level BPE cl100k prose {}KB docs cold", size / 1024),
        );
        g.throughput(Throughput::Bytes(bytes as u64));
        g.bench_function(BenchmarkId::new("a crate whole text", "cold"), |b| {
            b.iter_custom(|iters| cold(&json, &docs, iters))
        });
        g.bench_function(BenchmarkId::new("c crate streaming 1400+64", "cold"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let fresh = plan(&json, SpanTokenizer::Fastest);
                    let t = Instant::now();
                    for d in &docs {
                        black_box(streamed(&fresh, black_box(d)));
                    }
                    total += t.elapsed();
                }
                total
            })
        });
        g.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(5)).warm_up_time(Duration::from_secs(1));
    targets = wordpiece, byte_level_bpe
}
criterion_main!(benches);
