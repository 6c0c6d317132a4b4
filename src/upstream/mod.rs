//! Where tensors go once a request is preprocessed: the built-in `echo`
//! (answered at once), or a model server over HTTP/1.1: `kserve` (KServe
//! v2 with binary tensors) or `openai` (vLLM's OpenAI API with token ids).
//!
//! Pure: requests are built as bytes, answers mapped to what the client
//! gets, and each server's circuit breaker is kept here with the clock
//! passed in. The connections that carry the bytes are I/O and live in
//! [`crate::http_pool`], beside the ingress drivers.

pub mod breaker;
pub mod codec;
pub mod echo;
pub mod kserve;
pub mod openai;
mod url;

pub use url::HttpUrl;

use crate::transform::Tensor;
use crate::wire::ErrorCode;
use breaker::{Breaker, BreakerConfig};
use codec::{HttpError, HttpResponse};
use serde::{Deserialize, Serialize};
use std::time::Instant;

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

/// Index of a configured model server (its position in the worker's
/// list; names sorted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UpstreamIx(pub usize);

/// Identity of one call, chosen by the proxy core (unique per worker).
pub type CallId = u64;

/// The built-in upstream's name: pipelines on it are answered with their
/// own tensors.
pub const ECHO: &str = "echo";

impl UpstreamConfig {
    /// Checks the values on their own: Err((key under the table, why)).
    pub fn check(&self) -> Result<(), (String, String)> {
        let bad = |k: &str, msg: &str| Err((k.to_string(), msg.to_string()));
        if let Err(e) = HttpUrl::parse(&self.url) {
            return Err(("url".into(), e));
        }
        if self.model.is_empty() || self.model.contains('/') && self.kind == UpstreamKind::Kserve {
            return bad("model", "a model name is needed (no `/`)");
        }
        for (k, v) in [
            ("connections", self.connections as u64),
            ("max_pending", self.max_pending as u64),
            ("connect_timeout_ms", self.connect_timeout_ms),
            ("request_timeout_ms", self.request_timeout_ms),
            ("reconnect_backoff_ms", self.reconnect_backoff_ms),
        ] {
            if v == 0 {
                return bad(k, "must be at least 1");
            }
        }
        if self.connections > 1024 {
            return bad("connections", "at most 1024");
        }
        if self.kind == UpstreamKind::Kserve && !self.params.is_empty() {
            return bad("params", "only openai upstreams take params");
        }
        if let Some(k) = self
            .params
            .keys()
            .find(|k| openai::RESERVED_KEYS.contains(&k.as_str()))
        {
            return Err((
                format!("params.{k}"),
                "set by tensorwire (model comes from `model`, the prompt from the pipeline; \
                 streaming is not supported)"
                    .into(),
            ));
        }
        Ok(())
    }
}

/// A request for a model server, handed by the proxy core to the I/O
/// side; its answer comes back as a [`CallResult`] with the same id.
#[derive(Debug)]
pub struct UpstreamCall {
    pub id: CallId,
    pub upstream: UpstreamIx,
    /// The serialized HTTP request.
    pub request: Vec<u8>,
}

/// Why the I/O side could not get an HTTP answer for a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// The connection pool's queue is full.
    Overloaded,
    /// Not reachable, connection lost, timed out, or not HTTP.
    Failed(HttpError),
}

/// What the I/O side reports for a call.
pub type CallResult = Result<HttpResponse, CallError>;

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

/// Counters of one pool.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PoolStats {
    pub calls: u64,
    /// Calls queued or on a connection now.
    pub calls_in_flight: u64,
    pub calls_ok: u64,
    pub calls_unavailable: u64,
    pub calls_timed_out: u64,
    pub calls_malformed: u64,
    /// Calls refused because the queue was full.
    pub calls_overloaded: u64,
    /// Open TCP connections now (connecting included).
    pub connections_open: u64,
    pub connects: u64,
    pub connect_failures: u64,
    /// Connections opened after a failure or a lost connection.
    pub reconnects: u64,
    /// Calls resent once because a kept-alive connection was found closed.
    pub stale_retries: u64,
}

/// Counters of one upstream: the core's (breaker, answers) and its
/// connection pool's (filled in by the I/O side).
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
    /// Calls the core gave up on at request_timeout_ms.
    pub timeouts: u64,
    #[serde(flatten)]
    pub pool: PoolStats,
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("upstream `{name}`: {msg}")]
pub struct UpstreamError {
    pub name: String,
    pub msg: String,
}

/// One configured model server as the proxy core sees it: how to talk
/// to it (pure) and whether to (its breaker).
#[derive(Debug)]
pub struct Upstream {
    pub name: String,
    pub cfg: UpstreamConfig,
    pub url: HttpUrl,
    breaker: Breaker,
    stats: UpstreamStats,
    /// Readiness at start, if it was checked (by the I/O side).
    pub ready_at_start: Option<Result<(), String>>,
    /// Open connections, as last reported by the I/O side (DESCRIBE).
    pub connections_open: u64,
}

impl Upstream {
    pub fn new(name: &str, cfg: &UpstreamConfig) -> Result<Upstream, UpstreamError> {
        let url = HttpUrl::parse(&cfg.url).map_err(|msg| UpstreamError {
            name: name.to_string(),
            msg,
        })?;
        Ok(Upstream {
            name: name.to_string(),
            url,
            breaker: Breaker::new(cfg.breaker),
            stats: UpstreamStats {
                name: name.to_string(),
                kind: cfg.kind.name().into(),
                ..Default::default()
            },
            cfg: cfg.clone(),
            ready_at_start: None,
            connections_open: 0,
        })
    }

    /// Builds the serialized HTTP request for `tensors`, unless the
    /// breaker refuses the call (then nothing is built).
    pub fn call(&mut self, tensors: &[Tensor], now: Instant) -> Result<Vec<u8>, UpstreamFailure> {
        if !self.breaker.allow(now) {
            self.stats.breaker_rejects += 1;
            return Err(UpstreamFailure::Unavailable(format!(
                "upstream {}: circuit breaker open after repeated failures",
                self.name
            )));
        }
        self.request(tensors).map_err(|e| {
            // Says nothing about the server: a half-open probe is still owed.
            self.breaker.probe_abandoned();
            UpstreamFailure::Request(e)
        })
    }

    /// Serializes the HTTP request for `tensors`.
    fn request(&self, tensors: &[Tensor]) -> Result<Vec<u8>, String> {
        let base = &self.url.base_path;
        let host = &self.url.authority;
        match self.cfg.kind {
            UpstreamKind::Kserve => {
                let path = kserve::infer_path(base, &self.cfg.model, &self.cfg.version);
                let (body, header_len) = kserve::infer_body(tensors, &self.cfg.outputs);
                Ok(codec::encode_request(
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
                Ok(codec::encode_request(
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

    /// Maps what the I/O side got for a call to the client's answer
    /// (content_type, header_len, body), and tells the breaker.
    pub fn answer(
        &mut self,
        result: CallResult,
        now: Instant,
    ) -> Result<(u16, usize, Vec<u8>), UpstreamFailure> {
        let resp = match result {
            Ok(resp) => resp,
            Err(CallError::Overloaded) => {
                // Refused before reaching the server: says nothing of it.
                self.breaker.probe_abandoned();
                return Err(UpstreamFailure::Overloaded(format!(
                    "upstream {}: {} requests already waiting",
                    self.name, self.cfg.max_pending
                )));
            }
            Err(CallError::Failed(e)) => {
                self.breaker.failure(now);
                let msg = format!("upstream {}: {e}", self.name);
                return Err(if e.is_unavailable() {
                    UpstreamFailure::Unavailable(msg)
                } else {
                    UpstreamFailure::Malformed(msg)
                });
            }
        };
        let status = resp.status;
        let a = match self.cfg.kind {
            UpstreamKind::Kserve => kserve::read_answer(resp),
            UpstreamKind::Openai => openai::read_answer(resp),
        };
        match &a {
            // A gateway saying the server is gone counts against the
            // breaker; other errors mean the server is up and answering.
            Err(_) if matches!(status, 502..=504) => self.breaker.failure(now),
            Err(UpstreamFailure::Malformed(_)) => self.breaker.failure(now),
            _ => self.breaker.success(),
        }
        match &a {
            Err(UpstreamFailure::Http(_)) => self.stats.http_errors += 1,
            Err(_) => self.stats.bad_answers += 1,
            Ok(_) => {}
        }
        a.map_err(|e| match e {
            UpstreamFailure::Http(m) | UpstreamFailure::Malformed(m) => {
                UpstreamFailure::Http(format!("upstream {}: {m}", self.name))
            }
            e => e,
        })
    }

    /// The core stopped waiting for a call at request_timeout_ms.
    pub fn timed_out(&mut self, now: Instant) -> UpstreamFailure {
        self.stats.timeouts += 1;
        self.breaker.failure(now);
        UpstreamFailure::Unavailable(format!(
            "upstream {}: no answer within {} ms",
            self.name, self.cfg.request_timeout_ms
        ))
    }

    pub fn stats(&self) -> UpstreamStats {
        let mut s = self.stats.clone();
        s.breaker = self.breaker.name().to_string();
        s.breaker_opens = self.breaker.opened;
        s
    }

    /// This upstream in DESCRIBE.
    pub fn describe(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "name": self.name, "kind": self.cfg.kind.name(), "url": self.cfg.url,
            "model": self.cfg.model, "breaker": self.breaker.name(),
            "connections_open": self.connections_open,
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

#[cfg(test)]
mod tests {
    use super::*;

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
