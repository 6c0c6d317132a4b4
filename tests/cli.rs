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
