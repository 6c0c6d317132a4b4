//! TOKEN body (rev 3, "Address validation"): token_len, validated,
//! reserved, lifetime_s, token.

use super::hello::MAX_TOKEN_LEN;
use super::{read_u16, read_u32, write_u16, write_u32, Field, WireError};

mod field {
    use super::Field;
    pub const TOKEN_LEN: Field = 0..2;
    pub const VALIDATED: usize = 2;
    pub const RESERVED: usize = 3;
    pub const LIFETIME_S: Field = 4..8;
    pub const TOKEN: usize = 8;
}

/// Length of the fixed part of a TOKEN body.
pub const TOKEN_HEADER_LEN: usize = 8;

/// A view of a TOKEN body (after the common header).
#[derive(Debug, Clone)]
pub struct TokenPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> TokenPacket<T> {
    pub fn new_unchecked(buffer: T) -> Self {
        TokenPacket { buffer }
    }
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let p = Self::new_unchecked(buffer);
        let b = p.buffer.as_ref();
        if b.len() < TOKEN_HEADER_LEN || b.len() < field::TOKEN + p.token_len() as usize {
            return Err(WireError::Truncated);
        }
        Ok(p)
    }
    pub fn token_len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::TOKEN_LEN)
    }
    pub fn validated(&self) -> u8 {
        self.buffer.as_ref()[field::VALIDATED]
    }
    pub fn reserved(&self) -> u8 {
        self.buffer.as_ref()[field::RESERVED]
    }
    pub fn lifetime_s(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::LIFETIME_S)
    }
    pub fn token(&self) -> &[u8] {
        &self.buffer.as_ref()[field::TOKEN..field::TOKEN + self.token_len() as usize]
    }
}

/// The meaning of a TOKEN body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenRepr<'a> {
    pub validated: bool,
    pub lifetime_s: u32,
    pub token: &'a [u8],
}

impl<'a> TokenRepr<'a> {
    pub fn parse(p: &'a TokenPacket<&'a [u8]>) -> Result<TokenRepr<'a>, WireError> {
        if p.validated() > 1 {
            return Err(WireError::Malformed("validated is neither 0 nor 1"));
        }
        if p.reserved() != 0 {
            return Err(WireError::Malformed("reserved field is not 0"));
        }
        if p.token_len() as usize > MAX_TOKEN_LEN {
            return Err(WireError::Malformed("token_len above 64"));
        }
        Ok(TokenRepr {
            validated: p.validated() == 1,
            lifetime_s: p.lifetime_s(),
            token: p.token(),
        })
    }

    pub fn buffer_len(&self) -> usize {
        TOKEN_HEADER_LEN + self.token.len()
    }

    /// Writes the body; `buffer` must be `buffer_len()` or longer.
    pub fn emit(&self, buffer: &mut [u8]) -> usize {
        write_u16(buffer, field::TOKEN_LEN, self.token.len() as u16);
        buffer[field::VALIDATED] = self.validated as u8;
        buffer[field::RESERVED] = 0;
        write_u32(buffer, field::LIFETIME_S, self.lifetime_s);
        buffer[field::TOKEN..field::TOKEN + self.token.len()].copy_from_slice(self.token);
        self.buffer_len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        let mut buf = [0xeeu8; 11];
        let n = TokenRepr {
            validated: true,
            lifetime_s: 0x0102_0304,
            token: b"tok",
        }
        .emit(&mut buf);
        assert_eq!(n, 11);
        assert_eq!(buf, [0, 3, 1, 0, 1, 2, 3, 4, b't', b'o', b'k']);
        let p = TokenPacket::new_checked(&buf[..]).unwrap();
        let r = TokenRepr::parse(&p).unwrap();
        assert!(r.validated);
        assert_eq!(r.lifetime_s, 0x0102_0304);
        assert_eq!(r.token, b"tok");
    }

    #[test]
    fn rejections() {
        assert!(TokenPacket::new_checked(&[0u8; 7][..]).is_err());
        assert!(TokenPacket::new_checked(&[0u8, 1, 0, 0, 0, 0, 0, 0][..]).is_err());
        let b = [0u8, 0, 2, 0, 0, 0, 0, 0];
        assert!(TokenRepr::parse(&TokenPacket::new_unchecked(&b[..])).is_err());
        let b = [0u8, 0, 0, 1, 0, 0, 0, 0];
        assert!(TokenRepr::parse(&TokenPacket::new_unchecked(&b[..])).is_err());
    }
}
