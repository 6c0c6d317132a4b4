//! The `tensorwire` command line. Errors get context here (anyhow); the
//! library's errors are typed. `demo.rs` is the end-to-end demo,
//! `test_server.rs` starts the KServe test server for the benches,
//! `out.rs` writes to stdout without panicking on a closed pipe.
//!
//! Exit codes: 0 success; 1 failure (cannot reach the proxy, I/O, an
//! endpoint answered not healthy/ready); 2 the proxy answered ERROR
//! (`send-image`, `send-text`); 3 `describe`: a model server is not
//! ready; 64 usage error (sysexits EX_USAGE: unknown argument, bad
//! value); 78 unusable configuration (EX_CONFIG, the message names the
//! key; also a model whose metadata does not match its pipeline).

mod demo;
pub(crate) mod out;
mod test_server;

use crate::client::{load_image, npy, Client, Faults, OutputGeometry, Reply};
use crate::config::Config;
use crate::server::serve_udp;
use crate::transform::Tensor;
use crate::wire::PixelFormat;
use anyhow::{bail, Context, Result};
use clap::{Args, CommandFactory, Parser, Subcommand};
use out::outln;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Exit code for an unusable configuration (sysexits EX_CONFIG).
pub const EXIT_CONFIG: u8 = 78;
/// Exit code for a usage error (sysexits EX_USAGE).
pub const EXIT_USAGE: u8 = 64;
/// Exit code when the proxy answered a request with ERROR.
pub const EXIT_PROXY_ERROR: u8 = 2;
/// Exit code of `describe` when a model server is not ready.
pub const EXIT_NOT_READY: u8 = 3;

/// The admin endpoint's default address (admin.listen).
const ADMIN_DEFAULT: &str = "127.0.0.1:9878";

#[derive(Parser, Debug)]
#[command(
    name = "tensorwire",
    version,
    about = "AI inference preprocessing on the packet path (TWP/1 proxy)",
    after_help = "Exit codes: 0 ok, 1 failure, 2 the proxy answered ERROR, 3 describe: an upstream \
                  is not ready, 64 usage error, 78 unusable configuration."
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
    /// Check or show a configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Print a running proxy's DESCRIBE document, with each model server's
    /// readiness asked now (exit 3 when one is not ready).
    Describe(ServerArgs),
    /// Print a running proxy's metrics (Prometheus text from the admin
    /// endpoint's /metrics, or every counter as JSON with --json).
    Stats {
        /// The proxy's admin endpoint (admin.listen).
        #[arg(long, default_value = ADMIN_DEFAULT)]
        admin: SocketAddr,
        /// Print /stats (every counter as JSON) instead of /metrics.
        #[arg(long)]
        json: bool,
    },
    /// Ask a running proxy's admin endpoint whether it is healthy
    /// (GET /healthz) or ready (GET /readyz): exit 0 on HTTP 200, else 1
    /// with the reason (for container health checks).
    Health {
        /// The proxy's admin endpoint (admin.listen).
        #[arg(long, default_value = ADMIN_DEFAULT)]
        admin: SocketAddr,
        /// Ask /readyz (ingress bound, model servers ready) instead of /healthz.
        #[arg(long)]
        ready: bool,
        /// Seconds to wait for the answer.
        #[arg(long, default_value_t = 3.0)]
        timeout: f64,
    },
    /// Send an image; print (or save) the tensors that come back.
    SendImage {
        /// Image file (PNG or JPEG).
        file: PathBuf,
        #[command(flatten)]
        server: ServerArgs,
        /// Pipeline id to send to.
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
        /// Text file, or - for stdin.
        file: PathBuf,
        #[command(flatten)]
        server: ServerArgs,
        /// Pipeline id to send to.
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
        /// Measure only 1920x1080 images/s of the socket ingress with 1
        /// and 2 workers (loopback; no root needed).
        #[arg(long)]
        workers: bool,
        /// Clients for --workers (closed loop, sendmmsg, each its own socket).
        #[arg(long, default_value_t = 4)]
        clients: usize,
    },
    /// Latency and requests/s the proxy adds in front of a KServe server:
    /// 640x480 photo -> 224x224 FP32 identity model, via tensorwire vs the
    /// client preprocessing itself and calling KServe directly.
    BenchUpstream {
        /// A running KServe v2 server serving testdata/kserve/models.py
        /// (default: start one with --python on a free loopback port).
        #[arg(long)]
        url: Option<String>,
        /// Python with the kserve package (make testenv; default: the
        /// repository's .venv/bin/python).
        #[arg(long, env = "TENSORWIRE_TEST_PYTHON")]
        python: Option<PathBuf>,
        /// The repository's testdata directory (default: ./testdata, else
        /// the one of the source tree this binary was built from).
        #[arg(long)]
        testdata: Option<PathBuf>,
        /// Seconds of measurement (the paths take turns).
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Concurrent clients (each a closed loop with its own sockets).
        #[arg(long, default_value_t = 1)]
        clients: usize,
    },
    /// Load test a running proxy (perf_analyzer style): closed or open
    /// loop, hdrhistogram percentiles, per-stage breakdown from the admin
    /// endpoint, the Python baselines against Triton; table, JSON, CSV, SVG.
    Perf(Box<crate::perf::PerfArgs>),
    /// End-to-end demo on loopback: starts a proxy, sends an image and a text, checks the tensors.
    Demo {
        /// Image to send (default: the astronaut photo built into the binary).
        #[arg(long)]
        image: Option<PathBuf>,
        /// Text to send (default: the Zen of Python built into the binary).
        #[arg(long)]
        text: Option<PathBuf>,
    },
    /// Print a shell completion script (e.g. `tensorwire completions bash >
    /// /etc/bash_completion.d/tensorwire`).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

#[derive(Subcommand, Debug)]
enum ConfigCommand {
    /// Load and validate a config file (with the environment's
    /// TENSORWIRE__* overrides), building its pipelines: exit 0, or 78
    /// naming the key.
    Check {
        /// The TOML file.
        file: PathBuf,
    },
    /// Print the effective configuration: the file (or the built-in
    /// default) after defaults and TENSORWIRE__* environment overrides.
    Show {
        /// TOML config (default: the built-in config/tensorwire.toml).
        #[arg(long, short, env = "TENSORWIRE_CONFIG")]
        config: Option<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = ShowFormat::Toml)]
        format: ShowFormat,
    },
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum ShowFormat {
    Toml,
    Json,
}

#[derive(Args, Debug)]
struct ServerArgs {
    /// Proxy address.
    #[arg(long, default_value = "127.0.0.1:7878")]
    server: SocketAddr,
    /// Seconds to wait for the answer.
    #[arg(long, default_value_t = 5.0)]
    timeout: f64,
    /// Pre-shared key file, when the proxy has `[security] psk_file` (the
    /// key is the file's bytes, trailing whitespace removed).
    #[arg(long)]
    psk_file: Option<PathBuf>,
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
    /// Seed of the drop/dup/reorder choices.
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

/// Sets up logging: `log.format` "text" (default) or "json", level from
/// TENSORWIRE_LOG (default info), to stderr.
fn init_logging(format: crate::config::LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TENSORWIRE_LOG")
        .unwrap_or_else(|_| "info".into());
    use std::io::IsTerminal;
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        crate::config::LogFormat::Json => b.json().flatten_event(true).init(),
        crate::config::LogFormat::Text => b.init(),
    }
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            let usage = !matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion);
            if usage {
                let _ = e.print();
                return ExitCode::from(EXIT_USAGE);
            }
            out::text(&e.render().to_string());
            return ExitCode::SUCCESS;
        }
    };
    let result = match cli.command {
        Command::Run { config } => run(config.as_deref()),
        command => {
            init_logging(crate::config::LogFormat::Text);
            dispatch(command)
        }
    };
    out::flush();
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

fn dispatch(command: Command) -> Result<ExitCode> {
    match command {
        Command::Run { .. } => unreachable!("handled in main"),
        Command::Config(ConfigCommand::Check { file }) => config_check(&file),
        Command::Config(ConfigCommand::Show { config, format }) => {
            config_show(config.as_deref(), format)
        }
        Command::Describe(s) => describe(&s),
        Command::Stats { admin, json } => stats(admin, json),
        Command::Health {
            admin,
            ready,
            timeout,
        } => health(admin, ready, timeout),
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
        Command::Demo { image, text } => {
            let (image, text) = demo::inputs(image, text)?;
            let r = demo::demo(&image, &text);
            // The built-in inputs' copies, if any.
            let dir = std::env::temp_dir().join(format!("tensorwire-demo-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(dir);
            r
        }
        Command::BenchUpstream {
            url,
            python,
            testdata,
            seconds,
            clients,
        } => {
            let testdata = match testdata {
                Some(t) => t,
                None => repo_path("testdata")?,
            };
            let python = match (python, &url) {
                (Some(p), _) => p,
                (None, Some(_)) => PathBuf::from("python3"),
                (None, None) => repo_path(".venv/bin/python")?,
            };
            bench_upstream(url, &python, &testdata, seconds, clients)
        }
        Command::Bench {
            seconds,
            rounds,
            replies,
            workers,
            clients,
        } => if replies {
            crate::bench::replies::report(seconds, rounds)
        } else if workers {
            crate::bench::workers::report(seconds, rounds, clients)
        } else {
            crate::bench::run(seconds, rounds)
        }
        .map(|report| {
            outln!("{report}");
            ExitCode::SUCCESS
        }),
        Command::Perf(a) => crate::perf::main(&a).map(|report| {
            out::text(&report);
            ExitCode::SUCCESS
        }),
        Command::Completions { shell } => {
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "tensorwire", &mut buf);
            out::text(&String::from_utf8_lossy(&buf));
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// A path of the repository: `rel` under the current directory, else
/// under the source tree this binary was built from.
fn repo_path(rel: &str) -> Result<PathBuf> {
    let here = PathBuf::from(rel);
    if here.exists() {
        return Ok(here);
    }
    let built = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    if built.exists() {
        return Ok(built);
    }
    bail!(
        "cannot find {rel}: not in the current directory nor in the source tree this binary \
         was built from ({}); run from the repository or pass the path",
        env!("CARGO_MANIFEST_DIR")
    )
}

fn config_check(file: &Path) -> Result<ExitCode> {
    let cfg = Config::load(Some(file))?;
    // Tokenizers load, tensors are planned: what `run` would build.
    cfg.build_pipelines()
        .map_err(|e| crate::config::ConfigError::Invalid {
            key: "pipelines".into(),
            msg: e.to_string(),
        })?;
    outln!(
        "{}: ok ({} pipeline(s), {} upstream(s))",
        file.display(),
        cfg.pipelines.len(),
        cfg.upstreams.len()
    );
    Ok(ExitCode::SUCCESS)
}

fn config_show(file: Option<&Path>, format: ShowFormat) -> Result<ExitCode> {
    let cfg = Config::load(file)?;
    let text = match format {
        ShowFormat::Json => serde_json::to_string_pretty(&cfg)? + "\n",
        ShowFormat::Toml => {
            // Through JSON: TOML has no null, and keys keep their order.
            let mut v: serde_json::Value = serde_json::to_value(&cfg)?;
            drop_nulls(&mut v);
            toml::to_string_pretty(&v).context("the configuration as TOML")?
        }
    };
    out::text(&text);
    Ok(ExitCode::SUCCESS)
}

/// Removes null values (unset optional keys): TOML has no null.
fn drop_nulls(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            m.retain(|_, x| !x.is_null());
            m.values_mut().for_each(drop_nulls);
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(drop_nulls),
        _ => {}
    }
}

fn stats(admin: SocketAddr, json: bool) -> Result<ExitCode> {
    let path = if json { "/stats" } else { "/metrics" };
    let (status, body) =
        crate::admin::get(admin, path, Duration::from_secs(3)).with_context(|| {
            format!("no admin endpoint at {admin} (is the proxy running? admin.listen)")
        })?;
    if status != 200 {
        bail!("GET http://{admin}{path}: HTTP {status}: {}", body.trim());
    }
    out::text(&body);
    Ok(ExitCode::SUCCESS)
}

fn health(admin: SocketAddr, ready: bool, timeout: f64) -> Result<ExitCode> {
    let path = if ready { "/readyz" } else { "/healthz" };
    match crate::admin::get(admin, path, Duration::from_secs_f64(timeout)) {
        Ok((200, body)) => {
            outln!("{}", body.trim_end());
            Ok(ExitCode::SUCCESS)
        }
        Ok((status, body)) => {
            eprintln!("tensorwire: GET http://{admin}{path}: HTTP {status}");
            eprint!("{body}");
            Ok(ExitCode::FAILURE)
        }
        Err(e) => {
            eprintln!("tensorwire: no admin endpoint at {admin} ({e}); is the proxy running? (admin.listen)");
            Ok(ExitCode::FAILURE)
        }
    }
}

fn run(config: Option<&Path>) -> Result<ExitCode> {
    let cfg = Config::load(config);
    init_logging(
        cfg.as_ref()
            .map(|c| c.log.format)
            .unwrap_or(crate::config::LogFormat::Text),
    );
    let cfg = cfg?;
    let shutdown = Arc::new(AtomicBool::new(false));
    // The first SIGTERM/SIGINT starts the drain (ingress.drain_timeout_ms);
    // a second one, with the flag already set, exits at once.
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register_conditional_default(sig, shutdown.clone())
            .context("installing signal handlers")?;
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
    for (i, (stats, udp)) in serve_udp(&cfg, &shutdown, true)?.into_iter().enumerate() {
        tracing::info!(
            worker = i,
            "stopped: {stats} | socket sent={} dropped={}",
            udp.sent,
            udp.send_dropped
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn client(s: &ServerArgs) -> Result<Client> {
    let mut c = Client::connect(s.server)
        .with_context(|| format!("cannot open a socket towards {}", s.server))?;
    c.timeout = Duration::from_secs_f64(s.timeout);
    if let Some(p) = &s.psk_file {
        let key = std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?;
        c.psk = Some(key.trim_ascii_end().to_vec());
    }
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
    outln!("{}", crate::bench_upstream::table(&r));
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
    outln!("{}", serde_json::to_string_pretty(&d)?);
    let not_ready: Vec<String> = d["upstreams"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|u| u["ready_now"] == false)
        .map(|u| {
            format!(
                "upstream {} not ready: {}",
                u["name"].as_str().unwrap_or("?"),
                u["not_ready_now_because"].as_str().unwrap_or("?")
            )
        })
        .collect();
    if !not_ready.is_empty() {
        for m in &not_ready {
            eprintln!("tensorwire: {m}");
        }
        return Ok(ExitCode::from(EXIT_NOT_READY));
    }
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
        outln!("ERROR {code} ({}): {message}", *code as u16);
        return Ok(ExitCode::from(EXIT_PROXY_ERROR));
    }
    let tensors = reply.tensors().map_err(anyhow::Error::msg)?;
    outln!("answered in {:.2} ms", took.as_secs_f64() * 1e3);
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
            outln!("wrote {}", path.display());
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
    outln!(
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
