//! Blocking HTTP for start-up and the CLI (readiness, model metadata),
//! never on an event loop: name resolution and a GET with timeouts.

use crate::upstream::codec::{encode_request, HttpError, HttpResponse, ResponseParser};
use crate::upstream::{kserve, HttpUrl, UpstreamKind};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

/// Every address `url`'s host resolves to (DNS: blocking).
pub fn resolve(url: &HttpUrl) -> Result<Vec<SocketAddr>, String> {
    let addrs: Vec<SocketAddr> = (url.host.as_str(), url.port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {}: {e}", url.host))?
        .collect();
    if addrs.is_empty() {
        return Err(format!("{} has no address", url.host));
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
    let addr = resolve(url)?[0];
    let paths: Vec<String> = match kind {
        UpstreamKind::Kserve => kserve::ready_paths(&url.base_path, model, version).to_vec(),
        UpstreamKind::Openai => vec![format!("{}/health", url.base_path)],
    };
    for p in paths {
        let r = get_blocking(addr, &url.authority, &p, timeout).map_err(|e| e.to_string())?;
        if r.status != 200 {
            return Err(format!("GET {p}: HTTP {}", r.status));
        }
    }
    Ok(())
}

/// A blocking GET for start-up checks (readiness), not for the hot path.
pub fn get_blocking(
    addr: SocketAddr,
    host: &str,
    path: &str,
    timeout: Duration,
) -> Result<HttpResponse, HttpError> {
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
    let mut buf = Vec::new();
    let mut parser = ResponseParser::default();
    let mut chunk = [0u8; 8192];
    loop {
        let n = match s.read(&mut chunk) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(HttpError::Timeout(addr, timeout.as_millis() as u64))
            }
            Err(e) => return Err(io_err(e)),
        };
        buf.extend_from_slice(&chunk[..n]);
        match parser.parse(&buf, n == 0) {
            Ok(Some(r)) => return Ok(r),
            Ok(None) => {}
            Err(m) => return Err(HttpError::Malformed(addr, m)),
        }
    }
}
