//! `tensorwire bench`: datagram rates into the proxy over the UDP socket
//! ingress, the AF_XDP ingress, and a bare AF_XDP receive-and-drop loop
//! (the ceiling), measured in one run between two private network
//! namespaces; plus image requests per second end to end. Needs root.
//!
//! The sender is the kernel itself (`livegen`: BPF_PROG_TEST_RUN live
//! frames, several Mpps; an AF_XDP TX flood where that is missing) in the
//! client namespace; the datagrams are not TWP (wrong magic), so the proxy
//! core counts and drops each one: what is measured is the ingress. The
//! receiver and veth's receive work share one core; the sender has the
//! other.

pub mod livegen;
pub mod replies;

use crate::client::{Client, Faults, RawImage};
use crate::config::Config;
use crate::ingress::udp::UdpIngress;
use crate::ingress::xdp::frame::{build_reply, ReplyPath};
use crate::ingress::xdp::loader::SteeringProgram;
use crate::ingress::xdp::worker::{XdpConfig, XdpQueue};
use crate::ingress::{DatagramHandler, ReplySink};
use crate::netns::Netns;
use crate::server::{Worker, XdpProxy};
use anyhow::{bail, Context, Result};
use livegen::LiveFrameGenerator;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use xsk_rs::config::{BindFlags, FrameSize, LibxdpFlags, QueueSize, SocketConfig, UmemConfig};
use xsk_rs::{Socket, Umem};

/// Receives and forgets: the bare loop's handler.
struct Drop0(u64);

impl DatagramHandler for Drop0 {
    fn on_datagram(&mut self, _: SocketAddr, _: &[u8], _: Instant, _: &mut dyn ReplySink) {
        self.0 += 1;
    }
    fn on_tick(&mut self, _: Instant, _: &mut dyn ReplySink) {}
    fn next_deadline(&self) -> Option<Instant> {
        None
    }
}

fn mac_of(ns: &str, dev: &str) -> Result<[u8; 6]> {
    let o = std::process::Command::new("ip")
        .args(["-n", ns, "-o", "link", "show", "dev", dev])
        .output()?;
    let s = String::from_utf8_lossy(&o.stdout);
    let hex = s
        .split("link/ether ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .context("no MAC")?;
    let mut mac = [0u8; 6];
    for (i, b) in hex.split(':').enumerate().take(6) {
        mac[i] = u8::from_str_radix(b, 16)?;
    }
    Ok(mac)
}

/// AF_XDP TX flood of UDP datagrams of `payload` bytes for `dur`; returns
/// frames the kernel completed.
fn flood(
    ifname: &str,
    path: ReplyPath,
    to: SocketAddr,
    payload: usize,
    dur: Duration,
) -> Result<u64> {
    let ucfg = UmemConfig::builder()
        .comp_queue_size(QueueSize::new(2048)?)
        .fill_queue_size(QueueSize::new(2048)?)
        .frame_size(FrameSize::new(2048)?)
        .build()?;
    let (umem, mut descs) = Umem::new(ucfg, NonZeroU32::new(4096).unwrap(), false)?;
    let scfg = SocketConfig::builder()
        .tx_queue_size(QueueSize::new(2048)?)
        .rx_queue_size(QueueSize::new(2048)?)
        .libxdp_flags(LibxdpFlags::XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD)
        .bind_flags(BindFlags::XDP_USE_NEED_WAKEUP)
        .build();
    // SAFETY: umem outlives the socket within this function.
    let (mut tx, _rx, fq_cq) = unsafe { Socket::new(scfg, &umem, &ifname.parse()?, 0) }?;
    let (_fq, mut cq) = fq_cq.context("no completion ring")?;
    let body = vec![0x5au8; payload];
    for d in descs.iter_mut() {
        // SAFETY: our own free frames.
        let mut data = unsafe { umem.data_mut(d) };
        let n = crate::ingress::xdp::frame::header_len(&path, &to) + payload;
        data.cursor().set_pos(n);
        build_reply(data.contents_mut(), &path, &to, &body).context("frame")?;
    }
    // Completions give back addresses only: keep each frame's full
    // descriptor (with its length) by index.
    let by_index = descs.clone();
    let mut free = descs.clone();
    let mut done = descs[..64].to_vec();
    let (mut completed, end) = (0u64, Instant::now() + dur);
    while Instant::now() < end {
        let k = free.len().min(64);
        if k > 0 {
            let batch: Vec<_> = free.drain(free.len() - k..).collect();
            // SAFETY: frames of this UMEM, not in any ring.
            let n = unsafe { tx.produce(&batch) };
            free.extend_from_slice(&batch[n..]);
        }
        tx.wakeup()?;
        // SAFETY: completions of this UMEM's frames.
        let n = unsafe { cq.consume(&mut done) };
        completed += n as u64;
        free.extend(done[..n].iter().map(|d| by_index[d.addr() / 2048]));
    }
    Ok(completed)
}

/// Which sender drove a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sender {
    /// BPF_PROG_TEST_RUN live frames (XDP_TX), several Mpps.
    LiveFrames,
    /// AF_XDP TX ring from user space (fallback when live frames fail).
    AfXdpTx,
}

/// What receives the flood.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Receiver {
    /// The proxy with its UDP socket ingress (mio + recvmmsg).
    Socket,
    /// The proxy with its AF_XDP ingress.
    AfXdp,
    /// A bare AF_XDP loop that drops every frame: the ceiling.
    BareDrop,
}

impl Receiver {
    pub const ALL: [Receiver; 3] = [Receiver::Socket, Receiver::AfXdp, Receiver::BareDrop];
    pub fn name(self) -> &'static str {
        match self {
            Receiver::Socket => "socket",
            Receiver::AfXdp => "af_xdp",
            Receiver::BareDrop => "bare af_xdp drop",
        }
    }
}

/// One receiver run: (datagrams received per second, frames sent).
pub fn measure(
    net: &Netns,
    receiver: Receiver,
    payload: usize,
    dur: Duration,
    sender: Sender,
) -> Result<(f64, u64)> {
    let (ifname, ip) = (net.proxy_if.clone(), net.proxy_ip.clone());
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let rx = Netns::run_in(&net.proxy_ns, move || -> Result<u64> {
        crate::server::pin_to_core(RECEIVER_CORE);
        let cfg = Config::builtin();
        let listen: SocketAddr = format!("{ip}:7878").parse()?;
        match receiver {
            Receiver::Socket => {
                // Frames sent by XDP reach a veth without an XDP program
                // only when its receive side runs NAPI, which GRO turns on.
                crate::ingress::xdp::ethtool::set_gro(&ifname, true)
                    .context("turning GRO on (veth NAPI mode)")?;
                let mut worker = Worker::new(cfg.build_proxy()?)?;
                let mut ing = UdpIngress::bind(listen, &cfg.udp_settings())?;
                ready_tx.send(()).ok();
                ing.run(&mut worker, &flag, |_, _| {})?;
                crate::ingress::xdp::ethtool::set_gro(&ifname, false).ok();
                Ok(worker.stats().datagrams_in)
            }
            Receiver::AfXdp => {
                let mut c = cfg.clone();
                c.ingress.interface = ifname;
                c.admin.listen.clear();
                let p = XdpProxy::start(&c, 1)?;
                ready_tx.send(()).ok();
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Ok(p.stop()?.iter().map(|(s, _)| s.datagrams_in).sum())
            }
            Receiver::BareDrop => {
                let prog = SteeringProgram::attach(&ifname, 7878, &[])?;
                let mut q = XdpQueue::bind(&ifname, 0, &prog, &XdpConfig::default())?;
                let mut h = Drop0(0);
                ready_tx.send(()).ok();
                q.run(&mut h, &flag, Duration::from_secs(3600), |_, _| {})?;
                Ok(h.0)
            }
        }
    });
    if ready_rx.recv().is_err() {
        // The receiver thread ended before it was ready: say why.
        return Err(match rx.join() {
            Ok(Err(e)) => e.context("receiver did not start"),
            Ok(Ok(_)) => anyhow::anyhow!("receiver ended before it was ready"),
            Err(_) => anyhow::anyhow!("receiver panicked"),
        });
    }
    // The receive work of veth (our XDP program, the AF_XDP copy, or the
    // kernel's UDP stack) must count against the receiver's core, not run
    // in the sender's softirq: threaded NAPI, pinned beside the receiver.
    // Threaded mode resets on every XDP attach, so it is set per run.
    net_napi_on_core(net, RECEIVER_CORE)?;
    let path = ReplyPath {
        peer_mac: mac_of(&net.proxy_ns, &net.proxy_if)?,
        our_mac: mac_of(&net.client_ns, &net.client_if)?,
        vlan: None,
        ours: format!("{}:40000", net.client_ip).parse()?,
        hop_limit: 64,
    };
    let to: SocketAddr = format!("{}:7878", net.proxy_ip).parse()?;
    let cif = net.client_if.clone();
    let sent = Netns::run_in(&net.client_ns, move || -> Result<u64> {
        crate::server::pin_to_core(SENDER_CORE);
        match sender {
            Sender::LiveFrames => {
                let mut frame =
                    vec![0u8; crate::ingress::xdp::frame::header_len(&path, &to) + payload];
                build_reply(&mut frame, &path, &to, &vec![0x5au8; payload]).context("frame")?;
                let ifindex = crate::ingress::xdp::loader::if_index(&cif)?;
                LiveFrameGenerator::load()?.transmit(ifindex, &frame, dur)
            }
            Sender::AfXdpTx => flood(&cif, path, to, payload, dur),
        }
    })
    .join()
    .map_err(|_| anyhow::anyhow!("sender panicked"))?;
    std::thread::sleep(Duration::from_millis(100));
    stop.store(true, Ordering::Relaxed);
    let got = rx
        .join()
        .map_err(|_| anyhow::anyhow!("receiver panicked"))??;
    let sent = sent?;
    Ok((got as f64 / dur.as_secs_f64(), sent))
}

/// The receivers (and veth's receive work) run on core 0, the sender on 1.
const RECEIVER_CORE: usize = 0;
const SENDER_CORE: usize = 1;

/// Puts the proxy interface's NAPI into a kernel thread and pins that
/// thread to `core`.
fn net_napi_on_core(net: &Netns, core: usize) -> Result<()> {
    let dev = &net.proxy_if;
    let st = std::process::Command::new("ip")
        .args(["netns", "exec", &net.proxy_ns, "sh", "-c"])
        .arg(format!("echo 1 > /sys/class/net/{dev}/threaded"))
        .status()
        .context("running ip netns exec")?;
    if !st.success() {
        bail!("cannot switch {dev} to threaded NAPI");
    }
    // Threads are named napi/<dev>-<id>, cut to 15 bytes.
    let prefix: String = format!("napi/{dev}-").chars().take(15).collect();
    let mut pinned = 0;
    for entry in std::fs::read_dir("/proc")?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        if comm.trim_end().starts_with(&prefix) {
            // SAFETY: a plain cpu_set_t for an existing thread id.
            unsafe {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                libc::CPU_SET(core, &mut set);
                if libc::sched_setaffinity(pid, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0 {
                    pinned += 1;
                }
            }
        }
    }
    if pinned == 0 {
        bail!("no NAPI thread of {dev} found to pin");
    }
    Ok(())
}

/// Image requests per second through the proxy (echo upstream), one
/// client sending 640x480 RGB images as rows, one at a time.
fn images_per_second(net: &Netns, xdp: bool, dur: Duration) -> Result<f64> {
    let (ifname, ip) = (net.proxy_if.clone(), net.proxy_ip.clone());
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let rx = Netns::run_in(&net.proxy_ns, move || -> Result<()> {
        let mut cfg = Config::builtin();
        cfg.admin.listen.clear();
        if xdp {
            cfg.ingress.interface = ifname;
            let p = XdpProxy::start(&cfg, 1)?;
            ready_tx.send(()).ok();
            while !flag.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(20));
            }
            p.stop()?;
        } else {
            let mut worker = Worker::new(cfg.build_proxy()?)?;
            let mut ing = UdpIngress::bind(format!("{ip}:7878").parse()?, &cfg.udp_settings())?;
            ready_tx.send(()).ok();
            ing.run(&mut worker, &flag, |_, _| {})?;
        }
        Ok(())
    });
    ready_rx.recv().context("proxy did not start")?;
    let to: SocketAddr = format!("{}:7878", net.proxy_ip).parse()?;
    let n = Netns::run_in(&net.client_ns, move || -> Result<u64> {
        let mut r = fastrand::Rng::with_seed(1);
        let img = RawImage {
            width: 640,
            height: 480,
            format: crate::wire::PixelFormat::Rgb8,
            data: (0..640 * 480 * 3).map(|_| r.u8(..)).collect(),
        };
        let mut c = Client::connect(to)?;
        let (mut n, end) = (0u64, Instant::now() + dur);
        while Instant::now() < end {
            c.send_image(1, &img, None, 1472, &Faults::default())?
                .tensors()
                .map_err(anyhow::Error::msg)?;
            n += 1;
        }
        Ok(n)
    })
    .join()
    .map_err(|_| anyhow::anyhow!("client panicked"))??;
    stop.store(true, Ordering::Relaxed);
    rx.join().map_err(|_| anyhow::anyhow!("proxy panicked"))??;
    Ok(n as f64 / dur.as_secs_f64())
}

/// Median and range of a few measurements.
fn summary(v: &mut [f64]) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

/// Runs every measurement `rounds` times, interleaved (so a burst of other
/// work hits every receiver alike); returns the report as Markdown.
pub fn run(seconds: f64, rounds: usize) -> Result<String> {
    let rounds = rounds.max(1);
    let net = Netns::new(1)
        .context("the bench needs root and iproute2 (it creates two network namespaces)")?;
    let dur = Duration::from_secs_f64(seconds);
    // Live frames when the kernel has them (5.18+), else AF_XDP TX.
    let sender = match LiveFrameGenerator::load() {
        Ok(_) => Sender::LiveFrames,
        Err(e) => {
            eprintln!("bench: live-frame generator unavailable ({e:#}); sending with AF_XDP TX");
            Sender::AfXdpTx
        }
    };
    const PAYLOADS: [usize; 2] = [64, 1472];
    // (receiver, payload) -> received/s and sent/s per round.
    let mut got = vec![Vec::new(); Receiver::ALL.len() * PAYLOADS.len()];
    let mut sent = got.clone();
    let slot = |r: usize, p: usize| r * PAYLOADS.len() + p;
    let (mut img_socket, mut img_xdp) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        for (p, &payload) in PAYLOADS.iter().enumerate() {
            for (r, &receiver) in Receiver::ALL.iter().enumerate() {
                eprintln!(
                    "bench: round {round}/{rounds}: {}, {payload} B ...",
                    receiver.name()
                );
                let (rate, n) = measure(&net, receiver, payload, dur, sender)?;
                got[slot(r, p)].push(rate);
                sent[slot(r, p)].push(n as f64 / dur.as_secs_f64());
            }
        }
        eprintln!("bench: round {round}/{rounds}: images ...");
        img_socket.push(images_per_second(&net, false, dur)?);
        img_xdp.push(images_per_second(&net, true, dur)?);
    }
    let mut out = format!(
        "sender: {} on core {SENDER_CORE}; receiver thread and the proxy veth's threaded NAPI on core {RECEIVER_CORE}; \
         {rounds} round(s) of {seconds} s: median [min–max]\n\n\
         | receiver (one queue, one core) | payload | sent/s | received dgrams/s | Gbit/s payload |\n|---|---|---|---|---|\n",
        match sender {
            Sender::LiveFrames => "BPF_PROG_TEST_RUN live frames (XDP_TX)",
            Sender::AfXdpTx => "AF_XDP TX flood",
        }
    );
    let mut median = vec![0.0; got.len()];
    for (p, &payload) in PAYLOADS.iter().enumerate() {
        for (r, &receiver) in Receiver::ALL.iter().enumerate() {
            let (m, lo, hi) = summary(&mut got[slot(r, p)]);
            let (s, _, _) = summary(&mut sent[slot(r, p)]);
            median[slot(r, p)] = m;
            out += &format!(
                "| {} | {payload} B | {s:.0} | {m:.0} [{lo:.0}–{hi:.0}] | {:.2} |\n",
                receiver.name(),
                m * payload as f64 * 8.0 / 1e9
            );
        }
    }
    for (p, &payload) in PAYLOADS.iter().enumerate() {
        let m = |r: usize| median[slot(r, p)].max(1.0);
        out += &format!(
            "\n{payload} B (medians): AF_XDP / socket = {:.2}x; AF_XDP / bare drop = {:.0}%",
            m(1) / m(0),
            100.0 * m(1) / m(2)
        );
    }
    let (s, slo, shi) = summary(&mut img_socket);
    let (x, xlo, xhi) = summary(&mut img_xdp);
    out += &format!(
        "\n\n640x480 RGB -> 224x224 FP32 requests/s (echo upstream, one client, sequential): \
         socket {s:.1} [{slo:.1}–{shi:.1}], AF_XDP {x:.1} [{xlo:.1}–{xhi:.1}]\n"
    );
    Ok(out)
}
