//! ERROR body: code, reserved, UTF-8 message.

use super::{read_u16, write_u16, ErrorCode, Field, WireError, MAX_ERROR_MESSAGE};

mod field {
    use super::Field;
    pub const CODE: Field = 0..2;
    pub const RESERVED: Field = 2..4;
}

/// Length of the error header.
pub const ERROR_HEADER_LEN: usize = 4;

/// A view of an ERROR body (after the common header).
#[derive(Debug, Clone)]
pub struct ErrorPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> ErrorPacket<T> {
    pub fn new_unchecked(buffer: T) -> Self {
        ErrorPacket { buffer }
    }
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let p = Self::new_unchecked(buffer);
        if p.buffer.as_ref().len() < ERROR_HEADER_LEN {
            return Err(WireError::Truncated);
        }
        Ok(p)
    }
    pub fn code_raw(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CODE)
    }
    pub fn reserved(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::RESERVED)
    }
    pub fn message(&self) -> &[u8] {
        &self.buffer.as_ref()[ERROR_HEADER_LEN..]
    }
}

/// The meaning of an ERROR body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorRepr<'a> {
    pub code: ErrorCode,
    pub message: &'a str,
}

impl<'a> ErrorRepr<'a> {
    pub fn parse(p: &'a ErrorPacket<&'a [u8]>) -> Result<ErrorRepr<'a>, WireError> {
        let code =
            ErrorCode::from_u16(p.code_raw()).ok_or(WireError::Malformed("unknown error code"))?;
        let message = core::str::from_utf8(p.message())
            .map_err(|_| WireError::Malformed("error message is not UTF-8"))?;
        Ok(ErrorRepr { code, message })
    }

    /// The message as it goes on the wire: cut to at most 1024 bytes at a
    /// character boundary.
    pub fn wire_message(&self) -> &'a str {
        truncate_utf8(self.message, MAX_ERROR_MESSAGE)
    }

    pub fn buffer_len(&self) -> usize {
        ERROR_HEADER_LEN + self.wire_message().len()
    }

    /// Writes code, reserved and message; `buffer` must be `buffer_len()`
    /// bytes or longer.
    pub fn emit(&self, buffer: &mut [u8]) -> usize {
        write_u16(buffer, field::CODE, self.code as u16);
        write_u16(buffer, field::RESERVED, 0);
        let m = self.wire_message().as_bytes();
        buffer[ERROR_HEADER_LEN..ERROR_HEADER_LEN + m.len()].copy_from_slice(m);
        ERROR_HEADER_LEN + m.len()
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a
/// character boundary.
pub fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut buf = [0u8; 16];
        let n = ErrorRepr {
            code: ErrorCode::TooLarge,
            message: "too big",
        }
        .emit(&mut buf);
        assert_eq!(&buf[..n], b"\x00\x05\x00\x00too big");
        let p = ErrorPacket::new_checked(&buf[..n]).unwrap();
        let r = ErrorRepr::parse(&p).unwrap();
        assert_eq!(r.code, ErrorCode::TooLarge);
        assert_eq!(r.message, "too big");
    }

    #[test]
    fn long_message_cut_on_char_boundary() {
        let s = "é".repeat(600); // 1200 bytes
        let r = ErrorRepr {
            code: ErrorCode::Malformed,
            message: &s,
        };
        assert_eq!(r.wire_message().len(), 1024);
        let s = format!("a{}", "é".repeat(600));
        let r = ErrorRepr {
            code: ErrorCode::Malformed,
            message: &s,
        };
        assert_eq!(r.wire_message().len(), 1023);
    }

    #[test]
    fn rejections() {
        assert!(ErrorPacket::new_checked(&[0u8, 1, 0][..]).is_err());
        let b = [0u8, 99, 0, 0];
        assert!(ErrorRepr::parse(&ErrorPacket::new_unchecked(&b[..])).is_err());
        let b = [0u8, 1, 0, 0, 0xff];
        assert!(ErrorRepr::parse(&ErrorPacket::new_unchecked(&b[..])).is_err());
    }
}
