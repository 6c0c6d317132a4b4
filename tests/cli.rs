//! The binary's edges: config errors exit 78 naming the key; environment
//! overrides apply; send commands talk to a running proxy.

use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tensorwire"))
}

#[test]
fn bad_config_exits_78_naming_the_key() {
    let dir = std::env::temp_dir().join(format!("tw-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.toml");
    let text = tensorwire::config::DEFAULT_CONFIG.replace("max_length = 256", "max_length = 0");
    std::fs::write(&path, text).unwrap();
    let out = bin().args(["run", "--config"]).arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("pipelines[1].text.max_length"), "{err}");

    let out = bin()
        .arg("run")
        .env("TENSORWIRE__LIMITS__MAX_DATAGRAM", "12")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("limits.max_datagram"));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn run_describe_send_and_stop() {
    // A free port: bind, read it, release.
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let mut proxy = bin()
        .arg("run")
        .env("TENSORWIRE__INGRESS__LISTEN", &listen)
        .env("TENSORWIRE__LIMITS__REASSEMBLY_TIMEOUT_MS", "400")
        .spawn()
        .unwrap();
    let describe = || {
        bin()
            .args(["describe", "--server", &listen, "--timeout", "0.5"])
            .output()
            .unwrap()
    };
    let mut out = describe();
    for _ in 0..40 {
        if out.status.success() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        out = describe();
    }
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let text = bin()
        .args(["send-text", "-", "--server", &listen])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(b"Hello world")?;
            c.wait_with_output()
        })
        .unwrap();
    let npy = std::env::temp_dir().join(format!("tw-cli-{}.npy", std::process::id()));
    let image = bin()
        .args(["send-image", "--server", &listen, "--tiles", "--out"])
        .arg(&npy)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/testdata/images/chelsea.png"
        ))
        .output()
        .unwrap();
    // SIGTERM: the proxy stops cleanly.
    unsafe { libc::kill(proxy.id() as i32, libc::SIGTERM) };
    let status = proxy.wait().unwrap();
    assert!(
        out.status.success(),
        "describe failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("\"reassembly_timeout_ms\": 400"),
        "{stdout}"
    );
    let t = String::from_utf8_lossy(&text.stdout);
    assert!(
        t.contains("[101, 7592, 2088, 102"),
        "ids of 'Hello world': {t}"
    );
    assert!(
        image.status.success(),
        "{}",
        String::from_utf8_lossy(&image.stderr)
    );
    let bytes = std::fs::read(&npy).unwrap();
    assert_eq!(&bytes[..6], b"\x93NUMPY");
    assert_eq!(
        bytes.len() - (10 + u16::from_le_bytes([bytes[8], bytes[9]]) as usize),
        3 * 224 * 224 * 4
    );
    std::fs::remove_file(&npy).ok();
    assert!(status.success(), "proxy exit: {status:?}");
}

mod ops_support;

fn code(out: &std::process::Output) -> Option<i32> {
    out.status.code()
}

#[test]
fn config_check_exits_0_or_78() {
    let dir = ops_support::temp_dir("cli-check");
    let good = dir.join("good.toml");
    std::fs::write(&good, tensorwire::config::DEFAULT_CONFIG).unwrap();
    let out = bin().args(["config", "check"]).arg(&good).output().unwrap();
    assert_eq!(code(&out), Some(0), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok (2 pipeline(s)"));
    let bad = dir.join("bad.toml");
    let text = tensorwire::config::DEFAULT_CONFIG.replace("width = 224", "width = 0");
    std::fs::write(&bad, text).unwrap();
    let out = bin().args(["config", "check"]).arg(&bad).output().unwrap();
    assert_eq!(code(&out), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("pipelines[0].image.width"));
    // A tokenizer that does not load is caught too (what `run` would build).
    let text = tensorwire::config::DEFAULT_CONFIG.replace(
        "tokenizer = \"builtin:all-MiniLM-L6-v2\"",
        "tokenizer = \"/nonexistent/tokenizer.json\"",
    );
    std::fs::write(&bad, text).unwrap();
    let out = bin().args(["config", "check"]).arg(&bad).output().unwrap();
    assert_eq!(code(&out), Some(78), "{out:?}");
    let out = bin()
        .args(["config", "check"])
        .arg(dir.join("missing.toml"))
        .output()
        .unwrap();
    assert_eq!(code(&out), Some(78), "{out:?}");
}

#[test]
fn config_show_is_the_effective_config() {
    let out = bin()
        .args(["config", "show"])
        .env("TENSORWIRE__LIMITS__REASSEMBLY_TIMEOUT_MS", "400")
        .env("TENSORWIRE__LOG__FORMAT", "json")
        .output()
        .unwrap();
    assert_eq!(code(&out), Some(0), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    // TOML that loads again, with the environment applied.
    let dir = ops_support::temp_dir("cli-show");
    let path = dir.join("shown.toml");
    std::fs::write(&path, &text).unwrap();
    let c = tensorwire::config::Config::load(Some(&path)).unwrap();
    assert_eq!(c.limits.reassembly_timeout_ms, 400);
    assert_eq!(c.log.format, tensorwire::config::LogFormat::Json);
    assert_eq!(c.pipelines.len(), 2);
    let out = bin()
        .args(["config", "show", "--format", "json", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["limits"]["reassembly_timeout_ms"], 400);
    assert_eq!(j["admin"]["listen"], "127.0.0.1:9878");
}

#[test]
fn usage_errors_exit_64_help_exits_0() {
    for args in [
        &["--bogus"][..],
        &[],
        &["send-image"],
        &["stats", "--admin", "not-an-address"],
        &["config", "show", "--format", "yaml"],
        &["completions", "tcsh"],
    ] {
        let out = bin().args(args).output().unwrap();
        assert_eq!(code(&out), Some(64), "{args:?}: {out:?}");
        assert!(!out.stderr.is_empty(), "{args:?}");
    }
    let out = bin().arg("--help").output().unwrap();
    assert_eq!(code(&out), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("64 usage error") && help.contains("78"),
        "{help}"
    );
    // Every argument of every command has a help text.
    for cmd in [
        "run",
        "describe",
        "stats",
        "health",
        "send-image",
        "send-text",
        "bench",
        "bench-upstream",
        "demo",
        "completions",
    ] {
        let out = bin().args([cmd, "--help"]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        for line in text.lines().filter(|l| l.trim_start().starts_with("--")) {
            let l = line.trim();
            let help = l.split_once("  ").map(|(_, h)| h.trim()).unwrap_or("");
            assert!(
                !help.is_empty() && !help.starts_with('['),
                "`{cmd} --help`: an argument without help: {l}"
            );
        }
    }
}

#[test]
fn completions_and_a_closed_stdout() {
    for shell in ["bash", "zsh", "fish"] {
        let out = bin().args(["completions", shell]).output().unwrap();
        assert_eq!(code(&out), Some(0));
        let s = String::from_utf8_lossy(&out.stdout);
        assert!(
            s.contains("tensorwire") && s.contains("send-image"),
            "{shell}"
        );
    }
    // The reader is gone before anything is written (`| head -c0`): no
    // panic, status 0.
    let mut child = bin()
        .args(["completions", "bash"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(code(&out), Some(0), "{out:?}");
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
}

#[test]
fn describe_exits_3_when_an_upstream_is_down() {
    let url = format!("http://127.0.0.1:{}", ops_support::free_port());
    let mut p = ops_support::Proxy::start(
        "cli-describe",
        &ops_support::kserve_config(&url, "resnet50", ""),
    );
    p.wait_for("/healthz", 200, std::time::Duration::from_secs(20));
    let server = p.udp.to_string();
    let mut out = bin()
        .args(["describe", "--server", &server, "--timeout", "1"])
        .output()
        .unwrap();
    for _ in 0..40 {
        if code(&out) != Some(1) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        out = bin()
            .args(["describe", "--server", &server, "--timeout", "1"])
            .output()
            .unwrap();
    }
    assert_eq!(code(&out), Some(3), "{out:?}");
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["upstreams"][0]["ready_now"], false);
    assert!(String::from_utf8_lossy(&out.stderr).contains("upstream triton not ready"));
}

#[test]
fn demo_runs_from_any_directory() {
    let dir = ops_support::temp_dir("cli-demo");
    let out = bin().arg("demo").current_dir(&dir).output().unwrap();
    assert_eq!(
        code(&out),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // bench-upstream finds testdata from elsewhere too (its start-up
    // fails later without a KServe server: --url points nowhere).
    let out = bin()
        .args([
            "bench-upstream",
            "--url",
            "http://127.0.0.1:1",
            "--seconds",
            "0.1",
        ])
        .current_dir(&dir)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("cannot find testdata"), "{err}");
}
