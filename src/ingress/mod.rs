//! I/O at the edge: datagrams in, replies out. An ingress owns sockets and
//! the event loop; everything protocol-related lives behind
//! [`DatagramHandler`], so the UDP socket ingress and the AF_XDP ingress
//! serve the same worker (proxy core + model-server connections).

pub mod udp;
pub mod xdp;

use std::net::SocketAddr;
use std::time::Instant;

pub use crate::proxy::ReplySink;

/// What an ingress loop drives: a worker (the proxy core and its
/// model-server connections), as the loop sees it.
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
    /// A pollable fd the loop must wait on next to its own socket (an
    /// epoll of model-server connections); None when there is none.
    fn wake_fd(&self) -> Option<std::os::fd::RawFd> {
        None
    }
    /// `wake_fd` became readable (never blocks).
    fn on_wake(&mut self, _now: Instant, _out: &mut dyn ReplySink) {}
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
