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
        NormalizeLut {
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
    /// output row `y`, columns `x0..x0+n`, into the whole tensor.
    pub fn write_row(&self, px: &[u8], format: PixelFormat, y: u32, x0: u32, tensor: &mut [u8]) {
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
}
