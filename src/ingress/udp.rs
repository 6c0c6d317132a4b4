//! The TWP/1 ingress over a plain UDP socket: mio event loop, batched
//! receive (recvmmsg), replies sent straight away or queued (bounded)
//! while the socket is full. Works without privileges; the fallback when
//! AF_XDP is not possible, and the reference the AF_XDP path is tested
//! against.

use super::{DatagramHandler, ReplySink};
use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};
use std::collections::VecDeque;
use std::io;
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const SOCKET: Token = Token(0);
/// The handler's wake fd (its model-server connections).
const WAKE: Token = Token(1);
/// Longest a poll sleeps, so a shutdown request is seen promptly.
const MAX_SLEEP: Duration = Duration::from_millis(50);

/// Counters of the socket ingress.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UdpStats {
    pub recv_calls: u64,
    pub datagrams: u64,
    pub truncated: u64,
    pub sent: u64,
    pub send_queued: u64,
    pub send_dropped: u64,
    pub send_errors: u64,
}

/// Socket ingress settings (from `[ingress]` and `[limits]`).
#[derive(Debug, Clone)]
pub struct UdpSettings {
    /// Datagrams per recvmmsg.
    pub recv_batch: usize,
    /// SO_RCVBUF / SO_SNDBUF (forced when privileged).
    pub socket_buffer_bytes: usize,
    /// Replies queued while the socket is full; more are dropped.
    pub tx_queue_datagrams: usize,
    /// Largest datagram accepted (a larger one is seen as cut).
    pub max_datagram: usize,
}

/// A bound UDP ingress.
pub struct UdpIngress {
    socket: UdpSocket,
    poll: Poll,
    batch: RecvBatch,
    queue: VecDeque<(SocketAddr, Vec<u8>)>,
    queue_cap: usize,
    pub stats: UdpStats,
    stats_interval: Option<Duration>,
}

impl UdpIngress {
    /// Binds `addr` with the configured buffers.
    pub fn bind(addr: SocketAddr, cfg: &UdpSettings) -> io::Result<UdpIngress> {
        let mut socket = UdpSocket::bind(addr)?;
        let fd = socket.as_raw_fd();
        super::set_buffer_size(
            fd,
            libc::SO_RCVBUFFORCE,
            libc::SO_RCVBUF,
            cfg.socket_buffer_bytes,
        );
        super::set_buffer_size(
            fd,
            libc::SO_SNDBUFFORCE,
            libc::SO_SNDBUF,
            cfg.socket_buffer_bytes,
        );
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut socket, SOCKET, Interest::READABLE)?;
        Ok(UdpIngress {
            socket,
            poll,
            // One spare byte per slot detects datagrams over max_datagram.
            batch: RecvBatch::new(cfg.recv_batch, cfg.max_datagram + 1),
            queue: VecDeque::new(),
            queue_cap: cfg.tx_queue_datagrams,
            stats: UdpStats::default(),
            stats_interval: None,
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Logs a progress line with the handler's counters this often.
    pub fn log_every(&mut self, interval: Option<Duration>) {
        self.stats_interval = interval;
    }

    /// Serves until `shutdown` is set.
    pub fn run<H: DatagramHandler + ?Sized>(
        &mut self,
        handler: &mut H,
        shutdown: &AtomicBool,
        mut progress: impl FnMut(&H, &UdpStats),
    ) -> io::Result<()> {
        let mut events = Events::with_capacity(16);
        let mut writable_registered = false;
        let wake_fd = handler.wake_fd();
        if let Some(fd) = wake_fd {
            self.poll.registry().register(
                &mut mio::unix::SourceFd(&fd),
                WAKE,
                Interest::READABLE,
            )?;
        }
        let mut next_log = self.stats_interval.map(|i| Instant::now() + i);
        while !shutdown.load(Ordering::Relaxed) {
            let now = Instant::now();
            let mut sleep = MAX_SLEEP;
            if let Some(d) = handler.next_deadline() {
                sleep = sleep.min(d.saturating_duration_since(now));
            }
            match self.poll.poll(&mut events, Some(sleep)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            let mut woken = false;
            for ev in events.iter() {
                if ev.token() == WAKE {
                    woken = true;
                } else if ev.is_writable() {
                    self.flush_queue();
                }
            }
            self.receive_all(handler)?;
            if woken {
                let mut sink = Sink {
                    socket: &self.socket,
                    queue: &mut self.queue,
                    cap: self.queue_cap,
                    stats: &mut self.stats,
                };
                handler.on_wake(Instant::now(), &mut sink);
            }
            let now = Instant::now();
            if handler.next_deadline().is_some_and(|d| d <= now) {
                let mut sink = Sink {
                    socket: &self.socket,
                    queue: &mut self.queue,
                    cap: self.queue_cap,
                    stats: &mut self.stats,
                };
                handler.on_tick(now, &mut sink);
            }
            // Wait for WRITABLE only while replies are queued.
            let want = !self.queue.is_empty();
            if want != writable_registered {
                let interest = if want {
                    Interest::READABLE | Interest::WRITABLE
                } else {
                    Interest::READABLE
                };
                self.poll
                    .registry()
                    .reregister(&mut self.socket, SOCKET, interest)?;
                writable_registered = want;
            }
            if let (Some(at), Some(i)) = (next_log, self.stats_interval) {
                if now >= at {
                    progress(handler, &self.stats);
                    next_log = Some(now + i);
                }
            }
        }
        if let Some(fd) = wake_fd {
            let _ = self
                .poll
                .registry()
                .deregister(&mut mio::unix::SourceFd(&fd));
        }
        Ok(())
    }

    /// Reads until the socket is empty, handing each datagram over.
    fn receive_all<H: DatagramHandler + ?Sized>(&mut self, handler: &mut H) -> io::Result<()> {
        loop {
            let n = match self.batch.recv(self.socket.as_raw_fd()) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            self.stats.recv_calls += 1;
            let now = Instant::now();
            let mut sink = Sink {
                socket: &self.socket,
                queue: &mut self.queue,
                cap: self.queue_cap,
                stats: &mut self.stats,
            };
            for i in 0..n {
                let (from, payload, truncated) = self.batch.get(i);
                sink.stats.datagrams += 1;
                if truncated {
                    // Larger than max_datagram + 1: the handler sees a
                    // datagram over the limit and answers MALFORMED.
                    sink.stats.truncated += 1;
                }
                if let Some(from) = from {
                    handler.on_datagram(from, payload, now, &mut sink);
                }
            }
            if n < self.batch.len() {
                return Ok(());
            }
        }
    }

    fn flush_queue(&mut self) {
        while let Some((to, d)) = self.queue.front() {
            match self.socket.send_to(d, *to) {
                Ok(_) => {
                    self.stats.sent += 1;
                    self.queue.pop_front();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => {
                    self.stats.send_errors += 1;
                    self.queue.pop_front();
                }
            }
        }
    }
}

/// Sends replies straight away; queues (bounded) when the socket is full.
struct Sink<'a> {
    socket: &'a UdpSocket,
    queue: &'a mut VecDeque<(SocketAddr, Vec<u8>)>,
    cap: usize,
    stats: &'a mut UdpStats,
}

impl ReplySink for Sink<'_> {
    fn send(&mut self, to: SocketAddr, datagram: &[u8]) {
        if self.queue.is_empty() {
            match self.socket.send_to(datagram, to) {
                Ok(_) => {
                    self.stats.sent += 1;
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => {
                    self.stats.send_errors += 1;
                    return;
                }
            }
        }
        if self.queue.len() >= self.cap {
            self.stats.send_dropped += 1;
            return;
        }
        self.stats.send_queued += 1;
        self.queue.push_back((to, datagram.to_vec()));
    }
}

/// Preallocated buffers for one recvmmsg call.
struct RecvBatch {
    bufs: Vec<u8>,
    slot: usize,
    addrs: Vec<libc::sockaddr_storage>,
    iovecs: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
}

// SAFETY: the raw pointers inside point into this struct's own vectors,
// which move with it.
unsafe impl Send for RecvBatch {}

impl RecvBatch {
    fn new(n: usize, slot: usize) -> RecvBatch {
        let mut b = RecvBatch {
            bufs: vec![0u8; n * slot],
            slot,
            // SAFETY: all-zero is a valid sockaddr_storage / iovec / mmsghdr.
            addrs: vec![unsafe { std::mem::zeroed() }; n],
            iovecs: vec![unsafe { std::mem::zeroed() }; n],
            msgs: vec![unsafe { std::mem::zeroed() }; n],
        };
        b.rearm();
        b
    }

    fn len(&self) -> usize {
        self.msgs.len()
    }

    fn rearm(&mut self) {
        let base = self.bufs.as_mut_ptr();
        for i in 0..self.msgs.len() {
            self.iovecs[i] = libc::iovec {
                // SAFETY: within `bufs`.
                iov_base: unsafe { base.add(i * self.slot) } as *mut libc::c_void,
                iov_len: self.slot,
            };
            let h = &mut self.msgs[i].msg_hdr;
            h.msg_name = &mut self.addrs[i] as *mut _ as *mut libc::c_void;
            h.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_iov = &mut self.iovecs[i];
            h.msg_iovlen = 1;
            h.msg_control = std::ptr::null_mut();
            h.msg_controllen = 0;
            h.msg_flags = 0;
            self.msgs[i].msg_len = 0;
        }
    }

    fn recv(&mut self, fd: libc::c_int) -> io::Result<usize> {
        self.rearm();
        // SAFETY: msgs, iovecs, addrs and bufs are live and sized as declared.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.msgs.as_mut_ptr(),
                self.msgs.len() as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// Source, payload and whether it was cut, of message `i`.
    fn get(&self, i: usize) -> (Option<SocketAddr>, &[u8], bool) {
        let m = &self.msgs[i];
        let len = (m.msg_len as usize).min(self.slot);
        let truncated = m.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
        let data = &self.bufs[i * self.slot..i * self.slot + len];
        (sockaddr_to_std(&self.addrs[i]), data, truncated)
    }
}

fn sockaddr_to_std(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match s.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says this storage holds a sockaddr_in.
            let a = unsafe { &*(s as *const _ as *const libc::sockaddr_in) };
            let ip = std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says this storage holds a sockaddr_in6.
            let a = unsafe { &*(s as *const _ as *const libc::sockaddr_in6) };
            let ip = std::net::Ipv6Addr::from(a.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}
