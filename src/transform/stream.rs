//! IMAGE_ROWS streaming: the horizontal pass runs on each source row as
//! soon as it is complete, the vertical pass emits an output row (resized
//! and LUT-normalized straight into the tensor) as soon as its window is
//! complete, and rows no longer needed are released. With rows arriving
//! in order, a request holds a sliding window of horizontal results plus
//! the output tensor, not the image; out-of-order rows are held until
//! their turn and give the identical tensor.

use super::image::ImagePlan;
use super::resize::{horizontal_row, vertical_row, ResizePlan};
use crate::wire::{PixelFormat, Rect};
use std::collections::HashMap;
use std::sync::Arc;

/// A content error of the rows (the request gets MALFORMED).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RowError(pub String);

/// A source row that has received some but not all of its pixels.
#[derive(Debug)]
struct PartialRow {
    data: Vec<u8>,
    /// Column intervals [start, end) received: a row comes in a few
    /// segments, so overlap checks are per segment, not per pixel.
    spans: Vec<(u32, u32)>,
    filled: u32,
}

/// Per-request streaming state of an IMAGE_ROWS request.
#[derive(Debug)]
pub struct RowStream {
    image: Arc<ImagePlan>,
    resize: Arc<ResizePlan>,
    width: u32,
    height: u32,
    format: PixelFormat,
    /// Source rows some output row reads.
    needed: Vec<bool>,
    /// Source rows complete.
    done: Vec<bool>,
    /// Rows [0, contiguous) are all complete.
    contiguous: u32,
    /// Sparse: only rows that got some segments.
    partial: HashMap<u32, PartialRow>,
    /// Horizontal pass of complete, still-needed source rows (sparse).
    hrows: HashMap<u32, Vec<i32>>,
    pool: Vec<Vec<i32>>,
    row_pool: Vec<Vec<u8>>,
    planes: Vec<i32>,
    next_out: u32,
    out_row: Vec<u8>,
    tensor: Vec<u8>,
    held: usize,
    peak: usize,
}

impl RowStream {
    pub fn new(
        image: Arc<ImagePlan>,
        resize: Arc<ResizePlan>,
        width: u32,
        height: u32,
        format: PixelFormat,
    ) -> RowStream {
        let h = height as usize;
        let mut needed = vec![false; h];
        for oy in 0..resize.y.out_size {
            let (lo, hi) = resize.y.window(oy);
            for n in &mut needed[lo as usize..hi as usize] {
                *n = true;
            }
        }
        let out_row = vec![0u8; image.out_width() as usize * format.channels()];
        let tensor = vec![0u8; image.normalize.tensor_len()];
        let held = tensor.len() + out_row.len() + 2 * h;
        RowStream {
            image,
            resize,
            width,
            height,
            format,
            needed,
            done: vec![false; h],
            contiguous: 0,
            partial: HashMap::new(),
            hrows: HashMap::new(),
            pool: Vec::new(),
            row_pool: Vec::new(),
            planes: Vec::new(),
            next_out: 0,
            out_row,
            tensor,
            held,
            peak: held,
        }
    }

    /// Adds a rectangle of pixels (row-major, this request's format).
    pub fn add(&mut self, rect: Rect, pixels: &[u8]) -> Result<(), RowError> {
        let ch = self.format.channels();
        let rw = rect.w as usize * ch;
        debug_assert_eq!(pixels.len(), rw * rect.h as usize);
        for (r, row) in pixels.chunks_exact(rw).enumerate() {
            let y = rect.y + r as u32;
            if self.done[y as usize] {
                return Err(RowError(format!("row {y} is covered twice")));
            }
            if rect.x == 0 && rect.w == self.width {
                // A whole row: straight from the datagram, no copy.
                if self.partial.contains_key(&y) {
                    return Err(RowError(format!("row {y} is covered twice")));
                }
                self.row_complete(y, row);
            } else {
                self.add_segment(y, rect.x, rect.w, row)?;
            }
        }
        self.emit();
        Ok(())
    }

    fn add_segment(&mut self, y: u32, x: u32, w: u32, seg: &[u8]) -> Result<(), RowError> {
        let ch = self.format.channels();
        let width = self.width as usize;
        let row_bytes = width * ch;
        let pool = &mut self.row_pool;
        let held = &mut self.held;
        let p = self.partial.entry(y).or_insert_with(|| {
            *held += row_bytes;
            let mut data = pool.pop().unwrap_or_default();
            data.resize(row_bytes, 0);
            PartialRow {
                data,
                spans: Vec::new(),
                filled: 0,
            }
        });
        let end = x + w;
        if p.spans.iter().any(|&(a, b)| x < b && a < end) {
            return Err(RowError(format!(
                "pixels {x}..{end} of row {y} are covered twice"
            )));
        }
        p.spans.push((x, end));
        p.data[x as usize * ch..end as usize * ch].copy_from_slice(seg);
        p.filled += w;
        self.peak = self.peak.max(self.held);
        if p.filled == self.width {
            let p = self.partial.remove(&y).expect("present");
            self.held -= row_bytes;
            self.row_complete(y, &p.data);
            self.row_pool.push(p.data);
        }
        Ok(())
    }

    fn row_complete(&mut self, y: u32, row: &[u8]) {
        self.done[y as usize] = true;
        if self.needed[y as usize] {
            let ch = self.format.channels();
            let n = self.image.out_width() as usize * ch;
            let mut h = self.pool.pop().unwrap_or_default();
            h.clear();
            h.resize(n, 0);
            horizontal_row(&self.resize, row, 0, ch, 0, &mut h, &mut self.planes);
            self.held += n * 4;
            self.peak = self.peak.max(self.held);
            self.hrows.insert(y, h);
        }
        while self.contiguous < self.height && self.done[self.contiguous as usize] {
            self.contiguous += 1;
        }
    }

    /// Emits every output row whose window is complete.
    fn emit(&mut self) {
        let out_h = self.resize.y.out_size;
        while self.next_out < out_h && self.resize.y.window(self.next_out).1 <= self.contiguous {
            let hrows = &self.hrows;
            vertical_row(
                &self.resize,
                self.next_out,
                |y| {
                    hrows
                        .get(&y)
                        .map(Vec::as_slice)
                        .expect("window rows are complete")
                },
                &mut self.out_row,
            );
            self.image.lut.write_row(
                &self.out_row,
                self.format,
                self.next_out,
                0,
                &mut self.tensor,
            );
            self.next_out += 1;
            // Release rows no later output row reads.
            let keep_from = if self.next_out < out_h {
                self.resize.y.window(self.next_out).0
            } else {
                self.height
            };
            let (held, pool) = (&mut self.held, &mut self.pool);
            self.hrows.retain(|&y, h| {
                if y >= keep_from {
                    return true;
                }
                *held -= h.len() * 4;
                pool.push(std::mem::take(h));
                false
            });
        }
    }

    pub fn image(&self) -> Arc<ImagePlan> {
        self.image.clone()
    }

    /// Bytes this request holds now.
    pub fn held_bytes(&self) -> usize {
        self.held
    }

    /// The most it held at once.
    pub fn peak_bytes(&self) -> usize {
        self.peak
    }

    /// All fragments arrived: the tensor, or why the rows are malformed.
    pub fn finish(self) -> Result<Vec<u8>, RowError> {
        if self.contiguous < self.height {
            return Err(RowError(format!(
                "row rectangles leave row {} uncovered",
                self.contiguous
            )));
        }
        debug_assert_eq!(self.next_out, self.resize.y.out_size);
        Ok(self.tensor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transform::normalize::{ChannelOrder, Layout, NormalizePlan};
    use crate::transform::resize::Resampling;
    use crate::transform::DType;

    /// The default pipeline's plan: Pillow-exact to 224x224 FP32 NCHW.
    fn plan() -> Arc<ImagePlan> {
        Arc::new(ImagePlan::new(
            Resampling::from_antialias(true),
            NormalizePlan {
                dtype: DType::Fp32,
                layout: Layout::Nchw,
                order: ChannelOrder::Rgb,
                mean: [0.485, 0.456, 0.406],
                std: [0.229, 0.224, 0.225],
                scale: 1.0,
                zero_point: 0,
                width: 224,
                height: 224,
            },
        ))
    }

    fn image(w: u32, h: u32, ch: usize) -> Vec<u8> {
        let mut r = fastrand::Rng::with_seed(w as u64 * 31 + h as u64);
        (0..(w * h) as usize * ch).map(|_| r.u8(..)).collect()
    }

    #[test]
    fn in_order_rows_equal_whole_image_and_hold_a_window() {
        let img = plan();
        let (w, h) = (1920u32, 1080u32);
        let data = image(w, h, 3);
        let want = img.run_whole(&data, w, h, PixelFormat::Rgb8);
        let rp = Arc::new(img.resize_plan(w, h));
        let mut s = RowStream::new(img.clone(), rp, w, h, PixelFormat::Rgb8);
        for y in 0..h {
            let row = &data[(y * w * 3) as usize..((y + 1) * w * 3) as usize];
            // Rows wider than a datagram come as segments.
            for x0 in (0..w).step_by(400) {
                let x1 = (x0 + 400).min(w);
                s.add(
                    Rect::new(x0, y, x1 - x0, 1),
                    &row[(x0 * 3) as usize..(x1 * 3) as usize],
                )
                .unwrap();
            }
        }
        let peak = s.peak_bytes();
        assert_eq!(s.finish().unwrap(), want);
        let tensor = 3 * 224 * 224 * 4;
        println!("1920x1080 rows in order: peak {} B held = tensor {tensor} B + {} B window (the image is {} B)", peak, peak - tensor, w * h * 3);
        // A 1080-row source: a window of ~11 horizontal rows of 224x3 i32.
        assert!(
            peak - tensor < 64 * 1024,
            "held {} bytes besides the tensor",
            peak - tensor
        );
    }

    #[test]
    fn any_order_gives_the_same_tensor() {
        let img = plan();
        for (w, h, ch, fmt) in [
            (640u32, 480u32, 3usize, PixelFormat::Bgr8),
            (97, 13, 1, PixelFormat::Gray8),
            (300, 500, 4, PixelFormat::Rgba8),
        ] {
            let data = image(w, h, ch);
            let want = img.run_whole(&data, w, h, fmt);
            let mut rows: Vec<u32> = (0..h).collect();
            fastrand::Rng::with_seed(5).shuffle(&mut rows);
            let mut s = RowStream::new(img.clone(), Arc::new(img.resize_plan(w, h)), w, h, fmt);
            for y in rows {
                let row = &data[(y * w) as usize * ch..((y + 1) * w) as usize * ch];
                s.add(Rect::new(0, y, w, 1), row).unwrap();
            }
            assert_eq!(s.finish().unwrap(), want, "{w}x{h} {fmt:?}");
        }
    }

    #[test]
    fn overlaps_and_gaps_are_errors() {
        let img = plan();
        let data = image(10, 4, 3);
        let mk = || {
            RowStream::new(
                img.clone(),
                Arc::new(img.resize_plan(10, 4)),
                10,
                4,
                PixelFormat::Rgb8,
            )
        };
        let mut s = mk();
        s.add(Rect::new(0, 0, 10, 2), &data[..60]).unwrap();
        assert!(s.add(Rect::new(0, 1, 10, 1), &data[30..60]).is_err());
        let mut s = mk();
        s.add(Rect::new(0, 0, 5, 1), &data[..15]).unwrap();
        assert!(s.add(Rect::new(4, 0, 2, 1), &data[12..18]).is_err());
        let mut s = mk();
        s.add(Rect::new(0, 0, 5, 1), &data[..15]).unwrap();
        assert!(s.add(Rect::new(0, 0, 10, 1), &data[..30]).is_err());
        let mut s = mk();
        s.add(Rect::new(0, 0, 10, 3), &data[..90]).unwrap();
        assert!(s.finish().is_err());
    }
}
