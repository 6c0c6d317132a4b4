//! A completed request -> its output tensors, or the ERROR it gets.
//! Checks that need every fragment (coverage, overlaps, UTF-8) live here.

use crate::pipeline::{Pipeline, Plan};
use crate::reassembly::{Body, ImageParts, Request, TextParts};
use crate::transform::image::ImagePlan;
use crate::transform::resize::SourceView;
use crate::transform::text::TextPlan;
use crate::transform::Tensor;
use crate::wire::{ErrorCode, Kind, Rect};

/// Why a complete request gets an ERROR instead of a RESPONSE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub code: ErrorCode,
    pub message: String,
}

fn fail(code: ErrorCode, message: impl Into<String>) -> Failure {
    Failure {
        code,
        message: message.into(),
    }
}

/// A bit per element of a w x h grid.
struct Coverage {
    bits: Vec<u64>,
    width: usize,
}

impl Coverage {
    fn new(width: usize, height: usize) -> Coverage {
        Coverage {
            bits: vec![0; (width * height).div_ceil(64)],
            width,
        }
    }
    /// Marks `r`; false when any element was already marked.
    fn mark(&mut self, r: Rect) -> bool {
        for y in r.y as usize..r.bottom() as usize {
            for x in r.x as usize..r.right() as usize {
                let i = y * self.width + x;
                let (w, b) = (i / 64, 1u64 << (i % 64));
                if self.bits[w] & b != 0 {
                    return false;
                }
                self.bits[w] |= b;
            }
        }
        true
    }
    fn complete(&self, n: usize) -> bool {
        let full = n / 64;
        self.bits[..full].iter().all(|&w| w == u64::MAX)
            && (n % 64 == 0 || self.bits[full] == (1u64 << (n % 64)) - 1)
    }
}

/// Runs the pipeline on a complete request.
pub fn complete(pipeline: &Pipeline, req: &Request) -> Result<Vec<Tensor>, Failure> {
    match (&pipeline.plan, &req.body) {
        (Plan::Image(plan), Body::Image(img)) => {
            let data = if req.kind == Kind::ImageTile {
                tiles(plan, img)?
            } else {
                rows(plan, img)?
            };
            Ok(vec![Tensor {
                name: pipeline.image_tensor_name().to_string(),
                dtype: plan.normalize.dtype,
                shape: plan.normalize.shape(),
                data,
            }])
        }
        (Plan::Text(plan), Body::Text(txt)) => text(plan, txt),
        _ => Err(fail(
            ErrorCode::KindMismatch,
            "request kind does not match the pipeline",
        )),
    }
}

/// IMAGE_ROWS: rectangles must cover the image exactly once.
fn rows(plan: &ImagePlan, img: &ImageParts) -> Result<Vec<u8>, Failure> {
    let (w, h) = (img.width as usize, img.height as usize);
    let ch = img.format.channels();
    let mut cover = Coverage::new(w, h);
    let mut full = vec![0u8; w * h * ch];
    for p in &img.parts {
        if !cover.mark(p.rect) {
            return Err(fail(
                ErrorCode::Malformed,
                format!("row rectangle {:?} overlaps another", p.rect),
            ));
        }
        let px = img.pixels(p);
        let rw = p.rect.w as usize * ch;
        for (r, src) in px.chunks_exact(rw).enumerate() {
            let dst = ((p.rect.y as usize + r) * w + p.rect.x as usize) * ch;
            full[dst..dst + rw].copy_from_slice(src);
        }
    }
    if !cover.complete(w * h) {
        return Err(fail(
            ErrorCode::Malformed,
            "row rectangles leave pixels uncovered",
        ));
    }
    Ok(plan.run_whole(&full, img.width as u32, img.height as u32, img.format))
}

/// IMAGE_TILE: each tile computes its output rectangle alone; the output
/// rectangles must partition the output image.
fn tiles(plan: &ImagePlan, img: &ImageParts) -> Result<Vec<u8>, Failure> {
    let (ow, oh) = (plan.out_width() as usize, plan.out_height() as usize);
    let resize = plan.resize_plan(img.width as u32, img.height as u32);
    let mut cover = Coverage::new(ow, oh);
    let mut tensor = vec![0u8; plan.normalize.tensor_len()];
    let (mut resized, mut scratch) = (Vec::new(), Vec::new());
    for p in &img.parts {
        let out = p.out_rect.expect("tiles carry an output rectangle");
        if !cover.mark(out) {
            return Err(fail(
                ErrorCode::Malformed,
                format!("tile output rectangle {out:?} overlaps another"),
            ));
        }
        let src = SourceView {
            data: img.pixels(p),
            rect: p.rect,
            channels: img.format.channels(),
        };
        plan.run_region(
            &resize,
            &src,
            out,
            img.format,
            &mut tensor,
            &mut resized,
            &mut scratch,
        )
        .map_err(|e| fail(ErrorCode::InvalidContent, e.to_string()))?;
    }
    if !cover.complete(ow * oh) {
        return Err(fail(
            ErrorCode::Malformed,
            "tile output rectangles leave output pixels uncovered",
        ));
    }
    Ok(tensor)
}

/// TEXT_CHUNK: chunks must cover [0, total_len), overlaps must agree, the
/// text must be UTF-8.
fn text(plan: &TextPlan, txt: &TextParts) -> Result<Vec<Tensor>, Failure> {
    let n = txt.total_len as usize;
    let mut buf = vec![0u8; n];
    let mut cover = Coverage::new(n.max(1), 1);
    for p in &txt.parts {
        let bytes = txt.bytes(p);
        let start = p.offset as usize;
        for (i, &b) in bytes.iter().enumerate() {
            let at = start + i;
            let seen = cover.bits[at / 64] & (1 << (at % 64)) != 0;
            if seen && buf[at] != b {
                return Err(fail(
                    ErrorCode::Malformed,
                    format!("overlapping chunks disagree at byte {at}"),
                ));
            }
            cover.bits[at / 64] |= 1 << (at % 64);
            buf[at] = b;
        }
    }
    if !cover.complete(n) {
        return Err(fail(
            ErrorCode::Malformed,
            "chunks leave bytes of the text uncovered",
        ));
    }
    let s = std::str::from_utf8(&buf).map_err(|e| {
        fail(
            ErrorCode::InvalidContent,
            format!("text is not valid UTF-8: {e}"),
        )
    })?;
    plan.tensors(s)
        .map_err(|e| fail(ErrorCode::InvalidContent, format!("tokenizer: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coverage() {
        let mut c = Coverage::new(3, 2);
        assert!(c.mark(Rect::new(0, 0, 3, 1)));
        assert!(!c.complete(6));
        assert!(!c.mark(Rect::new(2, 0, 1, 2)));
        let mut c = Coverage::new(3, 2);
        assert!(c.mark(Rect::new(0, 0, 3, 1)));
        assert!(c.mark(Rect::new(0, 1, 3, 1)));
        assert!(c.complete(6));
        let mut c = Coverage::new(64, 1);
        assert!(c.mark(Rect::new(0, 0, 64, 1)));
        assert!(c.complete(64));
    }
}
