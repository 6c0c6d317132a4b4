//! A keep-alive HTTP/1.1 connection pool to one model server on mio: one
//! request per connection at a time (no pipelining), non-blocking
//! connects, deadlines the owner checks with [`Pool::on_timer`]; nothing
//! here blocks or sleeps. The bytes are the codec's
//! ([`crate::upstream::codec`]).

use crate::upstream::breaker::Backoff;
use crate::upstream::codec::{HttpError, HttpResponse, ResponseParser};
use crate::upstream::{CallError, CallId, CallResult, PoolStats};
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// Where a server is: a name looked up (blocking: it runs in a helper
/// thread, never on the event loop) at start and again when reconnecting
/// after every address failed, so a server behind a Kubernetes Service or
/// headless DNS may move.
#[derive(Clone)]
pub struct Resolver {
    /// `host:port`, for messages.
    pub name: String,
    lookup: Arc<dyn Fn() -> Result<Vec<SocketAddr>, String> + Send + Sync>,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Resolver").field(&self.name).finish()
    }
}

impl Resolver {
    /// DNS (or an address literal) for `host` and `port`.
    pub fn dns(host: &str, port: u16) -> Resolver {
        let h = host.to_string();
        Resolver::new(&format!("{host}:{port}"), move || {
            super::blocking::resolve_host(&h, port)
        })
    }

    /// Any lookup (tests: a name that moves).
    pub fn new(
        name: &str,
        lookup: impl Fn() -> Result<Vec<SocketAddr>, String> + Send + Sync + 'static,
    ) -> Resolver {
        Resolver {
            name: name.to_string(),
            lookup: Arc::new(lookup),
        }
    }

    /// Fixed addresses (no lookup).
    pub fn fixed(addrs: Vec<SocketAddr>) -> Resolver {
        let name = addrs.first().map_or_else(String::new, ToString::to_string);
        Resolver::new(&name, move || Ok(addrs.clone()))
    }

    /// Looks the name up now (blocking).
    pub fn resolve(&self) -> Result<Vec<SocketAddr>, String> {
        (self.lookup)()
    }
}

/// A lookup running in a helper thread.
#[derive(Debug)]
struct Resolving {
    rx: mpsc::Receiver<Result<Vec<SocketAddr>, String>>,
    /// Given up on (as a failure) if no answer by then.
    deadline: Instant,
}

/// Pool settings.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// The server's name and how to look it up again.
    pub resolver: Resolver,
    /// Its addresses at start (empty: not resolved yet, looked up before
    /// the first connect).
    pub addrs: Vec<SocketAddr>,
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
    /// The answer so far: the parser is fed each read and holds what it
    /// needs (bounded: `codec::MAX_HEAD`, `codec::MAX_RESPONSE_BODY`).
    parser: ResponseParser,
    /// Has carried a request before (a failure before any answer byte may
    /// be a keep-alive close race: retry once).
    reused: bool,
    /// Reading stopped at the budget with bytes maybe left in the socket
    /// (no new edge will say so): read again at the next timer.
    more: bool,
}

/// Bytes read from one connection per readiness event or timer, at most:
/// a server streaming without end cannot keep the event loop (and the
/// ingress it shares) busy for more than this many bytes at a time.
const READ_BUDGET: usize = 1 << 20;

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
    /// The server's addresses (tried in turn) and the next one to try.
    addrs: Vec<SocketAddr>,
    next_addr: usize,
    /// Connects failed since the last success or lookup: after one per
    /// address, the pool backs off and looks the name up again.
    round_failures: usize,
    /// The addresses are to be looked up again before the next connect.
    stale_addrs: bool,
    resolving: Option<Resolving>,
    /// Wakes the event loop when a lookup ends (None: found at the next
    /// timer or event).
    waker: Option<Arc<mio::Waker>>,
    /// Since when connections have unread bytes past their read budget.
    more_since: Option<Instant>,
    done: Vec<(CallId, CallResult)>,
    pub stats: PoolStats,
}

impl Pool {
    pub fn new(cfg: PoolConfig, token_base: usize) -> Pool {
        let stats = PoolStats {
            addresses: cfg.addrs.len() as u64,
            ..PoolStats::default()
        };
        Pool {
            addrs: cfg.addrs.clone(),
            next_addr: 0,
            round_failures: 0,
            stale_addrs: false,
            resolving: None,
            waker: None,
            more_since: None,
            conns: (0..cfg.connections).map(|_| None).collect(),
            backoff: Backoff::new(cfg.backoff_initial, cfg.backoff_max),
            cfg,
            token_base,
            queue: VecDeque::new(),
            lost: false,
            done: Vec::new(),
            stats,
        }
    }

    /// The event loop to wake when a lookup ends.
    pub fn set_waker(&mut self, waker: Arc<mio::Waker>) {
        self.waker = Some(waker);
    }

    /// The address the next connect goes to (0.0.0.0 while the name is
    /// unresolved, in messages only).
    pub fn addr(&self) -> SocketAddr {
        match self.addrs.len() {
            0 => SocketAddr::from(([0, 0, 0, 0], 0)),
            n => self.addrs[self.next_addr % n],
        }
    }

    /// The addresses known now.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
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
                    self.addr(),
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
            if self.addrs.is_empty() || self.stale_addrs {
                // Connects wait for the lookup (its end dispatches).
                self.start_lookup(now);
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
        let addr = self.addr();
        let r = TcpStream::connect(addr).and_then(|mut s| {
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
                    parser: ResponseParser::default(),
                    reused: false,
                    more: false,
                });
                true
            }
            Err(e) => {
                self.connect_failed(HttpError::Connect(addr, e.to_string()), now);
                false
            }
        }
    }

    /// A connect failed. While addresses of this round are untried, the
    /// next connect goes to the next one at once; when all have failed,
    /// back off, look the name up again before the next connect, and with
    /// no connection left fail every queued call now (the client hears
    /// UNAVAILABLE at once, not after its timeout).
    fn connect_failed(&mut self, e: HttpError, now: Instant) {
        self.stats.connect_failures += 1;
        self.lost = true;
        self.next_addr = self.next_addr.wrapping_add(1);
        self.round_failures += 1;
        if self.round_failures < self.addrs.len() {
            return;
        }
        self.round_failures = 0;
        self.stale_addrs = true;
        self.backoff.failed(now);
        self.fail_queue(e);
    }

    fn fail_queue(&mut self, e: HttpError) {
        if self.alive() == 0 {
            for call in std::mem::take(&mut self.queue) {
                self.complete(call.id, Err(e.clone()));
            }
        }
    }

    /// Starts looking the name up in a helper thread (DNS blocks), unless
    /// a lookup is running.
    fn start_lookup(&mut self, now: Instant) {
        if self.resolving.is_some() {
            return;
        }
        let (tx, rx) = mpsc::channel();
        let resolver = self.cfg.resolver.clone();
        let waker = self.waker.clone();
        let spawned = std::thread::Builder::new()
            .name("tensorwire-dns".into())
            .spawn(move || {
                let _ = tx.send(resolver.resolve());
                if let Some(w) = waker {
                    let _ = w.wake();
                }
            });
        match spawned {
            Ok(_) => {
                self.resolving = Some(Resolving {
                    rx,
                    deadline: now + self.cfg.connect_timeout,
                })
            }
            Err(e) => self.lookup_done(Err(format!("no lookup thread: {e}")), now),
        }
    }

    /// Takes the answer of a running lookup, if it has come (or its time
    /// is up), and goes on dispatching.
    pub fn poll_lookup(&mut self, now: Instant, registry: &Registry) {
        let Some(r) = &self.resolving else { return };
        let answer = match r.rx.try_recv() {
            Ok(a) => a,
            Err(mpsc::TryRecvError::Empty) if r.deadline > now => return,
            Err(mpsc::TryRecvError::Empty) => Err(format!(
                "no answer within {} ms",
                self.cfg.connect_timeout.as_millis()
            )),
            Err(mpsc::TryRecvError::Disconnected) => Err("lookup thread ended".into()),
        };
        self.resolving = None;
        self.lookup_done(answer, now);
        self.dispatch(now, registry);
    }

    fn lookup_done(&mut self, answer: Result<Vec<SocketAddr>, String>, now: Instant) {
        match answer {
            Ok(addrs) if !addrs.is_empty() => {
                if addrs != self.addrs {
                    tracing::info!(server = %self.cfg.resolver.name, ?addrs, "model server addresses");
                }
                self.stats.lookups += 1;
                self.stats.addresses = addrs.len() as u64;
                self.addrs = addrs;
                self.next_addr = 0;
                self.round_failures = 0;
                self.stale_addrs = false;
            }
            Ok(_) | Err(_) => {
                let msg = match answer {
                    Err(m) => m,
                    Ok(_) => "no address".into(),
                };
                tracing::warn!(server = %self.cfg.resolver.name, "cannot resolve: {msg}");
                self.stats.lookup_failures += 1;
                if self.addrs.is_empty() {
                    // Nothing to connect to: back off, fail what waits.
                    self.backoff.failed(now);
                    let e = HttpError::Resolve(self.cfg.resolver.name.clone(), msg);
                    self.fail_queue(e);
                } else {
                    // Keep the last known addresses (they may still
                    // work); the next failed round looks up again.
                    self.stale_addrs = false;
                }
            }
        }
    }

    fn close(&mut self, slot: usize, registry: &Registry) -> Option<Conn> {
        let mut c = self.conns[slot].take()?;
        let _ = registry.deregister(&mut c.stream);
        self.stats.connections_open -= 1;
        self.count_buffered();
        Some(c)
    }

    /// Bytes the parsers of this pool hold now (the `response_bytes_buffered`
    /// gauge).
    fn count_buffered(&mut self) {
        self.stats.response_bytes_buffered = self
            .conns
            .iter()
            .flatten()
            .map(|c| c.parser.buffered() as u64)
            .sum();
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
                    self.connect_failed(HttpError::Connect(self.addr(), e.to_string()), now);
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
                    self.round_failures = 0;
                }
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                Err(e) => {
                    self.close(slot, registry);
                    self.connect_failed(HttpError::Connect(self.addr(), e.to_string()), now);
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
        let addr = self.addr();
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
        // The answer, fed to the parser read by read (each byte is parsed
        // once; the parser bounds what it holds).
        let mut parsed: Result<Option<HttpResponse>, String> = Ok(None);
        let mut unsolicited = false;
        if failure.is_none() && (readable || conn.call.is_some()) {
            let mut chunk = [0u8; 65536];
            let mut budget = READ_BUDGET;
            conn.more = false;
            loop {
                match conn.stream.read(&mut chunk) {
                    Ok(0) => {
                        eof = true;
                        if conn.call.is_some() {
                            parsed = conn.parser.feed(&[], true);
                        }
                        break;
                    }
                    Ok(n) => {
                        if conn.call.is_none() {
                            // Bytes nobody asked for: the connection is unusable.
                            failure = Some("unsolicited bytes on an idle connection".into());
                            unsolicited = true;
                            break;
                        }
                        parsed = conn.parser.feed(&chunk[..n], false);
                        let held = conn.parser.buffered() as u64;
                        self.stats.response_bytes_peak = self.stats.response_bytes_peak.max(held);
                        if !matches!(parsed, Ok(None)) {
                            // Answered or refused: anything more in the
                            // socket is for nobody.
                            break;
                        }
                        budget = budget.saturating_sub(n);
                        if budget == 0 {
                            conn.more = true;
                            self.more_since.get_or_insert(now);
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
            // Idle: a close or junk just retires the connection. A server
            // that talks before it is asked is out of step: counted, and
            // reconnecting backs off (no reconnect storm against it).
            if eof || failure.is_some() {
                self.close(slot, registry);
            }
            if unsolicited {
                self.stats.unsolicited_bytes += 1;
                self.lost = true;
                self.backoff.failed(now);
            }
            return;
        }
        if let Some(msg) = failure {
            return self.lose(slot, HttpError::Io(addr, msg), now, registry);
        }
        match parsed {
            Ok(None) => self.count_buffered(),
            Ok(Some(resp)) => {
                let call = conn.call.take().expect("busy");
                conn.reused = true;
                conn.state = ConnState::Idle;
                // An answer that came before the whole request was written
                // leaves the connection out of step. An early error (413,
                // 400) is the server refusing the request; a success
                // cannot be an answer to it.
                let early = conn.written < call.request.len();
                conn.parser.reset();
                if early && (200..300).contains(&resp.status) {
                    conn.call = Some(call);
                    let msg = "a success answer before the request was written".to_string();
                    return self.lose(slot, HttpError::Malformed(addr, msg), now, registry);
                }
                if !resp.keep_alive || eof || early {
                    self.close(slot, registry);
                } else {
                    self.count_buffered();
                }
                self.complete(call.id, Ok(resp));
            }
            Err(msg) => {
                let nothing_read = conn.parser.received() == 0;
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
        if conn.reused && conn.parser.received() == 0 && !call.retried && err.is_unavailable() {
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
        self.poll_lookup(now, registry);
        if self.more_since.take().is_some() {
            for slot in 0..self.conns.len() {
                if self.conns[slot].as_ref().is_some_and(|c| c.more) {
                    self.pump(slot, true, now, registry);
                }
            }
        }
        let addr = self.addr();
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
        if let Some(r) = &self.resolving {
            at(r.deadline);
        }
        if let Some(t) = self.more_since {
            at(t);
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
        let addr = self.addr();
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
                resolver: Resolver::fixed(vec![addr]),
                addrs: vec![addr],
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

    /// A server answering every request on its connection until stopped;
    /// then its port refuses connections.
    fn stoppable_server() -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicBool>) {
        use std::sync::atomic::{AtomicBool, Ordering};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let addr = l.local_addr().unwrap();
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                let Ok((mut c, _)) = l.accept() else {
                    std::thread::sleep(Duration::from_millis(2));
                    continue;
                };
                let s = s.clone();
                std::thread::spawn(move || {
                    c.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
                    let mut buf = [0u8; 4096];
                    let mut got = Vec::new();
                    while !s.load(Ordering::SeqCst) {
                        match c.read(&mut buf) {
                            Ok(0) => return,
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                            Err(_) => continue,
                        }
                        if got.windows(4).any(|w| w == b"\r\n\r\n") {
                            got.clear();
                            let _ = c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
                        }
                    }
                });
            }
        });
        (addr, stop)
    }

    fn pool_with(resolver: Resolver, addrs: Vec<SocketAddr>) -> Pool {
        Pool::new(
            PoolConfig {
                resolver,
                addrs,
                connections: 1,
                max_pending: 4,
                connect_timeout: Duration::from_secs(2),
                request_timeout: Duration::from_secs(5),
                backoff_initial: Duration::from_millis(10),
                backoff_max: Duration::from_millis(10),
            },
            0,
        )
    }

    #[test]
    fn every_address_is_tried() {
        let (live, _stop) = stoppable_server();
        let dead: SocketAddr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let mut poll = mio::Poll::new().unwrap();
        let addrs = vec![dead, live];
        let mut p = pool_with(Resolver::fixed(addrs.clone()), addrs);
        let req = crate::upstream::codec::encode_request("GET", "x", "/", &[], "", &[]);
        p.submit(1, req, Instant::now(), poll.registry()).unwrap();
        let d = run_until(&mut p, &mut poll, 1);
        assert_eq!(d[0].1.as_ref().unwrap().body, b"ok");
        assert_eq!(
            (p.stats.connect_failures, p.stats.calls_ok),
            (1, 1),
            "{:?}",
            p.stats
        );
        // One address failing is not a failed round: no lookup, no backoff.
        assert_eq!(p.stats.lookups, 0);
    }

    #[test]
    fn a_server_that_moves_is_found_again() {
        use std::sync::{Arc, Mutex};
        let (a, stop_a) = stoppable_server();
        let (b, _stop_b) = stoppable_server();
        let dns = Arc::new(Mutex::new(vec![a]));
        let d2 = dns.clone();
        let resolver = Resolver::new("model.svc:8000", move || Ok(d2.lock().unwrap().clone()));
        let mut poll = mio::Poll::new().unwrap();
        let mut p = pool_with(resolver, vec![a]);
        let req = crate::upstream::codec::encode_request("GET", "x", "/", &[], "", &[]);
        p.submit(1, req.clone(), Instant::now(), poll.registry())
            .unwrap();
        assert!(run_until(&mut p, &mut poll, 1)[0].1.is_ok());
        // The server moves: A stops, the name now says B.
        stop_a.store(true, std::sync::atomic::Ordering::SeqCst);
        *dns.lock().unwrap() = vec![b];
        std::thread::sleep(Duration::from_millis(100));
        // Calls fail while A is found gone, then go to B once the
        // backoff fires and the name is looked up again.
        let mut ok = false;
        for id in 2..40 {
            if p.submit(id, req.clone(), Instant::now(), poll.registry())
                .is_err()
            {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
            if run_until(&mut p, &mut poll, 1)[0].1.is_ok() {
                ok = true;
                break;
            }
        }
        assert!(ok, "{:?}", p.stats);
        assert_eq!(p.addrs(), &[b]);
        assert!(p.stats.lookups >= 1, "{:?}", p.stats);
        assert!(p.stats.reconnects >= 1, "{:?}", p.stats);
    }

    #[test]
    fn an_unresolved_name_fails_calls_and_is_looked_up_again() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        let (live, _stop) = stoppable_server();
        let tries = Arc::new(AtomicUsize::new(0));
        let t2 = tries.clone();
        let resolver = Resolver::new("model.svc:8000", move || {
            // Resolves from the third lookup on.
            if t2.fetch_add(1, Ordering::SeqCst) < 2 {
                Err("Name or service not known".into())
            } else {
                Ok(vec![live])
            }
        });
        let mut poll = mio::Poll::new().unwrap();
        let mut p = pool_with(resolver, vec![]);
        assert_eq!(p.stats.addresses, 0);
        let req = crate::upstream::codec::encode_request("GET", "x", "/", &[], "", &[]);
        let mut results = Vec::new();
        for id in 0..40 {
            if p.submit(id, req.clone(), Instant::now(), poll.registry())
                .is_err()
            {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
            let r = run_until(&mut p, &mut poll, 1).remove(0).1;
            let ok = r.is_ok();
            results.push(r);
            if ok {
                break;
            }
        }
        let first = results[0].as_ref().unwrap_err();
        assert!(
            matches!(first, CallError::Failed(HttpError::Resolve(..))),
            "{first:?}"
        );
        assert!(results.last().unwrap().is_ok(), "{results:?}");
        assert_eq!(
            (p.stats.lookup_failures, p.stats.lookups),
            (2, 1),
            "{:?}",
            p.stats
        );
        assert_eq!(p.stats.addresses, 1);
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
