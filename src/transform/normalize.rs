//! Per-channel normalization of resized uint8 pixels into the output
//! tensor's element type and layout (spec "Resampling", last paragraph).

use super::DType;
use crate::wire::{PixelFormat, Rect};
use half::f16;

/// Memory layout of an image tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Layout {
    #[serde(rename = "NCHW")]
    Nchw,
    #[serde(rename = "NHWC")]
    Nhwc,
}

impl Layout {
    pub fn name(self) -> &'static str {
        match self {
            Layout::Nchw => "NCHW",
            Layout::Nhwc => "NHWC",
        }
    }
}

/// Channel order of the output tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum ChannelOrder {
    #[serde(rename = "RGB")]
    Rgb,
    #[serde(rename = "BGR")]
    Bgr,
}

/// How resized pixels become tensor elements.
#[derive(Debug, Clone, PartialEq)]
pub struct NormalizePlan {
    pub dtype: DType,
    pub layout: Layout,
    pub order: ChannelOrder,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    /// INT8 quantization (ONNX QuantizeLinear).
    pub scale: f32,
    pub zero_point: i32,
    /// Output width and height (the tensor's H and W).
    pub width: u32,
    pub height: u32,
}

impl NormalizePlan {
    /// Bytes of the whole output tensor ([1, 3, H, W] or [1, H, W, 3]).
    pub fn tensor_len(&self) -> usize {
        3 * self.width as usize * self.height as usize * self.dtype.size()
    }

    pub fn shape(&self) -> Vec<u64> {
        let (h, w) = (self.height as u64, self.width as u64);
        match self.layout {
            Layout::Nchw => vec![1, 3, h, w],
            Layout::Nhwc => vec![1, h, w, 3],
        }
    }

    /// Source channel feeding each output channel.
    pub fn channel_map(&self, format: PixelFormat) -> [usize; 3] {
        let [r, g, b] = format.rgb_indices();
        match self.order {
            ChannelOrder::Rgb => [r, g, b],
            ChannelOrder::Bgr => [b, g, r],
        }
    }

    /// The FP32 value of uint8 `v` in output channel `c`:
    /// `(v / 255.0 - mean[c]) / std[c]` in float32, in that order.
    #[inline]
    pub fn fp32(&self, v: u8, c: usize) -> f32 {
        (v as f32 / 255.0 - self.mean[c]) / self.std[c]
    }

    /// Writes one element's little-endian bytes into `out`.
    #[inline]
    pub fn write_element(&self, v: u8, c: usize, out: &mut [u8]) {
        match self.dtype {
            DType::Fp32 => out.copy_from_slice(&self.fp32(v, c).to_le_bytes()),
            DType::Fp16 => out.copy_from_slice(&f16::from_f32(self.fp32(v, c)).to_le_bytes()),
            DType::Uint8 => out[0] = v,
            DType::Int8 => {
                out[0] = quantize_linear(self.fp32(v, c), self.scale, self.zero_point) as u8
            }
            DType::Int64 | DType::Int32 => unreachable!("image dtypes are checked by config"),
        }
    }

    /// Writes the resized rectangle `rect` (pixels of `format`, row-major)
    /// into its place in the whole output tensor.
    pub fn write_region(&self, resized: &[u8], format: PixelFormat, rect: Rect, tensor: &mut [u8]) {
        let ch = format.channels();
        let map = self.channel_map(format);
        let es = self.dtype.size();
        let (w, h) = (self.width as usize, self.height as usize);
        debug_assert_eq!(tensor.len(), self.tensor_len());
        debug_assert_eq!(resized.len(), rect.area() as usize * ch);
        for ry in 0..rect.h as usize {
            let y = rect.y as usize + ry;
            for rx in 0..rect.w as usize {
                let x = rect.x as usize + rx;
                let px = &resized[(ry * rect.w as usize + rx) * ch..][..ch];
                for (c, &sc) in map.iter().enumerate() {
                    let idx = match self.layout {
                        Layout::Nchw => (c * h + y) * w + x,
                        Layout::Nhwc => (y * w + x) * 3 + c,
                    };
                    self.write_element(px[sc], c, &mut tensor[idx * es..(idx + 1) * es]);
                }
            }
        }
    }
}

/// ONNX QuantizeLinear to int8: `clamp(round_half_even(x / scale) + zp)`,
/// the division in float32.
#[inline]
pub fn quantize_linear(x: f32, scale: f32, zero_point: i32) -> i8 {
    let q = (x / scale).round_ties_even() as i64 + zero_point as i64;
    q.clamp(-128, 127) as i8
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(dtype: DType, layout: Layout) -> NormalizePlan {
        NormalizePlan {
            dtype,
            layout,
            order: ChannelOrder::Rgb,
            mean: [0.485, 0.456, 0.406],
            std: [0.229, 0.224, 0.225],
            scale: 0.02,
            zero_point: 3,
            width: 2,
            height: 1,
        }
    }

    #[test]
    fn fp32_matches_formula_bit_for_bit() {
        let p = plan(DType::Fp32, Layout::Nchw);
        // Computed independently in f64 then rounded can differ by an ulp;
        // the spec fixes float32 arithmetic in this order.
        let x = (200f32 / 255.0 - 0.485f32) / 0.229f32;
        assert_eq!(p.fp32(200, 0).to_bits(), x.to_bits());
        assert!((p.fp32(0, 0) as f64 - (-0.485 / 0.229)).abs() < 1e-6);
    }

    #[test]
    fn layouts_and_bgr_sources() {
        // Two BGR pixels: (b,g,r) = (1,2,3) and (4,5,6).
        let px = [1u8, 2, 3, 4, 5, 6];
        let mut p = plan(DType::Uint8, Layout::Nchw);
        let mut t = vec![0u8; p.tensor_len()];
        p.write_region(&px, PixelFormat::Bgr8, Rect::new(0, 0, 2, 1), &mut t);
        assert_eq!(t, [3, 6, 2, 5, 1, 4]); // R plane, G plane, B plane
        p.layout = Layout::Nhwc;
        p.write_region(&px, PixelFormat::Bgr8, Rect::new(0, 0, 2, 1), &mut t);
        assert_eq!(t, [3, 2, 1, 6, 5, 4]);
        p.order = ChannelOrder::Bgr;
        p.write_region(&px, PixelFormat::Bgr8, Rect::new(0, 0, 2, 1), &mut t);
        assert_eq!(t, [1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn gray_is_replicated_and_alpha_dropped() {
        let mut p = plan(DType::Uint8, Layout::Nhwc);
        let mut t = vec![0u8; p.tensor_len()];
        p.write_region(&[7, 9], PixelFormat::Gray8, Rect::new(0, 0, 2, 1), &mut t);
        assert_eq!(t, [7, 7, 7, 9, 9, 9]);
        p.order = ChannelOrder::Rgb;
        p.write_region(
            &[1, 2, 3, 255, 4, 5, 6, 0],
            PixelFormat::Rgba8,
            Rect::new(0, 0, 2, 1),
            &mut t,
        );
        assert_eq!(t, [1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn fp16_rounds_to_nearest_even() {
        let p = plan(DType::Fp16, Layout::Nchw);
        let mut b = [0u8; 2];
        p.write_element(255, 0, &mut b);
        assert_eq!(f16::from_le_bytes(b), f16::from_f32(p.fp32(255, 0)));
        assert!((f16::from_le_bytes(b).to_f32() - p.fp32(255, 0)).abs() < 2e-3);
    }

    #[test]
    fn int8_quantize_linear() {
        assert_eq!(quantize_linear(0.0, 0.02, 3), 3);
        assert_eq!(quantize_linear(1.25, 0.5, 0), 2); // 2.5 -> 2 (half even)
        assert_eq!(quantize_linear(1.75, 0.5, 0), 4); // 3.5 -> 4
        assert_eq!(quantize_linear(100.0, 0.02, 0), 127);
        assert_eq!(quantize_linear(-100.0, 0.02, 0), -128);
    }
}
