//! The core's model-server paths, deterministically: no sockets, no
//! sleeps, the clock passed in. The I/O side is played by the test: it
//! takes calls with `poll_call` and answers with `on_upstream_answer`.

use super::*;
use crate::client::{image_rows, RawImage};
use crate::upstream::codec::{HttpError, HttpResponse};
use crate::upstream::CallError;
use crate::wire::{ErrorPacket, ErrorRepr, PixelFormat, ResponsePacket, ResponseRepr};
use serde_json::json;

type Out = Vec<(SocketAddr, Vec<u8>)>;

const TIMEOUT_MS: u64 = 1000;
const OPEN_MS: u64 = 500;

fn client() -> SocketAddr {
    "10.9.0.2:40000".parse().unwrap()
}

/// An 8x8 image pipeline (id 1) on a kserve upstream `ks`; the breaker
/// opens after 2 failures.
fn proxy() -> Proxy {
    let pipelines: Vec<crate::pipeline::PipelineConfig> = serde_json::from_value(json!([
        {"id": 1, "name": "small", "kind": "image", "upstream": "ks",
         "image": {"width": 8, "height": 8}},
        {"id": 2, "name": "echoed", "kind": "image", "image": {"width": 8, "height": 8}},
    ]))
    .unwrap();
    let ks: UpstreamConfig = serde_json::from_value(json!({
        "kind": "kserve", "url": "http://model.invalid:8000", "model": "m",
        "request_timeout_ms": TIMEOUT_MS, "max_pending": 7,
        "breaker": {"failures": 2, "open_ms": OPEN_MS},
    }))
    .unwrap();
    let settings = ProxySettings::new(Limits::default(), 1500);
    let pipelines = Pipelines::build(&pipelines, None).unwrap();
    Proxy::new(settings, pipelines, [("ks", &ks)]).unwrap()
}

fn image() -> RawImage {
    RawImage {
        width: 4,
        height: 3,
        format: PixelFormat::Rgb8,
        data: (0..36).collect(),
    }
}

/// Sends one request; returns what came out at once.
fn send(p: &mut Proxy, now: Instant, pipeline: u16, request_id: u64) -> Out {
    let mut out = Out::new();
    for d in image_rows(&image(), pipeline, request_id, 1472) {
        p.handle(now, client(), &d, &mut out);
    }
    out
}

/// The single ERROR in `out`: (code, request_id, pipeline, message).
fn error_of(out: &Out) -> (ErrorCode, u64, u16, String) {
    assert_eq!(out.len(), 1, "expected one reply, got {out:?}");
    let p = Packet::new_checked(&out[0].1[..]).unwrap();
    assert_eq!(p.kind(), Some(Kind::Error));
    let e = ErrorPacket::new_checked(p.body()).unwrap();
    let r = ErrorRepr::parse(&e).unwrap();
    (r.code, p.request_id(), p.pipeline(), r.message.to_string())
}

/// A KServe binary answer: JSON header of `hl` bytes, then data.
fn kserve_answer(body: &[u8], hl: usize) -> HttpResponse {
    HttpResponse {
        status: 200,
        headers: vec![("inference-header-content-length".into(), hl.to_string())],
        body: body.to_vec(),
        keep_alive: true,
    }
}

fn unreachable() -> CallResult {
    Err(CallError::Failed(HttpError::Connect(
        "127.0.0.1:9".parse().unwrap(),
        "connection refused".into(),
    )))
}

#[test]
fn a_model_pipeline_waits_for_its_answer() {
    let mut p = proxy();
    let t0 = Instant::now();
    assert!(
        send(&mut p, t0, 1, 7).is_empty(),
        "answered before the model"
    );
    let call = p.poll_call().expect("a call for the model server");
    assert_eq!(call.upstream, UpstreamIx(0));
    assert!(call
        .request
        .starts_with(b"POST /v2/models/m/infer HTTP/1.1\r\n"));
    assert!(p.poll_call().is_none());
    assert_eq!(p.stats().upstream_calls_waiting, 1);
    assert_eq!(p.stats().requests_in_flight, 1, "in flight until answered");
    // A late duplicate while waiting starts nothing.
    assert!(send(&mut p, t0, 1, 7).is_empty());
    assert!(p.poll_call().is_none());
    assert!(p.stats().late_fragments > 0);

    let mut out = Out::new();
    let body = b"{\"outputs\":[]}\x01\x02\x03";
    p.on_upstream_answer(call.id, Ok(kserve_answer(body, 14)), t0, &mut out);
    assert_eq!(out.len(), 1);
    let pk = Packet::new_checked(&out[0].1[..]).unwrap();
    assert_eq!(
        (pk.kind(), pk.request_id(), pk.pipeline()),
        (Some(Kind::Response), 7, 1)
    );
    let r = ResponsePacket::new_checked(pk.body()).unwrap();
    let repr = ResponseRepr::parse(&r).unwrap();
    assert_eq!(
        (repr.content_type, repr.header_len),
        (content_type::KSERVE_BINARY, 14)
    );
    assert_eq!(r.bytes(), body);
    let s = p.stats();
    assert_eq!((s.requests_in_flight, s.upstream_calls_waiting), (0, 0));
    assert_eq!(s.requests_completed, 1);
}

#[test]
fn echo_pipelines_make_no_calls() {
    let mut p = proxy();
    let out = send(&mut p, Instant::now(), 2, 1);
    assert_eq!(out.len(), 1, "8x8 FP32 fits one datagram");
    assert!(p.poll_call().is_none());
}

#[test]
fn a_call_past_request_timeout_gets_unavailable_and_its_late_answer_is_ignored() {
    let mut p = proxy();
    let t0 = Instant::now();
    send(&mut p, t0, 1, 9);
    let call = p.poll_call().unwrap();
    let deadline = t0 + Duration::from_millis(TIMEOUT_MS);
    // The loop is asked to wake by then (reassembly timers may come first).
    assert!(p.next_deadline().is_some_and(|d| d <= deadline));
    let mut out = Out::new();
    p.on_timeout(deadline - Duration::from_millis(1), &mut out);
    assert!(out.is_empty(), "not yet");
    p.on_timeout(deadline, &mut out);
    let (code, id, pipeline, msg) = error_of(&out);
    assert_eq!((code, id, pipeline), (ErrorCode::UpstreamUnavailable, 9, 1));
    assert!(msg.contains("no answer within 1000 ms"), "{msg}");
    assert_eq!(p.stats().requests_in_flight, 0);
    assert_eq!(p.stats().upstreams[0].timeouts, 1);
    // The model server answers after all: nobody waits for it.
    let mut late = Out::new();
    p.on_upstream_answer(call.id, Ok(kserve_answer(b"{}", 2)), deadline, &mut late);
    assert!(late.is_empty());
    let s = p.stats();
    assert_eq!(
        (s.upstream_late_answers, s.upstream_unknown_completions),
        (1, 0)
    );
    // Its fragments are answered keys now.
    assert!(send(&mut p, deadline, 1, 9).is_empty());
    assert!(p.poll_call().is_none());
}

#[test]
fn the_breaker_refuses_calls_while_open_then_lets_one_probe_through() {
    let mut p = proxy();
    let t0 = Instant::now();
    for id in 1..=2 {
        send(&mut p, t0, 1, id);
        let call = p.poll_call().unwrap();
        let mut out = Out::new();
        p.on_upstream_answer(call.id, unreachable(), t0, &mut out);
        let (code, rid, _, msg) = error_of(&out);
        assert_eq!((code, rid), (ErrorCode::UpstreamUnavailable, id));
        assert!(msg.contains("connection refused"), "{msg}");
    }
    assert_eq!(p.stats().upstreams[0].breaker, "open");
    // Open: refused at once, no request built, nothing for the I/O side.
    let out = send(&mut p, t0 + Duration::from_millis(1), 1, 3);
    let (code, _, _, msg) = error_of(&out);
    assert_eq!(code, ErrorCode::UpstreamUnavailable);
    assert!(msg.contains("circuit breaker open"), "{msg}");
    assert!(p.poll_call().is_none());
    assert_eq!(p.stats().upstreams[0].breaker_rejects, 1);
    // After open_ms one probe goes out; its success closes the breaker.
    let later = t0 + Duration::from_millis(OPEN_MS + 1);
    assert!(send(&mut p, later, 1, 4).is_empty());
    let probe = p.poll_call().expect("the half-open probe");
    let out = send(&mut p, later, 1, 5);
    assert_eq!(
        error_of(&out).0,
        ErrorCode::UpstreamUnavailable,
        "one probe at a time"
    );
    let mut out = Out::new();
    p.on_upstream_answer(probe.id, Ok(kserve_answer(b"{}", 2)), later, &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(p.stats().upstreams[0].breaker, "closed");
    assert!(send(&mut p, later, 1, 6).is_empty());
    assert!(p.poll_call().is_some());
}

#[test]
fn model_server_errors_and_a_full_pool_map_to_their_codes() {
    let mut p = proxy();
    let t0 = Instant::now();
    send(&mut p, t0, 1, 1);
    let call = p.poll_call().unwrap();
    let resp = HttpResponse {
        status: 400,
        headers: vec![],
        body: br#"{"error":"input__0 expected"}"#.to_vec(),
        keep_alive: true,
    };
    let mut out = Out::new();
    p.on_upstream_answer(call.id, Ok(resp), t0, &mut out);
    let (code, _, _, msg) = error_of(&out);
    assert_eq!(code, ErrorCode::UpstreamError);
    assert!(msg.contains("HTTP 400: input__0 expected"), "{msg}");

    send(&mut p, t0, 1, 2);
    let call = p.poll_call().unwrap();
    let mut out = Out::new();
    p.on_upstream_answer(call.id, Err(CallError::Overloaded), t0, &mut out);
    let (code, _, _, msg) = error_of(&out);
    assert_eq!(code, ErrorCode::Overloaded);
    assert!(msg.contains("7 requests already waiting"), "{msg}");
    // Neither counts against the breaker.
    assert_eq!(p.stats().upstreams[0].breaker, "closed");
}

#[test]
fn shutdown_answers_every_waiting_request() {
    let mut p = proxy();
    let t0 = Instant::now();
    for id in 1..=3 {
        send(&mut p, t0, 1, id);
    }
    let first = p.poll_call().unwrap();
    let mut out = Out::new();
    p.shutdown(t0, &mut out);
    assert!(p.poll_call().is_none(), "calls not taken are dropped");
    let mut ids: Vec<u64> = out
        .iter()
        .map(|(_, d)| {
            let e = error_of(&vec![(client(), d.clone())]);
            assert_eq!(e.0, ErrorCode::UpstreamUnavailable);
            e.1
        })
        .collect();
    ids.sort();
    assert_eq!(ids, [1, 2, 3]);
    let s = p.stats();
    assert_eq!((s.requests_in_flight, s.upstream_calls_waiting), (0, 0));
    // No timer fires for the calls any more.
    let mut none = Out::new();
    p.on_timeout(t0 + Duration::from_millis(TIMEOUT_MS), &mut none);
    assert!(none.is_empty(), "{none:?}");
    let mut late = Out::new();
    p.on_upstream_answer(first.id, unreachable(), t0, &mut late);
    assert!(late.is_empty());
}

#[test]
fn an_answer_for_a_call_never_made_is_counted() {
    let mut p = proxy();
    let mut out = Out::new();
    p.on_upstream_answer(99, unreachable(), Instant::now(), &mut out);
    assert!(out.is_empty());
    assert_eq!(p.stats().upstream_unknown_completions, 1);
}
