//! `tensorwire demo`: a proxy and a client in one process, over AF_XDP
//! between two private network namespaces when possible, else over a UDP
//! socket on loopback; every tensor checked against the same transform
//! computed locally.

use super::{exit, geometry, print_tensor};
use crate::client::{load_image, Client, Faults, RawImage};
use crate::config::Config;
use crate::pipeline::Plan;
use crate::server::RunningProxy;
use crate::transform::reference;
use anyhow::{bail, Context, Result};
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

/// The demo: a proxy and a client, one image (rows and tiles) and one
/// text, each checked against the same transform computed here. Over
/// AF_XDP between two private network namespaces when this process may
/// create them (root, iproute2); otherwise over a UDP socket on loopback.
pub fn demo(image: &Path, text: &Path) -> Result<ExitCode> {
    let cfg = Config::builtin();
    let img = load_image(image, None).with_context(|| {
        format!(
            "cannot decode {} (run from the repository root)",
            image.display()
        )
    })?;
    let body = std::fs::read(text).with_context(|| format!("cannot read {}", text.display()))?;
    match crate::netns::Netns::new(1) {
        Some(net) => match demo_xdp(&cfg, &net, img.clone(), body.clone(), image, text) {
            Ok(ok) => return Ok(exit(ok)),
            Err(e) => println!("AF_XDP not possible here ({e:#}): falling back to a UDP socket on loopback"),
        },
        None => println!("not root or no iproute2: no private network for AF_XDP; falling back to a UDP socket on loopback"),
    }
    let proxy = RunningProxy::spawn(cfg.clone(), "127.0.0.1:0".parse().unwrap())?;
    println!(
        "tensorwire demo: proxy on udp://{} (socket ingress, echo upstream)",
        proxy.addr
    );
    let ok = demo_client(&cfg, proxy.addr, &img, &body, image, text)?;
    let (stats, _) = proxy.stop()?;
    println!("proxy counters: {stats}");
    Ok(exit(ok))
}

fn demo_xdp(
    cfg: &Config,
    net: &crate::netns::Netns,
    img: RawImage,
    body: Vec<u8>,
    image: &Path,
    text: &Path,
) -> Result<bool> {
    let mut pcfg = cfg.clone();
    pcfg.ingress.interface = net.proxy_if.clone();
    pcfg.ingress.listen = "0.0.0.0:7878".parse().unwrap();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let proxy = crate::netns::Netns::run_in(&net.proxy_ns, move || -> Result<_> {
        let p = crate::server::XdpProxy::start(&pcfg, 0);
        let p = match p {
            Ok(p) => {
                ready_tx.send(Ok(p.mode())).ok();
                p
            }
            Err(e) => {
                ready_tx.send(Err(format!("{e:#}"))).ok();
                return Err(e);
            }
        };
        stop_rx.recv().ok();
        let counters = p.counters()?;
        Ok((p.stop()?, counters))
    });
    let mode = ready_rx
        .recv()
        .map_err(|_| anyhow::anyhow!("proxy thread ended"))?
        .map_err(anyhow::Error::msg)?;
    println!(
        "tensorwire demo: AF_XDP ingress ({mode} XDP) on {} ({}:7878) in network namespace {}; client in {}",
        net.proxy_if, net.proxy_ip, net.proxy_ns, net.client_ns
    );
    let server: SocketAddr = format!("{}:7878", net.proxy_ip).parse()?;
    let (cfg2, image, text) = (cfg.clone(), image.to_path_buf(), text.to_path_buf());
    let client = crate::netns::Netns::run_in(&net.client_ns, move || {
        demo_client(&cfg2, server, &img, &body, &image, &text)
    });
    let ok = client
        .join()
        .map_err(|_| anyhow::anyhow!("client thread panicked"));
    stop_tx.send(()).ok();
    let (workers, counters) = proxy
        .join()
        .map_err(|_| anyhow::anyhow!("proxy thread panicked"))??;
    println!("XDP program counters: {counters:?}");
    for (stats, q) in workers {
        println!(
            "queue {} ({} copy): {stats} | frames {} replies {}",
            q.queue,
            if q.zero_copy { "zero" } else { "kernel" },
            q.frames_received,
            q.replies_sent
        );
    }
    ok?
}

fn demo_client(
    cfg: &Config,
    server: SocketAddr,
    img: &RawImage,
    body: &[u8],
    image: &Path,
    text: &Path,
) -> Result<bool> {
    let pipelines = cfg.build_pipelines()?;
    let mut c = Client::connect(server)?;
    let d = c.describe()?;
    for p in d["pipelines"].as_array().into_iter().flatten() {
        println!(
            "  pipeline {} {:<9} {:<5} -> {}",
            p["id"],
            p["name"].as_str().unwrap_or(""),
            p["kind"].as_str().unwrap_or(""),
            p["upstream"].as_str().unwrap_or("")
        );
    }
    let mut ok = true;
    let Plan::Image(plan) = &pipelines.by_id(1).unwrap().plan else {
        bail!("pipeline 1 is not an image pipeline")
    };
    let expected = plan.run_whole(&img.data, img.width, img.height, img.format);
    let faults = Faults {
        reorder: true,
        dup: 0.05,
        seed: 7,
        ..Faults::default()
    };
    for (label, tiles) in [("rows", None), ("tiles", Some(geometry(&d, 1)?))] {
        let t0 = Instant::now();
        let reply = c.send_image(1, img, tiles, 1472, &faults)?;
        let took = t0.elapsed();
        let t = reply.tensors().map_err(anyhow::Error::msg)?;
        println!(
            "image {} {}x{} {} as {label} (shuffled, 5% duplicated) -> {:.1} ms",
            image.display(),
            img.width,
            img.height,
            img.format.name(),
            took.as_secs_f64() * 1e3
        );
        print_tensor(&t[0]);
        let exact = t[0].data == expected;
        ok &= exact;
        println!(
            "  equals the pipeline's transform computed locally: {}",
            if exact { "yes, bit for bit" } else { "NO" }
        );
    }
    // How far the fixed-point Pillow emulation is from the image crate's f32 resize.
    let ours = crate::transform::resize::resize_image(
        &plan.resize_plan(img.width, img.height),
        &img.data,
        img.format.channels(),
        &mut Vec::new(),
    );
    let theirs = reference::image_crate_resize(
        &img.data,
        img.width,
        img.height,
        img.format,
        plan.out_width(),
        plan.out_height(),
    );
    let max = ours
        .iter()
        .zip(&theirs)
        .map(|(a, b)| a.abs_diff(*b))
        .max()
        .unwrap_or(0);
    let same = ours.iter().zip(&theirs).filter(|(a, b)| a == b).count() as f64 / ours.len() as f64;
    println!(
        "  resized pixels vs the image crate's Triangle resize: {:.1}% equal, max difference {max}",
        same * 100.0
    );

    let Plan::Text(tplan) = &pipelines.by_id(2).unwrap().plan else {
        bail!("pipeline 2 is not a text pipeline")
    };
    let t0 = Instant::now();
    let reply = c.send_text(2, body, 64, 1472, &faults)?;
    let took = t0.elapsed();
    let t = reply.tensors().map_err(anyhow::Error::msg)?;
    println!(
        "text {} ({} bytes, chunks overlap 64 bytes) -> {:.1} ms",
        text.display(),
        body.len(),
        took.as_secs_f64() * 1e3
    );
    for x in &t {
        print_tensor(x);
    }
    let want = reference::whole_text_tensors(tplan, std::str::from_utf8(body)?)
        .map_err(anyhow::Error::msg)?;
    let exact = t == want;
    ok &= exact;
    println!(
        "  equals the tokenizers crate on the whole text: {}",
        if exact { "yes" } else { "NO" }
    );
    Ok(ok)
}
