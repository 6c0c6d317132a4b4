//! Loads the XDP program and attaches it through a bpf_link, so nothing
//! stays attached when the process exits or is killed. The kernel picks
//! native (driver) mode where the driver has XDP, generic otherwise.

use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{Link, MapCore, MapFlags};
use std::mem::MaybeUninit;
use std::net::IpAddr;
use std::os::fd::RawFd;

#[allow(clippy::all, warnings)]
mod skel {
    include!(concat!(env!("OUT_DIR"), "/steer.skel.rs"));
}
use skel::{SteerSkel, SteerSkelBuilder};

/// XDP attach or map errors.
#[derive(Debug, thiserror::Error)]
pub enum XdpError {
    #[error("interface {0}: {1}")]
    Interface(String, std::io::Error),
    #[error("BPF: {0}")]
    Bpf(#[from] libbpf_rs::Error),
    #[error("allowlist entry `{0}` is not an address or CIDR prefix")]
    Allowlist(String),
}

/// The program's per-CPU counters, summed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct XdpCounters {
    pub steered: u64,
    pub passed: u64,
    pub dropped_allowlist: u64,
    pub malformed: u64,
    pub no_socket: u64,
}

/// The attached program. Dropping it detaches.
pub struct SteeringProgram {
    skel: SteerSkel<'static>,
    _link: Link,
    pub ifindex: u32,
    /// "native" or "generic", as the kernel reports after attach.
    pub mode: &'static str,
}

/// An allowlist entry: an address or CIDR prefix.
fn parse_prefix(s: &str) -> Result<(IpAddr, u32), XdpError> {
    let bad = || XdpError::Allowlist(s.to_string());
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l.parse::<u32>().map_err(|_| bad())?)),
        None => (s, None),
    };
    let ip: IpAddr = addr.parse().map_err(|_| bad())?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = len.unwrap_or(max);
    if len > max {
        return Err(bad());
    }
    Ok((ip, len))
}

impl SteeringProgram {
    /// Loads the program for UDP port `port` with an optional source
    /// allowlist (addresses or CIDR prefixes; empty = everyone) and
    /// attaches it to `ifname`.
    pub fn attach(
        ifname: &str,
        port: u16,
        allowlist: &[String],
    ) -> Result<SteeringProgram, XdpError> {
        let prefixes = allowlist
            .iter()
            .map(|s| parse_prefix(s))
            .collect::<Result<Vec<_>, _>>()?;
        let ifindex = if_index(ifname)?;
        // The skeleton borrows its object for its whole life; one small
        // allocation per attach is leaked on purpose.
        let object: &'static mut MaybeUninit<libbpf_rs::OpenObject> =
            Box::leak(Box::new(MaybeUninit::uninit()));
        let mut open = SteerSkelBuilder::default().open(object)?;
        if let Some(ro) = open.maps.rodata_data.as_deref_mut() {
            ro.ingress_port = port;
            ro.allowlist = !prefixes.is_empty() as u8;
        }
        let skel = open.load()?;
        for (ip, len) in &prefixes {
            let mut key = len.to_ne_bytes().to_vec();
            match ip {
                IpAddr::V4(a) => {
                    key.extend_from_slice(&a.octets());
                    skel.maps.allow_v4.update(&key, &[1], MapFlags::ANY)?;
                }
                IpAddr::V6(a) => {
                    key.extend_from_slice(&a.octets());
                    skel.maps.allow_v6.update(&key, &[1], MapFlags::ANY)?;
                }
            }
        }
        let link = skel.progs.steer.attach_xdp(ifindex as i32)?;
        let mode = attached_mode(ifname);
        Ok(SteeringProgram {
            skel,
            _link: link,
            ifindex,
            mode,
        })
    }

    /// Steers queue `queue`'s datagrams into the AF_XDP socket `fd`.
    pub fn register_socket(&self, queue: u32, fd: RawFd) -> Result<(), XdpError> {
        self.skel.maps.xsks.update(
            &queue.to_ne_bytes(),
            &(fd as u32).to_ne_bytes(),
            MapFlags::ANY,
        )?;
        Ok(())
    }

    /// The program's counters, summed over CPUs.
    pub fn counters(&self) -> Result<XdpCounters, XdpError> {
        let mut v = [0u64; 5];
        for (i, slot) in v.iter_mut().enumerate() {
            let per_cpu = self
                .skel
                .maps
                .counters
                .lookup_percpu(&(i as u32).to_ne_bytes(), MapFlags::ANY)?;
            *slot = per_cpu
                .unwrap_or_default()
                .iter()
                .map(|b| u64::from_ne_bytes(b[..8].try_into().expect("u64 values")))
                .sum();
        }
        Ok(XdpCounters {
            steered: v[0],
            passed: v[1],
            dropped_allowlist: v[2],
            malformed: v[3],
            no_socket: v[4],
        })
    }
}

pub fn if_index(ifname: &str) -> Result<u32, XdpError> {
    let c = std::ffi::CString::new(ifname)
        .map_err(|e| XdpError::Interface(ifname.into(), std::io::Error::other(e)))?;
    // SAFETY: a valid NUL-terminated string.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        return Err(XdpError::Interface(
            ifname.into(),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(idx)
}

/// Which XDP mode the kernel chose, from sysfs-free `ip -d link` style
/// flags: generic attach shows as "xdpgeneric".
fn attached_mode(ifname: &str) -> &'static str {
    match std::process::Command::new("ip")
        .args(["-d", "link", "show", "dev", ifname])
        .output()
    {
        Ok(o) if String::from_utf8_lossy(&o.stdout).contains("xdpgeneric") => "generic",
        Ok(o) if String::from_utf8_lossy(&o.stdout).contains("xdp") => "native",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowlist_prefixes() {
        assert_eq!(
            parse_prefix("10.1.2.3").unwrap(),
            ("10.1.2.3".parse().unwrap(), 32)
        );
        assert_eq!(
            parse_prefix("10.1.0.0/16").unwrap(),
            ("10.1.0.0".parse().unwrap(), 16)
        );
        assert_eq!(
            parse_prefix("fd00::/8").unwrap(),
            ("fd00::".parse().unwrap(), 8)
        );
        assert!(parse_prefix("10.1.0.0/33").is_err());
        assert!(parse_prefix("nonsense").is_err());
    }
}
