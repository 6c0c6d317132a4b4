//! A keep-alive HTTP/1.1 connection pool to one model server on mio: one
//! request per connection at a time (no pipelining), non-blocking
//! connects, deadlines the owner checks with [`Pool::on_timer`]; nothing
//! here blocks or sleeps. The bytes are the codec's
//! ([`crate::upstream::codec`]).

use crate::upstream::breaker::Backoff;
use crate::upstream::codec::{
    HttpError, HttpResponse, ResponseParser, MAX_HEAD, MAX_RESPONSE_BODY,
};
use crate::upstream::{CallError, CallId, CallResult, PoolStats};
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Pool settings.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    pub addr: SocketAddr,
    pub connections: usize,
    pub max_pending: usize,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
}

#[derive(Debug)]
struct Call {
    id: CallId,
    request: Vec<u8>,
    deadline: Instant,
    /// Already resent once after a stale keep-alive connection.
    retried: bool,
}

#[derive(Debug, PartialEq, Eq)]
enum ConnState {
    Connecting { deadline: Instant },
    Idle,
    Busy,
}

#[derive(Debug)]
struct Conn {
    stream: TcpStream,
    state: ConnState,
    call: Option<Call>,
    written: usize,
    inbuf: Vec<u8>,
    parser: ResponseParser,
    /// Has carried a request before (a failure before any answer byte may
    /// be a keep-alive close race: retry once).
    reused: bool,
}

/// Why a call was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubmitError {
    /// The queue is full.
    Overloaded,
    /// No connection and the reconnect backoff is running.
    Unavailable(HttpError),
}

/// A keep-alive connection pool to one server.
#[derive(Debug)]
pub struct Pool {
    cfg: PoolConfig,
    /// Token base: connection slot `i` is `Token(base + i)`.
    token_base: usize,
    conns: Vec<Option<Conn>>,
    queue: VecDeque<Call>,
    backoff: Backoff,
    /// Set once a connection has failed or been lost: the next connect is
    /// a reconnect.
    lost: bool,
    done: Vec<(CallId, CallResult)>,
    pub stats: PoolStats,
}

impl Pool {
    pub fn new(cfg: PoolConfig, token_base: usize) -> Pool {
        Pool {
            conns: (0..cfg.connections).map(|_| None).collect(),
            backoff: Backoff::new(cfg.backoff_initial, cfg.backoff_max),
            cfg,
            token_base,
            queue: VecDeque::new(),
            lost: false,
            done: Vec::new(),
            stats: PoolStats::default(),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.cfg.addr
    }

    /// Whether `token` belongs to this pool.
    pub fn owns(&self, token: Token) -> bool {
        (self.token_base..self.token_base + self.conns.len()).contains(&token.0)
    }

    fn alive(&self) -> usize {
        self.conns.iter().filter(|c| c.is_some()).count()
    }

    /// Queues a serialized request; it goes out as soon as a connection is
    /// free. The answer comes from [`Pool::take_done`].
    pub fn submit(
        &mut self,
        id: CallId,
        request: Vec<u8>,
        now: Instant,
        registry: &Registry,
    ) -> Result<(), SubmitError> {
        if self.queue.len() >= self.cfg.max_pending {
            self.stats.calls_overloaded += 1;
            return Err(SubmitError::Overloaded);
        }
        if self.alive() == 0 {
            if let Some(t) = self.backoff.waiting_until(now) {
                self.stats.calls += 1;
                self.stats.calls_unavailable += 1;
                let ms = t.saturating_duration_since(now).as_millis() as u64;
                return Err(SubmitError::Unavailable(HttpError::Backoff(
                    self.cfg.addr,
                    ms,
                )));
            }
        }
        self.stats.calls += 1;
        self.stats.calls_in_flight += 1;
        self.queue.push_back(Call {
            id,
            request,
            deadline: now + self.cfg.request_timeout,
            retried: false,
        });
        self.dispatch(now, registry);
        Ok(())
    }

    pub fn has_done(&self) -> bool {
        !self.done.is_empty()
    }

    /// Completed calls since the last take.
    pub fn take_done(&mut self, into: &mut Vec<(CallId, CallResult)>) {
        into.append(&mut self.done);
    }

    fn complete(&mut self, id: CallId, r: Result<HttpResponse, HttpError>) {
        self.stats.calls_in_flight -= 1;
        match &r {
            Ok(_) => self.stats.calls_ok += 1,
            Err(HttpError::Timeout(..)) => self.stats.calls_timed_out += 1,
            Err(HttpError::Malformed(..)) => self.stats.calls_malformed += 1,
            Err(_) => self.stats.calls_unavailable += 1,
        }
        self.done.push((id, r.map_err(CallError::Failed)));
    }

    /// Hands queued calls to idle connections, opening connections as
    /// needed (within `connections` and the backoff).
    fn dispatch(&mut self, now: Instant, registry: &Registry) {
        while let Some(front) = self.queue.front() {
            // A call resent after a stale kept-alive connection goes on a
            // fresh connection: the other idle ones may be just as stale.
            let fresh_only = front.retried;
            let usable = |c: &Option<Conn>| {
                c.as_ref()
                    .is_some_and(|c| c.state == ConnState::Idle && !(fresh_only && c.reused))
            };
            if let Some(i) = self.conns.iter().position(usable) {
                let call = self.queue.pop_front().expect("non-empty");
                let conn = self.conns[i].as_mut().expect("idle");
                conn.state = ConnState::Busy;
                conn.call = Some(call);
                conn.written = 0;
                conn.inbuf.clear();
                conn.parser.reset();
                self.pump(i, false, now, registry);
                continue;
            }
            let connecting = self
                .conns
                .iter()
                .flatten()
                .filter(|c| matches!(c.state, ConnState::Connecting { .. }))
                .count();
            // One connection being opened per queued call at most.
            if connecting >= self.queue.len() {
                return;
            }
            if !self.backoff.ready(now) {
                return;
            }
            let slot = match self.conns.iter().position(Option::is_none) {
                Some(slot) => slot,
                None if fresh_only => {
                    // Make room: retire an idle kept-alive connection.
                    let idle =
                        |c: &Option<Conn>| c.as_ref().is_some_and(|c| c.state == ConnState::Idle);
                    let Some(i) = self.conns.iter().position(idle) else {
                        return;
                    };
                    self.close(i, registry);
                    i
                }
                None => return,
            };
            if !self.open(slot, now, registry) {
                // Failed at once: `open` failed the queue if nothing is left.
                continue;
            }
        }
    }

    /// Starts a non-blocking connect in `slot`. False if it failed at once.
    fn open(&mut self, slot: usize, now: Instant, registry: &Registry) -> bool {
        let r = TcpStream::connect(self.cfg.addr).and_then(|mut s| {
            registry.register(
                &mut s,
                Token(self.token_base + slot),
                Interest::READABLE | Interest::WRITABLE,
            )?;
            Ok(s)
        });
        match r {
            Ok(stream) => {
                self.stats.connections_open += 1;
                self.conns[slot] = Some(Conn {
                    stream,
                    state: ConnState::Connecting {
                        deadline: now + self.cfg.connect_timeout,
                    },
                    call: None,
                    written: 0,
                    inbuf: Vec::new(),
                    parser: ResponseParser::default(),
                    reused: false,
                });
                true
            }
            Err(e) => {
                self.connect_failed(HttpError::Connect(self.cfg.addr, e.to_string()), now);
                false
            }
        }
    }

    /// A connect failed: back off; with no connection left, every queued
    /// call fails now (the client hears UNAVAILABLE at once, not after
    /// its timeout).
    fn connect_failed(&mut self, e: HttpError, now: Instant) {
        self.stats.connect_failures += 1;
        self.lost = true;
        self.backoff.failed(now);
        if self.alive() == 0 {
            for call in std::mem::take(&mut self.queue) {
                self.complete(call.id, Err(e.clone()));
            }
        }
    }

    fn close(&mut self, slot: usize, registry: &Registry) -> Option<Conn> {
        let mut c = self.conns[slot].take()?;
        let _ = registry.deregister(&mut c.stream);
        self.stats.connections_open -= 1;
        Some(c)
    }

    /// A readiness event for connection `token`.
    pub fn on_event(&mut self, token: Token, now: Instant, registry: &Registry) {
        let slot = token.0 - self.token_base;
        let Some(conn) = self.conns[slot].as_mut() else {
            return;
        };
        if let ConnState::Connecting { .. } = conn.state {
            match conn.stream.take_error() {
                Ok(None) => {}
                Ok(Some(e)) | Err(e) => {
                    self.close(slot, registry);
                    self.connect_failed(HttpError::Connect(self.cfg.addr, e.to_string()), now);
                    self.dispatch(now, registry);
                    return;
                }
            }
            match conn.stream.peer_addr() {
                Ok(_) => {
                    let _ = conn.stream.set_nodelay(true);
                    conn.state = ConnState::Idle;
                    self.stats.connects += 1;
                    if self.lost {
                        self.stats.reconnects += 1;
                        self.lost = false;
                    }
                    self.backoff.succeeded();
                }
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                Err(e) => {
                    self.close(slot, registry);
                    self.connect_failed(HttpError::Connect(self.cfg.addr, e.to_string()), now);
                    self.dispatch(now, registry);
                    return;
                }
            }
        }
        self.pump(slot, true, now, registry);
        self.dispatch(now, registry);
    }

    /// Writes what is left of the request and reads what has arrived.
    fn pump(&mut self, slot: usize, readable: bool, now: Instant, registry: &Registry) {
        let addr = self.cfg.addr;
        let conn = self.conns[slot].as_mut().expect("pumped a live slot");
        let mut failure: Option<String> = None;
        let mut eof = false;
        if let Some(call) = &conn.call {
            while conn.written < call.request.len() {
                match conn.stream.write(&call.request[conn.written..]) {
                    Ok(0) => {
                        failure = Some("write returned 0".into());
                        break;
                    }
                    Ok(n) => conn.written += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        failure = Some(e.to_string());
                        break;
                    }
                }
            }
        }
        if failure.is_none() && (readable || conn.call.is_some()) {
            let mut chunk = [0u8; 65536];
            loop {
                match conn.stream.read(&mut chunk) {
                    Ok(0) => {
                        eof = true;
                        break;
                    }
                    Ok(n) => {
                        if conn.call.is_none() {
                            // Bytes nobody asked for: the connection is unusable.
                            failure = Some("unsolicited bytes on an idle connection".into());
                            break;
                        }
                        conn.inbuf.extend_from_slice(&chunk[..n]);
                        if conn.inbuf.len() > MAX_RESPONSE_BODY + MAX_HEAD {
                            failure = Some("response too large".into());
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        failure = Some(e.to_string());
                        break;
                    }
                }
            }
        }
        if conn.call.is_none() {
            // Idle: a close or junk just retires the connection.
            if eof || failure.is_some() {
                self.close(slot, registry);
            }
            return;
        }
        if let Some(msg) = failure {
            return self.lose(slot, HttpError::Io(addr, msg), now, registry);
        }
        let parsed = conn.parser.parse(&conn.inbuf, eof);
        match parsed {
            Ok(None) => {}
            Ok(Some(resp)) => {
                let call = conn.call.take().expect("busy");
                conn.reused = true;
                conn.state = ConnState::Idle;
                conn.inbuf.clear();
                conn.parser.reset();
                if !resp.keep_alive || eof {
                    self.close(slot, registry);
                }
                self.complete(call.id, Ok(resp));
            }
            Err(msg) => {
                let nothing_read = conn.inbuf.is_empty();
                let err = if nothing_read {
                    HttpError::Io(addr, msg)
                } else {
                    HttpError::Malformed(addr, msg)
                };
                self.lose(slot, err, now, registry);
            }
        }
    }

    /// The connection in `slot` failed with a call on it: retry once if
    /// it was a kept-alive connection that had sent nothing back (the
    /// server may have closed it just before our request), else fail.
    fn lose(&mut self, slot: usize, err: HttpError, now: Instant, registry: &Registry) {
        let Some(mut conn) = self.close(slot, registry) else {
            return;
        };
        self.lost = true;
        let Some(mut call) = conn.call.take() else {
            return;
        };
        if conn.reused && conn.inbuf.is_empty() && !call.retried && err.is_unavailable() {
            call.retried = true;
            self.stats.stale_retries += 1;
            self.queue.push_front(call);
            self.dispatch(now, registry);
            return;
        }
        self.complete(call.id, Err(err));
    }

    /// Fails calls and connects whose deadlines have passed.
    pub fn on_timer(&mut self, now: Instant, registry: &Registry) {
        let addr = self.cfg.addr;
        for slot in 0..self.conns.len() {
            let Some(c) = &self.conns[slot] else { continue };
            match c.state {
                ConnState::Connecting { deadline } if deadline <= now => {
                    let ms = self.cfg.connect_timeout.as_millis() as u64;
                    self.close(slot, registry);
                    self.connect_failed(
                        HttpError::Connect(addr, format!("no connection within {ms} ms")),
                        now,
                    );
                }
                ConnState::Busy if c.call.as_ref().is_some_and(|k| k.deadline <= now) => {
                    let ms = self.cfg.request_timeout.as_millis() as u64;
                    let mut c = self.close(slot, registry).expect("live");
                    self.lost = true;
                    let call = c.call.take().expect("busy");
                    self.complete(call.id, Err(HttpError::Timeout(addr, ms)));
                }
                _ => {}
            }
        }
        while self.queue.front().is_some_and(|c| c.deadline <= now) {
            let call = self.queue.pop_front().expect("non-empty");
            let ms = self.cfg.request_timeout.as_millis() as u64;
            self.complete(call.id, Err(HttpError::Timeout(addr, ms)));
        }
        self.dispatch(now, registry);
    }

    /// The earliest deadline of this pool.
    pub fn next_deadline(&self) -> Option<Instant> {
        let mut d: Option<Instant> = None;
        let mut at = |t: Instant| d = Some(d.map_or(t, |x| x.min(t)));
        for c in self.conns.iter().flatten() {
            match (&c.state, &c.call) {
                (ConnState::Connecting { deadline }, _) => at(*deadline),
                (_, Some(call)) => at(call.deadline),
                _ => {}
            }
        }
        if let Some(c) = self.queue.front() {
            at(c.deadline);
            if let Some(t) = self.backoff.waiting_until(Instant::now()) {
                at(t);
            }
        }
        d
    }

    /// Closes every connection and fails every call (shutdown).
    pub fn shutdown(&mut self, registry: &Registry) {
        let addr = self.cfg.addr;
        for slot in 0..self.conns.len() {
            if let Some(mut c) = self.close(slot, registry) {
                if let Some(call) = c.call.take() {
                    self.complete(call.id, Err(HttpError::Io(addr, "shutting down".into())));
                }
            }
        }
        for call in std::mem::take(&mut self.queue) {
            self.complete(call.id, Err(HttpError::Io(addr, "shutting down".into())));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    /// A server answering one request per connection, then closing it
    /// without saying so (`Connection: close` absent): the keep-alive
    /// race.
    fn one_answer_per_connection() -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let a = accepted.clone();
        std::thread::spawn(move || {
            for c in l.incoming() {
                let Ok(mut c) = c else { return };
                a.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let mut buf = [0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match c.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
                // Close a moment later, as an idle timeout would.
                std::thread::sleep(Duration::from_millis(30));
            }
        });
        (addr, accepted)
    }

    fn pool(addr: SocketAddr, connections: usize, max_pending: usize) -> Pool {
        Pool::new(
            PoolConfig {
                addr,
                connections,
                max_pending,
                connect_timeout: Duration::from_secs(2),
                request_timeout: Duration::from_secs(5),
                backoff_initial: Duration::from_millis(10),
                backoff_max: Duration::from_millis(10),
            },
            0,
        )
    }

    /// Drives `pool` until `n` calls are done.
    fn run_until(pool: &mut Pool, poll: &mut mio::Poll, n: usize) -> Vec<(CallId, CallResult)> {
        let mut events = mio::Events::with_capacity(16);
        let mut done = Vec::new();
        let t0 = Instant::now();
        while done.len() < n {
            assert!(
                t0.elapsed() < Duration::from_secs(5),
                "stuck: {:?}",
                pool.stats
            );
            poll.poll(&mut events, Some(Duration::from_millis(20)))
                .unwrap();
            for e in events.iter() {
                pool.on_event(e.token(), Instant::now(), poll.registry());
            }
            pool.on_timer(Instant::now(), poll.registry());
            pool.take_done(&mut done);
        }
        done
    }

    #[test]
    fn stale_kept_alive_connection_is_retried_once() {
        let (addr, accepted) = one_answer_per_connection();
        let mut poll = mio::Poll::new().unwrap();
        let mut p = pool(addr, 1, 4);
        let req = crate::upstream::codec::encode_request("GET", "x", "/", &[], "", &[]);
        p.submit(1, req.clone(), Instant::now(), poll.registry())
            .unwrap();
        let d = run_until(&mut p, &mut poll, 1);
        assert_eq!(d[0].1.as_ref().unwrap().body, b"ok");
        // The server has closed; the pool has not looked yet (no events
        // driven): the next call goes out on the dead connection.
        std::thread::sleep(Duration::from_millis(100));
        p.submit(2, req, Instant::now(), poll.registry()).unwrap();
        let d = run_until(&mut p, &mut poll, 1);
        assert_eq!(d[0].1.as_ref().unwrap().body, b"ok");
        assert_eq!(p.stats.stale_retries, 1, "{:?}", p.stats);
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 2);
        assert_eq!((p.stats.calls_ok, p.stats.calls_in_flight), (2, 0));
    }

    #[test]
    fn connections_and_queue_are_bounded() {
        let (addr, _) = one_answer_per_connection();
        let mut poll = mio::Poll::new().unwrap();
        let mut p = pool(addr, 2, 3);
        let req = crate::upstream::codec::encode_request("GET", "x", "/", &[], "", &[]);
        let now = Instant::now();
        // Two connections being opened, three calls queued: the fourth
        // is refused.
        for id in 0..3 {
            p.submit(id, req.clone(), now, poll.registry()).unwrap();
        }
        assert_eq!(
            p.submit(3, req.clone(), now, poll.registry()),
            Err(SubmitError::Overloaded)
        );
        assert_eq!(p.stats.connections_open, 2);
        let d = run_until(&mut p, &mut poll, 3);
        assert!(d.iter().all(|(_, r)| r.is_ok()), "{d:?}");
        assert_eq!(p.stats.calls_overloaded, 1);
        assert_eq!(p.stats.calls_in_flight, 0);
        p.shutdown(poll.registry());
        assert_eq!(p.stats.connections_open, 0);
    }
}
