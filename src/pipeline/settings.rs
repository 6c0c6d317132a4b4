//! What each pipeline is configured to do (`[[pipelines]]`): the
//! pipeline layer's own settings, deserialized straight from the TOML.

use crate::transform::normalize::{ChannelOrder, Layout};
use crate::transform::text::{Padding, TextOutput};
use crate::transform::DType;
use crate::wire::PixelFormat;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PipelineKind {
    Image,
    Text,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    pub id: u16,
    pub name: String,
    pub kind: PipelineKind,
    #[serde(default = "default_upstream")]
    pub upstream: String,
    pub image: Option<ImageConfig>,
    pub text: Option<TextConfig>,
}

fn default_upstream() -> String {
    crate::upstream::ECHO.into()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageConfig {
    pub width: u32,
    pub height: u32,
    #[serde(default = "yes")]
    pub antialias: bool,
    #[serde(default = "all_formats")]
    pub pixel_formats: Vec<PixelFormat>,
    #[serde(default = "three")]
    pub channels: u32,
    #[serde(default = "nchw")]
    pub layout: Layout,
    #[serde(default = "fp32")]
    pub dtype: DType,
    #[serde(default = "rgb")]
    pub channel_order: ChannelOrder,
    #[serde(default = "imagenet_mean")]
    pub mean: [f64; 3],
    #[serde(default = "imagenet_std")]
    pub std: [f64; 3],
    /// INT8 only: QuantizeLinear scale and zero point.
    pub scale: Option<f64>,
    pub zero_point: Option<i32>,
    #[serde(default = "input_name")]
    pub tensor_name: String,
}

fn yes() -> bool {
    true
}
fn three() -> u32 {
    3
}
fn all_formats() -> Vec<PixelFormat> {
    PixelFormat::ALL.to_vec()
}
fn nchw() -> Layout {
    Layout::Nchw
}
fn fp32() -> DType {
    DType::Fp32
}
fn rgb() -> ChannelOrder {
    ChannelOrder::Rgb
}
fn imagenet_mean() -> [f64; 3] {
    [0.485, 0.456, 0.406]
}
fn imagenet_std() -> [f64; 3] {
    [0.229, 0.224, 0.225]
}
fn input_name() -> String {
    "input".into()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextConfig {
    /// Path to a tokenizer.json, or `builtin:all-MiniLM-L6-v2`.
    pub tokenizer: String,
    /// Name reported in DESCRIBE (default: derived from `tokenizer`).
    pub tokenizer_name: Option<String>,
    #[serde(default = "max_len")]
    pub max_length: usize,
    #[serde(default = "yes")]
    pub truncation: bool,
    #[serde(default = "no_padding")]
    pub padding: Padding,
    #[serde(default = "all_outputs")]
    pub outputs: Vec<TextOutput>,
    #[serde(default = "int64")]
    pub dtype: DType,
}

fn max_len() -> usize {
    256
}
fn no_padding() -> Padding {
    Padding::None
}
fn all_outputs() -> Vec<TextOutput> {
    vec![
        TextOutput::InputIds,
        TextOutput::AttentionMask,
        TextOutput::TokenTypeIds,
    ]
}
fn int64() -> DType {
    DType::Int64
}

/// Tokenizers shipped inside the binary, so the default config needs no
/// files next to it.
pub const BUILTIN_TOKENIZERS: &[(&str, &str)] = &[(
    "all-MiniLM-L6-v2",
    include_str!("../../testdata/tokenizers/all-MiniLM-L6-v2/tokenizer.json"),
)];

impl TextConfig {
    /// The tokenizer.json text this pipeline names.
    pub fn tokenizer_json(&self, base_dir: Option<&Path>) -> Result<String, String> {
        if let Some(name) = self.tokenizer.strip_prefix("builtin:") {
            return BUILTIN_TOKENIZERS
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, j)| j.to_string())
                .ok_or_else(|| {
                    let known: Vec<_> = BUILTIN_TOKENIZERS.iter().map(|(n, _)| *n).collect();
                    format!("no builtin tokenizer `{name}` (have: {})", known.join(", "))
                });
        }
        let mut path = PathBuf::from(&self.tokenizer);
        if path.is_relative() {
            if let Some(b) = base_dir {
                path = b.join(path);
            }
        }
        std::fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))
    }

    /// The name DESCRIBE reports.
    pub fn display_name(&self) -> String {
        if let Some(n) = &self.tokenizer_name {
            return n.clone();
        }
        if let Some(n) = self.tokenizer.strip_prefix("builtin:") {
            return n.to_string();
        }
        // .../all-MiniLM-L6-v2/tokenizer.json -> all-MiniLM-L6-v2
        let p = Path::new(&self.tokenizer);
        let dir = p
            .parent()
            .and_then(|d| d.file_name())
            .and_then(|s| s.to_str());
        match (p.file_stem().and_then(|s| s.to_str()), dir) {
            (Some("tokenizer"), Some(d)) => d.to_string(),
            (Some(s), _) => s.to_string(),
            _ => self.tokenizer.clone(),
        }
    }
}

impl PipelineConfig {
    /// Checks the pipeline's own values: Err((key under the pipeline,
    /// why)). Which upstream it names is the caller's to check.
    pub fn check(&self) -> Result<(), (String, String)> {
        let bad = |k: &str, msg: &str| Err((k.to_string(), msg.to_string()));
        if self.id == 0 {
            return bad("id", "must be 1..65535 (0 is DESCRIBE's)");
        }
        match self.kind {
            PipelineKind::Image => {
                let Some(img) = &self.image else {
                    return bad(
                        "image",
                        "an image pipeline needs an [pipelines.image] table",
                    );
                };
                if self.text.is_some() {
                    return bad("text", "an image pipeline has no text table");
                }
                img.check()
                    .map_err(|(k, m)| (format!("image.{k}"), m.to_string()))
            }
            PipelineKind::Text => {
                let Some(t) = &self.text else {
                    return bad("text", "a text pipeline needs a [pipelines.text] table");
                };
                if self.image.is_some() {
                    return bad("image", "a text pipeline has no image table");
                }
                t.check()
                    .map_err(|(k, m)| (format!("text.{k}"), m.to_string()))
            }
        }
    }
}

impl ImageConfig {
    fn check(&self) -> Result<(), (&'static str, &'static str)> {
        if !(1..=65535).contains(&self.width) || !(1..=65535).contains(&self.height) {
            return Err(("width", "width and height must be 1..65535"));
        }
        if self.channels != 3 {
            return Err(("channels", "only 3-channel outputs are supported"));
        }
        if self.pixel_formats.is_empty() {
            return Err(("pixel_formats", "list at least one pixel format"));
        }
        if !matches!(
            self.dtype,
            DType::Fp32 | DType::Fp16 | DType::Uint8 | DType::Int8
        ) {
            return Err(("dtype", "must be FP32, FP16, UINT8 or INT8"));
        }
        if self.std.iter().any(|s| *s == 0.0 || !s.is_finite()) {
            return Err(("std", "every std must be finite and non-zero"));
        }
        if self.dtype == DType::Int8 {
            match (self.scale, self.zero_point) {
                (Some(s), Some(z)) if s > 0.0 && (-128..=127).contains(&z) => {}
                _ => return Err(("scale", "INT8 needs scale > 0 and zero_point in -128..127")),
            }
        }
        Ok(())
    }
}

impl TextConfig {
    fn check(&self) -> Result<(), (&'static str, &'static str)> {
        if self.max_length == 0 {
            return Err(("max_length", "must be at least 1"));
        }
        if self.outputs.first() != Some(&TextOutput::InputIds) {
            return Err(("outputs", "must start with input_ids"));
        }
        if !matches!(self.dtype, DType::Int64 | DType::Int32) {
            return Err(("dtype", "must be INT64 or INT32"));
        }
        Ok(())
    }
}
