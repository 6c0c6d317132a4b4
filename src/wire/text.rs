//! TEXT_CHUNK body: the 12-byte text header and the chunk bytes.

use super::{read_u32, write_u32, Field, WireError};

mod field {
    use super::Field;
    pub const OFFSET: Field = 0..4;
    pub const TOTAL_LEN: Field = 4..8;
    pub const RESERVED: Field = 8..12;
}

/// Length of the text header.
pub const TEXT_HEADER_LEN: usize = 12;

/// A view of a text body (the bytes after the common header).
#[derive(Debug, Clone)]
pub struct TextChunk<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> TextChunk<T> {
    pub fn new_unchecked(buffer: T) -> Self {
        TextChunk { buffer }
    }
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let c = Self::new_unchecked(buffer);
        c.check_len()?;
        Ok(c)
    }
    pub fn check_len(&self) -> Result<(), WireError> {
        if self.buffer.as_ref().len() < TEXT_HEADER_LEN {
            Err(WireError::Malformed("text header truncated"))
        } else {
            Ok(())
        }
    }
    pub fn offset(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::OFFSET)
    }
    pub fn total_len(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::TOTAL_LEN)
    }
    pub fn reserved(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::RESERVED)
    }
    pub fn bytes(&self) -> &[u8] {
        &self.buffer.as_ref()[TEXT_HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TextChunk<T> {
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[TEXT_HEADER_LEN..]
    }
}

/// The meaning of a text header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextRepr {
    pub offset: u32,
    pub total_len: u32,
}

impl TextRepr {
    /// Parses a text header and checks that the chunk lies within the text.
    pub fn parse<T: AsRef<[u8]>>(c: &TextChunk<T>) -> Result<TextRepr, WireError> {
        c.check_len()?;
        if c.reserved() != 0 {
            return Err(WireError::Malformed("reserved text header field is not 0"));
        }
        let r = TextRepr {
            offset: c.offset(),
            total_len: c.total_len(),
        };
        let end = r.offset as u64 + c.bytes().len() as u64;
        if end > r.total_len as u64 {
            return Err(WireError::Malformed("chunk extends past total_len"));
        }
        Ok(r)
    }

    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, c: &mut TextChunk<T>) {
        write_u32(c.buffer.as_mut(), field::OFFSET, self.offset);
        write_u32(c.buffer.as_mut(), field::TOTAL_LEN, self.total_len);
        write_u32(c.buffer.as_mut(), field::RESERVED, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static CHUNK: [u8; 15] = [0, 0, 0, 2, 0, 0, 0, 5, 0, 0, 0, 0, b'l', b'l', b'o'];

    #[test]
    fn round_trip() {
        let c = TextChunk::new_checked(&CHUNK[..]).unwrap();
        let r = TextRepr::parse(&c).unwrap();
        assert_eq!(
            r,
            TextRepr {
                offset: 2,
                total_len: 5
            }
        );
        assert_eq!(c.bytes(), b"llo");
        let mut buf = [0xffu8; 15];
        let mut c = TextChunk::new_unchecked(&mut buf[..]);
        r.emit(&mut c);
        c.bytes_mut().copy_from_slice(b"llo");
        assert_eq!(buf, CHUNK);
    }

    #[test]
    fn rejections() {
        assert!(TextChunk::new_checked(&CHUNK[..11]).is_err());
        let mut v = CHUNK;
        v[11] = 1;
        assert!(TextRepr::parse(&TextChunk::new_unchecked(&v[..])).is_err());
        let mut v = CHUNK;
        v[3] = 3; // offset 3 + 3 bytes > 5
        assert!(TextRepr::parse(&TextChunk::new_unchecked(&v[..])).is_err());
        let mut v = CHUNK;
        v[3] = 0xff;
        v[0] = 0xff; // offset near u32::MAX must not overflow
        assert!(TextRepr::parse(&TextChunk::new_unchecked(&v[..])).is_err());
    }
}
