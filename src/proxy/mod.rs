//! The protocol core: one datagram in, zero or more reply datagrams out.
//! No I/O and no clock of its own (quinn-proto style): the ingress passes
//! the time in and carries the replies out, so all of this is tested
//! deterministically.

mod reply;
mod stats;

pub use reply::ReplyWriter;
pub use stats::Stats;

use crate::config::Config;
use crate::ingress::{DatagramHandler, ReplySink};
use crate::pipeline::{Pipelines, Plan, RequestState, ResizeCache};
use crate::reassembly::{Fragment, Key, Outcome, Reassembler, Reject, Release, Request};
use crate::transform::resize::ResizePlan;
use crate::upstream::echo::kserve_binary_response;
use crate::upstream::http::CallId;
use crate::upstream::{Completion, UpstreamError, Upstreams};
use crate::wire::{
    content_type, read_u16, read_u64, ErrorCode, HeaderRepr, ImageFragment, ImageRepr, Kind,
    Packet, TextChunk, TextRepr, WireError, MAGIC, VERSION,
};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

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
    release: Release,
}

/// The proxy core for one worker.
pub struct Proxy {
    config: Config,
    pipelines: Pipelines,
    describe: Vec<u8>,
    reassembler: Reassembler<RequestState>,
    resize_cache: ResizeCache,
    replies: ReplyWriter,
    stats: Stats,
    expired: Vec<Key>,
    upstreams: Upstreams,
    /// Upstream index per pipeline index (None: echo).
    pipeline_upstream: Vec<Option<usize>>,
    waiting: HashMap<(usize, CallId), Waiting>,
    /// Keys of `waiting`: their late fragments must not start a new
    /// request (the key becomes "answered" when the answer is sent).
    waiting_keys: std::collections::HashSet<Key>,
    completions: Vec<Completion>,
}

impl Proxy {
    /// A core with its model-server connections (none opened yet).
    pub fn new(config: Config, pipelines: Pipelines) -> Result<Proxy, UpstreamError> {
        let upstreams = Upstreams::build(&config.upstreams)?;
        let pipeline_upstream = pipelines
            .iter()
            .map(|p| upstreams.index_of(&p.upstream))
            .collect();
        let replies = ReplyWriter::new(
            config.ingress.reply_payload_max(false),
            config.ingress.reply_payload_max(true),
        );
        let mut proxy = Proxy {
            upstreams,
            pipeline_upstream,
            waiting: HashMap::new(),
            waiting_keys: std::collections::HashSet::new(),
            completions: Vec::new(),
            reassembler: Reassembler::new(&config.limits),
            resize_cache: ResizeCache::new(64),
            config,
            pipelines,
            describe: Vec::new(),
            replies,
            stats: Stats::default(),
            expired: Vec::new(),
        };
        proxy.refresh_describe();
        Ok(proxy)
    }

    /// Builds pipelines from `config` (loads tokenizers) and the core.
    pub fn from_config(config: Config) -> Result<Proxy, BuildError> {
        let pipelines = Pipelines::build(&config)?;
        Ok(Proxy::new(config, pipelines)?)
    }

    /// Checks every upstream's readiness (blocking, start-up only) and
    /// shows the result in DESCRIBE.
    pub fn check_upstreams_ready(&mut self, timeout: std::time::Duration) {
        self.upstreams.check_ready(timeout);
        self.refresh_describe();
    }

    /// Closes model-server connections; requests still waiting get
    /// UPSTREAM_UNAVAILABLE through `out`.
    pub fn shutdown(&mut self, now: Instant, out: &mut dyn ReplySink) {
        self.upstreams.shutdown();
        self.upstream_ready(now, out);
    }

    fn refresh_describe(&mut self) {
        let mut d = crate::pipeline::describe(&self.config, &self.pipelines);
        if !self.upstreams.is_empty() {
            d["upstreams"] = self.upstreams.describe().into();
        }
        self.describe = serde_json::to_vec(&d).expect("JSON");
    }

    pub fn stats(&self) -> Stats {
        let mut s = self.stats.clone();
        let (r, b) = self.reassembler.in_flight();
        s.requests_in_flight = r as u64;
        s.bytes_in_flight = b as u64;
        s.answered_keys_evicted = self.reassembler.answered_evicted();
        s.state_bytes = self.reassembler.held_bytes() as u64;
        s.resize_plans_built = self.resize_cache.misses;
        s.upstream_calls_waiting = self.waiting.len() as u64;
        s.upstreams = self.upstreams.stats();
        s
    }

    pub fn describe_json(&self) -> &[u8] {
        &self.describe
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    fn error(
        &mut self,
        out: &mut dyn ReplySink,
        to: SocketAddr,
        request_id: u64,
        pipeline: u16,
        code: ErrorCode,
        msg: &str,
    ) {
        self.stats.error(code);
        self.replies.error(out, to, request_id, pipeline, code, msg);
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
        self.error(out, key.client, key.request_id, pipeline, code, msg);
    }

    fn handle(&mut self, from: SocketAddr, d: &[u8], now: Instant, out: &mut dyn ReplySink) {
        self.stats.datagrams_in += 1;
        self.stats.bytes_in += d.len() as u64;
        if d.len() < 2 || read_u16(d, 0..2) != MAGIC {
            self.stats.dropped_not_twp += 1;
            return;
        }
        if d.len() < 16 {
            // No request_id to answer to.
            self.stats.dropped_truncated += 1;
            return;
        }
        let request_id = read_u64(d, 8..16);
        let pipeline_id = read_u16(d, 6..8);
        let key = Key {
            client: from,
            request_id,
        };
        if d.len() >= 4 && Kind::from_u8(d[3]).is_some_and(Kind::is_reply) {
            self.stats.dropped_reply_kind += 1;
            return;
        }
        if self.reassembler.is_answered(&key, now) || self.waiting_keys.contains(&key) {
            self.stats.late_fragments += 1;
            return;
        }
        if d.len() >= 24 && self.reassembler.is_duplicate(&key, read_u32_at(d, 16)) {
            self.stats.duplicate_fragments += 1;
            return;
        }
        // Errors in the spec's order: version, pipeline, kind, malformed,
        // too large, overloaded.
        if d.len() < 3 || d[2] != VERSION {
            let msg = format!(
                "version {} is not supported (this proxy speaks 1)",
                d.get(2).copied().unwrap_or(0)
            );
            return self.reject(
                out,
                key,
                pipeline_id,
                ErrorCode::UnsupportedVersion,
                &msg,
                now,
            );
        }
        let Ok(packet) = Packet::new_checked(d) else {
            return self.reject(
                out,
                key,
                pipeline_id,
                ErrorCode::Malformed,
                "datagram shorter than the 24-byte header",
                now,
            );
        };
        if packet.kind() == Some(Kind::Describe) {
            return self.describe(out, key, &packet, now);
        }
        let pipeline = match self.pipelines.index_of(pipeline_id) {
            Some(i) if pipeline_id != 0 => i,
            _ => {
                let msg = format!("no pipeline with id {pipeline_id}");
                return self.reject(out, key, pipeline_id, ErrorCode::UnknownPipeline, &msg, now);
            }
        };
        let header = match HeaderRepr::parse(&packet) {
            Ok(h) => h,
            Err(e) => {
                return self.reject(
                    out,
                    key,
                    pipeline_id,
                    ErrorCode::Malformed,
                    &e.to_string(),
                    now,
                )
            }
        };
        let p = self.pipelines.get(pipeline);
        if !p.accepts_kind(header.kind) {
            let msg = format!(
                "pipeline {} ({}) does not take {:?} datagrams",
                p.id, p.name, header.kind
            );
            return self.reject(out, key, pipeline_id, ErrorCode::KindMismatch, &msg, now);
        }
        if header.kind.is_image() {
            if let Ok(fmt) = ImageRepr::peek_pixel_format(packet.body()) {
                if !p.pixel_formats.contains(&fmt) {
                    let msg = format!(
                        "pipeline {} does not take pixel format {}",
                        p.id,
                        fmt.name()
                    );
                    return self.reject(out, key, pipeline_id, ErrorCode::KindMismatch, &msg, now);
                }
            }
        }
        if d.len() > self.config.limits.max_datagram {
            let msg = format!(
                "datagram of {} bytes exceeds max_datagram {}",
                d.len(),
                self.config.limits.max_datagram
            );
            return self.reject(out, key, pipeline_id, ErrorCode::Malformed, &msg, now);
        }
        let fragment = match self.parse_fragment(pipeline, header.kind, packet.body()) {
            Ok(f) => f,
            Err((code, msg)) => return self.reject(out, key, pipeline_id, code, &msg, now),
        };
        let l = &self.config.limits;
        if header.count > l.max_fragments {
            let msg = format!(
                "count {} exceeds max_fragments {}",
                header.count, l.max_fragments
            );
            return self.reject(out, key, pipeline_id, ErrorCode::TooLarge, &msg, now);
        }
        match fragment {
            Fragment::Image { repr, .. } => {
                let px = repr.width as u64 * repr.height as u64;
                if px > l.max_image_pixels {
                    let msg = format!(
                        "{}x{} exceeds max_image_pixels {}",
                        repr.width, repr.height, l.max_image_pixels
                    );
                    return self.reject(out, key, pipeline_id, ErrorCode::TooLarge, &msg, now);
                }
                if let Err(msg) = self.check_tile(pipeline, &repr) {
                    return self.reject(
                        out,
                        key,
                        pipeline_id,
                        ErrorCode::InvalidContent,
                        &msg,
                        now,
                    );
                }
            }
            Fragment::Text { repr, .. } => {
                if repr.total_len > l.max_text_bytes {
                    let msg = format!(
                        "total_len {} exceeds max_text_bytes {}",
                        repr.total_len, l.max_text_bytes
                    );
                    return self.reject(out, key, pipeline_id, ErrorCode::TooLarge, &msg, now);
                }
            }
        }
        let new_request = !self.reassembler.contains(&key);
        let (pipelines, cache) = (&self.pipelines, &mut self.resize_cache);
        let new_body = |first: &Fragment<'_>| {
            RequestState::new(pipelines.get(pipeline), header.kind, first, cache)
        };
        match self
            .reassembler
            .accept(key, &header, pipeline, d.len(), fragment, now, new_body)
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

    fn parse_fragment<'a>(
        &self,
        pipeline: usize,
        kind: Kind,
        body: &'a [u8],
    ) -> Result<Fragment<'a>, (ErrorCode, String)> {
        let malformed = |e: WireError| (ErrorCode::Malformed, e.to_string());
        match kind {
            Kind::ImageRows | Kind::ImageTile => {
                let f = ImageFragment::new_checked(body).map_err(malformed)?;
                let repr = ImageRepr::parse(kind, &f).map_err(malformed)?;
                if let (Some(out), Plan::Image(plan)) =
                    (repr.out_rect, &self.pipelines.get(pipeline).plan)
                {
                    if !out.inside(plan.out_width(), plan.out_height()) {
                        return Err((
                            ErrorCode::Malformed,
                            format!(
                                "tile output rectangle {out:?} lies outside the {}x{} output",
                                plan.out_width(),
                                plan.out_height()
                            ),
                        ));
                    }
                }
                let pixels = &body[crate::wire::image::IMAGE_HEADER_LEN..];
                Ok(Fragment::Image { repr, pixels })
            }
            Kind::TextChunk => {
                let c = TextChunk::new_checked(body).map_err(malformed)?;
                let repr = TextRepr::parse(&c).map_err(malformed)?;
                Ok(Fragment::Text {
                    repr,
                    bytes: &body[crate::wire::text::TEXT_HEADER_LEN..],
                })
            }
            _ => Err((ErrorCode::Malformed, format!("{kind:?} is not a data kind"))),
        }
    }

    /// A tile must hold the input windows of every pixel of its output
    /// rectangle.
    fn check_tile(&self, pipeline: usize, repr: &ImageRepr) -> Result<(), String> {
        let (Some(out), Plan::Image(plan)) = (repr.out_rect, &self.pipelines.get(pipeline).plan)
        else {
            return Ok(());
        };
        let need = ResizePlan::halo_rect(
            plan.resampling,
            repr.width as u32,
            repr.height as u32,
            plan.out_width(),
            plan.out_height(),
            out,
        );
        if repr.rect.contains(&need) {
            Ok(())
        } else {
            Err(format!(
                "tile input {:?} lacks the halo for output {out:?}: needs {need:?}",
                repr.rect
            ))
        }
    }

    fn describe(&mut self, out: &mut dyn ReplySink, key: Key, p: &Packet<&[u8]>, now: Instant) {
        if p.pipeline() != 0 || p.seq() != 0 || p.count() != 1 || !p.body().is_empty() {
            return self.reject(
                out,
                key,
                p.pipeline(),
                ErrorCode::Malformed,
                "DESCRIBE is seq 0, count 1, pipeline 0, empty",
                now,
            );
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
        let upstream = self.pipeline_upstream[req.pipeline];
        match req.body.finish() {
            Ok(tensors) => match upstream {
                None => {
                    let (body, header_len) = kserve_binary_response("echo", &tensors);
                    self.respond(
                        out,
                        key,
                        pipeline_id,
                        content_type::KSERVE_BINARY,
                        header_len,
                        &body,
                    );
                }
                Some(u) => match self.upstreams.submit(u, &tensors, now) {
                    Ok(call) => {
                        self.stats.upstream_calls += 1;
                        let w = Waiting {
                            key,
                            pipeline_id,
                            release,
                        };
                        self.waiting.insert((u, call), w);
                        self.waiting_keys.insert(key);
                        // Answered later, from `upstream_ready` (at once
                        // if the call already failed inside submit).
                        if self.upstreams.has_completions() {
                            self.upstream_ready(now, out);
                        }
                        return;
                    }
                    Err(f) => self.error(
                        out,
                        key.client,
                        key.request_id,
                        pipeline_id,
                        f.code(),
                        &f.to_string(),
                    ),
                },
            },
            Err(r) => self.error(
                out,
                key.client,
                key.request_id,
                pipeline_id,
                r.code,
                &r.message,
            ),
        }
        self.reassembler.finish(release, now);
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

    /// Drives the model-server connections and answers finished calls.
    fn upstream_ready(&mut self, now: Instant, out: &mut dyn ReplySink) {
        if self.upstreams.is_empty() {
            return;
        }
        let mut done = std::mem::take(&mut self.completions);
        self.upstreams.drive(now, &mut done);
        for c in done.drain(..) {
            let Some(w) = self.waiting.remove(&(c.upstream, c.call)) else {
                // Every call is registered before it can complete.
                self.stats.upstream_unknown_completions += 1;
                continue;
            };
            self.waiting_keys.remove(&w.key);
            match c.result {
                Ok((ct, header_len, body)) => {
                    self.respond(out, w.key, w.pipeline_id, ct, header_len, &body)
                }
                Err(f) => self.error(
                    out,
                    w.key.client,
                    w.key.request_id,
                    w.pipeline_id,
                    f.code(),
                    &f.to_string(),
                ),
            }
            self.reassembler.finish(w.release, now);
        }
        self.completions = done;
    }

    fn tick(&mut self, now: Instant, out: &mut dyn ReplySink) {
        self.upstream_ready(now, out);
        let mut expired = std::mem::take(&mut self.expired);
        expired.clear();
        self.reassembler.expire(now, &mut expired);
        for key in &expired {
            // The pipeline id is not kept after expiry: ERROR carries 0.
            self.error(
                out,
                key.client,
                key.request_id,
                0,
                ErrorCode::Incomplete,
                "not all fragments arrived within the reassembly timeout",
            );
        }
        self.expired = expired;
    }
}

fn read_u32_at(d: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([d[at], d[at + 1], d[at + 2], d[at + 3]])
}

impl DatagramHandler for Proxy {
    fn on_datagram(
        &mut self,
        from: SocketAddr,
        payload: &[u8],
        now: Instant,
        out: &mut dyn ReplySink,
    ) {
        self.handle(from, payload, now, out);
    }
    fn on_tick(&mut self, now: Instant, out: &mut dyn ReplySink) {
        self.tick(now, out);
    }
    fn next_deadline(&self) -> Option<Instant> {
        match (
            self.reassembler.next_deadline(),
            self.upstreams.next_deadline(),
        ) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
    fn upstream_fd(&self) -> Option<std::os::fd::RawFd> {
        (!self.upstreams.is_empty()).then(|| self.upstreams.fd())
    }
    fn on_upstream_ready(&mut self, now: Instant, out: &mut dyn ReplySink) {
        self.upstream_ready(now, out);
    }
}
