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
    /// Test builds only: a request_id that makes this worker panic, so
    /// the tests can prove a panicking worker is contained and restarted
    /// (`TENSORWIRE_TEST_PANIC_REQUEST_ID`; no such input exists).
    #[cfg(debug_assertions)]
    panic_on: Option<u64>,
}

impl Worker {
    /// Opens no connection yet; resolves the upstreams' addresses.
    pub fn new(mut core: Proxy) -> Result<Worker, UpstreamError> {
        // The core measures "last fragment to tensor ready" with it.
        core.set_clock(Box::new(Instant::now));
        let pools = UpstreamPools::new(core.upstreams().iter().map(|u| (u.name.as_str(), &u.cfg)))?;
        Ok(Worker {
            core,
            pools,
            answers: Vec::new(),
            #[cfg(debug_assertions)]
            panic_on: std::env::var("TENSORWIRE_TEST_PANIC_REQUEST_ID")
                .ok()
                .and_then(|v| v.parse().ok()),
        })
    }

    pub fn core(&self) -> &Proxy {
        &self.core
    }

    /// Asks every model server whether it is ready (blocking: start-up
    /// only) and shows the result in DESCRIBE. Returns (name, result).
    pub fn check_upstreams_ready(
        &mut self,
        timeout: Duration,
    ) -> Vec<(String, Result<(), String>)> {
        let mut results = Vec::new();
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
            results.push((u.name.clone(), r.clone()));
            self.core.set_ready_at_start(UpstreamIx(i), r);
        }
        results
    }

    /// Takes another worker's start-up readiness results (one check for
    /// all workers; each shows it in its DESCRIBE).
    pub fn set_ready_at_start(&mut self, results: &[(String, Result<(), String>)]) {
        for (name, r) in results {
            if let Some(i) = self.core.upstreams().iter().position(|u| &u.name == name) {
                self.core.set_ready_at_start(UpstreamIx(i), r.clone());
            }
        }
    }

    /// What the admin board shows of this worker: the counters, the
    /// latency histograms and DESCRIBE (a copy, once a second).
    pub fn report(
        &self,
        ingress: &'static str,
        queue: Option<u32>,
        ingress_counters: &impl serde::Serialize,
    ) -> crate::admin::WorkerReport {
        crate::admin::WorkerReport {
            stats: self.stats(),
            latency: self.core.latency().to_vec(),
            ingress,
            queue,
            ingress_counters: crate::admin::numeric_fields(ingress_counters),
            describe: self.core.describe_now(),
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
        #[cfg(debug_assertions)]
        if self.panic_on.is_some()
            && crate::wire::HeaderPrefix::new(payload).request_id() == self.panic_on
        {
            panic!("test hook: TENSORWIRE_TEST_PANIC_REQUEST_ID");
        }
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

    fn start_drain(&mut self, _now: Instant) {
        self.core.start_drain();
    }

    fn drained(&self) -> bool {
        self.core.is_idle()
    }
}
