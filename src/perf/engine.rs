//! The load generator: closed loop (N workers, each sends its next
//! request when the previous one is answered) or open loop (a schedule of
//! intended send times, constant or Poisson, taken in order by a pool of
//! workers). Every latency is recorded in microseconds in hdrhistograms:
//!
//! - `latency`: completion minus the request's *intended* start (open
//!   loop) or its actual send (closed loop). A stalled proxy delays the
//!   sends that were due meanwhile; their waiting counts (coordinated
//!   omission corrected);
//! - `service`: completion minus the actual send, what a tool that only
//!   times the requests it managed to send would report.
//!
//! The engine is generic over a [`Target`]: one blocking request at a
//! time per worker, each worker with its own connection/socket.

use hdrhistogram::Histogram;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One connection to what is measured (a worker owns one).
pub trait Target: Send {
    /// Sends request number `i` (inputs are used in turn) and waits for
    /// its answer. Err: the error's code (e.g. `timeout`, `INCOMPLETE`).
    fn request(&mut self, i: u64) -> Result<(), String>;
}

/// Makes one [`Target`] per worker.
pub trait TargetFactory: Sync {
    fn connect(&self) -> anyhow::Result<Box<dyn Target>>;
}

/// Arrivals of the open loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Arrivals {
    /// Request i is due at start + i/R.
    Constant,
    /// Exponential gaps of mean 1/R (seeded).
    Poisson,
}

/// What load to offer.
#[derive(Debug, Clone, Copy)]
pub enum Load {
    Closed {
        concurrency: usize,
    },
    Open {
        rate: f64,
        arrivals: Arrivals,
        workers: usize,
        seed: u64,
    },
}

/// The measured window and the per-request timeout.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub warmup: Duration,
    pub duration: Duration,
}

/// Live counters for the progress line.
#[derive(Default)]
pub struct Progress {
    pub sent: AtomicU64,
    pub ok: AtomicU64,
    pub errors: AtomicU64,
    /// Latest latency recorded (us), a hint of how it goes.
    pub last_latency_us: AtomicU64,
}

/// Raw outcome of one load point.
pub struct Outcome {
    pub latency: Histogram<u64>,
    pub service: Histogram<u64>,
    pub errors: BTreeMap<String, u64>,
    /// Requests due (open loop) or sent (closed loop) in the window.
    pub requests: u64,
    /// Wall time of the measured window (s).
    pub wall_s: f64,
    /// Of the open loop: how late the sends were, worst case (us).
    pub max_send_lag_us: u64,
}

pub fn histogram() -> Histogram<u64> {
    // 1 us .. 10 min, 3 significant digits.
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid bounds")
}

/// The intended start offsets (from the run's start) of the open loop,
/// covering `total`.
pub fn schedule(rate: f64, arrivals: Arrivals, seed: u64, total: Duration) -> Vec<Duration> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut out = Vec::new();
    let mut t = 0.0f64;
    let end = total.as_secs_f64();
    let mut i = 0u64;
    loop {
        let at = match arrivals {
            Arrivals::Constant => i as f64 / rate,
            Arrivals::Poisson => {
                // 1 - u is in (0, 1]: ln never sees 0.
                let gap = -(1.0 - rng.f64()).ln() / rate;
                let at = t;
                t += gap;
                at
            }
        };
        if at >= end {
            return out;
        }
        out.push(Duration::from_secs_f64(at));
        i += 1;
    }
}

struct Shared {
    latency: Histogram<u64>,
    service: Histogram<u64>,
    errors: BTreeMap<String, u64>,
    requests: u64,
    max_lag: u64,
}

/// Runs one load point: warm-up, then the measured window. `on_window`
/// is called (from another thread) when the window starts and when it
/// ends (false, true), e.g. to scrape metrics or read CPU times.
pub fn run(
    factory: &dyn TargetFactory,
    load: Load,
    win: Window,
    progress: &Progress,
    on_window: &(dyn Fn(bool) + Sync),
) -> anyhow::Result<Outcome> {
    let workers = match load {
        Load::Closed { concurrency } => concurrency.max(1),
        Load::Open { workers, .. } => workers.max(1),
    };
    let mut targets = Vec::with_capacity(workers);
    for _ in 0..workers {
        targets.push(factory.connect()?);
    }
    let total = win.warmup + win.duration;
    let sched = match load {
        Load::Open {
            rate,
            arrivals,
            seed,
            ..
        } => {
            anyhow::ensure!(rate > 0.0, "--request-rate must be > 0");
            schedule(rate, arrivals, seed, total)
        }
        Load::Closed { .. } => Vec::new(),
    };
    let shared = Mutex::new(Shared {
        latency: histogram(),
        service: histogram(),
        errors: BTreeMap::new(),
        requests: 0,
        max_lag: 0,
    });
    let next = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let start = Instant::now() + Duration::from_millis(20);
    let warm_end = start + win.warmup;
    let end = warm_end + win.duration;
    let open = matches!(load, Load::Open { .. });
    std::thread::scope(|s| {
        // The window's edges, on their own thread (scrapes take time).
        s.spawn(|| {
            sleep_until(warm_end);
            on_window(false);
            sleep_until(end);
            on_window(true);
        });
        for mut t in targets {
            let (shared, next, sched, stop) = (&shared, &next, &sched, &stop);
            s.spawn(move || {
                let mut lat = histogram();
                let mut svc = histogram();
                let mut errors: BTreeMap<String, u64> = BTreeMap::new();
                let (mut requests, mut max_lag) = (0u64, 0u64);
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let intended = if open {
                        let Some(at) = sched.get(i as usize) else {
                            break;
                        };
                        let due = start + *at;
                        sleep_until(due);
                        Some(due)
                    } else {
                        None
                    };
                    let sent = Instant::now();
                    if !open && (sent >= end || stop.load(Ordering::Relaxed)) {
                        break;
                    }
                    progress.sent.fetch_add(1, Ordering::Relaxed);
                    let r = t.request(i);
                    let done = Instant::now();
                    let from = intended.unwrap_or(sent);
                    // Only requests meant for the window count.
                    if from < warm_end || from >= end {
                        count(progress, &r);
                        continue;
                    }
                    requests += 1;
                    count(progress, &r);
                    match r {
                        Ok(()) => {
                            let us = micros(done - from);
                            lat.saturating_record(us);
                            svc.saturating_record(micros(done - sent));
                            progress.last_latency_us.store(us, Ordering::Relaxed);
                        }
                        Err(code) => *errors.entry(code).or_default() += 1,
                    }
                    if let Some(due) = intended {
                        max_lag = max_lag.max(micros(sent.saturating_duration_since(due)));
                    }
                }
                let mut g = shared.lock().expect("not poisoned");
                g.latency.add(&lat).expect("same bounds");
                g.service.add(&svc).expect("same bounds");
                for (k, v) in errors {
                    *g.errors.entry(k).or_default() += v;
                }
                g.requests += requests;
                g.max_lag = g.max_lag.max(max_lag);
            });
        }
    });
    stop.store(true, Ordering::Relaxed);
    let g = shared.into_inner().expect("not poisoned");
    Ok(Outcome {
        latency: g.latency,
        service: g.service,
        errors: g.errors,
        requests: g.requests,
        wall_s: win.duration.as_secs_f64(),
        max_send_lag_us: g.max_lag,
    })
}

fn count(p: &Progress, r: &Result<(), String>) {
    match r {
        Ok(()) => p.ok.fetch_add(1, Ordering::Relaxed),
        Err(_) => p.errors.fetch_add(1, Ordering::Relaxed),
    };
}

fn micros(d: Duration) -> u64 {
    d.as_micros().min(u64::MAX as u128) as u64
}

pub fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        std::thread::sleep(t - now);
    }
}

/// A progress line on stderr (only when stderr is a terminal), every
/// half second until `done`.
pub fn progress_line(label: &str, p: &Arc<Progress>, total: Duration, done: &AtomicBool) {
    // SAFETY: isatty on a file descriptor number.
    if unsafe { libc::isatty(2) } != 1 {
        return;
    }
    let t0 = Instant::now();
    while !done.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(500));
        eprint!(
            "\r\x1b[K{label}: {:.1}/{:.1} s  sent {}  ok {}  errors {}  last {:.2} ms",
            t0.elapsed().as_secs_f64().min(total.as_secs_f64()),
            total.as_secs_f64(),
            p.sent.load(Ordering::Relaxed),
            p.ok.load(Ordering::Relaxed),
            p.errors.load(Ordering::Relaxed),
            p.last_latency_us.load(Ordering::Relaxed) as f64 / 1000.0
        );
    }
    eprint!("\r\x1b[K");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_schedule() {
        let s = schedule(100.0, Arrivals::Constant, 0, Duration::from_secs(1));
        assert_eq!(s.len(), 100);
        assert_eq!(s[1], Duration::from_millis(10));
    }

    #[test]
    fn poisson_schedule_has_the_rate() {
        let s = schedule(1000.0, Arrivals::Poisson, 7, Duration::from_secs(10));
        assert!((9000..11000).contains(&s.len()), "{}", s.len());
        assert!(s.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(
            s,
            schedule(1000.0, Arrivals::Poisson, 7, Duration::from_secs(10))
        );
    }

    struct Sleepy(Duration);
    impl Target for Sleepy {
        fn request(&mut self, _: u64) -> Result<(), String> {
            std::thread::sleep(self.0);
            Ok(())
        }
    }
    struct F(Duration);
    impl TargetFactory for F {
        fn connect(&self) -> anyhow::Result<Box<dyn Target>> {
            Ok(Box::new(Sleepy(self.0)))
        }
    }

    #[test]
    fn an_overloaded_open_loop_shows_its_queue() {
        // 1 worker, 10 ms per request, 200 requests/s offered: requests
        // pile up; the corrected latency grows, the service time does not.
        let p = Progress::default();
        let o = run(
            &F(Duration::from_millis(10)),
            Load::Open {
                rate: 200.0,
                arrivals: Arrivals::Constant,
                workers: 1,
                seed: 0,
            },
            Window {
                warmup: Duration::ZERO,
                duration: Duration::from_millis(500),
            },
            &p,
            &|_| {},
        )
        .unwrap();
        assert!(o.latency.value_at_quantile(0.99) > 100_000);
        assert!(o.service.value_at_quantile(0.99) < 100_000);
    }
}
