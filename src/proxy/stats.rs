//! Counters of the proxy core. Plain integers: one core instance runs on
//! one thread; ingresses report their own counters next to these.

use crate::wire::ErrorCode;
use std::fmt;

#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    pub datagrams_in: u64,
    pub bytes_in: u64,
    /// Wrong magic (not TWP traffic): dropped silently.
    pub dropped_not_twp: u64,
    /// Too short to carry a request_id: dropped.
    pub dropped_truncated: u64,
    /// RESPONSE/ERROR kinds sent to the proxy: dropped (no reply loops).
    pub dropped_reply_kind: u64,
    /// Fragments of already-answered requests: ignored.
    pub late_fragments: u64,
    /// Fragments whose seq was already received: ignored.
    pub duplicate_fragments: u64,
    pub fragments_accepted: u64,
    pub requests_started: u64,
    pub requests_completed: u64,
    pub describe_requests: u64,
    pub responses_sent: u64,
    pub response_datagrams: u64,
    pub errors_sent: u64,
    /// ERRORs by code (index = code - 1).
    pub errors_by_code: [u64; 10],
    /// Answered keys forgotten early because the table was full.
    pub answered_keys_evicted: u64,
    /// Requests in flight and their bytes, sampled.
    pub requests_in_flight: u64,
    pub bytes_in_flight: u64,
    /// Memory held by requests in flight (tensors, row windows, text).
    pub state_bytes: u64,
    /// Resize coefficient tables built (cache misses).
    pub resize_plans_built: u64,
    /// Requests handed to a model server.
    pub upstream_calls: u64,
    /// Requests waiting for a model server's answer now.
    pub upstream_calls_waiting: u64,
    /// Answers for calls the core no longer waited for (timed out or
    /// shut down first).
    pub upstream_late_answers: u64,
    /// Answers for calls the core never made (must stay 0).
    pub upstream_unknown_completions: u64,
    /// Per model server: calls, connections, failures by kind, breaker.
    pub upstreams: Vec<crate::upstream::UpstreamStats>,
}

impl Stats {
    pub fn error(&mut self, code: ErrorCode) {
        self.errors_sent += 1;
        self.errors_by_code[code.index()] += 1;
    }

    pub fn errors(&self, code: ErrorCode) -> u64 {
        self.errors_by_code[code.index()]
    }
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "in={} dgrams ({} B) responses={} errors={} in_flight={} ({} B) dup={} late={} not_twp={}",
            self.datagrams_in,
            self.bytes_in,
            self.responses_sent,
            self.errors_sent,
            self.requests_in_flight,
            self.bytes_in_flight,
            self.duplicate_fragments,
            self.late_fragments,
            self.dropped_not_twp
        )?;
        for c in ErrorCode::ALL {
            let n = self.errors(c);
            if n > 0 {
                write!(f, " {}={}", c.name(), n)?;
            }
        }
        for u in &self.upstreams {
            write!(
                f,
                " | {}: calls={} in_flight={} ok={} unavailable={} timed_out={} http_errors={} conns={} breaker={}",
                u.name,
                u.pool.calls,
                u.pool.calls_in_flight,
                u.pool.calls_ok,
                u.pool.calls_unavailable + u.breaker_rejects,
                u.pool.calls_timed_out.max(u.timeouts),
                u.http_errors,
                u.pool.connections_open,
                u.breaker
            )?;
        }
        Ok(())
    }
}
