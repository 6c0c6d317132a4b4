//! Running the proxy: workers (core + model-server connections) behind an
//! ingress, in this thread or spawned ones (tests, the demo). This is the
//! wiring layer: it reads the configuration and builds each layer from it.

mod worker;

pub use worker::Worker;

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

/// Serves in this thread until `shutdown` is set, logging progress.
pub fn serve_udp(config: &Config, shutdown: &AtomicBool) -> anyhow::Result<(Stats, UdpStats)> {
    let mut worker = Worker::new(config.build_proxy()?)?;
    worker.check_upstreams_ready(READY_TIMEOUT);
    let mut ingress = UdpIngress::bind(config.ingress.listen, &config.udp_settings())
        .map_err(|e| anyhow::anyhow!("cannot bind {}: {e}", config.ingress.listen))?;
    tracing::info!(listen = %ingress.local_addr()?, mode = "socket", pipelines = config.pipelines.len(), "tensorwire serving");
    let board = start_admin(config)?;
    let log_every = config.stats.log_interval_ms;
    let mut since_log = 0u64;
    ingress.log_every(Some(PUBLISH_EVERY));
    ingress.run(&mut worker, shutdown, |w, u| {
        let stats = w.stats();
        since_log += PUBLISH_EVERY.as_millis() as u64;
        if log_every > 0 && since_log >= log_every {
            since_log = 0;
            tracing::info!(
                "stats: {stats} | socket sent={} queued={} dropped={}",
                u.sent,
                u.send_queued,
                u.send_dropped
            );
        }
        if let Some(b) = &board {
            b.publish("proxy", &stats);
            b.publish("socket", u);
        }
    })?;
    Ok((worker.stats(), ingress.stats.clone()))
}

/// How long the start-up readiness check waits for each upstream.
pub const READY_TIMEOUT: Duration = Duration::from_millis(1000);

/// How often workers publish counters to the admin endpoint.
pub const PUBLISH_EVERY: Duration = Duration::from_secs(1);

/// Starts the admin endpoint when configured.
fn start_admin(config: &Config) -> anyhow::Result<Option<Arc<crate::admin::StatsBoard>>> {
    if config.admin.listen.is_empty() {
        return Ok(None);
    }
    let addr: SocketAddr = config
        .admin
        .listen
        .parse()
        .map_err(|e| anyhow::anyhow!("admin.listen `{}`: {e}", config.admin.listen))?;
    let board = crate::admin::StatsBoard::new();
    // The admin thread lives as long as the process.
    match crate::admin::spawn(addr, board.clone(), Arc::new(AtomicBool::new(false))) {
        Ok(a) => tracing::info!(admin = %a, "counters served for `tensorwire stats`"),
        Err(e) => tracing::warn!("admin endpoint {addr} not started: {e}"),
    }
    Ok(Some(board))
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
        Self::start_with_board(config, queues, None)
    }

    /// As [`XdpProxy::start`], workers publishing their counters to `board`.
    pub fn start_with_board(
        config: &Config,
        queues: u32,
        board: Option<Arc<crate::admin::StatsBoard>>,
    ) -> anyhow::Result<XdpProxy> {
        use crate::ingress::xdp::{loader::SteeringProgram, worker};
        let ifname = &config.ingress.interface;
        anyhow::ensure!(
            !ifname.is_empty(),
            "ingress.interface is empty: AF_XDP needs an interface"
        );
        let pipelines = config.build_pipelines()?;
        let xdp = &config.ingress.xdp;
        let program =
            SteeringProgram::attach(ifname, config.ingress.listen.port(), &xdp.allowlist)?;
        let queues = if queues == 0 {
            crate::ingress::xdp::ethtool::rx_queues(ifname)
        } else {
            queues
        };
        let shutdown = Arc::new(AtomicBool::new(false));
        let mut workers = Vec::new();
        for q in 0..queues {
            let mut queue = worker::XdpQueue::bind(ifname, q, &program, xdp)?;
            let mut worker = Worker::new(config.build_proxy_with(pipelines.clone())?)?;
            if q == 0 {
                worker.check_upstreams_ready(READY_TIMEOUT);
            }
            let flag = shutdown.clone();
            let cores = std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1);
            let board = board.clone();
            workers.push(
                std::thread::Builder::new()
                    .name(format!("tensorwire-xdp-q{q}"))
                    .spawn(move || {
                        if cores > 1 {
                            pin_to_core(q as usize % cores);
                        }
                        queue.run(&mut worker, &flag, PUBLISH_EVERY, |w, x| {
                            if let Some(b) = &board {
                                let v = serde_json::json!({"proxy": w.stats(), "af_xdp": x});
                                b.publish(&format!("queue{q}"), v);
                            }
                        })?;
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
    let board = start_admin(config)?;
    let proxy = XdpProxy::start_with_board(config, 0, board.clone())?;
    let mut next_publish = std::time::Instant::now();
    let interval = Duration::from_millis(config.stats.log_interval_ms.max(100));
    let mut next = std::time::Instant::now() + interval;
    while !shutdown.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
        if let Some(b) = board
            .as_ref()
            .filter(|_| std::time::Instant::now() >= next_publish)
        {
            b.publish("xdp_program", proxy.counters()?);
            next_publish += PUBLISH_EVERY;
        }
        if config.stats.log_interval_ms > 0 && std::time::Instant::now() >= next {
            tracing::info!("xdp: {:?}", proxy.counters()?);
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
    // SAFETY: plain libc call.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not running as root (AF_XDP needs CAP_NET_ADMIN, CAP_BPF)".into());
    }
    None
}
