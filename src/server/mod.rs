//! Running the proxy: workers (core + model-server connections) behind an
//! ingress, in this thread or spawned ones (tests, the demo). This is the
//! wiring layer: it reads the configuration and builds each layer from it.

pub mod checks;
mod worker;

pub use worker::Worker;

use crate::admin::{AdminServer, Board};

use crate::config::Config;
use crate::ingress::udp::{UdpIngress, UdpStats};
use crate::proxy::Stats;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// A proxy serving on a UDP socket in a background thread.
pub struct RunningProxy {
    pub addr: SocketAddr,
    shutdown: Arc<AtomicBool>,
    handle: Option<JoinHandle<io::Result<(Stats, UdpStats)>>>,
}

impl RunningProxy {
    /// Builds the core from `config` and serves on `addr` (port 0: any).
    pub fn spawn(config: Config, addr: SocketAddr) -> anyhow::Result<RunningProxy> {
        let mut worker = Worker::new(config.build_proxy()?)?;
        worker.check_upstreams_ready(READY_TIMEOUT);
        let mut ingress = UdpIngress::bind(addr, &config.udp_settings())?;
        let addr = ingress.local_addr()?;
        let shutdown = Arc::new(AtomicBool::new(false));
        let flag = shutdown.clone();
        let handle = std::thread::Builder::new()
            .name("tensorwire-udp".into())
            .spawn(move || {
                ingress.run(&mut worker, &flag, |_, _| {})?;
                let mut dropped = Vec::new();
                worker.shutdown(std::time::Instant::now(), &mut dropped);
                Ok((worker.stats(), ingress.stats.clone()))
            })?;
        Ok(RunningProxy {
            addr,
            shutdown,
            handle: Some(handle),
        })
    }

    /// Stops the proxy and returns its final counters.
    pub fn stop(mut self) -> io::Result<(Stats, UdpStats)> {
        self.shutdown.store(true, Ordering::Relaxed);
        self.handle
            .take()
            .expect("joined once")
            .join()
            .expect("proxy thread panicked")
    }
}

impl Drop for RunningProxy {
    fn drop(&mut self) {
        self.shutdown.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Serves on the UDP socket ingress until `shutdown` is set, logging
/// progress: `ingress.workers` threads, each with its own socket (one
/// SO_REUSEPORT group), proxy core, reassembly and model-server pools,
/// pinned to a core when there are enough. Returns each worker's final
/// counters.
///
/// With `drop_privileges`, the calling thread drops every capability and
/// sets no_new_privs once the sockets are bound (a port below 1024 needs
/// CAP_NET_BIND_SERVICE only for the bind); the threads started after it
/// (workers, admin, probes) inherit that.
pub fn serve_udp(
    config: &Config,
    shutdown: &AtomicBool,
    drop_privileges: bool,
) -> anyhow::Result<Vec<(Stats, UdpStats)>> {
    log_security(config);
    let n = config.ingress.worker_count();
    let settings = config.udp_settings();
    let mut ingresses = Vec::with_capacity(n);
    let mut listen = config.ingress.listen;
    for _ in 0..n {
        let bind = if n > 1 {
            UdpIngress::bind_shared(listen, &settings)
        } else {
            UdpIngress::bind(listen, &settings)
        };
        let ingress = bind.map_err(|e| anyhow::anyhow!("cannot bind {listen}: {e}"))?;
        // Port 0: the others join the port the first one got.
        listen = ingress.local_addr()?;
        ingresses.push(ingress);
    }
    if drop_privileges {
        crate::privileges::drop_all().map_err(anyhow::Error::msg)?;
    }
    let admin = start_admin(config)?;
    let board = admin.as_ref().map(|a| a.0.clone());
    let pipelines = config.build_pipelines()?;
    // One token secret for every worker: a token made by one is good at
    // the others (and after a worker's restart).
    let security = config.security_settings()?;
    let mut workers = Vec::with_capacity(n);
    let mut ready = Vec::new();
    for i in 0..n {
        let mut w = Worker::new(config.build_proxy_for(pipelines.clone(), security.clone(), n)?)?;
        if i == 0 {
            ready = w.check_upstreams_ready(READY_TIMEOUT);
        } else {
            w.set_ready_at_start(&ready);
        }
        workers.push(w);
    }
    checks::check_metadata(config, READY_TIMEOUT)?;
    let _probe = start_probes(config, ready, board.as_ref())?;
    tracing::info!(listen = %listen, mode = "socket", workers = n, pipelines = config.pipelines.len(), "tensorwire serving");
    if let Some(b) = &board {
        b.set_ingress_bound(listen);
    }
    let log_every = config.stats.log_interval_ms;
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    std::thread::scope(|scope| {
        let handles: Vec<_> = ingresses
            .into_iter()
            .zip(workers)
            .enumerate()
            .map(|(i, (mut ingress, mut worker))| {
                let board = board.clone();
                let (pipelines, security) = (&pipelines, &security);
                scope.spawn(move || -> anyhow::Result<(Stats, UdpStats)> {
                    if n > 1 && cores >= n {
                        pin_to_core(i);
                    }
                    // One worker keeps the historical name; the metrics sum
                    // socket workers (no per-queue labels).
                    let name = if n == 1 {
                        "socket".to_string()
                    } else {
                        format!("socket{i}")
                    };
                    let queue = None;
                    let heartbeat = board.as_ref().map(|b| {
                        b.publish_worker(&name, worker.report("socket", queue, &ingress.stats));
                        b.heartbeat(&name)
                    });
                    let mut since_log = 0u64;
                    ingress.log_every(Some(PUBLISH_EVERY));
                    let rebuild = || -> anyhow::Result<Worker> {
                        Ok(Worker::new(config.build_proxy_for(
                            pipelines.clone(),
                            security.clone(),
                            n,
                        )?)?)
                    };
                    let mut restarts = 0;
                    contained(&name, &mut worker, &rebuild, &mut restarts, |worker| {
                        ingress.run(worker, shutdown, |w, u| {
                            since_log += PUBLISH_EVERY.as_millis() as u64;
                            if log_every > 0 && since_log >= log_every {
                                since_log = 0;
                                log_stats(&w.stats(), &name, &crate::admin::numeric_fields(u));
                            }
                            if let (Some(b), Some(h)) = (&board, &heartbeat) {
                                h.beat();
                                b.publish_worker(&name, w.report("socket", queue, u));
                            }
                        })
                    })??;
                    ingress.stats.worker_restarts = restarts;
                    if let Some(b) = &board {
                        b.worker_stopped(&name);
                    }
                    Ok((worker.stats(), ingress.stats.clone()))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| anyhow::anyhow!("socket worker panicked"))?
            })
            .collect()
    })
}

/// Runs a worker's loop. A panic inside it (a bug: every parser is fuzzed
/// so that no input reaches one) is caught, logged and counted, and the
/// loop goes on with a fresh core on the same ingress, whose socket or
/// AF_XDP queue stays bound (no privilege is needed again). The requests
/// that worker held are lost: their clients time out and retry.
fn contained<T>(
    name: &str,
    worker: &mut Worker,
    rebuild: &dyn Fn() -> anyhow::Result<Worker>,
    restarts: &mut u64,
    mut run: impl FnMut(&mut Worker) -> T,
) -> anyhow::Result<T> {
    loop {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(worker))) {
            Ok(r) => return Ok(r),
            Err(p) => {
                let msg = p
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| p.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                *restarts += 1;
                tracing::error!(
                    worker = name,
                    restarts = *restarts,
                    "worker panicked ({msg}); restarted with a fresh core on the same ingress"
                );
                *worker = rebuild()?;
            }
        }
    }
}

/// The periodic stats line, as structured fields (JSON logs keep them
/// apart): the core's main counters, the ingress's, and per model server.
pub fn log_stats(s: &Stats, ingress: &str, ingress_counters: &[(String, u64)]) {
    let ing: Vec<String> = ingress_counters
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let errors: Vec<String> = crate::wire::ErrorCode::ALL
        .into_iter()
        .filter(|c| s.errors(*c) > 0)
        .map(|c| format!("{}={}", c.name(), s.errors(c)))
        .collect();
    let ups: Vec<String> = s
        .upstreams
        .iter()
        .map(|u| {
            format!(
                "{}: calls={} ok={} in_flight={} breaker={}",
                u.name, u.pool.calls, u.pool.calls_ok, u.pool.calls_in_flight, u.breaker
            )
        })
        .collect();
    tracing::info!(
        datagrams = s.datagrams_in,
        bytes = s.bytes_in,
        requests = s.requests_started,
        responses = s.responses_sent,
        errors = s.errors_sent,
        errors_by_code = %errors.join(" "),
        in_flight = s.requests_in_flight,
        bytes_in_flight = s.bytes_in_flight,
        duplicates = s.duplicate_fragments,
        late = s.late_fragments,
        not_twp = s.dropped_not_twp,
        ingress,
        ingress_counters = %ing.join(" "),
        upstreams = %ups.join(" | "),
        "stats"
    );
}

/// Stops the background probe thread when dropped.
pub struct ProbeGuard {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for ProbeGuard {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Shows the start-up readiness checks on /readyz and starts a
/// background probe of the servers that were not ready.
fn start_probes(
    config: &Config,
    results: Vec<(String, Result<(), String>)>,
    board: Option<&Arc<Board>>,
) -> anyhow::Result<Option<ProbeGuard>> {
    let Some(board) = board else {
        return Ok(None);
    };
    for (name, r) in results {
        board.set_probe(&name, r);
    }
    if config.upstreams.is_empty() {
        return Ok(None);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let thread = checks::spawn_reprobe(config, board.clone(), REPROBE_EVERY, stop.clone())?;
    Ok(Some(ProbeGuard {
        stop,
        thread: Some(thread),
    }))
}

/// How often a model server that was not ready is probed again.
pub const REPROBE_EVERY: Duration = Duration::from_secs(2);

/// Says at start what `[security]` does, loudly when validation is off.
fn log_security(config: &Config) {
    let s = &config.security;
    if s.address_validation {
        tracing::info!(
            psk = !s.psk_file.is_empty(),
            allowlist = s.allowlist.len(),
            "address validation on: unvalidated sources get at most 3x the bytes they send"
        );
    } else {
        tracing::warn!(
            "ADDRESS VALIDATION IS OFF ([security] address_validation = false): any source, \
             forged or not, gets full answers; this proxy is a UDP amplifier unless only \
             trusted hosts can reach it"
        );
    }
}

/// How long the start-up readiness check waits for each upstream.
pub const READY_TIMEOUT: Duration = Duration::from_millis(1000);

/// How often workers publish counters to the admin endpoint.
pub const PUBLISH_EVERY: Duration = Duration::from_secs(1);

/// Starts the admin endpoint when configured: the board the workers
/// publish to and its HTTP server (stopped when dropped).
pub fn start_admin(config: &Config) -> anyhow::Result<Option<(Arc<Board>, AdminServer)>> {
    if config.admin.listen.is_empty() {
        return Ok(None);
    }
    let board = Board::new();
    Ok(spawn_admin(config, board.clone())?.map(|a| (board, a)))
}

/// Serves `board` on `admin.listen` (a warning, not an error, if the
/// address is taken).
fn spawn_admin(config: &Config, board: Arc<Board>) -> anyhow::Result<Option<AdminServer>> {
    let addr: SocketAddr = config
        .admin
        .listen
        .parse()
        .map_err(|e| anyhow::anyhow!("admin.listen `{}`: {e}", config.admin.listen))?;
    match crate::admin::spawn(addr, board) {
        Ok(a) => {
            tracing::info!(admin = %a.addr, "admin endpoint: /healthz /readyz /describe /metrics");
            Ok(Some(a))
        }
        Err(e) => {
            tracing::warn!("admin endpoint {addr} not started: {e}");
            Ok(None)
        }
    }
}

/// The proxy behind the AF_XDP ingress: the steering program attached to
/// `config.ingress.interface` and one worker thread (with its own proxy
/// core) per RX queue. Must be created and stopped on the same thread,
/// which must be in the interface's network namespace.
pub struct XdpProxy {
    program: crate::ingress::xdp::loader::SteeringProgram,
    shutdown: Arc<AtomicBool>,
    workers: Vec<JoinHandle<io::Result<(Stats, crate::ingress::xdp::worker::XdpWorkerStats)>>>,
}

impl XdpProxy {
    /// Attaches and starts serving; `queues` = 0 means every RX queue.
    pub fn start(config: &Config, queues: u32) -> anyhow::Result<XdpProxy> {
        Self::start_with_board(config, queues, None, false)
    }

    /// As [`XdpProxy::start`], workers publishing their counters to `board`;
    /// with `drop_privileges`, every capability of the calling thread is
    /// dropped (and no_new_privs set) once the program is attached and
    /// the sockets are bound, before the workers start (they inherit it).
    pub fn start_with_board(
        config: &Config,
        queues: u32,
        board: Option<Arc<Board>>,
        drop_privileges: bool,
    ) -> anyhow::Result<XdpProxy> {
        use crate::ingress::xdp::{loader::SteeringProgram, worker};
        let ifname = &config.ingress.interface;
        anyhow::ensure!(
            !ifname.is_empty(),
            "ingress.interface is empty: AF_XDP needs an interface"
        );
        let pipelines = config.build_pipelines()?;
        // One token secret for every queue's core: a token made by one
        // is good at the others.
        let security = config.security_settings()?;
        log_security(config);
        let xdp = &config.ingress.xdp;
        let queues = if queues == 0 {
            crate::ingress::xdp::ethtool::rx_queues(ifname)
        } else {
            queues
        };
        // The UMEM is locked memory: 4 KiB frames per queue.
        let umem = queues as u64 * xdp.frames as u64 * 4096;
        crate::privileges::allow_locked_memory(umem).map_err(anyhow::Error::msg)?;
        let program = SteeringProgram::attach(
            ifname,
            config.ingress.listen.port(),
            &config.security.allowlist,
        )?;
        let mut bound = Vec::new();
        for q in 0..queues {
            bound.push(worker::XdpQueue::bind(ifname, q, &program, xdp)?);
        }
        if drop_privileges {
            crate::privileges::drop_all().map_err(anyhow::Error::msg)?;
            tracing::info!("capabilities dropped, no_new_privs set (AF_XDP set up)");
        }
        let shutdown = Arc::new(AtomicBool::new(false));
        let mut workers = Vec::new();
        let mut ready = Vec::new();
        for (q, mut queue) in (0..queues).zip(bound) {
            queue.set_drain_timeout(Duration::from_millis(config.ingress.drain_timeout_ms));
            let core = config.build_proxy_for(pipelines.clone(), security.clone(), 1)?;
            let mut worker = Worker::new(core)?;
            if q == 0 {
                ready = worker.check_upstreams_ready(READY_TIMEOUT);
                for (n, r) in &ready {
                    if let Some(b) = &board {
                        b.set_probe(n, r.clone());
                    }
                }
            } else {
                worker.set_ready_at_start(&ready);
            }
            let name = format!("queue{q}");
            let heartbeat = board.as_ref().map(|b| {
                b.publish_worker(&name, worker.report("af_xdp", Some(q), &queue.stats));
                b.heartbeat(&name)
            });
            let flag = shutdown.clone();
            let cores = std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1);
            let board = board.clone();
            let (cfg, pipelines, security) = (config.clone(), pipelines.clone(), security.clone());
            workers.push(
                std::thread::Builder::new()
                    .name(format!("tensorwire-xdp-q{q}"))
                    .spawn(move || {
                        if cores > 1 {
                            pin_to_core(q as usize % cores);
                        }
                        let rebuild = || -> anyhow::Result<Worker> {
                            let core =
                                cfg.build_proxy_for(pipelines.clone(), security.clone(), 1)?;
                            Ok(Worker::new(core)?)
                        };
                        let mut restarts = 0;
                        contained(&name, &mut worker, &rebuild, &mut restarts, |worker| {
                            queue.run(worker, &flag, PUBLISH_EVERY, |w, x| {
                                if let (Some(b), Some(h)) = (&board, &heartbeat) {
                                    h.beat();
                                    b.publish_worker(&name, w.report("af_xdp", Some(q), x));
                                }
                            })
                        })
                        .map_err(|e| io::Error::other(format!("{e:#}")))??;
                        queue.stats.worker_restarts = restarts;
                        if let Some(b) = &board {
                            b.worker_stopped(&name);
                        }
                        Ok((worker.stats(), queue.stats.clone()))
                    })?,
            );
        }
        tracing::info!(
            ifname,
            queues,
            xdp_mode = program.mode,
            port = config.ingress.listen.port(),
            "tensorwire serving over AF_XDP"
        );
        Ok(XdpProxy {
            program,
            shutdown,
            workers,
        })
    }

    /// "native" or "generic" XDP.
    pub fn mode(&self) -> &'static str {
        self.program.mode
    }

    pub fn counters(&self) -> anyhow::Result<crate::ingress::xdp::loader::XdpCounters> {
        Ok(self.program.counters()?)
    }

    /// Stops the workers and detaches the program.
    pub fn stop(self) -> anyhow::Result<Vec<(Stats, crate::ingress::xdp::worker::XdpWorkerStats)>> {
        self.shutdown.store(true, Ordering::Relaxed);
        let mut out = Vec::new();
        for w in self.workers {
            out.push(
                w.join()
                    .map_err(|_| anyhow::anyhow!("XDP worker panicked"))??,
            );
        }
        Ok(out)
    }
}

pub(crate) fn pin_to_core(core: usize) {
    // SAFETY: a zeroed cpu_set_t with one bit set, for this thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Serves over AF_XDP in this thread's network namespace until `shutdown`
/// is set, logging progress.
pub fn serve_xdp(config: &Config, shutdown: &AtomicBool) -> anyhow::Result<()> {
    let board = (!config.admin.listen.is_empty()).then(Board::new);
    checks::check_metadata(config, READY_TIMEOUT)?;
    // Queue 0's worker checks readiness and tells the board. Capabilities
    // go once the program is attached and the sockets bound: every thread
    // started after (workers, admin, probes) has none.
    let proxy = XdpProxy::start_with_board(config, 0, board.clone(), true)?;
    let _admin = match &board {
        Some(b) => spawn_admin(config, b.clone())?,
        None => None,
    };
    let _probe = match &board {
        Some(b) => start_probes(config, Vec::new(), Some(b))?,
        None => None,
    };
    if let Some(b) = &board {
        b.set_ingress_bound(format!(
            "{}:{}",
            config.ingress.interface,
            config.ingress.listen.port()
        ));
    }
    let mut next_publish = std::time::Instant::now();
    let interval = Duration::from_millis(config.stats.log_interval_ms.max(100));
    let mut next = std::time::Instant::now() + interval;
    while !shutdown.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
        if let Some(b) = board
            .as_ref()
            .filter(|_| std::time::Instant::now() >= next_publish)
        {
            b.publish_xdp_program(crate::admin::numeric_fields(&proxy.counters()?));
            next_publish += PUBLISH_EVERY;
        }
        if config.stats.log_interval_ms > 0 && std::time::Instant::now() >= next {
            let c = proxy.counters()?;
            tracing::info!(
                steered = c.steered,
                passed = c.passed,
                dropped_allowlist = c.dropped_allowlist,
                malformed = c.malformed,
                no_socket = c.no_socket,
                "xdp program"
            );
            next += interval;
        }
    }
    for (stats, q) in proxy.stop()? {
        tracing::info!(
            "stopped queue {}: {stats} | frames={} replies={} dropped={}",
            q.queue,
            q.frames_received,
            q.replies_sent,
            q.replies_dropped
        );
    }
    Ok(())
}

/// Why AF_XDP cannot be used here, if it cannot (for `ingress.mode = auto`).
pub fn xdp_unavailable(config: &Config) -> Option<String> {
    if config.ingress.interface.is_empty() {
        return Some("ingress.interface is not set".into());
    }
    crate::privileges::xdp_missing()
}
