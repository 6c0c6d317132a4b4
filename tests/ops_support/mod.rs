//! Helpers of the operator-facing tests (admin endpoint, CLI, model
//! metadata): the binary run with a config file and the environment, the
//! admin endpoint's GETs, and a tiny KServe-like metadata server.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tensorwire"))
}

/// A loopback port nobody uses now (TCP and UDP).
pub fn free_port() -> u16 {
    loop {
        let t = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = t.local_addr().unwrap().port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A fresh directory under the system's temp dir.
pub fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tw-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The shipped default config with pipeline 1 (the image pipeline) sent
/// to a kserve upstream `triton` at `url` serving `model`, plus `extra`
/// keys in its table.
pub fn kserve_config(url: &str, model: &str, extra: &str) -> String {
    tensorwire::config::DEFAULT_CONFIG.replacen("upstream = \"echo\"", "upstream = \"triton\"", 1)
        + &format!(
            "\n[upstreams.triton]\nkind = \"kserve\"\nurl = \"{url}\"\nmodel = \"{model}\"\n{extra}\n"
        )
}

/// `tensorwire run` with a config text, on free ports; stopped with
/// SIGTERM when dropped. Its stderr goes to a file ([`Proxy::log`]).
pub struct Proxy {
    pub child: Child,
    pub udp: SocketAddr,
    pub admin: SocketAddr,
    log: PathBuf,
}

impl Proxy {
    pub fn start(name: &str, config: &str) -> Proxy {
        Self::start_env(name, config, &[])
    }

    pub fn start_env(name: &str, config: &str, env: &[(&str, &str)]) -> Proxy {
        let dir = temp_dir(name);
        let path = dir.join("tensorwire.toml");
        std::fs::write(&path, config).unwrap();
        let udp: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let log = dir.join("stderr.log");
        let child = bin()
            .args(["run", "--config"])
            .arg(&path)
            .env("TENSORWIRE__INGRESS__LISTEN", udp.to_string())
            .env("TENSORWIRE__INGRESS__MODE", "socket")
            .env("TENSORWIRE__ADMIN__LISTEN", admin.to_string())
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Proxy {
            child,
            udp,
            admin,
            log,
        }
    }

    /// What the proxy logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// GET `path` on the admin endpoint: (status, body); None when
    /// nothing answers.
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        get(self.admin, path)
    }

    /// Waits until `GET path` answers `status` (or panics with the log).
    pub fn wait_for(&mut self, path: &str, status: u16, within: Duration) -> String {
        let t0 = Instant::now();
        loop {
            if let Some((s, body)) = self.get(path) {
                if s == status {
                    return body;
                }
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!(
                    "the proxy exited ({st}) while waiting for {path}:\n{}",
                    self.log()
                );
            }
            assert!(
                t0.elapsed() < within,
                "GET {path} did not answer {status} within {within:?} (last: {:?}); log:\n{}",
                self.get(path),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits for the process to exit by itself.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let t0 = Instant::now();
        while t0.elapsed() < within {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the proxy did not exit within {within:?}:\n{}", self.log());
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(5) {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A plain HTTP/1.1 GET written by hand (what curl sends): (status, body).
pub fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: curl/8.0\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf).to_string();
    let (head, body) = text.split_once("\r\n\r\n")?;
    assert!(
        head.starts_with("HTTP/1.1 "),
        "not an HTTP/1.1 answer: {head}"
    );
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

/// The value of the sample `name` (with its labels, exactly as
/// exposed) in a Prometheus text exposition.
pub fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// Runs `promtool check metrics` on an exposition; fails (never skips)
/// without promtool.
pub fn promtool_check(text: &str) {
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = child.unwrap_or_else(|e| {
        panic!(
            "promtool not found ({e}): install Debian's `prometheus` package \
             (scripts/install-deps.sh does, `make deps`)"
        )
    });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n--- exposition:\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A KServe-v2-like server for start-up checks: ready on every path,
/// `GET /v2/models/{model}` answers `metadata`.
pub struct MetadataServer {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl MetadataServer {
    pub fn start(model: &str, metadata: serde_json::Value) -> MetadataServer {
        Self::start_on(TcpListener::bind("127.0.0.1:0").unwrap(), model, metadata)
    }

    pub fn start_on(l: TcpListener, model: &str, metadata: serde_json::Value) -> MetadataServer {
        l.set_nonblocking(true).unwrap();
        let addr = l.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let meta_path = format!("/v2/models/{model}");
        let body = metadata.to_string();
        std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                let Ok((mut c, _)) = l.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                let _ = c.set_nonblocking(false);
                let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match c.read(&mut chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&buf).to_string();
                let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
                let reply = if path == meta_path {
                    body.clone()
                } else {
                    "{\"ready\": true}".to_string()
                };
                let _ = write!(
                    c,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
                    reply.len()
                );
            }
        });
        MetadataServer { addr, stop }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for MetadataServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Triton's metadata of a resnet50 ONNX/TorchScript model (batching).
pub fn resnet50_metadata() -> serde_json::Value {
    serde_json::json!({
        "name": "resnet50",
        "versions": ["1"],
        "platform": "pytorch_libtorch",
        "inputs": [{"name": "input__0", "datatype": "FP32", "shape": [-1, 3, 224, 224]}],
        "outputs": [{"name": "output__0", "datatype": "FP32", "shape": [-1, 1000]}]
    })
}
