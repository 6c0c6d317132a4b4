//! A private test network for the demo and the AF_XDP tests: two network
//! namespaces (client, proxy) joined by a veth pair, with unique names and
//! 10.x / fd00:: addresses, torn down on drop (also when a test panics).
//! Needs root and iproute2: [`Netns::new`] returns `None` otherwise.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

static SEQ: AtomicU32 = AtomicU32::new(0);

pub struct Netns {
    pub client_ns: String,
    pub proxy_ns: String,
    pub client_if: String,
    pub proxy_if: String,
    pub client_ip: String,
    pub proxy_ip: String,
    pub client_ip6: String,
    pub proxy_ip6: String,
}

fn sh(args: &[&str]) -> bool {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn must(args: &[&str]) {
    let o = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("run command");
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

impl Netns {
    /// `rx_queues`: RX/TX queues of the proxy's veth end.
    pub fn new(rx_queues: u32) -> Option<Netns> {
        // SAFETY: plain libc call.
        if unsafe { libc::geteuid() } != 0 || !sh(&["ip", "-V"]) {
            return None;
        }
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}x{}", std::process::id() % 100_000, n);
        let subnet = 100 + (std::process::id() % 50) as u8 * 2 + (n % 2) as u8;
        let t = Netns {
            client_ns: format!("twc{id}"),
            proxy_ns: format!("twp{id}"),
            client_if: format!("twc{id}"),
            proxy_if: format!("twp{id}"),
            client_ip: format!("10.{subnet}.{n}.1"),
            proxy_ip: format!("10.{subnet}.{n}.2"),
            client_ip6: format!("fd00:{subnet}:{n}::1"),
            proxy_ip6: format!("fd00:{subnet}:{n}::2"),
        };
        // From here on Drop cleans up whatever was made.
        if !sh(&["ip", "netns", "add", &t.client_ns]) {
            return None;
        }
        must(&["ip", "netns", "add", &t.proxy_ns]);
        let q = rx_queues.to_string();
        must(&[
            "ip",
            "link",
            "add",
            &t.client_if,
            "numtxqueues",
            &q,
            "numrxqueues",
            &q,
            "type",
            "veth",
            "peer",
            "name",
            &t.proxy_if,
            "numtxqueues",
            &q,
            "numrxqueues",
            &q,
        ]);
        must(&["ip", "link", "set", &t.client_if, "netns", &t.client_ns]);
        must(&["ip", "link", "set", &t.proxy_if, "netns", &t.proxy_ns]);
        for (ns, dev, ip, ip6) in [
            (&t.client_ns, &t.client_if, &t.client_ip, &t.client_ip6),
            (&t.proxy_ns, &t.proxy_if, &t.proxy_ip, &t.proxy_ip6),
        ] {
            must(&[
                "ip",
                "-n",
                ns,
                "addr",
                "add",
                &format!("{ip}/24"),
                "dev",
                dev,
            ]);
            must(&[
                "ip",
                "-n",
                ns,
                "addr",
                "add",
                &format!("{ip6}/64"),
                "dev",
                dev,
                "nodad",
            ]);
            must(&["ip", "-n", ns, "link", "set", dev, "up"]);
            must(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        Some(t)
    }

    /// Runs `f` on a new thread inside namespace `ns`.
    pub fn run_in<T: Send + 'static>(
        ns: &str,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let path = format!("/var/run/netns/{ns}");
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).expect("netns file");
            use std::os::fd::AsRawFd;
            // SAFETY: a valid netns fd; affects only this thread.
            let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
    }

    pub fn in_client(&self, args: &[&str]) -> std::process::Output {
        Command::new("ip")
            .args(["netns", "exec", &self.client_ns])
            .args(args)
            .output()
            .expect("run")
    }

    pub fn in_proxy(&self, args: &[&str]) -> std::process::Output {
        Command::new("ip")
            .args(["netns", "exec", &self.proxy_ns])
            .args(args)
            .output()
            .expect("run")
    }

    /// Whether any XDP program is attached to the proxy's interface.
    pub fn xdp_attached(&self) -> bool {
        let o = self.in_proxy(&["ip", "-d", "link", "show", "dev", &self.proxy_if]);
        String::from_utf8_lossy(&o.stdout).contains("prog/xdp")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespaces deletes the veth pair and detaches XDP.
        sh(&["ip", "netns", "del", &self.client_ns]);
        sh(&["ip", "netns", "del", &self.proxy_ns]);
    }
}
