//! The admin endpoint as a probe, a scraper and an operator see it: the
//! binary runs with a config file; GETs are plain HTTP/1.1 (what curl
//! sends). /healthz, /readyz (200 with echo pipelines; 503 naming a
//! kserve upstream that is down, 200 once it is up), /describe, /metrics
//! (checked with `promtool check metrics`, counters moving as requests
//! are answered), and `tensorwire health` / `stats` / `describe` exits.

mod ops_support;

use ops_support::{bin, free_port, kserve_config, promtool_check, sample, MetadataServer, Proxy};
use std::process::Stdio;
use std::time::Duration;
use tensorwire::client::{load_image, Client, Faults, Reply};

const START: Duration = Duration::from_secs(20);

fn send_text(p: &Proxy, text: &str) -> Reply {
    let mut c = Client::connect(p.udp).unwrap();
    c.timeout = Duration::from_secs(5);
    c.send_text(2, text.as_bytes(), 64, 1472, &Faults::default())
        .unwrap()
}

fn send_image(p: &Proxy) -> Reply {
    let img = load_image(
        std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/testdata/images/chelsea.png"
        )),
        None,
    )
    .unwrap();
    let mut c = Client::connect(p.udp).unwrap();
    c.timeout = Duration::from_secs(5);
    c.send_image(1, &img, None, 1472, &Faults::default())
        .unwrap()
}

/// Scrapes until `metric` reaches `at_least` (workers publish once a
/// second).
fn scrape_until(p: &Proxy, metric: &str, at_least: f64) -> String {
    let t0 = std::time::Instant::now();
    loop {
        let (status, text) = p.get("/metrics").expect("admin endpoint answers");
        assert_eq!(status, 200);
        if sample(&text, metric).unwrap_or(0.0) >= at_least {
            return text;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "{metric} did not reach {at_least}:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn echo_proxy_is_healthy_ready_and_scrapable() {
    let mut p = Proxy::start("admin-echo", tensorwire::config::DEFAULT_CONFIG);
    let ready = p.wait_for("/readyz", 200, START);
    assert_eq!(ready.trim(), "ready");
    let (status, health) = p.get("/healthz").unwrap();
    assert_eq!(status, 200, "{health}");
    assert!(health.starts_with("ok"), "{health}");

    // /describe: the DESCRIBE JSON.
    let (status, d) = p.get("/describe").unwrap();
    assert_eq!(status, 200);
    let d: serde_json::Value = serde_json::from_str(&d).unwrap();
    assert_eq!(d["protocol"], 1);
    assert_eq!(d["pipelines"][0]["name"], "resnet50");
    assert_eq!(d["pipelines"][1]["text"]["tokenizer"], "all-MiniLM-L6-v2");
    assert_eq!(p.get("/nope").unwrap().0, 404);

    // Before any request: a valid exposition with zero counters.
    let (_, before) = p.get("/metrics").unwrap();
    promtool_check(&before);
    assert_eq!(
        sample(
            &before,
            "tensorwire_requests_total{pipeline=\"minilm\",outcome=\"response\"}"
        ),
        Some(0.0),
        "{before}"
    );

    // Requests move the counters (published within a second).
    for _ in 0..3 {
        assert!(matches!(
            send_text(&p, "Hello world"),
            Reply::Response { .. }
        ));
    }
    assert!(matches!(send_image(&p), Reply::Response { .. }));
    // Each request came from its own socket, so over the socket workers;
    // each worker publishes once a second: wait for all of them.
    scrape_until(
        &p,
        "tensorwire_requests_total{pipeline=\"minilm\",outcome=\"response\"}",
        3.0,
    );
    let after = scrape_until(
        &p,
        "tensorwire_requests_total{pipeline=\"resnet50\",outcome=\"response\"}",
        1.0,
    );
    promtool_check(&after);
    let v = |m: &str| sample(&after, m).unwrap_or_else(|| panic!("no {m}:\n{after}"));
    assert_eq!(
        v("tensorwire_requests_total{pipeline=\"minilm\",outcome=\"response\"}"),
        3.0
    );
    assert_eq!(
        v("tensorwire_requests_started_total{pipeline=\"minilm\"}"),
        3.0
    );
    assert!(v("tensorwire_datagrams_total") >= 4.0);
    assert!(v("tensorwire_received_bytes_total") > 224.0 * 224.0);
    assert!(v("tensorwire_socket_sent_total") >= 4.0);
    assert_eq!(v("tensorwire_errors_total{code=\"MALFORMED\"}"), 0.0);
    assert_eq!(v("tensorwire_requests_in_flight"), 0.0);
    assert_eq!(v("tensorwire_ready"), 1.0);
    // Latency histograms per pipeline: every stage but the upstream call
    // (echo) has the requests.
    for h in [
        "tensorwire_fragments_duration_seconds_count{pipeline=\"minilm\"}",
        "tensorwire_tensor_ready_duration_seconds_count{pipeline=\"minilm\"}",
        "tensorwire_request_duration_seconds_count{pipeline=\"minilm\"}",
    ] {
        assert_eq!(v(h), 3.0, "{h}");
    }
    assert_eq!(
        v("tensorwire_upstream_call_duration_seconds_count{pipeline=\"minilm\"}"),
        0.0
    );
    assert_eq!(
        v("tensorwire_request_duration_seconds_bucket{le=\"+Inf\",pipeline=\"resnet50\"}"),
        1.0
    );

    // A bad datagram from a validated client (an unvalidated one would
    // get RETRY: the ERROR is more than 3x its 24 bytes): an ERROR
    // counted by code name.
    let mut s = Client::connect(p.udp).unwrap();
    s.handshake().unwrap();
    let mut d = vec![0u8; 24];
    d[..2].copy_from_slice(&tensorwire::wire::MAGIC.to_be_bytes());
    d[2] = 9; // unsupported version
    d[8..16].copy_from_slice(&7u64.to_be_bytes());
    s.send_raw(&[d]).unwrap();
    scrape_until(
        &p,
        "tensorwire_errors_total{code=\"UNSUPPORTED_VERSION\"}",
        1.0,
    );

    // `tensorwire health` and `stats` against it.
    let admin = p.admin.to_string();
    let out = bin().args(["health", "--admin", &admin]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let out = bin()
        .args(["health", "--ready", "--admin", &admin])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ready");
    let out = bin().args(["stats", "--admin", &admin]).output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("tensorwire_datagrams_total"));
    let out = bin()
        .args(["stats", "--json", "--admin", &admin])
        .output()
        .unwrap();
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // One entry per socket worker (`socket`, or `socket0`.. with several).
    let responses: u64 = j
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| k.starts_with("socket"))
        .filter_map(|(_, w)| w["proxy"]["pipelines"][1]["responses"].as_u64())
        .sum();
    assert_eq!(responses, 3, "{j}");

    // `tensorwire stats | head -c1`: the reader goes away; no panic.
    let mut child = bin()
        .args(["stats", "--admin", &admin])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains("panicked") && !err.contains("Broken pipe"),
        "{err}"
    );
    assert_eq!(out.status.code(), Some(0), "{err}");
}

#[test]
fn readyz_names_a_kserve_upstream_that_is_down_until_it_is_up() {
    // Nothing listens on `port` yet.
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let mut p = Proxy::start("admin-down", &kserve_config(&url, "resnet50", ""));
    // 503 while starting ("ingress not bound yet"), then naming the upstream.
    let t0 = std::time::Instant::now();
    let why = loop {
        let why = p.wait_for("/readyz", 503, START);
        if why.contains("triton") || t0.elapsed() > START {
            break why;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(why.contains("upstream triton not ready"), "{why}");
    assert!(!why.contains("ingress"), "{why}");
    // Alive all the same.
    p.wait_for("/healthz", 200, START);
    let (_, d) = p.get("/describe").unwrap();
    let d: serde_json::Value = serde_json::from_str(&d).unwrap();
    assert_eq!(d["upstreams"][0]["name"], "triton");
    assert_eq!(d["upstreams"][0]["ready_now"], false);
    let (_, m) = p.get("/metrics").unwrap();
    promtool_check(&m);
    assert_eq!(sample(&m, "tensorwire_ready"), Some(0.0), "{m}");
    assert_eq!(
        sample(&m, "tensorwire_upstream_ready{upstream=\"triton\"}"),
        Some(0.0),
        "{m}"
    );
    assert!(p.log().contains("not checked"), "{}", p.log());

    // `tensorwire health --ready`: exit 1 with the reason.
    let admin = p.admin.to_string();
    let out = bin()
        .args(["health", "--ready", "--admin", &admin])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("triton"));
    // `tensorwire describe`: exit 3 (an upstream is not ready).
    let out = bin()
        .args(["describe", "--server", &p.udp.to_string(), "--timeout", "1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("upstream triton not ready"));

    // The server comes up: the background probe makes the proxy ready.
    let l = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let _server = MetadataServer::start_on(l, "resnet50", serde_json::json!({"inputs": []}));
    p.wait_for("/readyz", 200, Duration::from_secs(10));
    let out = bin()
        .args(["health", "--ready", "--admin", &admin])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn admin_endpoint_speaks_http_to_any_method_and_path() {
    let mut p = Proxy::start("admin-http", tensorwire::config::DEFAULT_CONFIG);
    p.wait_for("/readyz", 200, START);
    // HEAD and query strings; other methods are refused.
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(p.admin).unwrap();
    write!(
        s,
        "POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut b = String::new();
    s.read_to_string(&mut b).unwrap();
    assert!(b.starts_with("HTTP/1.1 405"), "{b}");
    assert_eq!(p.get("/healthz?verbose=1").unwrap().0, 200);
    // OpenMetrics for scrapers that ask for it.
    let mut s = std::net::TcpStream::connect(p.admin).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: application/openmetrics-text; version=1.0.0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut b = String::new();
    s.read_to_string(&mut b).unwrap();
    assert!(b.contains("application/openmetrics-text"), "{b}");
    assert!(b.trim_end().ends_with("# EOF"));
}
