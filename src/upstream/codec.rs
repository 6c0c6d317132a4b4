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
    len: usize,
    status: u16,
    headers: Vec<(String, String)>,
    body: BodyKind,
    keep_alive: bool,
}

/// Incremental response parser over a growing buffer.
#[derive(Debug, Default)]
pub struct ResponseParser {
    head: Option<Head>,
}

/// Responses larger than this are refused as malformed (bounded memory).
pub const MAX_RESPONSE_BODY: usize = 256 << 20;
pub const MAX_HEAD: usize = 64 << 10;

impl ResponseParser {
    /// Tries to complete a response from `buf` (everything read so far);
    /// `eof` says the peer closed. Ok(None): need more bytes.
    pub fn parse(&mut self, buf: &[u8], eof: bool) -> Result<Option<HttpResponse>, String> {
        if self.head.is_none() {
            let mut headers = [httparse::EMPTY_HEADER; 48];
            let mut r = httparse::Response::new(&mut headers);
            match r.parse(buf) {
                Ok(httparse::Status::Complete(len)) => {
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
                    let chunked = get("transfer-encoding")
                        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
                    let body = if chunked {
                        BodyKind::Chunked
                    } else if let Some(v) = get("content-length") {
                        let n: usize =
                            v.parse().map_err(|_| format!("bad Content-Length `{v}`"))?;
                        if n > MAX_RESPONSE_BODY {
                            return Err(format!("body of {n} bytes is too large"));
                        }
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
                    self.head = Some(Head {
                        len,
                        status,
                        headers,
                        body,
                        keep_alive,
                    });
                }
                Ok(httparse::Status::Partial) => {
                    if buf.len() > MAX_HEAD {
                        return Err("response head larger than 64 KiB".into());
                    }
                    if eof {
                        return Err(if buf.is_empty() {
                            "connection closed before any answer".into()
                        } else {
                            "connection closed inside the response head".into()
                        });
                    }
                    return Ok(None);
                }
                Err(e) => return Err(format!("response head: {e}")),
            }
        }
        let head = self.head.as_ref().expect("parsed above");
        let rest = &buf[head.len..];
        let body = match head.body {
            BodyKind::Length(n) => {
                if rest.len() < n {
                    if eof {
                        return Err(format!(
                            "connection closed after {} of {n} body bytes",
                            rest.len()
                        ));
                    }
                    return Ok(None);
                }
                rest[..n].to_vec()
            }
            BodyKind::UntilClose => {
                if rest.len() > MAX_RESPONSE_BODY {
                    return Err("body too large".into());
                }
                if !eof {
                    return Ok(None);
                }
                rest.to_vec()
            }
            BodyKind::Chunked => match decode_chunked(rest)? {
                Some(b) => b,
                None if eof => return Err("connection closed inside a chunked body".into()),
                None => return Ok(None),
            },
        };
        let head = self.head.take().expect("parsed above");
        Ok(Some(HttpResponse {
            status: head.status,
            headers: head.headers,
            body,
            keep_alive: head.keep_alive,
        }))
    }

    pub fn reset(&mut self) {
        self.head = None;
    }
}

/// Decodes a complete chunked body, or None if more bytes are needed.
fn decode_chunked(mut b: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let mut out = Vec::new();
    loop {
        let (used, size) = match httparse::parse_chunk_size(b) {
            Ok(httparse::Status::Complete(x)) => x,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => return Err("bad chunk size".into()),
        };
        let size = usize::try_from(size).map_err(|_| "chunk too large".to_string())?;
        if out.len() + size > MAX_RESPONSE_BODY {
            return Err("chunked body too large".into());
        }
        b = &b[used..];
        if size == 0 {
            // Trailers (ignored) end with an empty line.
            let mut rest = b;
            loop {
                let Some(i) = rest.windows(2).position(|w| w == b"\r\n") else {
                    return Ok(None);
                };
                if i == 0 {
                    return Ok(Some(out));
                }
                rest = &rest[i + 2..];
            }
        }
        if b.len() < size + 2 {
            return Ok(None);
        }
        if &b[size..size + 2] != b"\r\n" {
            return Err("chunk not followed by CRLF".into());
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
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
