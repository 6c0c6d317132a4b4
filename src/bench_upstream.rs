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
use crate::pipeline::{Pipelines, Plan};
use crate::server::RunningProxy;
use crate::transform::{DType, Tensor};
use crate::upstream::http::{encode_request, ResponseParser};
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
/// on every path alike.
type OneRequest<'a> = Box<dyn FnMut() -> Result<()> + 'a>;

fn measure_interleaved(
    seconds: f64,
    paths: &mut [(&str, OneRequest<'_>)],
) -> Result<Vec<PathResult>> {
    for (name, one) in paths.iter_mut() {
        for _ in 0..20 {
            one().with_context(|| format!("{name}: warm-up"))?;
        }
    }
    let mut hists = paths
        .iter()
        .map(|_| Histogram::<u64>::new(3))
        .collect::<Result<Vec<_>, _>>()?;
    let mut busy = vec![Duration::ZERO; paths.len()];
    let t0 = Instant::now();
    let dur = Duration::from_secs_f64(seconds);
    while t0.elapsed() < dur {
        for (i, (name, one)) in paths.iter_mut().enumerate() {
            let t = Instant::now();
            one().with_context(|| format!("{name}: request"))?;
            let e = t.elapsed();
            busy[i] += e;
            hists[i].record(e.as_micros() as u64)?;
        }
    }
    Ok(paths
        .iter()
        .zip(hists)
        .zip(busy)
        .map(|(((name, _), h), busy)| PathResult {
            name: name.to_string(),
            requests: h.len(),
            // Closed loop, one client: requests per second of this
            // path's own time.
            requests_per_s: h.len() as f64 / busy.as_secs_f64(),
            p50_us: h.value_at_quantile(0.5),
            p99_us: h.value_at_quantile(0.99),
        })
        .collect())
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
/// serve testdata/kserve/models.py's `identity`).
pub fn run(url: &str, seconds: f64, testdata: &Path) -> Result<Vec<PathResult>> {
    let img = bench_image(testdata)?;
    let parsed = crate::upstream::HttpUrl::parse(url).map_err(anyhow::Error::msg)?;
    let addr: SocketAddr = parsed.resolve().map_err(anyhow::Error::msg)?;
    let cfg = config(url, "kserve")?;
    let pipelines = Pipelines::build(&cfg)?;
    let Plan::Image(plan) = &pipelines.get(0).plan else {
        bail!("image pipeline expected")
    };
    let want = plan.run_whole(&img.data, img.width, img.height, img.format);

    let proxy = RunningProxy::spawn(cfg.clone(), "127.0.0.1:0".parse()?)?;
    let echo_proxy = RunningProxy::spawn(config(url, "echo")?, "127.0.0.1:0".parse()?)?;
    let mut via_proxy = Client::connect(proxy.addr)?;
    let mut via_echo = Client::connect(echo_proxy.addr)?;
    let stream = TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    let mut direct = DirectClient {
        stream,
        host: parsed.authority.clone(),
        buf: Vec::new(),
    };
    let infer = kserve::infer_path(&parsed.base_path, "identity", "");
    let results = {
        let (img, want, plan) = (&img, &want, plan.clone());
        let mut paths: Vec<(&str, OneRequest<'_>)> = vec![
            (
                "tensorwire -> kserve",
                Box::new(|| {
                    let r = via_proxy.send_image(1, img, None, 1472, &Faults::default())?;
                    let t = r.tensors().map_err(anyhow::Error::msg)?;
                    anyhow::ensure!(&t[0].data == want, "tensor differs");
                    Ok(())
                }),
            ),
            (
                "client preprocesses -> kserve",
                Box::new(move || {
                    let data = plan.run_whole(&img.data, img.width, img.height, img.format);
                    let t = [Tensor {
                        name: "input".into(),
                        dtype: DType::Fp32,
                        shape: vec![1, 3, 224, 224],
                        data,
                    }];
                    let (body, hl) = kserve::infer_body(&t, &[]);
                    let (rhl, rbody) = direct.post(&infer, hl, &body)?;
                    let out = crate::upstream::echo::parse_kserve_binary_response(&rbody, rhl)?;
                    anyhow::ensure!(&out[0].data == want, "tensor differs");
                    Ok(())
                }),
            ),
            (
                "tensorwire echo (no model server)",
                Box::new(|| {
                    via_echo
                        .send_image(1, img, None, 1472, &Faults::default())?
                        .tensors()
                        .map_err(anyhow::Error::msg)?;
                    Ok(())
                }),
            ),
        ];
        measure_interleaved(seconds, &mut paths)?
    };
    proxy.stop()?;
    echo_proxy.stop()?;
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
