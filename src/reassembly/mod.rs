//! Per-request reassembly state: a pure state machine, the clock passed in.
//!
//! A request is keyed by (client address, request_id). Fragments are kept
//! as received (an arena of payload bytes plus a small index), so memory
//! grows with the bytes clients actually sent and is bounded by the
//! configured in-flight limits, whatever the headers claim.

mod answered;

pub use answered::AnsweredKeys;

use crate::config::Limits;
use crate::wire::{HeaderRepr, ImageRepr, Kind, PixelFormat, Rect, TextRepr};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

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

/// Where one image fragment's pixels are in the arena.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImagePart {
    pub rect: Rect,
    pub out_rect: Option<Rect>,
    pub start: usize,
}

/// The image fragments received so far.
#[derive(Debug, Clone)]
pub struct ImageParts {
    pub width: u16,
    pub height: u16,
    pub format: PixelFormat,
    pub parts: Vec<ImagePart>,
    pub data: Vec<u8>,
}

impl ImageParts {
    pub fn pixels(&self, p: &ImagePart) -> &[u8] {
        &self.data[p.start..p.start + p.rect.area() as usize * self.format.channels()]
    }
}

/// Where one text chunk's bytes are in the arena.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextPart {
    pub offset: u32,
    pub start: usize,
    pub len: usize,
}

/// The text chunks received so far.
#[derive(Debug, Clone)]
pub struct TextParts {
    pub total_len: u32,
    pub parts: Vec<TextPart>,
    pub data: Vec<u8>,
}

impl TextParts {
    pub fn bytes(&self, p: &TextPart) -> &[u8] {
        &self.data[p.start..p.start + p.len]
    }
}

#[derive(Debug, Clone)]
pub enum Body {
    Image(ImageParts),
    Text(TextParts),
}

/// A request being reassembled, or complete and handed to the pipeline.
#[derive(Debug, Clone)]
pub struct Request {
    pub key: Key,
    pub pipeline: usize,
    pub pipeline_id: u16,
    pub kind: Kind,
    pub count: u32,
    pub received: u32,
    /// Payload bytes received (what the in-flight byte limits count).
    pub bytes: usize,
    pub first_seen: Instant,
    seen: Vec<u64>,
    generation: u64,
    pub body: Body,
}

impl Request {
    fn has(&self, seq: u32) -> bool {
        self.seen[(seq / 64) as usize] & (1 << (seq % 64)) != 0
    }
    fn mark(&mut self, seq: u32) {
        self.seen[(seq / 64) as usize] |= 1 << (seq % 64);
    }
}

/// What became of an accepted fragment.
#[derive(Debug)]
pub enum Outcome {
    /// Stored; more fragments are due.
    Pending,
    /// Its seq was already received: ignored, whatever its content.
    Duplicate,
    /// The last missing fragment: the whole request, out of the table but
    /// still counted in flight until [`Reassembler::finish`].
    Complete(Box<Request>),
}

/// Why a fragment was refused (the request, if any, is dropped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reject {
    Malformed(&'static str),
    Overloaded(&'static str),
}

#[derive(Debug, Default, Clone, Copy)]
struct Usage {
    requests: usize,
    bytes: usize,
}

/// All requests in flight, their limits and timeouts.
#[derive(Debug)]
pub struct Reassembler {
    limits: Limits,
    timeout: Duration,
    requests: HashMap<Key, Request>,
    /// (deadline, key, generation) in arrival order: deadlines only grow.
    deadlines: VecDeque<(Instant, Key, u64)>,
    answered: AnsweredKeys,
    per_source: HashMap<SocketAddr, Usage>,
    total: Usage,
    next_generation: u64,
}

impl Reassembler {
    pub fn new(limits: &Limits) -> Reassembler {
        let timeout = Duration::from_millis(limits.reassembly_timeout_ms);
        Reassembler {
            limits: limits.clone(),
            timeout,
            requests: HashMap::new(),
            deadlines: VecDeque::new(),
            answered: AnsweredKeys::new(limits.answered_keys, timeout),
            per_source: HashMap::new(),
            total: Usage::default(),
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
    /// checks, pipeline, limits on sizes); this checks it against the
    /// request's other fragments and the in-flight limits.
    pub fn accept(
        &mut self,
        key: Key,
        header: &HeaderRepr,
        pipeline: usize,
        datagram_len: usize,
        fragment: Fragment<'_>,
        now: Instant,
    ) -> Result<Outcome, Reject> {
        if !self.requests.contains_key(&key) {
            self.admit(key, header, pipeline, datagram_len, &fragment, now)?;
        }
        let req = self.requests.get_mut(&key).expect("admitted above");
        if header.count != req.count
            || header.kind != req.kind
            || header.pipeline != req.pipeline_id
        {
            self.abort(&key, now);
            return Err(Reject::Malformed(
                "count, kind or pipeline differs between fragments",
            ));
        }
        if req.has(header.seq) {
            return Ok(Outcome::Duplicate);
        }
        if let Err(e) = Self::check_consistent(req, &fragment) {
            self.abort(&key, now);
            return Err(e);
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
                return Err(Reject::Overloaded("max_bytes_in_flight reached"));
            }
            if src.bytes + datagram_len > self.limits.max_bytes_per_source {
                self.abort(&key, now);
                return Err(Reject::Overloaded("max_bytes_per_source reached"));
            }
        }
        let req = self.requests.get_mut(&key).expect("still present");
        req.mark(header.seq);
        req.received += 1;
        req.bytes += datagram_len;
        self.total.bytes += datagram_len;
        self.per_source.entry(key.client).or_default().bytes += datagram_len;
        match (&mut req.body, fragment) {
            (Body::Image(img), Fragment::Image { repr, pixels }) => {
                img.parts.push(ImagePart {
                    rect: repr.rect,
                    out_rect: repr.out_rect,
                    start: img.data.len(),
                });
                img.data.extend_from_slice(pixels);
            }
            (Body::Text(txt), Fragment::Text { repr, bytes }) => {
                txt.parts.push(TextPart {
                    offset: repr.offset,
                    start: txt.data.len(),
                    len: bytes.len(),
                });
                txt.data.extend_from_slice(bytes);
            }
            _ => unreachable!("checked by check_consistent"),
        }
        if req.received == req.count {
            let req = self.requests.remove(&key).expect("present");
            return Ok(Outcome::Complete(Box::new(req)));
        }
        Ok(Outcome::Pending)
    }

    fn admit(
        &mut self,
        key: Key,
        header: &HeaderRepr,
        pipeline: usize,
        datagram_len: usize,
        fragment: &Fragment<'_>,
        now: Instant,
    ) -> Result<(), Reject> {
        let l = &self.limits;
        let src = self
            .per_source
            .get(&key.client)
            .copied()
            .unwrap_or_default();
        if self.total.requests + 1 > l.max_requests_in_flight {
            return Err(Reject::Overloaded("max_requests_in_flight reached"));
        }
        if self.total.bytes + datagram_len > l.max_bytes_in_flight {
            return Err(Reject::Overloaded("max_bytes_in_flight reached"));
        }
        if src.requests + 1 > l.max_requests_per_source {
            return Err(Reject::Overloaded("max_requests_per_source reached"));
        }
        if src.bytes + datagram_len > l.max_bytes_per_source {
            return Err(Reject::Overloaded("max_bytes_per_source reached"));
        }
        let body = match fragment {
            Fragment::Image { repr, .. } => Body::Image(ImageParts {
                width: repr.width,
                height: repr.height,
                format: repr.pixel_format,
                parts: Vec::new(),
                data: Vec::new(),
            }),
            Fragment::Text { repr, .. } => Body::Text(TextParts {
                total_len: repr.total_len,
                parts: Vec::new(),
                data: Vec::new(),
            }),
        };
        let generation = self.next_generation;
        self.next_generation += 1;
        self.requests.insert(
            key,
            Request {
                key,
                pipeline,
                pipeline_id: header.pipeline,
                kind: header.kind,
                count: header.count,
                received: 0,
                bytes: 0,
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

    fn check_consistent(req: &Request, fragment: &Fragment<'_>) -> Result<(), Reject> {
        match (&req.body, fragment) {
            (Body::Image(img), Fragment::Image { repr, .. }) => {
                if repr.width != img.width
                    || repr.height != img.height
                    || repr.pixel_format != img.format
                {
                    return Err(Reject::Malformed(
                        "width, height or pixel_format differs between fragments",
                    ));
                }
            }
            (Body::Text(txt), Fragment::Text { repr, .. }) => {
                if repr.total_len != txt.total_len {
                    return Err(Reject::Malformed("total_len differs between fragments"));
                }
            }
            _ => return Err(Reject::Malformed("kind differs between fragments")),
        }
        Ok(())
    }

    /// Drops a request in flight (its answer is an ERROR) and remembers
    /// the key as answered.
    pub fn abort(&mut self, key: &Key, now: Instant) {
        if let Some(req) = self.requests.remove(key) {
            self.release(key.client, req.bytes);
        }
        self.answered.insert(*key, now);
    }

    /// A completed request got its answer: it leaves flight.
    pub fn finish(&mut self, req: &Request, now: Instant) {
        self.release(req.key.client, req.bytes);
        self.answered.insert(req.key, now);
    }

    /// Remembers a key that was answered without entering flight (an
    /// ERROR on its first fragment).
    pub fn mark_answered(&mut self, key: Key, now: Instant) {
        self.answered.insert(key, now);
    }

    fn release(&mut self, client: SocketAddr, bytes: usize) {
        self.total.requests -= 1;
        self.total.bytes -= bytes;
        if let Some(u) = self.per_source.get_mut(&client) {
            u.requests -= 1;
            u.bytes -= bytes;
            if u.requests == 0 {
                self.per_source.remove(&client);
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
