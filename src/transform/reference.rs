//! Independent oracles for tests and validation; never on the serving
//! path.
//!
//! * [`image_crate_resize`]: the `image` crate's Triangle resize (f32).
//! * [`exact_resize`]: the spec's resampling formulas in float64 with no
//!   intermediate rounding.
//! * [`image_tensor`]: `image` crate resize, then the spec's normalization.
//! * [`whole_text_tensors`]: the `tokenizers` crate on the whole text.

use super::normalize::NormalizePlan;
use super::resize::Resampling;
use super::text::TextPlan;
use super::Tensor;
use crate::wire::PixelFormat;
use image::imageops::{resize, FilterType};
use image::{ImageBuffer, Luma, Rgb, Rgba};

/// Resizes with the `image` crate's Triangle filter. Pixels keep their
/// source channel layout.
pub fn image_crate_resize(
    data: &[u8],
    width: u32,
    height: u32,
    format: PixelFormat,
    out_w: u32,
    out_h: u32,
) -> Vec<u8> {
    let v = data.to_vec();
    match format.channels() {
        1 => {
            let img: ImageBuffer<Luma<u8>, _> =
                ImageBuffer::from_raw(width, height, v).expect("size");
            resize(&img, out_w, out_h, FilterType::Triangle).into_raw()
        }
        3 => {
            let img: ImageBuffer<Rgb<u8>, _> =
                ImageBuffer::from_raw(width, height, v).expect("size");
            resize(&img, out_w, out_h, FilterType::Triangle).into_raw()
        }
        _ => {
            let img: ImageBuffer<Rgba<u8>, _> =
                ImageBuffer::from_raw(width, height, v).expect("size");
            resize(&img, out_w, out_h, FilterType::Triangle).into_raw()
        }
    }
}

/// Real-valued weights of one axis per the spec (float64): for each
/// output index, (first input index, weights).
pub fn exact_axis(mode: Resampling, in_size: u32, out_size: u32) -> Vec<(u32, Vec<f64>)> {
    let scale = in_size as f64 / out_size as f64;
    (0..out_size)
        .map(|o| {
            let center = (o as f64 + 0.5) * scale;
            match mode {
                Resampling::Antialias => {
                    let support = scale.max(1.0);
                    let lo = ((center - support + 0.5).trunc() as i64).max(0) as u32;
                    let hi = ((center + support + 0.5).trunc() as i64).min(in_size as i64) as u32;
                    let mut w: Vec<f64> = (lo..hi)
                        .map(|i| (1.0 - ((i as f64 - center + 0.5) / support).abs()).max(0.0))
                        .collect();
                    let s: f64 = w.iter().sum();
                    if s != 0.0 {
                        w.iter_mut().for_each(|x| *x /= s);
                    }
                    (lo, w)
                }
                Resampling::Linear => {
                    let src = center - 0.5;
                    let mut i0 = src.floor() as i64;
                    let mut f = src - i0 as f64;
                    if i0 < 0 {
                        i0 = 0;
                        f = 0.0;
                    }
                    if i0 >= in_size as i64 - 1 {
                        i0 = in_size as i64 - 1;
                        f = 0.0;
                    }
                    if i0 < in_size as i64 - 1 {
                        (i0 as u32, vec![1.0 - f, f])
                    } else {
                        (i0 as u32, vec![1.0 - f])
                    }
                }
            }
        })
        .collect()
}

/// The exact separable result in float64 (no intermediate rounding).
pub fn exact_resize(
    mode: Resampling,
    data: &[u8],
    width: u32,
    height: u32,
    channels: usize,
    out_w: u32,
    out_h: u32,
) -> Vec<f64> {
    let ax = exact_axis(mode, width, out_w);
    let ay = exact_axis(mode, height, out_h);
    let (w, ow) = (width as usize, out_w as usize);
    let mut h = vec![0f64; height as usize * ow * channels];
    for y in 0..height as usize {
        for (ox, (lo, ws)) in ax.iter().enumerate() {
            for c in 0..channels {
                h[(y * ow + ox) * channels + c] = ws
                    .iter()
                    .enumerate()
                    .map(|(k, wk)| data[(y * w + *lo as usize + k) * channels + c] as f64 * wk)
                    .sum();
            }
        }
    }
    let mut out = vec![0f64; out_h as usize * ow * channels];
    for (oy, (lo, ws)) in ay.iter().enumerate() {
        for i in 0..ow * channels {
            out[oy * ow * channels + i] = ws
                .iter()
                .enumerate()
                .map(|(k, wk)| h[(*lo as usize + k) * ow * channels + i] * wk)
                .sum();
        }
    }
    out
}

/// `image` crate resize, then the spec's normalization, into a tensor.
pub fn image_tensor(
    norm: &NormalizePlan,
    data: &[u8],
    width: u32,
    height: u32,
    format: PixelFormat,
) -> Vec<u8> {
    let resized = image_crate_resize(data, width, height, format, norm.width, norm.height);
    let mut t = vec![0u8; norm.tensor_len()];
    let rect = crate::wire::Rect::new(0, 0, norm.width, norm.height);
    norm.write_region(&resized, format, rect, &mut t);
    t
}

/// The text pipeline's tensors from the whole text, via `tokenizers`.
pub fn whole_text_tensors(plan: &TextPlan, text: &str) -> Result<Vec<Tensor>, String> {
    plan.tensors(text)
}
