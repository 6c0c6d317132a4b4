//! The `tensorwire` command line. Errors get context here (anyhow); the
//! library's errors are typed. `demo.rs` is the end-to-end demo,
//! `test_server.rs` starts the KServe test server for the benches.

mod demo;
mod test_server;

use crate::client::{load_image, npy, Client, Faults, OutputGeometry, Reply};
use crate::config::Config;
use crate::server::serve_udp;
use crate::transform::Tensor;
use crate::wire::PixelFormat;
use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Exit code for an unusable configuration (sysexits EX_CONFIG).
pub const EXIT_CONFIG: u8 = 78;

#[derive(Parser, Debug)]
#[command(
    name = "tensorwire",
    version,
    about = "AI inference preprocessing on the packet path (TWP/1 proxy)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the proxy.
    Run {
        /// TOML config (default: the built-in config/tensorwire.toml).
        #[arg(long, short, env = "TENSORWIRE_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Print a running proxy's DESCRIBE document.
    Describe(ServerArgs),
    /// Print a running proxy's counters (XDP program, AF_XDP workers, proxy core).
    Stats {
        /// The proxy's admin endpoint (admin.listen).
        #[arg(long, default_value = "127.0.0.1:9878")]
        admin: SocketAddr,
    },
    /// Send an image; print (or save) the tensors that come back.
    SendImage {
        file: PathBuf,
        #[command(flatten)]
        server: ServerArgs,
        #[arg(long, default_value_t = 1)]
        pipeline: u16,
        /// Send IMAGE_TILE fragments (tiles with halo) instead of rows.
        #[arg(long)]
        tiles: bool,
        /// Pixel format to send: GRAY8, RGB8, BGR8, RGBA8, BGRA8 (default: the file's).
        #[arg(long, value_parser = parse_format)]
        format: Option<PixelFormat>,
        #[command(flatten)]
        send: SendArgs,
    },
    /// Send a text (a file, or - for stdin); print (or save) the token tensors.
    SendText {
        file: PathBuf,
        #[command(flatten)]
        server: ServerArgs,
        #[arg(long, default_value_t = 2)]
        pipeline: u16,
        /// Bytes each chunk repeats from the previous one.
        #[arg(long, default_value_t = 64)]
        overlap: usize,
        #[command(flatten)]
        send: SendArgs,
    },
    /// Datagram rates: UDP socket vs AF_XDP ingress vs a bare AF_XDP drop loop, and image requests/s (root).
    Bench {
        /// Seconds per measurement.
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
        /// Rounds of every measurement, interleaved; the table gives the
        /// median and the range (robust against other jobs on the machine).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Measure only what a 602 KB echo reply costs the socket ingress,
        /// with and without UDP GSO (loopback; no root needed).
        #[arg(long)]
        replies: bool,
    },
    /// Latency and requests/s the proxy adds in front of a KServe server:
    /// 640x480 photo -> 224x224 FP32 identity model, via tensorwire vs the
    /// client preprocessing itself and calling KServe directly.
    BenchUpstream {
        /// A running KServe v2 server serving testdata/kserve/models.py
        /// (default: start one with --python on a free loopback port).
        #[arg(long)]
        url: Option<String>,
        /// Python with the kserve package (make testenv).
        #[arg(
            long,
            env = "TENSORWIRE_TEST_PYTHON",
            default_value = ".venv/bin/python"
        )]
        python: PathBuf,
        #[arg(long, default_value = "testdata")]
        testdata: PathBuf,
        /// Seconds of measurement (the paths take turns).
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Concurrent clients (each a closed loop with its own sockets).
        #[arg(long, default_value_t = 1)]
        clients: usize,
    },
    /// End-to-end demo on loopback: starts a proxy, sends an image and a text, checks the tensors.
    Demo {
        #[arg(long, default_value = "testdata/images/astronaut.png")]
        image: PathBuf,
        #[arg(long, default_value = "testdata/text/zen-of-python.txt")]
        text: PathBuf,
    },
}

#[derive(Args, Debug)]
struct ServerArgs {
    /// Proxy address.
    #[arg(long, default_value = "127.0.0.1:7878")]
    server: SocketAddr,
    /// Seconds to wait for the answer.
    #[arg(long, default_value_t = 5.0)]
    timeout: f64,
}

#[derive(Args, Debug)]
struct SendArgs {
    /// Write the tensors as .npy (one tensor: this path; several: PATH_<name>.npy).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Largest datagram to send.
    #[arg(long, default_value_t = 1472)]
    max_datagram: usize,
    /// Drop each datagram with this probability.
    #[arg(long, default_value_t = 0.0)]
    drop: f64,
    /// Send each datagram twice with this probability.
    #[arg(long, default_value_t = 0.0)]
    dup: f64,
    /// Shuffle the datagrams.
    #[arg(long)]
    reorder: bool,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

impl SendArgs {
    fn faults(&self) -> Faults {
        Faults {
            drop: self.drop,
            dup: self.dup,
            reorder: self.reorder,
            seed: self.seed,
        }
    }
}

fn parse_format(s: &str) -> Result<PixelFormat, String> {
    PixelFormat::ALL
        .into_iter()
        .find(|f| f.name().eq_ignore_ascii_case(s))
        .ok_or_else(|| format!("unknown pixel format {s} (GRAY8, RGB8, BGR8, RGBA8, BGRA8)"))
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TENSORWIRE_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Run { config } => run(config.as_deref()),
        Command::Describe(s) => describe(&s),
        Command::Stats { admin } => {
            let v = crate::admin::fetch(admin, Duration::from_secs(3)).with_context(|| {
                format!("no admin endpoint at {admin} (is the proxy running? admin.listen)")
            });
            v.and_then(|v| {
                println!("{}", serde_json::to_string_pretty(&v)?);
                Ok(ExitCode::SUCCESS)
            })
        }
        Command::SendImage {
            file,
            server,
            pipeline,
            tiles,
            format,
            send,
        } => send_image(&file, &server, pipeline, tiles, format, &send),
        Command::SendText {
            file,
            server,
            pipeline,
            overlap,
            send,
        } => send_text(&file, &server, pipeline, overlap, &send),
        Command::Demo { image, text } => demo::demo(&image, &text),
        Command::BenchUpstream {
            url,
            python,
            testdata,
            seconds,
            clients,
        } => bench_upstream(url, &python, &testdata, seconds, clients),
        Command::Bench {
            seconds,
            rounds,
            replies,
        } => if replies {
            crate::bench::replies::report(seconds, rounds)
        } else {
            crate::bench::run(seconds, rounds)
        }
        .map(|report| {
            println!("{report}");
            ExitCode::SUCCESS
        }),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("tensorwire: error: {e:#}");
            if e.downcast_ref::<crate::config::ConfigError>().is_some() {
                ExitCode::from(EXIT_CONFIG)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn run(config: Option<&Path>) -> Result<ExitCode> {
    let cfg = Config::load(config)?;
    let shutdown = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, shutdown.clone()).context("installing signal handlers")?;
    }
    use crate::config::IngressMode;
    let use_xdp = match cfg.ingress.mode {
        IngressMode::Socket => false,
        IngressMode::Xdp => true,
        IngressMode::Auto => match crate::server::xdp_unavailable(&cfg) {
            Some(why) => {
                tracing::info!("ingress.mode = auto: using the UDP socket ingress ({why})");
                false
            }
            None => true,
        },
    };
    if use_xdp {
        match crate::server::serve_xdp(&cfg, &shutdown) {
            Ok(()) => return Ok(ExitCode::SUCCESS),
            Err(e) if cfg.ingress.mode == IngressMode::Auto => {
                tracing::warn!(
                    "ingress.mode = auto: AF_XDP on {} failed ({e:#}); using the UDP socket ingress",
                    cfg.ingress.interface
                );
            }
            Err(e) => return Err(e.context(format!("AF_XDP on {}", cfg.ingress.interface))),
        }
    }
    let (stats, udp) = serve_udp(&cfg, &shutdown)?;
    tracing::info!(
        "stopped: {stats} | socket sent={} dropped={}",
        udp.sent,
        udp.send_dropped
    );
    Ok(ExitCode::SUCCESS)
}

fn client(s: &ServerArgs) -> Result<Client> {
    let mut c = Client::connect(s.server)
        .with_context(|| format!("cannot open a socket towards {}", s.server))?;
    c.timeout = Duration::from_secs_f64(s.timeout);
    Ok(c)
}

fn bench_upstream(
    url: Option<String>,
    python: &Path,
    testdata: &Path,
    seconds: f64,
    clients: usize,
) -> Result<ExitCode> {
    // Started here unless a URL is given; killed when this returns.
    let (url, _server) = match url {
        Some(u) => (u, None),
        None => {
            let s = test_server::KserveProcess::start(python, testdata)?;
            (s.url.clone(), Some(s))
        }
    };
    eprintln!(
        "KServe at {url}; {seconds} s, the paths interleaved request by request, {clients} client(s), closed loop"
    );
    let r = crate::bench_upstream::run(&url, seconds, clients, testdata)?;
    println!("{}", crate::bench_upstream::table(&r));
    Ok(ExitCode::SUCCESS)
}

fn describe(s: &ServerArgs) -> Result<ExitCode> {
    let mut d = client(s)?
        .describe()
        .with_context(|| format!("DESCRIBE to {}", s.server))?;
    // Readiness now, asked of each model server from here (the proxy's
    // event loop never blocks on it; DESCRIBE carries the start-up check).
    if let Some(ups) = d["upstreams"].as_array_mut() {
        for u in ups {
            let kind = match u["kind"].as_str() {
                Some("kserve") => crate::upstream::UpstreamKind::Kserve,
                Some("openai") => crate::upstream::UpstreamKind::Openai,
                _ => continue,
            };
            let r =
                crate::upstream::HttpUrl::parse(u["url"].as_str().unwrap_or("")).and_then(|url| {
                    crate::http_pool::blocking::check_ready(
                        kind,
                        &url,
                        u["model"].as_str().unwrap_or(""),
                        u["version"].as_str().unwrap_or(""),
                        Duration::from_secs_f64(s.timeout.min(2.0)),
                    )
                });
            u["ready_now"] = r.is_ok().into();
            if let Err(e) = r {
                u["not_ready_now_because"] = e.into();
            }
        }
    }
    println!("{}", serde_json::to_string_pretty(&d)?);
    Ok(ExitCode::SUCCESS)
}

fn geometry(describe: &serde_json::Value, pipeline: u16) -> Result<OutputGeometry> {
    let p = describe["pipelines"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["id"] == pipeline))
        .with_context(|| format!("the proxy has no pipeline {pipeline}"))?;
    let i = &p["image"];
    match (
        i["width"].as_u64(),
        i["height"].as_u64(),
        i["antialias"].as_bool(),
    ) {
        (Some(w), Some(h), Some(a)) => Ok(OutputGeometry {
            width: w as u32,
            height: h as u32,
            antialias: a,
        }),
        _ => bail!("pipeline {pipeline} is not an image pipeline"),
    }
}

fn send_image(
    file: &Path,
    s: &ServerArgs,
    pipeline: u16,
    tiles: bool,
    format: Option<PixelFormat>,
    a: &SendArgs,
) -> Result<ExitCode> {
    let img =
        load_image(file, format).with_context(|| format!("cannot decode {}", file.display()))?;
    let mut c = client(s)?;
    let geometry = if tiles {
        Some(geometry(&c.describe()?, pipeline)?)
    } else {
        None
    };
    let t0 = Instant::now();
    let reply = c.send_image(pipeline, &img, geometry, a.max_datagram, &a.faults())?;
    report(reply, t0.elapsed(), a.out.as_deref())
}

fn send_text(
    file: &Path,
    s: &ServerArgs,
    pipeline: u16,
    overlap: usize,
    a: &SendArgs,
) -> Result<ExitCode> {
    let text = if file == Path::new("-") {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut v)?;
        v
    } else {
        std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?
    };
    let mut c = client(s)?;
    let t0 = Instant::now();
    let reply = c.send_text(pipeline, &text, overlap, a.max_datagram, &a.faults())?;
    report(reply, t0.elapsed(), a.out.as_deref())
}

fn report(reply: Reply, took: Duration, out: Option<&Path>) -> Result<ExitCode> {
    if let Reply::Error { code, message } = &reply {
        println!("ERROR {code} ({}): {message}", *code as u16);
        return Ok(ExitCode::from(2));
    }
    let tensors = reply.tensors().map_err(anyhow::Error::msg)?;
    println!("answered in {:.2} ms", took.as_secs_f64() * 1e3);
    for t in &tensors {
        print_tensor(t);
    }
    if let Some(out) = out {
        for t in &tensors {
            let path = if tensors.len() == 1 {
                out.to_path_buf()
            } else {
                let stem = out.file_stem().and_then(|s| s.to_str()).unwrap_or("out");
                out.with_file_name(format!("{stem}_{}.npy", t.name))
            };
            let mut f = std::fs::File::create(&path)
                .with_context(|| format!("cannot create {}", path.display()))?;
            npy::write_npy(&mut f, t)?;
            println!("wrote {}", path.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_tensor(t: &Tensor) {
    let preview: Vec<String> = match t.dtype {
        crate::transform::DType::Fp32 => t
            .data
            .chunks_exact(4)
            .take(6)
            .map(|b| format!("{:.4}", f32::from_le_bytes(b.try_into().unwrap())))
            .collect(),
        crate::transform::DType::Int64 => t
            .data
            .chunks_exact(8)
            .take(12)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap()).to_string())
            .collect(),
        crate::transform::DType::Int32 => t
            .data
            .chunks_exact(4)
            .take(12)
            .map(|b| i32::from_le_bytes(b.try_into().unwrap()).to_string())
            .collect(),
        _ => t.data.iter().take(12).map(|b| b.to_string()).collect(),
    };
    println!(
        "  {:<15} {:<5} shape {:?}  fnv64 {:016x}  [{}, ...]",
        t.name,
        t.dtype.name(),
        t.shape,
        t.checksum(),
        preview.join(", ")
    );
}

fn exit(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
