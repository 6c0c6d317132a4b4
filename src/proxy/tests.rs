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
    let mut p = unvalidated_proxy(|_| {});
    validate(&mut p, client(), Instant::now());
    p
}

/// [`proxy`]'s pipelines, nobody validated yet; `edit` changes the
/// security settings.
fn unvalidated_proxy(edit: impl FnOnce(&mut SecuritySettings)) -> Proxy {
    let pipelines: Vec<crate::pipeline::PipelineConfig> = serde_json::from_value(json!([
        {"id": 1, "name": "small", "kind": "image", "upstream": "ks",
         "image": {"width": 8, "height": 8}},
        {"id": 2, "name": "echoed", "kind": "image", "image": {"width": 8, "height": 8}},
        {"id": 3, "name": "resnet", "kind": "image", "image": {}},
        {"id": 4, "name": "minilm", "kind": "text", "text": {}},
    ]))
    .unwrap();
    let ks: UpstreamConfig = serde_json::from_value(json!({
        "kind": "kserve", "url": "http://model.invalid:8000", "model": "m",
        "request_timeout_ms": TIMEOUT_MS, "max_pending": 7,
        "breaker": {"failures": 2, "open_ms": OPEN_MS},
    }))
    .unwrap();
    let mut security = SecuritySettings::new([9; 32], Instant::now());
    edit(&mut security);
    let settings = ProxySettings::new(Limits::default(), 1500, security);
    let pipelines = Pipelines::build(&pipelines, None).unwrap();
    Proxy::new(settings, pipelines, [("ks", &ks)]).unwrap()
}

/// The TOKEN in `out` (the only datagram): (request_id, validated,
/// lifetime_s, token).
fn token_of(out: &Out) -> (u64, bool, u32, Vec<u8>) {
    assert_eq!(out.len(), 1, "expected one TOKEN, got {out:?}");
    let p = Packet::new_checked(&out[0].1[..]).unwrap();
    assert_eq!(p.kind(), Some(Kind::Token));
    assert_eq!((p.pipeline(), p.seq(), p.count()), (0, 0, 1));
    let t = crate::wire::TokenPacket::new_checked(p.body()).unwrap();
    let r = crate::wire::TokenRepr::parse(&t).unwrap();
    (p.request_id(), r.validated, r.lifetime_s, r.token.to_vec())
}

/// The HELLO/TOKEN round trip for `from`, through the core.
fn validate(p: &mut Proxy, from: SocketAddr, now: Instant) {
    let mut out = Out::new();
    // Ids no test request uses (an answered request's id is ignored).
    let hello = crate::client::Client::hello_datagram(u64::MAX - 1, &[], None);
    p.handle(now, from, &hello, &mut out);
    let (id, validated, _, token) = token_of(&out);
    assert_eq!((id, validated), (u64::MAX - 1, false));
    out.clear();
    p.handle(
        now,
        from,
        &crate::client::Client::hello_datagram(u64::MAX - 2, &token, None),
        &mut out,
    );
    assert!(token_of(&out).1, "the proxy's own token validates");
    assert!(p.is_validated(from, now));
}

/// Bytes of every datagram in `out` sent to `to`.
fn bytes_to(out: &Out, to: SocketAddr) -> usize {
    out.iter()
        .filter(|(a, _)| *a == to)
        .map(|(_, d)| d.len())
        .sum()
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

#[test]
fn latencies_are_recorded_with_the_instants_given() {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    let mut p = proxy();
    let t0 = Instant::now();
    // A fake clock: "tensor ready" is 3 ms after the last fragment.
    let later_us = Arc::new(AtomicU64::new(3000));
    let l = later_us.clone();
    p.set_clock(Box::new(move || {
        t0 + Duration::from_micros(l.load(Ordering::Relaxed))
    }));
    // One 4-pixel RGB row per datagram.
    let datagrams = image_rows(&image(), 1, 5, 24 + 24 + 12);
    assert!(datagrams.len() > 1, "several fragments");
    let mut out = Out::new();
    let last = Duration::from_millis(2);
    for (i, d) in datagrams.iter().enumerate() {
        let at = if i + 1 == datagrams.len() {
            last
        } else {
            Duration::ZERO
        };
        p.handle(t0 + at, client(), d, &mut out);
    }
    later_us.store(5000, Ordering::Relaxed);
    let call = p.poll_call().unwrap();
    let (body, hl) = kserve_binary_response("m", &[]);
    let answered = t0 + Duration::from_millis(12);
    p.on_upstream_answer(call.id, Ok(kserve_answer(&body, hl)), answered, &mut out);
    let lat = &p.latency()[0];
    let us = |h: &hdrhistogram::Histogram<u64>| (h.len(), h.max());
    let near = |h: &hdrhistogram::Histogram<u64>, v: u64| {
        assert_eq!(h.len(), 1);
        assert!(h.equivalent(h.max(), v), "{} vs {v}", h.max());
    };
    // First to last fragment: 2 ms; last fragment to tensor: 3 - 2 = 1 ms;
    // hand-over (3 ms) to the answer (12 ms): 9 ms; total 12 ms.
    near(&lat.fragments, 2000);
    near(&lat.tensor_ready, 1000);
    near(&lat.upstream, 9000);
    near(&lat.total, 12000);
    // The echo pipeline has its own histograms; no upstream call there.
    assert_eq!(us(&p.latency()[1].upstream), (0, 0));
    let s = p.stats();
    assert_eq!(s.pipelines[0].requests_started, 1);
    assert_eq!(s.pipelines[0].responses, 1);
    // Without a clock, "tensor ready" is the last fragment's instant.
    let mut p = proxy();
    send(&mut p, t0, 2, 1);
    assert_eq!(p.latency()[1].tensor_ready.max(), 1, "clamped to 1 us");
    assert_eq!(p.stats().pipelines[1].responses, 1);
}

#[test]
fn draining_refuses_new_requests_and_finishes_those_in_flight() {
    let mut p = proxy();
    let t0 = Instant::now();
    send(&mut p, t0, 1, 1);
    let call = p.poll_call().unwrap();
    assert!(!p.is_idle());
    p.start_drain();
    // A new request: OVERLOADED, saying why.
    let out = send(&mut p, t0, 2, 2);
    let (code, id, pipeline, msg) = error_of(&out);
    assert_eq!((code, id, pipeline), (ErrorCode::Overloaded, 2, 2));
    assert!(msg.contains("draining"), "{msg}");
    assert_eq!(p.stats().refused_draining, 1);
    // The one waiting for its model server still gets its answer.
    let mut out = Out::new();
    p.on_upstream_answer(call.id, Ok(kserve_answer(b"{}", 2)), t0, &mut out);
    assert_eq!(
        Packet::new_checked(&out[0].1[..]).unwrap().kind(),
        Some(Kind::Response)
    );
    assert!(p.is_idle());
}

// ---- Address validation (spec rev 3), the two clocks, INCOMPLETE ----

fn one_by_one(pipeline: u16, id: u64) -> Vec<u8> {
    let img = RawImage {
        width: 1,
        height: 1,
        format: PixelFormat::Rgb8,
        data: vec![1, 2, 3],
    };
    image_rows(&img, pipeline, id, 1472).remove(0)
}

fn describe_datagram(id: u64) -> Vec<u8> {
    let mut d = vec![0u8; HEADER_LEN];
    HeaderRepr::fragment(Kind::Describe, 0, id, 0, 1).emit(&mut Packet::new_unchecked(&mut d[..]));
    d
}

#[test]
fn a_forged_source_gets_at_most_three_times_its_bytes_then_the_full_answer_once_validated() {
    let t0 = Instant::now();
    let mut p = unvalidated_proxy(|_| {});
    let victim: SocketAddr = "192.0.2.66:5353".parse().unwrap();
    // A 51-byte 1x1 image to the 224x224 FP32 echo pipeline (602 KB of
    // answer without validation) and a 24-byte DESCRIBE.
    let img = one_by_one(3, 1);
    assert_eq!(img.len(), 51);
    let mut out = Out::new();
    p.handle(t0, victim, &img, &mut out);
    let (code, id, pipeline, msg) = error_of(&out);
    assert_eq!((code, id, pipeline), (ErrorCode::Retry, 1, 3));
    assert!(msg.len() <= 40);
    assert!(bytes_to(&out, victim) <= 3 * img.len());
    // No work, no state for it.
    let s = p.stats();
    assert_eq!(
        (s.requests_started, s.requests_in_flight, s.state_bytes),
        (0, 0, 0)
    );
    out.clear();
    let d = describe_datagram(2);
    p.handle(t0, victim, &d, &mut out);
    assert_eq!(error_of(&out).0, ErrorCode::Retry);
    assert!(bytes_to(&out, victim) <= 3 * d.len());
    // A text request and malformed datagrams: never more than 3x in total.
    let mut sent_in = img.len() + d.len();
    let texts = crate::client::text_chunks(b"hello world", 4, 3, 1472, 0);
    for (i, t) in texts
        .iter()
        .chain([&vec![
            0x54, 0x57, 1, 1, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 1,
        ]])
        .enumerate()
    {
        let mut o = Out::new();
        p.handle(t0, victim, t, &mut o);
        sent_in += t.len();
        out.extend(o);
        assert!(bytes_to(&out, victim) <= 3 * sent_in, "datagram {i}");
    }
    // 24-byte DESCRIBEs over and over: the budget runs out, then silence.
    for i in 0..50 {
        p.handle(t0, victim, &describe_datagram(100 + i), &mut out);
        sent_in += HEADER_LEN;
        assert!(bytes_to(&out, victim) <= 3 * sent_in);
    }
    let s = p.stats();
    assert!(
        s.retries_sent >= 3 && s.budget_bytes_refused > 600_000,
        "{s:?}"
    );
    // The real owner of the address validates: full answers.
    validate(&mut p, victim, t0);
    out.clear();
    p.handle(t0, victim, &one_by_one(3, 500), &mut out);
    let body = bytes_to(&out, victim);
    assert!(body > 602_112, "the whole 224x224 FP32 tensor: {body}");
    out.clear();
    p.handle(t0, victim, &describe_datagram(501), &mut out);
    assert_eq!(
        Packet::new_checked(&out[0].1[..]).unwrap().kind(),
        Some(Kind::Response)
    );

    // Validation off: no budget at all.
    let mut off = unvalidated_proxy(|s| s.address_validation = false);
    out.clear();
    off.handle(t0, victim, &img, &mut out);
    assert!(bytes_to(&out, victim) > 602_112);
    assert_eq!(
        off.describe_json()
            .windows(26)
            .filter(|w| w == b"\"address_validation\":false")
            .count(),
        1
    );
}

#[test]
fn model_server_answers_above_the_budget_become_retry() {
    let t0 = Instant::now();
    let mut p = unvalidated_proxy(|_| {});
    let forged: SocketAddr = "192.0.2.9:1".parse().unwrap();
    let mut out = Out::new();
    for d in image_rows(&image(), 1, 7, 1472) {
        p.handle(t0, forged, &d, &mut out);
    }
    assert!(out.is_empty());
    let call = p
        .poll_call()
        .expect("the size of a model's answer is not known in advance");
    let big = vec![7u8; 10_000];
    p.on_upstream_answer(call.id, Ok(kserve_answer(&big, 0)), t0, &mut out);
    let (code, id, pipeline, _) = error_of(&out);
    assert_eq!((code, id, pipeline), (ErrorCode::Retry, 7, 1));
    // Validated: the same answer goes out.
    validate(&mut p, forged, t0);
    out.clear();
    for d in image_rows(&image(), 1, 8, 1472) {
        p.handle(t0, forged, &d, &mut out);
    }
    let call = p.poll_call().unwrap();
    p.on_upstream_answer(call.id, Ok(kserve_answer(&big, 0)), t0, &mut out);
    assert!(bytes_to(&out, forged) > 10_000);
}

#[test]
fn hello_rules() {
    let t0 = Instant::now();
    let mut p = unvalidated_proxy(|_| {});
    let a: SocketAddr = "198.51.100.1:1000".parse().unwrap();
    let b: SocketAddr = "198.51.100.2:1000".parse().unwrap();
    let mut out = Out::new();
    // Shorter than 1200 bytes without a token: MALFORMED.
    let mut short = crate::client::Client::hello_datagram(1, &[], None);
    short.truncate(1199);
    p.handle(t0, a, &short, &mut out);
    assert_eq!(error_of(&out).0, ErrorCode::Malformed);
    // A token for `a` presented by `b`: a fresh token for b, not validated.
    out.clear();
    p.handle(
        t0,
        a,
        &crate::client::Client::hello_datagram(2, &[], None),
        &mut out,
    );
    let (_, v, lifetime, token) = token_of(&out);
    assert!(!v && lifetime == 3600 && token.len() <= 64);
    out.clear();
    p.handle(
        t0,
        b,
        &crate::client::Client::hello_datagram(3, &token, None),
        &mut out,
    );
    let (id, v, _, fresh) = token_of(&out);
    assert!(!v && id == 3 && fresh != token);
    assert!(!p.is_validated(b, t0));
    // A forged token: refused.
    let mut forged = token.clone();
    forged[10] ^= 1;
    out.clear();
    p.handle(
        t0,
        a,
        &crate::client::Client::hello_datagram(4, &forged, None),
        &mut out,
    );
    assert!(!token_of(&out).1);
    // Replayed by `a` within its lifetime (padding optional): validated.
    let mut bare = crate::client::Client::hello_datagram(5, &token, None);
    bare.truncate(HEADER_LEN + 2 + token.len());
    out.clear();
    p.handle(t0 + Duration::from_secs(60), a, &bare, &mut out);
    assert!(token_of(&out).1);
    out.clear();
    p.handle(t0 + Duration::from_secs(61), a, &bare, &mut out);
    assert!(token_of(&out).1);
    let s = p.stats();
    assert_eq!((s.hellos, s.validations, s.validation_failures), (6, 2, 2));
}

#[test]
fn a_pre_shared_key_is_needed_when_configured() {
    let t0 = Instant::now();
    let mut p = unvalidated_proxy(|s| s.psk = Some(b"correct horse battery".to_vec()));
    let a: SocketAddr = "198.51.100.1:1000".parse().unwrap();
    let mut out = Out::new();
    p.handle(
        t0,
        a,
        &crate::client::Client::hello_datagram(1, &[], None),
        &mut out,
    );
    let token = token_of(&out).3;
    for (id, psk, ok) in [
        (2, None, false),
        (3, Some(&b"wrong key"[..]), false),
        (4, Some(&b"correct horse battery"[..]), true),
    ] {
        out.clear();
        p.handle(
            t0,
            a,
            &crate::client::Client::hello_datagram(id, &token, psk),
            &mut out,
        );
        assert_eq!(token_of(&out).1, ok, "{psk:?}");
    }
    assert_eq!(p.stats().psk_failures, 2);
    assert!(p.is_validated(a, t0));
}

#[test]
fn the_validated_table_stays_bounded_under_100k_sources() {
    let t0 = Instant::now();
    let mut p = unvalidated_proxy(|s| s.validated_addresses = 1000);
    let mut out = Out::new();
    for i in 0..100_000u32 {
        let from = SocketAddr::from(((0x0a00_0000 + i).to_be_bytes(), 4000));
        out.clear();
        p.handle(
            t0,
            from,
            &crate::client::Client::hello_datagram(1, &[], None),
            &mut out,
        );
        let token = token_of(&out).3;
        out.clear();
        p.handle(
            t0,
            from,
            &crate::client::Client::hello_datagram(2, &token, None),
            &mut out,
        );
        assert!(token_of(&out).1);
    }
    let s = p.stats();
    assert_eq!(s.validations, 100_000);
    assert_eq!(s.validated_addresses, 1000);
    assert_eq!(s.validated_evictions, 99_000);
    // The newest are kept, the oldest forgotten.
    assert!(p.is_validated(
        SocketAddr::from(((0x0a00_0000u32 + 99_999).to_be_bytes(), 4000)),
        t0
    ));
    assert!(!p.is_validated(SocketAddr::from((0x0a00_0000u32.to_be_bytes(), 4000)), t0));
}

#[test]
fn the_allowlist_drops_other_sources() {
    let t0 = Instant::now();
    let mut p = unvalidated_proxy(|s| {
        s.allowlist = vec![Prefix::parse("10.9.0.0/24").unwrap()];
    });
    let mut out = Out::new();
    p.handle(
        t0,
        "10.10.0.2:1".parse().unwrap(),
        &describe_datagram(1),
        &mut out,
    );
    p.handle(
        t0,
        "[fd00::1]:1".parse().unwrap(),
        &describe_datagram(2),
        &mut out,
    );
    assert!(out.is_empty());
    p.handle(t0, client(), &describe_datagram(3), &mut out);
    assert_eq!(out.len(), 1, "RETRY for the unvalidated but allowed client");
    assert_eq!(p.stats().dropped_allowlist, 2);
}

#[test]
fn a_client_that_stops_gets_incomplete_after_the_idle_timeout_with_its_pipeline() {
    let ms = Duration::from_millis;
    let t0 = Instant::now();
    let mut p = proxy();
    let text = vec![b'a'; 5000];
    let chunks = crate::client::text_chunks(&text, 4, 70, 1472, 0);
    assert!(chunks.len() >= 4);
    let mut out = Out::new();
    // Two fragments, 900 ms apart: the idle clock restarts at each.
    p.handle(t0, client(), &chunks[0], &mut out);
    p.handle(t0 + ms(900), client(), &chunks[1], &mut out);
    p.on_timeout(t0 + ms(1500), &mut out);
    assert!(out.is_empty(), "900 + 1000 ms not reached");
    // A duplicate does not restart it.
    p.handle(t0 + ms(1800), client(), &chunks[1], &mut out);
    p.on_timeout(t0 + ms(1899), &mut out);
    assert!(out.is_empty());
    p.on_timeout(t0 + ms(1900), &mut out);
    let (code, id, pipeline, msg) = error_of(&out);
    assert_eq!((code, id, pipeline), (ErrorCode::Incomplete, 70, 4));
    assert!(msg.contains("reassembly_timeout_ms"), "{msg}");
}

#[test]
fn a_trickling_client_gets_incomplete_at_the_deadline() {
    let ms = Duration::from_millis;
    let t0 = Instant::now();
    let mut p = proxy();
    let text = vec![b'a'; 30_000];
    let chunks = crate::client::text_chunks(&text, 4, 71, 1472, 0);
    let mut out = Out::new();
    // A new fragment every 900 ms: never idle, but 10 s is the limit.
    for (i, c) in chunks.iter().enumerate() {
        let now = t0 + ms(900 * i as u64);
        p.on_timeout(now, &mut out);
        if !out.is_empty() {
            break;
        }
        p.handle(now, client(), c, &mut out);
    }
    let (code, id, pipeline, msg) = error_of(&out);
    assert_eq!((code, id, pipeline), (ErrorCode::Incomplete, 71, 4));
    assert!(msg.contains("request_deadline_ms"), "{msg}");
}
