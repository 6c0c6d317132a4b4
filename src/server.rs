//! Running the proxy: the core behind an ingress, in this thread or a
//! spawned one (tests, the demo).

use crate::config::Config;
use crate::ingress::udp::{UdpIngress, UdpStats};
use crate::proxy::{Proxy, Stats};
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
        let mut proxy = Proxy::from_config(config.clone())?;
        let mut ingress = UdpIngress::bind_addr(addr, &config.ingress, config.limits.max_datagram)?;
        let addr = ingress.local_addr()?;
        let shutdown = Arc::new(AtomicBool::new(false));
        let flag = shutdown.clone();
        let handle = std::thread::Builder::new()
            .name("tensorwire-udp".into())
            .spawn(move || {
                ingress.run(&mut proxy, &flag, |_, _| {})?;
                Ok((proxy.stats(), ingress.stats.clone()))
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
    let mut proxy = Proxy::from_config(config.clone())?;
    let mut ingress = UdpIngress::bind(&config.ingress, config.limits.max_datagram)
        .map_err(|e| anyhow::anyhow!("cannot bind {}: {e}", config.ingress.listen))?;
    tracing::info!(listen = %ingress.local_addr()?, mode = "socket", pipelines = config.pipelines.len(), "tensorwire serving");
    let interval = config.stats.log_interval_ms;
    ingress.log_every((interval > 0).then(|| Duration::from_millis(interval)));
    ingress.run(&mut proxy, shutdown, |p, u| {
        tracing::info!(
            "stats: {} | socket sent={} queued={} dropped={}",
            p.stats(),
            u.sent,
            u.send_queued,
            u.send_dropped
        );
    })?;
    Ok((proxy.stats(), ingress.stats.clone()))
}
