//! Baselines for the serving-path transforms, in one run: tensorwire's
//! exact fixed-point resize and normalize against the `image` crate's
//! resize with the same normalization, and tokenization through
//! `tokenizers`. Ratios, not absolute times, are what to compare.
//! Run with `make bench`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use tensorwire::client::load_image;
use tensorwire::config::Config;
use tensorwire::pipeline::Plan;
use tensorwire::transform::reference;
use tensorwire::transform::resize::Resampling;

fn images(c: &mut Criterion) {
    let cfg = Config::builtin();
    let pipelines = cfg.build_pipelines().unwrap();
    let Plan::Image(plan) = pipelines.by_id(1).unwrap().plan.clone() else {
        unreachable!()
    };
    let img = load_image(
        concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/images/rocket.jpg").as_ref(),
        None,
    )
    .unwrap();
    let mut g = c.benchmark_group("image 640x427 -> 224x224 FP32 NCHW");
    g.throughput(Throughput::Elements(1));
    for (label, mode) in [
        ("tensorwire antialias (Pillow exact)", Resampling::Antialias),
        ("tensorwire no antialias (OpenCV exact)", Resampling::Linear),
    ] {
        let mut p = (*plan).clone();
        p.resampling = mode;
        g.bench_function(label, |b| {
            b.iter(|| {
                black_box(p.run_whole(black_box(&img.data), img.width, img.height, img.format))
            })
        });
    }
    g.bench_function("image crate Triangle + normalize", |b| {
        b.iter(|| {
            black_box(reference::image_tensor(
                &plan.normalize,
                black_box(&img.data),
                img.width,
                img.height,
                img.format,
            ))
        })
    });
    g.finish();
}

fn text(c: &mut Criterion) {
    let cfg = Config::builtin();
    let pipelines = cfg.build_pipelines().unwrap();
    let Plan::Text(plan) = pipelines.by_id(2).unwrap().plan.clone() else {
        unreachable!()
    };
    let body = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/testdata/text/apache-2.0.txt"
    ))
    .unwrap();
    let mut g = c.benchmark_group("tokenize apache-2.0.txt");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("tokenizers crate (whole text)", |b| {
        b.iter(|| black_box(plan.encode(black_box(&body)).unwrap()))
    });
    g.finish();
}

criterion_group!(benches, images, text);
criterion_main!(benches);
