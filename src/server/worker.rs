//! One worker: the sans-I/O proxy core wired to its model-server
//! connection pools, as one [`DatagramHandler`] an ingress loop drives.
//! The wiring lives here once, for both the socket and AF_XDP loops.

use crate::http_pool::{blocking, UpstreamPools};
use crate::ingress::{DatagramHandler, ReplySink};
use crate::proxy::{Proxy, Stats};
use crate::upstream::{CallId, CallResult, UpstreamError, UpstreamIx};
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

/// A proxy core and the connections its calls travel on.
pub struct Worker {
    core: Proxy,
    pools: UpstreamPools,
    /// Answers collected from the pools (reused).
    answers: Vec<(CallId, CallResult)>,
}

impl Worker {
    /// Opens no connection yet; resolves the upstreams' addresses.
    pub fn new(core: Proxy) -> Result<Worker, UpstreamError> {
        let pools = UpstreamPools::new(core.upstreams().iter().map(|u| (u.name.as_str(), &u.cfg)))?;
        Ok(Worker {
            core,
            pools,
            answers: Vec::new(),
        })
    }

    pub fn core(&self) -> &Proxy {
        &self.core
    }

    /// Asks every model server whether it is ready (blocking: start-up
    /// only) and shows the result in DESCRIBE.
    pub fn check_upstreams_ready(&mut self, timeout: Duration) {
        for i in 0..self.core.upstreams().len() {
            let u = &self.core.upstreams()[i];
            let r =
                blocking::check_ready(u.cfg.kind, &u.url, &u.cfg.model, &u.cfg.version, timeout);
            match &r {
                Ok(()) => tracing::info!(upstream = %u.name, url = %u.cfg.url, "upstream ready"),
                Err(e) => {
                    tracing::warn!(upstream = %u.name, url = %u.cfg.url, "upstream not ready: {e}")
                }
            }
            self.core.set_ready_at_start(UpstreamIx(i), r);
        }
    }

    /// The core's counters with each upstream's pool counters.
    pub fn stats(&self) -> Stats {
        let mut s = self.core.stats();
        for (i, u) in s.upstreams.iter_mut().enumerate() {
            u.pool = self.pools.stats(i).clone();
        }
        s
    }

    /// Closes the model-server connections: requests still waiting get
    /// UPSTREAM_UNAVAILABLE through `out`.
    pub fn shutdown(&mut self, now: Instant, out: &mut dyn ReplySink) {
        let mut answers = std::mem::take(&mut self.answers);
        self.pools.shutdown(&mut answers);
        self.deliver(&mut answers, now, out);
        self.answers = answers;
        self.core.shutdown(now, out);
    }

    /// Hands the core's new calls to the pools and the pools' answers to
    /// the core.
    fn pump(&mut self, now: Instant, out: &mut dyn ReplySink) {
        let mut answers = std::mem::take(&mut self.answers);
        while let Some(call) = self.core.poll_call() {
            self.pools.submit(call, now, &mut answers);
        }
        self.deliver(&mut answers, now, out);
        self.answers = answers;
        for i in 0..self.pools.len() {
            let open = self.pools.stats(i).connections_open;
            self.core.set_connections_open(UpstreamIx(i), open);
        }
    }

    fn deliver(
        &mut self,
        answers: &mut Vec<(CallId, CallResult)>,
        now: Instant,
        out: &mut dyn ReplySink,
    ) {
        for (id, result) in answers.drain(..) {
            self.core.on_upstream_answer(id, result, now, out);
        }
    }

    fn drive(&mut self, now: Instant, out: &mut dyn ReplySink) {
        let mut answers = std::mem::take(&mut self.answers);
        self.pools.drive(now, &mut answers);
        self.deliver(&mut answers, now, out);
        self.answers = answers;
        self.pump(now, out);
    }
}

impl DatagramHandler for Worker {
    fn on_datagram(
        &mut self,
        from: SocketAddr,
        payload: &[u8],
        now: Instant,
        out: &mut dyn ReplySink,
    ) {
        self.core.handle(now, from, payload, out);
        if !self.pools.is_empty() {
            self.pump(now, out);
        }
    }

    fn on_tick(&mut self, now: Instant, out: &mut dyn ReplySink) {
        self.core.on_timeout(now, out);
        if !self.pools.is_empty() {
            self.drive(now, out);
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        match (self.core.next_deadline(), self.pools.next_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn wake_fd(&self) -> Option<RawFd> {
        (!self.pools.is_empty()).then(|| self.pools.fd())
    }

    fn on_wake(&mut self, now: Instant, out: &mut dyn ReplySink) {
        self.drive(now, out);
    }
}
