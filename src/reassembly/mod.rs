//! Per-request reassembly state: a pure state machine, the clock passed in.
//!
//! A request is keyed by (client address, request_id). Reassembly owns
//! sequencing (seq bitmap, duplicates), limits, timeouts and answered
//! keys; each fragment's content goes to the request's [`Assembly`] (the
//! pipeline's streaming state), so what a request holds grows with what
//! clients actually sent, never with what a header claims.

mod answered;
mod coverage;

pub use answered::AnsweredKeys;
pub use coverage::Coverage;

use crate::wire::{ErrorCode, HeaderRepr, ImageRepr, Kind, TextRepr};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Protocol limits (DESCRIBE's `limits`) and memory bounds.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    pub max_datagram: usize,
    pub reassembly_timeout_ms: u64,
    pub max_fragments: u32,
    pub max_image_pixels: u64,
    pub max_text_bytes: u32,
    pub max_requests_in_flight: usize,
    pub max_bytes_in_flight: usize,
    pub max_requests_per_source: usize,
    pub max_bytes_per_source: usize,
    /// Memory requests in flight may hold (output tensors, streaming
    /// windows, text), all clients together.
    pub max_state_bytes: usize,
    pub answered_keys: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_datagram: 1472,
            reassembly_timeout_ms: 250,
            max_fragments: 65536,
            max_image_pixels: 16_777_216,
            max_text_bytes: 1_048_576,
            max_requests_in_flight: 1024,
            max_bytes_in_flight: 268_435_456,
            max_requests_per_source: 256,
            max_bytes_per_source: 67_108_864,
            max_state_bytes: 536_870_912,
            answered_keys: 65536,
        }
    }
}

impl Limits {
    /// Checks the values: Err((key, why)).
    pub fn check(&self) -> Result<(), (&'static str, &'static str)> {
        if !(64..=65507).contains(&self.max_datagram) {
            return Err(("max_datagram", "must be between 64 and 65507"));
        }
        for (k, v) in [
            ("reassembly_timeout_ms", self.reassembly_timeout_ms),
            ("max_fragments", self.max_fragments as u64),
            ("max_image_pixels", self.max_image_pixels),
            ("max_requests_in_flight", self.max_requests_in_flight as u64),
            ("max_bytes_in_flight", self.max_bytes_in_flight as u64),
            (
                "max_requests_per_source",
                self.max_requests_per_source as u64,
            ),
            ("max_bytes_per_source", self.max_bytes_per_source as u64),
            ("max_state_bytes", self.max_state_bytes as u64),
            ("answered_keys", self.answered_keys as u64),
        ] {
            if v == 0 {
                return Err((k, "must be at least 1"));
            }
        }
        Ok(())
    }
}

/// Identifies a request: the client socket and its request_id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key {
    pub client: SocketAddr,
    pub request_id: u64,
}

/// One fragment's content, borrowed from the datagram.
#[derive(Debug, Clone, Copy)]
pub enum Fragment<'a> {
    Image { repr: ImageRepr, pixels: &'a [u8] },
    Text { repr: TextRepr, bytes: &'a [u8] },
}

/// What a request's fragments are handed to once reassembly has checked
/// sequencing, duplicates and limits: the pipeline's per-request state
/// (a streaming transform, or a store for the text). It checks content
/// rules that involve several fragments (same geometry, overlaps).
pub trait Assembly {
    /// Takes one new fragment (never a duplicate).
    fn add(&mut self, fragment: &Fragment<'_>) -> Result<(), Reject>;
    /// Bytes this request holds in memory now (for the counters).
    fn held_bytes(&self) -> usize;
}

/// A request being reassembled, or complete and handed to the pipeline.
#[derive(Debug)]
pub struct Request<B> {
    pub key: Key,
    pub pipeline_id: u16,
    pub kind: Kind,
    pub count: u32,
    pub received: u32,
    /// Payload bytes received (what the in-flight byte limits count).
    pub bytes: usize,
    /// Memory the body held after its last fragment.
    held: usize,
    pub first_seen: Instant,
    seen: Vec<u64>,
    generation: u64,
    pub body: B,
}

/// What [`Reassembler::finish`] needs of a completed request whose body
/// was consumed.
#[derive(Debug, Clone, Copy)]
pub struct Release {
    key: Key,
    bytes: usize,
    held: usize,
}

impl<B> Request<B> {
    pub fn release(&self) -> Release {
        Release {
            key: self.key,
            bytes: self.bytes,
            held: self.held,
        }
    }

    fn has(&self, seq: u32) -> bool {
        self.seen[(seq / 64) as usize] & (1 << (seq % 64)) != 0
    }
    fn mark(&mut self, seq: u32) {
        self.seen[(seq / 64) as usize] |= 1 << (seq % 64);
    }
}

/// What became of an accepted fragment.
#[derive(Debug)]
pub enum Outcome<B> {
    /// Stored; more fragments are due.
    Pending,
    /// Its seq was already received: ignored, whatever its content.
    Duplicate,
    /// The last missing fragment: the whole request, out of the table but
    /// still counted in flight until [`Reassembler::finish`].
    Complete(Box<Request<B>>),
}

/// Why a fragment was refused: the ERROR the request gets (the request,
/// if any, is dropped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    pub code: ErrorCode,
    pub message: String,
}

impl Reject {
    pub fn malformed(message: impl Into<String>) -> Reject {
        Reject {
            code: ErrorCode::Malformed,
            message: message.into(),
        }
    }
    pub fn overloaded(message: impl Into<String>) -> Reject {
        Reject {
            code: ErrorCode::Overloaded,
            message: message.into(),
        }
    }
    pub fn invalid(message: impl Into<String>) -> Reject {
        Reject {
            code: ErrorCode::InvalidContent,
            message: message.into(),
        }
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Usage {
    requests: usize,
    bytes: usize,
}

impl Usage {
    fn sub(&mut self, bytes: usize) {
        self.requests -= 1;
        self.bytes -= bytes;
    }
}

/// All requests in flight, their limits and timeouts.
#[derive(Debug)]
pub struct Reassembler<B> {
    limits: Limits,
    timeout: Duration,
    requests: HashMap<Key, Request<B>>,
    /// (deadline, key, generation) in arrival order: deadlines only grow.
    deadlines: VecDeque<(Instant, Key, u64)>,
    answered: AnsweredKeys,
    per_source: HashMap<SocketAddr, Usage>,
    total: Usage,
    /// Memory held by the bodies of requests in flight.
    held: usize,
    next_generation: u64,
}

impl<B: Assembly> Reassembler<B> {
    pub fn new(limits: &Limits) -> Reassembler<B> {
        let timeout = Duration::from_millis(limits.reassembly_timeout_ms);
        Reassembler {
            limits: limits.clone(),
            timeout,
            requests: HashMap::new(),
            deadlines: VecDeque::new(),
            answered: AnsweredKeys::new(limits.answered_keys, timeout),
            per_source: HashMap::new(),
            total: Usage::default(),
            held: 0,
            next_generation: 0,
        }
    }

    /// Requests and bytes in flight, all clients together.
    pub fn in_flight(&self) -> (usize, usize) {
        (self.total.requests, self.total.bytes)
    }

    /// Whether a request with this key is being reassembled.
    pub fn contains(&self, key: &Key) -> bool {
        self.requests.contains_key(key)
    }

    /// Memory the requests in flight hold (transform state, text).
    pub fn held_bytes(&self) -> usize {
        self.held
    }

    /// Requests still being reassembled.
    pub fn reassembling(&self) -> usize {
        self.requests.len()
    }

    /// Whether `key` already got its answer (late fragments are ignored).
    pub fn is_answered(&mut self, key: &Key, now: Instant) -> bool {
        self.answered.contains(key, now)
    }

    /// Answered keys forgotten before their time because the table was full.
    pub fn answered_evicted(&self) -> u64 {
        self.answered.evicted()
    }

    /// Whether this fragment's seq was already received for a request in
    /// flight.
    pub fn is_duplicate(&self, key: &Key, seq: u32) -> bool {
        self.requests
            .get(key)
            .is_some_and(|r| seq < r.count && r.has(seq))
    }

    /// Adds a fragment. The caller has validated it on its own (wire
    /// checks, pipeline, limits on sizes); this checks sequencing and the
    /// in-flight limits, and hands it to the request's [`Assembly`]
    /// (`new_body` makes one for a new request).
    #[allow(clippy::too_many_arguments)]
    pub fn accept(
        &mut self,
        key: Key,
        header: &HeaderRepr,
        datagram_len: usize,
        fragment: Fragment<'_>,
        now: Instant,
        new_body: impl FnOnce(&Fragment<'_>) -> Result<B, Reject>,
    ) -> Result<Outcome<B>, Reject> {
        if !self.requests.contains_key(&key) {
            self.admit(key, header, datagram_len, &fragment, now, new_body)?;
        }
        let req = self.requests.get_mut(&key).expect("admitted above");
        if header.count != req.count
            || header.kind != req.kind
            || header.pipeline != req.pipeline_id
        {
            self.abort(&key, now);
            return Err(Reject::malformed(
                "count, kind or pipeline differs between fragments",
            ));
        }
        if req.has(header.seq) {
            return Ok(Outcome::Duplicate);
        }
        // In-flight byte limits apply to every fragment, not just the first.
        let src = self
            .per_source
            .get(&key.client)
            .copied()
            .unwrap_or_default();
        if req.received > 0 {
            if self.total.bytes + datagram_len > self.limits.max_bytes_in_flight {
                self.abort(&key, now);
                return Err(Reject::overloaded("max_bytes_in_flight reached"));
            }
            if src.bytes + datagram_len > self.limits.max_bytes_per_source {
                self.abort(&key, now);
                return Err(Reject::overloaded("max_bytes_per_source reached"));
            }
        }
        let req = self.requests.get_mut(&key).expect("still present");
        if let Err(e) = req.body.add(&fragment) {
            self.abort(&key, now);
            return Err(e);
        }
        let held = req.body.held_bytes();
        self.held = self.held - req.held + held;
        req.held = held;
        if self.held > self.limits.max_state_bytes {
            self.abort(&key, now);
            return Err(Reject::overloaded("max_state_bytes reached"));
        }
        req.mark(header.seq);
        req.received += 1;
        req.bytes += datagram_len;
        self.total.bytes += datagram_len;
        self.per_source.entry(key.client).or_default().bytes += datagram_len;
        if req.received == req.count {
            let req = self.requests.remove(&key).expect("present");
            return Ok(Outcome::Complete(Box::new(req)));
        }
        Ok(Outcome::Pending)
    }

    #[allow(clippy::too_many_arguments)]
    fn admit(
        &mut self,
        key: Key,
        header: &HeaderRepr,
        datagram_len: usize,
        fragment: &Fragment<'_>,
        now: Instant,
        new_body: impl FnOnce(&Fragment<'_>) -> Result<B, Reject>,
    ) -> Result<(), Reject> {
        let l = &self.limits;
        let src = self
            .per_source
            .get(&key.client)
            .copied()
            .unwrap_or_default();
        if self.total.requests + 1 > l.max_requests_in_flight {
            return Err(Reject::overloaded("max_requests_in_flight reached"));
        }
        if self.total.bytes + datagram_len > l.max_bytes_in_flight {
            return Err(Reject::overloaded("max_bytes_in_flight reached"));
        }
        if src.requests + 1 > l.max_requests_per_source {
            return Err(Reject::overloaded("max_requests_per_source reached"));
        }
        if src.bytes + datagram_len > l.max_bytes_per_source {
            return Err(Reject::overloaded("max_bytes_per_source reached"));
        }
        let body = new_body(fragment)?;
        let held = body.held_bytes();
        if self.held + held > l.max_state_bytes {
            return Err(Reject::overloaded("max_state_bytes reached"));
        }
        self.held += held;
        let generation = self.next_generation;
        self.next_generation += 1;
        self.requests.insert(
            key,
            Request {
                key,
                pipeline_id: header.pipeline,
                kind: header.kind,
                count: header.count,
                received: 0,
                bytes: 0,
                held,
                first_seen: now,
                seen: vec![0; header.count.div_ceil(64) as usize],
                generation,
                body,
            },
        );
        self.deadlines
            .push_back((now + self.timeout, key, generation));
        self.total.requests += 1;
        self.per_source.entry(key.client).or_default().requests += 1;
        Ok(())
    }

    /// Drops a request in flight (its answer is an ERROR) and remembers
    /// the key as answered.
    pub fn abort(&mut self, key: &Key, now: Instant) {
        if let Some(req) = self.requests.remove(key) {
            self.release(req.release());
        }
        self.answered.insert(*key, now);
    }

    /// A completed request got its answer: it leaves flight.
    pub fn finish(&mut self, done: Release, now: Instant) {
        self.release(done);
        self.answered.insert(done.key, now);
    }

    /// Remembers a key that was answered without entering flight (an
    /// ERROR on its first fragment).
    pub fn mark_answered(&mut self, key: Key, now: Instant) {
        self.answered.insert(key, now);
    }

    fn release(&mut self, r: Release) {
        self.total.sub(r.bytes);
        self.held -= r.held;
        if let Some(u) = self.per_source.get_mut(&r.key.client) {
            u.sub(r.bytes);
            if u.requests == 0 {
                self.per_source.remove(&r.key.client);
            }
        }
    }

    /// Removes requests whose reassembly timeout has passed; their keys
    /// are appended to `expired` (each gets INCOMPLETE).
    pub fn expire(&mut self, now: Instant, expired: &mut Vec<Key>) {
        while let Some(&(deadline, key, generation)) = self.deadlines.front() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_front();
            if self
                .requests
                .get(&key)
                .is_some_and(|r| r.generation == generation)
            {
                self.abort(&key, now);
                expired.push(key);
            }
        }
        self.answered.purge(now);
    }

    /// When [`Reassembler::expire`] has work next.
    pub fn next_deadline(&self) -> Option<Instant> {
        // Stale entries (requests already answered) only make us wake early.
        self.deadlines.front().map(|d| d.0)
    }
}

#[cfg(test)]
mod tests;
