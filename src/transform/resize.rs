//! Separable bilinear resize with the exact integer arithmetic of the
//! libraries the spec names ("Resampling"):
//!
//! * antialias on: Pillow's `Image.resize(BILINEAR)`, 22-bit coefficients,
//!   each pass rounded to uint8;
//! * antialias off: OpenCV's `cv2.resize(INTER_LINEAR)`, 11-bit
//!   coefficients, integer horizontal sums, the vectorized vertical rounding.
//!
//! Both work on a rectangle of the source (a tile with its halo, or the
//! whole image) and produce any output rectangle whose input windows lie in
//! it, so tiles computed alone equal the whole-image result bit for bit.

use crate::wire::Rect;

/// Pillow's fixed-point precision for 8-bit images.
const PILLOW_BITS: u32 = 22;
/// OpenCV's INTER_RESIZE_COEF_SCALE.
const CV_COEF_SCALE: f32 = 2048.0;

/// Which library's bilinear resize to reproduce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Resampling {
    /// antialias = true: Pillow BILINEAR (triangle filter widened on
    /// downscale).
    Antialias,
    /// antialias = false: OpenCV INTER_LINEAR (two taps).
    Linear,
}

impl Resampling {
    pub fn from_antialias(antialias: bool) -> Resampling {
        if antialias {
            Resampling::Antialias
        } else {
            Resampling::Linear
        }
    }
}

/// Coefficients of one axis (input size -> output size).
#[derive(Debug, Clone)]
pub struct AxisCoeffs {
    pub in_size: u32,
    pub out_size: u32,
    /// Taps per output index (fixed stride of `weights` and `taps`).
    ksize: usize,
    /// Number of used taps per output index.
    lens: Vec<u32>,
    /// Input index of each tap (`out_size * ksize`).
    taps: Vec<u32>,
    /// Integer weight of each tap.
    weights: Vec<i32>,
    /// Pillow only, horizontal axis: the weights split for 16-bit
    /// multiply-add (see [`split_weights`]), `groups` groups of 4 taps per
    /// output index, each group 32 `i16` (low parts, then high parts).
    split: Vec<i16>,
    groups: usize,
    /// The spec's input window [lo, hi) of each output index, zero-weight
    /// taps included.
    windows: Vec<(u32, u32)>,
}

impl AxisCoeffs {
    /// The horizontal axis (or any axis of Pillow).
    pub fn new(mode: Resampling, in_size: u32, out_size: u32) -> AxisCoeffs {
        Self::for_axis(mode, in_size, out_size, false)
    }

    /// The vertical axis: OpenCV builds it differently at the borders
    /// (see [`opencv_vertical_tap`]).
    pub fn new_vertical(mode: Resampling, in_size: u32, out_size: u32) -> AxisCoeffs {
        Self::for_axis(mode, in_size, out_size, true)
    }

    fn for_axis(mode: Resampling, in_size: u32, out_size: u32, vertical: bool) -> AxisCoeffs {
        assert!(in_size > 0 && out_size > 0, "axis sizes are >= 1");
        match mode {
            Resampling::Antialias => Self::pillow(in_size, out_size, vertical),
            Resampling::Linear => Self::opencv(in_size, out_size, vertical),
        }
    }

    /// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc`.
    fn pillow(in_size: u32, out_size: u32, vertical: bool) -> AxisCoeffs {
        let scale = in_size as f64 / out_size as f64;
        let filterscale = scale.max(1.0);
        let support = filterscale; // bilinear support is 1.0
        let ksize = support.ceil() as usize * 2 + 1;
        let n = out_size as usize;
        let mut c = AxisCoeffs {
            in_size,
            out_size,
            ksize,
            lens: vec![0; n],
            taps: vec![0; n * ksize],
            weights: vec![0; n * ksize],
            split: Vec::new(),
            groups: 0,
            windows: vec![(0, 0); n],
        };
        let ss = 1.0 / filterscale;
        let mut k = vec![0f64; ksize];
        for o in 0..n {
            let center = (o as f64 + 0.5) * scale;
            // `as i64` truncates toward zero, like C's (int) cast.
            let xmin = ((center - support + 0.5) as i64).max(0) as u32;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as u32;
            let len = (xmax - xmin) as usize;
            let mut ww = 0.0;
            for (x, kx) in k.iter_mut().enumerate().take(len) {
                let t = ((x as f64 + xmin as f64 - center + 0.5) * ss).abs();
                let w = if t < 1.0 { 1.0 - t } else { 0.0 };
                *kx = w;
                ww += w;
            }
            c.lens[o] = len as u32;
            c.windows[o] = (xmin, xmax);
            for (x, &kx) in k.iter().enumerate().take(len) {
                let w = if ww != 0.0 { kx / ww } else { kx };
                let scaled = w * (1u32 << PILLOW_BITS) as f64;
                let iw = if w < 0.0 {
                    (-0.5 + scaled) as i32
                } else {
                    (0.5 + scaled) as i32
                };
                c.taps[o * ksize + x] = xmin + x as u32;
                c.weights[o * ksize + x] = iw;
            }
        }
        if !vertical {
            c.split_weights();
        }
        c
    }

    /// Splits every Pillow weight `k = kh * 2^11 + kl` (`kl` in [0, 2^11),
    /// `kh = k >> 11`, both fit `i16` for |k| <= 2^22) and lays them out
    /// for `_mm256_madd_epi16` over pixel pairs: per group of 4 taps
    /// (t0..t3), 16 low parts `[kl0, kl1] x 4 | [kl2, kl3] x 4` then the
    /// same 16 high parts. Padding taps weigh 0. Then
    /// `sum v*k = (sum v*kh << 11) + sum v*kl` exactly in 32 bits.
    fn split_weights(&mut self) {
        self.groups = self.ksize.div_ceil(4);
        let n = self.out_size as usize;
        let mut split = vec![0; n * self.groups * 32];
        for o in 0..n {
            let (_, w) = self.taps(o);
            for (t, &k) in w.iter().enumerate() {
                assert!(k.unsigned_abs() <= 1 << 26, "weight {k} out of range");
                let (kh, kl) = ((k >> 11) as i16, (k & 0x7ff) as i16);
                let g = &mut split[(o * self.groups + t / 4) * 32..][..32];
                // Lane half (taps 0,1 low 128 bits, taps 2,3 high), slot in
                // the pair.
                let (half, slot) = ((t % 4) / 2, t % 2);
                for p in 0..4 {
                    g[half * 8 + p * 2 + slot] = kl;
                    g[16 + half * 8 + p * 2 + slot] = kh;
                }
            }
        }
        self.split = split;
    }

    /// OpenCV's INTER_LINEAR coefficient table (`resize()` in
    /// imgproc/resize.cpp): float32 source coordinate, 11-bit weights
    /// rounded half to even, border taps clamped.
    fn opencv(in_size: u32, out_size: u32, vertical: bool) -> AxisCoeffs {
        let n = out_size as usize;
        let mut c = AxisCoeffs {
            in_size,
            out_size,
            ksize: 2,
            lens: vec![2; n],
            taps: vec![0; n * 2],
            weights: vec![0; n * 2],
            split: Vec::new(),
            groups: 0,
            windows: vec![(0, 0); n],
        };
        let last = in_size - 1;
        for o in 0..n {
            let (i0, f) = opencv_tap(in_size, out_size, o as u32);
            let i1 = (i0 + 1).min(last);
            // The spec's window, on both axes (the vertical taps lie in it).
            c.windows[o] = (i0, i1 + 1);
            let (t0, t1, f) = if vertical {
                opencv_vertical_tap(in_size, out_size, o as u32)
            } else {
                (i0, i1, f)
            };
            c.taps[o * 2] = t0;
            c.taps[o * 2 + 1] = t1;
            c.weights[o * 2] = ((1.0 - f) * CV_COEF_SCALE).round_ties_even() as i32;
            c.weights[o * 2 + 1] = (f * CV_COEF_SCALE).round_ties_even() as i32;
        }
        c
    }

    /// The input window [lo, hi) of output index `o`.
    pub fn window(&self, o: u32) -> (u32, u32) {
        self.windows[o as usize]
    }

    /// The input window of output index `o` without building a table.
    pub fn window_of(mode: Resampling, in_size: u32, out_size: u32, o: u32) -> (u32, u32) {
        match mode {
            Resampling::Antialias => {
                let scale = in_size as f64 / out_size as f64;
                let support = scale.max(1.0);
                let center = (o as f64 + 0.5) * scale;
                let xmin = ((center - support + 0.5) as i64).max(0) as u32;
                let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as u32;
                (xmin, xmax)
            }
            Resampling::Linear => {
                let (i0, _) = opencv_tap(in_size, out_size, o);
                (i0, (i0 + 1).min(in_size - 1) + 1)
            }
        }
    }

    /// The output indices [a, b) whose windows lie inside the input
    /// range [lo, hi) (windows are monotonic in both ends).
    pub fn outputs_inside(&self, lo: u32, hi: u32) -> (u32, u32) {
        let a = self.windows.partition_point(|w| w.0 < lo);
        let b = self.windows.partition_point(|w| w.1 <= hi);
        (a as u32, b.max(a) as u32)
    }

    /// The input range [lo, hi) that output indices [a, b) need.
    pub fn span(&self, a: u32, b: u32) -> (u32, u32) {
        debug_assert!(a < b && b <= self.out_size);
        // Windows are monotonic in o.
        (self.windows[a as usize].0, self.windows[b as usize - 1].1)
    }

    fn taps(&self, o: usize) -> (&[u32], &[i32]) {
        let s = o * self.ksize;
        let n = self.lens[o] as usize;
        (&self.taps[s..s + n], &self.weights[s..s + n])
    }
}

/// OpenCV's first tap and fraction for output index `o`: float32 source
/// coordinate from a float64 scale, clamped at both borders.
fn opencv_tap(in_size: u32, out_size: u32, o: u32) -> (u32, f32) {
    let scale = 1.0 / (out_size as f64 / in_size as f64);
    let last = in_size as i64 - 1;
    let fx = ((o as f64 + 0.5) * scale - 0.5) as f32;
    let mut sx = fx.floor() as i64;
    let mut f = fx - sx as f32;
    if sx < 0 {
        sx = 0;
        f = 0.0;
    }
    if sx >= last {
        sx = last;
        f = 0.0;
    }
    (sx as u32, f)
}

/// OpenCV's vertical taps for output row `o`: unlike the horizontal table,
/// `resize()` keeps `sy = floor(fy)` and the raw fraction for every row
/// (no border clamping), and `resizeGeneric_Invoker` clamps the two row
/// indices to [0, in - 1]. At the top (sy = -1) both taps read row 0 with
/// weights (1 - f, f), at the bottom (sy = in - 1) both read row in - 1:
/// the same real value as (1, 0), but the vectorized vertical rounding
/// truncates each product separately, so the uint8 can differ by 1.
fn opencv_vertical_tap(in_size: u32, out_size: u32, o: u32) -> (u32, u32, f32) {
    let scale = 1.0 / (out_size as f64 / in_size as f64);
    let last = in_size as i64 - 1;
    let fy = ((o as f64 + 0.5) * scale - 0.5) as f32;
    let sy = fy.floor() as i64;
    let f = fy - sy as f32;
    (sy.clamp(0, last) as u32, (sy + 1).clamp(0, last) as u32, f)
}

/// Both axes of one (source size, output size, mode).
#[derive(Debug, Clone)]
pub struct ResizePlan {
    pub mode: Resampling,
    pub x: AxisCoeffs,
    pub y: AxisCoeffs,
}

impl ResizePlan {
    pub fn new(mode: Resampling, in_w: u32, in_h: u32, out_w: u32, out_h: u32) -> ResizePlan {
        ResizePlan {
            mode,
            x: AxisCoeffs::new(mode, in_w, out_w),
            y: AxisCoeffs::new_vertical(mode, in_h, out_h),
        }
    }

    /// The smallest input rectangle that holds the windows of every output
    /// pixel of `out` (the tile's minimal halo), without building tables.
    pub fn halo_rect(
        mode: Resampling,
        in_w: u32,
        in_h: u32,
        out_w: u32,
        out_h: u32,
        out: Rect,
    ) -> Rect {
        let (x0, _) = AxisCoeffs::window_of(mode, in_w, out_w, out.x);
        let (_, x1) = AxisCoeffs::window_of(mode, in_w, out_w, out.right() - 1);
        let (y0, _) = AxisCoeffs::window_of(mode, in_h, out_h, out.y);
        let (_, y1) = AxisCoeffs::window_of(mode, in_h, out_h, out.bottom() - 1);
        Rect::new(x0, y0, x1 - x0, y1 - y0)
    }

    /// The smallest input rectangle that holds the windows of every output
    /// pixel of `out` (the tile's minimal halo).
    pub fn input_rect_for(&self, out: Rect) -> Rect {
        let (x0, x1) = self.x.span(out.x, out.right());
        let (y0, y1) = self.y.span(out.y, out.bottom());
        Rect::new(x0, y0, x1 - x0, y1 - y0)
    }
}

/// A rectangle of source pixels, row-major, channels interleaved.
#[derive(Debug, Clone, Copy)]
pub struct SourceView<'a> {
    pub data: &'a [u8],
    /// Where these pixels sit in the full source image.
    pub rect: Rect,
    pub channels: usize,
}

/// The source rectangle does not hold an output rectangle's input windows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("tile input {have:?} lacks the halo for output {out:?}: needs {need:?}")]
pub struct HaloError {
    pub out: Rect,
    pub need: Rect,
    pub have: Rect,
}

/// Resizes the output rectangle `out_rect` from `src` into `out`
/// (`out_rect.w * out_rect.h * channels` bytes, row-major). `scratch`
/// holds the horizontal pass and is reused across calls.
pub fn resize_region(
    plan: &ResizePlan,
    src: &SourceView<'_>,
    out_rect: Rect,
    out: &mut [u8],
    scratch: &mut Vec<i32>,
) -> Result<(), HaloError> {
    let need = plan.input_rect_for(out_rect);
    if !src.rect.contains(&need) {
        return Err(HaloError {
            out: out_rect,
            need,
            have: src.rect,
        });
    }
    let ch = src.channels;
    let ow = out_rect.w as usize;
    assert_eq!(
        out.len(),
        ow * out_rect.h as usize * ch,
        "output buffer size"
    );
    assert_eq!(
        src.data.len(),
        src.rect.area() as usize * ch,
        "source buffer size"
    );
    let src_stride = src.rect.w as usize * ch;
    let row_len = ow * ch;

    // Output rows in order, each source row's horizontal pass computed
    // once, when the first window needing it comes, into a ring of
    // `ring` rows (windows are monotonic and at most `ring` rows high, so
    // a slot is reused only after every window reading it is done). The
    // working set stays in cache, whatever the source's height.
    let ring = (out_rect.y..out_rect.bottom())
        .map(|oy| {
            let (lo, hi) = plan.y.window(oy);
            (hi - lo) as usize
        })
        .max()
        .unwrap_or(0);
    scratch.clear();
    scratch.resize(ring * row_len, 0);
    let mut planes = Vec::new();
    let mut next = need.y;
    for (oy, drow) in out.chunks_exact_mut(row_len).enumerate() {
        let oy = out_rect.y + oy as u32;
        let (lo, hi) = plan.y.window(oy);
        for y in next.max(lo)..hi {
            let sy = (y - src.rect.y) as usize;
            let srow = &src.data[sy * src_stride..(sy + 1) * src_stride];
            let slot = &mut scratch[(y as usize % ring) * row_len..][..row_len];
            horizontal_row(plan, srow, src.rect.x, ch, out_rect.x, slot, &mut planes);
        }
        next = next.max(hi);
        let ring_rows = &scratch[..];
        vertical_row(
            plan,
            oy,
            |y| &ring_rows[(y as usize % ring) * row_len..][..row_len],
            drow,
        );
    }
    Ok(())
}

/// The horizontal pass of one source row: output columns starting at
/// `out_x0`, as many as `dst` holds (`dst.len() / ch`). `row` holds source
/// columns from `row_x` on and must cover their windows. Pillow stores
/// the pass rounded to uint8; OpenCV keeps the integer sums. `planes` is
/// reused scratch. Runs an AVX2 build of the same code when the CPU has
/// it (integer arithmetic: both builds give identical results).
pub fn horizontal_row(
    plan: &ResizePlan,
    row: &[u8],
    row_x: u32,
    ch: usize,
    out_x0: u32,
    dst: &mut [i32],
    planes: &mut Vec<i32>,
) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        if plan.mode == Resampling::Antialias && ch >= 3 {
            // SAFETY: the CPU supports AVX2.
            return unsafe { avx2::pillow_rgbx(plan, row, row_x, ch, out_x0, dst) };
        }
        // SAFETY: the CPU supports AVX2.
        return unsafe { horizontal_row_avx2(plan, row, row_x, ch, out_x0, dst, planes) };
    }
    horizontal_row_any(plan, row, row_x, ch, out_x0, dst, planes)
}

/// Hand-written AVX2 for Pillow's horizontal pass on 3- and 4-channel
/// rows, read in place (no RGBX copy): per group of 4 taps one 16-byte
/// load, one shuffle to `i16` pixel pairs `(c_t, c_t+1)` per channel, and
/// two `_mm256_madd_epi16` against the split weights (low 11 bits, high
/// part), recombined as `(hi << 11) + lo`: the exact 32-bit sum of
/// Pillow's `ss += pixel * k`, wrapping alike.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{AxisCoeffs, ResizePlan, PILLOW_BITS};
    use std::arch::x86_64::*;

    /// Shuffle masks moving 16 bytes down by d: `SHIFT[d..d + 16]`.
    static SHIFT: [i8; 32] = [
        0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, //
        -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    ];

    /// Sum of output `o`'s first `groups` groups of taps, unreduced: lanes
    /// 0..4 the channels of taps 0,1 (mod 4), lanes 4..8 of taps 2,3.
    /// `SAFE`: the 16-byte loads may run past `row` (a zero-padded copy
    /// then; the bytes past the window weigh 0).
    // No target_feature: inlined into the AVX2 caller (a target_feature
    // function cannot be `inline(always)`).
    #[inline(always)]
    unsafe fn taps_sum<const CH: usize, const SAFE: bool>(
        x: &AxisCoeffs,
        row: &[u8],
        first: usize,
        o: usize,
        groups: usize,
        mask: __m256i,
    ) -> __m256i {
        let mut lo = _mm256_setzero_si256();
        let mut hi = _mm256_setzero_si256();
        let k = x.split[o * x.groups * 32..][..groups * 32].as_ptr();
        for g in 0..groups {
            let off = first + g * 4 * CH;
            let p = if !SAFE {
                // SAFETY: the caller checked first + (groups-1)*4*CH + 16
                // <= row.len().
                unsafe { _mm_loadu_si128(row.as_ptr().add(off) as *const __m128i) }
            } else if row.len() >= 16 {
                let end = row.len() - 16;
                // SAFETY: both loads read row[end..end + 16] or `SHIFT`
                // [d..d + 16] with d <= 16.
                unsafe {
                    if off <= end {
                        _mm_loadu_si128(row.as_ptr().add(off) as *const __m128i)
                    } else {
                        // The row's last 16 bytes moved down by d, zeros in.
                        let d = (off - end).min(16);
                        let v = _mm_loadu_si128(row.as_ptr().add(end) as *const __m128i);
                        let m = _mm_loadu_si128(SHIFT.as_ptr().add(d) as *const __m128i);
                        _mm_shuffle_epi8(v, m)
                    }
                }
            } else {
                let mut tmp = [0u8; 16];
                if off < row.len() {
                    tmp[..row.len() - off].copy_from_slice(&row[off..]);
                }
                // SAFETY: reads the 16-byte local.
                unsafe { _mm_loadu_si128(tmp.as_ptr() as *const __m128i) }
            };
            let pix = _mm256_shuffle_epi8(_mm256_broadcastsi128_si256(p), mask);
            // SAFETY: group g of o's split weights, inside `split`.
            let (kl, kh) = unsafe {
                (
                    _mm256_loadu_si256(k.add(g * 32) as *const __m256i),
                    _mm256_loadu_si256(k.add(g * 32 + 16) as *const __m256i),
                )
            };
            lo = _mm256_add_epi32(lo, _mm256_madd_epi16(pix, kl));
            hi = _mm256_add_epi32(hi, _mm256_madd_epi16(pix, kh));
        }
        _mm256_add_epi32(_mm256_slli_epi32(hi, 11), lo)
    }

    /// Pixel pairs (t, t+1) of taps 0,1 in the low half, 2,3 in the high
    /// half: [c0 of t, c0 of t+1, c1.., c2.., c3..] as i16.
    // No target_feature: inlined into the AVX2 caller (a target_feature
    // function cannot be `inline(always)`).
    #[inline(always)]
    unsafe fn pair_mask<const CH: usize>() -> __m256i {
        {
            if CH == 3 {
                _mm256_setr_epi8(
                    0, -1, 3, -1, 1, -1, 4, -1, 2, -1, 5, -1, -1, -1, -1, -1, //
                    6, -1, 9, -1, 7, -1, 10, -1, 8, -1, 11, -1, -1, -1, -1, -1,
                )
            } else {
                _mm256_setr_epi8(
                    0, -1, 4, -1, 1, -1, 5, -1, 2, -1, 6, -1, 3, -1, 7, -1, //
                    8, -1, 12, -1, 9, -1, 13, -1, 10, -1, 14, -1, 11, -1, 15, -1,
                )
            }
        }
    }

    /// Output `o`'s unreduced sum, over `G` groups (`G` = 0: its own
    /// count), loads checked against the row's end.
    // No target_feature: inlined into the AVX2 caller (a target_feature
    // function cannot be `inline(always)`).
    #[inline(always)]
    unsafe fn sum<const CH: usize, const G: usize>(
        x: &AxisCoeffs,
        row: &[u8],
        row_x: u32,
        o: usize,
        mask: __m256i,
    ) -> __m256i {
        let first = (x.taps[o * x.ksize] - row_x) as usize * CH;
        let groups = if G > 0 {
            G
        } else {
            (x.lens[o] as usize).div_ceil(4)
        };
        // SAFETY: (both) the loads are checked or copied.
        if first + (groups - 1) * 4 * CH + 16 <= row.len() {
            unsafe { taps_sum::<CH, false>(x, row, first, o, groups, mask) }
        } else {
            unsafe { taps_sum::<CH, true>(x, row, first, o, groups, mask) }
        }
    }

    /// `G` > 0: every output uses `G` groups (the axis' maximum; the
    /// padding weighs 0), unrolled; `G` = 0: each its own count.
    #[inline(always)]
    unsafe fn kernel<const CH: usize, const G: usize>(
        plan: &ResizePlan,
        row: &[u8],
        row_x: u32,
        out_x0: u32,
        dst: &mut [i32],
    ) {
        let x = &plan.x;
        // SAFETY: AVX2 is enabled here.
        let mask = unsafe { pair_mask::<CH>() };
        let init = _mm256_set1_epi32(1 << (PILLOW_BITS - 1));
        let (zero, max) = (_mm256_setzero_si256(), _mm256_set1_epi32(255));
        let n = dst.len() / CH;
        let o0 = out_x0 as usize;
        let mut i = 0;
        // Two output pixels per reduction: i in the low half, i+1 the high.
        while i < n {
            // SAFETY: AVX2 is enabled in the caller.
            let a = unsafe { sum::<CH, G>(x, row, row_x, o0 + i, mask) };
            let b = if i + 1 < n {
                unsafe { sum::<CH, G>(x, row, row_x, o0 + i + 1, mask) }
            } else {
                zero
            };
            let s = _mm256_add_epi32(
                _mm256_permute2x128_si256(a, b, 0x20),
                _mm256_permute2x128_si256(a, b, 0x31),
            );
            let s = _mm256_srai_epi32(_mm256_add_epi32(s, init), PILLOW_BITS as i32);
            // Pillow's clip8.
            let s = _mm256_min_epi32(_mm256_max_epi32(s, zero), max);
            let (l, h) = (_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
            if (i + 1) * CH + 4 <= dst.len() {
                // SAFETY: 4 lanes at i*CH and at (i+1)*CH, inside dst (for
                // RGB the 4th lane lands on the next pixel, rewritten next).
                unsafe {
                    _mm_storeu_si128(dst.as_mut_ptr().add(i * CH) as *mut __m128i, l);
                    _mm_storeu_si128(dst.as_mut_ptr().add((i + 1) * CH) as *mut __m128i, h);
                }
            } else {
                let mut lanes = [0i32; 8];
                // SAFETY: stores into the 8-lane local.
                unsafe { _mm256_storeu_si256(lanes.as_mut_ptr() as *mut __m256i, s) };
                for j in 0..(n - i).min(2) {
                    for c in 0..CH {
                        dst[(i + j) * CH + c] = lanes[j * 4 + c];
                    }
                }
            }
            i += 2;
        }
    }

    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn pillow_rgbx(
        plan: &ResizePlan,
        row: &[u8],
        row_x: u32,
        ch: usize,
        out_x0: u32,
        dst: &mut [i32],
    ) {
        // Dispatch on channels and group count to the unrolled kernels.
        macro_rules! go {
            ($c:literal) => {
                // SAFETY: AVX2 is enabled here.
                unsafe {
                    match plan.x.groups {
                        1 => kernel::<$c, 1>(plan, row, row_x, out_x0, dst),
                        2 => kernel::<$c, 2>(plan, row, row_x, out_x0, dst),
                        3 => kernel::<$c, 3>(plan, row, row_x, out_x0, dst),
                        4 => kernel::<$c, 4>(plan, row, row_x, out_x0, dst),
                        5 => kernel::<$c, 5>(plan, row, row_x, out_x0, dst),
                        6 => kernel::<$c, 6>(plan, row, row_x, out_x0, dst),
                        _ => kernel::<$c, 0>(plan, row, row_x, out_x0, dst),
                    }
                }
            };
        }
        match ch {
            3 => go!(3),
            4 => go!(4),
            _ => unreachable!("3 or 4 channels"),
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn horizontal_row_avx2(
    plan: &ResizePlan,
    row: &[u8],
    row_x: u32,
    ch: usize,
    out_x0: u32,
    dst: &mut [i32],
    planes: &mut Vec<i32>,
) {
    horizontal_row_any(plan, row, row_x, ch, out_x0, dst, planes)
}

#[inline(always)]
fn horizontal_row_any(
    plan: &ResizePlan,
    row: &[u8],
    row_x: u32,
    ch: usize,
    out_x0: u32,
    dst: &mut [i32],
    planes: &mut Vec<i32>,
) {
    match ch {
        1 => hpass::<1>(plan, row, row_x, out_x0, dst, planes),
        3 => hpass::<3>(plan, row, row_x, out_x0, dst, planes),
        4 => hpass::<4>(plan, row, row_x, out_x0, dst, planes),
        _ => unreachable!("pixel formats have 1, 3 or 4 channels"),
    }
}

#[inline(always)]
fn hpass<const CH: usize>(
    plan: &ResizePlan,
    row: &[u8],
    row_x: u32,
    out_x0: u32,
    dst: &mut [i32],
    planes: &mut Vec<i32>,
) {
    if plan.mode == Resampling::Antialias {
        // Channel planes make each tap sum a contiguous dot product, which
        // the compiler vectorizes.
        let n_in = row.len() / CH;
        planes.clear();
        planes.resize(n_in * CH, 0);
        for (i, px) in row.chunks_exact(CH).enumerate() {
            for c in 0..CH {
                planes[c * n_in + i] = px[c] as i32;
            }
        }
        for (i, px) in dst.chunks_exact_mut(CH).enumerate() {
            let (taps, weights) = plan.x.taps(out_x0 as usize + i);
            let first = (taps[0] - row_x) as usize;
            for c in 0..CH {
                let p = &planes[c * n_in + first..][..weights.len()];
                let sum: i32 = p.iter().zip(weights).map(|(a, b)| a * b).sum();
                px[c] = clip8_pillow((1 << (PILLOW_BITS - 1)) + sum) as i32;
            }
        }
    } else {
        for (i, px) in dst.chunks_exact_mut(CH).enumerate() {
            let (taps, weights) = plan.x.taps(out_x0 as usize + i);
            let first = (taps[0] - row_x) as usize * CH;
            let second = (taps[1] - row_x) as usize * CH;
            for c in 0..CH {
                px[c] = row[first + c] as i32 * weights[0] + row[second + c] as i32 * weights[1];
            }
        }
    }
}

/// The vertical pass of output row `oy`: `hrow(y)` is the horizontal
/// pass of source row `y` (every row of the window), `dst` the output row.
pub fn vertical_row<'a>(
    plan: &ResizePlan,
    oy: u32,
    hrow: impl Fn(u32) -> &'a [i32],
    dst: &mut [u8],
) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2.
        return unsafe { vertical_row_avx2(plan, oy, hrow, dst) };
    }
    vertical_row_any(plan, oy, hrow, dst)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn vertical_row_avx2<'a>(
    plan: &ResizePlan,
    oy: u32,
    hrow: impl Fn(u32) -> &'a [i32],
    dst: &mut [u8],
) {
    vertical_row_any(plan, oy, hrow, dst)
}

#[inline(always)]
fn vertical_row_any<'a>(
    plan: &ResizePlan,
    oy: u32,
    hrow: impl Fn(u32) -> &'a [i32],
    dst: &mut [u8],
) {
    let (taps, weights) = plan.y.taps(oy as usize);
    match plan.mode {
        Resampling::Antialias => {
            // Row-major accumulation: contiguous, so it vectorizes.
            let mut acc = [0i32; 512];
            for chunk in 0..dst.len().div_ceil(512) {
                let lo = chunk * 512;
                let n = (dst.len() - lo).min(512);
                let acc = &mut acc[..n];
                acc.fill(1 << (PILLOW_BITS - 1));
                for (&t, &w) in taps.iter().zip(weights) {
                    let h = &hrow(t)[lo..lo + n];
                    for (a, &v) in acc.iter_mut().zip(h) {
                        *a += v * w;
                    }
                }
                for (d, &a) in dst[lo..lo + n].iter_mut().zip(acc.iter()) {
                    *d = clip8_pillow(a);
                }
            }
        }
        Resampling::Linear => {
            let (ha, hb) = (hrow(taps[0]), hrow(taps[1]));
            let (b0, b1) = (weights[0], weights[1]);
            for ((d, &a), &b) in dst.iter_mut().zip(ha).zip(hb) {
                *d = opencv_vertical(a, b, b0, b1);
            }
        }
    }
}

/// Pillow's `clip8`: the accumulator's top bits, clamped to uint8.
#[inline(always)]
fn clip8_pillow(acc: i32) -> u8 {
    (acc >> PILLOW_BITS).clamp(0, 255) as u8
}

/// OpenCV's vectorized vertical pass (`VResizeLinearVec_32s8u`):
/// 16-bit multiply-high of the pre-shifted sums, then a rounding shift.
#[inline(always)]
fn opencv_vertical(ha: i32, hb: i32, b0: i32, b1: i32) -> u8 {
    let v = ((((ha >> 4) * b0) >> 16) + (((hb >> 4) * b1) >> 16) + 2) >> 2;
    v.clamp(0, 255) as u8
}

/// Resizes a whole image.
pub fn resize_image(
    plan: &ResizePlan,
    data: &[u8],
    channels: usize,
    scratch: &mut Vec<i32>,
) -> Vec<u8> {
    let out_rect = Rect::new(0, 0, plan.x.out_size, plan.y.out_size);
    let mut out = vec![0u8; out_rect.area() as usize * channels];
    let src = SourceView {
        data,
        rect: Rect::new(0, 0, plan.x.in_size, plan.y.in_size),
        channels,
    };
    resize_region(plan, &src, out_rect, &mut out, scratch)
        .expect("the whole image holds every window");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_size_is_identity() {
        for mode in [Resampling::Antialias, Resampling::Linear] {
            let plan = ResizePlan::new(mode, 5, 3, 5, 3);
            let data: Vec<u8> = (0..15).map(|i| (i * 17) as u8).collect();
            assert_eq!(
                resize_image(&plan, &data, 1, &mut Vec::new()),
                data,
                "{mode:?}"
            );
        }
    }

    #[test]
    fn constant_image_stays_constant() {
        for mode in [Resampling::Antialias, Resampling::Linear] {
            for (iw, ih, ow, oh) in [(7, 5, 3, 2), (3, 2, 11, 7), (100, 1, 13, 1), (1, 1, 4, 4)] {
                let plan = ResizePlan::new(mode, iw, ih, ow, oh);
                for v in [0u8, 1, 127, 254, 255] {
                    let data = vec![v; (iw * ih * 3) as usize];
                    let out = resize_image(&plan, &data, 3, &mut Vec::new());
                    assert!(
                        out.iter().all(|&o| o == v),
                        "{mode:?} {iw}x{ih}->{ow}x{oh} v={v}"
                    );
                }
            }
        }
    }

    #[test]
    fn pillow_weights_sum_to_one() {
        for (i, o) in [(640, 224), (224, 640), (7, 3), (1000, 1), (1, 9)] {
            let c = AxisCoeffs::new(Resampling::Antialias, i, o);
            for k in 0..o as usize {
                let (_, w) = c.taps(k);
                let s: i32 = w.iter().sum();
                // Each weight is rounded separately: a few units of slack.
                assert!(
                    (s - (1 << 22)).abs() <= w.len() as i32,
                    "{i}->{o} at {k}: {s}"
                );
            }
        }
    }

    #[test]
    fn opencv_downscale_by_two_averages_pairs() {
        let c = AxisCoeffs::new(Resampling::Linear, 8, 4);
        for o in 0..4 {
            let (t, w) = c.taps(o);
            assert_eq!(t, &[2 * o as u32, 2 * o as u32 + 1]);
            assert_eq!(w, &[1024, 1024]);
        }
    }

    #[test]
    fn window_of_matches_tables() {
        for mode in [Resampling::Antialias, Resampling::Linear] {
            for (i, o) in [(640, 224), (224, 640), (7, 3), (1000, 1), (1, 9), (481, 13)] {
                let c = AxisCoeffs::new(mode, i, o);
                for k in 0..o {
                    assert_eq!(
                        c.window(k),
                        AxisCoeffs::window_of(mode, i, o, k),
                        "{mode:?} {i}->{o} {k}"
                    );
                }
            }
        }
    }

    /// The AVX2 build (taken on this machine when the CPU has it) and the
    /// portable build give identical rows.
    #[test]
    fn dispatched_passes_equal_portable_passes() {
        let mut r = fastrand::Rng::with_seed(9);
        for mode in [Resampling::Antialias, Resampling::Linear] {
            for (iw, ow, ch) in [
                (640u32, 224u32, 3usize),
                (1920, 224, 4),
                (1920, 224, 3),
                (50, 333, 1),
                (7, 3, 3),
                (224, 640, 4),
                (4000, 3, 3),
                (13, 1, 4),
            ] {
                let plan = ResizePlan::new(mode, iw, 4, ow, 3);
                let row: Vec<u8> = (0..iw as usize * ch).map(|_| r.u8(..)).collect();
                let (mut a, mut b) = (vec![0i32; ow as usize * ch], vec![0i32; ow as usize * ch]);
                horizontal_row(&plan, &row, 0, ch, 0, &mut a, &mut Vec::new());
                horizontal_row_any(&plan, &row, 0, ch, 0, &mut b, &mut Vec::new());
                assert_eq!(a, b, "{mode:?} horizontal {iw}->{ow} ch{ch}");
                // The AVX2 kernel itself.
                #[cfg(target_arch = "x86_64")]
                if mode == Resampling::Antialias && ch >= 3 && std::is_x86_feature_detected!("avx2")
                {
                    let mut c = vec![0i32; a.len()];
                    // SAFETY: the CPU supports AVX2.
                    unsafe { avx2::pillow_rgbx(&plan, &row, 0, ch, 0, &mut c) };
                    assert_eq!(c, b, "AVX2 horizontal {iw}->{ow} ch{ch}");
                }
                let rows: Vec<Vec<i32>> = (0..4)
                    .map(|_| a.iter().map(|&v| (v + r.i32(0..3)).max(0)).collect())
                    .collect();
                let (mut x, mut y) = (vec![0u8; a.len()], vec![0u8; a.len()]);
                for oy in 0..3 {
                    vertical_row(&plan, oy, |t| &rows[t as usize], &mut x);
                    vertical_row_any(&plan, oy, |t| &rows[t as usize], &mut y);
                    assert_eq!(x, y, "{mode:?} vertical");
                }
            }
        }
    }

    #[test]
    fn halo_is_checked() {
        let plan = ResizePlan::new(Resampling::Antialias, 64, 64, 16, 16);
        let out = Rect::new(4, 4, 4, 4);
        let need = plan.input_rect_for(out);
        let data = vec![0u8; need.area() as usize];
        let ok = SourceView {
            data: &data,
            rect: need,
            channels: 1,
        };
        assert!(resize_region(&plan, &ok, out, &mut [0u8; 16], &mut Vec::new()).is_ok());
        let short = Rect::new(need.x + 1, need.y, need.w - 1, need.h);
        let data = vec![0u8; short.area() as usize];
        let bad = SourceView {
            data: &data,
            rect: short,
            channels: 1,
        };
        assert!(resize_region(&plan, &bad, out, &mut [0u8; 16], &mut Vec::new()).is_err());
    }
}
