//! The TWP/1 ingress over a plain UDP socket: mio event loop, batched
//! receive (recvmmsg), replies sent straight away or queued (bounded)
//! while the socket is full. Consecutive reply fragments to one client
//! leave in one `sendmsg` with UDP_SEGMENT (GSO, through quinn-udp, which
//! falls back to one datagram per call where the kernel or route refuses):
//! a 602 KB answer is ~10 calls instead of ~410. Works without privileges; the fallback when
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
    /// sendmsg calls that carried several datagrams (UDP GSO).
    pub gso_sends: u64,
    /// Send system calls (sendto or sendmsg), whatever they carried.
    pub send_calls: u64,
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
    /// Send reply fragments in GSO batches where the kernel allows.
    pub gso: bool,
}

/// A bound UDP ingress.
pub struct UdpIngress {
    socket: UdpSocket,
    poll: Poll,
    batch: RecvBatch,
    tx: Sender,
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
        let gso = if cfg.gso {
            match quinn_udp::UdpSocketState::new((&socket).into()) {
                Ok(state) if state.max_gso_segments() > 1 => Some(state),
                Ok(_) => {
                    tracing::info!("UDP GSO not available here: one sendmsg per reply datagram");
                    None
                }
                Err(e) => {
                    tracing::info!("UDP GSO not set up ({e}): one sendmsg per reply datagram");
                    None
                }
            }
        } else {
            None
        };
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut socket, SOCKET, Interest::READABLE)?;
        Ok(UdpIngress {
            socket,
            poll,
            // One spare byte per slot detects datagrams over max_datagram.
            batch: RecvBatch::new(cfg.recv_batch, cfg.max_datagram + 1),
            tx: Sender::new(cfg.tx_queue_datagrams, gso, cfg.max_datagram),
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
                let mut sink = self.sink();
                handler.on_wake(Instant::now(), &mut sink);
                sink.finish();
            }
            let now = Instant::now();
            if handler.next_deadline().is_some_and(|d| d <= now) {
                let mut sink = self.sink();
                handler.on_tick(now, &mut sink);
                sink.finish();
            }
            // Wait for WRITABLE only while replies are queued.
            let want = !self.tx.queue.is_empty();
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
                tx: &mut self.tx,
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
            sink.finish();
            if n < self.batch.len() {
                return Ok(());
            }
        }
    }

    fn sink(&mut self) -> Sink<'_> {
        Sink {
            socket: &self.socket,
            tx: &mut self.tx,
            stats: &mut self.stats,
        }
    }

    fn flush_queue(&mut self) {
        while let Some((to, d)) = self.tx.queue.front() {
            self.stats.send_calls += 1;
            match self.socket.send_to(d, *to) {
                Ok(_) => {
                    self.stats.sent += 1;
                    self.tx.queue.pop_front();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => {
                    self.stats.send_errors += 1;
                    self.tx.queue.pop_front();
                }
            }
        }
    }
}

/// What the socket ingress keeps for sending: the queue of replies that
/// found the socket full, and the GSO batch being built.
struct Sender {
    queue: VecDeque<(SocketAddr, Vec<u8>)>,
    cap: usize,
    /// UDP_SEGMENT support (None: one sendto per datagram).
    gso: Option<quinn_udp::UdpSocketState>,
    batch: GsoBatch,
}

/// Consecutive datagrams to one client, all of one size but the last.
struct GsoBatch {
    to: Option<SocketAddr>,
    segment: usize,
    count: usize,
    /// A shorter datagram ended the batch: nothing may follow it.
    closed: bool,
    max_segments: usize,
    buf: Vec<u8>,
}

/// The kernel's limit for one UDP send (IPv4 payload).
const MAX_UDP_PAYLOAD: usize = 65507;

impl Sender {
    fn new(cap: usize, gso: Option<quinn_udp::UdpSocketState>, max_datagram: usize) -> Sender {
        let max_segments = gso.as_ref().map_or(1, |s| s.max_gso_segments());
        Sender {
            queue: VecDeque::new(),
            cap,
            gso,
            batch: GsoBatch {
                to: None,
                segment: 0,
                count: 0,
                closed: false,
                max_segments,
                buf: Vec::with_capacity(MAX_UDP_PAYLOAD.max(max_datagram)),
            },
        }
    }
}

/// Sends replies straight away (batched with GSO where possible); queues
/// (bounded) when the socket is full. [`Sink::finish`] sends what is
/// batched.
struct Sink<'a> {
    socket: &'a UdpSocket,
    tx: &'a mut Sender,
    stats: &'a mut UdpStats,
}

impl Sink<'_> {
    /// Sends the batch being built.
    fn finish(&mut self) {
        let b = &mut self.tx.batch;
        let (Some(to), count) = (b.to.take(), b.count) else {
            return;
        };
        let segment = b.segment;
        b.count = 0;
        b.closed = false;
        let buf = std::mem::take(&mut b.buf);
        if count == 1 {
            self.send_one(to, &buf);
        } else if !self.tx.queue.is_empty() {
            // Order behind what already waits.
            for d in buf.chunks(segment) {
                self.enqueue(to, d);
            }
        } else {
            let state = self.tx.gso.as_ref().expect("batches only with GSO");
            let t = quinn_udp::Transmit {
                destination: to,
                ecn: None,
                contents: &buf,
                segment_size: Some(segment),
                src_ip: None,
            };
            self.stats.send_calls += 1;
            match state.try_send(self.socket.into(), &t) {
                Ok(()) => {
                    self.stats.sent += count as u64;
                    self.stats.gso_sends += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    for d in buf.chunks(segment) {
                        self.enqueue(to, d);
                    }
                }
                Err(_) if state.max_gso_segments() == 1 => {
                    // The route refused GSO (quinn-udp turned it off): send
                    // this batch, and all later replies, one by one.
                    tracing::info!("UDP GSO refused by the kernel or route: sending one by one");
                    self.tx.batch.max_segments = 1;
                    for d in buf.chunks(segment) {
                        self.send_one(to, d);
                    }
                }
                Err(_) => self.stats.send_errors += count as u64,
            }
        }
        let mut buf = buf;
        buf.clear();
        self.tx.batch.buf = buf;
    }

    fn send_one(&mut self, to: SocketAddr, datagram: &[u8]) {
        if self.tx.queue.is_empty() {
            self.stats.send_calls += 1;
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
        self.enqueue(to, datagram);
    }

    fn enqueue(&mut self, to: SocketAddr, datagram: &[u8]) {
        if self.tx.queue.len() >= self.tx.cap {
            self.stats.send_dropped += 1;
            return;
        }
        self.stats.send_queued += 1;
        self.tx.queue.push_back((to, datagram.to_vec()));
    }
}

impl ReplySink for Sink<'_> {
    fn send(&mut self, to: SocketAddr, datagram: &[u8]) {
        let b = &self.tx.batch;
        if b.max_segments <= 1 || !self.tx.queue.is_empty() {
            return self.send_one(to, datagram);
        }
        if b.count > 0
            && (b.to != Some(to)
                || b.closed
                || datagram.len() > b.segment
                || b.count >= b.max_segments
                || b.buf.len() + datagram.len() > MAX_UDP_PAYLOAD)
        {
            self.finish();
        }
        let b = &mut self.tx.batch;
        if b.count == 0 {
            b.to = Some(to);
            b.segment = datagram.len();
        }
        b.closed = datagram.len() < b.segment;
        b.buf.extend_from_slice(datagram);
        b.count += 1;
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
