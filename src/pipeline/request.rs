//! A request's pipeline state while its fragments arrive: the streaming
//! image transform (rows), per-tile transforms (tiles), or the text store.
//! Reassembly hands it each new fragment; [`RequestState::finish`] gives
//! the output tensors once all have arrived.

use super::{Pipeline, PipelineIx, Plan};
use crate::reassembly::{Assembly, Coverage, Fragment, Reject};
use crate::transform::image::ImagePlan;
use crate::transform::resize::{ResizePlan, SourceView};
use crate::transform::stitch::StitchError;
use crate::transform::stream::RowStream;
use crate::transform::text::{TextPlan, TextStream};
use crate::transform::Tensor;
use crate::wire::{ImageRepr, Kind, PixelFormat};
use std::collections::HashMap;
use std::sync::Arc;

/// Resize coefficients per (pipeline, source size), built once and reused:
/// clients mostly send a few image sizes. Bounded: cleared when full.
#[derive(Debug, Default)]
pub struct ResizeCache {
    plans: HashMap<(u16, u32, u32), Arc<ResizePlan>>,
    capacity: usize,
    pub hits: u64,
    pub misses: u64,
}

impl ResizeCache {
    pub fn new(capacity: usize) -> ResizeCache {
        ResizeCache {
            capacity: capacity.max(1),
            ..ResizeCache::default()
        }
    }

    pub fn get(&mut self, pipeline: u16, plan: &ImagePlan, w: u32, h: u32) -> Arc<ResizePlan> {
        if let Some(p) = self.plans.get(&(pipeline, w, h)) {
            self.hits += 1;
            return p.clone();
        }
        self.misses += 1;
        if self.plans.len() >= self.capacity {
            self.plans.clear();
        }
        let p = Arc::new(plan.resize_plan(w, h));
        self.plans.insert((pipeline, w, h), p.clone());
        p
    }
}

/// Geometry every fragment of an image request must repeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Geometry {
    width: u16,
    height: u16,
    format: PixelFormat,
}

impl Geometry {
    fn of(r: &ImageRepr) -> Geometry {
        Geometry {
            width: r.width,
            height: r.height,
            format: r.pixel_format,
        }
    }
}

/// IMAGE_TILE: each tile is resized and normalized into the tensor on
/// arrival; only the tensor and the output coverage are kept.
#[derive(Debug)]
pub struct TileAssembly {
    image: Arc<ImagePlan>,
    resize: Arc<ResizePlan>,
    cover: Coverage,
    tensor: Vec<u8>,
    resized: Vec<u8>,
    scratch: Vec<i32>,
}

/// TEXT_CHUNK: tokenized while the chunks arrive (the stitcher keeps the
/// received bytes to check overlaps, and the ids of the spans already
/// final).
#[derive(Debug)]
pub struct TextAssembly {
    plan: Arc<TextPlan>,
    total_len: u32,
    stream: TextStream,
}

fn stitch_reject(e: StitchError) -> Reject {
    match e {
        StitchError::OverlapMismatch(_)
        | StitchError::OutOfRange { .. }
        | StitchError::Uncovered => Reject::malformed(e.to_string()),
        StitchError::InvalidUtf8(_) | StitchError::Tokenizer(_) => Reject::invalid(e.to_string()),
    }
}

#[derive(Debug)]
pub enum State {
    Rows(RowStream),
    Tiles(TileAssembly),
    Text(TextAssembly),
}

/// The per-request state plus what it was created for.
#[derive(Debug)]
pub struct RequestState {
    pipeline: PipelineIx,
    geometry: Option<Geometry>,
    tensor_name: String,
    state: State,
}

impl RequestState {
    /// The state for a new request of `pipeline` whose first fragment is
    /// `first`.
    pub fn new(
        ix: PipelineIx,
        pipeline: &Pipeline,
        kind: Kind,
        first: &Fragment<'_>,
        cache: &mut ResizeCache,
    ) -> Result<RequestState, Reject> {
        match (&pipeline.plan, first) {
            (Plan::Image(image), Fragment::Image { repr, .. }) => {
                let (w, h) = (repr.width as u32, repr.height as u32);
                let resize = cache.get(pipeline.id, image, w, h);
                let state = if kind == Kind::ImageTile {
                    State::Tiles(TileAssembly {
                        image: image.clone(),
                        resize,
                        cover: Coverage::new(
                            image.out_width() as usize,
                            image.out_height() as usize,
                        ),
                        tensor: vec![0; image.normalize.tensor_len()],
                        resized: Vec::new(),
                        scratch: Vec::new(),
                    })
                } else {
                    State::Rows(RowStream::new(
                        image.clone(),
                        resize,
                        w,
                        h,
                        repr.pixel_format,
                    ))
                };
                Ok(RequestState {
                    pipeline: ix,
                    geometry: Some(Geometry::of(repr)),
                    tensor_name: pipeline.image_tensor_name().to_string(),
                    state,
                })
            }
            (Plan::Text(plan), Fragment::Text { repr, .. }) => Ok(RequestState {
                pipeline: ix,
                geometry: None,
                tensor_name: String::new(),
                state: State::Text(TextAssembly {
                    plan: plan.clone(),
                    total_len: repr.total_len,
                    stream: plan.stream(repr.total_len as usize),
                }),
            }),
            _ => Err(Reject {
                code: crate::wire::ErrorCode::KindMismatch,
                message: "kind does not match the pipeline".into(),
            }),
        }
    }

    /// The pipeline this request was created for.
    pub fn pipeline(&self) -> PipelineIx {
        self.pipeline
    }

    /// All fragments arrived: the output tensors, or the ERROR.
    pub fn finish(self) -> Result<Vec<Tensor>, Reject> {
        match self.state {
            State::Rows(s) => {
                let image = s.image();
                let data = s.finish().map_err(|e| Reject::malformed(e.0))?;
                Ok(vec![image_tensor(&image, self.tensor_name, data)])
            }
            State::Tiles(t) => {
                if !t.cover.complete() {
                    return Err(Reject::malformed(
                        "tile output rectangles leave output pixels uncovered",
                    ));
                }
                Ok(vec![image_tensor(&t.image, self.tensor_name, t.tensor)])
            }
            State::Text(t) => {
                let encoded = t.stream.finish().map_err(stitch_reject)?;
                Ok(t.plan.tensors_of(&encoded))
            }
        }
    }
}

fn image_tensor(image: &ImagePlan, name: String, data: Vec<u8>) -> Tensor {
    Tensor {
        name,
        dtype: image.normalize.dtype,
        shape: image.normalize.shape(),
        data,
    }
}

impl Assembly for RequestState {
    fn add(&mut self, fragment: &Fragment<'_>) -> Result<(), Reject> {
        match (&mut self.state, fragment) {
            (State::Rows(s), Fragment::Image { repr, pixels }) => {
                if Some(Geometry::of(repr)) != self.geometry {
                    return Err(Reject::malformed(
                        "width, height or pixel_format differs between fragments",
                    ));
                }
                s.add(repr.rect, pixels).map_err(|e| Reject::malformed(e.0))
            }
            (State::Tiles(t), Fragment::Image { repr, pixels }) => {
                if Some(Geometry::of(repr)) != self.geometry {
                    return Err(Reject::malformed(
                        "width, height or pixel_format differs between fragments",
                    ));
                }
                let out = repr.out_rect.expect("tiles carry an output rectangle");
                if !t.cover.mark(out) {
                    return Err(Reject::malformed(format!(
                        "tile output rectangle {out:?} overlaps another"
                    )));
                }
                let src = SourceView {
                    data: pixels,
                    rect: repr.rect,
                    channels: repr.pixel_format.channels(),
                };
                t.image
                    .run_region(
                        &t.resize,
                        &src,
                        out,
                        repr.pixel_format,
                        &mut t.tensor,
                        &mut t.resized,
                        &mut t.scratch,
                    )
                    .map_err(|e| Reject::invalid(e.to_string()))
            }
            (State::Text(t), Fragment::Text { repr, bytes }) => {
                if repr.total_len != t.total_len {
                    return Err(Reject::malformed("total_len differs between fragments"));
                }
                t.stream
                    .add(repr.offset as usize, bytes)
                    .map_err(stitch_reject)
            }
            _ => Err(Reject::malformed("kind differs between fragments")),
        }
    }

    fn held_bytes(&self) -> usize {
        match &self.state {
            State::Rows(s) => s.held_bytes(),
            State::Tiles(t) => {
                t.tensor.len()
                    + t.cover.heap_bytes()
                    + t.resized.capacity()
                    + t.scratch.capacity() * 4
            }
            State::Text(t) => t.stream.held_bytes(),
        }
    }
}
