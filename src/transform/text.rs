//! Tokenization into the text pipeline's output tensors.
//!
//! Serving path: [`TextStream`] tokenizes spans of the text as chunks
//! arrive ([`super::stitch`]), with tensorwire's own WordPiece for BERT
//! tokenizers ([`super::wordpiece`]) and the `tokenizers` crate for any
//! other; special tokens, truncation and padding are then applied with the
//! crate's own post-processing functions. [`TextPlan::encode`] (the crate
//! on the whole text) is the oracle.

use super::stitch::{CutRule, StitchError, Stitcher};
use super::wordpiece::{FastWordPiece, WordPieceScratch};
use super::{DType, Tensor};
use std::sync::Arc;
use tokenizers::pipeline::{EncodeOptions, Override, PipelineToken, PipelineTokenizer};
use tokenizers::utils::padding::pad_encodings;
use tokenizers::utils::truncation::truncate_pair;
use tokenizers::{PaddingParams, PaddingStrategy, TruncationParams};

/// Which tensors a text pipeline produces, in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TextOutput {
    InputIds,
    AttentionMask,
    TokenTypeIds,
}

impl TextOutput {
    pub fn name(self) -> &'static str {
        match self {
            TextOutput::InputIds => "input_ids",
            TextOutput::AttentionMask => "attention_mask",
            TextOutput::TokenTypeIds => "token_type_ids",
        }
    }
}

/// Padding policy of a text pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Padding {
    /// Length = number of tokens.
    None,
    /// Padded to `max_length`.
    MaxLength,
}

impl Padding {
    pub fn name(self) -> &'static str {
        match self {
            Padding::None => "none",
            Padding::MaxLength => "max_length",
        }
    }
}

/// Error loading a tokenizer.json.
#[derive(Debug, thiserror::Error)]
#[error("cannot load tokenizer: {0}")]
pub struct TokenizerLoadError(pub String);

/// A loaded tokenizer with the pipeline's truncation and padding (which
/// override whatever the tokenizer.json embeds, as the spec says).
#[derive(Clone)]
pub struct TextPlan {
    tokenizer: PipelineTokenizer,
    options: EncodeOptions,
    /// Spans: no special tokens, no truncation, no padding.
    span_options: EncodeOptions,
    fast: Option<Arc<FastWordPiece>>,
    cut_rule: CutRule,
    pub outputs: Vec<TextOutput>,
    pub dtype: DType,
}

impl std::fmt::Debug for TextPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextPlan")
            .field("outputs", &self.outputs)
            .field("dtype", &self.dtype)
            .field("fast_wordpiece", &self.fast.is_some())
            .field("cut_rule", &self.cut_rule)
            .finish_non_exhaustive()
    }
}

/// Reads a tokenizer.json, upgrading a pre-1.0 file on the fly.
pub fn load_tokenizer(json: &str) -> Result<PipelineTokenizer, TokenizerLoadError> {
    match tokenizers::from_json(json) {
        Ok(t) => Ok(t),
        Err(first) => {
            let canonical = tokenizers::canonicalize_str(json)
                .map_err(|e| TokenizerLoadError(format!("{first}; upgrading it failed: {e}")))?;
            tokenizers::from_json(&canonical).map_err(|e| TokenizerLoadError(e.to_string()))
        }
    }
}

/// Shortest span handed to the `tokenizers` crate while chunks arrive: each
/// encode call has a fixed cost (about a microsecond, measured in
/// benches/tokenize.rs), so spans of one datagram (~1.4 KB) would cost ~20%
/// of the throughput; 4 KB spans keep it within a few percent, and at most
/// that much is left to tokenize when the last chunk arrives.
pub const CRATE_MIN_SPAN: usize = 4096;

/// Which tokenizer serves a pipeline's spans.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanTokenizer {
    /// tensorwire's WordPiece when the tokenizer.json is BERT-style, else
    /// the crate.
    Fastest,
    /// Always the `tokenizers` crate.
    Crate,
}

/// The known byte-level split regexes with a [`CutRule::BeforeSpaceLetter`]
/// proof (see there): GPT-2's and cl100k's, as tokenizer.json spells them.
const SPACE_LETTER_REGEXES: &[&str] = &[
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+",
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
];

/// The cut rule a tokenizer.json allows, from its components.
pub fn cut_rule_of(json: &str) -> CutRule {
    let Ok(root) = serde_json::from_str::<serde_json::Value>(json) else {
        return CutRule::Never;
    };
    let ty = |v: &serde_json::Value| v.get("type").and_then(|t| t.as_str()).map(str::to_owned);
    let flag = |v: &serde_json::Value, k: &str| v.get(k).and_then(|b| b.as_bool());
    // Added tokens are matched first on the raw text; a cut is safe when
    // none can contain it (no whitespace inside, nothing stripped around).
    let added_ok = root
        .get("added_tokens")
        .and_then(|a| a.as_array())
        .is_none_or(|tokens| {
            tokens.iter().all(|t| {
                let content = t.get("content").and_then(|c| c.as_str()).unwrap_or(" ");
                !content.is_empty()
                    && !content.chars().any(char::is_whitespace)
                    && ["single_word", "lstrip", "rstrip"]
                        .iter()
                        .all(|k| flag(t, k) != Some(true))
            })
        });
    if !added_ok {
        return CutRule::Never;
    }
    let null = serde_json::Value::Null;
    let normalizer = root.get("normalizer").unwrap_or(&null);
    let pre = root.get("pre_tokenizer").unwrap_or(&null);
    let model_ty = root.get("model").and_then(ty);
    if ty(normalizer).as_deref() == Some("BertNormalizer")
        && ty(pre).as_deref() == Some("BertPreTokenizer")
    {
        let chinese = flag(normalizer, "handle_chinese_chars").unwrap_or(true);
        return CutRule::AfterAsciiWhitespace { chinese };
    }
    let byte_level_no_prefix = |v: &serde_json::Value, use_regex: bool| {
        ty(v).as_deref() == Some("ByteLevel")
            && flag(v, "add_prefix_space") == Some(false)
            && flag(v, "use_regex").unwrap_or(true) == use_regex
    };
    let known_split = |v: &serde_json::Value| {
        ty(v).as_deref() == Some("Split")
            && v.get("behavior").and_then(|b| b.as_str()) == Some("Isolated")
            && flag(v, "invert") != Some(true)
            && v.get("pattern")
                .and_then(|p| p.get("Regex"))
                .and_then(|r| r.as_str())
                .is_some_and(|r| SPACE_LETTER_REGEXES.contains(&r))
    };
    let pre_ok = byte_level_no_prefix(pre, true)
        || (ty(pre).as_deref() == Some("Sequence")
            && match pre
                .get("pretokenizers")
                .and_then(|p| p.as_array())
                .map(Vec::as_slice)
            {
                Some([split, byte_level]) => {
                    known_split(split) && byte_level_no_prefix(byte_level, false)
                }
                _ => false,
            });
    if normalizer.is_null() && model_ty.as_deref() == Some("BPE") && pre_ok {
        return CutRule::BeforeSpaceLetter;
    }
    CutRule::Never
}

impl TextPlan {
    /// A plan from a tokenizer.json: the fast WordPiece when it applies
    /// (and `spans` allows), the cut rule its components allow.
    pub fn from_json(
        json: &str,
        spans: SpanTokenizer,
        max_length: usize,
        truncation: bool,
        padding: Padding,
        outputs: Vec<TextOutput>,
        dtype: DType,
    ) -> Result<TextPlan, TokenizerLoadError> {
        let tokenizer = load_tokenizer(json)?;
        let mut plan = TextPlan::new(tokenizer, max_length, truncation, padding, outputs, dtype);
        plan.cut_rule = cut_rule_of(json);
        if spans == SpanTokenizer::Fastest {
            plan.fast = FastWordPiece::from_json(json).ok().map(Arc::new);
        }
        Ok(plan)
    }

    /// Whether spans go through tensorwire's WordPiece.
    pub fn uses_fast_wordpiece(&self) -> bool {
        self.fast.is_some()
    }

    pub fn cut_rule(&self) -> CutRule {
        self.cut_rule
    }

    /// A plan that tokenizes only whole texts (no cut rule, crate only).
    pub fn new(
        tokenizer: PipelineTokenizer,
        max_length: usize,
        truncation: bool,
        padding: Padding,
        outputs: Vec<TextOutput>,
        dtype: DType,
    ) -> TextPlan {
        let truncation = if truncation {
            Override::With(TruncationParams {
                max_length,
                ..TruncationParams::default()
            })
        } else {
            Override::Off
        };
        let padding = match padding {
            Padding::None => Override::Off,
            Padding::MaxLength => {
                // Keep the tokenizer's own pad token when it names one.
                let base = tokenizer.get_padding().cloned().unwrap_or_default();
                Override::With(PaddingParams {
                    strategy: PaddingStrategy::Fixed(max_length),
                    ..base
                })
            }
        };
        TextPlan {
            tokenizer,
            span_options: EncodeOptions {
                add_special_tokens: false,
                encode_special_tokens: false,
                padding: Override::Off,
                truncation: Override::Off,
            },
            fast: None,
            cut_rule: CutRule::Never,
            options: EncodeOptions {
                add_special_tokens: true,
                encode_special_tokens: false,
                padding,
                truncation,
            },
            outputs,
            dtype,
        }
    }

    pub fn tokenizer(&self) -> &PipelineTokenizer {
        &self.tokenizer
    }

    /// Appends the ids of a span of the text (no special tokens) to `out`.
    pub fn encode_span(
        &self,
        text: &str,
        scratch: &mut SpanScratch,
        out: &mut Vec<PipelineToken>,
    ) -> Result<(), String> {
        match &self.fast {
            Some(fast) => {
                fast.encode(text, &mut scratch.wordpiece, out);
                Ok(())
            }
            // Appends to `out` (no copy through a buffer of ours).
            None => self
                .tokenizer
                .encode_into(text, &self.span_options, out)
                .map_err(|e| e.to_string()),
        }
    }

    /// Special tokens, truncation and padding on the ids of the whole text,
    /// with the crate's own functions, in the order its encode uses.
    pub fn finish(&self, tokens: Vec<PipelineToken>) -> Result<Encoded, String> {
        let template = &self.tokenizer.get_post_processor().single;
        let truncation = self.tokenizer.resolve_truncation(&self.options.truncation);
        let (tokens, _) = truncate_pair(tokens, None, truncation, template.n_special())
            .map_err(|e| e.to_string())?;
        let mut encodings = [template.post_process::<true>(tokens, None)];
        if let Some(padding) = self.tokenizer.resolve_padding(&self.options.padding) {
            pad_encodings(&mut encodings, padding).map_err(|e| e.to_string())?;
        }
        let [e] = encodings;
        Ok(Encoded::from_encoding(&e))
    }

    /// The serving path on a whole text: spans (here, one) + [`Self::finish`].
    pub fn encode_spans(&self, text: &str, scratch: &mut SpanScratch) -> Result<Encoded, String> {
        let mut ids = Vec::with_capacity(text.len() / 3);
        self.encode_span(text, scratch, &mut ids)?;
        self.finish(ids)
    }

    /// A streaming tokenizer for a text of `total_len` bytes.
    pub fn stream(self: &Arc<Self>, total_len: usize) -> TextStream {
        let min_span = if self.fast.is_some() {
            0
        } else {
            CRATE_MIN_SPAN
        };
        self.stream_with_min_span(total_len, min_span)
    }

    /// [`Self::stream`] with spans shorter than `min_span` bytes waiting
    /// for more (tests use small values to exercise both paths).
    pub fn stream_with_min_span(self: &Arc<Self>, total_len: usize, min_span: usize) -> TextStream {
        TextStream {
            stitcher: Stitcher::new(total_len, self.cut_rule).with_min_span(min_span),
            scratch: SpanScratch::default(),
            plan: self.clone(),
        }
    }

    /// Token ids, attention mask and type ids of `text` through the crate
    /// on the whole text: the oracle.
    pub fn encode(&self, text: &str) -> Result<Encoded, String> {
        let mut v = self
            .tokenizer
            .encode(text, &self.options)
            .wait()
            .map_err(|e| e.to_string())?;
        let e = v.pop().ok_or("tokenizer returned no encoding")?;
        Ok(Encoded::from_encoding(&e))
    }

    /// The pipeline's output tensors for `text`, through the oracle.
    pub fn tensors(&self, text: &str) -> Result<Vec<Tensor>, String> {
        let e = self.encode(text)?;
        Ok(self.tensors_of(&e))
    }

    /// The pipeline's output tensors of an encoding.
    pub fn tensors_of(&self, e: &Encoded) -> Vec<Tensor> {
        self.outputs
            .iter()
            .map(|o| {
                let values = match o {
                    TextOutput::InputIds => &e.ids,
                    TextOutput::AttentionMask => &e.attention_mask,
                    TextOutput::TokenTypeIds => &e.type_ids,
                };
                Tensor::from_ids(o.name(), self.dtype, values)
            })
            .collect()
    }
}

/// Buffers reused across the spans of a text (and across texts).
#[derive(Debug, Default)]
pub struct SpanScratch {
    wordpiece: WordPieceScratch,
}

/// One text being tokenized while its chunks arrive.
#[derive(Debug)]
pub struct TextStream {
    plan: Arc<TextPlan>,
    stitcher: Stitcher<PipelineToken>,
    scratch: SpanScratch,
}

impl TextStream {
    /// A chunk at `offset` (any order, may overlap, may cut a char).
    pub fn add(&mut self, offset: usize, chunk: &[u8]) -> Result<(), StitchError> {
        let (plan, scratch) = (&self.plan, &mut self.scratch);
        self.stitcher.add(offset, chunk, &mut |text, out| {
            plan.encode_span(text, scratch, out)
        })
    }

    pub fn held_bytes(&self) -> usize {
        self.stitcher.held_bytes()
    }

    pub fn tokenized_bytes(&self) -> usize {
        self.stitcher.tokenized_bytes()
    }

    /// All chunks are in: the encoding of the whole text.
    pub fn finish(self) -> Result<Encoded, StitchError> {
        let (plan, mut scratch) = (&self.plan, self.scratch);
        let ids = self
            .stitcher
            .finish(&mut |text, out| plan.encode_span(text, &mut scratch, out))?;
        self.plan.finish(ids).map_err(StitchError::Tokenizer)
    }
}

/// One encoded text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    pub ids: Vec<u32>,
    pub attention_mask: Vec<u32>,
    pub type_ids: Vec<u32>,
}

impl Encoded {
    fn from_encoding(e: &tokenizers::pipeline::Encoding) -> Encoded {
        let ids: Vec<u32> = e.ids().iter().map(|t| t.id()).collect();
        let n = ids.len();
        let attention_mask = match e.attention_mask() {
            Some(m) => m.iter().map(|&b| b as u32).collect(),
            None => vec![1; n],
        };
        let type_ids = match e.type_ids() {
            Some(t) => t.iter().map(|&b| b as u32).collect(),
            None => vec![0; n],
        };
        Encoded {
            ids,
            attention_mask,
            type_ids,
        }
    }
}
