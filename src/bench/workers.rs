//! Images/s of the socket ingress with 1 and with 2 workers (one
//! SO_REUSEPORT group): 1920x1080 RGB -> 224x224 FP32 NCHW, echo
//! upstream, `clients` closed-loop clients in their own threads, each
//! sending its datagrams with sendmmsg from its own socket. Loopback; the
//! clients share the machine's cores with the workers, so on a 2-core
//! machine the ratio is a floor, not the workers' own scaling.

use crate::client::{image_rows, Client, RawImage};
use crate::config::{Config, Workers};
use crate::perf::udp::sendmmsg;
use crate::wire::PixelFormat;
use anyhow::Result;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Images/s with `workers` workers, `clients` clients, for `dur`.
pub fn images_per_second(workers: usize, clients: usize, dur: Duration) -> Result<f64> {
    let port = UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let mut cfg = Config::builtin();
    cfg.ingress.listen = addr;
    cfg.ingress.workers = Workers::Count(workers);
    cfg.admin.listen = String::new();
    cfg.stats.log_interval_ms = 0;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let server = std::thread::spawn(move || crate::server::serve_udp(&cfg, &flag, false));
    let mut probe = Client::connect(addr)?;
    probe.timeout = Duration::from_millis(200);
    let t0 = Instant::now();
    while probe.describe().is_err() {
        anyhow::ensure!(
            t0.elapsed() < Duration::from_secs(30),
            "the proxy never answered"
        );
    }
    let img = RawImage {
        width: 1920,
        height: 1080,
        format: PixelFormat::Rgb8,
        data: (0..1920 * 1080 * 3).map(|i| (i * 7 % 251) as u8).collect(),
    };
    let img = Arc::new(img);
    let start = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let img = img.clone();
            std::thread::spawn(move || -> Result<(u64, u64)> {
                let mut c = Client::connect(addr)?;
                c.timeout = Duration::from_secs(10);
                let (mut done, mut lost) = (0u64, 0u64);
                while start.elapsed() < dur {
                    let id = c.next_request_id();
                    let datagrams = image_rows(&img, 1, id, 1472);
                    sendmmsg(c.socket(), addr, &datagrams)?;
                    // A burst larger than the socket buffer loses
                    // datagrams: INCOMPLETE, counted, not an image.
                    match c.receive(id).map(|r| r.tensors()) {
                        Ok(Ok(_)) => done += 1,
                        _ => lost += 1,
                    }
                }
                Ok((done, lost))
            })
        })
        .collect();
    let (mut images, mut lost) = (0, 0);
    for t in threads {
        let (d, l) = t.join().map_err(|_| anyhow::anyhow!("client panicked"))??;
        images += d;
        lost += l;
    }
    if lost > 0 {
        eprintln!(
            "bench workers: {workers} worker(s): {lost} request(s) lost datagrams (INCOMPLETE)"
        );
    }
    let secs = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    server
        .join()
        .map_err(|_| anyhow::anyhow!("server panicked"))??;
    Ok(images as f64 / secs)
}

/// `rounds` interleaved rounds of 1 and 2 workers; a Markdown line.
pub fn report(seconds: f64, rounds: usize, clients: usize) -> Result<String> {
    let dur = Duration::from_secs_f64(seconds);
    let (mut one, mut two) = (Vec::new(), Vec::new());
    for round in 1..=rounds.max(1) {
        eprintln!("bench workers: round {round}: 1 worker, 2 workers ...");
        one.push(images_per_second(1, clients, dur)?);
        two.push(images_per_second(2, clients, dur)?);
    }
    let med = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (a, b) = (med(&mut one), med(&mut two));
    Ok(format!(
        "1920x1080 RGB -> 224x224 FP32 images/s, socket ingress, {clients} sendmmsg clients on loopback \
         (sharing the cores), {} round(s) of {seconds} s, medians: 1 worker {a:.1}, 2 workers {b:.1} \
         ({:.2}x; target >= 1.6x)\n",
        one.len(),
        b / a.max(1e-9)
    ))
}
