//! Shared test helpers: test data paths and the cl100k tokenizer; for the
//! upstream tests, the real KServe server (Python, started and killed by
//! the test), the real Triton Inference Server, the OpenAI schema server,
//! and tiny fake HTTP servers that misbehave on purpose.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

/// A file under testdata/.
pub fn testdata(rel: &str) -> PathBuf {
    repo("testdata").join(rel)
}

/// cl100k_base as a tokenizer.json (kept gzipped in testdata).
pub fn cl100k_json() -> String {
    let gz = std::fs::read(testdata("tokenizers/cl100k_base/tokenizer.json.gz")).unwrap();
    let mut json = String::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_string(&mut json)
        .unwrap();
    json
}

/// The test virtualenv's interpreter: `TENSORWIRE_TEST_PYTHON`, else
/// `.venv/bin/python`. Missing = the test fails (never skips).
pub fn python() -> PathBuf {
    let p = std::env::var_os("TENSORWIRE_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo(".venv/bin/python"));
    assert!(
        p.exists(),
        "no Python for the upstream tests at {} — run `make testenv` (creates .venv with \
         testdata/kserve/requirements.txt) or set TENSORWIRE_TEST_PYTHON",
        p.display()
    );
    p
}

/// The interpreter of .venv-triton (scripts/triton-env.sh, `make
/// testenv-triton`), whose site-packages hold the real tritonserver.
/// Missing = the test fails (never skips).
pub fn triton_python() -> PathBuf {
    let p = repo(".venv-triton/bin/python");
    assert!(
        p.exists(),
        "no Triton Inference Server for the upstream tests: {} is missing — run \
         `make testenv-triton` (scripts/triton-env.sh installs PyPI's nvidia-pytriton, which \
         ships tritonserver, into .venv-triton made from Debian's python3.11)",
        p.display()
    );
    p
}

/// A loopback TCP port nobody listens on (now).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A blocking GET's status, or None when nothing answers.
pub fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(500),
    )
    .ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).ok()?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// A Python server process on a loopback port; killed on drop (also
/// when the test panics).
pub struct PyServer {
    child: Option<Child>,
    pub port: u16,
    python: PathBuf,
    args: Vec<String>,
    ready_path: String,
    /// How long start() waits for readiness.
    start_timeout: Duration,
}

impl PyServer {
    /// The KServe v2 server with testdata/kserve/models.py.
    pub fn kserve() -> PyServer {
        let port = free_port();
        let mut s = PyServer {
            child: None,
            port,
            python: python(),
            start_timeout: Duration::from_secs(90),
            args: vec![
                repo("testdata/kserve/models.py").display().to_string(),
                "--http_port".into(),
                port.to_string(),
            ],
            ready_path: "/v2/health/ready".into(),
        };
        s.start();
        s
    }

    /// testdata/openai_server.py.
    pub fn openai() -> PyServer {
        let port = free_port();
        let mut s = PyServer {
            child: None,
            port,
            python: python(),
            start_timeout: Duration::from_secs(90),
            args: vec![
                repo("testdata/openai_server.py").display().to_string(),
                "--port".into(),
                port.to_string(),
            ],
            ready_path: "/health".into(),
        };
        s.start();
        s
    }

    /// The real Triton Inference Server (PyPI nvidia-pytriton's
    /// tritonserver) serving the Python-backend models of
    /// testdata/triton/models, HTTP only. testdata/triton/serve.py execs
    /// tritonserver, so killing the child kills the server (its Python
    /// backend stubs exit with it). Ready = `/v2/health/ready` (with
    /// --strict-readiness: every model loaded).
    pub fn triton() -> PyServer {
        let port = free_port();
        let mut s = PyServer {
            child: None,
            port,
            python: triton_python(),
            // Six models, one Python stub process each; about 7 s on an
            // idle 2-core machine, more while other tests build or run.
            start_timeout: Duration::from_secs(180),
            args: vec![
                repo("testdata/triton/serve.py").display().to_string(),
                "--http-port".into(),
                port.to_string(),
            ],
            ready_path: "/v2/health/ready".into(),
        };
        s.start();
        s
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts (again, on the same port) and waits until it is ready.
    pub fn start(&mut self) {
        assert!(self.child.is_none());
        let log = std::fs::File::create(
            std::env::temp_dir().join(format!("tensorwire-pyserver-{}.log", self.port)),
        )
        .unwrap();
        let child = Command::new(&self.python)
            .args(&self.args)
            .current_dir(repo("testdata"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start the Python server");
        self.child = Some(child);
        let t0 = Instant::now();
        loop {
            if http_status(self.port, &self.ready_path) == Some(200) {
                return;
            }
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "{:?} exited with {st} (log in {})",
                    self.args,
                    std::env::temp_dir().display()
                );
            }
            assert!(
                t0.elapsed() < self.start_timeout,
                "{:?} not ready after {:?} (log in {})",
                self.args,
                self.start_timeout,
                std::env::temp_dir().display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The server's process id (for the Triton server: tritonserver's
    /// own, serve.py execs it).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server running").id()
    }

    /// Kills the process (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PyServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// How a fake server misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// HTTP 500 with a KServe-style JSON error.
    Status500,
    /// Bytes that are not HTTP.
    Garbage,
    /// Reads the request, never answers.
    Stall,
    /// Closes the connection without answering.
    Close,
    /// A good JSON answer, then closes the connection (without saying
    /// `Connection: close`: the keep-alive race a pool must survive).
    AnswerThenClose,
    /// A good JSON answer with a chunked body, kept alive.
    Chunked,
    /// Issue 12's answer: a chunk of 1 byte, then the chunk size
    /// `ffffffffffffffff` (overflows `len + size` in a naive decoder).
    OverflowingChunk,
    /// A status line, then 1 MB of header lines.
    HugeHead,
    /// `Content-Length: 9223372036854775808` (2^63).
    HugeContentLength,
    /// A 200 without a length whose body never ends (until close).
    EndlessBody,
    /// A chunked 200 whose chunks never end.
    EndlessChunks,
    /// A good answer, one byte every 100 ms.
    Trickle,
    /// A good answer to each request, then, 20 ms later, a 200 with body
    /// `early` on the kept-alive connection: an answer to a request not
    /// yet written.
    EarlyAnswer,
    /// Good answers in turn: HTTP/1.0 with a length then close; HTTP/1.0
    /// until close; HTTP/1.1 `Connection: close` on a connection the
    /// server leaves open; HTTP/1.0 `Connection: keep-alive`.
    Http10Mix,
}

/// The JSON answer the fake server gives when it answers well.
pub const FAKE_ANSWER: &[u8] = br#"{"model_name":"m","outputs":[]}"#;

/// A fake HTTP server on loopback, one thread per connection.
pub struct FakeServer {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    /// Requests fully read.
    pub requests: Arc<AtomicUsize>,
}

impl FakeServer {
    pub fn start(fault: Fault) -> FakeServer {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let addr = l.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(AtomicUsize::new(0));
        let (s2, r2) = (stop.clone(), requests.clone());
        std::thread::spawn(move || {
            while !s2.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((c, _)) => {
                        let (s3, r3) = (s2.clone(), r2.clone());
                        std::thread::spawn(move || serve(c, fault, &s3, &r3));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        FakeServer {
            addr,
            stop,
            requests,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn read_request(c: &mut TcpStream) -> bool {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map(|v| v.trim().parse().unwrap())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return true;
            }
        }
        match c.read(&mut chunk) {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn serve(mut c: TcpStream, fault: Fault, stop: &AtomicBool, requests: &AtomicUsize) {
    let _ = c.set_write_timeout(Some(Duration::from_secs(5)));
    while read_request(&mut c) {
        let n = requests.fetch_add(1, Ordering::Relaxed);
        if serve_one(&mut c, fault, stop, n) {
            return;
        }
    }
}

/// Answers one request; true: stop serving this connection.
fn serve_one(c: &mut TcpStream, fault: Fault, stop: &AtomicBool, n: usize) -> bool {
    let good = |c: &mut TcpStream, status_line: &str, extra: &str| {
        let _ = write!(
            c,
            "{status_line}\r\ncontent-type: application/json\r\n{extra}content-length: {}\r\n\r\n",
            FAKE_ANSWER.len()
        );
        let _ = c.write_all(FAKE_ANSWER);
    };
    // Writes until the peer goes away or the test ends.
    let endless = |c: &mut TcpStream, piece: &[u8]| {
        while !stop.load(Ordering::Relaxed) && c.write_all(piece).is_ok() {}
    };
    match fault {
        Fault::OverflowingChunk => {
            let _ = c.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n\
                  1\r\n{\r\nffffffffffffffff\r\n\"model_name\":\"m\"}",
            );
            false
        }
        Fault::HugeHead => {
            let _ = c.write_all(b"HTTP/1.1 200 OK\r\n");
            let line = format!("x-filler: {}\r\n", "a".repeat(1000));
            for _ in 0..1000 {
                if c.write_all(line.as_bytes()).is_err() {
                    return true;
                }
            }
            let _ = c.write_all(b"content-length: 2\r\n\r\n{}");
            false
        }
        Fault::HugeContentLength => {
            let _ = c.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 9223372036854775808\r\n\r\n{}",
            );
            false
        }
        Fault::EndlessBody => {
            let _ = c.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n");
            endless(c, &[b' '; 65536]);
            true
        }
        Fault::EndlessChunks => {
            let _ = c.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n",
            );
            let mut piece = b"ffff\r\n".to_vec();
            piece.resize(6 + 0xffff, b' ');
            piece.extend_from_slice(b"\r\n");
            endless(c, &piece);
            true
        }
        Fault::Trickle => {
            let mut a = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                FAKE_ANSWER.len()
            )
            .into_bytes();
            a.extend_from_slice(FAKE_ANSWER);
            for b in a {
                if stop.load(Ordering::Relaxed) || c.write_all(&[b]).is_err() {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            false
        }
        Fault::EarlyAnswer => {
            good(c, "HTTP/1.1 200 OK", "");
            std::thread::sleep(Duration::from_millis(20));
            let _ = c.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nearly");
            false
        }
        Fault::Http10Mix => match n % 4 {
            0 => {
                good(c, "HTTP/1.0 200 OK", "");
                true
            }
            1 => {
                let _ = write!(
                    c,
                    "HTTP/1.0 200 OK\r\ncontent-type: application/json\r\n\r\n"
                );
                let _ = c.write_all(FAKE_ANSWER);
                true
            }
            2 => {
                // Says close, keeps the connection: the proxy must close it.
                good(c, "HTTP/1.1 200 OK", "connection: close\r\n");
                false
            }
            _ => {
                good(c, "HTTP/1.0 200 OK", "connection: keep-alive\r\n");
                false
            }
        },
        other => serve_classic(c, other, stop),
    }
}

/// The first faults (one answer each); true: stop serving.
fn serve_classic(c: &mut TcpStream, fault: Fault, stop: &AtomicBool) -> bool {
    match fault {
        Fault::Status500 => {
            let body = br#"{"error":"model exploded: CUDA out of memory"}"#;
            let _ = write!(
                    c,
                    "HTTP/1.1 500 Internal Server Error\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                    body.len()
                );
            let _ = c.write_all(body);
        }
        Fault::Garbage => {
            let _ = c.write_all(b"SPDY/9 what is this\r\n\x00\x01\r\n\r\n");
            return true;
        }
        Fault::Close => return true,
        Fault::AnswerThenClose => {
            let body = br#"{"model_name":"m","outputs":[]}"#;
            let _ = write!(
                c,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                body.len()
            );
            let _ = c.write_all(body);
            return true;
        }
        Fault::Chunked => {
            let _ = c.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n\
                      b\r\n{\"model_nam\r\n14\r\ne\":\"m\",\"outputs\":[]}\r\n0\r\n\r\n",
                );
        }
        Fault::Stall => {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(20));
            }
            return true;
        }
        _ => unreachable!("served in serve_one"),
    }
    false
}
