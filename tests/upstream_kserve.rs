//! The `kserve` upstream against a real KServe v2 server (the `kserve`
//! Python package serving testdata/kserve/models.py, started and killed
//! here): tensors round-trip bit for bit through the identity model, a
//! real computation matches Rust's, and the server killed mid-run and
//! restarted is survived without restarting the proxy.

mod support;

use std::time::{Duration, Instant};
use support::{repo, PyServer};
use tensorwire::client::{load_image, Client, Faults, Reply};
use tensorwire::config::Config;
use tensorwire::pipeline::{Pipelines, Plan};
use tensorwire::server::RunningProxy;
use tensorwire::transform::{reference, DType, Tensor};
use tensorwire::wire::ErrorCode;

/// Image pipelines 1 (FP32) and 3 (FP16), text 2 (INT64), all to the
/// identity model; 11 (image FP32) and 12 (text) to channel_mean.
fn config(url: &str) -> Config {
    let toml = format!(
        r#"
[admin]
listen = ""
[upstreams.triton]
kind = "kserve"
url = "{url}"
model = "identity"
connections = 2
request_timeout_ms = 10000
reconnect_backoff_ms = 50
reconnect_backoff_max_ms = 400
breaker = {{ failures = 3, open_ms = 300 }}
[upstreams.mean]
kind = "kserve"
url = "{url}"
model = "channel_mean"
request_timeout_ms = 10000
[upstreams.slow]
kind = "kserve"
url = "{url}"
model = "slow"
request_timeout_ms = 10000
[upstreams.ids-only]
kind = "kserve"
url = "{url}"
model = "identity"
outputs = ["input_ids"]

[[pipelines]]
id = 1
name = "img32"
kind = "image"
upstream = "triton"
[pipelines.image]
width = 224
height = 224
tensor_name = "pixel_values"

[[pipelines]]
id = 3
name = "img16"
kind = "image"
upstream = "triton"
[pipelines.image]
width = 96
height = 64
dtype = "FP16"
antialias = false

[[pipelines]]
id = 2
name = "text"
kind = "text"
upstream = "triton"
[pipelines.text]
tokenizer = "builtin:all-MiniLM-L6-v2"

[[pipelines]]
id = 11
name = "img-mean"
kind = "image"
upstream = "mean"
[pipelines.image]
width = 224
height = 224

[[pipelines]]
id = 12
name = "text-sum"
kind = "text"
upstream = "mean"
[pipelines.text]
tokenizer = "builtin:all-MiniLM-L6-v2"

[[pipelines]]
id = 13
name = "text-ids-only"
kind = "text"
upstream = "ids-only"
[pipelines.text]
tokenizer = "builtin:all-MiniLM-L6-v2"

[[pipelines]]
id = 14
name = "text-slow"
kind = "text"
upstream = "slow"
[pipelines.text]
tokenizer = "builtin:all-MiniLM-L6-v2"
"#
    );
    Config::from_toml(&toml).unwrap()
}

fn image_plan(p: &Pipelines, id: u16) -> std::sync::Arc<tensorwire::transform::image::ImagePlan> {
    match &p.by_id(id).unwrap().plan {
        Plan::Image(i) => i.clone(),
        _ => panic!(),
    }
}

fn text_plan(p: &Pipelines, id: u16) -> std::sync::Arc<tensorwire::transform::text::TextPlan> {
    match &p.by_id(id).unwrap().plan {
        Plan::Text(t) => t.clone(),
        _ => panic!(),
    }
}

fn tensors(reply: &Reply) -> Vec<Tensor> {
    match reply {
        Reply::Response {
            content_type: 2, ..
        } => reply.tensors().unwrap(),
        other => panic!("expected a KServe binary RESPONSE, got {other:?}"),
    }
}

/// The JSON header and the binary part of a content_type 2 answer (for
/// datatypes the client does not model, e.g. FP64).
fn raw_outputs(reply: &Reply) -> (serde_json::Value, Vec<u8>) {
    match reply {
        Reply::Response {
            content_type: 2,
            header_len,
            body,
        } => (
            serde_json::from_slice(&body[..*header_len]).unwrap(),
            body[*header_len..].to_vec(),
        ),
        other => panic!("expected a KServe binary RESPONSE, got {other:?}"),
    }
}

fn f64s(t: &Tensor) -> Vec<f64> {
    assert_eq!(t.dtype.name(), "FP32", "{}", t.name);
    t.data
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
        .collect()
}

#[test]
fn identity_and_channel_mean_against_real_kserve() {
    let server = PyServer::kserve();
    let cfg = config(&server.url());
    let pipelines = cfg.build_pipelines().unwrap();
    let proxy = RunningProxy::spawn(cfg, "127.0.0.1:0".parse().unwrap()).unwrap();
    let mut c = Client::connect(proxy.addr).unwrap();
    c.timeout = Duration::from_secs(20);

    // DESCRIBE names the upstreams and their readiness at start.
    let d = c.describe().unwrap();
    // The spec's `upstream` is the kind; the name is `upstream_name`.
    assert_eq!(d["pipelines"][0]["upstream"], "kserve");
    assert_eq!(d["pipelines"][0]["upstream_name"], "triton");
    let ups = d["upstreams"].as_array().unwrap();
    assert_eq!(ups.len(), 4);
    assert!(ups.iter().all(|u| u["ready_at_start"] == true), "{ups:?}");

    let img = load_image(&repo("testdata/images/astronaut.png"), None).unwrap();
    // FP32 NCHW, bit for bit; shuffled, with duplicates arriving after
    // the request is complete (while it waits upstream: they must start
    // no new request).
    let want = image_plan(&pipelines, 1).run_whole(&img.data, img.width, img.height, img.format);
    let faults = Faults {
        dup: 0.3,
        reorder: true,
        seed: 7,
        ..Faults::default()
    };
    let t = tensors(&c.send_image(1, &img, None, 1472, &faults).unwrap());
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].name, "pixel_values");
    assert_eq!(t[0].dtype, DType::Fp32);
    assert_eq!(t[0].shape, vec![1, 3, 224, 224]);
    assert!(t[0].data == want, "FP32 tensor changed in the round trip");

    // FP16, other size, bit for bit.
    let coffee = load_image(&repo("testdata/images/coffee.png"), None).unwrap();
    let want16 = image_plan(&pipelines, 3).run_whole(
        &coffee.data,
        coffee.width,
        coffee.height,
        coffee.format,
    );
    let t = tensors(
        &c.send_image(3, &coffee, None, 1472, &Faults::default())
            .unwrap(),
    );
    assert_eq!(
        (t[0].dtype, t[0].shape.clone()),
        (DType::Fp16, vec![1, 3, 64, 96])
    );
    assert!(t[0].data == want16, "FP16 tensor changed in the round trip");

    // Text INT64: all three tensors, names, order and bytes.
    let text = std::fs::read_to_string(repo("testdata/text/zen-of-python.txt")).unwrap();
    let want_t = reference::whole_text_tensors(&text_plan(&pipelines, 2), &text).unwrap();
    let t = tensors(
        &c.send_text(2, text.as_bytes(), 64, 1472, &Faults::default())
            .unwrap(),
    );
    assert_eq!(t, want_t);

    // channel_mean: numpy's float64 mean per channel vs ours.
    let x = f64s(&Tensor {
        name: "input".into(),
        dtype: DType::Fp32,
        shape: vec![],
        data: image_plan(&pipelines, 11).run_whole(&img.data, img.width, img.height, img.format),
    });
    let (header, data) = raw_outputs(
        &c.send_image(11, &img, None, 1472, &Faults::default())
            .unwrap(),
    );
    assert_eq!(header["outputs"][0]["name"], "input_mean");
    assert_eq!(header["outputs"][0]["datatype"], "FP64");
    assert_eq!(header["outputs"][0]["shape"], serde_json::json!([3]));
    let plane = 224 * 224;
    for ch in 0..3 {
        let ours = x[ch * plane..(ch + 1) * plane].iter().sum::<f64>() / plane as f64;
        let theirs = f64::from_le_bytes(data[ch * 8..ch * 8 + 8].try_into().unwrap());
        assert!(
            (ours - theirs).abs() <= 1e-9 * ours.abs().max(1.0),
            "channel {ch}: ours {ours} kserve {theirs}"
        );
    }
    // Token id sums, exact.
    let t = tensors(
        &c.send_text(12, text.as_bytes(), 64, 1472, &Faults::default())
            .unwrap(),
    );
    for (out, input) in t.iter().zip(&want_t) {
        assert_eq!(out.name, format!("{}_sum", input.name));
        let ours: i64 = input
            .data
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
            .sum();
        assert_eq!(i64::from_le_bytes(out.data[..8].try_into().unwrap()), ours);
    }

    // `outputs`: only the requested output comes back (binary).
    let t = tensors(
        &c.send_text(13, text.as_bytes(), 64, 1472, &Faults::default())
            .unwrap(),
    );
    assert_eq!(t, want_t[..1].to_vec());

    // Late duplicates got no INCOMPLETE (one answer per request).
    std::thread::sleep(Duration::from_millis(600));
    let (stats, _) = proxy.stop().unwrap();
    assert_eq!(stats.errors_sent, 0, "{stats:?}");
    assert!(
        stats.duplicate_fragments + stats.late_fragments > 0,
        "{stats:?}"
    );
    let ks = &stats.upstreams;
    assert_eq!(stats.upstream_calls, 6);
    assert_eq!(stats.requests_completed, 6);
    assert_eq!(stats.upstream_calls_waiting, 0);
    assert_eq!(stats.requests_in_flight, 0);
    for u in ks {
        assert_eq!(u.pool.calls_in_flight, 0, "{}", u.name);
        assert_eq!(u.pool.connections_open, 0, "{}: closed at shutdown", u.name);
    }
}

#[test]
fn model_errors_come_back_as_upstream_error_with_the_message() {
    let server = PyServer::kserve();
    let mut cfg = config(&server.url());
    cfg.upstreams.get_mut("triton").unwrap().model = "no_such_model".into();
    let proxy = RunningProxy::spawn(cfg, "127.0.0.1:0".parse().unwrap()).unwrap();
    let mut c = Client::connect(proxy.addr).unwrap();
    c.timeout = Duration::from_secs(20);
    match c
        .send_text(2, b"hello", 0, 1472, &Faults::default())
        .unwrap()
    {
        Reply::Error { code, message } => {
            assert_eq!(code, ErrorCode::UpstreamError);
            assert!(
                message.contains("404") && message.contains("no_such_model"),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
    let (stats, _) = proxy.stop().unwrap();
    assert_eq!(stats.errors(ErrorCode::UpstreamError), 1);
    let triton = stats.upstreams.iter().find(|u| u.name == "triton").unwrap();
    assert_eq!(triton.http_errors, 1, "{:?}", stats.upstreams);
}

#[test]
fn server_killed_mid_run_and_restarted() {
    let mut server = PyServer::kserve();
    let cfg = config(&server.url());
    let proxy = RunningProxy::spawn(cfg, "127.0.0.1:0".parse().unwrap()).unwrap();
    let mut c = Client::connect(proxy.addr).unwrap();
    c.timeout = Duration::from_secs(20);
    let hello = |c: &mut Client| {
        c.send_text(2, b"hello world", 0, 1472, &Faults::default())
            .unwrap()
    };
    assert!(matches!(
        hello(&mut c),
        Reply::Response {
            content_type: 2,
            ..
        }
    ));

    // Killed with a request in flight (the `slow` model answers after
    // 2 s): that request gets UPSTREAM_UNAVAILABLE at once.
    let addr = proxy.addr;
    let in_flight = std::thread::spawn(move || {
        let mut c = Client::connect(addr).unwrap();
        c.timeout = Duration::from_secs(20);
        let t0 = Instant::now();
        let r = c
            .send_text(14, b"hello world", 0, 1472, &Faults::default())
            .unwrap();
        (r, t0.elapsed())
    });
    std::thread::sleep(Duration::from_millis(500));
    server.kill();
    match in_flight.join().unwrap() {
        (Reply::Error { code, message }, took) => {
            assert_eq!(code, ErrorCode::UpstreamUnavailable, "{message}");
            assert!(
                message.contains("lost") || message.contains("closed"),
                "{message}"
            );
            assert!(took < Duration::from_millis(1800), "{took:?}");
        }
        other => panic!("answered while killed: {other:?}"),
    }
    // Every request now fails fast with UPSTREAM_UNAVAILABLE (connection
    // lost, refused, backoff, or breaker open), never hangs.
    for _ in 0..6 {
        let t0 = Instant::now();
        match hello(&mut c) {
            Reply::Error { code, message } => {
                assert_eq!(code, ErrorCode::UpstreamUnavailable, "{message}");
            }
            other => panic!("answered while killed: {other:?}"),
        }
        assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
        std::thread::sleep(Duration::from_millis(50));
    }

    server.start();
    // Recovers without restarting the proxy (backoff <= 400 ms, breaker
    // open 300 ms).
    let t0 = Instant::now();
    loop {
        match hello(&mut c) {
            Reply::Response {
                content_type: 2, ..
            } => break,
            Reply::Error { code, .. } => assert_eq!(code, ErrorCode::UpstreamUnavailable),
            other => panic!("{other:?}"),
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "no recovery");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (stats, _) = proxy.stop().unwrap();
    let u = stats.upstreams.iter().find(|u| u.name == "triton").unwrap();
    assert_eq!(u.name, "triton");
    assert!(u.pool.reconnects >= 1, "{u:?}");
    assert!(u.pool.calls_unavailable + u.breaker_rejects >= 6, "{u:?}");
    assert!(u.breaker_opens >= 1, "{u:?}");
    assert_eq!(u.pool.calls_in_flight, 0);
    assert_eq!(u.pool.connections_open, 0);
    assert_eq!(stats.upstream_calls_waiting, 0);
    assert_eq!(stats.requests_in_flight, 0);
}

#[test]
fn describe_reports_readiness_at_start_and_now() {
    let mut server = PyServer::kserve();
    let port = support::free_port();
    let listen = format!("127.0.0.1:{port}");
    let dir = std::env::temp_dir().join(format!("tw-ready-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tw.toml");
    let text = format!(
        "[ingress]\nmode = \"socket\"\nlisten = \"{listen}\"\n[admin]\nlisten = \"\"\n\
         [upstreams.triton]\nkind = \"kserve\"\nurl = \"{}\"\nmodel = \"identity\"\n\
         [[pipelines]]\nid = 1\nname = \"t\"\nkind = \"text\"\nupstream = \"triton\"\n\
         [pipelines.text]\ntokenizer = \"builtin:all-MiniLM-L6-v2\"\n",
        server.url()
    );
    std::fs::write(&path, text).unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _proxy = Kill(
        std::process::Command::new(env!("CARGO_BIN_EXE_tensorwire"))
            .args(["run", "--config"])
            .arg(&path)
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let describe = || -> Option<serde_json::Value> {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tensorwire"))
            .args(["describe", "--server", &listen, "--timeout", "0.5"])
            .output()
            .unwrap();
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).unwrap())
    };
    let t0 = Instant::now();
    let d = loop {
        if let Some(d) = describe() {
            break d;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "proxy did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let u = &d["upstreams"][0];
    assert_eq!(u["name"], "triton");
    assert_eq!(u["ready_at_start"], true, "{u}");
    assert_eq!(u["ready_now"], true, "{u}");
    server.kill();
    let d = describe().unwrap();
    let u = &d["upstreams"][0];
    assert_eq!(u["ready_at_start"], true);
    assert_eq!(u["ready_now"], false, "{u}");
    assert!(
        u["not_ready_now_because"]
            .as_str()
            .unwrap()
            .contains("connect"),
        "{u}"
    );
    std::fs::remove_dir_all(&dir).ok();
}
