//! The KServe v2 test server (testdata/kserve/models.py, from the test
//! virtualenv) started for `bench-upstream`; killed on drop.

use anyhow::{bail, Context, Result};
use std::path::Path;
use std::time::{Duration, Instant};

/// A KServe server process on a free loopback port.
pub struct KserveProcess {
    child: std::process::Child,
    pub url: String,
}

impl KserveProcess {
    /// Starts `testdata/kserve/models.py` with `python` and waits (up to
    /// 90 s) until its `identity` model is ready.
    pub fn start(python: &Path, testdata: &Path) -> Result<KserveProcess> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = std::process::Command::new(python)
            .arg(testdata.join("kserve/models.py"))
            .args(["--http_port", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .with_context(|| format!("start {} (run `make testenv`)", python.display()))?;
        let url = format!("http://127.0.0.1:{port}");
        let server = KserveProcess { child, url };
        let parsed = crate::upstream::HttpUrl::parse(&server.url).map_err(anyhow::Error::msg)?;
        let t0 = Instant::now();
        while crate::http_pool::blocking::check_ready(
            crate::upstream::UpstreamKind::Kserve,
            &parsed,
            "identity",
            "",
            Duration::from_millis(500),
        )
        .is_err()
        {
            if t0.elapsed() > Duration::from_secs(90) {
                bail!(
                    "the KServe server at {} is not ready after 90 s",
                    server.url
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(server)
    }
}

impl Drop for KserveProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
