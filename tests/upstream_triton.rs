//! The `kserve` upstream against the real Triton Inference Server (the
//! `tritonserver` binary of PyPI's nvidia-pytriton, CPU only, serving the
//! Python-backend models of testdata/triton/models; started and killed
//! here through testdata/triton/serve.py).
//!
//! The references are independent of the proxy:
//! - the tensor that reaches Triton equals tensorwire's own transform
//!   (`ImagePlan::run_whole`) bit for bit, and equals the tensor Triton's
//!   own Python backend computes from the raw pixels with Pillow and
//!   torchvision's arithmetic (`preprocess_logits`'s `pixel_values`);
//! - the logits of the proxy's tensor equal, bit for bit, the logits
//!   Triton computes after its own server-side preprocessing, and agree
//!   with the head recomputed here in Rust (float64, closed-form weights);
//! - the token ids equal the `tokenizers` crate reference and Python's
//!   `tokenizers` run inside Triton (`preprocess_text`);
//! - a killed server gives UPSTREAM_UNAVAILABLE, and a restarted one is
//!   used again without restarting the proxy.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};
use support::{repo, PyServer};
use tensorwire::client::{load_image, Client, Faults, RawImage, Reply};
use tensorwire::config::Config;
use tensorwire::http_pool::blocking::check_ready;
use tensorwire::pipeline::{Pipelines, Plan};
use tensorwire::server::RunningProxy;
use tensorwire::transform::{reference, DType, Tensor};
use tensorwire::upstream::{echo::parse_kserve_binary_response, HttpUrl, UpstreamKind};
use tensorwire::wire::{ErrorCode, PixelFormat};

/// Pipelines 1 (image -> identity_fp32), 2 (image -> logits), 3 (text ->
/// text_identity), 4 (text -> text_head). Image pipelines are the
/// default ImageNet ones (224x224 FP32 NCHW, Pillow antialias) with the
/// input name Triton models usually have.
fn config(url: &str) -> Config {
    let upstream = |name: &str, model: &str| {
        format!(
            "[upstreams.{name}]\nkind = \"kserve\"\nurl = \"{url}\"\nmodel = \"{model}\"\n\
             connections = 2\nrequest_timeout_ms = 20000\nreconnect_backoff_ms = 50\n\
             reconnect_backoff_max_ms = 400\nbreaker = {{ failures = 3, open_ms = 300 }}\n"
        )
    };
    let image = |id: u16, up: &str| {
        format!(
            "[[pipelines]]\nid = {id}\nname = \"img-{up}\"\nkind = \"image\"\nupstream = \"{up}\"\n\
             [pipelines.image]\nwidth = 224\nheight = 224\ntensor_name = \"input__0\"\n"
        )
    };
    let text = |id: u16, up: &str| {
        format!(
            "[[pipelines]]\nid = {id}\nname = \"text-{up}\"\nkind = \"text\"\nupstream = \"{up}\"\n\
             [pipelines.text]\ntokenizer = \"builtin:all-MiniLM-L6-v2\"\n"
        )
    };
    let toml = [
        "[admin]\nlisten = \"\"\n".to_string(),
        upstream("echo32", "identity_fp32"),
        upstream("logits", "logits"),
        upstream("textecho", "text_identity"),
        upstream("texthead", "text_head"),
        image(1, "echo32"),
        image(2, "logits"),
        text(3, "textecho"),
        text(4, "texthead"),
    ]
    .concat();
    Config::from_toml(&toml).unwrap()
}

fn image_plan(p: &Pipelines, id: u16) -> std::sync::Arc<tensorwire::transform::image::ImagePlan> {
    match &p.by_id(id).unwrap().plan {
        Plan::Image(i) => i.clone(),
        _ => panic!("pipeline {id} is not an image pipeline"),
    }
}

fn text_plan(p: &Pipelines, id: u16) -> std::sync::Arc<tensorwire::transform::text::TextPlan> {
    match &p.by_id(id).unwrap().plan {
        Plan::Text(t) => t.clone(),
        _ => panic!("pipeline {id} is not a text pipeline"),
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

fn f32s(data: &[u8]) -> Vec<f32> {
    data.chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn proxy_and_client(server: &PyServer) -> (RunningProxy, Client, Pipelines) {
    let cfg = config(&server.url());
    let pipelines = cfg.build_pipelines().unwrap();
    let proxy = RunningProxy::spawn(cfg, "127.0.0.1:0".parse().unwrap()).unwrap();
    let mut c = Client::connect(proxy.addr).unwrap();
    // Python-backend models on a shared 2-core machine: generous.
    c.timeout = Duration::from_secs(30);
    (proxy, c, pipelines)
}

/// One input of a direct inference request: name, datatype, shape, bytes.
struct Input<'a>(&'a str, &'a str, Vec<u64>, Vec<u8>);

/// POSTs a KServe v2 inference request with the binary tensor extension
/// straight to Triton (not through the proxy) and returns the requested
/// outputs, asked for as binary. Our own minimal client: independent of
/// the proxy's upstream code; HTTP/1.1 with `Connection: close`.
fn infer_direct(port: u16, model: &str, inputs: &[Input], outputs: &[&str]) -> Vec<Tensor> {
    let header = serde_json::json!({
        "inputs": inputs.iter().map(|Input(name, dt, shape, data)| serde_json::json!({
            "name": name, "datatype": dt, "shape": shape,
            "parameters": {"binary_data_size": data.len()},
        })).collect::<Vec<_>>(),
        "outputs": outputs.iter().map(|o| serde_json::json!({
            "name": o, "parameters": {"binary_data": true},
        })).collect::<Vec<_>>(),
    })
    .to_string();
    // One write for the whole request: write! straight to the socket
    // sends each formatted piece as its own segment, and Triton's HTTP
    // frontend has been seen to misread a request line split that way
    // (it looked up model 'preprocess_logitse').
    let mut req = format!(
        "POST /v2/models/{model}/infer HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
         Content-Type: application/octet-stream\r\nInference-Header-Content-Length: {}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        header.len(),
        header.len() + inputs.iter().map(|i| i.3.len()).sum::<usize>()
    )
    .into_bytes();
    req.extend_from_slice(header.as_bytes());
    for Input(_, _, _, data) in inputs {
        req.extend_from_slice(data);
    }
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.write_all(&req).unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).unwrap();
    let end = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP answer");
    let head = String::from_utf8_lossy(&resp[..end]).to_ascii_lowercase();
    let body = &resp[end + 4..];
    assert!(
        head.starts_with("http/1.1 200"),
        "{model}: {head}\n{}",
        String::from_utf8_lossy(body)
    );
    assert!(
        !head.contains("transfer-encoding: chunked"),
        "chunked answers are not handled by this little client: {head}"
    );
    let header_len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("inference-header-content-length:"))
        .expect("a binary answer")
        .trim()
        .parse()
        .unwrap();
    parse_kserve_binary_response(body, header_len).unwrap()
}

/// A GET's JSON body (Connection: close, no chunking from Triton here).
fn get_json(port: u16, path: &str) -> serde_json::Value {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).unwrap();
    let end = resp.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    assert!(
        resp.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&resp)
    );
    serde_json::from_slice(&resp[end + 4..]).unwrap()
}

/// The `logits` model's head (testdata/triton/head.py `image_head`),
/// recomputed here: the mean of each channel over a 4x4 grid of 56x56
/// cells (48 features f), logits[i] = sum_j W[i][j] f[j] + B[i] with
/// W[i][j] = sin(0.7 (48 i + j) + 0.1), B[i] = 0.01 cos(0.3 i); float64.
fn image_head(x: &[f32]) -> Vec<f64> {
    assert_eq!(x.len(), 3 * 224 * 224);
    let mut f = [0f64; 48];
    for c in 0..3 {
        for y in 0..224 {
            for xx in 0..224 {
                f[c * 16 + (y / 56) * 4 + xx / 56] += x[(c * 224 + y) * 224 + xx] as f64;
            }
        }
    }
    f.iter_mut().for_each(|v| *v /= (56 * 56) as f64);
    (0..1000)
        .map(|i| {
            let dot: f64 = (0..48)
                .map(|j| ((0.7 * (i * 48 + j) as f64) + 0.1).sin() * f[j])
                .sum();
            dot + 0.01 * (0.3 * i as f64).cos()
        })
        .collect()
}

/// The `text_head` model's head (head.py `text_head`) for one text:
/// e_t[k] = sin(0.37 id_t + 0.11 k) + 0.01 type_t, averaged over tokens
/// whose attention mask is 1.
fn text_head(ids: &[i64], mask: &[i64], types: &[i64]) -> Vec<f64> {
    let n = mask.iter().filter(|&&m| m == 1).count().max(1) as f64;
    (0..384)
        .map(|k| {
            let s: f64 = (0..ids.len())
                .filter(|&t| mask[t] == 1)
                .map(|t| (0.37 * ids[t] as f64 + 0.11 * k as f64).sin() + 0.01 * types[t] as f64)
                .sum();
            s / n
        })
        .collect()
}

fn i64s(t: &Tensor) -> Vec<i64> {
    assert_eq!(t.dtype, DType::Int64, "{}", t.name);
    t.data
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// float64 reference vs Triton's float32 (rounded from numpy's float64,
/// whose sums run in another order): a few float32 ulps at most.
fn assert_close(what: &str, ours: &[f64], theirs: &[f32]) {
    assert_eq!(ours.len(), theirs.len(), "{what}");
    for (i, (&a, &b)) in ours.iter().zip(theirs).enumerate() {
        assert!(
            (a - b as f64).abs() <= 1e-6 * a.abs().max(1.0),
            "{what}[{i}]: Rust {a} Triton {b}"
        );
    }
}

/// The images as RGB bytes (what preprocess_logits takes) and as sent
/// through the proxy (one of them in another pixel format: tensorwire
/// folds the channel order into its tables).
fn images() -> Vec<(&'static str, RawImage, RawImage)> {
    ["chelsea.png", "rocket.jpg", "astronaut.png", "camera.png"]
        .into_iter()
        .map(|name| {
            let path = repo("testdata/images").join(name);
            let rgb = load_image(&path, Some(PixelFormat::Rgb8)).unwrap();
            let sent = match name {
                "rocket.jpg" => load_image(&path, Some(PixelFormat::Bgr8)).unwrap(),
                "camera.png" => load_image(&path, None).unwrap(), // GRAY8
                _ => rgb.clone(),
            };
            (name, rgb, sent)
        })
        .collect()
}

#[test]
fn image_tensors_and_logits_against_real_triton() {
    let server = PyServer::triton();
    let (proxy, mut c, pipelines) = proxy_and_client(&server);

    // Triton reports the batch dimension for max_batch_size 8; the proxy
    // sends [1, 3, 224, 224].
    let meta = get_json(server.port, "/v2/models/identity_fp32");
    assert_eq!(meta["inputs"][0]["name"], "input__0", "{meta}");
    assert_eq!(
        meta["inputs"][0]["shape"],
        serde_json::json!([-1, 3, 224, 224]),
        "{meta}"
    );
    let url = HttpUrl::parse(&server.url()).unwrap();
    for m in ["identity_fp32", "logits", "text_identity", "text_head"] {
        check_ready(UpstreamKind::Kserve, &url, m, "", Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("{m} not ready: {e}"));
    }
    let err = check_ready(
        UpstreamKind::Kserve,
        &url,
        "no_such_model",
        "",
        Duration::from_secs(5),
    )
    .unwrap_err();
    assert!(err.contains("no_such_model"), "{err}");

    let plan = image_plan(&pipelines, 1);
    for (name, rgb, sent) in images() {
        let want = plan.run_whole(&rgb.data, rgb.width, rgb.height, rgb.format);

        // identity_fp32: the tensor that reached Triton, bit for bit.
        let faults = Faults {
            dup: 0.2,
            reorder: true,
            seed: 11,
            ..Faults::default()
        };
        let t = tensors(&c.send_image(1, &sent, None, 1472, &faults).unwrap());
        assert_eq!(t.len(), 1, "{name}");
        assert_eq!(t[0].name, "output__0", "{name}");
        assert_eq!(t[0].dtype, DType::Fp32, "{name}");
        assert_eq!(t[0].shape, vec![1, 3, 224, 224], "{name}");
        assert!(
            t[0].data == want,
            "{name}: tensor changed on the way to Triton"
        );

        // Triton's own server-side preprocessing (Pillow resize +
        // torchvision normalization in the Python backend) of the raw
        // RGB pixels: the same tensor, bit for bit.
        let raw = Input(
            "raw",
            "UINT8",
            vec![1, rgb.height as u64, rgb.width as u64, 3],
            rgb.data.clone(),
        );
        let server_side = infer_direct(
            server.port,
            "preprocess_logits",
            &[raw],
            &["logits", "pixel_values"],
        );
        assert_eq!(server_side[1].name, "pixel_values");
        assert_eq!(server_side[1].shape, vec![1, 3, 224, 224]);
        assert!(
            server_side[1].data == want,
            "{name}: tensorwire's tensor differs from Pillow + torchvision's in Triton"
        );

        // logits through the proxy: small answer, and bit for bit what
        // Triton computes after its own preprocessing (same head), and
        // close to the head recomputed in Rust.
        let t = tensors(
            &c.send_image(2, &sent, None, 1472, &Faults::default())
                .unwrap(),
        );
        assert_eq!(t.len(), 1, "{name}");
        assert_eq!(
            (t[0].name.as_str(), t[0].dtype, t[0].shape.clone()),
            ("logits", DType::Fp32, vec![1, 1000]),
            "{name}"
        );
        assert_eq!(server_side[0].name, "logits");
        assert!(
            t[0].data == server_side[0].data,
            "{name}: logits via tensorwire differ from Triton's server-side preprocessing"
        );
        assert_close(
            &format!("{name} logits"),
            &image_head(&f32s(&want)),
            &f32s(&t[0].data),
        );
    }

    std::thread::sleep(Duration::from_millis(600));
    let (stats, _) = proxy.stop().unwrap();
    assert_eq!(stats.errors_sent, 0, "{stats:?}");
    assert_eq!(stats.requests_completed, 8, "{stats:?}");
    assert_eq!(stats.upstream_calls, 8, "{stats:?}");
    for u in &stats.upstreams {
        assert_eq!(u.pool.calls_in_flight, 0, "{}", u.name);
        assert_eq!(u.http_errors, 0, "{}", u.name);
    }
}

#[test]
fn text_tensors_and_embeddings_against_real_triton() {
    let server = PyServer::triton();
    let (proxy, mut c, pipelines) = proxy_and_client(&server);
    let plan = text_plan(&pipelines, 3);

    // A short text, a long one (truncated to 256 tokens) and a
    // multilingual one (cut mid UTF-8 sequence by small datagrams).
    let texts = [
        ("zen-of-python.txt", 64usize, 1472usize),
        ("gpl-3.0.txt", 64, 1472),
        ("utf8-demo.txt", 7, 200),
    ];
    for (file, overlap, mtu) in texts {
        let text = std::fs::read_to_string(repo("testdata/text").join(file)).unwrap();
        let want = reference::whole_text_tensors(&plan, &text).unwrap();

        // text_identity: the three tensors, names, shapes, bytes.
        let t = tensors(
            &c.send_text(3, text.as_bytes(), overlap, mtu, &Faults::default())
                .unwrap(),
        );
        assert_eq!(t, want, "{file}");
        let ids = i64s(&t[0]);
        assert!(ids.len() <= 256, "{file}: {} tokens", ids.len());

        // Python's `tokenizers` inside Triton, same tokenizer.json and
        // truncation: the same ids.
        let mut bytes = (text.len() as u32).to_le_bytes().to_vec();
        bytes.extend_from_slice(text.as_bytes());
        let server_side = infer_direct(
            server.port,
            "preprocess_text",
            &[Input("text", "BYTES", vec![1, 1], bytes)],
            &["embedding", "input_ids"],
        );
        assert_eq!(server_side[1].name, "input_ids");
        assert_eq!(
            i64s(&server_side[1]),
            ids,
            "{file}: ids differ from tokenizers (Python)"
        );

        // text_head through the proxy: bit for bit the embedding after
        // Triton's own tokenization, and close to the Rust head.
        let e = tensors(
            &c.send_text(4, text.as_bytes(), overlap, mtu, &Faults::default())
                .unwrap(),
        );
        assert_eq!(
            (e[0].name.as_str(), e[0].dtype, e[0].shape.clone()),
            ("embedding", DType::Fp32, vec![1, 384]),
            "{file}"
        );
        assert!(
            e[0].data == server_side[0].data,
            "{file}: embedding via tensorwire differs from Triton's server-side tokenization"
        );
        assert_close(
            &format!("{file} embedding"),
            &text_head(&ids, &i64s(&t[1]), &i64s(&t[2])),
            &f32s(&e[0].data),
        );
    }
    let (stats, _) = proxy.stop().unwrap();
    assert_eq!(stats.errors_sent, 0, "{stats:?}");
    assert_eq!(stats.requests_completed, 6, "{stats:?}");
}

#[test]
fn triton_killed_and_restarted_without_restarting_the_proxy() {
    let mut server = PyServer::triton();
    let (proxy, mut c, _) = proxy_and_client(&server);
    let url = HttpUrl::parse(&server.url()).unwrap();
    let ready = |model: &str| {
        check_ready(
            UpstreamKind::Kserve,
            &url,
            model,
            "",
            Duration::from_secs(2),
        )
    };
    let hello = |c: &mut Client| {
        c.send_text(3, b"hello triton", 0, 1472, &Faults::default())
            .unwrap()
    };
    assert!(matches!(
        hello(&mut c),
        Reply::Response {
            content_type: 2,
            ..
        }
    ));
    ready("text_identity").unwrap();

    server.kill();
    let err = ready("text_identity").unwrap_err();
    assert!(!err.is_empty());
    // Every request fails fast with UPSTREAM_UNAVAILABLE (connection
    // lost, refused, backoff or breaker open), never hangs.
    for _ in 0..6 {
        let t0 = Instant::now();
        match hello(&mut c) {
            Reply::Error { code, message } => {
                assert_eq!(code, ErrorCode::UpstreamUnavailable, "{message}")
            }
            other => panic!("answered while killed: {other:?}"),
        }
        assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
        std::thread::sleep(Duration::from_millis(50));
    }

    // Same port; start() returns once Triton says ready.
    server.start();
    ready("text_identity").unwrap();
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
    let u = stats
        .upstreams
        .iter()
        .find(|u| u.name == "textecho")
        .unwrap();
    assert!(u.pool.reconnects >= 1, "{u:?}");
    assert!(u.pool.calls_unavailable + u.breaker_rejects >= 6, "{u:?}");
    assert_eq!(u.pool.calls_in_flight, 0);
    assert_eq!(stats.requests_in_flight, 0);
}

/// Runs a baseline script of bench/baselines with .venv-triton's Python
/// and returns its JSON lines.
fn baseline(script: &str, args: &[&str]) -> Vec<serde_json::Value> {
    let out = std::process::Command::new(support::triton_python())
        .arg(repo("bench/baselines").join(script))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script} {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{script}: {e}: {l}")))
        .collect()
}

/// The benchmark's Python baselines (bench/baselines) against the real
/// server: their JSON contract (README.md there), and the client-side
/// baseline's tensors and ids equal to tensorwire's own binary's
/// (check_equal_work.py --run starts `tensorwire run` with the echo
/// upstream).
#[test]
fn python_baselines_follow_their_json_contract_and_do_tensorwires_work() {
    let server = PyServer::triton();
    let url = format!("127.0.0.1:{}", server.port);
    let pid = server.pid().to_string();
    for script in ["client_preprocess.py", "server_preprocess.py"] {
        for (mode, model) in [
            (
                "image",
                if script.starts_with("client") {
                    "logits"
                } else {
                    "preprocess_logits"
                },
            ),
            (
                "text",
                if script.starts_with("client") {
                    "text_head"
                } else {
                    "preprocess_text"
                },
            ),
        ] {
            let lines = baseline(
                script,
                &[
                    "--url",
                    &url,
                    "--mode",
                    mode,
                    "--requests",
                    "6",
                    "--warmup",
                    "1",
                    "--concurrency",
                    "2",
                    "--json",
                    "--per-request",
                    "--server-pid",
                    &pid,
                    "--image-size",
                    "320x240",
                ],
            );
            assert_eq!(lines.len(), 7, "{script} {mode}: {lines:?}");
            let (reqs, summary) = lines.split_at(6);
            let s = &summary[0];
            assert_eq!(s["schema"], "tensorwire.baseline/1");
            assert_eq!(s["type"], "summary");
            assert_eq!(s["baseline"], script.trim_end_matches(".py"));
            assert_eq!(
                (s["mode"].as_str(), s["model"].as_str()),
                (Some(mode), Some(model))
            );
            assert_eq!(
                (
                    s["requests"].as_u64(),
                    s["ok"].as_u64(),
                    s["errors"].as_u64()
                ),
                (Some(6), Some(6), Some(0)),
                "{s}"
            );
            assert_eq!(s["concurrency"], 2);
            assert_eq!(s["loop"], "closed");
            let lat: Vec<f64> = s["latencies_us"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            assert_eq!(lat.len(), 6);
            assert!(lat.iter().all(|&l| l > 0.0), "{lat:?}");
            let p50 = s["latency_us"]["p50"].as_f64().unwrap();
            let (min, max) = (
                s["latency_us"]["min"].as_f64().unwrap(),
                s["latency_us"]["max"].as_f64().unwrap(),
            );
            assert!(min <= p50 && p50 <= max, "{s}");
            assert!(s["client_cpu_s"]["total"].as_f64().unwrap() > 0.0, "{s}");
            assert!(s["server_cpu_s"].as_f64().is_some(), "{s}");
            for (i, r) in reqs.iter().enumerate() {
                assert_eq!(r["type"], "request");
                assert_eq!(r["i"], i as u64);
                assert_eq!(r["ok"], true);
                assert_eq!(r["latency_us"].as_f64().unwrap(), lat[i]);
            }
        }
    }
    // Open loop: latencies from the due times, every request sent.
    let lines = baseline(
        "client_preprocess.py",
        &[
            "--url",
            &url,
            "--requests",
            "5",
            "--warmup",
            "1",
            "--request-rate",
            "20",
            "--json",
        ],
    );
    assert_eq!(lines[0]["loop"], "open");
    assert_eq!(lines[0]["request_rate"], 20.0);
    assert_eq!(lines[0]["ok"], 5);
    let wall = lines[0]["wall_s"].as_f64().unwrap();
    assert!(
        wall >= 0.2,
        "5 requests at 20/s take at least 0.2 s: {wall}"
    );

    let out = std::process::Command::new(support::triton_python())
        .arg(repo("bench/baselines/check_equal_work.py"))
        .args(["--run", "--tensorwire", env!("CARGO_BIN_EXE_tensorwire")])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Every PNG of testdata/images and the three texts, each EQUAL.
    assert_eq!(text.matches("EQUAL").count(), 4 + 3, "{text}");
}
