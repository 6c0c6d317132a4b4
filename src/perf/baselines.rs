//! The Python baselines (bench/baselines/*.py) as subprocesses: same
//! load (rate or concurrency), same inputs, same window; their summary
//! line (`schema: "tensorwire.baseline/1"`, bench/baselines/README.md)
//! becomes a [`Run`] next to tensorwire's.

use super::engine::histogram;
use super::report::{hdr_points, Cpu, Percentiles, Run};
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// How to run the baselines.
#[derive(Debug, Clone)]
pub struct Baselines {
    pub python: PathBuf,
    /// bench/baselines.
    pub dir: PathBuf,
    /// Triton's HTTP endpoint (host:port).
    pub url: String,
    /// tritonserver's pid, for the server CPU per request.
    pub server_pid: Option<u32>,
    /// `image` or `text`.
    pub mode: String,
    /// Arguments naming the inputs (`--images DIR`, `--image-size WxH`,
    /// `--texts FILE...`).
    pub input_args: Vec<String>,
}

/// The scripts, in the order they run.
pub const SCRIPTS: [&str; 2] = ["client_preprocess", "server_preprocess"];

impl Baselines {
    /// Runs `script` for one load point.
    pub fn run(
        &self,
        script: &str,
        rate: Option<f64>,
        concurrency: usize,
        warmup_s: f64,
        duration_s: f64,
    ) -> Result<Run> {
        let mut cmd = Command::new(&self.python);
        cmd.arg(self.dir.join(format!("{script}.py")))
            .args(["--url", &self.url, "--mode", &self.mode, "--json"])
            .args(&self.input_args)
            .args(["--duration", &duration_s.to_string()])
            // The baselines warm up by request count.
            .args([
                "--warmup",
                &((warmup_s * 10.0).ceil() as u64).max(5).to_string(),
            ])
            .args(["--concurrency", &concurrency.max(1).to_string()]);
        if let Some(r) = rate {
            cmd.args(["--request-rate", &r.to_string()]);
        }
        if let Some(p) = self.server_pid {
            cmd.args(["--server-pid", &p.to_string()]);
        }
        let out = cmd
            .output()
            .with_context(|| format!("running {} {script}.py", self.python.display()))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let Some(line) = stdout.lines().rev().find(|l| l.contains("\"summary\"")) else {
            bail!(
                "{script}.py printed no summary (exit {}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .rev()
                    .take(5)
                    .collect::<Vec<_>>()
                    .join(" | ")
            );
        };
        parse_summary(line, warmup_s, duration_s)
    }
}

/// A baseline's summary line as a [`Run`].
pub fn parse_summary(line: &str, warmup_s: f64, duration_s: f64) -> Result<Run> {
    let v: serde_json::Value = serde_json::from_str(line)?;
    anyhow::ensure!(
        v["schema"] == "tensorwire.baseline/1",
        "not a tensorwire.baseline/1 summary"
    );
    let mut h = histogram();
    for l in v["latencies_us"].as_array().into_iter().flatten() {
        if let Some(us) = l.as_f64() {
            h.saturating_record(us.round().max(1.0) as u64);
        }
    }
    let requests = v["requests"].as_u64().unwrap_or(0);
    let ok = v["ok"].as_u64().unwrap_or(0);
    let mut errors = BTreeMap::new();
    let n_err = v["errors"].as_u64().unwrap_or(0);
    if n_err > 0 {
        errors.insert("python_error".to_string(), n_err);
    }
    let wall = v["wall_s"].as_f64().unwrap_or(duration_s);
    let per_req = |k: &str| v[k].as_f64().map(|us| us / 1000.0);
    let p = Percentiles::of(&h);
    Ok(Run {
        label: v["baseline"].as_str().unwrap_or("baseline").to_string(),
        loop_: v["loop"].as_str().unwrap_or("closed").to_string(),
        arrivals: v["request_rate"].as_f64().map(|_| "constant".to_string()),
        offered_rps: v["request_rate"].as_f64(),
        concurrency: v["concurrency"].as_u64().unwrap_or(1) as usize,
        rounds: 1,
        warmup_s,
        duration_s,
        requests,
        ok,
        errors,
        retries: 0,
        throughput_rps: if wall > 0.0 { ok as f64 / wall } else { 0.0 },
        // The baselines time from the due time (open loop) only; their
        // service time is not reported separately.
        service_time_us: p.clone(),
        latency_us: p,
        max_send_lag_us: None,
        cpu: Cpu {
            client_ms_per_request: per_req("client_cpu_us_per_request"),
            proxy_ms_per_request: None,
            server_ms_per_request: per_req("server_cpu_us_per_request"),
        },
        stages: None,
        hdr: hdr_points(&h),
    })
}

/// bench/baselines of the source tree (or the current directory).
pub fn default_dir() -> PathBuf {
    let here = Path::new("bench/baselines");
    if here.exists() {
        return here.to_path_buf();
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/baselines")
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_summary_line_is_a_run() {
        let line = r#"{"schema": "tensorwire.baseline/1", "type": "summary",
 "baseline": "client_preprocess", "mode": "image", "model": "logits", "url": "127.0.0.1:8000",
 "inputs": ["x"], "concurrency": 4, "request_rate": 50.0, "loop": "open",
 "requests": 3, "ok": 3, "errors": 0, "first_error": null, "wall_s": 0.06, "throughput_rps": 50,
 "latency_us": {}, "client_cpu_s": {"user": 0.1, "system": 0.0, "total": 0.1},
 "client_cpu_us_per_request": 8150.0, "server_cpu_s": null, "server_cpu_us_per_request": null,
 "latencies_us": [1000.0, 2000.0, 30000.0]}"#
            .replace('\n', "");
        let r = super::parse_summary(&line, 1.0, 2.0).unwrap();
        assert_eq!(r.label, "client_preprocess");
        assert_eq!(r.offered_rps, Some(50.0));
        assert_eq!(r.ok, 3);
        assert!((29_000..31_000).contains(&r.latency_us.max));
        assert_eq!(r.cpu.client_ms_per_request, Some(8.15));
    }
}
