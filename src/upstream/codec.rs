//! The HTTP/1.1 codec the model-server client speaks: requests encoded,
//! responses parsed incrementally with httparse (Content-Length, chunked,
//! or until close). Pure: bytes in, values out; the connection pools that
//! carry these bytes live in `http_pool` (I/O).

use std::net::SocketAddr;

/// Why a call failed. `Unavailable`-class errors mean the server could
/// not be reached or did not answer; `Malformed` that it answered
/// something that is not HTTP.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    #[error("connect to {0}: {1}")]
    Connect(SocketAddr, String),
    #[error("connection to {0} lost: {1}")]
    Io(SocketAddr, String),
    #[error("no answer from {0} within {1} ms")]
    Timeout(SocketAddr, u64),
    #[error("malformed HTTP answer from {0}: {1}")]
    Malformed(SocketAddr, String),
    #[error("{0} reconnecting after failures (next attempt in {1} ms)")]
    Backoff(SocketAddr, u64),
    #[error("cannot resolve {0}: {1}")]
    Resolve(String, String),
}

impl HttpError {
    /// Whether the server is unreachable (as opposed to answering badly).
    pub fn is_unavailable(&self) -> bool {
        !matches!(self, HttpError::Malformed(..))
    }
}

/// A parsed response.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HttpResponse {
    pub status: u16,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The server keeps the connection open for the next request.
    pub keep_alive: bool,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Serializes a request: `POST`/`GET` with a body (may be empty).
pub fn encode_request(
    method: &str,
    host: &str,
    path: &str,
    extra_headers: &[(&str, String)],
    content_type: &str,
    body: &[u8],
) -> Vec<u8> {
    let mut head =
        format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: tensorwire\r\n");
    if !body.is_empty() || method == "POST" {
        head.push_str(&format!(
            "Content-Type: {content_type}\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    for (k, v) in extra_headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut out = Vec::with_capacity(head.len() + body.len());
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(body);
    out
}

/// How the body of a parsed head is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyKind {
    Length(usize),
    Chunked,
    UntilClose,
}

#[derive(Debug, Clone)]
struct Head {
    status: u16,
    headers: Vec<(String, String)>,
    body: BodyKind,
    keep_alive: bool,
}

/// Where the chunked decoder is (RFC 9112 section 7.1). Every byte of the
/// framing is looked at once, in [`Chunked::step`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunked {
    /// Hex digits of a chunk size so far (`digits` of them).
    Size {
        size: u64,
        digits: u8,
    },
    /// After the size: extensions (ignored) up to CR; `len` bytes so far.
    Ext {
        size: u64,
        len: usize,
    },
    /// CR of the size line seen, LF expected.
    SizeLf {
        size: u64,
    },
    /// Data bytes of the current chunk still to come.
    Data {
        remaining: u64,
    },
    /// The chunk's data is in: CR expected, then LF.
    DataCr,
    DataLf,
    /// After the last chunk: trailer lines (ignored) until an empty one;
    /// `line` bytes of the current line, `total` of all trailers.
    Trailer {
        line: usize,
        total: usize,
        cr: bool,
    },
    Done,
}

/// What the parser is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Head,
    Body,
    /// A response was returned; [`ResponseParser::reset`] before the next.
    Done,
}

/// Responses larger than this are refused as malformed (bounded memory).
pub const MAX_RESPONSE_BODY: usize = 256 << 20;
/// The status line and headers together, at most.
pub const MAX_HEAD: usize = 64 << 10;
/// Header lines in a response head, at most.
pub const MAX_HEADERS: usize = 48;
/// Bytes of a chunk-size line's extensions, at most.
const MAX_CHUNK_EXT: usize = 4 << 10;

/// Incremental HTTP/1.1 response parser. It is fed the bytes of one
/// response as they arrive ([`ResponseParser::feed`]) and keeps its state
/// between calls: the head until it is complete (at most [`MAX_HEAD`]),
/// then the body decoded so far (at most its limit, [`MAX_RESPONSE_BODY`]
/// by default) and, for a chunked body, where it is in the framing. Each
/// byte received is examined once: time is linear in the bytes, memory
/// bounded by the limits, and every size a server sends is checked before
/// it is used.
#[derive(Debug)]
pub struct ResponseParser {
    phase: Phase,
    max_body: usize,
    /// The head's bytes until it is complete.
    head_buf: Vec<u8>,
    head: Option<Head>,
    body: Vec<u8>,
    chunked: Chunked,
    /// Bytes fed since the last reset.
    received: usize,
    /// Bytes came after the end of the response (no pipelining: the
    /// connection is out of step and is not kept).
    trailing: bool,
}

impl Default for ResponseParser {
    fn default() -> Self {
        ResponseParser::with_max_body(MAX_RESPONSE_BODY)
    }
}

/// The index just past the first empty line (`\n\n` or `\n\r\n`) of `b`
/// ending at or after `from`.
fn head_end(b: &[u8], from: usize) -> Option<usize> {
    (from.max(1)..b.len()).find_map(|i| {
        let blank = b[i] == b'\n'
            && (b[i - 1] == b'\n' || (i >= 2 && b[i - 2] == b'\n' && b[i - 1] == b'\r'));
        blank.then_some(i + 1)
    })
}

fn hex_digit(c: u8) -> Option<u64> {
    (c as char).to_digit(16).map(u64::from)
}

impl ResponseParser {
    /// A parser refusing bodies longer than `max_body` bytes.
    pub fn with_max_body(max_body: usize) -> ResponseParser {
        ResponseParser {
            phase: Phase::Head,
            max_body,
            head_buf: Vec::new(),
            head: None,
            body: Vec::new(),
            chunked: Chunked::Size { size: 0, digits: 0 },
            received: 0,
            trailing: false,
        }
    }

    /// Bytes fed since the last reset.
    pub fn received(&self) -> usize {
        self.received
    }

    /// Bytes held now (the head so far, the body so far): what a
    /// connection costs in memory while its answer arrives.
    pub fn buffered(&self) -> usize {
        self.head_buf.capacity() + self.body.capacity()
    }

    /// Takes the next bytes of the response (`bytes` may be empty) and
    /// whether the peer has closed (`eof`: nothing follows). Ok(None):
    /// more bytes are needed. After a response or an error, [`reset`]
    /// before the next response.
    ///
    /// [`reset`]: ResponseParser::reset
    pub fn feed(&mut self, bytes: &[u8], eof: bool) -> Result<Option<HttpResponse>, String> {
        self.received = self.received.saturating_add(bytes.len());
        let mut rest = bytes;
        loop {
            match self.phase {
                Phase::Done => {
                    return Err("bytes fed after the end of the response".into());
                }
                Phase::Head => match self.feed_head(rest, eof)? {
                    Some(used) => rest = &rest[used..],
                    None => return Ok(None),
                },
                Phase::Body => return self.feed_body(rest, eof),
            }
        }
    }

    /// Same as [`ResponseParser::feed`] for callers that keep everything
    /// read in one buffer: `buf` is all the bytes of the response so far,
    /// of which only those not seen before are examined.
    pub fn parse(&mut self, buf: &[u8], eof: bool) -> Result<Option<HttpResponse>, String> {
        let Some(new) = buf.get(self.received..) else {
            return Err("buffer shorter than the bytes already parsed".into());
        };
        self.feed(new, eof)
    }

    /// Head bytes: Some(bytes of `b` used) once the head is complete (the
    /// phase is then Body, or Head again after a 1xx interim answer).
    fn feed_head(&mut self, b: &[u8], eof: bool) -> Result<Option<usize>, String> {
        let old = self.head_buf.len();
        let take = b.len().min(MAX_HEAD - old);
        self.head_buf.extend_from_slice(&b[..take]);
        // A terminator may straddle the previous bytes (at most 2 back).
        let Some(end) = head_end(&self.head_buf, old.saturating_sub(2)) else {
            if self.head_buf.len() >= MAX_HEAD {
                return Err(format!("response head larger than {} KiB", MAX_HEAD >> 10));
            }
            if eof {
                return Err(if self.received == 0 {
                    "connection closed before any answer".into()
                } else {
                    "connection closed inside the response head".into()
                });
            }
            return Ok(None);
        };
        let used = end - old;
        self.head_buf.truncate(end);
        let head = Self::parse_head(&self.head_buf)?;
        self.head_buf = Vec::new();
        if (100..200).contains(&head.status) && head.status != 101 {
            // An interim answer (100 Continue, 103 Early Hints): the final
            // one follows.
            return Ok(Some(used));
        }
        self.body = Vec::new();
        self.chunked = Chunked::Size { size: 0, digits: 0 };
        if let BodyKind::Length(n) = head.body {
            if n > self.max_body {
                return Err(format!("body of {n} bytes is too large"));
            }
            // What is announced is not trusted with memory up front.
            self.body.reserve(n.min(64 << 10));
        }
        self.head = Some(head);
        self.phase = Phase::Body;
        Ok(Some(used))
    }

    /// A complete head (it ends with an empty line).
    fn parse_head(buf: &[u8]) -> Result<Head, String> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut r = httparse::Response::new(&mut headers);
        match r.parse(buf) {
            Ok(httparse::Status::Complete(_)) => {}
            Ok(httparse::Status::Partial) => return Err("response head: incomplete".into()),
            Err(httparse::Error::TooManyHeaders) => {
                return Err(format!("response head: more than {MAX_HEADERS} headers"))
            }
            Err(e) => return Err(format!("response head: {e}")),
        }
        let status = r.code.unwrap_or(0);
        let http10 = r.version == Some(0);
        let headers: Vec<(String, String)> = r
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_ascii_lowercase(),
                    String::from_utf8_lossy(h.value).trim().to_string(),
                )
            })
            .collect();
        let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v);
        let chunked =
            get("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        let mut length: Option<u64> = None;
        for (_, v) in headers.iter().filter(|(k, _)| k == "content-length") {
            // Digits only (no sign, no spaces), within u64; several
            // headers (or a list) must agree.
            for v in v.split(',').map(str::trim) {
                let n = (!v.is_empty() && v.bytes().all(|c| c.is_ascii_digit()))
                    .then(|| v.parse::<u64>().ok())
                    .flatten()
                    .ok_or_else(|| format!("bad Content-Length `{v}`"))?;
                if length.is_some_and(|l| l != n) {
                    return Err("conflicting Content-Length headers".into());
                }
                length = Some(n);
            }
        }
        let body = if chunked {
            BodyKind::Chunked
        } else if let Some(n) = length {
            let n = usize::try_from(n).map_err(|_| format!("body of {n} bytes is too large"))?;
            BodyKind::Length(n)
        } else if status == 204 || status == 304 || (100..200).contains(&status) {
            BodyKind::Length(0)
        } else {
            BodyKind::UntilClose
        };
        let close = get("connection")
            .map(|v| v.to_ascii_lowercase())
            .is_some_and(|v| v.contains("close"));
        let keep_alive = !close && !http10 && body != BodyKind::UntilClose;
        Ok(Head {
            status,
            headers,
            body,
            keep_alive,
        })
    }

    fn feed_body(&mut self, b: &[u8], eof: bool) -> Result<Option<HttpResponse>, String> {
        let kind = self.head.as_ref().expect("a head before the body").body;
        let complete = match kind {
            BodyKind::Length(n) => {
                let take = (n - self.body.len()).min(b.len());
                self.body.extend_from_slice(&b[..take]);
                self.trailing |= take < b.len();
                if self.body.len() < n && eof {
                    return Err(format!(
                        "connection closed after {} of {n} body bytes",
                        self.body.len()
                    ));
                }
                self.body.len() == n
            }
            BodyKind::UntilClose => {
                if b.len() > self.max_body - self.body.len() {
                    return Err("body too large".into());
                }
                self.body.extend_from_slice(b);
                eof
            }
            BodyKind::Chunked => {
                let used = self.chunked_step(b)?;
                self.trailing |= used < b.len();
                if self.chunked != Chunked::Done && eof {
                    return Err("connection closed inside a chunked body".into());
                }
                self.chunked == Chunked::Done
            }
        };
        if !complete {
            return Ok(None);
        }
        self.phase = Phase::Done;
        let head = self.head.take().expect("a head before the body");
        Ok(Some(HttpResponse {
            status: head.status,
            headers: head.headers,
            body: std::mem::take(&mut self.body),
            keep_alive: head.keep_alive && !self.trailing && !eof,
        }))
    }

    /// Runs the chunked decoder over `b`; returns the bytes used (all of
    /// them unless the body ended inside `b`).
    fn chunked_step(&mut self, b: &[u8]) -> Result<usize, String> {
        let mut i = 0;
        while i < b.len() {
            let c = b[i];
            self.chunked = match self.chunked {
                Chunked::Done => return Ok(i),
                Chunked::Data { remaining } => {
                    // The one state that takes many bytes at once.
                    let n = remaining.min((b.len() - i) as u64) as usize;
                    self.body.extend_from_slice(&b[i..i + n]);
                    i += n;
                    let remaining = remaining - n as u64;
                    self.chunked = if remaining == 0 {
                        Chunked::DataCr
                    } else {
                        Chunked::Data { remaining }
                    };
                    continue;
                }
                Chunked::Size { size, digits } => match (c, hex_digit(c)) {
                    (_, Some(d)) => {
                        if digits >= 16 {
                            return Err("chunk size too large".into());
                        }
                        Chunked::Size {
                            size: (size << 4) | d,
                            digits: digits + 1,
                        }
                    }
                    (b';' | b' ' | b'\t', None) if digits > 0 => Chunked::Ext { size, len: 0 },
                    (b'\r', None) if digits > 0 => Chunked::SizeLf { size },
                    _ => return Err("bad chunk size".into()),
                },
                Chunked::Ext { size, len } => match c {
                    b'\r' => Chunked::SizeLf { size },
                    b'\n' => return Err("bad chunk extension".into()),
                    _ if len >= MAX_CHUNK_EXT => return Err("chunk extension too long".into()),
                    _ => Chunked::Ext { size, len: len + 1 },
                },
                Chunked::SizeLf { size } => {
                    if c != b'\n' {
                        return Err("bad chunk size line".into());
                    }
                    let room = (self.max_body - self.body.len()) as u64;
                    if size > room {
                        return Err("chunked body too large".into());
                    }
                    if size == 0 {
                        Chunked::Trailer {
                            line: 0,
                            total: 0,
                            cr: false,
                        }
                    } else {
                        Chunked::Data { remaining: size }
                    }
                }
                Chunked::DataCr if c == b'\r' => Chunked::DataLf,
                Chunked::DataLf if c == b'\n' => Chunked::Size { size: 0, digits: 0 },
                Chunked::DataCr | Chunked::DataLf => {
                    return Err("chunk not followed by CRLF".into())
                }
                Chunked::Trailer { line, total, cr } => {
                    if total >= MAX_HEAD {
                        return Err("chunked trailers too large".into());
                    }
                    match (c, cr) {
                        (b'\n', true) if line == 0 => Chunked::Done,
                        (b'\n', true) => Chunked::Trailer {
                            line: 0,
                            total: total + 1,
                            cr: false,
                        },
                        (b'\r', false) => Chunked::Trailer {
                            line,
                            total: total + 1,
                            cr: true,
                        },
                        (_, true) | (b'\n', false) => return Err("bad chunked trailer".into()),
                        (_, false) => Chunked::Trailer {
                            line: line + 1,
                            total: total + 1,
                            cr: false,
                        },
                    }
                }
            };
            i += 1;
        }
        Ok(i)
    }

    /// Ready for the next response on the same connection.
    pub fn reset(&mut self) {
        *self = ResponseParser::with_max_body(self.max_body);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(bytes: &[u8]) -> Result<HttpResponse, String> {
        // Feed byte by byte: every prefix must ask for more, the whole
        // must complete.
        let mut p = ResponseParser::default();
        for i in 0..bytes.len() {
            if let Some(r) = p.parse(&bytes[..i], false)? {
                panic!("completed early at {i}: {r:?}");
            }
        }
        p.parse(bytes, false)?
            .ok_or_else(|| "incomplete".to_string())
    }

    #[test]
    fn content_length_and_headers() {
        let r = parse_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nInference-Header-Content-Length: 2\r\nContent-Length: 5\r\n\r\n{}abc",
        )
        .unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.body, b"{}abc");
        assert_eq!(r.header("inference-header-content-length"), Some("2"));
        assert!(r.keep_alive);
    }

    #[test]
    fn chunked_with_trailer() {
        let r = parse_all(
            b"HTTP/1.1 500 Internal Server Error\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n3;ext=1\r\nefg\r\n0\r\nX-T: 1\r\n\r\n",
        )
        .unwrap();
        assert_eq!(r.status, 500);
        assert_eq!(r.body, b"abcdefg");
    }

    #[test]
    fn until_close_and_connection_close() {
        let mut p = ResponseParser::default();
        let b = b"HTTP/1.0 200 OK\r\n\r\nhello";
        assert_eq!(p.parse(b, false).unwrap(), None);
        let r = p.parse(b, true).unwrap().unwrap();
        assert_eq!(r.body, b"hello");
        assert!(!r.keep_alive);
        let r = parse_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
            .unwrap();
        assert!(!r.keep_alive);
    }

    #[test]
    fn malformed_answers_are_errors() {
        let mut p = ResponseParser::default();
        assert!(p.parse(b"garbage garbage\r\n\r\n", false).is_err());
        let mut p = ResponseParser::default();
        assert!(p
            .parse(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", false)
            .is_err());
        let mut p = ResponseParser::default();
        assert!(p
            .parse(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", true)
            .is_err());
        let mut p = ResponseParser::default();
        assert!(p.parse(b"", true).is_err());
        let mut p = ResponseParser::default();
        assert!(p
            .parse(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                false
            )
            .is_err());
    }

    /// Feeds `bytes` cut at the given lengths (the rest in one piece).
    fn feed_split(
        p: &mut ResponseParser,
        bytes: &[u8],
        cuts: &[usize],
    ) -> Result<Option<HttpResponse>, String> {
        let mut at = 0;
        for &n in cuts {
            let end = (at + n).min(bytes.len());
            if let Some(r) = p.feed(&bytes[at..end], false)? {
                assert_eq!(end, bytes.len(), "completed early at {end}");
                return Ok(Some(r));
            }
            at = end;
        }
        p.feed(&bytes[at..], false)
    }

    #[test]
    fn overflowing_chunk_size_is_an_error_not_a_panic() {
        let head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for body in [
            &b"1\r\na\r\nffffffffffffffff\r\n"[..],
            b"1\r\na\r\nffffffffffffffff\r\nabc",
            b"1\r\na\r\n1ffffffffffffffff\r\n",
            b"fffffffffffffff0\r\n",
            b"10000001\r\n",
        ] {
            let bytes = [head.clone(), body.to_vec()].concat();
            for cuts in [&[][..], &[1; 80][..], &[50, 3, 7][..]] {
                let mut p = ResponseParser::default();
                let e = feed_split(&mut p, &bytes, cuts).unwrap_err();
                assert!(e.contains("too large"), "{e}");
            }
        }
        // Within the limit, a chunk may be announced larger than what came.
        let mut p = ResponseParser::with_max_body(100);
        assert_eq!(
            p.feed(&[head.clone(), b"64\r\nab".to_vec()].concat(), false),
            Ok(None)
        );
        let mut p = ResponseParser::with_max_body(100);
        assert!(p
            .feed(&[head, b"65\r\nab".to_vec()].concat(), false)
            .is_err());
    }

    #[test]
    fn huge_or_bad_content_lengths() {
        for (cl, want) in [
            ("9223372036854775808", "too large"),
            ("18446744073709551615", "too large"),
            ("18446744073709551616", "bad Content-Length"),
            ("+5", "bad Content-Length"),
            ("-1", "bad Content-Length"),
            ("5, 6", "conflicting"),
        ] {
            let mut p = ResponseParser::default();
            let r = format!("HTTP/1.1 200 OK\r\nContent-Length: {cl}\r\n\r\nabc");
            let e = p.feed(r.as_bytes(), false).unwrap_err();
            assert!(e.contains(want), "{cl}: {e}");
        }
        let mut p = ResponseParser::default();
        let r = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\ncontent-length: 3\r\n\r\nabc";
        assert_eq!(p.feed(r, false).unwrap().unwrap().body, b"abc");
    }

    #[test]
    fn head_and_header_count_are_bounded() {
        // A head that never ends: refused at MAX_HEAD, holding no more.
        let mut p = ResponseParser::default();
        let mut r = Ok(None);
        let line = b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
        r = r.and_then(|_| p.feed(b"HTTP/1.1 200 OK\r\n", false));
        for _ in 0..(1 << 20) / line.len() {
            r = p.feed(line, false);
            assert!(p.buffered() <= 2 * MAX_HEAD);
            if r.is_err() {
                break;
            }
        }
        assert!(r.unwrap_err().contains("larger than 64 KiB"));
        // Too many header lines.
        let mut many = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..MAX_HEADERS + 1 {
            many.extend_from_slice(format!("X-{i}: 1\r\n").as_bytes());
        }
        many.extend_from_slice(b"Content-Length: 0\r\n\r\n");
        let e = ResponseParser::default().feed(&many, false).unwrap_err();
        assert!(e.contains("headers"), "{e}");
    }

    #[test]
    fn bodies_until_close_are_bounded() {
        let mut p = ResponseParser::with_max_body(1000);
        assert_eq!(p.feed(b"HTTP/1.0 200 OK\r\n\r\n", false), Ok(None));
        for _ in 0..10 {
            assert_eq!(p.feed(&[b'x'; 100], false), Ok(None));
        }
        assert!(p.feed(b"y", false).unwrap_err().contains("too large"));
    }

    #[test]
    fn interim_answers_and_trailing_bytes() {
        let r = parse_all(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        )
        .unwrap();
        assert_eq!(
            (r.status, &r.body[..], r.keep_alive),
            (200, &b"ok"[..], true)
        );
        // Bytes past the answer: not kept alive (the stream is out of step).
        let mut p = ResponseParser::default();
        let r = p
            .feed(
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1",
                false,
            )
            .unwrap()
            .unwrap();
        assert!(!r.keep_alive);
        assert!(p.feed(b"x", false).is_err());
        p.reset();
        assert_eq!(
            p.feed(b"HTTP/1.1 204 No Content\r\n\r\n", false)
                .unwrap()
                .unwrap()
                .status,
            204
        );
    }

    #[test]
    fn random_splits_give_the_same_answer() {
        let answers: [&[u8]; 4] = [
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n3;x=y\r\nefg\r\n0\r\nT: 1\r\n\r\n",
            b"HTTP/1.1 200 OK\nContent-Length: 2\n\nhi",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nA\r\n0123456789\r\n0\r\n\r\n",
        ];
        let mut rng = fastrand::Rng::with_seed(7);
        for a in answers {
            let want = ResponseParser::default().feed(a, false).unwrap().unwrap();
            for _ in 0..200 {
                let cuts: Vec<usize> = (0..rng.usize(0..20)).map(|_| rng.usize(0..8)).collect();
                let got = feed_split(&mut ResponseParser::default(), a, &cuts)
                    .unwrap()
                    .unwrap();
                assert_eq!(got, want);
            }
        }
    }

    #[test]
    fn large_chunked_answer_fed_byte_by_byte_is_linear() {
        // 200k one-byte chunks (1.2 MB on the wire) fed one byte at a
        // time: a parser that decodes from the start on each read would
        // take ~10^11 steps here.
        let mut a = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for i in 0..200_000u32 {
            a.extend_from_slice(b"1\r\n");
            a.push(b'a' + (i % 26) as u8);
            a.extend_from_slice(b"\r\n");
        }
        a.extend_from_slice(b"0\r\n\r\n");
        let mut p = ResponseParser::default();
        let t0 = std::time::Instant::now();
        for (i, b) in a.iter().enumerate() {
            if let Some(r) = p.feed(std::slice::from_ref(b), false).unwrap() {
                assert_eq!(i + 1, a.len());
                assert_eq!(r.body.len(), 200_000);
                assert_eq!(r.body[27], b'b');
            }
        }
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(10),
            "{:?}",
            t0.elapsed()
        );
    }

    #[test]
    fn request_encoding() {
        let r = encode_request(
            "POST",
            "127.0.0.1:8000",
            "/v2/models/m/infer",
            &[("Inference-Header-Content-Length", "2".into())],
            "application/octet-stream",
            b"{}ab",
        );
        let s = String::from_utf8(r).unwrap();
        assert!(s.starts_with("POST /v2/models/m/infer HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n"));
        assert!(s.contains("Content-Length: 4\r\n"));
        assert!(s.contains("Inference-Header-Content-Length: 2\r\n"));
        assert!(s.ends_with("\r\n\r\n{}ab"));
    }
}
