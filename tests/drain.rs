//! Drain on SIGTERM, against the real binary: a request waiting for a
//! slow model server when the signal comes still gets its answer, a new
//! request gets OVERLOADED ("draining"), and the process exits 0.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tensorwire::client::{Client, Faults, RawImage, Reply};
use tensorwire::wire::{ErrorCode, PixelFormat};

/// A KServe-ish server that answers every request after `delay`.
fn slow_server(delay: Duration) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { return };
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 65536];
                loop {
                    // Head, then Content-Length bytes of body.
                    if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                        let len = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .map_or(0, |v| v.trim().parse().unwrap_or(0));
                        if buf.len() >= end + 4 + len {
                            std::thread::sleep(delay);
                            let body = br#"{"model_name":"slow","outputs":[]}"#;
                            let _ = write!(
                                c,
                                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                                body.len()
                            );
                            let _ = c.write_all(body);
                            buf.drain(..end + 4 + len);
                            continue;
                        }
                    }
                    match c.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    port
}

#[test]
fn a_request_in_flight_at_sigterm_is_answered_and_new_ones_are_refused() {
    let model = slow_server(Duration::from_millis(1500));
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // Pipeline 1 (image) on the slow model server; pipeline 2 stays echo.
    let cfg = tensorwire::config::DEFAULT_CONFIG.replacen(
        "upstream = \"echo\"",
        "upstream = \"slow\"",
        1,
    ) + &format!(
        "\n[upstreams.slow]\nkind = \"kserve\"\nurl = \"http://127.0.0.1:{model}\"\nmodel = \"m\"\n\
         check_metadata = \"off\"\nrequest_timeout_ms = 10000\n"
    );
    let dir = std::env::temp_dir().join(format!("tw-drain-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("drain.toml");
    std::fs::write(&path, cfg).unwrap();
    let mut proxy = Command::new(env!("CARGO_BIN_EXE_tensorwire"))
        .args(["run", "--config"])
        .arg(&path)
        .env("TENSORWIRE__INGRESS__LISTEN", format!("127.0.0.1:{port}"))
        .env("TENSORWIRE__INGRESS__MODE", "socket")
        .env("TENSORWIRE__INGRESS__WORKERS", "1")
        .env("TENSORWIRE__ADMIN__LISTEN", "")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut probe = Client::connect(addr).unwrap();
    probe.timeout = Duration::from_millis(200);
    let t0 = Instant::now();
    while probe.describe().is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the proxy never answered"
        );
    }

    let waiting = std::thread::spawn(move || {
        let mut c = Client::connect(addr).unwrap();
        c.timeout = Duration::from_secs(20);
        let img = RawImage {
            width: 1,
            height: 1,
            format: PixelFormat::Rgb8,
            data: vec![1, 2, 3],
        };
        c.send_image(1, &img, None, 1472, &Faults::default())
    });
    std::thread::sleep(Duration::from_millis(400));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(proxy.id() as libc::pid_t, libc::SIGTERM) };
    std::thread::sleep(Duration::from_millis(200));

    let mut late = Client::connect(addr).unwrap();
    late.timeout = Duration::from_secs(5);
    match late
        .send_text(2, b"hello", 0, 1472, &Faults::default())
        .unwrap()
    {
        Reply::Error { code, message } => {
            assert_eq!(code, ErrorCode::Overloaded);
            assert!(message.contains("draining"), "{message}");
        }
        r => panic!("a new request during the drain got {r:?}"),
    }
    match waiting.join().unwrap().unwrap() {
        Reply::Response { body, .. } => {
            assert!(String::from_utf8_lossy(&body).contains("\"slow\""))
        }
        r => panic!("the request in flight got {r:?}"),
    }
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = proxy.try_wait().unwrap() {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the proxy did not exit"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0));
    std::fs::remove_dir_all(&dir).ok();
}

/// A worker that panics (test builds have a hook: a request_id that
/// panics the worker; no real input does) is restarted on the same
/// socket: the proxy keeps answering, and the exit counters say so.
#[test]
fn a_panicking_worker_is_restarted_on_the_same_socket() {
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(env!("CARGO_BIN_EXE_tensorwire"))
        .arg("run")
        .env("TENSORWIRE__INGRESS__LISTEN", format!("127.0.0.1:{port}"))
        .env("TENSORWIRE__INGRESS__MODE", "socket")
        .env("TENSORWIRE__INGRESS__WORKERS", "1")
        .env("TENSORWIRE__ADMIN__LISTEN", "")
        .env("TENSORWIRE_TEST_PANIC_REQUEST_ID", "666")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut c = Client::connect(addr).unwrap();
    c.timeout = Duration::from_millis(200);
    let t0 = Instant::now();
    while c.describe().is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the proxy never answered"
        );
    }
    // DESCRIBE with request_id 666: the worker panics, no answer.
    let mut d = vec![0u8; 24];
    d[..4].copy_from_slice(&[0x54, 0x57, 1, 4]);
    d[8..16].copy_from_slice(&666u64.to_be_bytes());
    d[23] = 1;
    c.send_raw(&[d]).unwrap();
    assert!(
        c.receive(666).is_err(),
        "the panicking request got an answer"
    );
    // The restarted worker answers on the same socket.
    c.timeout = Duration::from_secs(5);
    assert!(c.describe().is_ok(), "no answer after the restart");
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert!(log.contains("worker panicked"), "{log}");
    assert!(log.contains("restarted with a fresh core"), "{log}");
}
