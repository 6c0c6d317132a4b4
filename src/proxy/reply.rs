//! Reply datagrams: RESPONSE fragments sized to the MTU, and ERRORs.

use crate::wire::error_packet::ERROR_HEADER_LEN;
use crate::wire::response::RESPONSE_HEADER_LEN;
use crate::wire::{
    ErrorCode, ErrorRepr, HeaderRepr, Kind, Packet, ResponsePacket, ResponseRepr, HEADER_LEN,
    MAX_ERROR_MESSAGE,
};
use std::net::SocketAddr;

/// Where the core puts reply datagrams (UDP payloads): the ingress sends
/// each from the address the request came to, or queues it (bounded).
pub trait ReplySink {
    fn send(&mut self, to: SocketAddr, datagram: &[u8]);
}

/// Collects replies (tests, tools).
impl ReplySink for Vec<(SocketAddr, Vec<u8>)> {
    fn send(&mut self, to: SocketAddr, datagram: &[u8]) {
        self.push((to, datagram.to_vec()));
    }
}

/// Builds reply datagrams in one reused buffer.
#[derive(Debug)]
pub struct ReplyWriter {
    buf: Vec<u8>,
    /// Largest reply payload for IPv4 and IPv6 peers.
    max_v4: usize,
    max_v6: usize,
}

impl ReplyWriter {
    pub fn new(max_v4: usize, max_v6: usize) -> ReplyWriter {
        let cap = max_v4
            .max(max_v6)
            .max(HEADER_LEN + ERROR_HEADER_LEN + MAX_ERROR_MESSAGE);
        ReplyWriter {
            buf: vec![0; cap],
            max_v4,
            max_v6,
        }
    }

    /// Sends `body` as RESPONSE fragments; returns how many.
    #[allow(clippy::too_many_arguments)]
    pub fn response(
        &mut self,
        out: &mut dyn ReplySink,
        to: SocketAddr,
        request_id: u64,
        pipeline: u16,
        content_type: u16,
        header_len: usize,
        body: &[u8],
    ) -> u32 {
        let max = if to.is_ipv6() {
            self.max_v6
        } else {
            self.max_v4
        };
        let per = max - HEADER_LEN - RESPONSE_HEADER_LEN;
        let count = body.len().div_ceil(per).max(1) as u32;
        for seq in 0..count {
            let start = seq as usize * per;
            let chunk = &body[start.min(body.len())..(start + per).min(body.len())];
            let n = HEADER_LEN + RESPONSE_HEADER_LEN + chunk.len();
            let buf = &mut self.buf[..n];
            let mut p = Packet::new_unchecked(&mut *buf);
            HeaderRepr::fragment(Kind::Response, pipeline, request_id, seq, count).emit(&mut p);
            let mut r = ResponsePacket::new_unchecked(p.body_mut());
            ResponseRepr {
                status: 0,
                content_type,
                total_len: body.len() as u32,
                offset: start as u32,
                header_len: header_len as u32,
            }
            .emit(&mut r);
            r.bytes_mut().copy_from_slice(chunk);
            out.send(to, &self.buf[..n]);
        }
        count
    }

    /// Sends one ERROR.
    pub fn error(
        &mut self,
        out: &mut dyn ReplySink,
        to: SocketAddr,
        request_id: u64,
        pipeline: u16,
        code: ErrorCode,
        message: &str,
    ) {
        let e = ErrorRepr { code, message };
        let n = HEADER_LEN + e.buffer_len();
        let mut p = Packet::new_unchecked(&mut self.buf[..n]);
        HeaderRepr::fragment(Kind::Error, pipeline, request_id, 0, 1).emit(&mut p);
        e.emit(p.body_mut());
        out.send(to, &self.buf[..n]);
    }
}
