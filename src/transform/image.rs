//! The image pipeline's transform: resize (exact library arithmetic) and
//! LUT normalization fused, writing straight into the output tensor, for a
//! whole image, one tile, or rows streamed as they arrive
//! ([`super::stream::RowStream`]).

use super::lut::NormalizeLut;
use super::normalize::NormalizePlan;
use super::resize::{resize_region, HaloError, Resampling, ResizePlan, SourceView};
use crate::wire::{PixelFormat, Rect};

/// What an image pipeline does to every request.
#[derive(Debug, Clone)]
pub struct ImagePlan {
    pub resampling: Resampling,
    pub normalize: NormalizePlan,
    pub lut: NormalizeLut,
}

impl ImagePlan {
    pub fn new(resampling: Resampling, normalize: NormalizePlan) -> ImagePlan {
        let lut = NormalizeLut::new(&normalize);
        ImagePlan {
            resampling,
            normalize,
            lut,
        }
    }

    pub fn out_width(&self) -> u32 {
        self.normalize.width
    }
    pub fn out_height(&self) -> u32 {
        self.normalize.height
    }

    pub fn resize_plan(&self, in_w: u32, in_h: u32) -> ResizePlan {
        ResizePlan::new(
            self.resampling,
            in_w,
            in_h,
            self.out_width(),
            self.out_height(),
        )
    }

    /// The output tensor of a whole source image (the non-streaming path).
    pub fn run_whole(&self, data: &[u8], width: u32, height: u32, format: PixelFormat) -> Vec<u8> {
        let plan = self.resize_plan(width, height);
        let mut tensor = vec![0u8; self.normalize.tensor_len()];
        let src = SourceView {
            data,
            rect: Rect::new(0, 0, width, height),
            channels: format.channels(),
        };
        let out = Rect::new(0, 0, self.out_width(), self.out_height());
        self.run_region(
            &plan,
            &src,
            out,
            format,
            &mut tensor,
            &mut Vec::new(),
            &mut Vec::new(),
        )
        .expect("a whole image holds every window");
        tensor
    }

    /// Computes output rectangle `out` from `src` alone and writes it into
    /// its place in `tensor`; `resized` and `scratch` are reused buffers
    /// of one tile's size, never the whole image's.
    #[allow(clippy::too_many_arguments)]
    pub fn run_region(
        &self,
        plan: &ResizePlan,
        src: &SourceView<'_>,
        out: Rect,
        format: PixelFormat,
        tensor: &mut [u8],
        resized: &mut Vec<u8>,
        scratch: &mut Vec<i32>,
    ) -> Result<(), HaloError> {
        resized.clear();
        resized.resize(out.area() as usize * format.channels(), 0);
        resize_region(plan, src, out, resized, scratch)?;
        let row = out.w as usize * format.channels();
        for (r, px) in resized.chunks_exact(row).enumerate() {
            self.lut
                .write_row(px, format, out.y + r as u32, out.x, tensor);
        }
        Ok(())
    }
}
