//! What perf reads beside its own clock: the proxy's per-stage latency
//! histograms (admin `/metrics`, scraped before and after a run and
//! differenced) and processes' CPU time (`/proc/PID/stat`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

/// The stages, as the proxy names its histograms.
pub const STAGES: [(&str, &str); 4] = [
    ("fragments", "tensorwire_fragments_duration_seconds"),
    ("tensor_ready", "tensorwire_tensor_ready_duration_seconds"),
    ("upstream_call", "tensorwire_upstream_call_duration_seconds"),
    ("request", "tensorwire_request_duration_seconds"),
];

/// (sum in seconds, count) per histogram name, of one pipeline.
pub type HistSums = BTreeMap<String, (f64, f64)>;

/// GET /metrics and the `_sum`/`_count` of `pipeline`'s histograms.
pub fn scrape(admin: SocketAddr, pipeline: &str) -> anyhow::Result<HistSums> {
    let (status, body) = crate::admin::get(admin, "/metrics", Duration::from_secs(3))?;
    anyhow::ensure!(status == 200, "GET http://{admin}/metrics: HTTP {status}");
    Ok(parse(&body, pipeline))
}

/// The `_sum` and `_count` samples of `pipeline` in exposition text.
pub fn parse(text: &str, pipeline: &str) -> HistSums {
    let label = format!("pipeline=\"{pipeline}\"");
    let mut out: HistSums = BTreeMap::new();
    for line in text.lines() {
        if line.starts_with('#') || !line.contains(&label) {
            continue;
        }
        let Some((name, rest)) = line.split_once('{') else {
            continue;
        };
        let Some(v) = rest.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) else {
            continue;
        };
        for (_, base) in STAGES {
            if let Some(suffix) = name.strip_prefix(base) {
                let e = out.entry(base.to_string()).or_default();
                match suffix {
                    "_sum" => e.0 = v,
                    "_count" => e.1 = v,
                    _ => {}
                }
            }
        }
    }
    out
}

/// Mean per stage (ms) and the number of requests of the difference.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Stages {
    /// Requests the proxy timed in the window (of the `request` stage).
    pub count: u64,
    /// First to last fragment (ms, mean).
    pub fragments_ms: Option<f64>,
    /// Last fragment to tensor ready (ms, mean).
    pub tensor_ready_ms: Option<f64>,
    /// The model-server call (ms, mean).
    pub upstream_call_ms: Option<f64>,
    /// First fragment to RESPONSE (ms, mean).
    pub request_ms: Option<f64>,
}

pub fn difference(before: &HistSums, after: &HistSums) -> Stages {
    let mean = |base: &str| -> (Option<f64>, u64) {
        let (s1, c1) = after.get(base).copied().unwrap_or_default();
        let (s0, c0) = before.get(base).copied().unwrap_or_default();
        let c = c1 - c0;
        if c >= 1.0 {
            (Some((s1 - s0) / c * 1000.0), c as u64)
        } else {
            (None, 0)
        }
    };
    let (request_ms, count) = mean(STAGES[3].1);
    Stages {
        count,
        fragments_ms: mean(STAGES[0].1).0,
        tensor_ready_ms: mean(STAGES[1].1).0,
        upstream_call_ms: mean(STAGES[2].1).0,
        request_ms,
    }
}

/// utime + stime of `pid` (and, with `tree`, its descendants), seconds.
pub fn cpu_seconds(pid: u32, tree: bool) -> Option<f64> {
    // SAFETY: sysconf has no preconditions.
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let read = |p: u32| -> Option<(u32, f64)> {
        let s = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
        let f: Vec<&str> = s[s.rfind(')')? + 2..].split_whitespace().collect();
        let ppid = f.get(1)?.parse().ok()?;
        let cpu = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
        Some((ppid, cpu / tick))
    };
    let (_, own) = read(pid)?;
    if !tree {
        return Some(own);
    }
    let mut parent = BTreeMap::new();
    let mut cpu = BTreeMap::new();
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if let Some((pp, c)) = read(p) {
            parent.insert(p, pp);
            cpu.insert(p, c);
        }
    }
    let mut total = 0.0;
    for (&p, &c) in &cpu {
        let mut q = p;
        while q != 0 && q != pid {
            q = parent.get(&q).copied().unwrap_or(0);
        }
        if q == pid {
            total += c;
        }
    }
    Some(total)
}

/// This process's user + system CPU time (s), all threads.
pub fn self_cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut r: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut r) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(r.ru_utime) + tv(r.ru_stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_differences() {
        let a = "# TYPE tensorwire_request_duration_seconds histogram\n\
                 tensorwire_request_duration_seconds_sum{pipeline=\"resnet\"} 0.5\n\
                 tensorwire_request_duration_seconds_count{pipeline=\"resnet\"} 10\n\
                 tensorwire_request_duration_seconds_count{pipeline=\"other\"} 99\n\
                 tensorwire_upstream_call_duration_seconds_sum{pipeline=\"resnet\"} 0.25\n\
                 tensorwire_upstream_call_duration_seconds_count{pipeline=\"resnet\"} 10\n";
        let b = a.replace("} 0.5", "} 1.5").replace("} 10", "} 20");
        let s = difference(&parse(a, "resnet"), &parse(&b, "resnet"));
        assert_eq!(s.count, 10);
        assert!((s.request_ms.unwrap() - 100.0).abs() < 1e-9);
        assert_eq!(s.upstream_call_ms, Some(0.0));
        assert_eq!(s.fragments_ms, None);
    }

    #[test]
    fn own_cpu() {
        assert!(cpu_seconds(std::process::id(), false).is_some());
        assert!(self_cpu_seconds() >= 0.0);
    }
}
