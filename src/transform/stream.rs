//! IMAGE_ROWS streaming: the horizontal pass runs on each received row
//! segment straight from the datagram (the output columns whose windows
//! lie inside it; only the few pixels of windows straddling the segment's
//! edges are copied, and those columns computed when the row completes),
//! the vertical pass emits an output row (resized
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
    /// A row-sized buffer holding only the pixels of windows that straddle
    /// a segment edge.
    data: Vec<u8>,
    /// The horizontal pass so far (needed rows only): the columns whose
    /// windows lie inside one received segment.
    h: Vec<i32>,
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
        let needed = self.needed[y as usize];
        let h_len = if needed {
            self.image.out_width() as usize * ch
        } else {
            0
        };
        let (row_pool, pool) = (&mut self.row_pool, &mut self.pool);
        let held = &mut self.held;
        let p = self.partial.entry(y).or_insert_with(|| {
            *held += row_bytes + h_len * 4;
            let mut data = row_pool.pop().unwrap_or_default();
            data.resize(row_bytes, 0);
            let mut h = pool.pop().unwrap_or_default();
            h.clear();
            h.resize(h_len, 0);
            PartialRow {
                data,
                h,
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
        p.filled += w;
        self.peak = self.peak.max(self.held);
        if needed {
            // Columns whose windows lie inside this segment: straight from
            // the datagram.
            let ax = &self.resize.x;
            let (oa, ob) = ax.outputs_inside(x, end);
            if oa < ob {
                horizontal_row(
                    &self.resize,
                    seg,
                    x,
                    ch,
                    oa,
                    &mut p.h[oa as usize * ch..ob as usize * ch],
                    &mut self.planes,
                );
            }
            // Keep the pixels of windows crossing the left edge (outputs
            // before oa reach at most window(oa - 1).1) and the right edge
            // (outputs from ob start at window(ob).0 or later).
            let a = if oa > 0 {
                ax.window(oa - 1).1.clamp(x, end)
            } else {
                x
            };
            let b = if ob < ax.out_size {
                ax.window(ob).0.clamp(x, end)
            } else {
                end
            };
            let mut keep = |lo: u32, hi: u32| {
                let (l, h) = (lo as usize * ch, hi as usize * ch);
                p.data[l..h].copy_from_slice(&seg[l - x as usize * ch..h - x as usize * ch]);
            };
            if a >= b {
                keep(x, end);
            } else {
                keep(x, a);
                keep(b, end);
            }
        }
        if p.filled == self.width {
            let mut p = self.partial.remove(&y).expect("present");
            self.held -= row_bytes;
            if needed {
                // The columns no single segment held: from the kept edges.
                p.spans.sort_unstable();
                let ax = &self.resize.x;
                let mut next = 0;
                for &(lo, hi) in &p.spans {
                    let (oa, ob) = ax.outputs_inside(lo, hi);
                    if oa >= ob {
                        continue;
                    }
                    if next < oa {
                        horizontal_row(
                            &self.resize,
                            &p.data,
                            0,
                            ch,
                            next,
                            &mut p.h[next as usize * ch..oa as usize * ch],
                            &mut self.planes,
                        );
                    }
                    next = next.max(ob);
                }
                if next < ax.out_size {
                    horizontal_row(
                        &self.resize,
                        &p.data,
                        0,
                        ch,
                        next,
                        &mut p.h[next as usize * ch..],
                        &mut self.planes,
                    );
                }
                self.hrows.insert(y, std::mem::take(&mut p.h));
            } else {
                self.pool.push(std::mem::take(&mut p.h));
            }
            self.row_pool.push(p.data);
            self.row_done(y);
        }
        Ok(())
    }

    fn row_complete(&mut self, y: u32, row: &[u8]) {
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
        self.row_done(y);
    }

    fn row_done(&mut self, y: u32) {
        self.done[y as usize] = true;
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

    /// Rows cut into segments of random widths (1 pixel up to most of a
    /// row), all segments of all rows in random order, both resamplings
    /// and every channel count: the tensor equals the whole image's.
    #[test]
    fn random_segments_in_any_order_equal_whole_image() {
        let aa = plan();
        let mut lin = (*aa).clone();
        lin.resampling = crate::transform::resize::Resampling::Linear;
        let mut r = fastrand::Rng::with_seed(11);
        for img in [aa, Arc::new(lin)] {
            for (w, h, fmt) in [
                (640u32, 48u32, PixelFormat::Rgb8),
                (301, 37, PixelFormat::Rgba8),
                (97, 300, PixelFormat::Gray8),
                (150, 20, PixelFormat::Bgr8),
                (1000, 9, PixelFormat::Rgb8),
            ] {
                let ch = fmt.channels();
                let data = image(w, h, ch);
                let want = img.run_whole(&data, w, h, fmt);
                let mut segs = Vec::new();
                for y in 0..h {
                    let mut x = 0;
                    while x < w {
                        let sw = match r.u8(0..4) {
                            0 => r.u32(1..=3),
                            1 => r.u32(1..=40),
                            _ => r.u32(1..=w),
                        }
                        .min(w - x);
                        segs.push(Rect::new(x, y, sw, 1));
                        x += sw;
                    }
                }
                r.shuffle(&mut segs);
                let mut s = RowStream::new(img.clone(), Arc::new(img.resize_plan(w, h)), w, h, fmt);
                for rect in segs {
                    let o = (rect.y * w + rect.x) as usize * ch;
                    s.add(rect, &data[o..o + rect.w as usize * ch]).unwrap();
                }
                assert_eq!(
                    s.finish().unwrap(),
                    want,
                    "{:?} {w}x{h} {fmt:?}",
                    img.resampling
                );
            }
        }
    }
}
