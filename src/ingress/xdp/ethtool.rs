//! The few driver settings we read or change, through the SIOCETHTOOL
//! ioctl in the calling thread's network namespace (sysfs would show the
//! namespace /sys was mounted in, which is wrong for a thread that entered
//! another one with setns).

use std::io;

const SIOCETHTOOL: libc::c_ulong = 0x8946;
const ETHTOOL_GCHANNELS: u32 = 0x3c;
const ETHTOOL_SGRO: u32 = 0x2c;

/// One SIOCETHTOOL call on `ifname`; `cmd` is the command's struct, whose
/// first u32 is the command number.
fn ethtool(ifname: &str, cmd: &mut [u32]) -> io::Result<()> {
    // SAFETY: a zeroed ifreq; the name fits (checked); ifr_data points at
    // `cmd`, which outlives the ioctl; the socket is closed below.
    unsafe {
        let mut ifr: libc::ifreq = std::mem::zeroed();
        let name = ifname.as_bytes();
        if name.len() >= ifr.ifr_name.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "interface name too long",
            ));
        }
        for (d, &b) in ifr.ifr_name.iter_mut().zip(name) {
            *d = b as libc::c_char;
        }
        ifr.ifr_ifru.ifru_data = cmd.as_mut_ptr() as *mut libc::c_char;
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let r = libc::ioctl(fd, SIOCETHTOOL as _, &mut ifr);
        let err = io::Error::last_os_error();
        libc::close(fd);
        if r != 0 {
            return Err(err);
        }
    }
    Ok(())
}

/// RX queues of an interface (ETHTOOL_GCHANNELS); 1 when the driver does
/// not say.
pub fn rx_queues(ifname: &str) -> u32 {
    // struct ethtool_channels: cmd, max_rx, max_tx, max_other,
    // max_combined, rx_count, tx_count, other_count, combined_count.
    let mut ch = [0u32; 9];
    ch[0] = ETHTOOL_GCHANNELS;
    match ethtool(ifname, &mut ch) {
        Ok(()) => ch[5].max(ch[8]).max(1),
        Err(_) => 1,
    }
}

/// Turns GRO on or off (ETHTOOL_SGRO). On veth, GRO also switches the
/// receive side to NAPI, which frames sent by XDP (XDP_TX/REDIRECT from the
/// peer) need when no XDP program is attached.
pub fn set_gro(ifname: &str, on: bool) -> io::Result<()> {
    // struct ethtool_value: cmd, data.
    let mut v = [ETHTOOL_SGRO, on as u32];
    ethtool(ifname, &mut v)
}
