//! Least privilege for AF_XDP. The ingress needs, at start only:
//! CAP_NET_ADMIN (attach the XDP program), CAP_BPF and CAP_PERFMON (load
//! it: the verifier refuses its packet-pointer arithmetic to a process
//! without CAP_PERFMON), CAP_NET_RAW (AF_XDP sockets) and either
//! CAP_IPC_LOCK or a large enough RLIMIT_MEMLOCK (the UMEM is locked
//! memory). Kernels before 5.8 have no CAP_BPF/CAP_PERFMON: CAP_SYS_ADMIN
//! stands for both. Once the program is attached and the sockets are
//! bound, every capability is dropped and no_new_privs is set: what runs
//! for the process's life holds none.

use caps::{CapSet, Capability};

fn has(c: Capability) -> bool {
    caps::has_cap(None, CapSet::Effective, c).unwrap_or(false)
}

/// Why this process cannot run the AF_XDP ingress, if it cannot.
pub fn xdp_missing() -> Option<String> {
    let admin = has(Capability::CAP_SYS_ADMIN);
    let mut missing = Vec::new();
    for (c, name) in [
        (Capability::CAP_NET_ADMIN, "CAP_NET_ADMIN"),
        (Capability::CAP_NET_RAW, "CAP_NET_RAW"),
    ] {
        if !has(c) {
            missing.push(name);
        }
    }
    for (c, name) in [
        (Capability::CAP_BPF, "CAP_BPF"),
        (Capability::CAP_PERFMON, "CAP_PERFMON"),
    ] {
        if !has(c) && !admin {
            missing.push(name);
        }
    }
    (!missing.is_empty()).then(|| {
        format!(
            "AF_XDP needs {} (effective capabilities; or CAP_SYS_ADMIN for CAP_BPF and \
             CAP_PERFMON on kernels before 5.8)",
            missing.join(", ")
        )
    })
}

/// Makes room to lock `bytes` of UMEM: nothing to do with CAP_IPC_LOCK;
/// else the soft RLIMIT_MEMLOCK is raised to the hard one, and an error
/// names the limit and the capability if that is still too small.
pub fn allow_locked_memory(bytes: u64) -> Result<(), String> {
    if has(Capability::CAP_IPC_LOCK) {
        return Ok(());
    }
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a valid rlimit out-parameter.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) } != 0 {
        return Err(format!(
            "getrlimit(RLIMIT_MEMLOCK): {}",
            std::io::Error::last_os_error()
        ));
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: a valid rlimit; raising the soft limit to the hard one
        // needs no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &raised) } == 0 {
            lim = raised;
        }
    }
    if lim.rlim_cur == libc::RLIM_INFINITY || lim.rlim_cur >= bytes {
        return Ok(());
    }
    Err(format!(
        "the AF_XDP UMEM needs {} MiB of locked memory but RLIMIT_MEMLOCK is {} KiB: grant \
         CAP_IPC_LOCK, or raise the limit (systemd LimitMEMLOCK=infinity, docker --ulimit \
         memlock=-1, ulimit -l unlimited), or lower ingress.xdp.frames",
        bytes >> 20,
        lim.rlim_cur >> 10
    ))
}

/// Drops every capability (all sets) and sets no_new_privs. Called once
/// setup that needed them is done.
pub fn drop_all() -> Result<(), String> {
    // SAFETY: prctl with constant arguments.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(format!("no_new_privs: {}", std::io::Error::last_os_error()));
    }
    for set in [
        CapSet::Ambient,
        CapSet::Inheritable,
        CapSet::Effective,
        CapSet::Permitted,
    ] {
        caps::clear(None, set).map_err(|e| format!("dropping {set:?} capabilities: {e}"))?;
    }
    // The bounding set needs CAP_SETPCAP to shrink; what is permitted is
    // empty already, so nothing can come back (no_new_privs stops exec).
    Ok(())
}
