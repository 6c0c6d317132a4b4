//! The XDP datapath in network namespaces (root only; skipped otherwise):
//! a client namespace and a proxy namespace joined by a veth pair.

mod support;

use tensorwire::ingress::xdp::loader::SteeringProgram;
use tensorwire::netns::Netns;

#[test]
fn program_attaches_passes_other_traffic_and_detaches_on_drop() {
    let Some(net) = Netns::new(1) else {
        eprintln!("skipped: needs root and iproute2");
        return;
    };
    let (ifname, client_ip) = (net.proxy_if.clone(), net.client_ip.clone());
    let attached = Netns::run_in(&net.proxy_ns, move || {
        let p = SteeringProgram::attach(&ifname, 7878, &[]).expect("attach");
        (p.mode, p.ifindex, client_ip)
    });
    // The program is dropped with the thread: check the link went away.
    let (mode, ifindex, _) = attached.join().unwrap();
    assert!(ifindex > 0);
    assert!(mode == "native" || mode == "generic", "mode {mode}");
    assert!(
        !net.xdp_attached(),
        "the bpf_link must detach when the program is dropped"
    );

    // Attached: ping (ARP + ICMP) and TCP still reach the proxy host, and
    // the counters see them pass.
    let (ifname, ns) = (net.proxy_if.clone(), net.proxy_ns.clone());
    let (tx, rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let h = Netns::run_in(&ns, move || {
        let p = SteeringProgram::attach(&ifname, 7878, &[]).expect("attach");
        tx.send(()).unwrap();
        done_rx.recv().unwrap();
        p.counters().unwrap()
    });
    rx.recv().unwrap();
    assert!(net.xdp_attached());
    let ping = net.in_client(&["ping", "-c", "2", "-W", "2", &net.proxy_ip]);
    assert!(
        ping.status.success(),
        "ping while attached: {}",
        String::from_utf8_lossy(&ping.stdout)
    );
    let ping6 = net.in_client(&["ping", "-6", "-c", "1", "-W", "2", &net.proxy_ip6]);
    assert!(ping6.status.success(), "ping -6 while attached");
    // A TCP connection to the proxy host.
    let listener = Netns::run_in(&net.proxy_ns, || {
        std::net::TcpListener::bind("0.0.0.0:7879").unwrap()
    });
    let listener = listener.join().unwrap();
    let addr = format!("{}:7879", net.proxy_ip);
    let conn = Netns::run_in(&net.client_ns, move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect_timeout(
            &addr.parse().unwrap(),
            std::time::Duration::from_secs(3),
        )?;
        s.write_all(b"ping")?;
        let mut b = [0u8; 4];
        s.read_exact(&mut b)?;
        Ok::<_, std::io::Error>(b)
    });
    let (mut s, _) = listener.accept().unwrap();
    {
        use std::io::{Read, Write};
        let mut b = [0u8; 4];
        s.read_exact(&mut b).unwrap();
        s.write_all(b"pong").unwrap();
    }
    assert_eq!(&conn.join().unwrap().expect("TCP while attached"), b"pong");
    done_tx.send(()).unwrap();
    let c = h.join().unwrap();
    assert!(c.passed >= 2, "ARP/ICMP counted as passed: {c:?}");
    assert_eq!(c.steered, 0);
    assert!(!net.xdp_attached());
}

use std::sync::mpsc;
use tensorwire::client::{load_image, Client, Faults, OutputGeometry};
use tensorwire::config::Config;
use tensorwire::pipeline::Plan;
use tensorwire::server::XdpProxy;
use tensorwire::transform::reference;

use support::testdata;

/// Starts an XDP proxy in the proxy namespace; returns a stop handle
/// that yields (per-worker stats, program counters).
#[allow(clippy::type_complexity)]
type ProxyThread = std::thread::JoinHandle<(
    Vec<(
        tensorwire::proxy::Stats,
        tensorwire::ingress::xdp::worker::XdpWorkerStats,
    )>,
    tensorwire::ingress::xdp::loader::XdpCounters,
)>;

/// The built-in configuration over AF_XDP, with a source allowlist.
fn start_proxy(
    net: &Netns,
    queues: u32,
    allowlist: Vec<String>,
) -> (mpsc::Sender<()>, ProxyThread) {
    let mut cfg = Config::builtin();
    cfg.security.allowlist = allowlist;
    start_proxy_with(net, cfg, queues)
}

/// `cfg` served over AF_XDP on the proxy's veth end (small UMEM: several
/// tests run at once); returns the stop signal and the proxy's thread.
fn start_proxy_with(net: &Netns, mut cfg: Config, queues: u32) -> (mpsc::Sender<()>, ProxyThread) {
    cfg.ingress.interface = net.proxy_if.clone();
    cfg.ingress.listen = "0.0.0.0:7878".parse().unwrap();
    cfg.ingress.xdp.frames = 4096;
    cfg.ingress.xdp.ring_size = 1024;
    let (ready_tx, ready_rx) = mpsc::channel();
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let h = Netns::run_in(&net.proxy_ns, move || {
        let p = XdpProxy::start(&cfg, queues).expect("start XDP proxy");
        ready_tx.send(()).unwrap();
        stop_rx.recv().ok();
        let counters = p.counters().unwrap();
        (p.stop().unwrap(), counters)
    });
    ready_rx.recv().expect("proxy started");
    (stop_tx, h)
}

#[test]
fn image_and_text_over_af_xdp_equal_the_socket_path() {
    let Some(net) = Netns::new(1) else {
        eprintln!("skipped: needs root and iproute2");
        return;
    };
    let (stop, proxy) = start_proxy(&net, 1, vec![]);
    let server: std::net::SocketAddr = format!("{}:7878", net.proxy_ip).parse().unwrap();
    let server6: std::net::SocketAddr = format!("[{}]:7878", net.proxy_ip6).parse().unwrap();
    let client = Netns::run_in(&net.client_ns, move || {
        let cfg = Config::builtin();
        let pipelines = cfg.build_pipelines().unwrap();
        let (Plan::Image(img_plan), Plan::Text(txt_plan)) = (
            pipelines.by_id(1).unwrap().plan.clone(),
            pipelines.by_id(2).unwrap().plan.clone(),
        ) else {
            unreachable!()
        };
        let mut c = Client::connect(server).unwrap();
        let d = c.describe().expect("DESCRIBE over AF_XDP");
        assert_eq!(d["protocol"], 1);
        let img = load_image(&testdata("images/chelsea.png"), None).unwrap();
        let want = img_plan.run_whole(&img.data, img.width, img.height, img.format);
        let faults = Faults {
            reorder: true,
            dup: 0.1,
            seed: 3,
            ..Faults::default()
        };
        for tiles in [
            None,
            Some(OutputGeometry {
                width: 224,
                height: 224,
                antialias: true,
            }),
        ] {
            let t = c
                .send_image(1, &img, tiles, 1472, &faults)
                .unwrap()
                .tensors()
                .unwrap();
            assert!(
                t[0].data == want,
                "image tensor over AF_XDP (tiles={})",
                tiles.is_some()
            );
        }
        let text = std::fs::read(testdata("text/apache-2.0.txt")).unwrap();
        let t = c
            .send_text(2, &text, 64, 1472, &faults)
            .unwrap()
            .tensors()
            .unwrap();
        assert_eq!(
            t,
            reference::whole_text_tensors(&txt_plan, std::str::from_utf8(&text).unwrap()).unwrap()
        );
        // IPv6 (UDP checksum mandatory).
        let mut c6 = Client::connect(server6).unwrap();
        let t = c6
            .send_text(2, b"Hello world", 0, 1452, &Faults::default())
            .unwrap()
            .tensors()
            .unwrap();
        assert_eq!(t[0].data.len(), 4 * 8);
    });
    let result = client.join();
    stop.send(()).unwrap();
    let (workers, counters) = proxy.join().unwrap();
    eprintln!(
        "XDP counters {counters:?}; workers {:?}",
        workers.iter().map(|w| &w.1).collect::<Vec<_>>()
    );
    result.expect("client checks");
    let completed: u64 = workers.iter().map(|(s, _)| s.requests_completed).sum();
    assert_eq!(
        completed, 4,
        "2 images + 2 texts answered by the AF_XDP workers"
    );
    assert!(counters.steered > 0, "{counters:?}");
    assert!(!net.xdp_attached());
}

#[test]
fn sources_outside_the_allowlist_get_nothing() {
    let Some(net) = Netns::new(1) else {
        eprintln!("skipped: needs root and iproute2");
        return;
    };
    // Only some other host is allowed.
    let (stop, proxy) = start_proxy(&net, 1, vec!["10.255.255.1/32".into()]);
    let server: std::net::SocketAddr = format!("{}:7878", net.proxy_ip).parse().unwrap();
    let server6: std::net::SocketAddr = format!("[{}]:7878", net.proxy_ip6).parse().unwrap();
    let client = Netns::run_in(&net.client_ns, move || {
        // An IPv4-only allowlist closes IPv6 too.
        [server, server6].into_iter().all(|s| {
            let mut c = Client::connect(s).unwrap();
            c.timeout = std::time::Duration::from_millis(500);
            c.describe().is_err()
        })
    });
    let got_nothing = client.join().unwrap();
    stop.send(()).unwrap();
    let (_, counters) = proxy.join().unwrap();
    assert!(
        got_nothing,
        "a source outside the allowlist must get no answer"
    );
    assert!(counters.dropped_allowlist >= 2, "{counters:?}");
}

#[test]
fn an_unvalidated_source_gets_at_most_three_times_over_af_xdp() {
    let Some(net) = Netns::new(1) else {
        eprintln!("skipped: needs root and iproute2");
        return;
    };
    let (stop, proxy) = start_proxy(&net, 1, vec![]);
    let server: std::net::SocketAddr = format!("{}:7878", net.proxy_ip).parse().unwrap();
    let client = Netns::run_in(&net.client_ns, move || {
        // A bare socket (no HELLO) plays the forged source.
        let sock = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        sock.connect(server).unwrap();
        let img = tensorwire::client::RawImage {
            width: 1,
            height: 1,
            format: tensorwire::wire::PixelFormat::Rgb8,
            data: vec![1, 2, 3],
        };
        let one = tensorwire::client::image_rows(&img, 1, 1, 1472).remove(0);
        let mut describe = vec![0u8; 24];
        describe[..4].copy_from_slice(&[0x54, 0x57, 1, 4]);
        describe[15] = 2;
        describe[23] = 1;
        let (mut sent, mut received, mut codes) = (0, 0, Vec::new());
        let mut buf = vec![0u8; 65536];
        sock.set_read_timeout(Some(std::time::Duration::from_millis(500)))
            .unwrap();
        for d in [&one, &describe] {
            sock.send(d).unwrap();
            sent += d.len();
            while let Ok(n) = sock.recv(&mut buf) {
                received += n;
                codes.push(u16::from_be_bytes([buf[24], buf[25]]));
            }
        }
        // The Rust client validates by itself and gets the whole tensor.
        let mut c = Client::connect(server).unwrap();
        let shape = c
            .send_image(1, &img, None, 1472, &Faults::default())
            .unwrap()
            .tensors()
            .unwrap()[0]
            .shape
            .clone();
        (sent, received, codes, shape)
    });
    let (sent, received, codes, shape) = client.join().unwrap();
    stop.send(()).unwrap();
    let (workers, _) = proxy.join().unwrap();
    assert_eq!(codes, vec![11, 11], "two RETRYs");
    assert!(received <= 3 * sent, "{received} B for {sent} B");
    assert_eq!(shape, vec![1, 3, 224, 224]);
    let retries: u64 = workers.iter().map(|(s, _)| s.retries_sent).sum();
    let validations: u64 = workers.iter().map(|(s, _)| s.validations).sum();
    assert_eq!((retries, validations), (2, 1));
}

#[test]
fn two_rx_queues_both_serve() {
    let Some(net) = Netns::new(2) else {
        eprintln!("skipped: needs root and iproute2");
        return;
    };
    // 0 = every RX queue: the worker count comes from the driver.
    let (stop, proxy) = start_proxy(&net, 0, vec![]);
    let server: std::net::SocketAddr = format!("{}:7878", net.proxy_ip).parse().unwrap();
    // Many client sockets: veth picks the RX queue from the sender's flow.
    let client = Netns::run_in(&net.client_ns, move || {
        (0..24)
            .map(|_| {
                let mut c = Client::connect(server).unwrap();
                let r = c
                    .send_text(
                        2,
                        b"two queues, one answer each",
                        0,
                        1472,
                        &Faults::default(),
                    )
                    .unwrap();
                r.tensors().unwrap()[0].shape.clone()
            })
            .collect::<Vec<_>>()
    });
    let shapes = client.join();
    stop.send(()).unwrap();
    let (workers, _) = proxy.join().unwrap();
    let shapes = shapes.expect("every request answered");
    assert!(shapes.iter().all(|s| s == &shapes[0]));
    assert_eq!(workers.len(), 2);
    let per_queue: Vec<u64> = workers.iter().map(|(s, _)| s.requests_completed).collect();
    assert_eq!(per_queue.iter().sum::<u64>(), 24);
    assert!(
        per_queue.iter().all(|&n| n > 0),
        "both queues served: {per_queue:?}"
    );
}

/// `tensorwire run` over AF_XDP in the proxy namespace (small UMEM), run
/// through `wrapper` (e.g. setpriv) when given.
fn run_binary_over_xdp(
    net: &Netns,
    wrapper: &[&str],
    stderr: std::process::Stdio,
) -> std::process::Child {
    std::process::Command::new("ip")
        .args(["netns", "exec", &net.proxy_ns])
        .args(wrapper)
        .args([env!("CARGO_BIN_EXE_tensorwire"), "run"])
        .env("TENSORWIRE__INGRESS__MODE", "xdp")
        .env("TENSORWIRE__INGRESS__INTERFACE", &net.proxy_if)
        .env("TENSORWIRE__INGRESS__LISTEN", "0.0.0.0:7878")
        .env("TENSORWIRE__INGRESS__XDP__FRAMES", "4096")
        .env("TENSORWIRE__INGRESS__XDP__RING_SIZE", "1024")
        .stderr(stderr)
        .spawn()
        .unwrap()
}

/// Whether the proxy answers a DESCRIBE from the client namespace (a
/// dozen seconds at most: it may still be starting).
fn answers_describe(net: &Netns) -> bool {
    let server: std::net::SocketAddr = format!("{}:7878", net.proxy_ip).parse().unwrap();
    Netns::run_in(&net.client_ns, move || {
        let mut c = Client::connect(server).unwrap();
        c.timeout = std::time::Duration::from_millis(300);
        (0..40).any(|_| c.describe().is_ok())
    })
    .join()
    .unwrap()
}

#[test]
fn sigkill_leaves_no_program_attached() {
    let Some(net) = Netns::new(1) else {
        eprintln!("skipped: needs root and iproute2");
        return;
    };
    let mut child = run_binary_over_xdp(&net, &[], std::process::Stdio::null());
    let answered = answers_describe(&net);
    let attached_before = net.xdp_attached();
    // `tensorwire stats` against the child's admin endpoint (loopback of
    // the proxy namespace), after the next publication.
    std::thread::sleep(tensorwire::server::PUBLISH_EVERY + std::time::Duration::from_millis(300));
    let stats = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &net.proxy_ns,
            env!("CARGO_BIN_EXE_tensorwire"),
            "stats",
            "--json",
        ])
        .output()
        .unwrap();
    let stats: serde_json::Value = serde_json::from_slice(&stats.stdout).expect("stats JSON");
    // The same counters on /metrics (Prometheus text), per RX queue.
    let metrics = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &net.proxy_ns,
            env!("CARGO_BIN_EXE_tensorwire"),
            "stats",
        ])
        .output()
        .unwrap();
    let metrics = String::from_utf8_lossy(&metrics.stdout).to_string();
    assert!(
        metrics.contains("tensorwire_af_xdp_frames_received_total{queue=\"0\"}")
            && metrics.contains("tensorwire_xdp_program_steered_total"),
        "{metrics}"
    );
    // SAFETY: plain libc call on our child.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    child.wait().unwrap();
    assert!(answered, "the proxy answered over AF_XDP");
    assert!(attached_before);
    assert!(
        stats["xdp_program"]["steered"].as_u64().unwrap() > 0,
        "{stats}"
    );
    assert!(
        stats["queue0"]["af_xdp"]["frames_received"]
            .as_u64()
            .unwrap()
            > 0,
        "{stats}"
    );
    assert!(
        stats["queue0"]["proxy"]["describe_requests"]
            .as_u64()
            .unwrap()
            > 0,
        "{stats}"
    );
    assert!(
        !net.xdp_attached(),
        "after SIGKILL no XDP program may remain"
    );
    let ping = net.in_client(&["ping", "-c", "1", "-W", "2", &net.proxy_ip]);
    assert!(ping.status.success(), "plain traffic flows after the kill");
}

/// The benchmark's pieces work here: the kernel's live-frame generator
/// reaches every receiver (socket ingress with GRO-enabled veth, AF_XDP
/// ingress, bare drop), and no receiver counts more than was sent. Rates
/// are not asserted (that is the bench's job, not a test's).
#[test]
fn live_frame_generator_feeds_every_bench_receiver() {
    let Some(net) = Netns::new(1) else {
        eprintln!("skipped: needs root and iproute2");
        return;
    };
    use tensorwire::bench::{measure, Receiver, Sender};
    let dur = std::time::Duration::from_millis(300);
    for receiver in Receiver::ALL {
        for payload in [64usize, 1472] {
            let (rate, sent) = measure(&net, receiver, payload, dur, Sender::LiveFrames)
                .unwrap_or_else(|e| panic!("{}: {e:#}", receiver.name()));
            let got = rate * dur.as_secs_f64();
            assert!(sent > 0, "{}: nothing sent", receiver.name());
            assert!(
                got > 0.0,
                "{} {payload} B: nothing received",
                receiver.name()
            );
            assert!(
                got <= sent as f64 + 1.0,
                "{}: {got} received > {sent} sent",
                receiver.name()
            );
        }
    }
}

/// The AF_XDP worker waits on the upstream connections' epoll fd next to
/// its XSK socket: the same identity round trip as over the UDP socket,
/// with a real KServe server in the proxy's namespace.
#[test]
fn kserve_upstream_over_af_xdp() {
    let Some(net) = Netns::new(1) else {
        eprintln!("skipped: needs root and iproute2");
        return;
    };
    // Started from a thread inside the proxy namespace: the server
    // process inherits it, and its readiness is checked there.
    let server = Netns::run_in(&net.proxy_ns, support::PyServer::kserve)
        .join()
        .unwrap();
    let url = server.url();
    let text = tensorwire::config::DEFAULT_CONFIG
        .replace("upstream = \"echo\"", "upstream = \"triton\"")
        + &format!(
            "\n[upstreams.triton]\nkind = \"kserve\"\nurl = \"{url}\"\nmodel = \"identity\"\n"
        );
    // Started in the proxy namespace, where the KServe server listens.
    let (stop_tx, proxy) = start_proxy_with(&net, Config::from_toml(&text).unwrap(), 1);
    let server_addr: std::net::SocketAddr = format!("{}:7878", net.proxy_ip).parse().unwrap();
    let client = Netns::run_in(&net.client_ns, move || {
        let cfg = Config::builtin();
        let pipelines = cfg.build_pipelines().unwrap();
        let (Plan::Image(img_plan), Plan::Text(txt_plan)) = (
            pipelines.by_id(1).unwrap().plan.clone(),
            pipelines.by_id(2).unwrap().plan.clone(),
        ) else {
            unreachable!()
        };
        let mut c = Client::connect(server_addr).unwrap();
        c.timeout = std::time::Duration::from_secs(20);
        let d = c.describe().unwrap();
        assert_eq!(d["upstreams"][0]["ready_at_start"], true, "{d}");
        let img = load_image(&testdata("images/chelsea.png"), None).unwrap();
        let want = img_plan.run_whole(&img.data, img.width, img.height, img.format);
        let t = c
            .send_image(1, &img, None, 1472, &Faults::default())
            .unwrap()
            .tensors()
            .unwrap();
        assert!(t[0].data == want, "image tensor through AF_XDP and KServe");
        let text = "Hello from the client namespace";
        let t = c
            .send_text(2, text.as_bytes(), 0, 1472, &Faults::default())
            .unwrap()
            .tensors()
            .unwrap();
        assert_eq!(t, reference::whole_text_tensors(&txt_plan, text).unwrap());
    });
    let result = client.join();
    stop_tx.send(()).unwrap();
    let (workers, _) = proxy.join().unwrap();
    drop(server);
    result.expect("client checks");
    let s = &workers[0].0;
    assert_eq!(s.upstream_calls, 2);
    assert_eq!(s.requests_completed, 2);
    assert_eq!(s.upstreams[0].pool.calls_ok, 2);
}

/// Least privilege: `tensorwire run` over AF_XDP as an unprivileged user
/// (nobody) holding only CAP_NET_ADMIN, CAP_BPF, CAP_PERFMON, CAP_NET_RAW
/// and CAP_IPC_LOCK (ambient, as systemd's AmbientCapabilities gives
/// them): it serves, and once set up it holds no capability at all and
/// has no_new_privs.
#[test]
fn af_xdp_runs_unprivileged_with_the_documented_capabilities_then_drops_them() {
    let Some(net) = Netns::new(1) else {
        eprintln!("skipped: needs root and iproute2");
        return;
    };
    const CAPS: &str = "+net_admin,+bpf,+perfmon,+net_raw,+ipc_lock";
    let (inh, amb) = (
        format!("--inh-caps={CAPS}"),
        format!("--ambient-caps={CAPS}"),
    );
    let setpriv = [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        &inh,
        &amb,
    ];
    let child = run_binary_over_xdp(&net, &setpriv, std::process::Stdio::piped());
    let answered = answers_describe(&net);
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
            .unwrap_or("")
            .to_string()
    };
    let (uid, eff, prm, amb, nnp) = (
        field("Uid:"),
        field("CapEff:"),
        field("CapPrm:"),
        field("CapAmb:"),
        field("NoNewPrivs:"),
    );
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(answered, "the proxy answered over AF_XDP as nobody:\n{log}");
    assert!(uid.starts_with("65534"), "{uid}");
    assert_eq!(
        eff, "0000000000000000",
        "effective capabilities after setup"
    );
    assert_eq!(
        prm, "0000000000000000",
        "permitted capabilities after setup"
    );
    assert_eq!(amb, "0000000000000000", "ambient capabilities after setup");
    assert_eq!(nnp, "1", "no_new_privs");
    assert_eq!(out.status.code(), Some(0), "drained and exited:\n{log}");
    assert!(!net.xdp_attached(), "detached at exit");
}
