//! Counters of the proxy core. Plain integers: one core instance runs on
//! one thread; ingresses report their own counters next to these.

use crate::wire::ErrorCode;
use hdrhistogram::Histogram;
use std::fmt;
use std::time::Duration;

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
    pub errors_by_code: [u64; ErrorCode::ALL.len()],
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
    /// New requests refused (OVERLOADED) while draining at shutdown.
    pub refused_draining: u64,
    /// Answers for calls the core never made (must stay 0).
    pub upstream_unknown_completions: u64,
    /// Source not in `[security] allowlist`: dropped.
    pub dropped_allowlist: u64,
    /// HELLOs received (address validation).
    pub hellos: u64,
    /// TOKENs sent (validated 0 or 1).
    pub tokens_sent: u64,
    /// Addresses validated by a HELLO with a good token.
    pub validations: u64,
    /// HELLOs whose token was bad, expired or for another address.
    pub validation_failures: u64,
    /// HELLOs with a good token but without the pre-shared key's proof.
    pub psk_failures: u64,
    /// RETRY errors sent (answer above an unvalidated address's budget).
    pub retries_sent: u64,
    /// Bytes of answers not sent because of the budget.
    pub budget_bytes_refused: u64,
    /// Replies dropped because not even a RETRY fitted the budget.
    pub budget_drops: u64,
    /// Validated addresses now, and forgotten early (table full).
    pub validated_addresses: u64,
    pub validated_evictions: u64,
    /// Unvalidated addresses' budgets forgotten early (table full).
    pub budget_evictions: u64,
    /// Per model server: calls, connections, failures by kind, breaker.
    pub upstreams: Vec<crate::upstream::UpstreamStats>,
    /// Per configured pipeline (in configuration order): requests and
    /// how they ended. ERRORs for no known pipeline (unknown id, or
    /// INCOMPLETE, whose pipeline is not kept) count only above.
    pub pipelines: Vec<PipelineStats>,
}

/// Requests of one pipeline and how they ended.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PipelineStats {
    pub id: u16,
    pub name: String,
    pub requests_started: u64,
    /// Requests answered with a RESPONSE.
    pub responses: u64,
    /// Requests answered with an ERROR, by code (index = code - 1).
    pub errors_by_code: [u64; ErrorCode::ALL.len()],
}

/// Latency histograms of one pipeline, in microseconds. Recorded by the
/// core with the instants it is given (never a clock of its own).
#[derive(Debug, Clone)]
pub struct PipelineLatency {
    /// First fragment to last fragment (reassembly: the client's sending).
    pub fragments: Histogram<u64>,
    /// Last fragment to tensor ready: the transform work left once the
    /// last datagram is in (what streaming saves).
    pub tensor_ready: Histogram<u64>,
    /// Hand-over to a model server to its answer (kserve/openai only).
    pub upstream: Histogram<u64>,
    /// First fragment to the RESPONSE.
    pub total: Histogram<u64>,
}

/// Largest latency recorded exactly (larger values are clamped): 60 s.
pub const LATENCY_MAX_US: u64 = 60_000_000;

fn histogram() -> Histogram<u64> {
    // Two significant digits: ~1% resolution, small enough to copy once
    // a second to the admin board.
    Histogram::new_with_bounds(1, LATENCY_MAX_US, 2).expect("valid bounds")
}

impl Default for PipelineLatency {
    fn default() -> Self {
        PipelineLatency {
            fragments: histogram(),
            tensor_ready: histogram(),
            upstream: histogram(),
            total: histogram(),
        }
    }
}

/// Records `d` (clamped to 1 us ..= 60 s) in `h`.
pub fn record(h: &mut Histogram<u64>, d: Duration) {
    let us = (d.as_micros() as u64).clamp(1, LATENCY_MAX_US);
    h.saturating_record(us);
}

impl PipelineLatency {
    /// Adds `other`'s samples (merging workers' histograms on scrape).
    pub fn merge(&mut self, other: &PipelineLatency) {
        // Same bounds on both sides: adding cannot fail.
        let _ = self.fragments.add(&other.fragments);
        let _ = self.tensor_ready.add(&other.tensor_ready);
        let _ = self.upstream.add(&other.upstream);
        let _ = self.total.add(&other.total);
    }
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
            "in={} dgrams ({} B) responses={} errors={} in_flight={} ({} B) dup={} late={} not_twp={} validated={} retries={} allowlist_drops={}",
            self.datagrams_in,
            self.bytes_in,
            self.responses_sent,
            self.errors_sent,
            self.requests_in_flight,
            self.bytes_in_flight,
            self.duplicate_fragments,
            self.late_fragments,
            self.dropped_not_twp,
            self.validated_addresses,
            self.retries_sent,
            self.dropped_allowlist
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
