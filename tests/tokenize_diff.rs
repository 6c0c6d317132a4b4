//! Differential tests of the serving-path tokenizers (tensorwire's
//! WordPiece, the streaming stitcher over it and over the `tokenizers`
//! crate) against the crate's encode of the whole text, on real corpora
//! (testdata/text, see testdata/SOURCES.md) and real tokenizers, with
//! random chunk sizes, overlaps and arrival orders.

use std::sync::Arc;
use tensorwire::transform::stitch::{CutRule, StitchError};
use tensorwire::transform::text::{
    cut_rule_of, Padding, SpanScratch, SpanTokenizer, TextOutput, TextPlan, CRATE_MIN_SPAN,
};
use tensorwire::transform::DType;

mod support;
use support::{cl100k_json, testdata};

fn minilm_json() -> String {
    std::fs::read_to_string(testdata("tokenizers/all-MiniLM-L6-v2/tokenizer.json")).unwrap()
}

fn plan(json: &str, spans: SpanTokenizer, max_length: usize, padding: Padding) -> Arc<TextPlan> {
    Arc::new(
        TextPlan::from_json(
            json,
            spans,
            max_length,
            true,
            padding,
            vec![
                TextOutput::InputIds,
                TextOutput::AttentionMask,
                TextOutput::TokenTypeIds,
            ],
            DType::Int64,
        )
        .unwrap(),
    )
}

fn corpora() -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = std::fs::read_dir(testdata("text"))
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect();
    out.sort();
    assert!(out.len() >= 10, "corpora missing");
    out
}

/// Chunks as a client cuts them: `max_chunk` new bytes each (random sizes
/// down to 1), each repeating `overlap` bytes of the previous one.
fn chunks(
    len: usize,
    max_chunk: usize,
    overlap: usize,
    rng: &mut fastrand::Rng,
) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < len {
        let n = if rng.bool() {
            max_chunk
        } else {
            rng.usize(1..=max_chunk)
        };
        let end = (at + n).min(len);
        out.push((at.saturating_sub(overlap), end));
        at = end;
    }
    if out.is_empty() {
        out.push((0, 0));
    }
    out
}

#[derive(Debug, Clone, Copy)]
enum Order {
    Sequential,
    Reversed,
    Shuffled,
}

fn stream_ids(
    plan: &Arc<TextPlan>,
    text: &[u8],
    parts: &[(usize, usize)],
) -> Result<tensorwire::transform::text::Encoded, StitchError> {
    let mut s = plan.stream(text.len());
    for &(a, b) in parts {
        s.add(a, &text[a..b])?;
    }
    s.finish()
}

fn check_streaming(name: &str, plan: &Arc<TextPlan>, text: &str, rng: &mut fastrand::Rng) {
    let want = plan.encode(text).unwrap();
    for (max_chunk, overlap) in [
        (1400, 64),
        (1400, 0),
        (97, 0),
        (97, 300),
        (13, 5),
        (4000, 1),
    ] {
        for order in [Order::Sequential, Order::Reversed, Order::Shuffled] {
            let mut parts = chunks(text.len(), max_chunk, overlap, rng);
            match order {
                Order::Sequential => {}
                Order::Reversed => parts.reverse(),
                Order::Shuffled => rng.shuffle(&mut parts),
            }
            let got = stream_ids(plan, text.as_bytes(), &parts).unwrap();
            assert_eq!(
                got, want,
                "{name}: chunks {max_chunk} overlap {overlap} {order:?}"
            );
        }
    }
}

#[test]
fn minilm_takes_the_fast_path_and_cl100k_the_crate() {
    let bert = plan(&minilm_json(), SpanTokenizer::Fastest, 256, Padding::None);
    assert!(bert.uses_fast_wordpiece());
    assert_eq!(
        bert.cut_rule(),
        CutRule::AfterAsciiWhitespace { chinese: true }
    );
    let bpe = plan(&cl100k_json(), SpanTokenizer::Fastest, 256, Padding::None);
    assert!(!bpe.uses_fast_wordpiece());
    assert_eq!(bpe.cut_rule(), CutRule::BeforeSpaceLetter);
}

#[test]
fn fast_wordpiece_whole_text_matches_the_crate_on_every_corpus() {
    let json = minilm_json();
    let p = plan(&json, SpanTokenizer::Fastest, 1 << 20, Padding::None);
    let mut scratch = SpanScratch::default();
    for (name, text) in corpora() {
        let want = p.encode(&text).unwrap();
        let got = p.encode_spans(&text, &mut scratch).unwrap();
        assert_eq!(got.ids.len(), want.ids.len(), "{name}: token count");
        assert_eq!(got, want, "{name}");
    }
}

#[test]
fn fast_wordpiece_truncates_and_pads_as_the_crate() {
    let json = minilm_json();
    let mut scratch = SpanScratch::default();
    for (max_length, padding) in [
        (128, Padding::MaxLength),
        (16, Padding::None),
        (3, Padding::MaxLength),
        (512, Padding::MaxLength),
    ] {
        let p = plan(&json, SpanTokenizer::Fastest, max_length, padding);
        for (name, text) in corpora() {
            for t in [&text[..], "", "a", &text[..text.len().min(200)]] {
                let want = p.encode(t).unwrap();
                assert_eq!(
                    p.encode_spans(t, &mut scratch).unwrap(),
                    want,
                    "{name} {max_length}"
                );
            }
        }
    }
}

#[test]
fn streaming_wordpiece_matches_the_crate_for_any_chunking() {
    let json = minilm_json();
    let mut rng = fastrand::Rng::with_seed(5);
    for spans in [SpanTokenizer::Fastest, SpanTokenizer::Crate] {
        let p = plan(&json, spans, 1 << 20, Padding::None);
        for (name, text) in corpora() {
            check_streaming(&format!("{name} {spans:?}"), &p, &text, &mut rng);
        }
    }
}

#[test]
fn streaming_cl100k_matches_the_crate_for_any_chunking() {
    let p = plan(
        &cl100k_json(),
        SpanTokenizer::Fastest,
        1 << 20,
        Padding::None,
    );
    let mut rng = fastrand::Rng::with_seed(6);
    for (name, text) in corpora() {
        check_streaming(&name, &p, &text, &mut rng);
    }
}

#[test]
fn streaming_applies_truncation_and_padding_at_the_end() {
    let mut rng = fastrand::Rng::with_seed(7);
    for json in [minilm_json(), cl100k_json()] {
        let p = plan(&json, SpanTokenizer::Fastest, 128, Padding::MaxLength);
        let text = &corpora()[0].1;
        check_streaming("truncated", &p, text, &mut rng);
        check_streaming("padded", &p, "short text", &mut rng);
        check_streaming("empty", &p, "", &mut rng);
    }
}

/// The point of streaming: with 1400-byte chunks and 64-byte overlap in
/// order, everything but the unfinished tail is tokenized on arrival.
#[test]
fn in_order_prose_is_tokenized_while_it_arrives() {
    for json in [minilm_json(), cl100k_json()] {
        let p = plan(&json, SpanTokenizer::Fastest, 1 << 20, Padding::None);
        let text = std::fs::read(testdata("text/gpl-3.0.txt")).unwrap();
        let parts = chunks(text.len(), 1400, 64, &mut fastrand::Rng::with_seed(1));
        let mut s = p.stream(text.len());
        for &(a, b) in &parts {
            s.add(a, &text[a..b]).unwrap();
            // At most the last (unfinished) word waits, and for the crate
            // a span shorter than CRATE_MIN_SPAN.
            let waits = if p.uses_fast_wordpiece() {
                64
            } else {
                CRATE_MIN_SPAN + 64
            };
            assert!(
                b - s.tokenized_bytes() < waits,
                "{} of {b} tokenized",
                s.tokenized_bytes()
            );
        }
        assert_eq!(
            s.finish().unwrap(),
            p.encode(std::str::from_utf8(&text).unwrap()).unwrap()
        );
    }
}

/// A chunk that arrives before its predecessors is tokenized at once
/// between its own cuts.
#[test]
fn out_of_order_chunks_are_tokenized_on_arrival() {
    let p = plan(
        &minilm_json(),
        SpanTokenizer::Fastest,
        1 << 20,
        Padding::None,
    );
    let text = std::fs::read(testdata("text/apache-2.0.txt")).unwrap();
    let mut s = p.stream(text.len());
    s.add(5000, &text[5000..6400]).unwrap();
    assert!(s.tokenized_bytes() > 1300, "{}", s.tokenized_bytes());
}

#[test]
fn bad_input_is_a_typed_error() {
    let p = plan(&minilm_json(), SpanTokenizer::Fastest, 128, Padding::None);
    // Invalid UTF-8 after reassembly, cut inside the bad sequence.
    let bad = b"valid words \xe4\xb8 then \xff more words";
    let mut s = p.stream(bad.len());
    s.add(0, &bad[..13]).unwrap();
    s.add(13, &bad[13..]).unwrap();
    assert!(matches!(s.finish(), Err(StitchError::InvalidUtf8(_))));
    // A character cut by the chunk boundary is fine.
    let ok = "héllo wörld 中文".as_bytes();
    let mut s = p.stream(ok.len());
    s.add(2, &ok[2..]).unwrap();
    s.add(0, &ok[..2]).unwrap();
    assert_eq!(s.finish().unwrap(), p.encode("héllo wörld 中文").unwrap());
    // Overlaps that disagree, even after the first bytes were tokenized.
    let text = b"the quick brown fox jumps over the lazy dog";
    let mut s = p.stream(text.len());
    s.add(0, &text[..20]).unwrap();
    let mut other = text[10..30].to_vec();
    other[3] = b'X';
    assert_eq!(s.add(10, &other), Err(StitchError::OverlapMismatch(13)));
    // Bytes left uncovered.
    let mut s = p.stream(text.len());
    s.add(0, &text[..20]).unwrap();
    s.add(21, &text[21..]).unwrap();
    assert_eq!(s.finish(), Err(StitchError::Uncovered));
    // A chunk past the end.
    let mut s = p.stream(4);
    assert!(matches!(
        s.add(2, b"abc"),
        Err(StitchError::OutOfRange { .. })
    ));
}

/// The converted cl100k_base gives tiktoken's own ids (recorded by
/// testdata/make_cl100k_tokenizer.py from tiktoken), whole and streamed.
#[test]
fn cl100k_ids_equal_tiktoken_on_every_corpus() {
    let gz = std::fs::read(testdata("golden/cl100k_tiktoken_ids.json.gz")).unwrap();
    let golden: std::collections::BTreeMap<String, Vec<u32>> =
        serde_json::from_reader(flate2::read::GzDecoder::new(&gz[..])).unwrap();
    let p = plan(
        &cl100k_json(),
        SpanTokenizer::Fastest,
        1 << 20,
        Padding::None,
    );
    let mut rng = fastrand::Rng::with_seed(8);
    let corpora = corpora();
    assert_eq!(golden.len(), corpora.len(), "golden ids for every corpus");
    for (name, text) in corpora {
        let want = &golden[&name];
        assert_eq!(&p.encode(&text).unwrap().ids, want, "{name}: crate");
        let parts = chunks(text.len(), 1400, 64, &mut rng);
        let got = stream_ids(&p, text.as_bytes(), &parts).unwrap();
        assert_eq!(&got.ids, want, "{name}: streamed");
    }
}

/// Every BertNormalizer option combination (the fast path implements them
/// all), on the MiniLM vocabulary: the fast path, whole and streamed,
/// equals the crate with the same tokenizer.json.
#[test]
fn fast_wordpiece_matches_the_crate_for_every_normalizer_option() {
    let base: serde_json::Value = serde_json::from_str(&minilm_json()).unwrap();
    let corpora = corpora();
    let mut rng = fastrand::Rng::with_seed(9);
    let mut variants = 0;
    for clean_text in [true, false] {
        for handle_chinese_chars in [true, false] {
            for strip_accents in [None, Some(true), Some(false)] {
                for lowercase in [true, false] {
                    let mut json = base.clone();
                    json["normalizer"] = serde_json::json!({
                        "type": "BertNormalizer",
                        "clean_text": clean_text,
                        "handle_chinese_chars": handle_chinese_chars,
                        "strip_accents": strip_accents,
                        "lowercase": lowercase,
                    });
                    let json = json.to_string();
                    let p = plan(&json, SpanTokenizer::Fastest, 1 << 20, Padding::None);
                    assert!(p.uses_fast_wordpiece());
                    let label = format!("clean {clean_text} chinese {handle_chinese_chars} strip {strip_accents:?} lower {lowercase}");
                    for (name, text) in &corpora {
                        let want = p.encode(text).unwrap();
                        let got = p.encode_spans(text, &mut SpanScratch::default()).unwrap();
                        assert_eq!(got, want, "{name} {label}");
                        let parts = chunks(text.len(), 700, 16, &mut rng);
                        let streamed = stream_ids(&p, text.as_bytes(), &parts).unwrap();
                        assert_eq!(streamed, want, "{name} {label} streamed");
                    }
                    variants += 1;
                }
            }
        }
    }
    assert_eq!(variants, 24);
}

/// The GPT-2 split (ByteLevel with its own regex) also gets
/// BeforeSpaceLetter cuts: cl100k's vocabulary behind a GPT-2 pre-tokenizer
/// streams to the crate's ids on every corpus.
#[test]
fn gpt2_byte_level_pre_tokenizer_streams_exactly() {
    let mut json: serde_json::Value = serde_json::from_str(&cl100k_json()).unwrap();
    json["pre_tokenizer"] = serde_json::json!({
        "type": "ByteLevel",
        "add_prefix_space": false,
        "trim_offsets": true,
        "use_regex": true,
    });
    let p = plan(
        &json.to_string(),
        SpanTokenizer::Fastest,
        1 << 20,
        Padding::None,
    );
    assert_eq!(p.cut_rule(), CutRule::BeforeSpaceLetter);
    let mut rng = fastrand::Rng::with_seed(10);
    for (name, text) in corpora() {
        let want = p.encode(&text).unwrap();
        for (max_chunk, overlap) in [(1400, 64), (61, 0)] {
            let parts = chunks(text.len(), max_chunk, overlap, &mut rng);
            for min_span in [0, 4096] {
                let mut s = p.stream_with_min_span(text.len(), min_span);
                for &(a, b) in &parts {
                    s.add(a, &text.as_bytes()[a..b]).unwrap();
                }
                assert_eq!(s.finish().unwrap(), want, "{name} {max_chunk} {min_span}");
            }
        }
    }
    // With a prefix space added to every span, no cut is exact (the
    // crate rejects that config anyway).
    json["pre_tokenizer"]["add_prefix_space"] = serde_json::Value::Bool(true);
    assert_eq!(cut_rule_of(&json.to_string()), CutRule::Never);
}
