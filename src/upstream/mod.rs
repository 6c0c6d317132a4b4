//! Where tensors go once a request is preprocessed: the built-in `echo`
//! (answered at once), or a model server over HTTP/1.1: `kserve` (KServe
//! v2 with binary tensors) or `openai` (vLLM's OpenAI API with token ids).
//!
//! All model-server connections live on one `mio::Poll` owned by
//! [`Upstreams`]; its epoll fd is itself pollable, so the ingress loop
//! waits on it next to its own socket and calls [`Upstreams::drive`] when
//! it is readable. No threads, no locks.

pub mod breaker;
pub mod echo;
pub mod http;
pub mod kserve;
pub mod openai;

use crate::transform::Tensor;
use crate::wire::ErrorCode;
use breaker::{Breaker, BreakerConfig};
use http::{CallId, HttpError, HttpResponse, Pool, PoolConfig, PoolStats, SubmitError};
use mio::{Events, Poll, Token};
use serde::{Deserialize, Serialize};
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

/// Kinds of model-server upstreams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamKind {
    Kserve,
    Openai,
}

impl UpstreamKind {
    pub fn name(self) -> &'static str {
        match self {
            UpstreamKind::Kserve => "kserve",
            UpstreamKind::Openai => "openai",
        }
    }
}

/// One `[upstreams.<name>]` table.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    pub kind: UpstreamKind,
    /// `http://host:port[/base/path]` (plain HTTP only).
    pub url: String,
    pub model: String,
    /// kserve: model version ("" = the server's default).
    #[serde(default)]
    pub version: String,
    /// kserve: output names to request as binary ("" = all the model has).
    #[serde(default)]
    pub outputs: Vec<String>,
    /// openai: `completions` or `embeddings`.
    #[serde(default = "default_endpoint")]
    pub endpoint: openai::Endpoint,
    /// openai: generation parameters copied into every request
    /// (max_tokens, temperature, top_p, ...).
    #[serde(default)]
    pub params: serde_json::Map<String, serde_json::Value>,
    /// Keep-alive connections to the server (requests run in parallel up
    /// to this many).
    #[serde(default = "default_connections")]
    pub connections: usize,
    /// Requests waiting for a connection; beyond it: OVERLOADED.
    #[serde(default = "default_max_pending")]
    pub max_pending: usize,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_ms: u64,
    /// From hand-over to the answer (queueing included).
    #[serde(default = "default_request_timeout")]
    pub request_timeout_ms: u64,
    /// First reconnect delay after a failed connect; doubles to the max.
    #[serde(default = "default_backoff")]
    pub reconnect_backoff_ms: u64,
    #[serde(default = "default_backoff_max")]
    pub reconnect_backoff_max_ms: u64,
    #[serde(default)]
    pub breaker: BreakerConfig,
}

fn default_endpoint() -> openai::Endpoint {
    openai::Endpoint::Completions
}
fn default_connections() -> usize {
    4
}
fn default_max_pending() -> usize {
    256
}
fn default_connect_timeout() -> u64 {
    1000
}
fn default_request_timeout() -> u64 {
    5000
}
fn default_backoff() -> u64 {
    100
}
fn default_backoff_max() -> u64 {
    2000
}

/// A parsed `http://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    /// `host:port` for the Host header.
    pub authority: String,
    pub host: String,
    pub port: u16,
    /// Path prefix without a trailing slash ("" for none).
    pub base_path: String,
}

impl HttpUrl {
    pub fn parse(url: &str) -> Result<HttpUrl, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or("only http:// URLs are supported (no TLS)")?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        // `[v6]:port`, `[v6]`, `host:port` or `host`.
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, rest) = v6.split_once(']').ok_or("unclosed `[` in the host")?;
            match rest.strip_prefix(':') {
                Some(p) => (h, p),
                None if rest.is_empty() => (h, "80"),
                None => return Err(format!("junk after `]`: `{rest}`")),
            }
        } else {
            authority.rsplit_once(':').unwrap_or((authority, "80"))
        };
        let port = port.parse().map_err(|_| format!("bad port `{port}`"))?;
        if host.is_empty() {
            return Err("no host".into());
        }
        Ok(HttpUrl {
            authority: authority.to_string(),
            host: host.to_string(),
            port,
            base_path: path.trim_end_matches('/').to_string(),
        })
    }

    pub fn resolve(&self) -> Result<SocketAddr, String> {
        (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {}: {e}", self.host))?
            .next()
            .ok_or_else(|| format!("{} has no address", self.host))
    }
}

/// Why an upstream call did not produce an answer for the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamFailure {
    /// The server answered with an HTTP or inference error (its message).
    #[error("{0}")]
    Http(String),
    /// The server answered something that is not a valid answer.
    #[error("{0}")]
    Malformed(String),
    /// Not reachable, connection lost, timed out, breaker open.
    #[error("{0}")]
    Unavailable(String),
    /// The request could not be built for this upstream.
    #[error("{0}")]
    Request(String),
    #[error("{0}")]
    Overloaded(String),
}

impl UpstreamFailure {
    /// An HTTP error status, with the server's message from its JSON
    /// (`error`, `error.message`, `message`, `detail`) or body text.
    pub fn http(resp: &HttpResponse) -> UpstreamFailure {
        let v: Option<serde_json::Value> = serde_json::from_slice(&resp.body).ok();
        let msg = v
            .as_ref()
            .and_then(|v| {
                [
                    &v["error"],
                    &v["error"]["message"],
                    &v["message"],
                    &v["detail"],
                ]
                .into_iter()
                .find_map(|x| x.as_str().map(str::to_string))
            })
            .unwrap_or_else(|| {
                let s = String::from_utf8_lossy(&resp.body);
                crate::wire::error_packet::truncate_utf8(s.trim(), 512).to_string()
            });
        UpstreamFailure::Http(format!("HTTP {}: {msg}", resp.status))
    }

    /// The protocol ERROR code the client gets.
    pub fn code(&self) -> ErrorCode {
        match self {
            UpstreamFailure::Http(_) | UpstreamFailure::Malformed(_) => ErrorCode::UpstreamError,
            UpstreamFailure::Request(_) => ErrorCode::InvalidContent,
            UpstreamFailure::Unavailable(_) => ErrorCode::UpstreamUnavailable,
            UpstreamFailure::Overloaded(_) => ErrorCode::Overloaded,
        }
    }
}

/// Counters of one upstream.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct UpstreamStats {
    pub name: String,
    pub kind: String,
    pub breaker: String,
    pub breaker_opens: u64,
    /// Calls refused at once because the breaker was open.
    pub breaker_rejects: u64,
    /// Answers with an HTTP error status.
    pub http_errors: u64,
    /// 2xx answers whose body was unusable.
    pub bad_answers: u64,
    #[serde(flatten)]
    pub pool: PoolStats,
}

/// One configured model server.
#[derive(Debug)]
pub struct Upstream {
    pub name: String,
    pub cfg: UpstreamConfig,
    pub url: HttpUrl,
    pool: Pool,
    breaker: Breaker,
    stats: UpstreamStats,
    /// Readiness at start, if it was checked.
    pub ready_at_start: Option<Result<(), String>>,
}

impl Upstream {
    /// Serializes the HTTP request for `tensors`.
    fn request(&self, tensors: &[Tensor]) -> Result<Vec<u8>, String> {
        let base = &self.url.base_path;
        let host = &self.url.authority;
        match self.cfg.kind {
            UpstreamKind::Kserve => {
                let path = kserve::infer_path(base, &self.cfg.model, &self.cfg.version);
                let (body, header_len) = kserve::infer_body(tensors, &self.cfg.outputs);
                Ok(http::encode_request(
                    "POST",
                    host,
                    &path,
                    &[("Inference-Header-Content-Length", header_len.to_string())],
                    "application/octet-stream",
                    &body,
                ))
            }
            UpstreamKind::Openai => {
                let body = openai::request_body(
                    self.cfg.endpoint,
                    &self.cfg.model,
                    &self.cfg.params,
                    tensors,
                )?;
                Ok(http::encode_request(
                    "POST",
                    host,
                    &self.cfg.endpoint.path(base),
                    &[],
                    "application/json",
                    &body,
                ))
            }
        }
    }

    /// Readiness (blocking; start-up only): see [`check_ready`].
    pub fn check_ready(&self, timeout: Duration) -> Result<(), String> {
        check_ready(
            self.cfg.kind,
            &self.url,
            &self.cfg.model,
            &self.cfg.version,
            timeout,
        )
    }

    pub fn stats(&self) -> UpstreamStats {
        let mut s = self.stats.clone();
        s.breaker = self.breaker.name().to_string();
        s.breaker_opens = self.breaker.opened;
        s.pool = self.pool.stats.clone();
        s
    }

    /// This upstream in DESCRIBE.
    pub fn describe(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "name": self.name, "kind": self.cfg.kind.name(), "url": self.cfg.url,
            "model": self.cfg.model, "breaker": self.breaker.name(),
            "connections_open": self.pool.stats.connections_open,
        });
        match self.cfg.kind {
            UpstreamKind::Openai => v["endpoint"] = self.cfg.endpoint.name().into(),
            UpstreamKind::Kserve => v["version"] = self.cfg.version.clone().into(),
        }
        if let Some(r) = &self.ready_at_start {
            v["ready_at_start"] = r.is_ok().into();
            if let Err(e) = r {
                v["not_ready_because"] = e.clone().into();
            }
        }
        v
    }
}

/// Readiness of a model server: KServe's `/v2/health/ready` and
/// `/v2/models/{m}[/versions/{v}]/ready`, or vLLM's `/health`. Blocking:
/// for start-up and `tensorwire describe`, never on the event loop.
pub fn check_ready(
    kind: UpstreamKind,
    url: &HttpUrl,
    model: &str,
    version: &str,
    timeout: Duration,
) -> Result<(), String> {
    let addr = url.resolve()?;
    let paths: Vec<String> = match kind {
        UpstreamKind::Kserve => kserve::ready_paths(&url.base_path, model, version).to_vec(),
        UpstreamKind::Openai => vec![format!("{}/health", url.base_path)],
    };
    for p in paths {
        let r = http::get_blocking(addr, &url.authority, &p, timeout).map_err(|e| e.to_string())?;
        if r.status != 200 {
            return Err(format!("GET {p}: HTTP {}", r.status));
        }
    }
    Ok(())
}

/// A finished call.
#[derive(Debug)]
pub struct Completion {
    pub upstream: usize,
    pub call: CallId,
    /// (content_type, header_len, body) for the client.
    pub result: Result<(u16, usize, Vec<u8>), UpstreamFailure>,
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("upstream `{name}`: {msg}")]
pub struct UpstreamError {
    pub name: String,
    pub msg: String,
}

/// Connections per upstream are tokens `index * TOKENS_PER_UPSTREAM + slot`.
const TOKENS_PER_UPSTREAM: usize = 1 << 16;

/// All configured model servers, on one poll.
pub struct Upstreams {
    poll: Poll,
    events: Events,
    list: Vec<Upstream>,
    done: Vec<(CallId, Result<HttpResponse, HttpError>)>,
    /// Tokens of one poll round (reused: no allocation per wakeup).
    tokens: Vec<Token>,
}

impl std::fmt::Debug for Upstreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstreams")
            .field("list", &self.list)
            .finish()
    }
}

impl Upstreams {
    /// Builds every `[upstreams.*]` (names sorted); resolves addresses.
    pub fn build(
        configs: &std::collections::BTreeMap<String, UpstreamConfig>,
    ) -> Result<Upstreams, UpstreamError> {
        let mut list = Vec::new();
        for (i, (name, cfg)) in configs.iter().enumerate() {
            let err = |msg: String| UpstreamError {
                name: name.clone(),
                msg,
            };
            let url = HttpUrl::parse(&cfg.url).map_err(err)?;
            let addr = url.resolve().map_err(err)?;
            let pool = Pool::new(
                PoolConfig {
                    addr,
                    connections: cfg.connections,
                    max_pending: cfg.max_pending,
                    connect_timeout: Duration::from_millis(cfg.connect_timeout_ms),
                    request_timeout: Duration::from_millis(cfg.request_timeout_ms),
                    backoff_initial: Duration::from_millis(cfg.reconnect_backoff_ms),
                    backoff_max: Duration::from_millis(cfg.reconnect_backoff_max_ms),
                },
                i * TOKENS_PER_UPSTREAM,
            );
            list.push(Upstream {
                name: name.clone(),
                url,
                pool,
                breaker: Breaker::new(cfg.breaker),
                stats: UpstreamStats {
                    name: name.clone(),
                    kind: cfg.kind.name().into(),
                    ..Default::default()
                },
                cfg: cfg.clone(),
                ready_at_start: None,
            });
        }
        let poll = Poll::new().map_err(|e| UpstreamError {
            name: String::new(),
            msg: format!("epoll: {e}"),
        })?;
        Ok(Upstreams {
            poll,
            events: Events::with_capacity(256),
            list,
            done: Vec::new(),
            tokens: Vec::new(),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.list.iter().position(|u| u.name == name)
    }

    pub fn get(&self, i: usize) -> &Upstream {
        &self.list[i]
    }

    pub fn iter(&self) -> impl Iterator<Item = &Upstream> {
        self.list.iter()
    }

    /// Checks every upstream's readiness (blocking; start-up) and keeps
    /// the result for DESCRIBE.
    pub fn check_ready(&mut self, timeout: Duration) {
        for u in &mut self.list {
            let r = u.check_ready(timeout);
            match &r {
                Ok(()) => tracing::info!(upstream = %u.name, url = %u.cfg.url, "upstream ready"),
                Err(e) => {
                    tracing::warn!(upstream = %u.name, url = %u.cfg.url, "upstream not ready: {e}")
                }
            }
            u.ready_at_start = Some(r);
        }
    }

    /// The fd the ingress loop waits on (readable = connections to drive).
    pub fn fd(&self) -> RawFd {
        self.poll.as_raw_fd()
    }

    /// Hands `tensors` to upstream `i`; the answer comes out of
    /// [`Upstreams::drive`] as a [`Completion`] with the returned id.
    pub fn submit(
        &mut self,
        i: usize,
        tensors: &[Tensor],
        now: Instant,
    ) -> Result<CallId, UpstreamFailure> {
        let u = &mut self.list[i];
        // The breaker first: no request body is built for a refused call.
        if !u.breaker.allow(now) {
            u.stats.breaker_rejects += 1;
            return Err(UpstreamFailure::Unavailable(format!(
                "upstream {}: circuit breaker open after repeated failures",
                u.name
            )));
        }
        let request = match u.request(tensors) {
            Ok(r) => r,
            Err(e) => {
                // Says nothing about the server: a half-open probe is
                // still owed.
                u.breaker.probe_abandoned();
                return Err(UpstreamFailure::Request(e));
            }
        };
        match u.pool.submit(request, now, self.poll.registry()) {
            Ok(id) => Ok(id),
            Err(SubmitError::Overloaded) => {
                u.breaker.probe_abandoned();
                Err(UpstreamFailure::Overloaded(format!(
                    "upstream {}: {} requests already waiting",
                    u.name, u.cfg.max_pending
                )))
            }
            Err(SubmitError::Unavailable(e)) => {
                u.breaker.failure(now);
                Err(UpstreamFailure::Unavailable(format!(
                    "upstream {}: {e}",
                    u.name
                )))
            }
        }
    }

    /// Drives connections (events with a zero wait, then timers) and
    /// appends finished calls to `out`.
    pub fn drive(&mut self, now: Instant, out: &mut Vec<Completion>) {
        if self.list.is_empty() {
            return;
        }
        // Drain: the ingress waits on our epoll fd edge-triggered.
        loop {
            match self.poll.poll(&mut self.events, Some(Duration::ZERO)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::warn!("upstream poll: {e}");
                    break;
                }
            }
            if self.events.is_empty() {
                break;
            }
            self.tokens.clear();
            self.tokens.extend(self.events.iter().map(|e| e.token()));
            for &t in &self.tokens {
                let i = t.0 / TOKENS_PER_UPSTREAM;
                if let Some(u) = self.list.get_mut(i) {
                    if u.pool.owns(t) {
                        u.pool.on_event(t, now, self.poll.registry());
                    }
                }
            }
        }
        for (i, u) in self.list.iter_mut().enumerate() {
            if u.pool.next_deadline().is_some_and(|d| d <= now) {
                u.pool.on_timer(now, self.poll.registry());
            }
            u.pool.take_done(&mut self.done);
            for (call, r) in self.done.drain(..) {
                let result = match r {
                    Ok(resp) => {
                        let status = resp.status;
                        let a = match u.cfg.kind {
                            UpstreamKind::Kserve => kserve::read_answer(resp),
                            UpstreamKind::Openai => openai::read_answer(resp),
                        };
                        match &a {
                            // A gateway saying the server is gone counts
                            // against the breaker; other errors mean the
                            // server is up and answering.
                            Err(_) if matches!(status, 502..=504) => u.breaker.failure(now),
                            Err(UpstreamFailure::Malformed(_)) => u.breaker.failure(now),
                            _ => u.breaker.success(),
                        }
                        match &a {
                            Err(UpstreamFailure::Http(_)) => u.stats.http_errors += 1,
                            Err(_) => u.stats.bad_answers += 1,
                            Ok(_) => {}
                        }
                        a.map_err(|e| match e {
                            UpstreamFailure::Http(m) | UpstreamFailure::Malformed(m) => {
                                UpstreamFailure::Http(format!("upstream {}: {m}", u.name))
                            }
                            e => e,
                        })
                    }
                    Err(e) => {
                        u.breaker.failure(now);
                        let msg = format!("upstream {}: {e}", u.name);
                        Err(if e.is_unavailable() {
                            UpstreamFailure::Unavailable(msg)
                        } else {
                            UpstreamFailure::Malformed(msg)
                        })
                    }
                };
                out.push(Completion {
                    upstream: i,
                    call,
                    result,
                });
            }
        }
    }

    /// Whether calls finished without an event to announce them (a
    /// connect refused synchronously inside `submit`): drive now.
    pub fn has_completions(&self) -> bool {
        self.list.iter().any(|u| u.pool.has_done())
    }

    /// Closes every connection; calls in flight complete as UNAVAILABLE
    /// (collected by the next [`Upstreams::drive`]).
    pub fn shutdown(&mut self) {
        for u in &mut self.list {
            u.pool.shutdown(self.poll.registry());
        }
    }

    /// The earliest upstream deadline (timeouts, reconnects).
    pub fn next_deadline(&self) -> Option<Instant> {
        self.list
            .iter()
            .filter_map(|u| u.pool.next_deadline())
            .min()
    }

    pub fn stats(&self) -> Vec<UpstreamStats> {
        self.list.iter().map(Upstream::stats).collect()
    }

    pub fn describe(&self) -> Vec<serde_json::Value> {
        self.list.iter().map(Upstream::describe).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = HttpUrl::parse("http://127.0.0.1:8000").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.base_path.as_str()),
            ("127.0.0.1", 8000, "")
        );
        let u = HttpUrl::parse("http://[::1]:9000/kserve/").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.base_path.as_str()),
            ("::1", 9000, "/kserve")
        );
        assert_eq!(u.authority, "[::1]:9000");
        let u = HttpUrl::parse("http://localhost").unwrap();
        assert_eq!(u.port, 80);
        let u = HttpUrl::parse("http://[::1]").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 80));
        assert!(HttpUrl::parse("http://[::1:80").is_err());
        assert!(HttpUrl::parse("http://[::1]x").is_err());
        assert!(HttpUrl::parse("https://x:1").is_err());
        assert!(HttpUrl::parse("http://x:notaport").is_err());
        assert!(HttpUrl::parse("http://:80").is_err());
    }

    #[test]
    fn http_error_messages() {
        let r = |body: &str| HttpResponse {
            status: 500,
            headers: vec![],
            body: body.as_bytes().to_vec(),
            keep_alive: true,
        };
        for (body, want) in [
            (r#"{"error":"boom"}"#, "HTTP 500: boom"),
            (r#"{"error":{"message":"deep"}}"#, "HTTP 500: deep"),
            (r#"{"detail":"fastapi"}"#, "HTTP 500: fastapi"),
            ("plain text\n", "HTTP 500: plain text"),
        ] {
            assert_eq!(UpstreamFailure::http(&r(body)).to_string(), want);
        }
        assert_eq!(
            UpstreamFailure::http(&r("x")).code(),
            ErrorCode::UpstreamError
        );
    }
}
