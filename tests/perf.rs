//! `tensorwire perf` against a proxy run as a child process (echo
//! upstream, loopback): the JSON report's schema, and that the open loop
//! corrects for coordinated omission (a proxy frozen with SIGSTOP shows
//! in the latency p99, not in the service-time p99). No timing
//! assertions beyond the freeze itself.
//!
//! That the baselines' tensors equal the proxy's is checked by
//! tests/upstream_triton.rs (`check_equal_work`), not here.

use serde_json::Value;
use std::net::{TcpListener, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_tensorwire");

struct Proxy {
    child: Child,
    udp: String,
    admin: String,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // SAFETY: a signal to our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGCONT) };
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn proxy() -> Proxy {
    let udp_port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let admin_port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = std::env::temp_dir().join(format!("tensorwire-perf-test-{udp_port}"));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("proxy.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
[ingress]
mode = "socket"
listen = "127.0.0.1:{udp_port}"
workers = 1
[admin]
listen = "127.0.0.1:{admin_port}"
[stats]
log_interval_ms = 0
[[pipelines]]
id = 1
name = "resnet"
kind = "image"
upstream = "echo"
[pipelines.image]
width = 224
height = 224
"#
        ),
    )
    .unwrap();
    let child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&cfg)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let p = Proxy {
        child,
        udp: format!("127.0.0.1:{udp_port}"),
        admin: format!("127.0.0.1:{admin_port}"),
    };
    // Ready once DESCRIBE answers.
    let t0 = Instant::now();
    let addr = p.udp.parse().unwrap();
    loop {
        let mut c = tensorwire::client::Client::connect(addr).unwrap();
        c.timeout = Duration::from_millis(200);
        if c.describe().is_ok() {
            return p;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the proxy never answered"
        );
    }
}

fn perf(args: &[&str]) -> Value {
    let out = Command::new(BIN)
        .arg("perf")
        .args(args)
        .args(["--json", "-", "--quiet"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "perf failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn json_report_schema() {
    let p = proxy();
    let dir = std::env::temp_dir().join(format!("tensorwire-perf-out-{}", p.child.id()));
    let csv = dir.join("x.csv");
    std::fs::create_dir_all(&dir).unwrap();
    let v = perf(&[
        "--server",
        &p.udp,
        "--admin",
        &p.admin,
        "--pipeline",
        "resnet",
        "--image-size",
        "64x48",
        "--sweep",
        "rate:20,40",
        "--arrivals",
        "poisson",
        "--duration",
        "1",
        "--warmup",
        "0.3",
        "--proxy-pid",
        &p.child.id().to_string(),
        "--csv",
        csv.to_str().unwrap(),
        "--plot",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(v["schema"], "tensorwire.perf/1");
    assert!(v["version"].is_string());
    assert!(v["started"].as_str().unwrap().ends_with('Z'));
    assert!(v["machine"]["cpus"].as_u64().unwrap() >= 1);
    assert_eq!(v["target"]["pipeline"], "resnet");
    assert_eq!(v["target"]["pipeline_id"], 1);
    assert_eq!(v["target"]["kind"], "image");
    assert_eq!(v["target"]["upstream"], "echo");
    assert_eq!(v["inputs"].as_array().unwrap().len(), 1);
    let runs = v["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    for (r, rate) in runs.iter().zip([20.0, 40.0]) {
        assert_eq!(r["label"], "tensorwire");
        assert_eq!(r["loop"], "open");
        assert_eq!(r["arrivals"], "poisson");
        assert_eq!(r["offered_rps"], rate);
        for k in [
            "requests",
            "ok",
            "retries",
            "concurrency",
            "max_send_lag_us",
        ] {
            assert!(r[k].is_u64(), "{k}: {r}");
        }
        assert!(r["throughput_rps"].is_f64());
        assert!(r["errors"].is_object());
        assert!(r["ok"].as_u64().unwrap() > 0, "{r}");
        for h in ["latency_us", "service_time_us"] {
            for k in ["min", "p50", "p90", "p95", "p99", "p99_9", "max"] {
                assert!(r[h][k].is_u64(), "{h}.{k}: {r}");
            }
            assert!(r[h]["p50"].as_u64() <= r[h]["p99"].as_u64());
            assert!(r[h]["p99"].as_u64() <= r[h]["max"].as_u64());
        }
        assert!(r["cpu"]["client_ms_per_request"].is_f64(), "{r}");
        assert!(r["cpu"]["proxy_ms_per_request"].is_f64(), "{r}");
        assert!(r["cpu"]["server_ms_per_request"].is_null());
        let st = &r["stages"];
        assert!(st["count"].as_u64().unwrap() > 0, "{r}");
        for k in ["fragments_ms", "tensor_ready_ms", "request_ms"] {
            assert!(st[k].is_f64(), "{k}: {r}");
        }
        let hdr = r["hdr"].as_array().unwrap();
        assert!(hdr.len() > 10);
        assert_eq!(hdr.last().unwrap()[0], 100.0);
    }
    let csv = std::fs::read_to_string(csv).unwrap();
    assert_eq!(csv.lines().count(), 3, "{csv}");
    assert!(csv.starts_with("label,loop,"));
    for f in ["perf-latency.svg", "perf-hdr.svg"] {
        let svg = std::fs::read_to_string(dir.join(f)).unwrap();
        assert!(svg.contains("<svg") && svg.contains("tensorwire"), "{f}");
    }
}

#[test]
fn closed_loop_schema() {
    let p = proxy();
    let v = perf(&[
        "--server",
        &p.udp,
        "--pipeline",
        "1",
        "--image-size",
        "32x32",
        "--concurrency",
        "2",
        "--duration",
        "0.5",
        "--warmup",
        "0.2",
    ]);
    let r = &v["runs"][0];
    assert_eq!(r["loop"], "closed");
    assert!(r["offered_rps"].is_null());
    assert!(r["max_send_lag_us"].is_null());
    assert_eq!(r["concurrency"], 2);
    assert!(r["stages"].is_null());
    assert!(r["ok"].as_u64().unwrap() > 0);
}

#[test]
fn a_frozen_proxy_shows_in_the_open_loop_p99() {
    let p = proxy();
    let pid = p.child.id() as i32;
    // 200 requests/s for 0.5 s warm-up + 2 s; the proxy is stopped for
    // 300 ms one second into the window. One worker: like a closed-loop
    // client it cannot send while it waits, so the sends due during the
    // freeze leave late; their latency counts from when they were due.
    let freezer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1500));
        // SAFETY: signals to our own child.
        unsafe { libc::kill(pid, libc::SIGSTOP) };
        std::thread::sleep(Duration::from_millis(300));
        unsafe { libc::kill(pid, libc::SIGCONT) };
    });
    let v = perf(&[
        "--server",
        &p.udp,
        "--image-size",
        "64x48",
        "--request-rate",
        "200",
        "--workers",
        "1",
        "--duration",
        "2",
        "--warmup",
        "0.5",
    ]);
    freezer.join().unwrap();
    let r = &v["runs"][0];
    let p99 = r["latency_us"]["p99"].as_u64().unwrap();
    let svc_p99 = r["service_time_us"]["p99"].as_u64().unwrap();
    // ~60 of ~400 requests were due during the freeze: more than 1 % saw
    // most of it.
    assert!(p99 >= 200_000, "corrected p99 {p99} us: {r}");
    assert!(
        svc_p99 * 2 < p99,
        "service p99 {svc_p99} us should not show the freeze (p99 {p99} us): {r}"
    );
    assert!(r["max_send_lag_us"].as_u64().unwrap() >= 200_000, "{r}");
}
