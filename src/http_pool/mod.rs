//! I/O to model servers: one keep-alive connection pool per upstream, all
//! on one `mio::Poll` whose epoll fd is itself pollable, so an ingress
//! loop waits on it next to its own socket. It carries the proxy core's
//! [`UpstreamCall`]s and hands back each call's [`CallResult`]; what the
//! bytes mean is the pure [`crate::upstream`] layer's business.

pub mod blocking;
mod pool;

pub use pool::{Pool, PoolConfig, SubmitError};

use crate::upstream::{
    CallError, CallId, CallResult, PoolStats, UpstreamCall, UpstreamConfig, UpstreamError,
};
use mio::{Events, Poll, Token};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

/// Connections per upstream are tokens `index * TOKENS_PER_UPSTREAM + slot`.
const TOKENS_PER_UPSTREAM: usize = 1 << 16;

/// The connection pools of one worker, indexed like its upstreams.
pub struct UpstreamPools {
    poll: Poll,
    events: Events,
    pools: Vec<Pool>,
    /// Tokens of one poll round (reused: no allocation per wakeup).
    tokens: Vec<Token>,
}

impl std::fmt::Debug for UpstreamPools {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamPools")
            .field("pools", &self.pools)
            .finish()
    }
}

impl UpstreamPools {
    /// One pool per upstream, in the given order (the core's
    /// [`crate::upstream::UpstreamIx`] order); resolves addresses.
    pub fn new<'a>(
        upstreams: impl IntoIterator<Item = (&'a str, &'a UpstreamConfig)>,
    ) -> Result<UpstreamPools, UpstreamError> {
        let mut pools = Vec::new();
        for (i, (name, cfg)) in upstreams.into_iter().enumerate() {
            let err = |msg: String| UpstreamError {
                name: name.to_string(),
                msg,
            };
            let url = crate::upstream::HttpUrl::parse(&cfg.url).map_err(err)?;
            let addr = blocking::resolve(&url).map_err(err)?[0];
            pools.push(Pool::new(
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
            ));
        }
        let poll = Poll::new().map_err(|e| UpstreamError {
            name: String::new(),
            msg: format!("epoll: {e}"),
        })?;
        Ok(UpstreamPools {
            poll,
            events: Events::with_capacity(256),
            pools,
            tokens: Vec::new(),
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
                if let Some(p) = self.pools.get_mut(t.0 / TOKENS_PER_UPSTREAM) {
                    if p.owns(t) {
                        p.on_event(t, now, self.poll.registry());
                    }
                }
            }
        }
        for p in &mut self.pools {
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
        self.pools.iter().filter_map(Pool::next_deadline).min()
    }

    /// Counters of the pool of upstream `i`.
    pub fn stats(&self, i: usize) -> &PoolStats {
        &self.pools[i].stats
    }

    pub fn len(&self) -> usize {
        self.pools.len()
    }
}
