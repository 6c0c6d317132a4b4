//! SVG plots (plotters' SVG backend: no fonts or system libraries; text
//! is left to the SVG viewer): p50/p99 latency against offered load per
//! path, and each run's HDR percentile distribution.

use super::report::{Report, Run};
use anyhow::{anyhow, Result};
use plotters::prelude::*;
use std::collections::BTreeMap;
use std::path::Path;

const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

fn err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("plot: {e:?}")
}

/// The load of a run on the x axis: offered rps, else concurrency.
fn load_of(r: &Run) -> f64 {
    r.offered_rps.unwrap_or(r.concurrency as f64)
}

/// Writes `<name>-latency.svg` and `<name>-hdr.svg` into `dir`.
pub fn write_all(rep: &Report, dir: &Path, name: &str) -> Result<()> {
    latency_vs_load(rep, &dir.join(format!("{name}-latency.svg")), name)?;
    hdr(rep, &dir.join(format!("{name}-hdr.svg")), name)
}

/// Median over rounds of (p50, p99) per label and load, ms.
fn by_label(runs: &[Run]) -> BTreeMap<String, Vec<(f64, f64, f64)>> {
    let mut m: BTreeMap<String, BTreeMap<u64, Vec<(f64, f64)>>> = BTreeMap::new();
    for r in runs {
        m.entry(r.label.clone())
            .or_default()
            .entry((load_of(r) * 1000.0) as u64)
            .or_default()
            .push((
                r.latency_us.p50 as f64 / 1000.0,
                r.latency_us.p99 as f64 / 1000.0,
            ));
    }
    m.into_iter()
        .map(|(label, loads)| {
            let pts = loads
                .into_iter()
                .map(|(x, mut v)| {
                    v.sort_by(|a, b| a.1.total_cmp(&b.1));
                    let (p50, p99) = v[v.len() / 2];
                    (x as f64 / 1000.0, p50, p99)
                })
                .collect();
            (label, pts)
        })
        .collect()
}

pub fn latency_vs_load(rep: &Report, path: &Path, name: &str) -> Result<()> {
    let series = by_label(&rep.runs);
    let xmax = rep.runs.iter().map(load_of).fold(1.0, f64::max) * 1.05;
    let ymax = series.values().flatten().map(|p| p.2).fold(1.0, f64::max) * 1.1;
    let open = rep.runs.iter().any(|r| r.offered_rps.is_some());
    let root = SVGBackend::new(path, (900, 540)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("{name}: latency against offered load (solid p99, dashed p50)"),
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..xmax, 0.0..ymax)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc(if open {
            "offered load (requests/s)"
        } else {
            "concurrency"
        })
        .y_desc("latency (ms)")
        .draw()
        .map_err(err)?;
    for (i, (label, pts)) in series.iter().enumerate() {
        let c = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(
                pts.iter().map(|p| (p.0, p.2)),
                c.stroke_width(2),
            ))
            .map_err(err)?
            .label(format!("{label} p99"))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
        chart
            .draw_series(pts.iter().map(|p| Circle::new((p.0, p.2), 3, c.filled())))
            .map_err(err)?;
        chart
            .draw_series(DashedLineSeries::new(
                pts.iter().map(|p| (p.0, p.1)),
                6,
                4,
                c.stroke_width(1),
            ))
            .map_err(err)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

/// x = -log10(1 - percentile/100): 1 = 90 %, 2 = 99 %, 3 = 99.9 %.
fn nines(p: f64) -> f64 {
    -(1.0 - (p / 100.0).min(0.99999)).log10()
}

pub fn hdr(rep: &Report, path: &Path, name: &str) -> Result<()> {
    // One line per label: the run at the highest load (first round).
    let mut pick: BTreeMap<&str, &Run> = BTreeMap::new();
    for r in &rep.runs {
        let e = pick.entry(&r.label).or_insert(r);
        if load_of(r) > load_of(e) {
            *e = r;
        }
    }
    let ymax = pick
        .values()
        .flat_map(|r| r.hdr.iter().map(|p| p.1 as f64 / 1000.0))
        .fold(1.0, f64::max)
        * 1.1;
    let root = SVGBackend::new(path, (900, 540)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("{name}: latency by percentile (HDR), highest load per path"),
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..5.0, 0.0..ymax)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (ms)")
        .x_labels(6)
        .x_label_formatter(&|x: &f64| match x.round() as i64 {
            0 => "0%".into(),
            1 => "90%".into(),
            2 => "99%".into(),
            3 => "99.9%".into(),
            4 => "99.99%".into(),
            _ => "99.999%".into(),
        })
        .draw()
        .map_err(err)?;
    for (i, (label, r)) in pick.iter().enumerate() {
        let c = COLORS[i % COLORS.len()];
        let load = match r.offered_rps {
            Some(x) => format!("{x} rps"),
            None => format!("c={}", r.concurrency),
        };
        chart
            .draw_series(LineSeries::new(
                r.hdr.iter().map(|&(p, us)| (nines(p), us as f64 / 1000.0)),
                c.stroke_width(2),
            ))
            .map_err(err)?
            .label(format!("{label} ({load})"))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}
