//! The protocol core of one worker, sans I/O (quinn-proto's shape):
//! datagrams and model-server answers go in with the time passed in;
//! reply datagrams come out through a [`ReplySink`] and model-server
//! requests as [`UpstreamCall`]s from [`Proxy::poll_call`]. No sockets, no
//! DNS, no clock of its own: the ingress drivers and the connection pools
//! (I/O) carry the bytes, and every path here is tested deterministically.

mod describe;
mod reply;
mod stats;
pub mod validation;

pub use reply::{ReplySink, ReplyWriter};
pub use stats::{record as record_latency, PipelineLatency, PipelineStats, Stats};
pub use validation::{Prefix, SecuritySettings};

use crate::pipeline::{PipelineIx, Pipelines, RequestState, ResizeCache};
use crate::reassembly::{
    Expired, Expiry, Key, Limits, Outcome, Reassembler, Reject, Release, Request,
};

use crate::upstream::echo::kserve_binary_response;
use crate::upstream::{
    CallId, CallResult, Upstream, UpstreamCall, UpstreamConfig, UpstreamError, UpstreamFailure,
    UpstreamIx,
};
use crate::wire::hello::MIN_HELLO_DATAGRAM;
use crate::wire::{content_type, ErrorCode, HeaderPrefix, HeaderRepr, Kind, Packet, MAGIC};
use crate::wire::{HelloPacket, HelloRepr, TokenRepr, HEADER_LEN, VERSION};
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use validation::{AddrTable, Budget, TokenKeys};

/// RETRY's message (at most 40 bytes: a 24-byte datagram earns 72).
pub const RETRY_MSG: &str = "address not validated: send HELLO";

/// Where a pipeline's tensors go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// The built-in `echo`: answered at once with the tensors.
    Echo,
    /// A configured model server.
    Model(UpstreamIx),
}

/// The core's settings (from `[limits]`, `[ingress]` and `[security]`).
#[derive(Debug, Clone)]
pub struct ProxySettings {
    pub limits: Limits,
    pub security: SecuritySettings,
    /// Largest reply UDP payload for IPv4 and IPv6 peers (from the MTU).
    pub reply_payload_max_v4: usize,
    pub reply_payload_max_v6: usize,
}

impl ProxySettings {
    /// Reply sizes for an MTU: the IP and UDP headers come off.
    pub fn new(limits: Limits, mtu: u32, security: SecuritySettings) -> ProxySettings {
        ProxySettings {
            limits,
            security,
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
    pipeline: PipelineIx,
    /// The request's first fragment and its hand-over (latencies).
    first_seen: Instant,
    called_at: Instant,
}

/// A second instant source for the core: "tensor ready" is measured
/// after the transform's work within one call. The worker passes
/// `Instant::now`; tests pass a fake or none (then `now` is used).
pub type Clock = Box<dyn Fn() -> Instant + Send>;

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
    expired: Vec<Expired>,
    /// Stateless tokens (address validation).
    tokens: TokenKeys,
    /// Addresses that proved they receive at their address.
    validated: AddrTable<()>,
    /// Bytes received from and sent to addresses not validated.
    budgets: AddrTable<Budget>,
    waiting: HashMap<CallId, Waiting>,
    /// Keys of `waiting`: their late fragments must not start a new
    /// request (the key becomes "answered" when the answer is sent).
    waiting_keys: HashSet<Key>,
    /// Per upstream: (deadline, call) in submission order; a call's
    /// answer is given up on at its deadline (request_timeout_ms).
    deadlines: Vec<VecDeque<(Instant, CallId)>>,
    /// Calls for the I/O side, taken with [`Proxy::poll_call`].
    calls: VecDeque<UpstreamCall>,
    /// Shutting down: new requests are refused, those in flight finish.
    draining: bool,
    next_call: CallId,
    /// Latency histograms per pipeline (indexed by [`PipelineIx`]).
    latency: Vec<PipelineLatency>,
    clock: Option<Clock>,
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
        let mut stats = Stats::default();
        let replies =
            ReplyWriter::new(settings.reply_payload_max_v4, settings.reply_payload_max_v6);
        stats.pipelines = pipelines
            .iter()
            .map(|p| PipelineStats {
                id: p.id,
                name: p.name.clone(),
                ..Default::default()
            })
            .collect();
        let sec = &settings.security;
        let lifetime = Duration::from_secs(sec.validation_lifetime_s.into());
        let tokens = TokenKeys::new(sec.secret, sec.epoch, sec.token_lifetime_s);
        let validated = AddrTable::new(sec.validated_addresses, lifetime);
        let budgets = AddrTable::new(sec.validated_addresses, lifetime);
        let mut proxy = Proxy {
            latency: pipelines
                .iter()
                .map(|_| PipelineLatency::default())
                .collect(),
            clock: None,
            deadlines: upstreams.iter().map(|_| VecDeque::new()).collect(),
            upstreams,
            routes,
            waiting: HashMap::new(),
            waiting_keys: HashSet::new(),
            calls: VecDeque::new(),
            next_call: 1,
            draining: false,
            reassembler: Reassembler::new(&settings.limits),
            resize_cache: ResizeCache::new(64),
            settings,
            pipelines,
            describe: Vec::new(),
            replies,
            stats,
            expired: Vec::new(),
            tokens,
            validated,
            budgets,
        };
        proxy.refresh_describe();
        Ok(proxy)
    }

    /// Gives the core a clock for the "tensor ready" instant (see [`Clock`]).
    pub fn set_clock(&mut self, clock: Clock) {
        self.clock = Some(clock);
    }

    /// The instant after work done within a call that began at `now`.
    fn later(&self, now: Instant) -> Instant {
        self.clock.as_ref().map_or(now, |c| c().max(now))
    }

    /// Latency histograms per pipeline, in configuration order.
    pub fn latency(&self) -> &[PipelineLatency] {
        &self.latency
    }

    /// The DESCRIBE document with the upstreams' live state.
    pub fn describe_now(&self) -> serde_json::Value {
        describe::document(&self.settings, &self.pipelines, &self.upstreams)
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
        s.validated_addresses = self.validated.len() as u64;
        s.validated_evictions = self.validated.evicted();
        s.budget_evictions = self.budgets.evicted();
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

    /// Sends an ERROR, within the budget of an unvalidated address (a
    /// RETRY instead if it does not fit; nothing if not even that fits).
    fn error(
        &mut self,
        out: &mut dyn ReplySink,
        key: Key,
        pipeline: u16,
        code: ErrorCode,
        msg: &str,
        now: Instant,
    ) {
        let n = ReplyWriter::error_len(code, msg);
        if !self.may_send(key.client, n, now) {
            self.stats.budget_bytes_refused += n as u64;
            if code == ErrorCode::Retry {
                self.stats.budget_drops += 1;
                return;
            }
            return self.error(out, key, pipeline, ErrorCode::Retry, RETRY_MSG, now);
        }
        if code == ErrorCode::Retry {
            self.stats.retries_sent += 1;
        }
        self.stats.error(code);
        if let Some(ix) = self.pipelines.index_of(pipeline) {
            self.stats.pipelines[ix.0].errors_by_code[code.index()] += 1;
        }
        self.replies
            .error(out, key.client, key.request_id, pipeline, code, msg);
    }

    /// Whether address validation lets `to` be sent `n` more bytes now;
    /// charges them to its budget if so.
    fn may_send(&mut self, to: SocketAddr, n: usize, now: Instant) -> bool {
        if !self.settings.security.address_validation || self.validated.contains(&to, now) {
            return true;
        }
        match self.budgets.touch(&to, now) {
            Some(b) if b.left() >= n as u64 => {
                b.sent += n as u64;
                true
            }
            _ => false,
        }
    }

    /// Counts a datagram's bytes to its source's budget (or keeps a
    /// validated source alive); true when the source is validated.
    fn note_received(&mut self, from: SocketAddr, len: usize, now: Instant) -> bool {
        if !self.settings.security.address_validation || self.validated.touch(&from, now).is_some()
        {
            return true;
        }
        match self.budgets.touch(&from, now) {
            Some(b) => b.received += len as u64,
            None => {
                let b = Budget {
                    received: len as u64,
                    sent: 0,
                };
                self.budgets.insert(from, b, now);
            }
        }
        false
    }

    /// Whether `addr` is validated (or validation is off).
    pub fn is_validated(&self, addr: SocketAddr, now: Instant) -> bool {
        !self.settings.security.address_validation || self.validated.contains(&addr, now)
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
        self.error(out, key, pipeline, code, msg, now);
    }

    /// One datagram from `from`; replies go to `out`.
    pub fn handle(&mut self, now: Instant, from: SocketAddr, d: &[u8], out: &mut dyn ReplySink) {
        self.stats.datagrams_in += 1;
        self.stats.bytes_in += d.len() as u64;
        let allow = &self.settings.security.allowlist;
        if !allow.is_empty() && !allow.iter().any(|p| p.contains(from.ip())) {
            self.stats.dropped_allowlist += 1;
            return;
        }
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
        let validated = self.note_received(from, d.len(), now);
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
        if packet.kind() == Some(Kind::Hello) {
            return self.hello(out, key, &packet, d.len(), now);
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
        let limits = &self.settings.limits;
        let checked =
            self.pipelines
                .get(ix)
                .check_fragment(&header, d.len(), packet.body(), limits);
        let fragment = match checked {
            Ok(f) => f,
            Err(Reject { code, message }) => {
                return self.reject(out, key, pipeline_id, code, &message, now)
            }
        };
        let new_request = !self.reassembler.contains(&key);
        if new_request && self.draining {
            self.stats.refused_draining += 1;
            let msg = "draining: this proxy is shutting down; send the request again (elsewhere)";
            return self.reject(out, key, pipeline_id, ErrorCode::Overloaded, msg, now);
        }
        if new_request && !validated && self.routes[ix.0] == Route::Echo {
            // Decided at the first fragment, before any work or state:
            // the answer's size follows from the pipeline, the bytes the
            // whole request brings from its header.
            let bound = self.pipelines.get(ix).echo_answer_bound(&fragment);
            let answer = self.replies.response_len(from, bound);
            let coming =
                crate::pipeline::Pipeline::request_min_bytes(header.kind, header.count, &fragment)
                    .saturating_sub(d.len());
            let left = self.budgets.touch(&from, now).map_or(0, |b| b.left());
            if left + validation::AMPLIFICATION_FACTOR * (coming as u64) < (answer as u64) {
                self.stats.budget_bytes_refused += answer as u64;
                return self.reject(out, key, pipeline_id, ErrorCode::Retry, RETRY_MSG, now);
            }
        }
        let pipeline = self.pipelines.get(ix);
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
                self.stats.pipelines[ix.0].requests_started += new_request as u64;
            }
            Ok(Outcome::Duplicate) => self.stats.duplicate_fragments += 1,
            Ok(Outcome::Complete(req)) => {
                self.stats.fragments_accepted += 1;
                self.stats.requests_started += new_request as u64;
                self.stats.pipelines[ix.0].requests_started += new_request as u64;
                self.finish(out, *req, now);
            }
            Err(Reject { code, message }) => {
                self.reject(out, key, pipeline_id, code, &message, now)
            }
        }
    }

    /// HELLO (spec "Address validation"): a first HELLO (no token, 1200
    /// bytes or more) gets a token; a HELLO with a good token for its
    /// address (and, with a pre-shared key, the key's proof) validates
    /// the address. No state is kept for unvalidated HELLOs.
    fn hello(
        &mut self,
        out: &mut dyn ReplySink,
        key: Key,
        p: &Packet<&[u8]>,
        len: usize,
        now: Instant,
    ) {
        self.stats.hellos += 1;
        if p.pipeline() != 0 || p.seq() != 0 || p.count() != 1 {
            let msg = "HELLO is seq 0, count 1, pipeline 0";
            return self.error(out, key, p.pipeline(), ErrorCode::Malformed, msg, now);
        }
        let body = match HelloPacket::new_checked(p.body()) {
            Ok(b) => b,
            Err(e) => {
                let msg = format!("HELLO: {e}");
                return self.error(out, key, 0, ErrorCode::Malformed, &msg, now);
            }
        };
        let hello = HelloRepr::parse(&body).expect("checked");
        if hello.token.is_empty() && len < MIN_HELLO_DATAGRAM {
            let msg = "a HELLO without a token must be at least 1200 bytes";
            return self.error(out, key, 0, ErrorCode::Malformed, msg, now);
        }
        let sec = &self.settings.security;
        let from = key.client;
        if !sec.address_validation {
            let lifetime_s = sec.validation_lifetime_s;
            let t = TokenRepr {
                validated: true,
                lifetime_s,
                token: &[],
            };
            return self.send_token(out, key, &t, now);
        }
        if !hello.token.is_empty() {
            match self.tokens.check(hello.token, from, now) {
                Ok(()) => {
                    let psk_ok = match (&sec.psk, hello.proof) {
                        (None, _) => true,
                        (Some(psk), Some(proof)) => {
                            validation::psk_proof_ok(psk, hello.token, proof)
                        }
                        (Some(_), None) => false,
                    };
                    if psk_ok {
                        self.stats.validations += 1;
                        let lifetime_s = sec.validation_lifetime_s;
                        self.validated.insert(from, (), now);
                        let token = hello.token.to_vec();
                        let t = TokenRepr {
                            validated: true,
                            lifetime_s,
                            token: &token,
                        };
                        return self.send_token(out, key, &t, now);
                    }
                    self.stats.psk_failures += 1;
                }
                Err(_) => self.stats.validation_failures += 1,
            }
        }
        let token = self.tokens.make(from, now);
        let t = TokenRepr {
            validated: false,
            lifetime_s: self.tokens.lifetime_s(),
            token: &token,
        };
        self.send_token(out, key, &t, now)
    }

    fn send_token(&mut self, out: &mut dyn ReplySink, key: Key, t: &TokenRepr<'_>, now: Instant) {
        let n = HEADER_LEN + t.buffer_len();
        if !self.may_send(key.client, n, now) {
            self.stats.budget_bytes_refused += n as u64;
            self.stats.budget_drops += 1;
            return;
        }
        self.stats.tokens_sent += 1;
        self.replies.token(out, key.client, key.request_id, t);
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
        let len = self.replies.response_len(key.client, self.describe.len());
        if !self.may_send(key.client, len, now) {
            self.stats.budget_bytes_refused += len as u64;
            return self.error(out, key, 0, ErrorCode::Retry, RETRY_MSG, now);
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
        let ix = req.body.pipeline();
        let route = self.routes[ix.0];
        let first_seen = req.first_seen;
        let tensors = match req.body.finish() {
            Ok(t) => t,
            Err(r) => {
                self.error(out, key, pipeline_id, r.code, &r.message, now);
                return self.reassembler.finish(release, now);
            }
        };
        let ready = self.later(now);
        let lat = &mut self.latency[ix.0];
        stats::record(
            &mut lat.fragments,
            now.saturating_duration_since(first_seen),
        );
        stats::record(&mut lat.tensor_ready, ready.saturating_duration_since(now));
        let u = match route {
            Route::Echo => {
                let (body, header_len) = kserve_binary_response("echo", &tensors);
                let ct = content_type::KSERVE_BINARY;
                self.respond(out, key, pipeline_id, ct, header_len, &body, now);
                let done = self.later(ready);
                let total = done.saturating_duration_since(first_seen);
                stats::record(&mut self.latency[ix.0].total, total);
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
                        pipeline: ix,
                        first_seen,
                        called_at: ready,
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
                self.error(out, key, pipeline_id, f.code(), &f.to_string(), now);
                self.reassembler.finish(release, now);
            }
        }
    }

    /// Sends a RESPONSE, or RETRY if it exceeds the budget of an
    /// unvalidated address (model-server answers, whose size is known
    /// only now).
    #[allow(clippy::too_many_arguments)]
    fn respond(
        &mut self,
        out: &mut dyn ReplySink,
        key: Key,
        pipeline_id: u16,
        content_type: u16,
        header_len: usize,
        body: &[u8],
        now: Instant,
    ) {
        let len = self.replies.response_len(key.client, body.len());
        if !self.may_send(key.client, len, now) {
            self.stats.budget_bytes_refused += len as u64;
            return self.error(out, key, pipeline_id, ErrorCode::Retry, RETRY_MSG, now);
        }
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
        if let Some(ix) = self.pipelines.index_of(pipeline_id) {
            self.stats.pipelines[ix.0].responses += 1;
        }
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
        let lat = &mut self.latency[w.pipeline.0];
        stats::record(
            &mut lat.upstream,
            now.saturating_duration_since(w.called_at),
        );
        if answer.is_ok() {
            stats::record(&mut lat.total, now.saturating_duration_since(w.first_seen));
        }
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
                self.respond(out, w.key, w.pipeline_id, ct, header_len, &body, now)
            }
            Err(f) => self.error(out, w.key, w.pipeline_id, f.code(), &f.to_string(), now),
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
        for e in &expired {
            let msg = match e.why {
                Expiry::Idle => {
                    "no new fragment within the reassembly timeout (reassembly_timeout_ms)"
                }
                Expiry::Deadline => {
                    "not all fragments arrived within the request deadline (request_deadline_ms)"
                }
            };
            self.error(out, e.key, e.pipeline_id, ErrorCode::Incomplete, msg, now);
        }
        self.validated.purge(now);
        self.budgets.purge(now);
        self.expired = expired;
    }

    /// Shutdown begins: from now on a new request gets OVERLOADED, while
    /// requests already in flight (reassembling or waiting for a model
    /// server) go on to their answers.
    pub fn start_drain(&mut self) {
        self.draining = true;
    }

    /// No request in flight and no call waiting: draining is done.
    pub fn is_idle(&self) -> bool {
        self.reassembler.in_flight().0 == 0 && self.waiting.is_empty()
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
