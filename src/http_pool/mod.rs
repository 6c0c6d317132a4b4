//! I/O to model servers: one keep-alive connection pool per upstream, all
//! on one `mio::Poll` whose epoll fd is itself pollable, so an ingress
//! loop waits on it next to its own socket. It carries the proxy core's
//! [`UpstreamCall`]s and hands back each call's [`CallResult`]; what the
//! bytes mean is the pure [`crate::upstream`] layer's business.

pub mod blocking;
mod pool;

pub use pool::{Pool, PoolConfig, Resolver, SubmitError};

use crate::upstream::{
    CallError, CallId, CallResult, PoolStats, UpstreamCall, UpstreamConfig, UpstreamError,
};
use mio::{Events, Poll, Token, Waker};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Connections per upstream are tokens `index * TOKENS_PER_UPSTREAM + slot`.
const TOKENS_PER_UPSTREAM: usize = 1 << 16;
/// The token of the waker name lookups (helper threads) end with.
const LOOKUP_DONE: Token = Token(usize::MAX);

/// The connection pools of one worker, indexed like its upstreams.
pub struct UpstreamPools {
    poll: Poll,
    events: Events,
    pools: Vec<Pool>,
    /// Tokens of one poll round (reused: no allocation per wakeup).
    tokens: Vec<Token>,
    /// `drive` stopped with events maybe left (a server streaming without
    /// end): drive again at once, after the ingress had its turn.
    undrained_at: Option<Instant>,
}

/// Poll rounds per `drive`, at most (each reads at most the pools' read
/// budget per connection).
const DRIVE_ROUNDS: usize = 8;

impl std::fmt::Debug for UpstreamPools {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamPools")
            .field("pools", &self.pools)
            .finish()
    }
}

impl UpstreamPools {
    /// One pool per upstream, in the given order (the core's
    /// [`crate::upstream::UpstreamIx`] order). Resolves the names now
    /// (blocking, at start); a name that does not resolve is an error only
    /// with `require_at_start`, otherwise its pool looks it up again before
    /// connecting (in a helper thread, with backoff).
    pub fn new<'a>(
        upstreams: impl IntoIterator<Item = (&'a str, &'a UpstreamConfig)>,
    ) -> Result<UpstreamPools, UpstreamError> {
        let poll = Poll::new().map_err(|e| UpstreamError {
            name: String::new(),
            msg: format!("epoll: {e}"),
        })?;
        let waker = Waker::new(poll.registry(), LOOKUP_DONE).map_err(|e| UpstreamError {
            name: String::new(),
            msg: format!("eventfd: {e}"),
        })?;
        let waker = Arc::new(waker);
        let mut pools = Vec::new();
        for (i, (name, cfg)) in upstreams.into_iter().enumerate() {
            let err = |msg: String| UpstreamError {
                name: name.to_string(),
                msg,
            };
            let url = crate::upstream::HttpUrl::parse(&cfg.url).map_err(err)?;
            let resolver = Resolver::dns(&url.host, url.port);
            let addrs = match resolver.resolve() {
                Ok(a) => a,
                Err(e) if cfg.require_at_start => return Err(err(e)),
                Err(e) => {
                    tracing::warn!(upstream = name, "{e}: looked up again before connecting");
                    Vec::new()
                }
            };
            let mut pool = Pool::new(
                PoolConfig {
                    resolver,
                    addrs,
                    connections: cfg.connections,
                    max_pending: cfg.max_pending,
                    connect_timeout: Duration::from_millis(cfg.connect_timeout_ms),
                    request_timeout: Duration::from_millis(cfg.request_timeout_ms),
                    backoff_initial: Duration::from_millis(cfg.reconnect_backoff_ms),
                    backoff_max: Duration::from_millis(cfg.reconnect_backoff_max_ms),
                },
                i * TOKENS_PER_UPSTREAM,
            );
            pool.set_waker(waker.clone());
            pools.push(pool);
        }
        Ok(UpstreamPools {
            poll,
            events: Events::with_capacity(256),
            pools,
            tokens: Vec::new(),
            undrained_at: None,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.pools.is_empty()
    }

    /// The fd an event loop waits on (readable = connections to drive).
    pub fn fd(&self) -> RawFd {
        self.poll.as_raw_fd()
    }

    /// Queues a call; a call refused at once is reported in `out`.
    pub fn submit(
        &mut self,
        call: UpstreamCall,
        now: Instant,
        out: &mut Vec<(CallId, CallResult)>,
    ) {
        let Some(pool) = self.pools.get_mut(call.upstream.0) else {
            let e = crate::upstream::codec::HttpError::Io(
                std::net::SocketAddr::from(([0, 0, 0, 0], 0)),
                "no such upstream".into(),
            );
            out.push((call.id, Err(CallError::Failed(e))));
            return;
        };
        match pool.submit(call.id, call.request, now, self.poll.registry()) {
            Ok(()) => {}
            Err(SubmitError::Overloaded) => out.push((call.id, Err(CallError::Overloaded))),
            Err(SubmitError::Unavailable(e)) => out.push((call.id, Err(CallError::Failed(e)))),
        }
        // A connect refused synchronously inside submit completes calls
        // without an event to announce them.
        self.collect(out);
    }

    /// Drives connections (events with a zero wait, then timers) and
    /// appends finished calls to `out`. Never blocks.
    pub fn drive(&mut self, now: Instant, out: &mut Vec<(CallId, CallResult)>) {
        if self.pools.is_empty() {
            return;
        }
        // Drain: the ingress waits on our epoll fd edge-triggered. A
        // connection that never stops sending would keep this loop going:
        // after DRIVE_ROUNDS, the rest waits for the next drive (the
        // deadline below makes it immediate).
        self.undrained_at = Some(now);
        for _ in 0..DRIVE_ROUNDS {
            match self.poll.poll(&mut self.events, Some(Duration::ZERO)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::warn!("upstream poll: {e}");
                    self.undrained_at = None;
                    break;
                }
            }
            if self.events.is_empty() {
                self.undrained_at = None;
                break;
            }
            self.tokens.clear();
            self.tokens.extend(self.events.iter().map(|e| e.token()));
            for &t in &self.tokens {
                if let Some(p) = self.pools.get_mut(t.0 / TOKENS_PER_UPSTREAM) {
                    if p.owns(t) {
                        p.on_event(t, now, self.poll.registry());
                    }
                }
            }
        }
        for p in &mut self.pools {
            // A lookup that ended woke us (LOOKUP_DONE): take its answer.
            p.poll_lookup(now, self.poll.registry());
            if p.next_deadline().is_some_and(|d| d <= now) {
                p.on_timer(now, self.poll.registry());
            }
        }
        self.collect(out);
    }

    fn collect(&mut self, out: &mut Vec<(CallId, CallResult)>) {
        for p in &mut self.pools {
            p.take_done(out);
        }
    }

    /// Closes every connection; calls in flight are reported as failed.
    pub fn shutdown(&mut self, out: &mut Vec<(CallId, CallResult)>) {
        for p in &mut self.pools {
            p.shutdown(self.poll.registry());
        }
        self.collect(out);
    }

    /// The earliest deadline (timeouts, reconnects).
    pub fn next_deadline(&self) -> Option<Instant> {
        self.pools
            .iter()
            .filter_map(Pool::next_deadline)
            .chain(self.undrained_at)
            .min()
    }

    /// Counters of the pool of upstream `i`.
    pub fn stats(&self, i: usize) -> &PoolStats {
        &self.pools[i].stats
    }

    pub fn len(&self) -> usize {
        self.pools.len()
    }
}
