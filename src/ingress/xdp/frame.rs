//! Ethernet (+ one VLAN tag) / IPv4 or IPv6 / UDP frames as AF_XDP sees
//! them: a parser that finds the UDP payload in place, and a builder for
//! reply frames (addresses and ports swapped, checksums computed). Pure:
//! no I/O, no allocation. Hand-written in smoltcp's style because the hot
//! path needs exactly these few fields, borrowed, with the reply built
//! straight into a UMEM frame.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

const ETH_HLEN: usize = 14;
const VLAN_HLEN: usize = 4;
const IPV4_HLEN: usize = 20;
const IPV6_HLEN: usize = 40;
const UDP_HLEN: usize = 8;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const IPPROTO_UDP: u8 = 17;

/// What a reply to this frame's sender needs: the link-layer path back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyPath {
    /// The peer's MAC (the request's source).
    pub peer_mac: [u8; 6],
    /// Our MAC (the request's destination).
    pub our_mac: [u8; 6],
    /// VLAN tag (TPID, TCI) to keep, if the request had one.
    pub vlan: Option<(u16, u16)>,
    /// Our address and port (the request's destination).
    pub ours: SocketAddr,
    /// IPv4 TTL / IPv6 hop limit to send with.
    pub hop_limit: u8,
}

/// A UDP datagram found in a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Datagram {
    pub from: SocketAddr,
    pub path: ReplyPath,
    /// Byte range of the UDP payload in the frame.
    pub payload: (usize, usize),
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// Finds the UDP datagram in an Ethernet frame; `None` for anything else
/// or anything cut short (the XDP program already filtered on port).
pub fn parse(frame: &[u8]) -> Option<Datagram> {
    if frame.len() < ETH_HLEN {
        return None;
    }
    let mut peer_mac = [0u8; 6];
    let mut our_mac = [0u8; 6];
    our_mac.copy_from_slice(&frame[0..6]);
    peer_mac.copy_from_slice(&frame[6..12]);
    let mut proto = be16(frame, 12);
    let mut at = ETH_HLEN;
    let mut vlan = None;
    if proto == ETH_P_8021Q || proto == ETH_P_8021AD {
        if frame.len() < at + VLAN_HLEN {
            return None;
        }
        vlan = Some((proto, be16(frame, at)));
        proto = be16(frame, at + 2);
        at += VLAN_HLEN;
    }
    let (from_ip, to_ip, hop_limit, udp_at, ip_end) = match proto {
        ETH_P_IP => {
            let ip = frame.get(at..at + IPV4_HLEN)?;
            let ihl = (ip[0] & 0x0f) as usize * 4;
            if ip[0] >> 4 != 4
                || ihl < IPV4_HLEN
                || ip[9] != IPPROTO_UDP
                || be16(ip, 6) & 0x3fff != 0
            {
                return None;
            }
            let total = be16(ip, 2) as usize;
            let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
            let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
            (IpAddr::V4(src), IpAddr::V4(dst), 64, at + ihl, at + total)
        }
        ETH_P_IPV6 => {
            let ip = frame.get(at..at + IPV6_HLEN)?;
            if ip[0] >> 4 != 6 || ip[6] != IPPROTO_UDP {
                return None;
            }
            let payload_len = be16(ip, 4) as usize;
            let src: [u8; 16] = ip[8..24].try_into().ok()?;
            let dst: [u8; 16] = ip[24..40].try_into().ok()?;
            (
                IpAddr::V6(Ipv6Addr::from(src)),
                IpAddr::V6(Ipv6Addr::from(dst)),
                64,
                at + IPV6_HLEN,
                at + IPV6_HLEN + payload_len,
            )
        }
        _ => return None,
    };
    let udp = frame.get(udp_at..udp_at + UDP_HLEN)?;
    let udp_len = be16(udp, 4) as usize;
    let end = udp_at + udp_len;
    // Ethernet may pad short frames: trust the IP and UDP lengths, not the
    // frame's.
    if udp_len < UDP_HLEN || end > frame.len() || end > ip_end {
        return None;
    }
    Some(Datagram {
        from: SocketAddr::new(from_ip, be16(udp, 0)),
        path: ReplyPath {
            peer_mac,
            our_mac,
            vlan,
            ours: SocketAddr::new(to_ip, be16(udp, 2)),
            hop_limit,
        },
        payload: (udp_at + UDP_HLEN, end),
    })
}

/// Bytes of headers a reply to `to` over `path` needs before its payload.
pub fn header_len(path: &ReplyPath, to: &SocketAddr) -> usize {
    ETH_HLEN
        + if path.vlan.is_some() { VLAN_HLEN } else { 0 }
        + if to.is_ipv6() { IPV6_HLEN } else { IPV4_HLEN }
        + UDP_HLEN
}

/// Writes a whole reply frame (headers + `payload`) into `buf`; returns
/// its length, or `None` when `buf` is too small or the address families
/// of `to` and our address differ.
pub fn build_reply(
    buf: &mut [u8],
    path: &ReplyPath,
    to: &SocketAddr,
    payload: &[u8],
) -> Option<usize> {
    let hl = header_len(path, to);
    let total = hl + payload.len();
    if buf.len() < total || to.is_ipv6() != path.ours.is_ipv6() {
        return None;
    }
    buf[0..6].copy_from_slice(&path.peer_mac);
    buf[6..12].copy_from_slice(&path.our_mac);
    let mut at = 12;
    if let Some((tpid, tci)) = path.vlan {
        buf[at..at + 2].copy_from_slice(&tpid.to_be_bytes());
        buf[at + 2..at + 4].copy_from_slice(&tci.to_be_bytes());
        at += 4;
    }
    let udp_len = (UDP_HLEN + payload.len()) as u16;
    let udp_at;
    let mut sum: u32;
    match (to.ip(), path.ours.ip()) {
        (IpAddr::V4(dst), IpAddr::V4(src)) => {
            buf[at..at + 2].copy_from_slice(&ETH_P_IP.to_be_bytes());
            let ip = &mut buf[at + 2..at + 2 + IPV4_HLEN];
            ip[0] = 0x45;
            ip[1] = 0;
            ip[2..4].copy_from_slice(&(IPV4_HLEN as u16 + udp_len).to_be_bytes());
            ip[4..6].copy_from_slice(&[0, 0]); // identification
            ip[6..8].copy_from_slice(&0x4000u16.to_be_bytes()); // don't fragment
            ip[8] = path.hop_limit;
            ip[9] = IPPROTO_UDP;
            ip[10..12].copy_from_slice(&[0, 0]);
            ip[12..16].copy_from_slice(&src.octets());
            ip[16..20].copy_from_slice(&dst.octets());
            let c = fold(sum_words(ip, 0));
            ip[10..12].copy_from_slice(&(!c).to_be_bytes());
            sum = sum_words(&src.octets(), 0);
            sum = sum_words(&dst.octets(), sum);
            udp_at = at + 2 + IPV4_HLEN;
        }
        (IpAddr::V6(dst), IpAddr::V6(src)) => {
            buf[at..at + 2].copy_from_slice(&ETH_P_IPV6.to_be_bytes());
            let ip = &mut buf[at + 2..at + 2 + IPV6_HLEN];
            ip[0..4].copy_from_slice(&0x6000_0000u32.to_be_bytes());
            ip[4..6].copy_from_slice(&udp_len.to_be_bytes());
            ip[6] = IPPROTO_UDP;
            ip[7] = path.hop_limit;
            ip[8..24].copy_from_slice(&src.octets());
            ip[24..40].copy_from_slice(&dst.octets());
            sum = sum_words(&src.octets(), 0);
            sum = sum_words(&dst.octets(), sum);
            udp_at = at + 2 + IPV6_HLEN;
        }
        _ => return None,
    }
    // Pseudo-header: addresses (above), protocol, UDP length.
    sum += IPPROTO_UDP as u32 + udp_len as u32;
    let udp = &mut buf[udp_at..total];
    udp[0..2].copy_from_slice(&path.ours.port().to_be_bytes());
    udp[2..4].copy_from_slice(&to.port().to_be_bytes());
    udp[4..6].copy_from_slice(&udp_len.to_be_bytes());
    udp[6..8].copy_from_slice(&[0, 0]);
    udp[UDP_HLEN..].copy_from_slice(payload);
    let c = !fold(sum_words(udp, sum));
    // An all-zero UDP checksum means "none": send 0xffff instead.
    udp[6..8].copy_from_slice(&(if c == 0 { 0xffff } else { c }).to_be_bytes());
    Some(total)
}

/// One's-complement sum of 16-bit big-endian words (odd tail padded).
fn sum_words(b: &[u8], mut sum: u32) -> u32 {
    let mut chunks = b.chunks_exact(2);
    for w in &mut chunks {
        sum += u16::from_be_bytes([w[0], w[1]]) as u32;
        // Keep the carry bounded for long payloads.
        sum = (sum & 0xffff) + (sum >> 16);
    }
    if let [last] = chunks.remainder() {
        sum += (*last as u32) << 8;
    }
    sum
}

fn fold(mut sum: u32) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An IPv4/UDP frame: 10.0.0.1:4000 -> 10.0.0.2:7878, payload "TW",
    /// header checksum 0x26cd (computed independently), no UDP checksum.
    static V4: [u8; 44] = [
        0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08,
        0x00, // eth
        0x45, 0x00, 0x00, 0x1e, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x26, 0xcd, 10, 0, 0, 1, 10, 0,
        0, 2, // ip
        0x0f, 0xa0, 0x1e, 0xc6, 0x00, 0x0a, 0x00, 0x00, // udp (checksum filled below)
        b'T', b'W',
    ];

    fn verify_udp_checksum(frame: &[u8], d: &Datagram, to: SocketAddr) -> bool {
        let (a, b) = d.payload;
        let udp = &frame[a - 8..b];
        let mut sum = match (to.ip(), d.path.ours.ip()) {
            (IpAddr::V4(x), IpAddr::V4(y)) => sum_words(&y.octets(), sum_words(&x.octets(), 0)),
            (IpAddr::V6(x), IpAddr::V6(y)) => sum_words(&y.octets(), sum_words(&x.octets(), 0)),
            _ => return false,
        };
        sum += 17 + udp.len() as u32;
        fold(sum_words(udp, sum)) == 0xffff
    }

    #[test]
    fn parse_v4_and_reply_round_trip() {
        let d = parse(&V4).unwrap();
        assert_eq!(d.from, "10.0.0.1:4000".parse().unwrap());
        assert_eq!(d.path.ours, "10.0.0.2:7878".parse().unwrap());
        assert_eq!(&V4[d.payload.0..d.payload.1], b"TW");
        // IPv4 header checksum of the static frame is valid.
        assert_eq!(fold(sum_words(&V4[14..34], 0)), 0xffff);

        let mut buf = [0u8; 128];
        let n = build_reply(&mut buf, &d.path, &d.from, b"hello").unwrap();
        let r = parse(&buf[..n]).unwrap();
        // The reply goes from our address/port/MAC back to the client's.
        assert_eq!(r.from, d.path.ours);
        assert_eq!(r.path.ours, d.from);
        assert_eq!(r.path.peer_mac, d.path.our_mac);
        assert_eq!(r.path.our_mac, d.path.peer_mac);
        assert_eq!(&buf[r.payload.0..r.payload.1], b"hello");
        assert_eq!(
            fold(sum_words(&buf[14..34], 0)),
            0xffff,
            "IPv4 header checksum"
        );
        assert!(verify_udp_checksum(&buf[..n], &r, d.path.ours));
    }

    #[test]
    fn v6_with_vlan_round_trip() {
        let path = ReplyPath {
            peer_mac: [2, 0, 0, 0, 0, 1],
            our_mac: [2, 0, 0, 0, 0, 2],
            vlan: Some((ETH_P_8021Q, 42)),
            ours: "[fd00::2]:7878".parse().unwrap(),
            hop_limit: 64,
        };
        let client: SocketAddr = "[fd00::1]:5000".parse().unwrap();
        let mut buf = [0u8; 256];
        let odd = b"odd length payload!";
        let n = build_reply(&mut buf, &path, &client, odd).unwrap();
        assert_eq!(n, 14 + 4 + 40 + 8 + odd.len());
        let r = parse(&buf[..n]).unwrap();
        assert_eq!(r.from, path.ours);
        assert_eq!(r.path.ours, client);
        assert_eq!(r.path.vlan, Some((ETH_P_8021Q, 42)));
        assert_eq!(&buf[r.payload.0..r.payload.1], odd);
        assert!(verify_udp_checksum(&buf[..n], &r, path.ours));
        assert_ne!(
            u16::from_be_bytes([buf[58 + 6], buf[58 + 7]]),
            0,
            "IPv6 UDP checksum is mandatory"
        );
    }

    #[test]
    fn rejects_cut_or_foreign_frames() {
        assert!(parse(&V4[..13]).is_none());
        assert!(parse(&V4[..40]).is_none(), "UDP length beyond the frame");
        let mut tcp = V4;
        tcp[23] = 6;
        assert!(parse(&tcp).is_none());
        let mut frag = V4;
        frag[20] = 0x20; // more fragments
        assert!(parse(&frag).is_none());
        let mut arp = V4;
        arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        assert!(parse(&arp).is_none());
        // Ethernet padding after the datagram is ignored.
        let mut padded = V4.to_vec();
        padded.extend_from_slice(&[0; 16]);
        let d = parse(&padded).unwrap();
        assert_eq!(&padded[d.payload.0..d.payload.1], b"TW");
        let mut buf = [0u8; 20];
        assert!(
            build_reply(&mut buf, &d.path, &d.from, b"x").is_none(),
            "buffer too small"
        );
    }
}
