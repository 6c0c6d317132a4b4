//! Model servers that misbehave: not started, answering 500, answering
//! something that is not HTTP, stalling, closing; a full queue. Each
//! request gets exactly one ERROR with the right code, ingress is never
//! blocked, and every counter of work in flight returns to zero.

mod support;

use std::time::{Duration, Instant};
use support::{free_port, FakeServer, Fault};
use tensorwire::client::{Client, Faults, Reply};
use tensorwire::config::Config;
use tensorwire::proxy::Stats;
use tensorwire::server::RunningProxy;
use tensorwire::upstream::UpstreamStats;
use tensorwire::wire::ErrorCode;

/// Text pipeline 2 to the upstream at `url`, text pipeline 9 to echo;
/// `extra` keys of the upstream replace the defaults here.
fn config(url: &str, extra: &str) -> Config {
    let defaults = [
        "connect_timeout_ms = 500",
        "request_timeout_ms = 400",
        "reconnect_backoff_ms = 50",
        "reconnect_backoff_max_ms = 200",
    ];
    let overridden = |d: &&str| {
        let key = d.split(" = ").next().unwrap();
        extra.lines().any(|l| l.starts_with(&format!("{key} = ")))
    };
    let defaults: Vec<&str> = defaults
        .iter()
        .filter(|d| !overridden(d))
        .copied()
        .collect();
    let defaults = defaults.join("\n");
    Config::from_toml(&format!(
        r#"
[admin]
listen = ""
[upstreams.model]
kind = "kserve"
url = "{url}"
model = "m"
{defaults}
{extra}

[[pipelines]]
id = 2
name = "text"
kind = "text"
upstream = "model"
[pipelines.text]
tokenizer = "builtin:all-MiniLM-L6-v2"

[[pipelines]]
id = 9
name = "local"
kind = "text"
upstream = "echo"
[pipelines.text]
tokenizer = "builtin:all-MiniLM-L6-v2"
"#
    ))
    .unwrap()
}

fn start(cfg: Config) -> (RunningProxy, Client) {
    let proxy = RunningProxy::spawn(cfg, "127.0.0.1:0".parse().unwrap()).unwrap();
    let mut c = Client::connect(proxy.addr).unwrap();
    c.timeout = Duration::from_secs(5);
    (proxy, c)
}

fn send(c: &mut Client, pipeline: u16) -> Reply {
    c.send_text(pipeline, b"hello upstream", 0, 1472, &Faults::default())
        .unwrap()
}

fn error(r: Reply) -> (ErrorCode, String) {
    match r {
        Reply::Error { code, message } => (code, message),
        other => panic!("expected an ERROR, got {other:?}"),
    }
}

/// The fake server's JSON answer, relayed as content_type 1.
fn assert_fake_answer(r: Reply) {
    match r {
        Reply::Response {
            content_type: 1,
            body,
            ..
        } => assert_eq!(body, br#"{"model_name":"m","outputs":[]}"#),
        other => panic!("{other:?}"),
    }
}

/// Nothing left in flight anywhere, all connections closed at stop.
fn assert_drained(stats: &Stats) -> &UpstreamStats {
    assert_eq!(stats.requests_in_flight, 0, "{stats:?}");
    assert_eq!(stats.upstream_calls_waiting, 0);
    assert_eq!(stats.upstream_unknown_completions, 0);
    let u = &stats.upstreams[0];
    assert_eq!(u.pool.calls_in_flight, 0, "{u:?}");
    assert_eq!(u.pool.connections_open, 0, "{u:?}");
    u
}

#[test]
fn server_not_started_fails_fast_and_opens_the_breaker() {
    let port = free_port();
    let (proxy, mut c) = start(config(
        &format!("http://127.0.0.1:{port}"),
        "breaker = { failures = 3, open_ms = 60000 }",
    ));
    let d = c.describe().unwrap();
    assert_eq!(d["upstreams"][0]["ready_at_start"], false);
    assert!(d["upstreams"][0]["not_ready_because"]
        .as_str()
        .unwrap()
        .contains("connect"));
    for i in 0..6 {
        let t0 = Instant::now();
        let (code, msg) = error(send(&mut c, 2));
        assert_eq!(code, ErrorCode::UpstreamUnavailable, "{msg}");
        assert!(
            t0.elapsed() < Duration::from_millis(300),
            "request {i} took {:?}",
            t0.elapsed()
        );
        if i >= 3 {
            assert!(msg.contains("circuit breaker open"), "{i}: {msg}");
        }
    }
    assert_eq!(c.describe().unwrap()["upstreams"][0]["breaker"], "open");
    let (stats, _) = proxy.stop().unwrap();
    let u = assert_drained(&stats);
    assert_eq!(u.breaker_opens, 1);
    assert_eq!(u.breaker_rejects, 3);
    assert_eq!(u.pool.calls_unavailable, 3);
    assert_eq!(stats.errors(ErrorCode::UpstreamUnavailable), 6);
}

#[test]
fn http_500_is_upstream_error_with_the_servers_message() {
    let s = FakeServer::start(Fault::Status500);
    let (proxy, mut c) = start(config(&s.url(), ""));
    for _ in 0..3 {
        let (code, msg) = error(send(&mut c, 2));
        assert_eq!(code, ErrorCode::UpstreamError);
        assert!(
            msg.contains("HTTP 500") && msg.contains("CUDA out of memory"),
            "{msg}"
        );
    }
    let (stats, _) = proxy.stop().unwrap();
    let u = assert_drained(&stats);
    assert_eq!(u.http_errors, 3);
    // The server answers: keep-alive reused, breaker stays closed.
    assert_eq!(u.pool.connects, 1);
    assert_eq!(u.breaker_opens, 0);
}

#[test]
fn malformed_http_is_upstream_error() {
    let s = FakeServer::start(Fault::Garbage);
    let (proxy, mut c) = start(config(&s.url(), ""));
    for _ in 0..2 {
        let (code, msg) = error(send(&mut c, 2));
        assert_eq!(code, ErrorCode::UpstreamError);
        assert!(msg.contains("malformed HTTP answer"), "{msg}");
    }
    let (stats, _) = proxy.stop().unwrap();
    let u = assert_drained(&stats);
    assert_eq!(u.pool.calls_malformed, 2);
}

#[test]
fn closed_without_answer_is_unavailable() {
    let s = FakeServer::start(Fault::Close);
    let (proxy, mut c) = start(config(&s.url(), ""));
    let (code, msg) = error(send(&mut c, 2));
    assert_eq!(code, ErrorCode::UpstreamUnavailable, "{msg}");
    let (stats, _) = proxy.stop().unwrap();
    assert_drained(&stats);
}

#[test]
fn stalled_server_times_out_without_blocking_ingress() {
    let s = FakeServer::start(Fault::Stall);
    let (proxy, c) = start(config(&s.url(), "request_timeout_ms = 1500"));
    let addr = proxy.addr;
    let stalled = std::thread::spawn(move || {
        let mut c = c;
        let t0 = Instant::now();
        let r = send(&mut c, 2);
        (r, t0.elapsed())
    });
    // While that call hangs upstream, the echo pipeline and DESCRIBE on
    // the same proxy answer long before it times out.
    std::thread::sleep(Duration::from_millis(50));
    let mut other = Client::connect(addr).unwrap();
    let t0 = Instant::now();
    for _ in 0..5 {
        assert!(matches!(
            send(&mut other, 9),
            Reply::Response {
                content_type: 2,
                ..
            }
        ));
        other.describe().unwrap();
    }
    assert!(
        t0.elapsed() < Duration::from_millis(1000),
        "{:?}",
        t0.elapsed()
    );
    assert!(
        !stalled.is_finished(),
        "the stalled call must still be waiting"
    );
    let (r, took) = stalled.join().unwrap();
    let (code, msg) = error(r);
    assert_eq!(code, ErrorCode::UpstreamUnavailable);
    assert!(
        msg.contains("no answer") && msg.contains("1500 ms"),
        "{msg}"
    );
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_millis(3000),
        "{took:?}"
    );
    let (stats, _) = proxy.stop().unwrap();
    let u = assert_drained(&stats);
    assert_eq!(u.pool.calls_timed_out, 1);
}

#[test]
fn full_queue_is_overloaded() {
    let s = FakeServer::start(Fault::Stall);
    let (proxy, _c) = start(config(&s.url(), "connections = 1\nmax_pending = 1"));
    // One call on the connection (the server has it), one queued: the
    // third is shed.
    let addr = proxy.addr;
    let spawn = || {
        std::thread::spawn(move || {
            let mut c = Client::connect(addr).unwrap();
            error(send(&mut c, 2)).0
        })
    };
    // (The start-up readiness GET was one request already.)
    let before = s.requests.load(std::sync::atomic::Ordering::Relaxed);
    let first = spawn();
    let t0 = Instant::now();
    while s.requests.load(std::sync::atomic::Ordering::Relaxed) == before {
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "the first call never arrived"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let second = spawn();
    std::thread::sleep(Duration::from_millis(100));
    let mut c = Client::connect(addr).unwrap();
    let (code, msg) = error(send(&mut c, 2));
    assert_eq!(code, ErrorCode::Overloaded, "{msg}");
    for w in [first, second] {
        assert_eq!(w.join().unwrap(), ErrorCode::UpstreamUnavailable);
    }
    let (stats, _) = proxy.stop().unwrap();
    let u = assert_drained(&stats);
    assert_eq!(u.pool.calls_overloaded, 1);
    assert_eq!(u.pool.calls_timed_out, 2);
    assert_eq!(stats.errors(ErrorCode::Overloaded), 1);
}

#[test]
fn server_closing_kept_alive_connections_is_survived() {
    let s = FakeServer::start(Fault::AnswerThenClose);
    let (proxy, mut c) = start(config(&s.url(), ""));
    for _ in 0..5 {
        assert_fake_answer(send(&mut c, 2));
    }
    let (stats, _) = proxy.stop().unwrap();
    let u = assert_drained(&stats);
    assert_eq!(u.pool.calls_ok, 5);
    // One connection per answer: the close was noticed on the idle
    // connection, or the call was resent once on a fresh one.
    assert_eq!(u.pool.connects, 5, "{u:?}");
}

#[test]
fn chunked_answers_on_a_kept_alive_connection() {
    let s = FakeServer::start(Fault::Chunked);
    let (proxy, mut c) = start(config(&s.url(), ""));
    for _ in 0..3 {
        assert_fake_answer(send(&mut c, 2));
    }
    let (stats, _) = proxy.stop().unwrap();
    let u = assert_drained(&stats);
    assert_eq!((u.pool.calls_ok, u.pool.connects), (3, 1), "{u:?}");
}

/// A listening socket whose accept queue is full: SYNs are dropped, so a
/// connect neither succeeds nor fails (a black hole, on loopback).
struct FullBacklog {
    addr: std::net::SocketAddr,
    _queued: Vec<std::net::TcpStream>,
    fd: i32,
}

impl FullBacklog {
    fn new() -> FullBacklog {
        // SAFETY: plain socket calls on a fresh fd, closed on drop.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
        assert!(fd >= 0);
        let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        sa.sin_family = libc::AF_INET as libc::sa_family_t;
        sa.sin_addr.s_addr = u32::from(std::net::Ipv4Addr::LOCALHOST).to_be();
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        unsafe {
            assert_eq!(
                libc::bind(fd, &sa as *const _ as *const libc::sockaddr, len),
                0
            );
            assert_eq!(libc::listen(fd, 0), 0);
            let mut got: libc::sockaddr_in = std::mem::zeroed();
            let mut l = len;
            libc::getsockname(fd, &mut got as *mut _ as *mut libc::sockaddr, &mut l);
            sa.sin_port = got.sin_port;
        }
        let addr: std::net::SocketAddr =
            (std::net::Ipv4Addr::LOCALHOST, u16::from_be(sa.sin_port)).into();
        // Fill the accept queue (never accepted).
        let mut queued = Vec::new();
        while let Ok(s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            queued.push(s);
            assert!(queued.len() < 64, "backlog never filled");
        }
        FullBacklog {
            addr,
            _queued: queued,
            fd,
        }
    }
}

impl Drop for FullBacklog {
    fn drop(&mut self) {
        // SAFETY: our own fd.
        unsafe { libc::close(self.fd) };
    }
}

#[test]
fn unanswered_connect_times_out() {
    let hole = FullBacklog::new();
    let (proxy, mut c) = start(config(
        &format!("http://{}", hole.addr),
        "connect_timeout_ms = 300\nrequest_timeout_ms = 5000",
    ));
    let t0 = Instant::now();
    let (code, msg) = error(send(&mut c, 2));
    let took = t0.elapsed();
    assert_eq!(code, ErrorCode::UpstreamUnavailable);
    assert!(msg.contains("no connection within 300 ms"), "{msg}");
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_millis(2000),
        "{took:?}"
    );
    let (stats, _) = proxy.stop().unwrap();
    let u = assert_drained(&stats);
    assert_eq!(u.pool.connect_failures, 1);
}

// ------------------------------------------------- hostile model servers
//
// Issue 12: nothing a model server sends can panic the proxy or make it
// hold unbounded memory. Each hostile answer gets UPSTREAM_ERROR or
// UPSTREAM_UNAVAILABLE, the proxy keeps serving (DESCRIBE and the echo
// pipeline answer afterwards), the pool's answer buffers stay within the
// codec's limits and are empty at the end, and everything drains.

use tensorwire::upstream::codec::{MAX_HEAD, MAX_RESPONSE_BODY};

/// The proxy still answers DESCRIBE and an echo request.
fn assert_still_serving(c: &mut Client) {
    assert!(c.describe().unwrap()["upstreams"].is_array());
    assert!(matches!(
        send(c, 9),
        Reply::Response {
            content_type: 2,
            ..
        }
    ));
}

/// The pool never held more than `limit` bytes for one answer and holds
/// nothing now.
fn assert_bounded(u: &UpstreamStats, limit: usize) {
    assert!(
        u.pool.response_bytes_peak <= limit as u64,
        "held {} bytes for one answer (limit {limit})",
        u.pool.response_bytes_peak
    );
    assert_eq!(u.pool.response_bytes_buffered, 0, "{u:?}");
}

/// Sends `n` requests to the hostile upstream; each must fail with one
/// of `codes`, its message containing `want`.
fn expect_errors(c: &mut Client, n: usize, codes: &[ErrorCode], want: &str) {
    for i in 0..n {
        let (code, msg) = error(send(c, 2));
        assert!(codes.contains(&code), "{i}: {code:?} {msg}");
        assert!(msg.contains(want), "{i}: {msg}");
        assert_still_serving(c);
    }
}

#[test]
fn overflowing_chunk_size_is_upstream_error() {
    let s = FakeServer::start(Fault::OverflowingChunk);
    let (proxy, mut c) = start(config(&s.url(), ""));
    expect_errors(
        &mut c,
        3,
        &[ErrorCode::UpstreamError],
        "chunked body too large",
    );
    let (stats, _) = proxy.stop().unwrap();
    let u = assert_drained(&stats);
    assert_eq!(u.pool.calls_malformed, 3);
    assert_bounded(u, 64 << 10);
}

#[test]
fn megabyte_head_is_refused_at_max_head() {
    let s = FakeServer::start(Fault::HugeHead);
    let (proxy, mut c) = start(config(&s.url(), ""));
    expect_errors(&mut c, 2, &[ErrorCode::UpstreamError], "larger than 64 KiB");
    let (stats, _) = proxy.stop().unwrap();
    let u = assert_drained(&stats);
    assert_eq!(u.pool.calls_malformed, 2);
    // The head buffer grows by doubling: at most twice the limit.
    assert_bounded(u, 2 * MAX_HEAD);
}

#[test]
fn content_length_of_2_pow_63_is_upstream_error() {
    let s = FakeServer::start(Fault::HugeContentLength);
    let (proxy, mut c) = start(config(&s.url(), ""));
    expect_errors(&mut c, 2, &[ErrorCode::UpstreamError], "too large");
    let (stats, _) = proxy.stop().unwrap();
    let u = assert_drained(&stats);
    assert_bounded(u, 64 << 10);
}

#[test]
fn endless_bodies_are_cut_off() {
    for fault in [Fault::EndlessBody, Fault::EndlessChunks] {
        let s = FakeServer::start(fault);
        let (proxy, mut c) = start(config(&s.url(), "request_timeout_ms = 600"));
        // While a body streams in, the same worker answers others at once
        // (reads are budgeted per event).
        let addr = proxy.addr;
        let streaming = std::thread::spawn(move || {
            let mut c = Client::connect(addr).unwrap();
            error(send(&mut c, 2)).0
        });
        std::thread::sleep(Duration::from_millis(100));
        let mut other = Client::connect(addr).unwrap();
        for _ in 0..3 {
            let t0 = Instant::now();
            other.describe().unwrap();
            assert!(
                t0.elapsed() < Duration::from_millis(500),
                "{:?}",
                t0.elapsed()
            );
        }
        let code = streaming.join().unwrap();
        assert!(
            matches!(
                code,
                ErrorCode::UpstreamUnavailable | ErrorCode::UpstreamError
            ),
            "{code:?}"
        );
        for _ in 0..2 {
            let t0 = Instant::now();
            // Cut at request_timeout_ms, or at MAX_RESPONSE_BODY if that
            // much arrives first.
            let (code, msg) = error(send(&mut c, 2));
            match code {
                ErrorCode::UpstreamUnavailable => assert!(msg.contains("600 ms"), "{msg}"),
                ErrorCode::UpstreamError => assert!(msg.contains("too large"), "{msg}"),
                other => panic!("{fault:?}: {other:?} {msg}"),
            }
            assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
            assert_still_serving(&mut c);
        }
        let (stats, _) = proxy.stop().unwrap();
        let u = assert_drained(&stats);
        assert!(u.pool.response_bytes_peak > 0, "{fault:?}: {u:?}");
        assert_bounded(u, 2 * (MAX_RESPONSE_BODY + MAX_HEAD));
    }
}

#[test]
fn trickled_answer_times_out_while_others_are_served() {
    let s = FakeServer::start(Fault::Trickle);
    let (proxy, c) = start(config(&s.url(), "request_timeout_ms = 1000"));
    let addr = proxy.addr;
    let trickled = std::thread::spawn(move || {
        let mut c = c;
        let t0 = Instant::now();
        (send(&mut c, 2), t0.elapsed())
    });
    std::thread::sleep(Duration::from_millis(100));
    let mut other = Client::connect(addr).unwrap();
    for _ in 0..3 {
        assert_still_serving(&mut other);
    }
    let (r, took) = trickled.join().unwrap();
    let (code, msg) = error(r);
    assert_eq!(code, ErrorCode::UpstreamUnavailable, "{msg}");
    assert!(msg.contains("1000 ms"), "{msg}");
    assert!(
        took >= Duration::from_millis(1000) && took < Duration::from_millis(2500),
        "{took:?}"
    );
    assert_still_serving(&mut other);
    let (stats, _) = proxy.stop().unwrap();
    let u = assert_drained(&stats);
    assert_bounded(u, 64 << 10);
}

#[test]
fn answer_before_the_request_is_never_relayed() {
    // Each good answer is followed by an unsolicited one on the
    // kept-alive connection: the pool drops that connection (counted)
    // instead of taking the stale answer for the next request's.
    let s = FakeServer::start(Fault::EarlyAnswer);
    let (proxy, mut c) = start(config(&s.url(), ""));
    for _ in 0..4 {
        assert_fake_answer(send(&mut c, 2));
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_still_serving(&mut c);
    let (stats, _) = proxy.stop().unwrap();
    let u = assert_drained(&stats);
    assert_eq!(u.pool.calls_ok, 4, "{u:?}");
    assert_eq!(u.pool.unsolicited_bytes, 4, "{u:?}");
    assert_eq!(u.pool.connects, 4, "{u:?}");
    assert_bounded(u, 64 << 10);
}

#[test]
fn http10_and_connection_close_mixes_are_answered() {
    let s = FakeServer::start(Fault::Http10Mix);
    let (proxy, mut c) = start(config(&s.url(), ""));
    for _ in 0..8 {
        assert_fake_answer(send(&mut c, 2));
    }
    assert_still_serving(&mut c);
    let (stats, _) = proxy.stop().unwrap();
    let u = assert_drained(&stats);
    assert_eq!(u.pool.calls_ok, 8, "{u:?}");
    // None of these answers leaves a connection to reuse.
    assert_eq!(u.pool.connects, 8, "{u:?}");
    assert_eq!(u.pool.stale_retries, 0, "{u:?}");
    assert_bounded(u, 64 << 10);
}

// ------------------------------------------------------ upstream names

#[test]
fn unresolved_name_is_retried_and_shown_in_describe() {
    // `.invalid` never resolves (RFC 2606).
    let (proxy, mut c) = start(config("http://tensorwire-test.invalid:8000", ""));
    let d = c.describe().unwrap();
    assert_eq!(d["upstreams"][0]["ready_at_start"], false);
    let why = d["upstreams"][0]["not_ready_because"].as_str().unwrap();
    assert!(why.contains("resolve"), "{why}");
    for _ in 0..3 {
        let t0 = Instant::now();
        let (code, msg) = error(send(&mut c, 2));
        assert_eq!(code, ErrorCode::UpstreamUnavailable, "{msg}");
        assert!(
            msg.contains("cannot resolve") || msg.contains("reconnecting"),
            "{msg}"
        );
        assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
        assert_still_serving(&mut c);
        // Past the backoff: the next call looks the name up again.
        std::thread::sleep(Duration::from_millis(250));
    }
    let (stats, _) = proxy.stop().unwrap();
    let u = assert_drained(&stats);
    assert_eq!(u.pool.addresses, 0);
    assert!(u.pool.lookup_failures >= 2, "{u:?}");
}

#[test]
fn strict_start_refuses_an_unresolved_name() {
    let text = r#"
[upstreams.model]
kind = "kserve"
url = "http://tensorwire-test.invalid:8000"
model = "m"
require_at_start = true

[[pipelines]]
id = 2
name = "text"
kind = "text"
upstream = "model"
[pipelines.text]
tokenizer = "builtin:all-MiniLM-L6-v2"
"#;
    match Config::from_toml(text) {
        Err(tensorwire::config::ConfigError::Invalid { key, msg }) => {
            assert_eq!(key, "upstreams.model.url");
            assert!(msg.contains("require_at_start"), "{msg}");
        }
        other => panic!("{other:?}"),
    }
    // Without it, the same config loads (the name is looked up later).
    assert!(Config::from_toml(&text.replace("require_at_start = true", "")).is_ok());
}
