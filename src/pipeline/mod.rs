//! Settings -> plan: which transform, which output tensors, which
//! upstream, for every pipeline id; and the rules a fragment must meet
//! for its pipeline (geometry, tiles and their halos).

use crate::transform::image::ImagePlan;
use crate::transform::normalize::NormalizePlan;
use crate::transform::resize::Resampling;
use crate::transform::text::{SpanTokenizer, TextPlan};
use crate::wire::{Kind, PixelFormat};
use serde_json::{json, Value};
use std::sync::Arc;

mod fragment;
mod request;
mod settings;
pub use request::{RequestState, ResizeCache};
pub use settings::{ImageConfig, PipelineConfig, PipelineKind, TextConfig, BUILTIN_TOKENIZERS};

/// Index of a pipeline in [`Pipelines`] (not its wire id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PipelineIx(pub usize);

/// A pipeline that cannot be built from its configuration.
#[derive(Debug, thiserror::Error)]
#[error("pipeline {id} ({name}): {msg}")]
pub struct PipelineError {
    pub id: u16,
    pub name: String,
    pub msg: String,
}

/// What a pipeline does.
#[derive(Debug, Clone)]
pub enum Plan {
    Image(Arc<ImagePlan>),
    Text(Arc<TextPlan>),
}

/// One configured pipeline, ready to serve.
#[derive(Debug, Clone)]
pub struct Pipeline {
    pub id: u16,
    pub name: String,
    pub upstream: String,
    pub plan: Plan,
    /// Pixel formats accepted (image pipelines).
    pub pixel_formats: Vec<PixelFormat>,
    config: PipelineConfig,
}

impl Pipeline {
    pub fn build(
        cfg: &PipelineConfig,
        base_dir: Option<&std::path::Path>,
    ) -> Result<Pipeline, PipelineError> {
        let err = |msg: String| PipelineError {
            id: cfg.id,
            name: cfg.name.clone(),
            msg,
        };
        let (plan, pixel_formats) = match cfg.kind {
            PipelineKind::Image => {
                let c = cfg.image.as_ref().expect("validated");
                let normalize = NormalizePlan {
                    dtype: c.dtype,
                    layout: c.layout,
                    order: c.channel_order,
                    mean: c.mean.map(|m| m as f32),
                    std: c.std.map(|s| s as f32),
                    scale: c.scale.unwrap_or(1.0) as f32,
                    zero_point: c.zero_point.unwrap_or(0),
                    width: c.width,
                    height: c.height,
                };
                let plan = ImagePlan::new(Resampling::from_antialias(c.antialias), normalize);
                (Plan::Image(Arc::new(plan)), c.pixel_formats.clone())
            }
            PipelineKind::Text => {
                let c = cfg.text.as_ref().expect("validated");
                let json = c.tokenizer_json(base_dir).map_err(err)?;
                let plan = TextPlan::from_json(
                    &json,
                    SpanTokenizer::Fastest,
                    c.max_length,
                    c.truncation,
                    c.padding,
                    c.outputs.clone(),
                    c.dtype,
                )
                .map_err(|e| err(e.to_string()))?;
                (Plan::Text(Arc::new(plan)), Vec::new())
            }
        };
        Ok(Pipeline {
            id: cfg.id,
            name: cfg.name.clone(),
            upstream: cfg.upstream.clone(),
            plan,
            pixel_formats,
            config: cfg.clone(),
        })
    }

    /// Whether a datagram of `kind` belongs to this pipeline.
    pub fn accepts_kind(&self, kind: Kind) -> bool {
        match self.plan {
            Plan::Image(_) => kind.is_image(),
            Plan::Text(_) => kind == Kind::TextChunk,
        }
    }

    /// This pipeline's entry in DESCRIBE.
    pub fn describe(&self) -> Value {
        let c = &self.config;
        match (&self.plan, c.kind) {
            (Plan::Image(_), _) => {
                let i = c.image.as_ref().expect("validated");
                let mut image = json!({
                    "width": i.width, "height": i.height, "antialias": i.antialias,
                    "pixel_formats": i.pixel_formats.iter().map(|f| f.name()).collect::<Vec<_>>(),
                    "channels": i.channels, "layout": i.layout.name(), "dtype": i.dtype.name(),
                    "mean": i.mean, "std": i.std,
                    "channel_order": match i.channel_order {
                        crate::transform::normalize::ChannelOrder::Rgb => "RGB",
                        crate::transform::normalize::ChannelOrder::Bgr => "BGR",
                    },
                    "tensor_name": i.tensor_name,
                });
                if let (Some(s), Some(z)) = (i.scale, i.zero_point) {
                    image["scale"] = json!(s);
                    image["zero_point"] = json!(z);
                }
                json!({"id": self.id, "name": self.name, "kind": "image", "upstream": self.upstream, "image": image})
            }
            (Plan::Text(_), _) => {
                let t = c.text.as_ref().expect("validated");
                json!({"id": self.id, "name": self.name, "kind": "text", "upstream": self.upstream,
                "text": {
                    "tokenizer": t.display_name(), "max_length": t.max_length,
                    "truncation": t.truncation, "padding": t.padding.name(),
                    "outputs": t.outputs.iter().map(|o| o.name()).collect::<Vec<_>>(),
                    "dtype": t.dtype.name(),
                }})
            }
        }
    }

    /// The image tensor's name (image pipelines).
    pub fn image_tensor_name(&self) -> &str {
        self.config
            .image
            .as_ref()
            .map(|i| i.tensor_name.as_str())
            .unwrap_or("input")
    }
}

/// All pipelines, looked up by id.
#[derive(Debug, Clone)]
pub struct Pipelines {
    list: Vec<Pipeline>,
}

impl Pipelines {
    /// Builds every pipeline (loads tokenizers); relative tokenizer paths
    /// resolve against `base_dir`.
    pub fn build(
        configs: &[PipelineConfig],
        base_dir: Option<&std::path::Path>,
    ) -> Result<Pipelines, PipelineError> {
        let list = configs
            .iter()
            .map(|p| Pipeline::build(p, base_dir))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Pipelines { list })
    }

    /// The pipeline with wire id `id` (0 is never one).
    pub fn index_of(&self, id: u16) -> Option<PipelineIx> {
        if id == 0 {
            return None;
        }
        self.list.iter().position(|p| p.id == id).map(PipelineIx)
    }

    pub fn get(&self, ix: PipelineIx) -> &Pipeline {
        &self.list[ix.0]
    }

    /// The pipeline with wire id `id`.
    pub fn by_id(&self, id: u16) -> Option<&Pipeline> {
        self.index_of(id).map(|ix| self.get(ix))
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Pipeline> {
        self.list.iter()
    }
}
