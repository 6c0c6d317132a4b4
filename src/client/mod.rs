//! A TWP/1 client: cuts requests into datagrams, optionally injects
//! loss, duplication and reordering (the kernel here has no netem), sends
//! them from one socket and reassembles the reply.

pub mod fragment;
pub mod npy;

pub use fragment::{image_rows, image_tiles, text_chunks, tile_grid, OutputGeometry, RawImage};

use crate::transform::Tensor;
use crate::upstream::echo::parse_kserve_binary_response;
use crate::wire::hello::MIN_HELLO_DATAGRAM;
use crate::wire::{
    ErrorCode, ErrorPacket, ErrorRepr, HeaderRepr, HelloRepr, Kind, Packet, ResponsePacket,
    ResponseRepr, TokenPacket, TokenRepr, HEADER_LEN,
};
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

/// Faults injected on the client's own datagrams.
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    /// Probability of dropping each datagram.
    pub drop: f64,
    /// Probability of sending a datagram twice (the copy later).
    pub dup: f64,
    /// Shuffle the send order.
    pub reorder: bool,
    pub seed: u64,
}

impl Faults {
    /// Applies the faults: the datagrams to send, in order.
    pub fn apply(&self, datagrams: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
        let mut rng = fastrand::Rng::with_seed(self.seed);
        let mut out = Vec::with_capacity(datagrams.len());
        let mut dups = Vec::new();
        for d in datagrams {
            if self.drop > 0.0 && rng.f64() < self.drop {
                continue;
            }
            if self.dup > 0.0 && rng.f64() < self.dup {
                dups.push(d.clone());
            }
            out.push(d);
        }
        // Copies go out after their originals (late duplicates).
        out.extend(dups);
        if self.reorder {
            rng.shuffle(&mut out);
        }
        out
    }
}

/// The proxy's answer to one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Response {
        content_type: u16,
        header_len: usize,
        body: Vec<u8>,
    },
    Error {
        code: ErrorCode,
        message: String,
    },
    /// The answer to a HELLO (address validation).
    Token {
        validated: bool,
        lifetime_s: u32,
        token: Vec<u8>,
    },
}

impl Reply {
    /// The tensors of a KServe v2 binary response.
    pub fn tensors(&self) -> Result<Vec<Tensor>, String> {
        match self {
            Reply::Response {
                content_type: 2,
                header_len,
                body,
            } => parse_kserve_binary_response(body, *header_len).map_err(|e| e.to_string()),
            Reply::Response { content_type, .. } => Err(format!(
                "content_type {content_type} carries no binary tensors"
            )),
            Reply::Error { code, message } => Err(format!("ERROR {code}: {message}")),
            Reply::Token { .. } => Err("a TOKEN carries no tensors".into()),
        }
    }
}

/// Client errors.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("socket: {0}")]
    Io(#[from] io::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("bad reply: {0}")]
    BadReply(String),
    #[error("address validation failed: {0}")]
    Validation(String),
}

/// A client socket talking to one proxy.
pub struct Client {
    socket: UdpSocket,
    server: SocketAddr,
    pub timeout: Duration,
    next_id: u64,
    buf: Vec<u8>,
    /// Address validation: run the HELLO/TOKEN handshake before the first
    /// request and after a RETRY (on by default; off to test the proxy
    /// with an unvalidated address).
    pub validate: bool,
    /// Whether the proxy validated this socket's address (and until when,
    /// by its TOKEN's lifetime).
    validated_until: Option<Instant>,
    /// Pre-shared key (tensorwire extension): proof sent with the token.
    pub psk: Option<Vec<u8>>,
}

impl Client {
    pub fn connect(server: SocketAddr) -> io::Result<Client> {
        let bind: SocketAddr = if server.is_ipv6() {
            "[::]:0".parse().unwrap()
        } else {
            "0.0.0.0:0".parse().unwrap()
        };
        let socket = UdpSocket::bind(bind)?;
        // Replies of a whole tensor arrive in a burst.
        use std::os::fd::AsRawFd;
        crate::ingress::set_buffer_size(
            socket.as_raw_fd(),
            libc::SO_RCVBUFFORCE,
            libc::SO_RCVBUF,
            16 << 20,
        );
        Ok(Client {
            socket,
            server,
            timeout: Duration::from_secs(5),
            // Distinct ids per client socket; start from the clock so a
            // restarted client does not collide with remembered keys.
            next_id: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1),
            buf: vec![0u8; 65536],
            validate: true,
            validated_until: None,
            psk: None,
        })
    }

    /// The client's socket (for senders of their own, e.g. sendmmsg).
    pub fn socket(&self) -> &UdpSocket {
        &self.socket
    }

    /// Whether the proxy has validated this client's address.
    pub fn is_validated(&self) -> bool {
        self.validated_until.is_some_and(|t| Instant::now() < t)
    }

    /// A HELLO datagram: token (and the PSK proof with it), padded to
    /// 1200 bytes.
    pub fn hello_datagram(request_id: u64, token: &[u8], psk: Option<&[u8]>) -> Vec<u8> {
        let proof = match (token.is_empty(), psk) {
            (false, Some(k)) => Some(crate::proxy::validation::psk_proof(k, token)),
            _ => None,
        };
        let mut d = vec![0u8; MIN_HELLO_DATAGRAM];
        let mut p = Packet::new_unchecked(&mut d[..]);
        HeaderRepr::fragment(Kind::Hello, 0, request_id, 0, 1).emit(&mut p);
        HelloRepr {
            token,
            proof: proof.as_ref(),
        }
        .emit(p.body_mut());
        d
    }

    /// Validates this socket's address with the proxy: HELLO -> TOKEN ->
    /// HELLO with the token -> TOKEN validated (spec "Address validation").
    pub fn handshake(&mut self) -> Result<(), ClientError> {
        let mut token = Vec::new();
        for _ in 0..3 {
            let id = self.next_request_id();
            let d = Self::hello_datagram(id, &token, self.psk.as_deref());
            self.socket.send_to(&d, self.server)?;
            match self.receive(id)? {
                Reply::Token {
                    validated: true,
                    lifetime_s,
                    ..
                } => {
                    let life = Duration::from_secs(lifetime_s.max(1).into());
                    self.validated_until = Some(Instant::now() + life);
                    return Ok(());
                }
                Reply::Token {
                    validated: false,
                    token: t,
                    ..
                } => {
                    if !token.is_empty() {
                        return Err(ClientError::Validation(format!(
                            "the proxy refused its own token{}",
                            if self.psk.is_some() {
                                " (wrong pre-shared key?)"
                            } else {
                                " (pre-shared key needed?)"
                            }
                        )));
                    }
                    token = t;
                }
                Reply::Error { .. } => {
                    // A proxy before rev 3 does not know HELLO: nothing to
                    // validate with; go on without.
                    self.validated_until = Some(Instant::now() + Duration::from_secs(3600));
                    return Ok(());
                }
                other => return Err(ClientError::Validation(format!("HELLO answered {other:?}"))),
            }
        }
        Err(ClientError::Validation("no TOKEN validated".into()))
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// A fresh request id.
    pub fn next_request_id(&mut self) -> u64 {
        self.next_id = self.next_id.wrapping_add(1);
        self.next_id
    }

    /// Sends raw datagrams as they are.
    pub fn send_raw(&self, datagrams: &[Vec<u8>]) -> io::Result<()> {
        for d in datagrams {
            self.socket.send_to(d, self.server)?;
        }
        Ok(())
    }

    /// Sends `datagrams` (after faults) and waits for the answer to
    /// `request_id`.
    /// Validates first when needed; a RETRY (validation forgotten by the
    /// proxy) gets one new handshake and one resend under a new id.
    pub fn request(
        &mut self,
        request_id: u64,
        mut datagrams: Vec<Vec<u8>>,
        faults: &Faults,
    ) -> Result<Reply, ClientError> {
        if self.validate && !self.is_validated() {
            self.handshake()?;
        }
        let to_send = faults.apply(datagrams.clone());
        self.send_raw(&to_send)?;
        let reply = self.receive(request_id)?;
        if !(self.validate
            && matches!(
                reply,
                Reply::Error {
                    code: ErrorCode::Retry,
                    ..
                }
            ))
        {
            return Ok(reply);
        }
        self.validated_until = None;
        self.handshake()?;
        let id = self.next_request_id();
        for d in &mut datagrams {
            if d.len() >= HEADER_LEN {
                Packet::new_unchecked(&mut d[..]).set_request_id(id);
            }
        }
        let to_send = faults.apply(datagrams);
        self.send_raw(&to_send)?;
        self.receive(id)
    }

    /// Waits for the reply to `request_id`, ignoring other traffic.
    pub fn receive(&mut self, request_id: u64) -> Result<Reply, ClientError> {
        let deadline = Instant::now() + self.timeout;
        let mut parts: Vec<Option<Vec<u8>>> = Vec::new();
        let mut got = 0usize;
        let mut meta: Option<(u16, u32, u32)> = None; // content_type, total_len, header_len
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ClientError::Timeout(self.timeout));
            }
            self.socket.set_read_timeout(Some(left))?;
            let (n, from) = match self.socket.recv_from(&mut self.buf) {
                Ok(x) => x,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    continue
                }
                Err(e) => return Err(e.into()),
            };
            if from != self.server {
                continue;
            }
            let d = &self.buf[..n];
            let Ok(p) = Packet::new_checked(d) else {
                continue;
            };
            if p.request_id() != request_id {
                continue;
            }
            let h = HeaderRepr::parse(&p).map_err(|e| ClientError::BadReply(e.to_string()))?;
            match h.kind {
                Kind::Token => {
                    let t = TokenPacket::new_checked(p.body())
                        .map_err(|e| ClientError::BadReply(e.to_string()))?;
                    let r =
                        TokenRepr::parse(&t).map_err(|e| ClientError::BadReply(e.to_string()))?;
                    return Ok(Reply::Token {
                        validated: r.validated,
                        lifetime_s: r.lifetime_s,
                        token: r.token.to_vec(),
                    });
                }
                Kind::Error => {
                    let e = ErrorPacket::new_checked(p.body())
                        .map_err(|e| ClientError::BadReply(e.to_string()))?;
                    let r =
                        ErrorRepr::parse(&e).map_err(|e| ClientError::BadReply(e.to_string()))?;
                    return Ok(Reply::Error {
                        code: r.code,
                        message: r.message.to_string(),
                    });
                }
                Kind::Response => {
                    let rp = ResponsePacket::new_checked(p.body())
                        .map_err(|e| ClientError::BadReply(e.to_string()))?;
                    let r = ResponseRepr::parse(&rp)
                        .map_err(|e| ClientError::BadReply(e.to_string()))?;
                    if parts.is_empty() {
                        parts = vec![None; h.count as usize];
                        meta = Some((r.content_type, r.total_len, r.header_len));
                    }
                    if parts.len() != h.count as usize
                        || meta != Some((r.content_type, r.total_len, r.header_len))
                    {
                        return Err(ClientError::BadReply("fragments disagree".into()));
                    }
                    let slot = &mut parts[h.seq as usize];
                    if slot.is_none() {
                        let mut v = r.offset.to_be_bytes().to_vec();
                        v.extend_from_slice(rp.bytes());
                        *slot = Some(v);
                        got += 1;
                    }
                    if got == parts.len() {
                        let (ct, total, hl) = meta.expect("set with parts");
                        let mut body = vec![0u8; total as usize];
                        for v in parts.iter().flatten() {
                            let off = u32::from_be_bytes([v[0], v[1], v[2], v[3]]) as usize;
                            body[off..off + v.len() - 4].copy_from_slice(&v[4..]);
                        }
                        return Ok(Reply::Response {
                            content_type: ct,
                            header_len: hl as usize,
                            body,
                        });
                    }
                }
                _ => continue,
            }
        }
    }

    /// DESCRIBE: the proxy's pipelines and limits.
    pub fn describe(&mut self) -> Result<serde_json::Value, ClientError> {
        let id = self.next_request_id();
        let mut d = vec![0u8; crate::wire::HEADER_LEN];
        HeaderRepr::fragment(Kind::Describe, 0, id, 0, 1)
            .emit(&mut Packet::new_unchecked(&mut d[..]));
        match self.request(id, vec![d], &Faults::default())? {
            Reply::Response {
                content_type: 1,
                body,
                ..
            } => serde_json::from_slice(&body).map_err(|e| ClientError::BadReply(e.to_string())),
            other => Err(ClientError::BadReply(format!(
                "DESCRIBE answered {other:?}"
            ))),
        }
    }

    /// Sends an image (rows, or tiles cut for `tiles`) to `pipeline`.
    pub fn send_image(
        &mut self,
        pipeline: u16,
        img: &RawImage,
        tiles: Option<OutputGeometry>,
        max_datagram: usize,
        faults: &Faults,
    ) -> Result<Reply, ClientError> {
        let id = self.next_request_id();
        let datagrams = match tiles {
            None => image_rows(img, pipeline, id, max_datagram),
            Some(g) => {
                let grid = tile_grid(
                    img.width,
                    img.height,
                    img.format.channels(),
                    g,
                    max_datagram,
                )
                .ok_or_else(|| ClientError::BadReply("no tiling fits one datagram".into()))?;
                image_tiles(img, pipeline, id, &grid)
            }
        };
        self.request(id, datagrams, faults)
    }

    /// Sends a text to `pipeline` in overlapping chunks.
    pub fn send_text(
        &mut self,
        pipeline: u16,
        text: &[u8],
        overlap: usize,
        max_datagram: usize,
        faults: &Faults,
    ) -> Result<Reply, ClientError> {
        let id = self.next_request_id();
        let datagrams = text_chunks(text, pipeline, id, max_datagram, overlap);
        self.request(id, datagrams, faults)
    }
}

/// Decodes an image file into pixels of `format`.
pub fn load_image(
    path: &std::path::Path,
    format: Option<crate::wire::PixelFormat>,
) -> Result<RawImage, image::ImageError> {
    use crate::wire::PixelFormat as F;
    let img = image::open(path)?;
    let format = format.unwrap_or(match img.color().channel_count() {
        1 | 2 => F::Gray8,
        4 => F::Rgba8,
        _ => F::Rgb8,
    });
    let (w, h) = (img.width(), img.height());
    let data = match format {
        F::Gray8 => img.to_luma8().into_raw(),
        F::Rgb8 => img.to_rgb8().into_raw(),
        F::Rgba8 => img.to_rgba8().into_raw(),
        F::Bgr8 => {
            let mut v = img.to_rgb8().into_raw();
            v.chunks_exact_mut(3).for_each(|p| p.swap(0, 2));
            v
        }
        F::Bgra8 => {
            let mut v = img.to_rgba8().into_raw();
            v.chunks_exact_mut(4).for_each(|p| p.swap(0, 2));
            v
        }
    };
    Ok(RawImage {
        width: w,
        height: h,
        format,
        data,
    })
}
