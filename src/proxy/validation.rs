//! Address validation (spec rev 3, "Address validation"; QUIC's rule,
//! RFC 9000 section 8): stateless tokens, the table of validated
//! addresses, the 3x budget of unvalidated ones, and the source
//! allowlist. Pure: the key material and the clock come from outside.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

type HmacSha256 = Hmac<Sha256>;

/// An unvalidated address may be sent at most this many times the bytes
/// received from it.
pub const AMPLIFICATION_FACTOR: u64 = 3;
/// Token: period (4) + expiry (4) + truncated MAC (16).
pub const TOKEN_LEN: usize = 24;
const TAG_LEN: usize = 16;

/// The `[security]` settings of the core.
#[derive(Debug, Clone)]
pub struct SecuritySettings {
    /// Off: no budget, no HELLO needed (a trusted network).
    pub address_validation: bool,
    /// The token secret (random, made by the server at start; fixed in
    /// tests). Per-period keys are derived from it.
    pub secret: [u8; 32],
    /// The instant token times count from: the same for every worker
    /// (so a token made by one is good at another).
    pub epoch: Instant,
    /// How long a token stays good; the token key changes every period
    /// and the previous one is still accepted.
    pub token_lifetime_s: u32,
    /// Validated addresses remembered (oldest forgotten first).
    pub validated_addresses: usize,
    /// A validated address is forgotten this long after its last datagram.
    pub validation_lifetime_s: u32,
    /// Pre-shared key: when set, only HELLOs that prove it validate.
    pub psk: Option<Vec<u8>>,
    /// Source prefixes allowed (empty = everyone).
    pub allowlist: Vec<Prefix>,
}

impl SecuritySettings {
    /// Validation on, with `secret` and `epoch` (tests pass fixed ones).
    pub fn new(secret: [u8; 32], epoch: Instant) -> SecuritySettings {
        SecuritySettings {
            address_validation: true,
            secret,
            epoch,
            token_lifetime_s: 3600,
            validated_addresses: 65536,
            validation_lifetime_s: 3600,
            psk: None,
            allowlist: Vec::new(),
        }
    }

    /// Validation off (a trusted network).
    pub fn off() -> SecuritySettings {
        SecuritySettings {
            address_validation: false,
            ..SecuritySettings::new([0; 32], Instant::now())
        }
    }
}

/// An address or CIDR prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefix {
    pub addr: IpAddr,
    pub len: u32,
}

impl Prefix {
    /// `10.0.0.0/8`, `192.0.2.7`, `fd00::/8`, ...
    pub fn parse(s: &str) -> Option<Prefix> {
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l.parse::<u32>().ok()?)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = len.unwrap_or(max);
        (len <= max).then_some(Prefix { addr, len })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(p), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - self.len).unwrap_or(0);
                u32::from(p) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(p), IpAddr::V6(a)) => {
                let mask = u128::MAX.checked_shl(128 - self.len).unwrap_or(0);
                u128::from(p) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// Makes and checks stateless tokens: `period u32 | expiry_s u32 |
/// HMAC-SHA256(key(period), address | period | expiry)[..16]`, where
/// `key(period) = HMAC-SHA256(secret, "tensorwire token key" | period)`
/// and `period = seconds since epoch / token_lifetime_s`. A token is
/// good until its expiry if its period is the current or the previous
/// one (the key rotates every period; the previous key is still
/// accepted for one period).
#[derive(Debug, Clone)]
pub struct TokenKeys {
    secret: [u8; 32],
    epoch: Instant,
    lifetime_s: u32,
    /// (period, key) of the newest two periods seen.
    cache: [(u32, [u8; 32]); 2],
}

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    Malformed,
    Expired,
    /// Wrong MAC: forged, or made for another address.
    BadMac,
}

impl TokenKeys {
    pub fn new(secret: [u8; 32], epoch: Instant, lifetime_s: u32) -> TokenKeys {
        let lifetime_s = lifetime_s.max(1);
        let k0 = derive(&secret, 0);
        TokenKeys {
            secret,
            epoch,
            lifetime_s,
            cache: [(0, k0), (0, k0)],
        }
    }

    pub fn lifetime_s(&self) -> u32 {
        self.lifetime_s
    }

    fn seconds(&self, now: Instant) -> u32 {
        now.saturating_duration_since(self.epoch).as_secs() as u32
    }

    fn key(&mut self, period: u32) -> [u8; 32] {
        if let Some((_, k)) = self.cache.iter().find(|(p, _)| *p == period) {
            return *k;
        }
        let k = derive(&self.secret, period);
        // Keep the newer of the two cached periods.
        let keep = if self.cache[0].0 >= self.cache[1].0 {
            0
        } else {
            1
        };
        self.cache[1 - keep] = (period, k);
        k
    }

    /// A token for `addr`, good for `lifetime_s` from `now`.
    pub fn make(&mut self, addr: SocketAddr, now: Instant) -> [u8; TOKEN_LEN] {
        let s = self.seconds(now);
        let period = s / self.lifetime_s;
        let expiry = s.saturating_add(self.lifetime_s);
        let mut t = [0u8; TOKEN_LEN];
        t[0..4].copy_from_slice(&period.to_be_bytes());
        t[4..8].copy_from_slice(&expiry.to_be_bytes());
        let mac = self.mac(addr, period, expiry);
        t[8..].copy_from_slice(&mac.finalize().into_bytes()[..TAG_LEN]);
        t
    }

    /// Checks `token` for `addr` at `now` (constant-time MAC comparison).
    pub fn check(
        &mut self,
        token: &[u8],
        addr: SocketAddr,
        now: Instant,
    ) -> Result<(), TokenError> {
        if token.len() != TOKEN_LEN {
            return Err(TokenError::Malformed);
        }
        let period = u32::from_be_bytes(token[0..4].try_into().expect("4 bytes"));
        let expiry = u32::from_be_bytes(token[4..8].try_into().expect("4 bytes"));
        let s = self.seconds(now);
        let current = s / self.lifetime_s;
        if period > current || current - period > 1 || expiry <= s {
            return Err(TokenError::Expired);
        }
        self.mac(addr, period, expiry)
            .verify_truncated_left(&token[8..])
            .map_err(|_| TokenError::BadMac)
    }

    fn mac(&mut self, addr: SocketAddr, period: u32, expiry: u32) -> HmacSha256 {
        let key = self.key(period);
        let mut m = HmacSha256::new_from_slice(&key).expect("any key length");
        match addr.ip() {
            IpAddr::V4(a) => {
                m.update(&[4]);
                m.update(&a.octets());
            }
            IpAddr::V6(a) => {
                m.update(&[6]);
                m.update(&a.octets());
            }
        }
        m.update(&addr.port().to_be_bytes());
        m.update(&period.to_be_bytes());
        m.update(&expiry.to_be_bytes());
        m
    }
}

fn derive(secret: &[u8; 32], period: u32) -> [u8; 32] {
    let mut m = HmacSha256::new_from_slice(secret).expect("any key length");
    m.update(b"tensorwire token key");
    m.update(&period.to_be_bytes());
    m.finalize().into_bytes().into()
}

/// The pre-shared-key proof a HELLO carries after its token (tensorwire
/// extension): HMAC-SHA256(psk, token).
pub fn psk_proof(psk: &[u8], token: &[u8]) -> [u8; 32] {
    let mut m = HmacSha256::new_from_slice(psk).expect("any key length");
    m.update(token);
    m.finalize().into_bytes().into()
}

/// Checks a PSK proof in constant time.
pub fn psk_proof_ok(psk: &[u8], token: &[u8], proof: &[u8]) -> bool {
    let mut m = HmacSha256::new_from_slice(psk).expect("any key length");
    m.update(token);
    m.verify_slice(proof).is_ok()
}

/// Addresses with a value, bounded, each forgotten `lifetime` after its
/// last touch, and the least recently touched first when full. One queue
/// entry per address (in the order of the touch time recorded in it): an
/// entry touched since it was queued goes to the back when it comes up.
#[derive(Debug)]
pub struct AddrTable<V> {
    map: HashMap<SocketAddr, (Instant, V)>,
    order: VecDeque<(SocketAddr, Instant)>,
    capacity: usize,
    lifetime: Duration,
    evicted: u64,
}

impl<V> AddrTable<V> {
    pub fn new(capacity: usize, lifetime: Duration) -> AddrTable<V> {
        AddrTable {
            map: HashMap::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
            lifetime,
            evicted: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Addresses forgotten before their lifetime because the table was full.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// The value of a live entry, touched (its lifetime restarts).
    pub fn touch(&mut self, addr: &SocketAddr, now: Instant) -> Option<&mut V> {
        let lifetime = self.lifetime;
        match self.map.get_mut(addr) {
            // Expired: left for `purge` (or replaced by `insert`).
            Some((t, _)) if *t + lifetime <= now => None,
            Some((t, v)) => {
                *t = now;
                Some(v)
            }
            None => None,
        }
    }

    pub fn contains(&self, addr: &SocketAddr, now: Instant) -> bool {
        self.map
            .get(addr)
            .is_some_and(|(t, _)| *t + self.lifetime > now)
    }

    /// Inserts (or replaces) `addr`'s entry, making room first.
    pub fn insert(&mut self, addr: SocketAddr, v: V, now: Instant) -> &mut V
    where
        V: Clone,
    {
        if !self.map.contains_key(&addr) {
            self.purge(now);
            while self.map.len() >= self.capacity {
                self.pop_oldest();
            }
            self.order.push_back((addr, now));
        }
        // One queue entry per address: a replaced entry keeps its own.
        let e = self.map.entry(addr).or_insert((now, v.clone()));
        e.0 = now;
        e.1 = v;
        &mut e.1
    }

    /// Forgets entries whose lifetime has passed (cheap: stops at the
    /// first live one).
    pub fn purge(&mut self, now: Instant) {
        while let Some(&(addr, queued)) = self.order.front() {
            if queued + self.lifetime > now {
                break;
            }
            self.order.pop_front();
            match self.map.get(&addr) {
                Some((t, _)) if *t + self.lifetime > now => self.order.push_back((addr, *t)),
                Some(_) => {
                    self.map.remove(&addr);
                }
                None => {}
            }
        }
    }

    fn pop_oldest(&mut self) {
        while let Some((addr, queued)) = self.order.pop_front() {
            match self.map.get(&addr) {
                Some((t, _)) if *t > queued => self.order.push_back((addr, *t)),
                Some(_) => {
                    self.map.remove(&addr);
                    self.evicted += 1;
                    return;
                }
                None => {}
            }
        }
    }
}

/// Bytes received from and sent to an unvalidated address.
#[derive(Debug, Default, Clone, Copy)]
pub struct Budget {
    pub received: u64,
    pub sent: u64,
}

impl Budget {
    /// Bytes that may still be sent.
    pub fn left(&self) -> u64 {
        (AMPLIFICATION_FACTOR * self.received).saturating_sub(self.sent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn token_is_bound_to_address_and_expiry() {
        let t0 = Instant::now();
        let mut k = TokenKeys::new([1; 32], t0, 60);
        let a = addr("192.0.2.1:4000");
        let t = k.make(a, t0 + Duration::from_secs(5));
        assert_eq!(t.len(), TOKEN_LEN);
        // Replayed from the same address within its lifetime: fine.
        for s in [5, 6, 30, 64] {
            assert_eq!(k.check(&t, a, t0 + Duration::from_secs(s)), Ok(()), "{s}");
        }
        // From another address (IP or port), it fails.
        let other_port = addr("192.0.2.1:4001");
        let other_ip = addr("192.0.2.2:4000");
        assert_eq!(k.check(&t, other_port, t0), Err(TokenError::BadMac));
        assert_eq!(k.check(&t, other_ip, t0), Err(TokenError::BadMac));
        let v6 = addr("[::ffff:192.0.2.1]:4000");
        assert_eq!(k.check(&t, v6, t0), Err(TokenError::BadMac));
        // Expired at expiry (5 + 60 s).
        let late = t0 + Duration::from_secs(65);
        assert_eq!(k.check(&t, a, late), Err(TokenError::Expired));
    }

    #[test]
    fn forged_tokens_fail() {
        let t0 = Instant::now();
        let mut k = TokenKeys::new([1; 32], t0, 60);
        let a = addr("192.0.2.1:4000");
        let t = k.make(a, t0);
        // Another expiry with the same MAC.
        let mut f = t;
        f[7] ^= 1;
        assert_eq!(k.check(&f, a, t0), Err(TokenError::BadMac));
        // A flipped MAC bit.
        let mut f = t;
        f[TOKEN_LEN - 1] ^= 0x80;
        assert_eq!(k.check(&f, a, t0), Err(TokenError::BadMac));
        // A token made under another secret.
        let mut other = TokenKeys::new([2; 32], t0, 60);
        assert_eq!(k.check(&other.make(a, t0), a, t0), Err(TokenError::BadMac));
        // Wrong lengths, zeros.
        assert_eq!(k.check(&t[..23], a, t0), Err(TokenError::Malformed));
        assert_eq!(k.check(&[], a, t0), Err(TokenError::Malformed));
        assert!(k.check(&[0; TOKEN_LEN], a, t0).is_err());
        // A far-future period or expiry (the attacker's choice) is refused.
        let mut f = t;
        f[0..4].copy_from_slice(&9u32.to_be_bytes());
        assert_eq!(k.check(&f, a, t0), Err(TokenError::Expired));
    }

    #[test]
    fn key_rotation_accepts_the_previous_period_only() {
        let t0 = Instant::now();
        let s = |n| t0 + Duration::from_secs(n);
        let mut k = TokenKeys::new([3; 32], t0, 100);
        let a = addr("[2001:db8::1]:9");
        // Made late in period 0, checked in period 1: the old key still works.
        let t = k.make(a, s(90));
        assert_eq!(&t[0..4], &0u32.to_be_bytes());
        assert_eq!(k.check(&t, a, s(150)), Ok(()));
        let t1 = k.make(a, s(150));
        assert_eq!(&t1[0..4], &1u32.to_be_bytes());
        // Keys differ per period: the same address and expiry under
        // period 0's key would not verify as period 1.
        let mut moved = t;
        moved[0..4].copy_from_slice(&1u32.to_be_bytes());
        assert_eq!(k.check(&moved, a, s(150)), Err(TokenError::BadMac));
        // Two periods on, period 0's key is gone (and the token expired).
        assert_eq!(k.check(&t, a, s(201)), Err(TokenError::Expired));
        assert_eq!(k.check(&t1, a, s(249)), Ok(()));
        assert_eq!(k.check(&t1, a, s(250)), Err(TokenError::Expired));
    }

    #[test]
    fn psk_proof_round_trip() {
        let p = psk_proof(b"secret", b"token");
        assert!(psk_proof_ok(b"secret", b"token", &p));
        assert!(!psk_proof_ok(b"other", b"token", &p));
        assert!(!psk_proof_ok(b"secret", b"token", &p[..31]));
        let mut bad = p;
        bad[0] ^= 1;
        assert!(!psk_proof_ok(b"secret", b"token", &bad));
    }

    #[test]
    fn table_is_bounded_and_forgets_oldest_first() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut t: AddrTable<()> = AddrTable::new(3, Duration::from_secs(10));
        for (i, port) in [1u16, 2, 3].iter().enumerate() {
            t.insert(SocketAddr::from(([10, 0, 0, 1], *port)), (), ms(i as u64));
        }
        // 1 is touched: 2 is now the least recently used.
        t.touch(&SocketAddr::from(([10, 0, 0, 1], 1)), ms(10));
        t.insert(SocketAddr::from(([10, 0, 0, 1], 4)), (), ms(11));
        assert_eq!(t.len(), 3);
        assert_eq!(t.evicted(), 1);
        assert!(t.contains(&SocketAddr::from(([10, 0, 0, 1], 1)), ms(12)));
        assert!(!t.contains(&SocketAddr::from(([10, 0, 0, 1], 2)), ms(12)));
        // Lifetime since the last touch.
        let a1 = SocketAddr::from(([10, 0, 0, 1], 1));
        assert!(t.contains(&a1, ms(10_009)));
        assert!(t.touch(&a1, ms(10_010)).is_none());
        // Many distinct sources: never above capacity.
        let mut big: AddrTable<()> = AddrTable::new(100, Duration::from_secs(10));
        for i in 0..10_000u32 {
            big.insert(
                SocketAddr::from((i.to_be_bytes(), 1)),
                (),
                ms(i as u64 / 100),
            );
            assert!(big.len() <= 100);
        }
        assert_eq!(big.evicted(), 9_900);
        assert!(big.order.len() <= 100);
    }

    #[test]
    fn prefixes() {
        let p = Prefix::parse("10.1.0.0/16").unwrap();
        assert!(p.contains("10.1.200.3".parse().unwrap()));
        assert!(!p.contains("10.2.0.1".parse().unwrap()));
        assert!(p.contains("::ffff:10.1.0.9".parse().unwrap()));
        assert!(!p.contains("fd00::1".parse().unwrap()));
        let one = Prefix::parse("192.0.2.7").unwrap();
        assert_eq!(one.len, 32);
        assert!(one.contains("192.0.2.7".parse().unwrap()));
        assert!(!one.contains("192.0.2.8".parse().unwrap()));
        let v6 = Prefix::parse("fd00::/8").unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()));
        assert!(Prefix::parse("0.0.0.0/0")
            .unwrap()
            .contains("8.8.8.8".parse().unwrap()));
        for bad in ["10.0.0.0/33", "nope", "10.0.0.0/x", "::/129"] {
            assert!(Prefix::parse(bad).is_none(), "{bad}");
        }
    }
}
