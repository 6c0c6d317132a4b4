//! One AF_XDP socket and its worker loop per RX queue: frames are read in
//! place from UMEM, handed to the proxy core, and recycled to the fill ring
//! at once; replies are built straight into free UMEM frames and sent on
//! the same socket's TX ring.

use super::frame::{self, ReplyPath};
use super::loader::SteeringProgram;
use crate::ingress::{DatagramHandler, ReplySink};
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use xsk_rs::config::{BindFlags, FrameSize, LibxdpFlags, QueueSize, SocketConfig, UmemConfig};
use xsk_rs::{CompQueue, FillQueue, FrameDesc, RxQueue, Socket, TxQueue, Umem};

/// AF_XDP settings (`[ingress.xdp]`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct XdpConfig {
    /// UMEM frames per queue (half receive, half transmit).
    pub frames: u32,
    /// Fill, completion, RX and TX ring sizes (powers of two).
    pub ring_size: u32,
    /// Frames handled per wakeup.
    pub batch: usize,
    /// auto (the kernel chooses), copy, or zerocopy (fails clearly where
    /// the driver cannot).
    pub bind: BindMode,
    pub need_wakeup: bool,
    /// Source addresses or CIDR prefixes allowed; empty = everyone.
    pub allowlist: Vec<String>,
    /// Clients whose reply path (MACs, VLAN) is remembered.
    pub reply_paths: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BindMode {
    Auto,
    Copy,
    Zerocopy,
}

impl Default for XdpConfig {
    fn default() -> Self {
        // Ring 4096: see the AF_XDP-on-veth measurements in the README.
        XdpConfig {
            frames: 16384,
            ring_size: 4096,
            batch: 64,
            bind: BindMode::Auto,
            need_wakeup: true,
            allowlist: Vec::new(),
            reply_paths: 65536,
        }
    }
}

/// Counters of one queue's worker.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct XdpWorkerStats {
    pub queue: u32,
    pub zero_copy: bool,
    pub frames_received: u64,
    pub not_udp: u64,
    pub replies_sent: u64,
    /// Replies dropped: no free TX frame, or no known path to the client.
    pub replies_dropped: u64,
    pub tx_wakeups: u64,
    /// Times the fill ring had no room for recycled frames (they waited).
    pub fill_ring_full: u64,
}

const SOL_XDP: libc::c_int = 283;
const XDP_OPTIONS: libc::c_int = 8;
const XDP_OPTIONS_ZEROCOPY: u32 = 1;

fn zero_copy(fd: libc::c_int) -> bool {
    let mut opts: u32 = 0;
    let mut len = std::mem::size_of::<u32>() as libc::socklen_t;
    // SAFETY: a valid fd and a u32 out-parameter (struct xdp_options).
    let r = unsafe {
        libc::getsockopt(
            fd,
            SOL_XDP,
            XDP_OPTIONS,
            &mut opts as *mut u32 as *mut libc::c_void,
            &mut len,
        )
    };
    r == 0 && opts & XDP_OPTIONS_ZEROCOPY != 0
}

fn qsize(n: u32) -> io::Result<QueueSize> {
    QueueSize::new(n)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("ring size {n}: {e}")))
}

/// A bound AF_XDP socket for one queue.
pub struct XdpQueue {
    umem: Umem,
    fill: FillQueue,
    comp: CompQueue,
    rx: RxQueue,
    tx: TxQueue,
    rx_descs: Vec<FrameDesc>,
    tx_free: Vec<FrameDesc>,
    tx_pending: Vec<FrameDesc>,
    /// Frames on the TX ring not yet completed.
    tx_outstanding: usize,
    /// Receive frames waiting for room in the fill ring.
    fill_backlog: Vec<FrameDesc>,
    comp_descs: Vec<FrameDesc>,
    paths: HashMap<SocketAddr, ReplyPath>,
    /// The path inserted last (it is in `paths`, unless cleared with it).
    last_path: Option<(SocketAddr, ReplyPath)>,
    cfg: XdpConfig,
    pub stats: XdpWorkerStats,
}

/// Binds retried while the queue is still held by a socket being released
/// (20 ms apart: up to 2 s).
const BIND_BUSY_RETRIES: u32 = 100;

impl XdpQueue {
    /// Creates the UMEM and socket for `queue` of `ifname` and registers
    /// it with the steering program.
    pub fn bind(
        ifname: &str,
        queue: u32,
        prog: &SteeringProgram,
        cfg: &XdpConfig,
    ) -> io::Result<XdpQueue> {
        let err = |what: &str, e: &dyn std::fmt::Display| {
            io::Error::other(format!("{ifname} queue {queue}: {what}: {e}"))
        };
        let umem_cfg = UmemConfig::builder()
            .fill_queue_size(qsize(cfg.ring_size)?)
            .comp_queue_size(qsize(cfg.ring_size)?)
            .frame_size(FrameSize::new(4096).map_err(|e| err("frame size", &e))?)
            .build()
            .map_err(|e| err("UMEM config", &e))?;
        let frames = NonZeroU32::new(cfg.frames.max(2)).expect("nonzero");
        let (umem, mut descs) = Umem::new(umem_cfg, frames, false).map_err(|e| err("UMEM", &e))?;
        let mut bind = match cfg.bind {
            BindMode::Auto => BindFlags::empty(),
            BindMode::Copy => BindFlags::XDP_COPY,
            BindMode::Zerocopy => BindFlags::XDP_ZEROCOPY,
        };
        if cfg.need_wakeup {
            bind |= BindFlags::XDP_USE_NEED_WAKEUP;
        }
        let sock_cfg = SocketConfig::builder()
            .rx_queue_size(qsize(cfg.ring_size)?)
            .tx_queue_size(qsize(cfg.ring_size)?)
            // Our own program is attached; libxdp must not load its own.
            .libxdp_flags(LibxdpFlags::XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD)
            .bind_flags(bind)
            .build();
        let name = ifname.parse().map_err(|e| err("interface name", &e))?;
        // A socket closed just before (a restart, the previous run of a
        // bench) releases its queue from deferred kernel work: the bind
        // gets EBUSY until then. Retry for a while instead of failing.
        let mut attempts = 0;
        let (tx, rx, fq_cq) = loop {
            // SAFETY: the UMEM outlives the socket (both owned here, socket
            // fields dropped first by declaration order of use).
            match unsafe { Socket::new(sock_cfg, &umem, &name, queue) } {
                Ok(s) => break s,
                Err(e) => {
                    let os = std::error::Error::source(&e)
                        .and_then(|s| s.downcast_ref::<io::Error>())
                        .and_then(io::Error::raw_os_error);
                    attempts += 1;
                    if os == Some(libc::EBUSY) && attempts < BIND_BUSY_RETRIES {
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    }
                    let why = match os {
                        Some(code) => format!("{e}: {}", io::Error::from_raw_os_error(code)),
                        None => e.to_string(),
                    };
                    return Err(err("bind", &why));
                }
            }
        };
        let (mut fill, comp) = fq_cq.ok_or_else(|| err("bind", &"no fill/completion rings"))?;
        prog.register_socket(queue, rx.fd().as_raw_fd())
            .map_err(|e| err("XSKMAP", &e))?;
        let zc = zero_copy(rx.fd().as_raw_fd());
        let mut tx_free = descs.split_off(descs.len() / 2);
        // The kernel advances its fill-ring read position lazily, so a ring
        // exactly as large as the frames it holds can look full when a frame
        // comes back (and produce is all or nothing): give the fill ring
        // twice the receive frames. Spare frames serve as transmit frames.
        let rx_frames = descs.len().min(cfg.ring_size as usize / 2);
        tx_free.extend(descs.drain(rx_frames..));
        // SAFETY: these frames belong to this UMEM and are not in use.
        let filled = unsafe { fill.produce(&descs) };
        if filled != descs.len() {
            return Err(err(
                "fill ring",
                &format!("took {filled} of {} frames", descs.len()),
            ));
        }
        tracing::info!(
            ifname,
            queue,
            zero_copy = zc,
            xdp_mode = prog.mode,
            frames = cfg.frames,
            filled,
            "AF_XDP socket bound ({} mode)",
            if zc { "zero-copy" } else { "copy" }
        );
        let batch = cfg.batch.max(1);
        Ok(XdpQueue {
            rx_descs: descs[..batch.min(descs.len())].to_vec(),
            comp_descs: tx_free[..batch.min(tx_free.len())].to_vec(),
            umem,
            fill,
            comp,
            rx,
            tx,
            tx_free,
            tx_pending: Vec::with_capacity(batch),
            tx_outstanding: 0,
            fill_backlog: Vec::with_capacity(cfg.ring_size as usize),
            paths: HashMap::new(),
            last_path: None,
            cfg: cfg.clone(),
            stats: XdpWorkerStats {
                queue,
                zero_copy: zc,
                ..Default::default()
            },
        })
    }

    /// Serves until `shutdown` is set.
    /// `progress` runs every `every` (counters for the admin endpoint).
    pub fn run<H: DatagramHandler + ?Sized>(
        &mut self,
        handler: &mut H,
        shutdown: &AtomicBool,
        every: Duration,
        mut progress: impl FnMut(&H, &XdpWorkerStats),
    ) -> io::Result<()> {
        let fd = self.rx.fd().as_raw_fd();
        let mut next_progress = Instant::now();
        while !shutdown.load(Ordering::Relaxed) {
            if Instant::now() >= next_progress {
                progress(handler, &self.stats);
                next_progress = Instant::now() + every;
            }
            let now = Instant::now();
            let mut sleep = Duration::from_millis(50);
            if let Some(d) = handler.next_deadline() {
                sleep = sleep.min(d.saturating_duration_since(now));
            }
            // Sleep in poll(): spinning on a shared core starves the
            // kernel's NAPI work on veth.
            // The handler's model-server connections (an epoll fd) wake
            // us too.
            let wake_fd = handler.wake_fd();
            let mut pfds = [
                libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: wake_fd.unwrap_or(-1),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            // SAFETY: two valid pollfds (a negative fd is ignored by poll).
            let r = unsafe { libc::poll(pfds.as_mut_ptr(), 2, sleep.as_millis() as libc::c_int) };
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            self.refill();
            self.receive(handler);
            if pfds[1].revents != 0 {
                let mut sink = self.sink();
                handler.on_wake(Instant::now(), &mut sink);
            }
            let now = Instant::now();
            if handler.next_deadline().is_some_and(|d| d <= now) {
                let mut sink = self.sink();
                handler.on_tick(now, &mut sink);
            }
            self.flush()?;
        }
        Ok(())
    }

    fn receive<H: DatagramHandler + ?Sized>(&mut self, handler: &mut H) {
        loop {
            // SAFETY: rx_descs are frames of this UMEM.
            let n = unsafe { self.rx.consume(&mut self.rx_descs) };
            if n == 0 {
                return;
            }
            let now = Instant::now();
            for i in 0..n {
                self.stats.frames_received += 1;
                // SAFETY: the kernel handed this frame over; it is ours
                // until produced to the fill ring below.
                let data = unsafe { self.umem.data(&self.rx_descs[i]) };
                let frame = data.contents();
                let Some(d) = frame::parse(frame) else {
                    self.stats.not_udp += 1;
                    continue;
                };
                // A request's datagrams come in bursts from one sender:
                // skip the table (a hash per frame) when the path repeats.
                if self.last_path != Some((d.from, d.path)) {
                    if self.paths.len() >= self.cfg.reply_paths && !self.paths.contains_key(&d.from)
                    {
                        self.paths.clear();
                    }
                    self.paths.insert(d.from, d.path);
                    self.last_path = Some((d.from, d.path));
                }
                let payload = &frame[d.payload.0..d.payload.1];
                let mut sink = Sink {
                    umem: &self.umem,
                    tx_free: &mut self.tx_free,
                    tx_pending: &mut self.tx_pending,
                    paths: &self.paths,
                    stats: &mut self.stats,
                };
                handler.on_datagram(d.from, payload, now, &mut sink);
            }
            // Recycle the frames at once; any the ring does not take now
            // wait in the backlog (never lost).
            self.fill_backlog.extend_from_slice(&self.rx_descs[..n]);
            self.refill();
            if self.fill.needs_wakeup() {
                let _ = self.fill.wakeup(self.rx.fd_mut(), 0);
            }
            let _ = self.flush();
            if n < self.rx_descs.len() {
                return;
            }
        }
    }

    /// Hands backlogged receive frames to the fill ring.
    fn refill(&mut self) {
        while !self.fill_backlog.is_empty() {
            let k = self.fill_backlog.len().min(self.cfg.batch.max(1));
            let at = self.fill_backlog.len() - k;
            // SAFETY: frames of this UMEM, owned by no ring.
            let n = unsafe { self.fill.produce(&self.fill_backlog[at..]) };
            if n == 0 {
                self.stats.fill_ring_full += 1;
                return;
            }
            self.fill_backlog.truncate(self.fill_backlog.len() - n);
        }
    }

    fn sink(&mut self) -> Sink<'_> {
        Sink {
            umem: &self.umem,
            tx_free: &mut self.tx_free,
            tx_pending: &mut self.tx_pending,
            paths: &self.paths,
            stats: &mut self.stats,
        }
    }

    /// Submits pending replies and reaps completed ones.
    fn flush(&mut self) -> io::Result<()> {
        if !self.tx_pending.is_empty() {
            // SAFETY: frames of this UMEM written by the sink.
            let sent = unsafe { self.tx.produce(&self.tx_pending) };
            self.stats.replies_sent += sent as u64;
            self.tx_outstanding += sent;
            // What did not fit in the ring goes back to the free list.
            self.tx_free.extend(self.tx_pending.drain(sent..));
            self.tx_pending.clear();
        }
        // In copy mode each sendto() transmits a bounded batch (32 frames
        // per call in the kernel): kick until the ring is drained, so a
        // reply of hundreds of fragments leaves now, not on later wakeups.
        let mut kicks = 0;
        while self.tx_outstanding > 0 {
            if self.tx.needs_wakeup() || !self.stats.zero_copy {
                self.stats.tx_wakeups += 1;
                self.tx.wakeup()?;
            }
            let reaped = self.reap();
            kicks += 1;
            if reaped == 0 && (self.stats.zero_copy || kicks > 4) {
                break;
            }
        }
        self.reap();
        Ok(())
    }

    /// Moves completed TX frames back to the free list.
    fn reap(&mut self) -> usize {
        let mut total = 0;
        loop {
            // SAFETY: completion descs refer to this UMEM's TX frames.
            let n = unsafe { self.comp.consume(&mut self.comp_descs) };
            self.tx_free.extend_from_slice(&self.comp_descs[..n]);
            total += n;
            if n < self.comp_descs.len() {
                break;
            }
        }
        self.tx_outstanding -= total.min(self.tx_outstanding);
        total
    }
}

/// Builds replies into free UMEM frames.
struct Sink<'a> {
    umem: &'a Umem,
    tx_free: &'a mut Vec<FrameDesc>,
    tx_pending: &'a mut Vec<FrameDesc>,
    paths: &'a HashMap<SocketAddr, ReplyPath>,
    stats: &'a mut XdpWorkerStats,
}

impl ReplySink for Sink<'_> {
    fn send(&mut self, to: SocketAddr, datagram: &[u8]) {
        let (Some(path), Some(mut desc)) = (self.paths.get(&to), self.tx_free.pop()) else {
            self.stats.replies_dropped += 1;
            return;
        };
        let total = frame::header_len(path, &to) + datagram.len();
        let built = {
            // SAFETY: a free TX frame of this UMEM, not in any ring.
            let mut data = unsafe { self.umem.data_mut(&mut desc) };
            data.cursor().set_pos(total);
            frame::build_reply(data.contents_mut(), path, &to, datagram)
        };
        match built {
            Some(_) => self.tx_pending.push(desc),
            None => {
                self.stats.replies_dropped += 1;
                self.tx_free.push(desc);
            }
        }
    }
}
