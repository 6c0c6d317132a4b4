//! `tensorwire perf`: latency and throughput of a running proxy, in the
//! tradition of Triton's perf_analyzer and genai-perf.
//!
//! - `engine`: closed loop (`--concurrency`) or open loop
//!   (`--request-rate`, constant or Poisson arrivals; latency from each
//!   request's intended send time), hdrhistograms;
//! - `udp`: the tensorwire target (TWP/1 over UDP, sendmmsg);
//! - `probe`: the proxy's stage histograms (admin /metrics, differenced)
//!   and CPU time from /proc;
//! - `baselines`: the Python baselines against Triton as subprocesses;
//! - `report`: JSON (`tensorwire.perf/1`), CSV, the table; `plot`: SVG.

pub mod baselines;
pub mod engine;
pub mod plot;
pub mod probe;
pub mod report;
pub mod udp;

use anyhow::{bail, Context, Result};
use engine::{Arrivals, Load, Progress, Window};
use report::{Cpu, Percentiles, Report, Run, TargetInfo};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use udp::Input;

/// `tensorwire perf` options.
#[derive(clap::Args, Debug, Clone)]
pub struct PerfArgs {
    /// The proxy's UDP address.
    #[arg(long, default_value = "127.0.0.1:7878")]
    pub server: SocketAddr,
    /// Pipeline id or name (from DESCRIBE).
    #[arg(long, default_value = "1")]
    pub pipeline: String,
    /// Images to send in turn: every .png/.jpg of DIR (decoded once).
    #[arg(long, value_name = "DIR", conflicts_with_all = ["texts", "image_size", "text_bytes"])]
    pub images: Option<PathBuf>,
    /// Texts to send in turn: every file of DIR.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["image_size", "text_bytes"])]
    pub texts: Option<PathBuf>,
    /// A synthetic RGB image (seeded noise) of WxH (default 640x480 for
    /// an image pipeline).
    #[arg(long, value_name = "WxH")]
    pub image_size: Option<String>,
    /// A synthetic text of N bytes (English words; default 1024 for a
    /// text pipeline).
    #[arg(long, value_name = "N")]
    pub text_bytes: Option<usize>,
    /// Closed loop: requests in flight (comma list = a sweep).
    #[arg(long, value_delimiter = ',', conflicts_with = "request_rate")]
    pub concurrency: Vec<usize>,
    /// Open loop: requests per second (comma list = a sweep).
    #[arg(long, value_delimiter = ',')]
    pub request_rate: Vec<f64>,
    /// A sweep: `rate:50,100,200` or `concurrency:1,2,4` (the same as a
    /// comma list given to --request-rate / --concurrency).
    #[arg(long, value_name = "KIND:LIST")]
    pub sweep: Option<String>,
    /// Open loop arrivals.
    #[arg(long, value_enum, default_value_t = Arrivals::Constant)]
    pub arrivals: Arrivals,
    /// Open loop: sender/receiver workers (each its own socket, one
    /// request at a time). Too few and requests wait for a worker: that
    /// wait counts in the latency (not in the service time).
    #[arg(long, default_value_t = 32)]
    pub workers: usize,
    /// Seed of the Poisson arrivals and the synthetic inputs.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Seconds measured per load point.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds of load before the measured window (not recorded).
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// Per-request timeout (ms): no answer by then is error `timeout`.
    #[arg(long, default_value_t = 5000)]
    pub timeout_ms: u64,
    /// The proxy's admin endpoint: scrape /metrics at the window's edges
    /// for the per-stage breakdown.
    #[arg(long, value_name = "ADDR")]
    pub admin: Option<SocketAddr>,
    /// The proxy's pid: its CPU time per request.
    #[arg(long)]
    pub proxy_pid: Option<u32>,
    /// The model server's pid: its (and its children's) CPU time per
    /// request.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Write the JSON report to FILE (`-` = stdout instead of the table).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write one CSV row per run to FILE.
    #[arg(long, value_name = "FILE")]
    pub csv: Option<PathBuf>,
    /// Write SVG plots into DIR (latency against offered load, the HDR
    /// percentile distribution).
    #[arg(long, value_name = "DIR")]
    pub plot: Option<PathBuf>,
    /// A name for the files and plot titles.
    #[arg(long, default_value = "perf")]
    pub name: String,
    /// Also run the Python baselines (bench/baselines) against Triton at
    /// the same load points, interleaved with tensorwire, --rounds times.
    #[arg(long, requires = "triton_url")]
    pub baselines: bool,
    /// Triton's HTTP endpoint for --baselines (host:port).
    #[arg(long, value_name = "HOST:PORT")]
    pub triton_url: Option<String>,
    /// Python with tritonclient (default .venv-triton/bin/python).
    #[arg(long)]
    pub python: Option<PathBuf>,
    /// Rounds of every path at every load point (interleaved).
    #[arg(long, default_value_t = 1)]
    pub rounds: usize,
    /// No progress line.
    #[arg(long)]
    pub quiet: bool,
}

/// The pipeline as DESCRIBE gives it.
struct PipelineInfo {
    id: u16,
    name: String,
    kind: String,
    upstream: Option<String>,
    max_datagram: usize,
}

fn describe(server: SocketAddr, pipeline: &str) -> Result<PipelineInfo> {
    let mut c = crate::client::Client::connect(server)?;
    c.timeout = Duration::from_secs(3);
    let d = c
        .describe()
        .with_context(|| format!("DESCRIBE {server}: is a proxy running there?"))?;
    let max_datagram = d["max_datagram"].as_u64().unwrap_or(1472) as usize;
    for p in d["pipelines"].as_array().into_iter().flatten() {
        let id = p["id"].as_u64().unwrap_or(0);
        let name = p["name"].as_str().unwrap_or_default();
        if id.to_string() == pipeline || name == pipeline {
            return Ok(PipelineInfo {
                id: id as u16,
                name: name.to_string(),
                kind: p["kind"].as_str().unwrap_or("image").to_string(),
                upstream: p["upstream"].as_str().map(str::to_string),
                max_datagram,
            });
        }
    }
    bail!("the proxy at {server} has no pipeline {pipeline:?}")
}

fn parse_size(s: &str) -> Result<(u32, u32)> {
    let (w, h) = s
        .to_ascii_lowercase()
        .split_once('x')
        .map(|(w, h)| (w.parse(), h.parse()))
        .context("--image-size WxH")?;
    Ok((w?, h?))
}

/// Seeded RGB noise.
pub fn synthetic_image(w: u32, h: u32, seed: u64) -> crate::client::RawImage {
    let mut rng = fastrand::Rng::with_seed(seed);
    crate::client::RawImage {
        width: w,
        height: h,
        format: crate::wire::PixelFormat::Rgb8,
        data: (0..w as usize * h as usize * 3)
            .map(|_| rng.u8(..))
            .collect(),
    }
}

/// Seeded English-looking text of `n` bytes.
pub fn synthetic_text(n: usize, seed: u64) -> Vec<u8> {
    const WORDS: [&str; 16] = [
        "the",
        "packet",
        "model",
        "tensor",
        "latency",
        "beautiful",
        "is",
        "better",
        "than",
        "explicit",
        "inference",
        "server",
        "proxy",
        "of",
        "and",
        "preprocessing",
    ];
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut s = String::new();
    while s.len() < n {
        s.push_str(WORDS[rng.usize(..WORDS.len())]);
        s.push(if rng.u8(..) < 20 { '.' } else { ' ' });
    }
    s.truncate(n);
    s.into_bytes()
}

fn files(dir: &PathBuf, exts: Option<&[&str]>) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("{}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .filter(|p| match exts {
            None => true,
            Some(exts) => p
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| exts.contains(&e.to_ascii_lowercase().as_str())),
        })
        .collect();
    v.sort();
    anyhow::ensure!(!v.is_empty(), "no input files in {}", dir.display());
    Ok(v)
}

fn name_of(p: &std::path::Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The inputs, and the baselines' arguments naming the same ones.
fn inputs(a: &PerfArgs, kind: &str) -> Result<(Vec<Input>, Vec<String>)> {
    if let Some(dir) = &a.images {
        let mut v = Vec::new();
        for p in files(dir, Some(&["png", "jpg", "jpeg"]))? {
            let img = crate::client::load_image(&p, Some(crate::wire::PixelFormat::Rgb8))
                .with_context(|| p.display().to_string())?;
            v.push(Input::Image {
                name: name_of(&p),
                img,
            });
        }
        return Ok((v, vec!["--images".into(), dir.display().to_string()]));
    }
    if let Some(dir) = &a.texts {
        let mut v = Vec::new();
        let mut args = vec!["--texts".to_string()];
        for p in files(dir, None)? {
            v.push(Input::Text {
                name: name_of(&p),
                text: std::fs::read(&p)?,
            });
            args.push(p.display().to_string());
        }
        return Ok((v, args));
    }
    if kind == "text" || a.text_bytes.is_some() {
        let n = a.text_bytes.unwrap_or(1024);
        let text = synthetic_text(n, a.seed);
        // The baselines read files: write the same text to one.
        let path = std::env::temp_dir().join(format!("tensorwire-perf-text-{n}-{}.txt", a.seed));
        std::fs::write(&path, &text)?;
        return Ok((
            vec![Input::Text {
                name: format!("synthetic-{n}B"),
                text,
            }],
            vec!["--texts".into(), path.display().to_string()],
        ));
    }
    let size = a.image_size.as_deref().unwrap_or("640x480");
    let (w, h) = parse_size(size)?;
    Ok((
        vec![Input::Image {
            name: format!("synthetic-{w}x{h}"),
            img: synthetic_image(w, h, a.seed),
        }],
        vec!["--image-size".into(), format!("{w}x{h}")],
    ))
}

/// The load points: open loop rates, or closed loop concurrencies.
fn points(a: &PerfArgs) -> Result<Vec<Load>> {
    let (mut rates, mut conc) = (a.request_rate.clone(), a.concurrency.clone());
    if let Some(s) = &a.sweep {
        let (kind, list) = s
            .split_once(':')
            .context("--sweep rate:A,B,.. | concurrency:A,B,..")?;
        match kind {
            "rate" => {
                for v in list.split(',') {
                    rates.push(v.trim().parse().context("--sweep rate")?);
                }
            }
            "concurrency" => {
                for v in list.split(',') {
                    conc.push(v.trim().parse().context("--sweep concurrency")?);
                }
            }
            _ => bail!("--sweep: rate:LIST or concurrency:LIST"),
        }
    }
    anyhow::ensure!(
        rates.is_empty() || conc.is_empty(),
        "either request rates (open loop) or concurrencies (closed loop), not both"
    );
    if rates.is_empty() && conc.is_empty() {
        conc.push(1);
    }
    Ok(if rates.is_empty() {
        conc.into_iter()
            .map(|c| Load::Closed { concurrency: c })
            .collect()
    } else {
        rates
            .into_iter()
            .map(|rate| Load::Open {
                rate,
                arrivals: a.arrivals,
                workers: a.workers,
                seed: a.seed,
            })
            .collect()
    })
}

/// Runs tensorwire at one load point.
fn run_tensorwire(
    a: &PerfArgs,
    target: &udp::Udp,
    info: &PipelineInfo,
    load: Load,
    round: usize,
) -> Result<Run> {
    let win = Window {
        warmup: Duration::from_secs_f64(a.warmup),
        duration: Duration::from_secs_f64(a.duration),
    };
    // Scrapes and CPU readings at the window's edges.
    #[derive(Default)]
    struct Edge {
        sums: Option<probe::HistSums>,
        client: f64,
        proxy: Option<f64>,
        server: Option<f64>,
    }
    let edges: Mutex<[Edge; 2]> = Mutex::default();
    let on_window = |end: bool| {
        if end {
            // Workers publish their histograms once a second.
            std::thread::sleep(Duration::from_millis(1100));
        }
        let e = Edge {
            sums: a.admin.and_then(|adm| probe::scrape(adm, &info.name).ok()),
            client: probe::self_cpu_seconds(),
            proxy: a.proxy_pid.and_then(|p| probe::cpu_seconds(p, false)),
            server: a.server_pid.and_then(|p| probe::cpu_seconds(p, true)),
        };
        edges.lock().expect("not poisoned")[end as usize] = e;
    };
    let label = "tensorwire".to_string();
    let load_name = match load {
        Load::Open { rate, .. } => format!("{label} {rate} rps"),
        Load::Closed { concurrency } => format!("{label} c={concurrency}"),
    };
    let progress = Arc::new(Progress::default());
    let done = AtomicBool::new(false);
    let outcome = std::thread::scope(|s| {
        if !a.quiet {
            let (p, d) = (&progress, &done);
            let total = win.warmup + win.duration;
            let name = load_name.clone();
            s.spawn(move || engine::progress_line(&name, p, total, d));
        }
        let r = engine::run(target, load, win, &progress, &on_window);
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        r
    })?;
    let [e0, e1] = edges.into_inner().expect("not poisoned");
    let n = outcome.requests.max(1) as f64;
    let per = |a: Option<f64>, b: Option<f64>| Some((b? - a?) * 1000.0 / n);
    let stages = match (&e0.sums, &e1.sums) {
        (Some(b), Some(c)) => Some(probe::difference(b, c)),
        _ => None,
    };
    let ok = outcome.latency.len();
    let (loop_, arrivals, offered, concurrency) = match load {
        Load::Open {
            rate,
            arrivals,
            workers,
            ..
        } => (
            "open",
            Some(format!("{arrivals:?}").to_lowercase()),
            Some(rate),
            workers,
        ),
        Load::Closed { concurrency } => ("closed", None, None, concurrency),
    };
    Ok(Run {
        label,
        loop_: loop_.into(),
        arrivals,
        offered_rps: offered,
        concurrency,
        rounds: round,
        warmup_s: a.warmup,
        duration_s: a.duration,
        requests: outcome.requests,
        ok,
        errors: outcome.errors,
        retries: 0,
        throughput_rps: ok as f64 / outcome.wall_s,
        latency_us: Percentiles::of(&outcome.latency),
        service_time_us: Percentiles::of(&outcome.service),
        max_send_lag_us: matches!(load, Load::Open { .. }).then_some(outcome.max_send_lag_us),
        cpu: Cpu {
            client_ms_per_request: per(Some(e0.client), Some(e1.client)),
            proxy_ms_per_request: per(e0.proxy, e1.proxy),
            server_ms_per_request: per(e0.server, e1.server),
        },
        stages,
        hdr: report::hdr_points(&outcome.latency),
    })
}

fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86400, secs % 86400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days as i64 + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + (m <= 2) as i64;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Runs everything the options ask for; the report.
pub fn run(a: &PerfArgs) -> Result<Report> {
    let info = describe(a.server, &a.pipeline)?;
    let (inputs, input_args) = inputs(a, &info.kind)?;
    let target = udp::Udp::new(
        a.server,
        info.id,
        &inputs,
        info.max_datagram,
        Duration::from_millis(a.timeout_ms),
    );
    let bl = if a.baselines {
        Some(baselines::Baselines {
            python: a
                .python
                .clone()
                .unwrap_or_else(|| PathBuf::from(".venv-triton/bin/python")),
            dir: baselines::default_dir(),
            url: a
                .triton_url
                .clone()
                .unwrap_or_default()
                .trim_start_matches("http://")
                .to_string(),
            server_pid: a.server_pid,
            mode: info.kind.clone(),
            input_args,
        })
    } else {
        None
    };
    let mut runs = Vec::new();
    let rounds = a.rounds.max(1);
    for load in points(a)? {
        for round in 1..=rounds {
            let r = run_tensorwire(a, &target, &info, load, if rounds > 1 { round } else { 0 })?;
            if !a.quiet {
                eprintln!("{}", one_line(&r));
            }
            runs.push(r);
            if let Some(b) = &bl {
                let (rate, conc) = match load {
                    Load::Open { rate, workers, .. } => (Some(rate), workers.min(16)),
                    Load::Closed { concurrency } => (None, concurrency),
                };
                for script in baselines::SCRIPTS {
                    match b.run(script, rate, conc, a.warmup, a.duration) {
                        Ok(mut r) => {
                            r.rounds = if rounds > 1 { round } else { 0 };
                            if !a.quiet {
                                eprintln!("{}", one_line(&r));
                            }
                            runs.push(r);
                        }
                        Err(e) => eprintln!("perf: baseline {script}: {e:#}"),
                    }
                }
            }
        }
    }
    Ok(Report {
        schema: report::SCHEMA.into(),
        version: env!("CARGO_PKG_VERSION").into(),
        started: utc_now(),
        machine: report::Machine::now(),
        target: TargetInfo {
            server: a.server.to_string(),
            pipeline_id: info.id,
            pipeline: info.name.clone(),
            kind: info.kind.clone(),
            upstream: info.upstream.clone(),
            model_server: a.triton_url.clone(),
        },
        inputs: inputs.iter().map(Input::describe).collect(),
        runs,
    })
}

fn one_line(r: &Run) -> String {
    let load = match r.offered_rps {
        Some(rate) => format!("{rate} rps"),
        None => format!("c={}", r.concurrency),
    };
    format!(
        "perf: {} {load}: {:.1} req/s, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, errors {}",
        r.label,
        r.throughput_rps,
        r.latency_us.p50 as f64 / 1000.0,
        r.latency_us.p99 as f64 / 1000.0,
        r.latency_us.max as f64 / 1000.0,
        r.errors.values().sum::<u64>()
    )
}

/// `tensorwire perf`: run, then write the outputs.
pub fn main(a: &PerfArgs) -> Result<String> {
    let rep = run(a)?;
    if let Some(p) = &a.csv {
        std::fs::write(p, report::csv(&rep.runs)).with_context(|| p.display().to_string())?;
    }
    if let Some(dir) = &a.plot {
        std::fs::create_dir_all(dir)?;
        plot::write_all(&rep, dir, &a.name)?;
    }
    let json = serde_json::to_string_pretty(&rep)? + "\n";
    match a.json.as_deref() {
        Some(p) if p.as_os_str() == "-" => return Ok(json),
        Some(p) => std::fs::write(p, &json).with_context(|| p.display().to_string())?,
        None => {}
    }
    Ok(report::table(&rep.runs))
}
