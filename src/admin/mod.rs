//! The admin endpoint, apart from the data path: HTTP/1.1 on
//! `admin.listen` (loopback by default), served by its own threads:
//!
//! - `GET /healthz`: 200 while every event loop turns (each worker's
//!   heartbeat is younger than [`HEARTBEAT_MAX_AGE`]), else 503 naming
//!   the stuck worker;
//! - `GET /readyz`: 200 when the ingress is bound and every model server
//!   is ready (start-up check or a later probe passed, breaker not open),
//!   else 503 with the reasons, one a line;
//! - `GET /describe`: the DESCRIBE JSON with the upstreams' live state;
//! - `GET /metrics`: the counters in the Prometheus text format
//!   (OpenMetrics when the scraper's `Accept` asks for it; [`metrics`]);
//! - `GET /stats`: every snapshot as JSON (`tensorwire stats --json`).
//!
//! Workers never take a lock per datagram: they keep plain counters and
//! histograms and publish a copy to the [`Board`] once a second
//! (`server::PUBLISH_EVERY`), bumping their heartbeat then; a scrape
//! merges the copies.
//!
//! The HTTP server is `tiny_http` (a small, blocking server with no async
//! runtime): five GET routes do not justify hand-written HTTP parsing,
//! and it keeps probes, curl and Prometheus happy (keep-alive, HEAD,
//! pipelining, bad requests) without code of ours.

pub mod metrics;

use crate::proxy::{PipelineLatency, Stats};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A worker whose heartbeat is older than this makes `/healthz` fail.
pub const HEARTBEAT_MAX_AGE: Duration = Duration::from_secs(5);

/// What one worker published last: its core's counters and latencies,
/// its ingress's counters and the DESCRIBE document.
#[derive(Debug, Clone)]
pub struct WorkerReport {
    pub stats: Stats,
    pub latency: Vec<PipelineLatency>,
    /// `socket` or `af_xdp`.
    pub ingress: &'static str,
    /// The AF_XDP RX queue, for `af_xdp`.
    pub queue: Option<u32>,
    /// The ingress's own counters (numeric fields of its stats).
    pub ingress_counters: Vec<(String, u64)>,
    /// The DESCRIBE document (live upstream state).
    pub describe: Value,
}

/// The numeric fields of a serializable counters struct, by name.
pub fn numeric_fields(v: &impl serde::Serialize) -> Vec<(String, u64)> {
    match serde_json::to_value(v) {
        Ok(Value::Object(m)) => m
            .into_iter()
            .filter_map(|(k, v)| v.as_u64().map(|n| (k, n)))
            .collect(),
        _ => Vec::new(),
    }
}

/// A worker's liveness: milliseconds since the board's epoch at its last
/// loop turn that published (lock-free; the admin thread reads it).
#[derive(Debug, Clone)]
pub struct Heartbeat {
    epoch: Instant,
    last_ms: Arc<AtomicU64>,
}

impl Heartbeat {
    pub fn beat(&self) {
        let ms = self.epoch.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn age(&self) -> Duration {
        let now = self.epoch.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }
}

#[derive(Debug, Default)]
struct Inner {
    /// The ingress's bound address, once bound.
    ingress: Option<String>,
    workers: BTreeMap<String, WorkerReport>,
    heartbeats: BTreeMap<String, Heartbeat>,
    /// AF_XDP steering program counters.
    xdp_program: Vec<(String, u64)>,
    /// Latest readiness probe per upstream (start-up check, then the
    /// server's re-probes while it fails).
    probes: BTreeMap<String, Result<(), String>>,
    /// Other JSON snapshots (for `/stats`).
    extra: Map<String, Value>,
}

/// Everything the admin endpoint serves, published by the workers and
/// the server.
#[derive(Debug)]
pub struct Board {
    epoch: Instant,
    inner: Mutex<Inner>,
}

/// The board's state at one scrape.
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    pub workers: Vec<(String, WorkerReport)>,
    pub heartbeat_ages: Vec<(String, Duration)>,
    pub xdp_program: Vec<(String, u64)>,
    /// Per upstream: ready or why not.
    pub upstreams: Vec<(String, Result<(), String>)>,
    pub ingress_bound: bool,
}

impl Board {
    pub fn new() -> Arc<Board> {
        Arc::new(Board {
            epoch: Instant::now(),
            inner: Mutex::new(Inner::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a worker's heartbeat (beaten once now).
    pub fn heartbeat(&self, worker: &str) -> Heartbeat {
        let h = Heartbeat {
            epoch: self.epoch,
            last_ms: Arc::new(AtomicU64::new(0)),
        };
        h.beat();
        self.lock().heartbeats.insert(worker.to_string(), h.clone());
        h
    }

    /// A worker stopped: it no longer counts for liveness.
    pub fn worker_stopped(&self, worker: &str) {
        self.lock().heartbeats.remove(worker);
    }

    pub fn set_ingress_bound(&self, addr: impl std::fmt::Display) {
        self.lock().ingress = Some(addr.to_string());
    }

    pub fn publish_worker(&self, worker: &str, report: WorkerReport) {
        self.lock().workers.insert(worker.to_string(), report);
    }

    pub fn publish_xdp_program(&self, counters: Vec<(String, u64)>) {
        self.lock().xdp_program = counters;
    }

    pub fn set_probe(&self, upstream: &str, result: Result<(), String>) {
        self.lock().probes.insert(upstream.to_string(), result);
    }

    /// Upstreams whose last probe failed (the server probes them again).
    pub fn failed_probes(&self) -> Vec<String> {
        let g = self.lock();
        g.probes
            .iter()
            .filter(|(_, r)| r.is_err())
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Replaces the JSON snapshot published under `key` (for `/stats`).
    pub fn publish(&self, key: &str, value: impl serde::Serialize) {
        let v = serde_json::to_value(value).unwrap_or(Value::Null);
        self.lock().extra.insert(key.to_string(), v);
    }

    pub fn scrape(&self) -> Scrape {
        let g = self.lock();
        let mut upstreams: BTreeMap<String, Result<(), String>> = BTreeMap::new();
        for (_, w) in g.workers.iter() {
            for u in &w.stats.upstreams {
                upstreams.entry(u.name.clone()).or_insert(Ok(()));
            }
        }
        for (name, r) in upstreams.iter_mut() {
            if let Some(Err(e)) = g.probes.get(name) {
                *r = Err(format!("upstream {name} not ready: {e}"));
                continue;
            }
            // Live: the breaker (per worker) opened after failures.
            let states: Vec<&str> = g
                .workers
                .values()
                .flat_map(|w| w.stats.upstreams.iter())
                .filter(|u| &u.name == name)
                .map(|u| u.breaker.as_str())
                .collect();
            if !states.is_empty() && states.iter().all(|s| *s == "open") {
                *r = Err(format!(
                    "upstream {name} not ready: circuit breaker open (calls failing)"
                ));
            }
        }
        Scrape {
            workers: g
                .workers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            heartbeat_ages: g
                .heartbeats
                .iter()
                .map(|(k, h)| (k.clone(), h.age()))
                .collect(),
            xdp_program: g.xdp_program.clone(),
            upstreams: upstreams.into_iter().collect(),
            ingress_bound: g.ingress.is_some(),
        }
    }

    /// `/healthz`: Ok(text) or Err(why).
    pub fn health(&self) -> Result<String, String> {
        let s = self.scrape();
        if s.heartbeat_ages.is_empty() {
            return Ok("ok (starting: no event loop yet)\n".into());
        }
        let stuck: Vec<String> = s
            .heartbeat_ages
            .iter()
            .filter(|(_, age)| *age > HEARTBEAT_MAX_AGE)
            .map(|(w, age)| {
                format!(
                    "worker {w}: event loop stuck (last heartbeat {:.1} s ago)",
                    age.as_secs_f64()
                )
            })
            .collect();
        if stuck.is_empty() {
            Ok(format!(
                "ok ({} event loop(s) turning)\n",
                s.heartbeat_ages.len()
            ))
        } else {
            Err(stuck.join("\n") + "\n")
        }
    }

    /// `/readyz`: Ok(text) or Err(reasons, one a line).
    pub fn readiness(&self) -> Result<String, String> {
        Self::readiness_of(&self.scrape())
    }

    /// Readiness of one scrape.
    pub fn readiness_of(s: &Scrape) -> Result<String, String> {
        let mut why = Vec::new();
        if !s.ingress_bound {
            why.push("ingress not bound yet".to_string());
        }
        if s.workers.is_empty() && s.ingress_bound {
            why.push("no worker has published yet".to_string());
        }
        for (_, r) in &s.upstreams {
            if let Err(e) = r {
                why.push(e.clone());
            }
        }
        if why.is_empty() {
            Ok("ready\n".into())
        } else {
            Err(why.join("\n") + "\n")
        }
    }

    /// `/describe`: the first worker's DESCRIBE with `ready_now` per
    /// upstream.
    pub fn describe(&self) -> Option<Value> {
        let s = self.scrape();
        let mut d = s.workers.first()?.1.describe.clone();
        if let Some(ups) = d["upstreams"].as_array_mut() {
            for u in ups {
                let name = u["name"].as_str().unwrap_or("").to_string();
                if let Some((_, r)) = s.upstreams.iter().find(|(n, _)| *n == name) {
                    u["ready_now"] = r.is_ok().into();
                    if let Err(e) = r {
                        u["not_ready_now_because"] = e.clone().into();
                    }
                }
            }
        }
        Some(d)
    }

    /// `/stats`: every snapshot as JSON.
    pub fn snapshot(&self) -> Value {
        let g = self.lock();
        let mut m = g.extra.clone();
        for (k, w) in &g.workers {
            let mut ingress = Map::new();
            for (n, v) in &w.ingress_counters {
                ingress.insert(n.clone(), (*v).into());
            }
            m.insert(
                k.clone(),
                serde_json::json!({"proxy": w.stats, w.ingress: ingress}),
            );
        }
        if !g.xdp_program.is_empty() {
            let mut x = Map::new();
            for (n, v) in &g.xdp_program {
                x.insert(n.clone(), (*v).into());
            }
            m.insert("xdp_program".into(), x.into());
        }
        Value::Object(m)
    }
}

/// The admin endpoint's HTTP server.
pub struct AdminServer {
    pub addr: SocketAddr,
    shutdown: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl AdminServer {
    /// Stops serving (joins the thread).
    pub fn stop(mut self) {
        self.shutdown.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        self.shutdown.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Serves `board` on `addr` in a background thread until stopped.
pub fn spawn(addr: SocketAddr, board: Arc<Board>) -> io::Result<AdminServer> {
    let server = tiny_http::Server::http(addr).map_err(io::Error::other)?;
    let local = server
        .server_addr()
        .to_ip()
        .ok_or_else(|| io::Error::other("admin endpoint is not on an IP address"))?;
    let shutdown = Arc::new(AtomicBool::new(false));
    let flag = shutdown.clone();
    let thread = std::thread::Builder::new()
        .name("tensorwire-admin".into())
        .spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match server.recv_timeout(Duration::from_millis(100)) {
                    Ok(Some(req)) => answer(&board, req),
                    Ok(None) => {}
                    Err(_) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        })?;
    Ok(AdminServer {
        addr: local,
        shutdown,
        thread: Some(thread),
    })
}

const TEXT: &str = "text/plain; charset=utf-8";
const JSON: &str = "application/json";

fn answer(board: &Board, req: tiny_http::Request) {
    use tiny_http::Method;
    let path = req.url().split('?').next().unwrap_or("").to_string();
    let (status, ct, body): (u16, &str, Vec<u8>) =
        if !matches!(req.method(), Method::Get | Method::Head) {
            (405, TEXT, b"only GET and HEAD\n".to_vec())
        } else {
            match path.as_str() {
                "/healthz" | "/livez" => match board.health() {
                    Ok(t) => (200, TEXT, t.into_bytes()),
                    Err(t) => (503, TEXT, t.into_bytes()),
                },
                "/readyz" => match board.readiness() {
                    Ok(t) => (200, TEXT, t.into_bytes()),
                    Err(t) => (503, TEXT, t.into_bytes()),
                },
                "/describe" => match board.describe() {
                    Some(d) => (200, JSON, serde_json::to_vec_pretty(&d).unwrap_or_default()),
                    None => (503, TEXT, b"no worker has published yet\n".to_vec()),
                },
                "/metrics" => {
                    let text = metrics::encode(&board.scrape());
                    let openmetrics = req.headers().iter().any(|h| {
                        h.field.equiv("Accept")
                            && h.value.as_str().contains("application/openmetrics-text")
                    });
                    if openmetrics {
                        (200, metrics::OPENMETRICS, text.into_bytes())
                    } else {
                        let classic = metrics::to_prometheus_text(&text);
                        (200, metrics::PROMETHEUS_TEXT, classic.into_bytes())
                    }
                }
                "/stats" => (
                    200,
                    JSON,
                    serde_json::to_vec_pretty(&board.snapshot()).unwrap_or_default(),
                ),
                "/" => (
                    200,
                    TEXT,
                    b"tensorwire admin: /healthz /readyz /describe /metrics /stats\n".to_vec(),
                ),
                _ => (404, TEXT, b"not found\n".to_vec()),
            }
        };
    let header = tiny_http::Header::from_bytes("Content-Type", ct).expect("valid header");
    let resp = tiny_http::Response::from_data(body)
        .with_status_code(status)
        .with_header(header);
    let _ = req.respond(resp);
}

/// A blocking `GET path` to the admin endpoint: (status, body).
pub fn get(addr: SocketAddr, path: &str, timeout: Duration) -> io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAccept: */*\r\n\r\n"
    )?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let bad = |m: &str| io::Error::new(io::ErrorKind::InvalidData, m.to_string());
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| bad("no HTTP header in the answer"))?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no HTTP status in the answer"))?;
    let chunked = head
        .lines()
        .any(|l| l.to_ascii_lowercase().starts_with("transfer-encoding:") && l.contains("chunked"));
    let body = if chunked {
        dechunk(body).ok_or_else(|| bad("bad chunked body"))?
    } else {
        body.to_string()
    };
    Ok((status, body))
}

fn dechunk(mut s: &str) -> Option<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = s.split_once("\r\n")?;
        let n = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        if n == 0 {
            return Some(out);
        }
        out.push_str(rest.get(..n)?);
        s = rest.get(n + 2..)?;
    }
}

/// Reads a running proxy's counters as JSON (`GET /stats`).
pub fn fetch(addr: SocketAddr, timeout: Duration) -> io::Result<Value> {
    let (status, body) = get(addr, "/stats", timeout)?;
    if status != 200 {
        return Err(io::Error::other(format!("GET /stats: HTTP {status}")));
    }
    serde_json::from_str(&body).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> WorkerReport {
        WorkerReport {
            stats: Stats::default(),
            latency: Vec::new(),
            ingress: "socket",
            queue: None,
            ingress_counters: vec![("sent".into(), 3)],
            describe: serde_json::json!({"protocol": 1}),
        }
    }

    #[test]
    fn serves_health_readiness_and_snapshots() {
        let board = Board::new();
        board.publish("extra", serde_json::json!({"frames": 3}));
        let server = spawn("127.0.0.1:0".parse().unwrap(), board.clone()).unwrap();
        let t = Duration::from_secs(2);
        let v = fetch(server.addr, t).unwrap();
        assert_eq!(v["extra"]["frames"], 3);
        assert_eq!(get(server.addr, "/healthz", t).unwrap().0, 200);
        let (code, body) = get(server.addr, "/readyz", t).unwrap();
        assert_eq!(code, 503);
        assert!(body.contains("ingress not bound"), "{body}");
        assert_eq!(get(server.addr, "/describe", t).unwrap().0, 503);
        board.set_ingress_bound("127.0.0.1:1");
        let _hb = board.heartbeat("socket");
        board.publish_worker("socket", report());
        assert_eq!(get(server.addr, "/readyz", t).unwrap().0, 200);
        let (code, body) = get(server.addr, "/describe", t).unwrap();
        assert_eq!((code, body.contains("\"protocol\": 1")), (200, true));
        board.set_probe("triton", Err("connection refused".into()));
        let mut r = report();
        r.stats.upstreams.push(crate::upstream::UpstreamStats {
            name: "triton".into(),
            breaker: "closed".into(),
            ..Default::default()
        });
        board.publish_worker("socket", r);
        let (code, body) = get(server.addr, "/readyz", t).unwrap();
        assert_eq!(code, 503);
        assert!(
            body.contains("triton") && body.contains("refused"),
            "{body}"
        );
        assert_eq!(get(server.addr, "/nowhere", t).unwrap().0, 404);
        let (code, m) = get(server.addr, "/metrics", t).unwrap();
        assert_eq!(code, 200);
        assert!(m.contains("tensorwire_socket_sent_total 3"), "{m}");
        server.stop();
    }

    #[test]
    fn stale_heartbeat_fails_health() {
        let board = Board::new();
        let h = board.heartbeat("queue0");
        assert!(board.health().is_ok());
        h.last_ms.store(0, Ordering::Relaxed);
        // Pretend the epoch is long ago.
        let old = Board {
            epoch: Instant::now() - Duration::from_secs(10),
            inner: Mutex::new(Inner::default()),
        };
        let h = old.heartbeat("queue0");
        h.last_ms.store(0, Ordering::Relaxed);
        let e = old.health().unwrap_err();
        assert!(e.contains("queue0") && e.contains("stuck"), "{e}");
    }
}
