//! Property tests: on arbitrary Unicode text (long words, whitespace runs,
//! combining marks, control characters, CJK, emoji, no spaces at all), the
//! fast WordPiece and the streaming stitcher give the ids of the
//! `tokenizers` crate on the whole text, for any chunking, overlap and
//! arrival order.

use proptest::prelude::*;
use std::sync::{Arc, OnceLock};
use tensorwire::transform::text::{Padding, SpanScratch, SpanTokenizer, TextOutput, TextPlan};
use tensorwire::transform::DType;

fn plan_of(json: &str, max_length: usize) -> Arc<TextPlan> {
    Arc::new(
        TextPlan::from_json(
            json,
            SpanTokenizer::Fastest,
            max_length,
            true,
            Padding::None,
            vec![TextOutput::InputIds, TextOutput::AttentionMask],
            DType::Int64,
        )
        .unwrap(),
    )
}

mod support;
use support::testdata;

fn minilm() -> &'static Arc<TextPlan> {
    static P: OnceLock<Arc<TextPlan>> = OnceLock::new();
    P.get_or_init(|| {
        let json = std::fs::read_to_string(testdata("tokenizers/all-MiniLM-L6-v2/tokenizer.json"))
            .unwrap();
        plan_of(&json, 1 << 16)
    })
}

/// MiniLM with each of the 24 BertNormalizer option combinations.
fn minilm_variants() -> &'static Vec<Arc<TextPlan>> {
    static P: OnceLock<Vec<Arc<TextPlan>>> = OnceLock::new();
    P.get_or_init(|| {
        let json = std::fs::read_to_string(testdata("tokenizers/all-MiniLM-L6-v2/tokenizer.json"))
            .unwrap();
        let base: serde_json::Value = serde_json::from_str(&json).unwrap();
        let mut plans = Vec::new();
        for clean_text in [true, false] {
            for handle_chinese_chars in [true, false] {
                for strip_accents in [None, Some(true), Some(false)] {
                    for lowercase in [true, false] {
                        let mut v = base.clone();
                        v["normalizer"] = serde_json::json!({
                            "type": "BertNormalizer",
                            "clean_text": clean_text,
                            "handle_chinese_chars": handle_chinese_chars,
                            "strip_accents": strip_accents,
                            "lowercase": lowercase,
                        });
                        plans.push(plan_of(&v.to_string(), 1 << 16));
                    }
                }
            }
        }
        plans
    })
}

fn cl100k() -> &'static Arc<TextPlan> {
    static P: OnceLock<Arc<TextPlan>> = OnceLock::new();
    P.get_or_init(|| plan_of(&support::cl100k_json(), 1 << 16))
}

/// Characters from the classes that matter to normalizers and
/// pre-tokenizers, weighted towards the tricky ones.
fn tricky_char() -> impl Strategy<Value = char> {
    prop_oneof![
        4 => prop::char::range('a', 'z'),
        2 => prop::char::range('A', 'Z'),
        1 => prop::char::range('0', '9'),
        3 => prop::sample::select(vec![' ', ' ', '\t', '\n', '\r', '\u{b}', '\u{c}', '\u{85}', '\u{a0}', '\u{2000}', '\u{2028}', '\u{3000}']),
        2 => prop::sample::select(vec!['.', ',', '\'', '"', '!', '#', '-', '_', '[', ']', '<', '|', '>', '¿', '«', '»', '—', '、', '。']),
        2 => prop::char::range('\u{300}', '\u{36f}'),
        1 => prop::char::range('\0', '\u{1f}'),
        1 => prop::sample::select(vec!['\u{7f}', '\u{ad}', '\u{200b}', '\u{200d}', '\u{fe0f}', '\u{feff}', '\u{fffd}', '\u{e000}']),
        2 => prop::char::range('\u{c0}', '\u{17f}'),
        2 => prop::char::range('\u{4e00}', '\u{4e40}'),
        1 => prop::char::range('\u{3040}', '\u{30ff}'),
        1 => prop::char::range('\u{ac00}', '\u{ac40}'),
        1 => prop::char::range('\u{1f600}', '\u{1f64f}'),
        1 => prop::sample::select(vec!['İ', 'ǅ', 'ß', 'ﬁ', 'Σ', 'ς', '\u{2f800}', '\u{f900}', '\u{1d165}', '\u{e9}', '\u{1e9e}']),
        1 => any::<char>(),
    ]
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::collection::vec(tricky_char(), 0..300).prop_map(|v| v.into_iter().collect()),
        // Long words (past max_input_chars_per_word and any overlap).
        1 => (prop::collection::vec(prop::char::range('a', 'e'), 90..260), prop::collection::vec(tricky_char(), 0..40))
            .prop_map(|(w, t)| w.into_iter().chain(t).collect()),
        // Whitespace runs between words.
        1 => prop::collection::vec(("[a-zA-Z]{1,8}", "[ \t\n\r]{1,6}"), 0..30)
            .prop_map(|v| v.into_iter().map(|(a, b)| a + &b).collect()),
        // Special tokens inside the text.
        1 => prop::collection::vec(prop::sample::select(vec!["[CLS]", "[SEP]", "[MASK]", "<|endoftext|>", "word", " ", "x[UNK]y", "[", "|>"]), 0..30)
            .prop_map(|v| v.concat()),
        1 => any::<String>(),
    ]
}

/// Chunk boundaries: (start with overlap, end), as random as possible.
fn chunking(len: usize, max_chunk: usize, overlap: usize, seed: u64) -> Vec<(usize, usize)> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut out = Vec::new();
    let mut at = 0;
    while at < len {
        let end = (at + rng.usize(1..=max_chunk)).min(len);
        out.push((at.saturating_sub(rng.usize(0..=overlap)), end));
        at = end;
    }
    if out.is_empty() {
        out.push((0, 0));
    }
    match seed % 3 {
        0 => {}
        1 => out.reverse(),
        _ => rng.shuffle(&mut out),
    }
    out
}

fn streamed(
    plan: &Arc<TextPlan>,
    text: &str,
    parts: &[(usize, usize)],
    min_span: usize,
) -> tensorwire::transform::text::Encoded {
    let bytes = text.as_bytes();
    let mut s = plan.stream_with_min_span(bytes.len(), min_span);
    for &(a, b) in parts {
        s.add(a, &bytes[a..b]).unwrap();
    }
    s.finish().unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn fast_wordpiece_equals_the_crate(t in text()) {
        let plan = minilm();
        let want = plan.encode(&t).unwrap();
        let got = plan.encode_spans(&t, &mut SpanScratch::default()).unwrap();
        prop_assert_eq!(got, want);
    }

    #[test]
    fn any_normalizer_options_equal_the_crate(t in text(), variant in 0usize..24, max_chunk in 1usize..64, overlap in 0usize..16, seed in any::<u64>()) {
        let plan = &minilm_variants()[variant];
        prop_assert!(plan.uses_fast_wordpiece());
        let want = plan.encode(&t).unwrap();
        prop_assert_eq!(&plan.encode_spans(&t, &mut SpanScratch::default()).unwrap(), &want);
        let parts = chunking(t.len(), max_chunk, overlap, seed);
        prop_assert_eq!(streamed(plan, &t, &parts, 0), want);
    }

    #[test]
    fn streamed_wordpiece_equals_the_crate(t in text(), max_chunk in 1usize..64, overlap in 0usize..16, seed in any::<u64>(), min_span in prop_oneof![Just(0usize), 1usize..48]) {
        let plan = minilm();
        let parts = chunking(t.len(), max_chunk, overlap, seed);
        prop_assert_eq!(streamed(plan, &t, &parts, min_span), plan.encode(&t).unwrap());
    }

    #[test]
    fn streamed_cl100k_equals_the_crate(t in text(), max_chunk in 1usize..64, overlap in 0usize..16, seed in any::<u64>(), min_span in prop_oneof![Just(0usize), 1usize..48]) {
        let plan = cl100k();
        let parts = chunking(t.len(), max_chunk, overlap, seed);
        prop_assert_eq!(streamed(plan, &t, &parts, min_span), plan.encode(&t).unwrap());
    }
}
