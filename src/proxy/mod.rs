//! The protocol core of one worker, sans I/O (quinn-proto's shape):
//! datagrams and model-server answers go in with the time passed in;
//! reply datagrams come out through a [`ReplySink`] and model-server
//! requests as [`UpstreamCall`]s from [`Proxy::poll_call`]. No sockets, no
//! DNS, no clock of its own: the ingress drivers and the connection pools
//! (I/O) carry the bytes, and every path here is tested deterministically.

mod describe;
mod reply;
mod stats;

pub use reply::{ReplySink, ReplyWriter};
pub use stats::Stats;

use crate::pipeline::{Pipelines, RequestState, ResizeCache};
use crate::reassembly::{Key, Limits, Outcome, Reassembler, Reject, Release, Request};
use crate::upstream::echo::kserve_binary_response;
use crate::upstream::{
    CallId, CallResult, Upstream, UpstreamCall, UpstreamConfig, UpstreamError, UpstreamFailure,
    UpstreamIx,
};
use crate::wire::{content_type, ErrorCode, HeaderPrefix, HeaderRepr, Kind, Packet, MAGIC};
use crate::wire::{HEADER_LEN, VERSION};
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Where a pipeline's tensors go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// The built-in `echo`: answered at once with the tensors.
    Echo,
    /// A configured model server.
    Model(UpstreamIx),
}

/// The core's settings (from `[limits]` and `[ingress]`).
#[derive(Debug, Clone)]
pub struct ProxySettings {
    pub limits: Limits,
    /// Largest reply UDP payload for IPv4 and IPv6 peers (from the MTU).
    pub reply_payload_max_v4: usize,
    pub reply_payload_max_v6: usize,
}

impl ProxySettings {
    /// Reply sizes for an MTU: the IP and UDP headers come off.
    pub fn new(limits: Limits, mtu: u32) -> ProxySettings {
        ProxySettings {
            limits,
            reply_payload_max_v4: mtu as usize - 20 - 8,
            reply_payload_max_v6: mtu as usize - 40 - 8,
        }
    }
}

/// Why a proxy core could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Pipeline(#[from] crate::pipeline::PipelineError),
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
}

/// A request handed to a model server, waiting for its answer. It stays
/// in flight (its reassembly slot held) until answered, so the in-flight
/// limits bound upstream work too.
#[derive(Debug)]
struct Waiting {
    key: Key,
    pipeline_id: u16,
    upstream: UpstreamIx,
    release: Release,
}

/// The proxy core for one worker.
pub struct Proxy {
    settings: ProxySettings,
    pipelines: Pipelines,
    /// Route per pipeline (indexed by [`PipelineIx`]).
    routes: Vec<Route>,
    upstreams: Vec<Upstream>,
    describe: Vec<u8>,
    reassembler: Reassembler<RequestState>,
    resize_cache: ResizeCache,
    replies: ReplyWriter,
    stats: Stats,
    expired: Vec<Key>,
    waiting: HashMap<CallId, Waiting>,
    /// Keys of `waiting`: their late fragments must not start a new
    /// request (the key becomes "answered" when the answer is sent).
    waiting_keys: HashSet<Key>,
    /// Per upstream: (deadline, call) in submission order; a call's
    /// answer is given up on at its deadline (request_timeout_ms).
    deadlines: Vec<VecDeque<(Instant, CallId)>>,
    /// Calls for the I/O side, taken with [`Proxy::poll_call`].
    calls: VecDeque<UpstreamCall>,
    next_call: CallId,
}

impl Proxy {
    /// A core serving `pipelines`, whose `upstream` names are `echo` or
    /// one of `upstreams` (name, settings).
    pub fn new<'a>(
        settings: ProxySettings,
        pipelines: Pipelines,
        upstreams: impl IntoIterator<Item = (&'a str, &'a UpstreamConfig)>,
    ) -> Result<Proxy, BuildError> {
        let upstreams = upstreams
            .into_iter()
            .map(|(name, cfg)| Upstream::new(name, cfg))
            .collect::<Result<Vec<_>, _>>()?;
        let routes = pipelines
            .iter()
            .map(|p| match p.upstream.as_str() {
                crate::upstream::ECHO => Ok(Route::Echo),
                name => upstreams
                    .iter()
                    .position(|u| u.name == name)
                    .map(|i| Route::Model(UpstreamIx(i)))
                    .ok_or_else(|| UpstreamError {
                        name: name.to_string(),
                        msg: format!("pipeline {} names an upstream that is not configured", p.id),
                    }),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let replies =
            ReplyWriter::new(settings.reply_payload_max_v4, settings.reply_payload_max_v6);
        let mut proxy = Proxy {
            deadlines: upstreams.iter().map(|_| VecDeque::new()).collect(),
            upstreams,
            routes,
            waiting: HashMap::new(),
            waiting_keys: HashSet::new(),
            calls: VecDeque::new(),
            next_call: 1,
            reassembler: Reassembler::new(&settings.limits),
            resize_cache: ResizeCache::new(64),
            settings,
            pipelines,
            describe: Vec::new(),
            replies,
            stats: Stats::default(),
            expired: Vec::new(),
        };
        proxy.refresh_describe();
        Ok(proxy)
    }

    pub fn settings(&self) -> &ProxySettings {
        &self.settings
    }

    pub fn pipelines(&self) -> &Pipelines {
        &self.pipelines
    }

    /// The configured model servers, by [`UpstreamIx`].
    pub fn upstreams(&self) -> &[Upstream] {
        &self.upstreams
    }

    /// Records a start-up readiness check (made by the I/O side).
    pub fn set_ready_at_start(&mut self, u: UpstreamIx, result: Result<(), String>) {
        self.upstreams[u.0].ready_at_start = Some(result);
        self.refresh_describe();
    }

    /// Open connections of upstream `u`, as the I/O side counts them.
    pub fn set_connections_open(&mut self, u: UpstreamIx, n: u64) {
        self.upstreams[u.0].connections_open = n;
    }

    pub fn describe_json(&self) -> &[u8] {
        &self.describe
    }

    fn refresh_describe(&mut self) {
        let d = describe::document(&self.settings, &self.pipelines, &self.upstreams);
        self.describe = serde_json::to_vec(&d).expect("JSON of plain values");
    }

    /// Counters; the upstreams' pool counters are the I/O side's to fill.
    pub fn stats(&self) -> Stats {
        let mut s = self.stats.clone();
        let (r, b) = self.reassembler.in_flight();
        s.requests_in_flight = r as u64;
        s.bytes_in_flight = b as u64;
        s.answered_keys_evicted = self.reassembler.answered_evicted();
        s.state_bytes = self.reassembler.held_bytes() as u64;
        s.resize_plans_built = self.resize_cache.misses;
        s.upstream_calls_waiting = self.waiting.len() as u64;
        s.upstreams = self.upstreams.iter().map(Upstream::stats).collect();
        s
    }

    /// The next request for a model server, if any.
    pub fn poll_call(&mut self) -> Option<UpstreamCall> {
        self.calls.pop_front()
    }

    /// When [`Proxy::on_timeout`] has work next.
    pub fn next_deadline(&self) -> Option<Instant> {
        let calls = self.deadlines.iter().filter_map(|d| d.front().map(|x| x.0));
        self.reassembler
            .next_deadline()
            .into_iter()
            .chain(calls)
            .min()
    }

    fn error(
        &mut self,
        out: &mut dyn ReplySink,
        key: Key,
        pipeline: u16,
        code: ErrorCode,
        msg: &str,
    ) {
        self.stats.error(code);
        self.replies
            .error(out, key.client, key.request_id, pipeline, code, msg);
    }

    /// Answers a request with an ERROR on one of its fragments: the
    /// request (if in flight) ends, its key is remembered.
    fn reject(
        &mut self,
        out: &mut dyn ReplySink,
        key: Key,
        pipeline: u16,
        code: ErrorCode,
        msg: &str,
        now: Instant,
    ) {
        self.reassembler.abort(&key, now);
        self.error(out, key, pipeline, code, msg);
    }

    /// One datagram from `from`; replies go to `out`.
    pub fn handle(&mut self, now: Instant, from: SocketAddr, d: &[u8], out: &mut dyn ReplySink) {
        self.stats.datagrams_in += 1;
        self.stats.bytes_in += d.len() as u64;
        let h = HeaderPrefix::new(d);
        if h.magic() != Some(MAGIC) {
            self.stats.dropped_not_twp += 1;
            return;
        }
        let (Some(pipeline_id), Some(request_id)) = (h.pipeline(), h.request_id()) else {
            // No request_id to answer to.
            self.stats.dropped_truncated += 1;
            return;
        };
        let key = Key {
            client: from,
            request_id,
        };
        if h.kind().is_some_and(Kind::is_reply) {
            self.stats.dropped_reply_kind += 1;
            return;
        }
        if self.reassembler.is_answered(&key, now) || self.waiting_keys.contains(&key) {
            self.stats.late_fragments += 1;
            return;
        }
        if let (true, Some(seq)) = (d.len() >= HEADER_LEN, h.seq()) {
            if self.reassembler.is_duplicate(&key, seq) {
                self.stats.duplicate_fragments += 1;
                return;
            }
        }
        // Errors in the spec's order: version, pipeline, kind, malformed,
        // too large, overloaded.
        if h.version() != Some(VERSION) {
            let msg = format!(
                "version {} is not supported (this proxy speaks 1)",
                h.version().unwrap_or(0)
            );
            let code = ErrorCode::UnsupportedVersion;
            return self.reject(out, key, pipeline_id, code, &msg, now);
        }
        let Ok(packet) = Packet::new_checked(d) else {
            let msg = "datagram shorter than the 24-byte header";
            return self.reject(out, key, pipeline_id, ErrorCode::Malformed, msg, now);
        };
        if packet.kind() == Some(Kind::Describe) {
            return self.describe(out, key, &packet, now);
        }
        let Some(ix) = self.pipelines.index_of(pipeline_id) else {
            let msg = format!("no pipeline with id {pipeline_id}");
            return self.reject(out, key, pipeline_id, ErrorCode::UnknownPipeline, &msg, now);
        };
        let header = match HeaderRepr::parse(&packet) {
            Ok(h) => h,
            Err(e) => {
                let msg = e.to_string();
                return self.reject(out, key, pipeline_id, ErrorCode::Malformed, &msg, now);
            }
        };
        let pipeline = self.pipelines.get(ix);
        let fragment =
            match pipeline.check_fragment(&header, d.len(), packet.body(), &self.settings.limits) {
                Ok(f) => f,
                Err(Reject { code, message }) => {
                    return self.reject(out, key, pipeline_id, code, &message, now)
                }
            };
        let new_request = !self.reassembler.contains(&key);
        let cache = &mut self.resize_cache;
        let new_body = |first: &crate::reassembly::Fragment<'_>| {
            RequestState::new(ix, pipeline, header.kind, first, cache)
        };
        match self
            .reassembler
            .accept(key, &header, d.len(), fragment, now, new_body)
        {
            Ok(Outcome::Pending) => {
                self.stats.fragments_accepted += 1;
                self.stats.requests_started += new_request as u64;
            }
            Ok(Outcome::Duplicate) => self.stats.duplicate_fragments += 1,
            Ok(Outcome::Complete(req)) => {
                self.stats.fragments_accepted += 1;
                self.stats.requests_started += new_request as u64;
                self.finish(out, *req, now);
            }
            Err(Reject { code, message }) => {
                self.reject(out, key, pipeline_id, code, &message, now)
            }
        }
    }

    fn describe(&mut self, out: &mut dyn ReplySink, key: Key, p: &Packet<&[u8]>, now: Instant) {
        if p.pipeline() != 0 || p.seq() != 0 || p.count() != 1 || !p.body().is_empty() {
            let msg = "DESCRIBE is seq 0, count 1, pipeline 0, empty";
            return self.reject(out, key, p.pipeline(), ErrorCode::Malformed, msg, now);
        }
        self.stats.describe_requests += 1;
        self.reassembler.mark_answered(key, now);
        if !self.upstreams.is_empty() {
            // Breaker states and open connections are live.
            self.refresh_describe();
        }
        let n = self.replies.response(
            out,
            key.client,
            key.request_id,
            0,
            content_type::JSON,
            0,
            &self.describe,
        );
        self.stats.responses_sent += 1;
        self.stats.response_datagrams += n as u64;
    }

    /// Finishes a complete request's transform and answers it (echo), or
    /// hands it to its model server.
    fn finish(&mut self, out: &mut dyn ReplySink, req: Request<RequestState>, now: Instant) {
        let release = req.release();
        let (key, pipeline_id) = (req.key, req.pipeline_id);
        let route = self.routes[req.body.pipeline().0];
        let tensors = match req.body.finish() {
            Ok(t) => t,
            Err(r) => {
                self.error(out, key, pipeline_id, r.code, &r.message);
                return self.reassembler.finish(release, now);
            }
        };
        let u = match route {
            Route::Echo => {
                let (body, header_len) = kserve_binary_response("echo", &tensors);
                let ct = content_type::KSERVE_BINARY;
                self.respond(out, key, pipeline_id, ct, header_len, &body);
                return self.reassembler.finish(release, now);
            }
            Route::Model(u) => u,
        };
        let upstream = &mut self.upstreams[u.0];
        match upstream.call(&tensors, now) {
            Ok(request) => {
                let id = self.next_call;
                self.next_call += 1;
                let timeout = Duration::from_millis(upstream.cfg.request_timeout_ms);
                self.deadlines[u.0].push_back((now + timeout, id));
                self.stats.upstream_calls += 1;
                self.waiting.insert(
                    id,
                    Waiting {
                        key,
                        pipeline_id,
                        upstream: u,
                        release,
                    },
                );
                self.waiting_keys.insert(key);
                self.calls.push_back(UpstreamCall {
                    id,
                    upstream: u,
                    request,
                });
            }
            Err(f) => {
                self.error(out, key, pipeline_id, f.code(), &f.to_string());
                self.reassembler.finish(release, now);
            }
        }
    }

    fn respond(
        &mut self,
        out: &mut dyn ReplySink,
        key: Key,
        pipeline_id: u16,
        content_type: u16,
        header_len: usize,
        body: &[u8],
    ) {
        let n = self.replies.response(
            out,
            key.client,
            key.request_id,
            pipeline_id,
            content_type,
            header_len,
            body,
        );
        self.stats.requests_completed += 1;
        self.stats.responses_sent += 1;
        self.stats.response_datagrams += n as u64;
    }

    /// What the I/O side got for call `id`: the client gets the model
    /// server's answer or the ERROR it maps to.
    pub fn on_upstream_answer(
        &mut self,
        id: CallId,
        result: CallResult,
        now: Instant,
        out: &mut dyn ReplySink,
    ) {
        let Some(w) = self.waiting.remove(&id) else {
            if id < self.next_call {
                // Given up on already (timed out, shut down).
                self.stats.upstream_late_answers += 1;
            } else {
                self.stats.upstream_unknown_completions += 1;
            }
            return;
        };
        let answer = self.upstreams[w.upstream.0].answer(result, now);
        self.answer_waiting(out, w, answer, now);
    }

    fn answer_waiting(
        &mut self,
        out: &mut dyn ReplySink,
        w: Waiting,
        answer: Result<(u16, usize, Vec<u8>), UpstreamFailure>,
        now: Instant,
    ) {
        self.waiting_keys.remove(&w.key);
        match answer {
            Ok((ct, header_len, body)) => {
                self.respond(out, w.key, w.pipeline_id, ct, header_len, &body)
            }
            Err(f) => self.error(out, w.key, w.pipeline_id, f.code(), &f.to_string()),
        }
        self.reassembler.finish(w.release, now);
    }

    /// Timers: requests whose fragments did not all arrive get INCOMPLETE;
    /// model-server calls past request_timeout_ms get UPSTREAM_UNAVAILABLE.
    pub fn on_timeout(&mut self, now: Instant, out: &mut dyn ReplySink) {
        for u in 0..self.deadlines.len() {
            while let Some(&(deadline, id)) = self.deadlines[u].front() {
                if deadline > now {
                    break;
                }
                self.deadlines[u].pop_front();
                // Answered calls leave their entry behind: skip it.
                let Some(w) = self.waiting.remove(&id) else {
                    continue;
                };
                let failure = self.upstreams[u].timed_out(now);
                self.answer_waiting(out, w, Err(failure), now);
            }
        }
        let mut expired = std::mem::take(&mut self.expired);
        expired.clear();
        self.reassembler.expire(now, &mut expired);
        for &key in &expired {
            // The pipeline id is not kept after expiry: ERROR carries 0.
            let msg = "not all fragments arrived within the reassembly timeout";
            self.error(out, key, 0, ErrorCode::Incomplete, msg);
        }
        self.expired = expired;
    }

    /// Stops waiting for model servers: every request still waiting gets
    /// UPSTREAM_UNAVAILABLE, and calls not yet taken are dropped.
    pub fn shutdown(&mut self, now: Instant, out: &mut dyn ReplySink) {
        self.calls.clear();
        let mut ids: Vec<CallId> = self.waiting.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            let w = self.waiting.remove(&id).expect("listed above");
            let msg = format!(
                "upstream {}: shutting down",
                self.upstreams[w.upstream.0].name
            );
            self.answer_waiting(out, w, Err(UpstreamFailure::Unavailable(msg)), now);
        }
        for d in &mut self.deadlines {
            d.clear();
        }
    }
}

#[cfg(test)]
mod tests;
