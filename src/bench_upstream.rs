//! `tensorwire bench-upstream`: what the proxy adds in front of a real
//! KServe v2 server. One client, closed loop, a 640x480 RGB photo to a
//! 224x224 FP32 NCHW identity model, measured in one run:
//!
//! 1. tensorwire: client -> UDP (loopback) -> proxy (resize, normalize)
//!    -> HTTP/1.1 binary extension -> kserve -> back the same way;
//! 2. direct: the same client resizes and normalizes itself (the crate's
//!    own transform) and POSTs to kserve with the binary extension over a
//!    keep-alive connection;
//! 3. echo: client -> proxy with the built-in echo upstream (the proxy's
//!    own cost, no model server).
//!
//! Every answer is checked against the transform computed here.

use crate::client::{Client, Faults, RawImage};
use crate::config::Config;
use crate::pipeline::Plan;
use crate::server::RunningProxy;
use crate::transform::{DType, Tensor};
use crate::upstream::codec::{encode_request, ResponseParser};
use crate::upstream::kserve;
use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

/// One measured path.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PathResult {
    pub name: String,
    pub requests: u64,
    pub requests_per_s: f64,
    pub p50_us: u64,
    pub p99_us: u64,
}

/// Runs the paths in turn, one request each per round, for `seconds`:
/// interleaved, so a noisy machine (other jobs on these 2 cores) weighs
/// on every path alike. Returns each path's latencies and busy time.
type OneRequest<'a> = Box<dyn FnMut() -> Result<()> + 'a>;

fn measure_interleaved(
    seconds: f64,
    paths: &mut [(&str, OneRequest<'_>)],
) -> Result<Vec<(Histogram<u64>, Duration)>> {
    for (name, one) in paths.iter_mut() {
        for _ in 0..10 {
            one().with_context(|| format!("{name}: warm-up"))?;
        }
    }
    let mut out = Vec::new();
    for _ in 0..paths.len() {
        out.push((Histogram::<u64>::new(3)?, Duration::ZERO));
    }
    let t0 = Instant::now();
    let dur = Duration::from_secs_f64(seconds);
    while t0.elapsed() < dur {
        for (i, (name, one)) in paths.iter_mut().enumerate() {
            let t = Instant::now();
            one().with_context(|| format!("{name}: request"))?;
            let e = t.elapsed();
            out[i].1 += e;
            out[i].0.record(e.as_micros() as u64)?;
        }
    }
    Ok(out)
}

/// A keep-alive HTTP/1.1 connection for the direct path (blocking: it is
/// the client, not the proxy).
struct DirectClient {
    stream: TcpStream,
    host: String,
    buf: Vec<u8>,
}

impl DirectClient {
    fn post(&mut self, path: &str, header_len: usize, body: &[u8]) -> Result<(usize, Vec<u8>)> {
        let req = encode_request(
            "POST",
            &self.host,
            path,
            &[("Inference-Header-Content-Length", header_len.to_string())],
            "application/octet-stream",
            body,
        );
        self.stream.write_all(&req)?;
        self.buf.clear();
        let mut parser = ResponseParser::default();
        let mut chunk = vec![0u8; 1 << 16];
        loop {
            let n = self.stream.read(&mut chunk)?;
            self.buf.extend_from_slice(&chunk[..n]);
            if let Some(r) = parser
                .parse(&self.buf, n == 0)
                .map_err(anyhow::Error::msg)?
            {
                if r.status != 200 {
                    bail!("HTTP {}", r.status);
                }
                let hl = r
                    .header("inference-header-content-length")
                    .context("no binary answer")?
                    .parse()?;
                return Ok((hl, r.body));
            }
        }
    }
}

/// A 640x480 RGB photo: testdata's rocket, resized with the image crate.
pub fn bench_image(testdata: &Path) -> Result<RawImage> {
    let img = image::open(testdata.join("images/rocket.jpg"))
        .context("testdata/images/rocket.jpg")?
        .to_rgb8();
    let img = image::imageops::resize(&img, 640, 480, image::imageops::FilterType::Triangle);
    Ok(RawImage {
        width: 640,
        height: 480,
        format: crate::wire::PixelFormat::Rgb8,
        data: img.into_raw(),
    })
}

fn config(url: &str, upstream: &str) -> Result<Config> {
    Ok(Config::from_toml(&format!(
        r#"
[admin]
listen = ""
[upstreams.kserve]
kind = "kserve"
url = "{url}"
model = "identity"
connections = 2
[[pipelines]]
id = 1
name = "resnet"
kind = "image"
upstream = "{upstream}"
[pipelines.image]
width = 224
height = 224
"#
    ))?)
}

/// Runs the three paths against the KServe server at `url` (which must
/// serve testdata/kserve/models.py's `identity`), `clients` client
/// threads at once, each with its own sockets.
pub fn run(url: &str, seconds: f64, clients: usize, testdata: &Path) -> Result<Vec<PathResult>> {
    let img = bench_image(testdata)?;
    let parsed = crate::upstream::HttpUrl::parse(url).map_err(anyhow::Error::msg)?;
    let addr: SocketAddr =
        crate::http_pool::blocking::resolve(&parsed).map_err(anyhow::Error::msg)?[0];
    let mut cfg = config(url, "kserve")?;
    cfg.upstreams
        .get_mut("kserve")
        .expect("configured")
        .connections = clients.max(1);
    let pipelines = cfg.build_pipelines()?;
    let Plan::Image(plan) = &pipelines.by_id(1).unwrap().plan else {
        bail!("image pipeline expected")
    };
    let want = plan.run_whole(&img.data, img.width, img.height, img.format);
    let proxy = RunningProxy::spawn(cfg.clone(), "127.0.0.1:0".parse()?)?;
    let echo_proxy = RunningProxy::spawn(config(url, "echo")?, "127.0.0.1:0".parse()?)?;
    let infer = kserve::infer_path(&parsed.base_path, "identity", "");
    let names = [
        "tensorwire -> kserve",
        "client preprocesses -> kserve",
        "tensorwire echo (no model server)",
    ];
    let per_client = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..clients.max(1))
            .map(|_| {
                let (img, want, plan, infer) = (&img, &want, plan.clone(), &infer);
                let (proxy_addr, echo_addr, host) =
                    (proxy.addr, echo_proxy.addr, parsed.authority.clone());
                scope.spawn(move || -> Result<Vec<(Histogram<u64>, Duration)>> {
                    let mut via_proxy = Client::connect(proxy_addr)?;
                    let mut via_echo = Client::connect(echo_addr)?;
                    via_proxy.timeout = Duration::from_secs(30);
                    let stream = TcpStream::connect(addr)?;
                    stream.set_nodelay(true)?;
                    let mut direct = DirectClient {
                        stream,
                        host,
                        buf: Vec::new(),
                    };
                    let mut paths: Vec<(&str, OneRequest<'_>)> = vec![
                        (
                            names[0],
                            Box::new(|| {
                                let r =
                                    via_proxy.send_image(1, img, None, 1472, &Faults::default())?;
                                let t = r.tensors().map_err(anyhow::Error::msg)?;
                                anyhow::ensure!(&t[0].data == want, "tensor differs");
                                Ok(())
                            }),
                        ),
                        (
                            names[1],
                            Box::new(move || {
                                let data =
                                    plan.run_whole(&img.data, img.width, img.height, img.format);
                                let t = [Tensor {
                                    name: "input".into(),
                                    dtype: DType::Fp32,
                                    shape: vec![1, 3, 224, 224],
                                    data,
                                }];
                                let (body, hl) = kserve::infer_body(&t, &[]);
                                let (rhl, rbody) = direct.post(infer, hl, &body)?;
                                let out = crate::upstream::echo::parse_kserve_binary_response(
                                    &rbody, rhl,
                                )?;
                                anyhow::ensure!(&out[0].data == want, "tensor differs");
                                Ok(())
                            }),
                        ),
                        (
                            names[2],
                            Box::new(|| {
                                via_echo
                                    .send_image(1, img, None, 1472, &Faults::default())?
                                    .tensors()
                                    .map_err(anyhow::Error::msg)?;
                                Ok(())
                            }),
                        ),
                    ];
                    measure_interleaved(seconds, &mut paths)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| anyhow::anyhow!("client thread panicked"))?
            })
            .collect::<Result<Vec<_>>>()
    })?;
    proxy.stop()?;
    echo_proxy.stop()?;
    let mut results = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let mut h = Histogram::<u64>::new(3)?;
        let mut rate = 0.0;
        for c in &per_client {
            h.add(&c[i].0)?;
            // Each client is a closed loop: its rate on this path is its
            // requests over the time it spent on them; clients add up.
            rate += c[i].0.len() as f64 / c[i].1.as_secs_f64();
        }
        results.push(PathResult {
            name: name.to_string(),
            requests: h.len(),
            requests_per_s: rate,
            p50_us: h.value_at_quantile(0.5),
            p99_us: h.value_at_quantile(0.99),
        });
    }
    Ok(results)
}

/// The results as a Markdown table, with what the proxy adds.
pub fn table(r: &[PathResult]) -> String {
    let mut s = String::from(
        "| path | requests | req/s | p50 (ms) | p99 (ms) |\n|---|---:|---:|---:|---:|\n",
    );
    for p in r {
        s.push_str(&format!(
            "| {} | {} | {:.0} | {:.2} | {:.2} |\n",
            p.name,
            p.requests,
            p.requests_per_s,
            p.p50_us as f64 / 1000.0,
            p.p99_us as f64 / 1000.0
        ));
    }
    if r.len() >= 2 {
        s.push_str(&format!(
            "\nadded by the proxy (tensorwire minus direct): p50 {:+.2} ms, p99 {:+.2} ms\n",
            (r[0].p50_us as f64 - r[1].p50_us as f64) / 1000.0,
            (r[0].p99_us as f64 - r[1].p99_us as f64) / 1000.0
        ));
    }
    s
}
