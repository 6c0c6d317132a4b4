//! The 24-byte common header that starts every TWP/1 datagram.

use super::{read_u16, read_u32, read_u64, write_u16, write_u32, write_u64, Field};
use super::{Kind, WireError, FLAG_LAST, HEADER_LEN, MAGIC, VERSION};

mod field {
    use super::Field;
    pub const MAGIC: Field = 0..2;
    pub const VERSION: usize = 2;
    pub const KIND: usize = 3;
    pub const FLAGS: Field = 4..6;
    pub const PIPELINE: Field = 6..8;
    pub const REQUEST_ID: Field = 8..16;
    pub const SEQ: Field = 16..20;
    pub const COUNT: Field = 20..24;
}

/// A read/write view of a whole datagram through its common header.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    pub fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// A view whose getters cannot panic: the buffer holds a whole header.
    pub fn new_checked(buffer: T) -> Result<Packet<T>, WireError> {
        let p = Packet::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    pub fn check_len(&self) -> Result<(), WireError> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            Err(WireError::Truncated)
        } else {
            Ok(())
        }
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn magic(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::MAGIC)
    }
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VERSION]
    }
    pub fn kind_raw(&self) -> u8 {
        self.buffer.as_ref()[field::KIND]
    }
    pub fn kind(&self) -> Option<Kind> {
        Kind::from_u8(self.kind_raw())
    }
    pub fn flags(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::FLAGS)
    }
    pub fn pipeline(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::PIPELINE)
    }
    pub fn request_id(&self) -> u64 {
        read_u64(self.buffer.as_ref(), field::REQUEST_ID)
    }
    pub fn seq(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::SEQ)
    }
    pub fn count(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::COUNT)
    }
    /// Everything after the common header.
    pub fn body(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    pub fn set_magic(&mut self, v: u16) {
        write_u16(self.buffer.as_mut(), field::MAGIC, v)
    }
    pub fn set_version(&mut self, v: u8) {
        self.buffer.as_mut()[field::VERSION] = v
    }
    pub fn set_kind_raw(&mut self, v: u8) {
        self.buffer.as_mut()[field::KIND] = v
    }
    pub fn set_flags(&mut self, v: u16) {
        write_u16(self.buffer.as_mut(), field::FLAGS, v)
    }
    pub fn set_pipeline(&mut self, v: u16) {
        write_u16(self.buffer.as_mut(), field::PIPELINE, v)
    }
    pub fn set_request_id(&mut self, v: u64) {
        write_u64(self.buffer.as_mut(), field::REQUEST_ID, v)
    }
    pub fn set_seq(&mut self, v: u32) {
        write_u32(self.buffer.as_mut(), field::SEQ, v)
    }
    pub fn set_count(&mut self, v: u32) {
        write_u32(self.buffer.as_mut(), field::COUNT, v)
    }
    pub fn body_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[HEADER_LEN..]
    }
}

/// What can be read of a datagram before it is known to hold a whole
/// header (the proxy needs magic, version, kind, pipeline and request_id
/// to answer even a truncated or foreign-version datagram): each getter
/// answers only if the datagram reaches that field. Same field layout as
/// [`Packet`].
#[derive(Debug, Clone, Copy)]
pub struct HeaderPrefix<'a> {
    buffer: &'a [u8],
}

impl<'a> HeaderPrefix<'a> {
    pub fn new(buffer: &'a [u8]) -> HeaderPrefix<'a> {
        HeaderPrefix { buffer }
    }

    fn reaches(&self, f: &Field) -> bool {
        self.buffer.len() >= f.end
    }

    pub fn magic(&self) -> Option<u16> {
        self.reaches(&field::MAGIC)
            .then(|| read_u16(self.buffer, field::MAGIC))
    }
    pub fn version(&self) -> Option<u8> {
        self.buffer.get(field::VERSION).copied()
    }
    pub fn kind(&self) -> Option<Kind> {
        self.buffer
            .get(field::KIND)
            .copied()
            .and_then(Kind::from_u8)
    }
    pub fn pipeline(&self) -> Option<u16> {
        self.reaches(&field::PIPELINE)
            .then(|| read_u16(self.buffer, field::PIPELINE))
    }
    pub fn request_id(&self) -> Option<u64> {
        self.reaches(&field::REQUEST_ID)
            .then(|| read_u64(self.buffer, field::REQUEST_ID))
    }
    pub fn seq(&self) -> Option<u32> {
        self.reaches(&field::SEQ)
            .then(|| read_u32(self.buffer, field::SEQ))
    }
}

/// The common header's meaning, after the version has been checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderRepr {
    pub kind: Kind,
    /// The LAST flag (informational).
    pub last: bool,
    pub pipeline: u16,
    pub request_id: u64,
    pub seq: u32,
    pub count: u32,
}

impl HeaderRepr {
    /// Fragment `seq` of `count`: LAST is set on the highest seq, as the
    /// spec asks of every sender.
    pub fn fragment(
        kind: Kind,
        pipeline: u16,
        request_id: u64,
        seq: u32,
        count: u32,
    ) -> HeaderRepr {
        HeaderRepr {
            kind,
            last: seq + 1 == count,
            pipeline,
            request_id,
            seq,
            count,
        }
    }

    /// Reads a version-1 header. The caller has checked magic and version;
    /// this checks the kind and `seq < count` (flag bits other than LAST
    /// are ignored, as the spec says).
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Result<HeaderRepr, WireError> {
        let kind = p
            .kind()
            .ok_or(WireError::Malformed("unknown datagram kind"))?;
        let count = p.count();
        if count == 0 {
            return Err(WireError::Malformed("count is 0"));
        }
        if p.seq() >= count {
            return Err(WireError::Malformed("seq is not below count"));
        }
        Ok(HeaderRepr {
            kind,
            last: p.flags() & FLAG_LAST != 0,
            pipeline: p.pipeline(),
            request_id: p.request_id(),
            seq: p.seq(),
            count,
        })
    }

    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Packet<T>) {
        p.set_magic(MAGIC);
        p.set_version(VERSION);
        p.set_kind_raw(self.kind as u8);
        p.set_flags(if self.last { FLAG_LAST } else { 0 });
        p.set_pipeline(self.pipeline);
        p.set_request_id(self.request_id);
        p.set_seq(self.seq);
        p.set_count(self.count);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static DESCRIBE: [u8; 24] = [
        0x54, 0x57, 0x01, 0x04, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x12, 0x34, 0x56,
        0x78, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01,
    ];

    #[test]
    fn deconstruct() {
        let p = Packet::new_checked(&DESCRIBE[..]).unwrap();
        assert_eq!(p.magic(), MAGIC);
        assert_eq!(p.version(), 1);
        assert_eq!(p.kind(), Some(Kind::Describe));
        assert_eq!(p.flags(), FLAG_LAST);
        assert_eq!(p.pipeline(), 0);
        assert_eq!(p.request_id(), 0x1234_5678);
        assert_eq!(p.seq(), 0);
        assert_eq!(p.count(), 1);
        assert!(p.body().is_empty());
        let r = HeaderRepr::parse(&p).unwrap();
        assert!(r.last);
    }

    #[test]
    fn construct() {
        let mut buf = [0xffu8; 24];
        let r = HeaderRepr {
            kind: Kind::Describe,
            last: true,
            pipeline: 0,
            request_id: 0x1234_5678,
            seq: 0,
            count: 1,
        };
        r.emit(&mut Packet::new_unchecked(&mut buf[..]));
        assert_eq!(buf, DESCRIBE);
    }

    #[test]
    fn truncated() {
        assert_eq!(
            Packet::new_checked(&DESCRIBE[..23]).unwrap_err(),
            WireError::Truncated
        );
    }

    #[test]
    fn rejects_bad_seq_count_kind() {
        let mut buf = DESCRIBE;
        buf[23] = 0; // count 0
        assert!(HeaderRepr::parse(&Packet::new_unchecked(&buf[..])).is_err());
        let mut buf = DESCRIBE;
        buf[19] = 1; // seq 1 of count 1
        assert!(HeaderRepr::parse(&Packet::new_unchecked(&buf[..])).is_err());
        let mut buf = DESCRIBE;
        buf[3] = 0x7f;
        assert!(HeaderRepr::parse(&Packet::new_unchecked(&buf[..])).is_err());
    }

    #[test]
    fn prefix_reads_only_what_is_there() {
        let p = HeaderPrefix::new(&DESCRIBE[..]);
        assert_eq!(p.magic(), Some(MAGIC));
        assert_eq!(p.version(), Some(1));
        assert_eq!(p.kind(), Some(Kind::Describe));
        assert_eq!(p.pipeline(), Some(0));
        assert_eq!(p.request_id(), Some(0x1234_5678));
        assert_eq!(p.seq(), Some(0));
        let p = HeaderPrefix::new(&DESCRIBE[..15]);
        assert_eq!(
            (p.pipeline(), p.request_id(), p.seq()),
            (Some(0), None, None)
        );
        let p = HeaderPrefix::new(&DESCRIBE[..1]);
        assert_eq!((p.magic(), p.version(), p.kind()), (None, None, None));
    }

    #[test]
    fn unknown_flag_bits_are_ignored() {
        let mut buf = DESCRIBE;
        buf[4] = 0xff;
        buf[5] = 0xfe;
        let r = HeaderRepr::parse(&Packet::new_unchecked(&buf[..])).unwrap();
        assert!(!r.last);
    }
}
