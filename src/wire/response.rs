//! RESPONSE body: the 16-byte response header and a slice of the body.

use super::{read_u16, read_u32, write_u16, write_u32, Field, WireError};

mod field {
    use super::Field;
    pub const STATUS: Field = 0..2;
    pub const CONTENT_TYPE: Field = 2..4;
    pub const TOTAL_LEN: Field = 4..8;
    pub const OFFSET: Field = 8..12;
    pub const HEADER_LEN: Field = 12..16;
}

/// Length of the response header.
pub const RESPONSE_HEADER_LEN: usize = 16;

/// A view of a RESPONSE body (after the common header).
#[derive(Debug, Clone)]
pub struct ResponsePacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> ResponsePacket<T> {
    pub fn new_unchecked(buffer: T) -> Self {
        ResponsePacket { buffer }
    }
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let p = Self::new_unchecked(buffer);
        if p.buffer.as_ref().len() < RESPONSE_HEADER_LEN {
            return Err(WireError::Truncated);
        }
        Ok(p)
    }
    pub fn status(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::STATUS)
    }
    pub fn content_type(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CONTENT_TYPE)
    }
    pub fn total_len(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::TOTAL_LEN)
    }
    pub fn offset(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::OFFSET)
    }
    pub fn header_len(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::HEADER_LEN)
    }
    pub fn bytes(&self) -> &[u8] {
        &self.buffer.as_ref()[RESPONSE_HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> ResponsePacket<T> {
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[RESPONSE_HEADER_LEN..]
    }
}

/// The meaning of a response header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseRepr {
    pub status: u16,
    pub content_type: u16,
    pub total_len: u32,
    pub offset: u32,
    pub header_len: u32,
}

impl ResponseRepr {
    pub fn parse<T: AsRef<[u8]>>(p: &ResponsePacket<T>) -> Result<ResponseRepr, WireError> {
        let r = ResponseRepr {
            status: p.status(),
            content_type: p.content_type(),
            total_len: p.total_len(),
            offset: p.offset(),
            header_len: p.header_len(),
        };
        if r.offset as u64 + p.bytes().len() as u64 > r.total_len as u64 {
            return Err(WireError::Malformed(
                "response slice extends past total_len",
            ));
        }
        if r.header_len > r.total_len {
            return Err(WireError::Malformed("header_len exceeds total_len"));
        }
        Ok(r)
    }

    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut ResponsePacket<T>) {
        let b = p.buffer.as_mut();
        write_u16(b, field::STATUS, self.status);
        write_u16(b, field::CONTENT_TYPE, self.content_type);
        write_u32(b, field::TOTAL_LEN, self.total_len);
        write_u32(b, field::OFFSET, self.offset);
        write_u32(b, field::HEADER_LEN, self.header_len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static RESP: [u8; 19] = [
        0, 0, 0, 2, 0, 0, 0, 10, 0, 0, 0, 7, 0, 0, 0, 4, b'a', b'b', b'c',
    ];

    #[test]
    fn round_trip() {
        let p = ResponsePacket::new_checked(&RESP[..]).unwrap();
        let r = ResponseRepr::parse(&p).unwrap();
        assert_eq!(
            r,
            ResponseRepr {
                status: 0,
                content_type: 2,
                total_len: 10,
                offset: 7,
                header_len: 4
            }
        );
        let mut buf = [0u8; 19];
        let mut q = ResponsePacket::new_unchecked(&mut buf[..]);
        r.emit(&mut q);
        q.bytes_mut().copy_from_slice(b"abc");
        assert_eq!(buf, RESP);
    }

    #[test]
    fn rejections() {
        assert!(ResponsePacket::new_checked(&RESP[..15]).is_err());
        let mut v = RESP;
        v[11] = 8; // offset 8 + 3 > 10
        assert!(ResponseRepr::parse(&ResponsePacket::new_unchecked(&v[..])).is_err());
    }
}
