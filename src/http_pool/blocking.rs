//! Blocking HTTP for start-up and the CLI (readiness, model metadata),
//! never on an event loop: name resolution and a GET with timeouts.

use crate::upstream::codec::{encode_request, HttpError, HttpResponse, ResponseParser};
use crate::upstream::{kserve, HttpUrl, UpstreamKind};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

/// Every address `url`'s host resolves to (DNS: blocking).
pub fn resolve(url: &HttpUrl) -> Result<Vec<SocketAddr>, String> {
    resolve_host(&url.host, url.port)
}

/// Every address `host` resolves to (DNS: blocking), without duplicates.
pub fn resolve_host(host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
    let mut addrs: Vec<SocketAddr> = Vec::new();
    for a in (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
    {
        if !addrs.contains(&a) {
            addrs.push(a);
        }
    }
    if addrs.is_empty() {
        return Err(format!("{host} has no address"));
    }
    Ok(addrs)
}

/// Readiness of a model server: KServe's `/v2/health/ready` and
/// `/v2/models/{m}[/versions/{v}]/ready`, or vLLM's `/health`.
pub fn check_ready(
    kind: UpstreamKind,
    url: &HttpUrl,
    model: &str,
    version: &str,
    timeout: Duration,
) -> Result<(), String> {
    let addrs = resolve(url)?;
    let paths: Vec<String> = match kind {
        UpstreamKind::Kserve => kserve::ready_paths(&url.base_path, model, version).to_vec(),
        UpstreamKind::Openai => vec![format!("{}/health", url.base_path)],
    };
    // The first address that takes a connection answers (every address
    // is tried, as the pools do).
    let mut addr = addrs[0];
    for p in paths {
        let mut r = Err(HttpError::Connect(addr, "no address".into()));
        for &a in std::iter::once(&addr).chain(addrs.iter().filter(|&&a| a != addr)) {
            r = get_blocking(a, &url.authority, &p, timeout);
            if !matches!(r, Err(HttpError::Connect(..))) {
                addr = a;
                break;
            }
        }
        let r = r.map_err(|e| e.to_string())?;
        if r.status != 200 {
            return Err(format!("GET {p}: HTTP {}", r.status));
        }
    }
    Ok(())
}

/// A blocking GET for start-up checks (readiness), not for the hot path.
/// `timeout` bounds the whole exchange (a server trickling its answer or
/// sending one that never ends is cut off), not just each read.
pub fn get_blocking(
    addr: SocketAddr,
    host: &str,
    path: &str,
    timeout: Duration,
) -> Result<HttpResponse, HttpError> {
    let deadline = Instant::now() + timeout;
    let timed_out = || HttpError::Timeout(addr, timeout.as_millis() as u64);
    let mut s = std::net::TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| HttpError::Connect(addr, e.to_string()))?;
    let io_err = |e: io::Error| HttpError::Io(addr, e.to_string());
    s.set_read_timeout(Some(timeout)).map_err(io_err)?;
    s.set_write_timeout(Some(timeout)).map_err(io_err)?;
    let req = encode_request(
        "GET",
        host,
        path,
        &[("Connection", "close".into())],
        "",
        &[],
    );
    s.write_all(&req).map_err(io_err)?;
    let mut parser = ResponseParser::default();
    let mut chunk = [0u8; 8192];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(timed_out());
        }
        s.set_read_timeout(Some(left)).map_err(io_err)?;
        let n = match s.read(&mut chunk) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(timed_out())
            }
            Err(e) => return Err(io_err(e)),
        };
        match parser.feed(&chunk[..n], n == 0) {
            Ok(Some(r)) => return Ok(r),
            Ok(None) => {}
            Err(m) => return Err(HttpError::Malformed(addr, m)),
        }
    }
}
