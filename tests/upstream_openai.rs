//! The `openai` upstream against testdata/openai_server.py, a server that
//! validates requests against vLLM's documented request schema (vLLM
//! itself cannot run here). The ids that arrive must be the pipeline's
//! own, special tokens included and padding removed.

mod support;

use std::time::Duration;
use support::{repo, PyServer};
use tensorwire::client::{Client, Faults, Reply};
use tensorwire::config::Config;
use tensorwire::pipeline::{Pipelines, Plan};
use tensorwire::server::RunningProxy;
use tensorwire::wire::ErrorCode;

fn config(url: &str) -> Config {
    Config::from_toml(&format!(
        r#"
[admin]
listen = ""
[upstreams.vllm]
kind = "openai"
url = "{url}"
model = "meta-llama/Llama-3.1-8B-Instruct"
params = {{ max_tokens = 7, temperature = 0.0, top_p = 1.0, stop = ["\n"], seed = 42 }}
[upstreams.vllm-embed]
kind = "openai"
url = "{url}"
model = "intfloat/e5-small"
endpoint = "embeddings"
[upstreams.vllm-bad]
kind = "openai"
url = "{url}"
model = "m"
params = {{ max_tokens = 0 }}

[[pipelines]]
id = 2
name = "complete"
kind = "text"
upstream = "vllm"
[pipelines.text]
tokenizer = "builtin:all-MiniLM-L6-v2"

[[pipelines]]
id = 3
name = "embed-padded"
kind = "text"
upstream = "vllm-embed"
[pipelines.text]
tokenizer = "builtin:all-MiniLM-L6-v2"
padding = "max_length"
max_length = 32
dtype = "INT32"

[[pipelines]]
id = 4
name = "bad"
kind = "text"
upstream = "vllm-bad"
[pipelines.text]
tokenizer = "builtin:all-MiniLM-L6-v2"
"#
    ))
    .unwrap()
}

fn json(r: Reply) -> serde_json::Value {
    match r {
        Reply::Response {
            content_type: 1,
            header_len: 0,
            body,
        } => serde_json::from_slice(&body).unwrap(),
        other => panic!("expected a JSON RESPONSE, got {other:?}"),
    }
}

fn ids(p: &Pipelines, id: u16, text: &str) -> Vec<i64> {
    let Plan::Text(plan) = &p.by_id(id).unwrap().plan else {
        panic!()
    };
    let enc = plan.encode(text).unwrap();
    let ids: Vec<i64> = enc.ids.iter().map(|&i| i as i64).collect();
    ids
}

#[test]
fn completions_and_embeddings_with_token_ids() {
    let server = PyServer::openai();
    let cfg = config(&server.url());
    let pipelines = cfg.build_pipelines().unwrap();
    let proxy = RunningProxy::spawn(cfg, "127.0.0.1:0".parse().unwrap()).unwrap();
    let mut c = Client::connect(proxy.addr).unwrap();
    c.timeout = Duration::from_secs(10);
    let d = c.describe().unwrap();
    let ups = d["upstreams"].as_array().unwrap();
    assert!(ups.iter().all(|u| u["ready_at_start"] == true), "{ups:?}");
    assert_eq!(d["pipelines"][0]["upstream"], "openai");
    // Upstreams are listed by name.
    assert_eq!(ups[2]["name"], "vllm-embed");
    assert_eq!(ups[2]["endpoint"], "embeddings");

    let text = std::fs::read_to_string(repo("testdata/text/zen-of-python.txt")).unwrap();
    let want = ids(&pipelines, 2, &text);
    // BOS/CLS and SEP come from tensorwire's tokenizer.
    assert_eq!((want[0], *want.last().unwrap()), (101, 102));
    let v = json(
        c.send_text(2, text.as_bytes(), 64, 1472, &Faults::default())
            .unwrap(),
    );
    let got: Vec<i64> = v["choices"][0]["text"]
        .as_str()
        .unwrap()
        .strip_prefix("ids:")
        .unwrap()
        .split(',')
        .map(|s| s.parse().unwrap())
        .collect();
    assert_eq!(got, want);
    assert_eq!(v["model"], "meta-llama/Llama-3.1-8B-Instruct");
    assert_eq!(
        v["usage"]["completion_tokens"], 7,
        "params reached the server"
    );

    // Embeddings from a padded INT32 pipeline: padding is not sent.
    let short = "Readability counts.";
    let want = ids(&pipelines, 2, short);
    assert!(want.len() < 32);
    let v = json(
        c.send_text(3, short.as_bytes(), 0, 1472, &Faults::default())
            .unwrap(),
    );
    let e: Vec<f64> = v["data"][0]["embedding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    assert_eq!(
        e,
        vec![
            want.len() as f64,
            want.iter().sum::<i64>() as f64,
            want[0] as f64,
            *want.last().unwrap() as f64
        ]
    );

    // A request the schema refuses: UPSTREAM_ERROR with vLLM's message.
    match c.send_text(4, b"hi", 0, 1472, &Faults::default()).unwrap() {
        Reply::Error { code, message } => {
            assert_eq!(code, ErrorCode::UpstreamError);
            assert!(
                message.contains("HTTP 400") && message.contains("max_tokens"),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
    let (stats, _) = proxy.stop().unwrap();
    assert_eq!(stats.requests_in_flight, 0);
    assert_eq!(stats.upstream_calls_waiting, 0);
    for u in &stats.upstreams {
        assert_eq!(u.pool.calls_in_flight, 0);
        assert_eq!(u.pool.connections_open, 0);
    }
    let by_name = |n: &str| stats.upstreams.iter().find(|u| u.name == n).unwrap();
    assert_eq!(by_name("vllm").pool.calls_ok, 1);
    assert_eq!(by_name("vllm-embed").pool.calls_ok, 1);
    assert_eq!(by_name("vllm-bad").http_errors, 1);
}
