//! The tensorwire target: TWP/1 over UDP to a running proxy. Each
//! input's datagrams are cut once; a request re-stamps its request id
//! into them and sends them with sendmmsg, then waits for the reply
//! (`Client::receive`, which matches by request id).

use super::engine::{Target, TargetFactory};
use crate::client::{image_rows, text_chunks, Client, RawImage, Reply};
use crate::wire::Packet;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

/// One input: an image (decoded pixels) or a text.
#[derive(Clone)]
pub enum Input {
    Image { name: String, img: RawImage },
    Text { name: String, text: Vec<u8> },
}

impl Input {
    pub fn describe(&self) -> String {
        match self {
            Input::Image { name, img } => {
                format!("{name} {}x{} {:?}", img.width, img.height, img.format)
            }
            Input::Text { name, text } => format!("{name} {} B", text.len()),
        }
    }

    /// The request's datagrams (request id 0; stamped per request).
    pub fn datagrams(&self, pipeline: u16, max_datagram: usize, overlap: usize) -> Vec<Vec<u8>> {
        match self {
            Input::Image { img, .. } => image_rows(img, pipeline, 0, max_datagram),
            Input::Text { text, .. } => text_chunks(text, pipeline, 0, max_datagram, overlap),
        }
    }
}

pub struct Udp {
    pub server: SocketAddr,
    /// Per input, its datagrams.
    pub requests: Arc<Vec<Vec<Vec<u8>>>>,
    pub timeout: Duration,
}

impl Udp {
    pub fn new(
        server: SocketAddr,
        pipeline: u16,
        inputs: &[Input],
        max_datagram: usize,
        timeout: Duration,
    ) -> Udp {
        let requests = inputs
            .iter()
            .map(|i| i.datagrams(pipeline, max_datagram, 64))
            .collect();
        Udp {
            server,
            requests: Arc::new(requests),
            timeout,
        }
    }
}

impl TargetFactory for Udp {
    fn connect(&self) -> anyhow::Result<Box<dyn Target>> {
        let mut client = Client::connect(self.server)?;
        client.timeout = self.timeout;
        // Address validation (rev 3) once per socket, before measuring:
        // the raw datagrams below skip the client's own handshake.
        client
            .handshake()
            .map_err(|e| anyhow::anyhow!("address validation with {}: {e}", self.server))?;
        Ok(Box::new(UdpConn {
            client,
            server: self.server,
            requests: self.requests.iter().cloned().collect(),
        }))
    }
}

struct UdpConn {
    client: Client,
    server: SocketAddr,
    requests: Vec<Vec<Vec<u8>>>,
}

impl Target for UdpConn {
    fn request(&mut self, i: u64) -> Result<(), String> {
        let id = self.client.next_request_id();
        let n = self.requests.len();
        let datagrams = &mut self.requests[i as usize % n];
        for d in datagrams.iter_mut() {
            Packet::new_unchecked(&mut d[..]).set_request_id(id);
        }
        sendmmsg(self.client.socket(), self.server, datagrams).map_err(|e| format!("io: {e}"))?;
        match self.client.receive(id) {
            Ok(Reply::Response { .. }) => Ok(()),
            Ok(Reply::Error { code, .. }) => {
                if code == crate::wire::ErrorCode::Retry {
                    // Validation lapsed: validate again for the next one.
                    let _ = self.client.handshake();
                }
                Err(code.to_string())
            }
            Ok(Reply::Token { .. }) => Err("unexpected TOKEN".into()),
            Err(crate::client::ClientError::Timeout(_)) => Err("timeout".into()),
            Err(e) => Err(format!("client: {e}")),
        }
    }
}

/// Sends `datagrams` to `to` in sendmmsg batches of up to 64.
pub fn sendmmsg(socket: &UdpSocket, to: SocketAddr, datagrams: &[Vec<u8>]) -> std::io::Result<()> {
    let addr = socket2::SockAddr::from(to);
    for chunk in datagrams.chunks(64) {
        let mut iovs: Vec<libc::iovec> = chunk
            .iter()
            .map(|d| libc::iovec {
                iov_base: d.as_ptr() as *mut libc::c_void,
                iov_len: d.len(),
            })
            .collect();
        // SAFETY: zeroed mmsghdrs pointing at live iovecs and the address.
        let mut msgs: Vec<libc::mmsghdr> = iovs
            .iter_mut()
            .map(|iov| {
                let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
                m.msg_hdr.msg_name = addr.as_ptr() as *mut libc::c_void;
                m.msg_hdr.msg_namelen = addr.len();
                m.msg_hdr.msg_iov = iov;
                m.msg_hdr.msg_iovlen = 1;
                m
            })
            .collect();
        let mut sent = 0;
        while sent < msgs.len() {
            // SAFETY: msgs[sent..] are valid headers for this call.
            let r = unsafe {
                libc::sendmmsg(
                    socket.as_raw_fd(),
                    msgs[sent..].as_mut_ptr(),
                    (msgs.len() - sent) as libc::c_uint,
                    0,
                )
            };
            if r < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            sent += r as usize;
        }
    }
    Ok(())
}
