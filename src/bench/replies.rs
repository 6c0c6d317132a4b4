//! What one 602 KB echo reply costs the socket ingress, with and without
//! UDP GSO: a client sends 1x1 images (one 51-byte datagram each) to the
//! default 224x224 FP32 pipeline, which answers with ~410 fragments; the
//! proxy thread's own CPU time (CLOCK_THREAD_CPUTIME_ID) is divided by the
//! replies it sent. Loopback, no privileges.

use crate::client::{Client, Faults, RawImage};
use crate::config::Config;
use crate::ingress::udp::{UdpIngress, UdpStats};
use crate::server::Worker;
use crate::wire::PixelFormat;
use anyhow::{Context, Result};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One measurement: replies/s, reply datagrams/s, proxy CPU µs per reply,
/// sendmsg calls per reply.
#[derive(Debug, Clone, Copy)]
pub struct ReplyCost {
    pub replies_per_s: f64,
    pub datagrams_per_s: f64,
    pub cpu_us_per_reply: f64,
    pub sends_per_reply: f64,
}

fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec out-parameter.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Serves echo replies for `dur` with GSO on or off.
pub fn measure(gso: bool, dur: Duration) -> Result<ReplyCost> {
    let mut cfg = Config::builtin();
    cfg.ingress.gso = gso;
    let mut worker = Worker::new(cfg.build_proxy()?)?;
    let mut ingress = UdpIngress::bind("127.0.0.1:0".parse()?, &cfg.udp_settings())?;
    let addr = ingress.local_addr()?;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let proxy = std::thread::spawn(move || -> std::io::Result<(Duration, UdpStats)> {
        let cpu0 = thread_cpu();
        ingress.run(&mut worker, &flag, |_, _| {})?;
        Ok((thread_cpu() - cpu0, ingress.stats.clone()))
    });
    let img = RawImage {
        width: 1,
        height: 1,
        format: PixelFormat::Rgb8,
        data: vec![10, 200, 30],
    };
    let mut c = Client::connect(addr)?;
    let (t0, mut replies) = (Instant::now(), 0u64);
    while t0.elapsed() < dur {
        let r = c.send_image(1, &img, None, 1472, &Faults::default())?;
        r.tensors().map_err(anyhow::Error::msg)?;
        replies += 1;
    }
    let secs = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let (cpu, stats) = proxy
        .join()
        .map_err(|_| anyhow::anyhow!("proxy thread panicked"))?
        .context("proxy")?;
    Ok(ReplyCost {
        replies_per_s: replies as f64 / secs,
        datagrams_per_s: stats.sent as f64 / secs,
        cpu_us_per_reply: cpu.as_secs_f64() * 1e6 / replies.max(1) as f64,
        sends_per_reply: stats.send_calls as f64 / replies.max(1) as f64,
    })
}

/// `rounds` interleaved rounds of GSO off and on; a Markdown report.
pub fn report(seconds: f64, rounds: usize) -> Result<String> {
    let dur = Duration::from_secs_f64(seconds);
    let (mut off, mut on) = (Vec::new(), Vec::new());
    for round in 1..=rounds.max(1) {
        eprintln!("bench replies: round {round}: GSO off, on ...");
        off.push(measure(false, dur)?);
        on.push(measure(true, dur)?);
    }
    let med = |v: &[ReplyCost], f: fn(&ReplyCost) -> f64| {
        let mut x: Vec<f64> = v.iter().map(f).collect();
        x.sort_by(f64::total_cmp);
        x[x.len() / 2]
    };
    let mut out = format!(
        "602 KB echo replies (1x1 image -> 224x224 FP32), socket ingress on loopback, one client, \
         {} round(s) of {seconds} s, medians:\n\n\
         | replies | replies/s | reply datagrams/s | send calls per reply | proxy CPU us per reply |\n|---|---|---|---|---|\n",
        off.len()
    );
    for (name, v) in [("one sendto per datagram", &off), ("UDP GSO", &on)] {
        out += &format!(
            "| {name} | {:.0} | {:.0} | {:.1} | {:.0} |\n",
            med(v, |c| c.replies_per_s),
            med(v, |c| c.datagrams_per_s),
            med(v, |c| c.sends_per_reply),
            med(v, |c| c.cpu_us_per_reply)
        );
    }
    let ratio = med(&on, |c| c.cpu_us_per_reply) / med(&off, |c| c.cpu_us_per_reply);
    out += &format!("\nproxy CPU per reply, GSO / no GSO: {ratio:.2}x (target <= 0.5x)\n");
    Ok(out)
}
