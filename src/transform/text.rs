//! Tokenization of a whole reassembled text into the text pipeline's
//! output tensors, through the `tokenizers` crate.

use super::{DType, Tensor};
use tokenizers::pipeline::{EncodeOptions, Override, PipelineTokenizer};
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
    pub outputs: Vec<TextOutput>,
    pub dtype: DType,
}

impl std::fmt::Debug for TextPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextPlan")
            .field("outputs", &self.outputs)
            .field("dtype", &self.dtype)
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

impl TextPlan {
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

    /// Token ids, attention mask and type ids of `text`.
    pub fn encode(&self, text: &str) -> Result<Encoded, String> {
        let mut v = self
            .tokenizer
            .encode(text, &self.options)
            .wait()
            .map_err(|e| e.to_string())?;
        let e = v.pop().ok_or("tokenizer returned no encoding")?;
        let ids: Vec<u32> = e.ids().iter().map(|t| t.id()).collect();
        let n = ids.len();
        let mask = match e.attention_mask() {
            Some(m) => m.iter().map(|&b| b as u32).collect(),
            None => vec![1; n],
        };
        let type_ids = match e.type_ids() {
            Some(t) => t.iter().map(|&b| b as u32).collect(),
            None => vec![0; n],
        };
        Ok(Encoded {
            ids,
            attention_mask: mask,
            type_ids,
        })
    }

    /// The pipeline's output tensors for `text`.
    pub fn tensors(&self, text: &str) -> Result<Vec<Tensor>, String> {
        let e = self.encode(text)?;
        Ok(self
            .outputs
            .iter()
            .map(|o| {
                let values = match o {
                    TextOutput::InputIds => &e.ids,
                    TextOutput::AttentionMask => &e.attention_mask,
                    TextOutput::TokenTypeIds => &e.type_ids,
                };
                Tensor::from_ids(o.name(), self.dtype, values)
            })
            .collect())
    }
}

/// One encoded text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    pub ids: Vec<u32>,
    pub attention_mask: Vec<u32>,
    pub type_ids: Vec<u32>,
}
