//! I/O at the edge: datagrams in, replies out. An ingress owns sockets and
//! the event loop; everything protocol-related lives behind
//! [`DatagramHandler`], so the UDP socket ingress and the AF_XDP ingress
//! serve the same proxy core.

pub mod udp;
pub mod xdp;

use std::net::SocketAddr;
use std::time::Instant;

/// Where a handler puts reply datagrams (UDP payloads).
pub trait ReplySink {
    /// Queues one datagram to `to`; the ingress sends it from the address
    /// the request came to.
    fn send(&mut self, to: SocketAddr, datagram: &[u8]);
}

impl ReplySink for Vec<(SocketAddr, Vec<u8>)> {
    fn send(&mut self, to: SocketAddr, datagram: &[u8]) {
        self.push((to, datagram.to_vec()));
    }
}

/// The protocol core, as an ingress sees it.
pub trait DatagramHandler {
    /// One received UDP payload from `from` (borrowed: not kept).
    fn on_datagram(
        &mut self,
        from: SocketAddr,
        payload: &[u8],
        now: Instant,
        out: &mut dyn ReplySink,
    );
    /// Timers: called when `next_deadline` passes (and may be called any time).
    fn on_tick(&mut self, now: Instant, out: &mut dyn ReplySink);
    fn next_deadline(&self) -> Option<Instant>;
    /// A pollable fd (an epoll of model-server connections) the ingress
    /// must wait on next to its own; None when there is nothing upstream.
    fn upstream_fd(&self) -> Option<std::os::fd::RawFd> {
        None
    }
    /// `upstream_fd` became readable: drive the connections (never blocks).
    fn on_upstream_ready(&mut self, _now: Instant, _out: &mut dyn ReplySink) {}
}

/// Sets a socket buffer size: the privileged `force` option first (it
/// ignores the sysctl cap), then the plain one. Returns whether one took.
pub fn set_buffer_size(
    fd: std::os::fd::RawFd,
    force: libc::c_int,
    plain: libc::c_int,
    bytes: usize,
) -> bool {
    let v = bytes.min(i32::MAX as usize) as libc::c_int;
    [force, plain].into_iter().any(|opt| {
        // SAFETY: a valid fd and a c_int option value of the right size.
        let r = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                &v as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        r == 0
    })
}
