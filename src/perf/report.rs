//! The results: JSON (`schema: "tensorwire.perf/1"`), CSV and the
//! terminal table.

use super::probe::Stages;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const SCHEMA: &str = "tensorwire.perf/1";

/// Percentiles of one histogram, microseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Percentiles {
    pub mean: f64,
    pub min: u64,
    pub p50: u64,
    pub p90: u64,
    pub p95: u64,
    pub p99: u64,
    pub p99_9: u64,
    pub max: u64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Percentiles {
        if h.is_empty() {
            return Percentiles::default();
        }
        Percentiles {
            mean: (h.mean() * 10.0).round() / 10.0,
            min: h.min(),
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p95: h.value_at_quantile(0.95),
            p99: h.value_at_quantile(0.99),
            p99_9: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

/// CPU time per request (ms), per process.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Cpu {
    /// The load generator (perf itself, or the Python baseline client:
    /// its preprocessing included).
    pub client_ms_per_request: Option<f64>,
    /// The tensorwire proxy (`--proxy-pid`).
    pub proxy_ms_per_request: Option<f64>,
    /// The model server and its children (`--server-pid`).
    pub server_ms_per_request: Option<f64>,
}

/// One measured load point of one path.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Run {
    /// The path: `tensorwire`, or a baseline's name.
    pub label: String,
    /// `open` or `closed`.
    #[serde(rename = "loop")]
    pub loop_: String,
    /// `constant`, `poisson` (open loop) or null.
    pub arrivals: Option<String>,
    /// Offered requests/s (open loop) or null.
    pub offered_rps: Option<f64>,
    /// Closed loop: requests in flight; open loop: the worker pool size.
    pub concurrency: usize,
    /// Round of an interleaved comparison (0 when not repeated; merged
    /// rounds have `rounds` > 1).
    pub rounds: usize,
    pub warmup_s: f64,
    pub duration_s: f64,
    /// Requests due (open) or sent (closed) in the measured window.
    pub requests: u64,
    pub ok: u64,
    /// Errors by code (`timeout`, `INCOMPLETE`, `BUSY`, ...).
    pub errors: BTreeMap<String, u64>,
    /// Retries: perf never retries (a lost datagram is an error).
    pub retries: u64,
    /// Successful requests per second of the window.
    pub throughput_rps: f64,
    /// Completion minus intended start (open loop: coordinated omission
    /// corrected), us.
    pub latency_us: Percentiles,
    /// Completion minus actual send, us (the uncorrected view).
    pub service_time_us: Percentiles,
    /// Open loop: the latest a send left after its due time, us.
    pub max_send_lag_us: Option<u64>,
    pub cpu: Cpu,
    /// The proxy's own stage means over the window (`--admin`).
    pub stages: Option<Stages>,
    /// (percentile, latency us) pairs of the corrected histogram, for
    /// the HDR plot.
    pub hdr: Vec<(f64, u64)>,
}

/// The whole report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub schema: String,
    pub version: String,
    /// UTC time of the run (RFC 3339, seconds).
    pub started: String,
    pub machine: Machine,
    pub target: TargetInfo,
    /// The inputs, as sent (images: decoded pixels).
    pub inputs: Vec<String>,
    pub runs: Vec<Run>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TargetInfo {
    /// The proxy's UDP address.
    pub server: String,
    pub pipeline_id: u16,
    pub pipeline: String,
    /// `image` or `text`.
    pub kind: String,
    /// The pipeline's upstream kind (`echo`, `kserve`, ...).
    pub upstream: Option<String>,
    /// The model server for the baselines, if any.
    pub model_server: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub kernel: String,
    /// 1-minute load average at the start.
    pub loadavg: f64,
}

impl Machine {
    pub fn now() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default();
        Machine {
            cpus: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            cpu_model,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_string(),
            loadavg: std::fs::read_to_string("/proc/loadavg")
                .ok()
                .and_then(|s| s.split_whitespace().next()?.parse().ok())
                .unwrap_or(0.0),
        }
    }
}

/// The HDR distribution: percentiles 0, 50, 75, ... towards 100.
pub fn hdr_points(h: &Histogram<u64>) -> Vec<(f64, u64)> {
    if h.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut q = 0.0f64;
    // 1 - q halves each step, down to 1e-5 (99.999 %).
    while q < 0.99999 {
        out.push(((q * 1e5).round() / 1e3, h.value_at_quantile(q)));
        q = 1.0 - (1.0 - q) / 2.0_f64.sqrt();
    }
    out.push((100.0, h.max()));
    out
}

fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

fn opt(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.2}")).unwrap_or_else(|| "-".into())
}

/// The terminal (and Markdown) table.
pub fn table(runs: &[Run]) -> String {
    let mut s = String::from(
        "| path | load | req/s | ok | errors | p50 ms | p90 ms | p95 ms | p99 ms | p99.9 ms | max ms \
         | svc p99 ms | client CPU ms/req | proxy CPU ms/req | server CPU ms/req |\n\
         |---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in runs {
        let load = match r.offered_rps {
            Some(rate) => format!("{rate} rps {}", r.arrivals.as_deref().unwrap_or_default()),
            None => format!("c={}", r.concurrency),
        };
        let errors = if r.errors.is_empty() {
            "0".to_string()
        } else {
            r.errors
                .iter()
                .map(|(k, v)| format!("{k}:{v}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let l = &r.latency_us;
        s.push_str(&format!(
            "| {} | {load} | {:.1} | {} | {errors} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.label,
            r.throughput_rps,
            r.ok,
            ms(l.p50),
            ms(l.p90),
            ms(l.p95),
            ms(l.p99),
            ms(l.p99_9),
            ms(l.max),
            ms(r.service_time_us.p99),
            opt(r.cpu.client_ms_per_request),
            opt(r.cpu.proxy_ms_per_request),
            opt(r.cpu.server_ms_per_request),
        ));
    }
    let staged: Vec<&Run> = runs.iter().filter(|r| r.stages.is_some()).collect();
    if !staged.is_empty() {
        s.push_str(
            "\nproxy stages (means over the window, from /metrics):\n\n\
             | path | load | requests | first->last fragment ms | last fragment->tensor ms \
             | upstream call ms | first fragment->response ms | client p50 ms |\n\
             |---|---|---:|---:|---:|---:|---:|---:|\n",
        );
        for r in staged {
            let st = r.stages.as_ref().expect("filtered");
            let load = match r.offered_rps {
                Some(rate) => format!("{rate} rps"),
                None => format!("c={}", r.concurrency),
            };
            s.push_str(&format!(
                "| {} | {load} | {} | {} | {} | {} | {} | {} |\n",
                r.label,
                st.count,
                opt(st.fragments_ms),
                opt(st.tensor_ready_ms),
                opt(st.upstream_call_ms),
                opt(st.request_ms),
                ms(r.latency_us.p50)
            ));
        }
    }
    s
}

/// One CSV row per run.
pub fn csv(runs: &[Run]) -> String {
    let mut s = String::from(
        "label,loop,arrivals,offered_rps,concurrency,rounds,requests,ok,errors,throughput_rps,\
         p50_us,p90_us,p95_us,p99_us,p99_9_us,max_us,mean_us,service_p50_us,service_p99_us,\
         client_cpu_ms_per_request,proxy_cpu_ms_per_request,server_cpu_ms_per_request,\
         stage_fragments_ms,stage_tensor_ready_ms,stage_upstream_call_ms,stage_request_ms\n",
    );
    let o = |v: Option<f64>| v.map(|v| format!("{v:.4}")).unwrap_or_default();
    for r in runs {
        let l = &r.latency_us;
        let st = r.stages.clone().unwrap_or_default();
        let errors: u64 = r.errors.values().sum();
        s.push_str(&format!(
            "{},{},{},{},{},{},{},{},{},{:.2},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}\n",
            r.label,
            r.loop_,
            r.arrivals.clone().unwrap_or_default(),
            r.offered_rps.map(|v| v.to_string()).unwrap_or_default(),
            r.concurrency,
            r.rounds,
            r.requests,
            r.ok,
            errors,
            r.throughput_rps,
            l.p50,
            l.p90,
            l.p95,
            l.p99,
            l.p99_9,
            l.max,
            l.mean,
            r.service_time_us.p50,
            r.service_time_us.p99,
            o(r.cpu.client_ms_per_request),
            o(r.cpu.proxy_ms_per_request),
            o(r.cpu.server_ms_per_request),
            o(st.fragments_ms),
            o(st.tensor_ready_ms),
            o(st.upstream_call_ms),
            o(st.request_ms),
        ));
    }
    s
}
