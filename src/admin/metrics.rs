//! `GET /metrics`: the workers' published counters, merged at scrape
//! time, in the OpenMetrics text format (which Prometheus scrapes and
//! `promtool check metrics` reads), encoded with `prometheus-client`.
//!
//! Counters are sums over the workers (one per socket ingress, one per
//! AF_XDP RX queue, which also get a `queue` label where it matters);
//! latency histograms are the workers' hdrhistograms merged and read at
//! fixed bucket bounds.

use super::Scrape;
use crate::proxy::{PipelineLatency, Stats};
use crate::wire::ErrorCode;
use hdrhistogram::Histogram;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;
use std::fmt::Error;

/// The OpenMetrics exposition's content type (for scrapers that ask for
/// it in `Accept`, as Prometheus does).
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The classic Prometheus text format's (curl, `promtool check metrics`).
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The classic Prometheus text format (0.0.4) of an OpenMetrics text:
/// counter families are named with their `_total` suffix in `# HELP`
/// and `# TYPE` (OpenMetrics names the family without it), and `# EOF`
/// goes.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len() + 64 * counters.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        if let Some((prefix, rest)) = meta {
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            if counters.contains(name) {
                out.push_str(&format!("{prefix}{name}_total {tail}\n"));
                continue;
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Upper bounds (seconds) of the latency histograms' buckets.
pub const LATENCY_BUCKETS: [f64; 18] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0, 30.0,
];

type Labels = Vec<(&'static str, String)>;

/// The exposition text of one scrape.
pub fn encode(s: &Scrape) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Snapshot(s.clone())));
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry)
        .expect("writing to a String cannot fail");
    out
}

#[derive(Debug)]
struct Snapshot(Scrape);

fn counters(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: &[(Labels, u64)],
) -> Result<(), Error> {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in samples {
        ConstCounter::new(*v).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

fn counter(enc: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> Result<(), Error> {
    let m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    ConstCounter::new(v).encode(m)
}

fn gauges(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: &[(Labels, f64)],
) -> Result<(), Error> {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, v) in samples {
        ConstGauge::new(*v).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

fn gauge(enc: &mut DescriptorEncoder, name: &str, help: &str, v: f64) -> Result<(), Error> {
    let m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    ConstGauge::new(v).encode(m)
}

fn histograms(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: &[(Labels, &Histogram<u64>)],
) -> Result<(), Error> {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Histogram)?;
    for (labels, h) in samples {
        // Non-cumulative counts per bucket (the encoder accumulates).
        let mut buckets = Vec::with_capacity(LATENCY_BUCKETS.len() + 1);
        let mut below = 0u64;
        for b in LATENCY_BUCKETS {
            let us = (b * 1e6) as u64;
            let upto = if h.is_empty() {
                0
            } else {
                h.count_between(0, us)
            };
            buckets.push((b, upto - below.min(upto)));
            below = upto;
        }
        let count = h.len();
        buckets.push((f64::MAX, count.saturating_sub(below)));
        let sum = h.mean() * count as f64 / 1e6;
        m.encode_family(labels)?
            .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
    }
    Ok(())
}

/// Sums the workers' core counters (per-upstream and per-pipeline lists
/// are matched by name).
fn merged(s: &Scrape) -> (Stats, Vec<(String, PipelineLatency)>) {
    let mut total = Stats::default();
    let mut latency: Vec<(String, PipelineLatency)> = Vec::new();
    for (_, w) in &s.workers {
        let x = &w.stats;
        total.datagrams_in += x.datagrams_in;
        total.bytes_in += x.bytes_in;
        total.dropped_not_twp += x.dropped_not_twp;
        total.dropped_truncated += x.dropped_truncated;
        total.dropped_reply_kind += x.dropped_reply_kind;
        total.late_fragments += x.late_fragments;
        total.duplicate_fragments += x.duplicate_fragments;
        total.fragments_accepted += x.fragments_accepted;
        total.requests_started += x.requests_started;
        total.requests_completed += x.requests_completed;
        total.describe_requests += x.describe_requests;
        total.responses_sent += x.responses_sent;
        total.response_datagrams += x.response_datagrams;
        total.errors_sent += x.errors_sent;
        for (t, v) in total.errors_by_code.iter_mut().zip(x.errors_by_code) {
            *t += v;
        }
        total.answered_keys_evicted += x.answered_keys_evicted;
        total.requests_in_flight += x.requests_in_flight;
        total.bytes_in_flight += x.bytes_in_flight;
        total.state_bytes += x.state_bytes;
        total.resize_plans_built += x.resize_plans_built;
        total.upstream_calls += x.upstream_calls;
        total.upstream_calls_waiting += x.upstream_calls_waiting;
        total.upstream_late_answers += x.upstream_late_answers;
        total.upstream_unknown_completions += x.upstream_unknown_completions;
        total.refused_draining += x.refused_draining;
        total.dropped_allowlist += x.dropped_allowlist;
        total.hellos += x.hellos;
        total.tokens_sent += x.tokens_sent;
        total.validations += x.validations;
        total.validation_failures += x.validation_failures;
        total.psk_failures += x.psk_failures;
        total.retries_sent += x.retries_sent;
        total.budget_bytes_refused += x.budget_bytes_refused;
        total.budget_drops += x.budget_drops;
        total.validated_addresses += x.validated_addresses;
        total.validated_evictions += x.validated_evictions;
        total.budget_evictions += x.budget_evictions;
        for p in &x.pipelines {
            match total.pipelines.iter_mut().find(|t| t.name == p.name) {
                Some(t) => {
                    t.requests_started += p.requests_started;
                    t.responses += p.responses;
                    for (a, b) in t.errors_by_code.iter_mut().zip(p.errors_by_code) {
                        *a += b;
                    }
                }
                None => total.pipelines.push(p.clone()),
            }
        }
        for u in &x.upstreams {
            match total.upstreams.iter_mut().find(|t| t.name == u.name) {
                Some(t) => {
                    t.breaker_opens += u.breaker_opens;
                    t.breaker_rejects += u.breaker_rejects;
                    t.http_errors += u.http_errors;
                    t.bad_answers += u.bad_answers;
                    t.timeouts += u.timeouts;
                    let (a, b) = (&mut t.pool, &u.pool);
                    a.calls += b.calls;
                    a.calls_in_flight += b.calls_in_flight;
                    a.calls_ok += b.calls_ok;
                    a.calls_unavailable += b.calls_unavailable;
                    a.calls_timed_out += b.calls_timed_out;
                    a.calls_malformed += b.calls_malformed;
                    a.calls_overloaded += b.calls_overloaded;
                    a.connections_open += b.connections_open;
                    a.connects += b.connects;
                    a.connect_failures += b.connect_failures;
                    a.reconnects += b.reconnects;
                    a.stale_retries += b.stale_retries;
                    // The worst state is shown: open > half_open > closed.
                    let rank = |s: &str| match s {
                        "open" => 2,
                        "half_open" => 1,
                        _ => 0,
                    };
                    if rank(&u.breaker) > rank(&t.breaker) {
                        t.breaker = u.breaker.clone();
                    }
                }
                None => total.upstreams.push(u.clone()),
            }
        }
        for (p, l) in x.pipelines.iter().zip(&w.latency) {
            match latency.iter_mut().find(|(n, _)| *n == p.name) {
                Some((_, t)) => t.merge(l),
                None => latency.push((p.name.clone(), l.clone())),
            }
        }
    }
    (total, latency)
}

fn l1(k: &'static str, v: impl Into<String>) -> Labels {
    vec![(k, v.into())]
}

impl Collector for Snapshot {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), Error> {
        let s = &self.0;
        let e = &mut enc;
        let (t, latency) = merged(s);
        gauges(
            e,
            "tensorwire_build_info",
            "The running version.",
            &[(l1("version", env!("CARGO_PKG_VERSION")), 1.0)],
        )?;
        let ready = super::Board::readiness_of(s).is_ok();
        gauge(
            e,
            "tensorwire_ready",
            "1 when /readyz answers 200 (ingress bound, upstreams ready).",
            ready as u8 as f64,
        )?;
        let ages: Vec<(Labels, f64)> = s
            .heartbeat_ages
            .iter()
            .map(|(w, a)| (l1("worker", w.clone()), a.as_secs_f64()))
            .collect();
        gauges(
            e,
            "tensorwire_worker_heartbeat_age_seconds",
            "Time since each worker's event loop last reported (healthz fails past 5 s).",
            &ages,
        )?;
        counter(
            e,
            "tensorwire_datagrams",
            "UDP datagrams handed to the proxy core.",
            t.datagrams_in,
        )?;
        counter(
            e,
            "tensorwire_received_bytes",
            "UDP payload bytes handed to the proxy core.",
            t.bytes_in,
        )?;
        counters(
            e,
            "tensorwire_dropped_datagrams",
            "Datagrams dropped without an answer, by reason.",
            &[
                (l1("reason", "not_twp"), t.dropped_not_twp),
                (l1("reason", "truncated"), t.dropped_truncated),
                (l1("reason", "reply_kind"), t.dropped_reply_kind),
            ],
        )?;
        counters(
            e,
            "tensorwire_fragments",
            "Request fragments, by outcome.",
            &[
                (l1("outcome", "accepted"), t.fragments_accepted),
                (l1("outcome", "duplicate"), t.duplicate_fragments),
                (l1("outcome", "late"), t.late_fragments),
            ],
        )?;
        let started: Vec<(Labels, u64)> = t
            .pipelines
            .iter()
            .map(|p| (l1("pipeline", p.name.clone()), p.requests_started))
            .collect();
        counters(
            e,
            "tensorwire_requests_started",
            "Requests started (first fragment accepted), by pipeline.",
            &started,
        )?;
        let mut outcomes: Vec<(Labels, u64)> = Vec::new();
        for p in &t.pipelines {
            outcomes.push((
                vec![("pipeline", p.name.clone()), ("outcome", "response".into())],
                p.responses,
            ));
            for c in ErrorCode::ALL {
                outcomes.push((
                    vec![("pipeline", p.name.clone()), ("outcome", c.name().into())],
                    p.errors_by_code[c.index()],
                ));
            }
        }
        counters(
            e,
            "tensorwire_requests",
            "Requests answered, by pipeline and outcome (response, or the ERROR code).",
            &outcomes,
        )?;
        let errors: Vec<(Labels, u64)> = ErrorCode::ALL
            .into_iter()
            .map(|c| (l1("code", c.name()), t.errors(c)))
            .collect();
        counters(
            e,
            "tensorwire_errors",
            "ERROR datagrams sent, by code (all pipelines, and none: unknown pipeline, INCOMPLETE).",
            &errors,
        )?;
        counter(
            e,
            "tensorwire_responses",
            "RESPONSEs sent (requests and DESCRIBE).",
            t.responses_sent,
        )?;
        counter(
            e,
            "tensorwire_response_datagrams",
            "RESPONSE datagrams sent.",
            t.response_datagrams,
        )?;
        counter(
            e,
            "tensorwire_describe_requests",
            "DESCRIBE requests answered.",
            t.describe_requests,
        )?;
        let expiries = t.errors(ErrorCode::Incomplete);
        let deadlines: u64 = t.upstreams.iter().map(|u| u.timeouts).sum();
        counters(
            e,
            "tensorwire_expiries",
            "Timers that fired: reassembly (INCOMPLETE) and model-server call deadlines.",
            &[
                (l1("timer", "reassembly"), expiries),
                (l1("timer", "upstream_deadline"), deadlines),
            ],
        )?;
        counter(
            e,
            "tensorwire_answered_keys_evicted",
            "Answered request keys forgotten early (table full).",
            t.answered_keys_evicted,
        )?;
        counter(
            e,
            "tensorwire_resize_plans_built",
            "Resize coefficient tables built (cache misses).",
            t.resize_plans_built,
        )?;
        gauge(
            e,
            "tensorwire_requests_in_flight",
            "Requests being reassembled or waiting for a model server.",
            t.requests_in_flight as f64,
        )?;
        gauge(
            e,
            "tensorwire_bytes_in_flight",
            "Payload bytes of the requests in flight.",
            t.bytes_in_flight as f64,
        )?;
        gauge(
            e,
            "tensorwire_state_bytes",
            "Memory held by requests in flight (tensors, row windows, text).",
            t.state_bytes as f64,
        )?;
        gauge(
            e,
            "tensorwire_upstream_calls_waiting",
            "Requests waiting for a model server's answer.",
            t.upstream_calls_waiting as f64,
        )?;
        // Address validation (spec rev 3) and the allowlist.
        counters(
            e,
            "tensorwire_address_validation",
            "Address validation: HELLOs received, TOKENs sent, addresses validated, \
             HELLOs with a bad token or without the pre-shared key's proof, RETRYs sent, \
             replies dropped because not even a RETRY fitted the budget.",
            &[
                (l1("event", "hello"), t.hellos),
                (l1("event", "token_sent"), t.tokens_sent),
                (l1("event", "validated"), t.validations),
                (l1("event", "bad_token"), t.validation_failures),
                (l1("event", "psk_refused"), t.psk_failures),
                (l1("event", "retry_sent"), t.retries_sent),
                (l1("event", "budget_drop"), t.budget_drops),
            ],
        )?;
        counter(
            e,
            "tensorwire_budget_refused_bytes",
            "Answer bytes not sent to unvalidated addresses (3x budget).",
            t.budget_bytes_refused,
        )?;
        gauge(
            e,
            "tensorwire_validated_addresses",
            "Addresses validated now (bounded table).",
            t.validated_addresses as f64,
        )?;
        counters(
            e,
            "tensorwire_address_table_evictions",
            "Entries forgotten early because a bounded table was full.",
            &[
                (l1("table", "validated"), t.validated_evictions),
                (l1("table", "budget"), t.budget_evictions),
            ],
        )?;
        counter(
            e,
            "tensorwire_allowlist_dropped_datagrams",
            "Datagrams from sources outside [security] allowlist, dropped.",
            t.dropped_allowlist,
        )?;
        counter(
            e,
            "tensorwire_refused_draining",
            "New requests refused (OVERLOADED) while draining at shutdown.",
            t.refused_draining,
        )?;

        // Model servers.
        let per_up = |f: &dyn Fn(&crate::upstream::UpstreamStats) -> u64| -> Vec<(Labels, u64)> {
            t.upstreams
                .iter()
                .map(|u| (l1("upstream", u.name.clone()), f(u)))
                .collect()
        };
        let mut calls: Vec<(Labels, u64)> = Vec::new();
        for u in &t.upstreams {
            let p = &u.pool;
            for (outcome, v) in [
                ("ok", p.calls_ok),
                ("unavailable", p.calls_unavailable),
                ("timed_out", p.calls_timed_out),
                ("malformed", p.calls_malformed),
                ("overloaded", p.calls_overloaded),
                ("breaker_open", u.breaker_rejects),
            ] {
                calls.push((
                    vec![("upstream", u.name.clone()), ("outcome", outcome.into())],
                    v,
                ));
            }
        }
        counters(
            e,
            "tensorwire_upstream_calls",
            "Model-server calls by outcome (breaker_open: refused without a call).",
            &calls,
        )?;
        counters(
            e,
            "tensorwire_upstream_http_errors",
            "Model-server answers with an HTTP error status.",
            &per_up(&|u| u.http_errors),
        )?;
        counters(
            e,
            "tensorwire_upstream_bad_answers",
            "2xx model-server answers whose body was unusable.",
            &per_up(&|u| u.bad_answers),
        )?;
        counters(
            e,
            "tensorwire_upstream_connects",
            "TCP connections opened to the model server.",
            &per_up(&|u| u.pool.connects),
        )?;
        counters(
            e,
            "tensorwire_upstream_connect_failures",
            "Failed connection attempts to the model server.",
            &per_up(&|u| u.pool.connect_failures),
        )?;
        counters(
            e,
            "tensorwire_upstream_breaker_opens",
            "Times the circuit breaker opened.",
            &per_up(&|u| u.breaker_opens),
        )?;
        let g = |f: &dyn Fn(&crate::upstream::UpstreamStats) -> u64| -> Vec<(Labels, f64)> {
            per_up(f).into_iter().map(|(l, v)| (l, v as f64)).collect()
        };
        gauges(
            e,
            "tensorwire_upstream_connections",
            "Open TCP connections to the model server.",
            &g(&|u| u.pool.connections_open),
        )?;
        gauges(
            e,
            "tensorwire_upstream_calls_in_flight",
            "Calls queued or on a connection now.",
            &g(&|u| u.pool.calls_in_flight),
        )?;
        let mut states: Vec<(Labels, f64)> = Vec::new();
        for u in &t.upstreams {
            for st in ["closed", "half_open", "open"] {
                states.push((
                    vec![("upstream", u.name.clone()), ("state", st.into())],
                    (u.breaker == st) as u8 as f64,
                ));
            }
        }
        gauges(
            e,
            "tensorwire_upstream_breaker_state",
            "The circuit breaker's state (1 for the current one; the worst over workers).",
            &states,
        )?;
        let ready: Vec<(Labels, f64)> = s
            .upstreams
            .iter()
            .map(|(n, r)| (l1("upstream", n.clone()), r.is_ok() as u8 as f64))
            .collect();
        gauges(
            e,
            "tensorwire_upstream_ready",
            "1 when the model server counts as ready for /readyz.",
            &ready,
        )?;

        // Latency histograms per pipeline.
        for (name, help, pick) in [
            (
                "tensorwire_fragments_duration_seconds",
                "First fragment to last fragment of a request.",
                (|l: &PipelineLatency| &l.fragments) as fn(&PipelineLatency) -> &Histogram<u64>,
            ),
            (
                "tensorwire_tensor_ready_duration_seconds",
                "Last fragment to tensor ready (transform work left after the last datagram).",
                |l| &l.tensor_ready,
            ),
            (
                "tensorwire_upstream_call_duration_seconds",
                "Hand-over to a model server to its answer.",
                |l| &l.upstream,
            ),
            (
                "tensorwire_request_duration_seconds",
                "First fragment to the RESPONSE.",
                |l| &l.total,
            ),
        ] {
            let samples: Vec<(Labels, &Histogram<u64>)> = latency
                .iter()
                .map(|(p, l)| (l1("pipeline", p.clone()), pick(l)))
                .collect();
            histograms(e, name, help, &samples)?;
        }

        // Ingresses: the socket's counters, AF_XDP's per RX queue.
        let mut socket: BTreeMap<&str, u64> = BTreeMap::new();
        let mut xdp: BTreeMap<&str, Vec<(Labels, u64)>> = BTreeMap::new();
        for (_, w) in &s.workers {
            for (k, v) in &w.ingress_counters {
                match w.queue {
                    None => *socket.entry(k).or_default() += v,
                    Some(q) if k != "queue" => xdp
                        .entry(k)
                        .or_default()
                        .push((l1("queue", q.to_string()), *v)),
                    Some(_) => {}
                }
            }
        }
        for (k, v) in socket {
            counter(
                e,
                &format!("tensorwire_socket_{k}"),
                &format!("UDP socket ingress: {}.", k.replace('_', " ")),
                v,
            )?;
        }
        for (k, samples) in xdp {
            counters(
                e,
                &format!("tensorwire_af_xdp_{k}"),
                &format!("AF_XDP ingress, per RX queue: {}.", k.replace('_', " ")),
                &samples,
            )?;
        }
        for (k, v) in &s.xdp_program {
            counter(
                e,
                &format!("tensorwire_xdp_program_{k}"),
                &format!("XDP steering program: {}.", k.replace('_', " ")),
                *v,
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::WorkerReport;

    #[test]
    fn counters_and_histograms_merge() {
        let mut stats = Stats {
            datagrams_in: 5,
            ..Default::default()
        };
        stats.pipelines.push(crate::proxy::PipelineStats {
            id: 1,
            name: "resnet50".into(),
            requests_started: 2,
            responses: 2,
            ..Default::default()
        });
        let mut lat = PipelineLatency::default();
        crate::proxy::record_latency(&mut lat.total, std::time::Duration::from_millis(3));
        let w = WorkerReport {
            stats,
            latency: vec![lat],
            ingress: "af_xdp",
            queue: Some(0),
            ingress_counters: vec![("frames_received".into(), 7), ("queue".into(), 0)],
            describe: serde_json::Value::Null,
        };
        let s = Scrape {
            workers: vec![("queue0".into(), w.clone()), ("queue1".into(), w)],
            xdp_program: vec![("steered".into(), 9)],
            ..Default::default()
        };
        let text = encode(&s);
        assert!(text.contains("tensorwire_datagrams_total 10"), "{text}");
        assert!(
            text.contains(
                "tensorwire_requests_total{pipeline=\"resnet50\",outcome=\"response\"} 4"
            ),
            "{text}"
        );
        assert!(
            text.contains("tensorwire_af_xdp_frames_received_total{queue=\"0\"} 7"),
            "{text}"
        );
        assert!(text.contains("tensorwire_xdp_program_steered_total 9"));
        assert!(
            text.contains(
                "tensorwire_request_duration_seconds_bucket{le=\"0.005\",pipeline=\"resnet50\"} 2"
            ) || text.contains(
                "tensorwire_request_duration_seconds_bucket{pipeline=\"resnet50\",le=\"0.005\"} 2"
            ),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
        let classic = to_prometheus_text(&text);
        assert!(
            classic.contains("# TYPE tensorwire_datagrams_total counter\n"),
            "{classic}"
        );
        assert!(
            classic.contains("# HELP tensorwire_datagrams_total UDP"),
            "{classic}"
        );
        assert!(!classic.contains("# EOF"));
    }
}
