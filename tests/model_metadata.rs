//! The model metadata check at start (`upstreams.X.check_metadata`): a
//! pipeline whose tensor does not match the model's input stops the
//! start (exit 78) naming both sides; "warn" starts anyway; a matching
//! name (Triton's resnet50 `input__0`) starts quietly. Against a
//! KServe-like metadata server, and against the real KServe server the
//! upstream tests run (whose Python models list no inputs), with the
//! upstream metrics moving as requests go through it.

mod ops_support;

mod support;

use ops_support::{
    kserve_config, promtool_check, resnet50_metadata, sample, MetadataServer, Proxy,
};
use std::time::Duration;
use tensorwire::client::{load_image, Client, Faults, Reply};

const START: Duration = Duration::from_secs(20);

#[test]
fn mismatch_is_a_startup_error_naming_both_sides() {
    let server = MetadataServer::start("resnet50", resnet50_metadata());
    // The shipped default's tensor_name is "input".
    let mut p = Proxy::start(
        "meta-mismatch",
        &kserve_config(&server.url(), "resnet50", ""),
    );
    assert_eq!(p.wait_exit(START), Some(78), "{}", p.log());
    let log = p.log();
    assert!(log.contains("pipelines[0].image.tensor_name"), "{log}");
    assert!(log.contains("`input` FP32 [1, 3, 224, 224]"), "{log}");
    assert!(log.contains("`input__0` FP32 [-1, 3, 224, 224]"), "{log}");
    assert!(log.contains("check_metadata = \"warn\""), "{log}");

    // A batch dimension missing on the model's side is named too.
    let unbatched = serde_json::json!({"inputs": [
        {"name": "input", "datatype": "FP32", "shape": [3, 224, 224]}]});
    let server = MetadataServer::start("resnet50", unbatched);
    let mut p = Proxy::start("meta-batch", &kserve_config(&server.url(), "resnet50", ""));
    assert_eq!(p.wait_exit(START), Some(78), "{}", p.log());
    assert!(p.log().contains("batch dimension"), "{}", p.log());
}

#[test]
fn warn_mode_starts_and_a_matching_name_passes() {
    let server = MetadataServer::start("resnet50", resnet50_metadata());
    let cfg = kserve_config(&server.url(), "resnet50", "check_metadata = \"warn\"");
    let mut p = Proxy::start("meta-warn", &cfg);
    p.wait_for("/readyz", 200, START);
    assert!(p.log().contains("do not match"), "{}", p.log());

    // Triton's resnet50 naming: tensor_name = "input__0".
    let cfg = kserve_config(&server.url(), "resnet50", "")
        .replace("tensor_name = \"input\"", "tensor_name = \"input__0\"");
    let mut p = Proxy::start("meta-match", &cfg);
    p.wait_for("/readyz", 200, START);
    assert!(p.log().contains("model metadata matches"), "{}", p.log());

    // "off": not asked.
    let cfg = kserve_config(&server.url(), "resnet50", "check_metadata = \"off\"");
    let mut p = Proxy::start("meta-off", &cfg);
    p.wait_for("/readyz", 200, START);
    assert!(!p.log().contains("metadata"), "{}", p.log());
}

#[test]
fn real_kserve_server_metadata_and_upstream_metrics() {
    let server = support::PyServer::kserve();
    let mut p = Proxy::start("meta-kserve", &kserve_config(&server.url(), "identity", ""));
    p.wait_for("/readyz", 200, START);
    // KServe's Python models declare no inputs: asked, nothing to compare.
    assert!(p.log().contains("not compared"), "{}", p.log());

    let img = load_image(&support::testdata("images/chelsea.png"), None).unwrap();
    let mut c = Client::connect(p.udp).unwrap();
    c.timeout = Duration::from_secs(10);
    for _ in 0..2 {
        let r = c
            .send_image(1, &img, None, 1472, &Faults::default())
            .unwrap();
        assert!(matches!(r, Reply::Response { .. }), "{r:?}");
    }
    let t0 = std::time::Instant::now();
    let text = loop {
        let (_, text) = p.get("/metrics").unwrap();
        let calls = "tensorwire_upstream_calls_total{upstream=\"triton\",outcome=\"ok\"}";
        if sample(&text, calls) == Some(2.0) {
            break text;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "{text}");
        std::thread::sleep(Duration::from_millis(200));
    };
    promtool_check(&text);
    let v = |m: &str| sample(&text, m).unwrap_or_else(|| panic!("no {m}:\n{text}"));
    assert_eq!(
        v("tensorwire_upstream_call_duration_seconds_count{pipeline=\"resnet50\"}"),
        2.0
    );
    assert_eq!(
        v("tensorwire_request_duration_seconds_count{pipeline=\"resnet50\"}"),
        2.0
    );
    assert_eq!(
        v("tensorwire_upstream_breaker_state{upstream=\"triton\",state=\"closed\"}"),
        1.0
    );
    assert!(v("tensorwire_upstream_connects_total{upstream=\"triton\"}") >= 1.0);
    assert_eq!(v("tensorwire_upstream_ready{upstream=\"triton\"}"), 1.0);
}
