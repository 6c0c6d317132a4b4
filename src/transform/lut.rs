//! Per-channel lookup tables: a resized uint8 value and its output channel
//! give the tensor element's bytes directly (the paper's NIC-style
//! normalization). Built once per pipeline from [`NormalizePlan`], so every
//! entry is bit-identical to the spec's formula; layout, channel order,
//! alpha dropping and gray replication are folded into the table walk.

use super::normalize::{Layout, NormalizePlan};
use super::DType;
use crate::wire::PixelFormat;

/// 256 entries for each of the 3 output channels, each entry the
/// element's little-endian bytes (only the first `elem` bytes are used).
#[derive(Debug, Clone)]
pub struct NormalizeLut {
    tables: Box<[[[u8; 4]; 256]; 3]>,
    elem: usize,
    layout: Layout,
    width: usize,
    height: usize,
    plan: NormalizePlan,
    /// Per pixel format (`format as usize`): the AVX2 walk's byte
    /// selection, built once.
    walks: [Walk; 5],
}

/// How the AVX2 walk picks a block's bytes (see `avx2`): for each of the
/// three streams of 8 elements, the in-lane shuffle masks of the block's
/// first and last 16 bytes and each element's table offset (`c * 256`).
#[derive(Debug, Clone, Copy)]
struct Walk {
    lo: [[i8; 16]; 3],
    hi: [[i8; 16]; 3],
    off: [[i32; 8]; 3],
}

impl Walk {
    fn new(layout: Layout, ch: usize, map: [usize; 3]) -> Walk {
        let mut w = Walk {
            lo: [[-1; 16]; 3],
            hi: [[-1; 16]; 3],
            off: [[0; 8]; 3],
        };
        // The second 16-byte load of a block ends at the block's end.
        let hi_at = (8 * ch).saturating_sub(16);
        for j in 0..3 {
            for l in 0..8 {
                // Element l of stream j: its source pixel and channel.
                let (p, c) = match layout {
                    Layout::Nchw => (l, j),
                    Layout::Nhwc => ((8 * j + l) / 3, (8 * j + l) % 3),
                };
                let pos = p * ch + map[c];
                if pos < 16 {
                    w.lo[j][l] = pos as i8;
                } else {
                    w.hi[j][l] = (pos - hi_at) as i8;
                }
                w.off[j][l] = c as i32 * 256;
            }
        }
        w
    }
}

impl NormalizeLut {
    pub fn new(plan: &NormalizePlan) -> NormalizeLut {
        let elem = plan.dtype.size();
        assert!(matches!(
            plan.dtype,
            DType::Fp32 | DType::Fp16 | DType::Uint8 | DType::Int8
        ));
        let mut tables = Box::new([[[0u8; 4]; 256]; 3]);
        for (c, table) in tables.iter_mut().enumerate() {
            for (v, e) in table.iter_mut().enumerate() {
                plan.write_element(v as u8, c, &mut e[..elem]);
            }
        }
        let walks =
            PixelFormat::ALL.map(|f| Walk::new(plan.layout, f.channels(), plan.channel_map(f)));
        debug_assert!(PixelFormat::ALL
            .iter()
            .enumerate()
            .all(|(i, &f)| f as usize == i));
        NormalizeLut {
            walks,
            tables,
            elem,
            layout: plan.layout,
            width: plan.width as usize,
            height: plan.height as usize,
            plan: plan.clone(),
        }
    }

    pub fn plan(&self) -> &NormalizePlan {
        &self.plan
    }

    /// The element bytes of value `v` in output channel `c`.
    pub fn entry(&self, c: usize, v: u8) -> &[u8] {
        &self.tables[c][v as usize][..self.elem]
    }

    /// Writes one resized row segment (`px` = n pixels of `format`) at
    /// output row `y`, columns `x0..x0+n`, into the whole tensor. With
    /// AVX2, blocks of 8 pixels go through table gathers
    /// ([`avx2::blocks`]), the rest through the portable walk; both copy
    /// the same table entries.
    pub fn write_row(&self, px: &[u8], format: PixelFormat, y: u32, x0: u32, tensor: &mut [u8]) {
        let ch = format.channels();
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") {
            let walk = &self.walks[format as usize];
            // SAFETY: the CPU supports AVX2.
            let done = unsafe { avx2::blocks(self, walk, px, ch, y, x0, tensor) };
            if done * ch < px.len() {
                self.write_row_portable(&px[done * ch..], format, y, x0 + done as u32, tensor);
            }
            return;
        }
        self.write_row_portable(px, format, y, x0, tensor)
    }

    /// [`Self::write_row`] without SIMD.
    pub fn write_row_portable(
        &self,
        px: &[u8],
        format: PixelFormat,
        y: u32,
        x0: u32,
        tensor: &mut [u8],
    ) {
        let map = self.plan.channel_map(format);
        match (format.channels(), self.elem) {
            (1, 4) => self.row::<1, 4>(px, map, y, x0, tensor),
            (3, 4) => self.row::<3, 4>(px, map, y, x0, tensor),
            (4, 4) => self.row::<4, 4>(px, map, y, x0, tensor),
            (1, 2) => self.row::<1, 2>(px, map, y, x0, tensor),
            (3, 2) => self.row::<3, 2>(px, map, y, x0, tensor),
            (4, 2) => self.row::<4, 2>(px, map, y, x0, tensor),
            (1, 1) => self.row::<1, 1>(px, map, y, x0, tensor),
            (3, 1) => self.row::<3, 1>(px, map, y, x0, tensor),
            (4, 1) => self.row::<4, 1>(px, map, y, x0, tensor),
            _ => unreachable!("channels 1/3/4, elements of 1/2/4 bytes"),
        }
    }

    #[inline(always)]
    fn row<const CH: usize, const E: usize>(
        &self,
        px: &[u8],
        map: [usize; 3],
        y: u32,
        x0: u32,
        tensor: &mut [u8],
    ) {
        let n = px.len() / CH;
        let (w, h, y, x0) = (self.width, self.height, y as usize, x0 as usize);
        match self.layout {
            Layout::Nchw => {
                for (c, &sc) in map.iter().enumerate() {
                    let table = &self.tables[c];
                    let start = ((c * h + y) * w + x0) * E;
                    let dst = &mut tensor[start..start + n * E];
                    for (d, p) in dst.chunks_exact_mut(E).zip(px.chunks_exact(CH)) {
                        d.copy_from_slice(&table[p[sc] as usize][..E]);
                    }
                }
            }
            Layout::Nhwc => {
                let start = (y * w + x0) * 3 * E;
                let dst = &mut tensor[start..start + n * 3 * E];
                for (d, p) in dst.chunks_exact_mut(3 * E).zip(px.chunks_exact(CH)) {
                    for (c, &sc) in map.iter().enumerate() {
                        d[c * E..(c + 1) * E].copy_from_slice(&self.tables[c][p[sc] as usize][..E]);
                    }
                }
            }
        }
    }
}

/// AVX2 table walk: 8 pixels per block, three streams of 8 elements each
/// (NCHW: one per output channel; NHWC: the block's 24 interleaved
/// elements in three runs of 8). Each stream's 8 source bytes are picked
/// by two in-lane shuffles (pixel format, alpha, gray and channel order
/// folded into the masks), widened to indices into the three contiguous
/// 256-entry tables (`c * 256 + v`), gathered as 32-bit entries and
/// narrowed to the element size straight into the tensor.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{Layout, NormalizeLut, Walk};
    use std::arch::x86_64::*;

    /// Pixels written (a multiple of 8; the caller does the rest).
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn blocks(
        lut: &NormalizeLut,
        walk: &Walk,
        px: &[u8],
        ch: usize,
        y: u32,
        x0: u32,
        tensor: &mut [u8],
    ) -> usize {
        // SAFETY (all): AVX2 is enabled here.
        unsafe {
            match (ch, lut.elem) {
                (1, 4) => run::<1, 4>(lut, walk, px, y, x0, tensor),
                (3, 4) => run::<3, 4>(lut, walk, px, y, x0, tensor),
                (4, 4) => run::<4, 4>(lut, walk, px, y, x0, tensor),
                (1, 2) => run::<1, 2>(lut, walk, px, y, x0, tensor),
                (3, 2) => run::<3, 2>(lut, walk, px, y, x0, tensor),
                (4, 2) => run::<4, 2>(lut, walk, px, y, x0, tensor),
                (1, 1) => run::<1, 1>(lut, walk, px, y, x0, tensor),
                (3, 1) => run::<3, 1>(lut, walk, px, y, x0, tensor),
                (4, 1) => run::<4, 1>(lut, walk, px, y, x0, tensor),
                _ => unreachable!("channels 1/3/4, elements of 1/2/4 bytes"),
            }
        }
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn run<const CH: usize, const E: usize>(
        lut: &NormalizeLut,
        walk: &Walk,
        px: &[u8],
        y: u32,
        x0: u32,
        tensor: &mut [u8],
    ) -> usize {
        let n = px.len() / CH;
        let blocks = n / 8;
        if blocks == 0 {
            return 0;
        }
        let (w, h, y, x0) = (lut.width, lut.height, y as usize, x0 as usize);
        let hi_at = (8 * CH).saturating_sub(16);
        let mut start = [0usize; 3];
        let step;
        match lut.layout {
            Layout::Nchw => {
                for (j, s) in start.iter_mut().enumerate() {
                    *s = (j * h + y) * w + x0;
                }
                step = 8;
            }
            Layout::Nhwc => {
                for (j, s) in start.iter_mut().enumerate() {
                    *s = (y * w + x0) * 3 + 8 * j;
                }
                step = 24;
            }
        }
        // Every store below lands inside the tensor.
        for s in start {
            assert!(
                (s + (blocks - 1) * step + 8) * E <= tensor.len(),
                "row inside the tensor"
            );
        }
        assert!(blocks * 8 * CH <= px.len());
        // SAFETY: loads from the 16-byte and 8-lane arrays.
        let (lo_mask, hi_mask, table_off): ([__m128i; 3], [__m128i; 3], [__m256i; 3]) = unsafe {
            (
                std::array::from_fn(|j| _mm_loadu_si128(walk.lo[j].as_ptr() as *const __m128i)),
                std::array::from_fn(|j| _mm_loadu_si128(walk.hi[j].as_ptr() as *const __m128i)),
                [
                    _mm256_loadu_si256(walk.off[0].as_ptr() as *const __m256i),
                    _mm256_loadu_si256(walk.off[1].as_ptr() as *const __m256i),
                    _mm256_loadu_si256(walk.off[2].as_ptr() as *const __m256i),
                ],
            )
        };
        let tables = lut.tables.as_ptr() as *const i32;
        let out = tensor.as_mut_ptr();
        for b in 0..blocks {
            // SAFETY: the block's bytes [b*8*CH, (b+1)*8*CH) are inside px
            // (asserted), both loads lie in them (CH = 1: 8 bytes).
            let (lo, hi) = unsafe {
                let base = px.as_ptr().add(b * 8 * CH);
                if CH == 1 {
                    (_mm_loadl_epi64(base as *const __m128i), _mm_setzero_si128())
                } else {
                    (
                        _mm_loadu_si128(base as *const __m128i),
                        _mm_loadu_si128(base.add(hi_at) as *const __m128i),
                    )
                }
            };
            for j in 0..3 {
                let bytes = if CH == 1 {
                    _mm_shuffle_epi8(lo, lo_mask[j])
                } else {
                    _mm_or_si128(
                        _mm_shuffle_epi8(lo, lo_mask[j]),
                        _mm_shuffle_epi8(hi, hi_mask[j]),
                    )
                };
                let idx = _mm256_add_epi32(_mm256_cvtepu8_epi32(bytes), table_off[j]);
                // SAFETY: idx < 3 * 256 entries of 4 bytes; the store is
                // inside the tensor (asserted above).
                unsafe {
                    let v = _mm256_i32gather_epi32::<4>(tables, idx);
                    let d = out.add((start[j] + b * step) * E);
                    match E {
                        4 => _mm256_storeu_si256(d as *mut __m256i, v),
                        // Entries are zero-extended elements: unsigned
                        // saturating packs keep them.
                        2 => {
                            let p = _mm256_packus_epi32(v, v);
                            let p = _mm256_permute4x64_epi64::<0b1000>(p);
                            _mm_storeu_si128(d as *mut __m128i, _mm256_castsi256_si128(p));
                        }
                        _ => {
                            let p = _mm256_packus_epi32(v, v);
                            let p = _mm256_packus_epi16(p, p);
                            let p = _mm256_permutevar8x32_epi32(
                                p,
                                _mm256_setr_epi32(0, 4, 0, 4, 0, 4, 0, 4),
                            );
                            _mm_storel_epi64(d as *mut __m128i, _mm256_castsi256_si128(p));
                        }
                    }
                }
            }
        }
        blocks * 8
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transform::normalize::ChannelOrder;
    use crate::wire::Rect;

    fn plan(dtype: DType, layout: Layout, order: ChannelOrder) -> NormalizePlan {
        NormalizePlan {
            dtype,
            layout,
            order,
            mean: [0.485, 0.456, 0.406],
            std: [0.229, 0.224, 0.225],
            scale: 0.0186,
            zero_point: -14,
            width: 7,
            height: 3,
        }
    }

    /// Every dtype, layout, order and pixel format: the table walk writes
    /// exactly what the per-element formula writes.
    #[test]
    fn lut_equals_formula_everywhere() {
        let mut rng = fastrand::Rng::with_seed(1);
        for dtype in [DType::Fp32, DType::Fp16, DType::Uint8, DType::Int8] {
            for layout in [Layout::Nchw, Layout::Nhwc] {
                for order in [ChannelOrder::Rgb, ChannelOrder::Bgr] {
                    let p = plan(dtype, layout, order);
                    let lut = NormalizeLut::new(&p);
                    for format in PixelFormat::ALL {
                        let ch = format.channels();
                        let px: Vec<u8> = (0..7 * 3 * ch).map(|_| rng.u8(..)).collect();
                        let mut want = vec![0u8; p.tensor_len()];
                        p.write_region(&px, format, Rect::new(0, 0, 7, 3), &mut want);
                        let mut got = vec![0u8; p.tensor_len()];
                        // Row segments of uneven widths.
                        for y in 0..3u32 {
                            let row = &px[(y as usize * 7) * ch..(y as usize + 1) * 7 * ch];
                            lut.write_row(&row[..2 * ch], format, y, 0, &mut got);
                            lut.write_row(&row[2 * ch..], format, y, 2, &mut got);
                        }
                        assert_eq!(got, want, "{dtype:?} {layout:?} {order:?} {format:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn fp32_entries_are_the_spec_formula() {
        let p = plan(DType::Fp32, Layout::Nchw, ChannelOrder::Rgb);
        let lut = NormalizeLut::new(&p);
        for c in 0..3 {
            for v in 0..=255u8 {
                let x = (v as f32 / 255.0 - p.mean[c]) / p.std[c];
                assert_eq!(lut.entry(c, v), x.to_le_bytes());
            }
        }
    }

    /// The dispatched walk (AVX2 blocks of 8, the portable tail), the
    /// AVX2 walk alone and the portable walk write the same tensor, for every dtype, layout, order
    /// and pixel format, on rows long enough for several blocks of each
    /// and segments starting anywhere.
    #[test]
    fn dispatched_equals_portable_everywhere() {
        const W: usize = 150;
        let mut rng = fastrand::Rng::with_seed(7);
        for dtype in [DType::Fp32, DType::Fp16, DType::Uint8, DType::Int8] {
            for layout in [Layout::Nchw, Layout::Nhwc] {
                for order in [ChannelOrder::Rgb, ChannelOrder::Bgr] {
                    let mut p = plan(dtype, layout, order);
                    (p.width, p.height) = (W as u32, 4);
                    let lut = NormalizeLut::new(&p);
                    for format in PixelFormat::ALL {
                        let ch = format.channels();
                        let px: Vec<u8> = (0..W * 4 * ch).map(|_| rng.u8(..)).collect();
                        let mut want = vec![0u8; p.tensor_len()];
                        p.write_region(&px, format, Rect::new(0, 0, W as u32, 4), &mut want);
                        let mut got = vec![0u8; p.tensor_len()];
                        let mut port = got.clone();
                        let mut gather = got.clone();
                        for y in 0..4u32 {
                            let row = &px[(y as usize * W) * ch..(y as usize + 1) * W * ch];
                            let cut = [0, 3 + y as usize, 80, W];
                            for s in cut.windows(2) {
                                let seg = &row[s[0] * ch..s[1] * ch];
                                let x0 = s[0] as u32;
                                lut.write_row(seg, format, y, x0, &mut got);
                                lut.write_row_portable(seg, format, y, x0, &mut port);
                                #[cfg(target_arch = "x86_64")]
                                if std::is_x86_feature_detected!("avx2") {
                                    let walk = &lut.walks[format as usize];
                                    // SAFETY: the CPU supports AVX2.
                                    let done = unsafe {
                                        avx2::blocks(&lut, walk, seg, ch, y, x0, &mut gather)
                                    };
                                    lut.write_row_portable(
                                        &seg[done * ch..],
                                        format,
                                        y,
                                        x0 + done as u32,
                                        &mut gather,
                                    );
                                } else {
                                    lut.write_row_portable(seg, format, y, x0, &mut gather);
                                }
                                #[cfg(not(target_arch = "x86_64"))]
                                lut.write_row_portable(seg, format, y, x0, &mut gather);
                            }
                        }
                        let what = format!("{dtype:?} {layout:?} {order:?} {format:?}");
                        assert_eq!(port, want, "portable {what}");
                        assert_eq!(gather, want, "AVX2 {what}");
                        assert_eq!(got, want, "dispatched {what}");
                    }
                }
            }
        }
    }
}
