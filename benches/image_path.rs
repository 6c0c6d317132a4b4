//! The NIC-style image path against the libraries a user would call, in
//! one run (criterion; `make bench`). Single thread, RGB8 in, FP32 NCHW
//! 224x224 out (ImageNet mean/std):
//!
//! * tensorwire fused resize + LUT (antialias on = Pillow-exact, off =
//!   OpenCV-exact), whole image;
//! * tensorwire streaming: the same, rows fed one datagram at a time;
//! * `image` crate Triangle resize + float normalize;
//! * `fast_image_resize` Convolution(Bilinear) (antialiased) and
//!   Interpolation(Bilinear) + float normalize;
//! * LUT normalization alone against a memcpy of the same output size.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use fast_image_resize as fir;
use std::hint::black_box;
use std::sync::Arc;
use tensorwire::client::{image_rows, RawImage};
use tensorwire::config::Config;
use tensorwire::pipeline::Plan;
use tensorwire::transform::image::ImagePlan;
use tensorwire::transform::reference;
use tensorwire::transform::resize::Resampling;
use tensorwire::transform::stream::RowStream;
use tensorwire::wire::{ImageFragment, ImageRepr, Kind, Packet, PixelFormat, Rect};

fn source(w: u32, h: u32) -> Vec<u8> {
    let img = image::open(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/testdata/images/coffee.png"
    ))
    .unwrap();
    img.resize_exact(w, h, image::imageops::FilterType::Triangle)
        .to_rgb8()
        .into_raw()
}

fn plans() -> (Arc<ImagePlan>, Arc<ImagePlan>) {
    let pipelines = Config::builtin().build_pipelines().unwrap();
    let Plan::Image(aa) = pipelines.by_id(1).unwrap().plan.clone() else {
        unreachable!()
    };
    let mut lin = (*aa).clone();
    lin.resampling = Resampling::Linear;
    (aa, Arc::new(lin))
}

fn fir_resize(
    src: &[u8],
    w: u32,
    h: u32,
    alg: fir::ResizeAlg,
    resizer: &mut fir::Resizer,
    dst: &mut fir::images::Image<'_>,
) {
    let src = fir::images::ImageRef::new(w, h, src, fir::PixelType::U8x3).unwrap();
    resizer
        .resize(&src, dst, &fir::ResizeOptions::new().resize_alg(alg))
        .unwrap();
}

fn image_path(c: &mut Criterion) {
    let (aa, lin) = plans();
    for (w, h) in [(640u32, 480u32), (1920, 1080)] {
        let data = source(w, h);
        let mut g = c.benchmark_group(format!("{w}x{h} RGB -> 224x224 FP32 NCHW"));
        g.throughput(Throughput::Elements(1));
        g.sample_size(30);
        for (name, plan) in [("antialias", &aa), ("no antialias", &lin)] {
            g.bench_function(BenchmarkId::new("tensorwire whole", name), |b| {
                b.iter(|| black_box(plan.run_whole(black_box(&data), w, h, PixelFormat::Rgb8)))
            });
            // Streaming: the fragments a client sends, fed one at a time.
            let raw = RawImage {
                width: w,
                height: h,
                format: PixelFormat::Rgb8,
                data: data.clone(),
            };
            let frags: Vec<(Rect, Vec<u8>)> = image_rows(&raw, 1, 1, 1472)
                .iter()
                .map(|d| {
                    let p = Packet::new_checked(&d[..]).unwrap();
                    let f = ImageFragment::new_checked(p.body()).unwrap();
                    let r = ImageRepr::parse(Kind::ImageRows, &f).unwrap();
                    (r.rect, f.pixels().to_vec())
                })
                .collect();
            let rp = Arc::new(plan.resize_plan(w, h));
            g.bench_function(BenchmarkId::new("tensorwire streaming rows", name), |b| {
                b.iter(|| {
                    let mut s = RowStream::new(plan.clone(), rp.clone(), w, h, PixelFormat::Rgb8);
                    for (r, px) in &frags {
                        s.add(*r, px).unwrap();
                    }
                    black_box(s.finish().unwrap())
                })
            });
        }
        g.bench_function("image crate Triangle + normalize", |b| {
            b.iter(|| {
                black_box(reference::image_tensor(
                    &aa.normalize,
                    black_box(&data),
                    w,
                    h,
                    PixelFormat::Rgb8,
                ))
            })
        });
        let mut resizer = fir::Resizer::new();
        let mut dst = fir::images::Image::new(224, 224, fir::PixelType::U8x3);
        for (name, alg) in [
            (
                "fast_image_resize Convolution(Bilinear) + normalize",
                fir::ResizeAlg::Convolution(fir::FilterType::Bilinear),
            ),
            (
                "fast_image_resize Interpolation(Bilinear) + normalize",
                fir::ResizeAlg::Interpolation(fir::FilterType::Bilinear),
            ),
        ] {
            g.bench_function(name, |b| {
                b.iter(|| {
                    fir_resize(black_box(&data), w, h, alg, &mut resizer, &mut dst);
                    let mut t = vec![0u8; aa.normalize.tensor_len()];
                    aa.normalize.write_region(
                        dst.buffer(),
                        PixelFormat::Rgb8,
                        Rect::new(0, 0, 224, 224),
                        &mut t,
                    );
                    black_box(t)
                })
            });
        }
        g.finish();
    }
}

fn lut(c: &mut Criterion) {
    let (aa, _) = plans();
    let resized: Vec<u8> = (0..224 * 224 * 3).map(|i| (i * 7 % 256) as u8).collect();
    let mut tensor = vec![0u8; aa.normalize.tensor_len()];
    let mut g = c.benchmark_group("normalize 224x224x3 -> FP32 NCHW");
    g.throughput(Throughput::Bytes(tensor.len() as u64));
    g.bench_function("LUT rows", |b| {
        b.iter(|| {
            for (y, row) in resized.chunks_exact(224 * 3).enumerate() {
                aa.lut
                    .write_row(row, PixelFormat::Rgb8, y as u32, 0, &mut tensor);
            }
            black_box(&tensor);
        })
    });
    g.bench_function("float formula per element", |b| {
        b.iter(|| {
            aa.normalize.write_region(
                &resized,
                PixelFormat::Rgb8,
                Rect::new(0, 0, 224, 224),
                &mut tensor,
            );
            black_box(&tensor);
        })
    });
    let src = vec![1u8; tensor.len()];
    g.bench_function("memcpy of the output size", |b| {
        b.iter(|| {
            tensor.copy_from_slice(black_box(&src));
            black_box(&tensor);
        })
    });
    g.finish();
}

criterion_group!(benches, image_path, lut);
criterion_main!(benches);
