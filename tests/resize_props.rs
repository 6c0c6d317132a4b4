//! Properties of the exact resize over many sizes (1xN, Nx1, odd, primes,
//! up- and downscale, extreme ratios): within 1 of the float64 result of
//! the spec's formulas; within 1 of the `image` crate (antialias); tiles
//! computed alone equal the whole image bit for bit.

use proptest::prelude::*;
use tensorwire::transform::reference::{exact_resize, image_crate_resize};
use tensorwire::transform::resize::{
    resize_image, resize_region, Resampling, ResizePlan, SourceView,
};
use tensorwire::wire::{PixelFormat, Rect};

fn pixels(n: usize, seed: u64, smooth: bool) -> Vec<u8> {
    let mut r = fastrand::Rng::with_seed(seed);
    if smooth {
        // Photo-like: a random walk, so neighbours are close.
        let mut v = 128i32;
        (0..n)
            .map(|_| {
                v = (v + r.i32(-12..=12)).clamp(0, 255);
                v as u8
            })
            .collect()
    } else {
        (0..n).map(|_| r.u8(..)).collect()
    }
}

fn mode() -> impl Strategy<Value = Resampling> {
    prop_oneof![Just(Resampling::Antialias), Just(Resampling::Linear)]
}

fn size() -> impl Strategy<Value = u32> {
    prop_oneof![1..=4u32, 5..=64u32, Just(97u32), Just(224u32), 200..=700u32]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 120, ..ProptestConfig::default() })]

    #[test]
    fn within_one_of_exact_float64(mode in mode(), iw in size(), ih in 1..=40u32, ow in size(), oh in 1..=40u32,
                                   ch in prop_oneof![Just(1usize), Just(3), Just(4)], seed: u64, smooth: bool) {
        let data = pixels((iw * ih) as usize * ch, seed, smooth);
        let plan = ResizePlan::new(mode, iw, ih, ow, oh);
        let ours = resize_image(&plan, &data, ch, &mut Vec::new());
        let exact = exact_resize(mode, &data, iw, ih, ch, ow, oh);
        // 1e-9: float64 noise in the reference itself (an exact 54 computed as 53.99999999999999).
        for (i, (&a, &e)) in ours.iter().zip(&exact).enumerate() {
            prop_assert!((a as f64 - e).abs() <= 1.0 + 1e-9, "{mode:?} {iw}x{ih}->{ow}x{oh} ch{ch} at {i}: {a} vs {e}");
        }
    }

    #[test]
    fn antialias_within_one_of_image_crate(iw in size(), ih in 1..=40u32, ow in size(), oh in 1..=40u32, seed: u64) {
        let data = pixels((iw * ih * 3) as usize, seed, true);
        let plan = ResizePlan::new(Resampling::Antialias, iw, ih, ow, oh);
        let ours = resize_image(&plan, &data, 3, &mut Vec::new());
        let theirs = image_crate_resize(&data, iw, ih, PixelFormat::Rgb8, ow, oh);
        for (i, (&a, &b)) in ours.iter().zip(&theirs).enumerate() {
            prop_assert!(a.abs_diff(b) <= 1, "{iw}x{ih}->{ow}x{oh} at {i}: {a} vs {b}");
        }
    }

    #[test]
    fn tiles_equal_whole_image(mode in mode(), iw in 1..=300u32, ih in 1..=200u32, ow in 1..=120u32, oh in 1..=90u32,
                               nx in 1..=6u32, ny in 1..=6u32, seed: u64) {
        let ch = 3;
        let data = pixels((iw * ih) as usize * ch, seed, false);
        let plan = ResizePlan::new(mode, iw, ih, ow, oh);
        let whole = resize_image(&plan, &data, ch, &mut Vec::new());
        let (nx, ny) = (nx.min(ow), ny.min(oh));
        let mut scratch = Vec::new();
        for j in 0..ny {
            for i in 0..nx {
                let out = Rect::new(i * ow / nx, j * oh / ny, (i + 1) * ow / nx - i * ow / nx, (j + 1) * oh / ny - j * oh / ny);
                let input = plan.input_rect_for(out);
                let mut tile_px = Vec::new();
                for y in input.y..input.bottom() {
                    let s = ((y * iw + input.x) as usize) * ch;
                    tile_px.extend_from_slice(&data[s..s + input.w as usize * ch]);
                }
                let mut got = vec![0u8; out.area() as usize * ch];
                resize_region(&plan, &SourceView { data: &tile_px, rect: input, channels: ch }, out, &mut got, &mut scratch).unwrap();
                for y in 0..out.h {
                    let w0 = (((out.y + y) * ow + out.x) as usize) * ch;
                    let g0 = (y * out.w) as usize * ch;
                    prop_assert_eq!(&got[g0..g0 + out.w as usize * ch], &whole[w0..w0 + out.w as usize * ch]);
                }
            }
        }
    }
}

#[test]
fn extreme_ratios() {
    for mode in [Resampling::Antialias, Resampling::Linear] {
        for (iw, ih, ow, oh) in [
            (4000, 1, 1, 1),
            (1, 4000, 1, 3),
            (1, 1, 500, 2),
            (3, 2, 1000, 1),
            (65535, 1, 7, 1),
        ] {
            let data = pixels((iw * ih) as usize, 3, false);
            let plan = ResizePlan::new(mode, iw, ih, ow, oh);
            let ours = resize_image(&plan, &data, 1, &mut Vec::new());
            let exact = exact_resize(mode, &data, iw, ih, 1, ow, oh);
            for (a, e) in ours.iter().zip(&exact) {
                assert!(
                    (*a as f64 - e).abs() <= 1.0 + 1e-9,
                    "{mode:?} {iw}x{ih}->{ow}x{oh}: {a} vs {e}"
                );
            }
        }
    }
}
