//! HELLO body (rev 3, "Address validation"): token_len, token, then
//! padding (zeros). A first HELLO carries no token and is padded so that
//! its UDP payload is at least [`MIN_HELLO_DATAGRAM`] bytes.

use super::{read_u16, write_u16, Field, WireError};

mod field {
    use super::Field;
    pub const TOKEN_LEN: Field = 0..2;
    pub const TOKEN: usize = 2;
}

/// Length of the fixed part of a HELLO body.
pub const HELLO_HEADER_LEN: usize = 2;
/// Smallest UDP payload of a HELLO without a token (spec: 1200 bytes), so
/// that the TOKEN it gets is never larger than the HELLO.
pub const MIN_HELLO_DATAGRAM: usize = 1200;
/// Longest token (spec: at most 64 bytes).
pub const MAX_TOKEN_LEN: usize = 64;

/// A view of a HELLO body (after the common header).
#[derive(Debug, Clone)]
pub struct HelloPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> HelloPacket<T> {
    pub fn new_unchecked(buffer: T) -> Self {
        HelloPacket { buffer }
    }

    /// Checks that token_len and the token fit the buffer.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let p = Self::new_unchecked(buffer);
        let b = p.buffer.as_ref();
        if b.len() < HELLO_HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if p.token_len() as usize > MAX_TOKEN_LEN {
            return Err(WireError::Malformed("token_len above 64"));
        }
        if b.len() < field::TOKEN + p.token_len() as usize {
            return Err(WireError::Truncated);
        }
        Ok(p)
    }

    pub fn token_len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::TOKEN_LEN)
    }
    pub fn token(&self) -> &[u8] {
        &self.buffer.as_ref()[field::TOKEN..field::TOKEN + self.token_len() as usize]
    }
    /// What follows the token: padding, or (tensorwire's pre-shared-key
    /// extension) the 32-byte proof of the key, then padding.
    pub fn trailer(&self) -> &[u8] {
        &self.buffer.as_ref()[field::TOKEN + self.token_len() as usize..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> HelloPacket<T> {
    pub fn set_token_len(&mut self, v: u16) {
        write_u16(self.buffer.as_mut(), field::TOKEN_LEN, v)
    }
    pub fn token_mut(&mut self) -> &mut [u8] {
        let n = self.token_len() as usize;
        &mut self.buffer.as_mut()[field::TOKEN..field::TOKEN + n]
    }
    pub fn trailer_mut(&mut self) -> &mut [u8] {
        let n = self.token_len() as usize;
        &mut self.buffer.as_mut()[field::TOKEN + n..]
    }
}

/// The meaning of a HELLO body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HelloRepr<'a> {
    pub token: &'a [u8],
    /// Bytes right after the token (PSK proof, if any), before padding.
    pub proof: Option<&'a [u8; 32]>,
}

impl<'a> HelloRepr<'a> {
    pub fn parse(p: &'a HelloPacket<&'a [u8]>) -> Result<HelloRepr<'a>, WireError> {
        let proof = p
            .trailer()
            .get(..32)
            .map(|s| s.try_into().expect("32 bytes"));
        Ok(HelloRepr {
            token: p.token(),
            proof,
        })
    }

    /// Body length without padding.
    pub fn buffer_len(&self) -> usize {
        HELLO_HEADER_LEN + self.token.len() + self.proof.map_or(0, |_| 32)
    }

    /// Writes token_len, token, the proof if any, and zeros to the end of
    /// `buffer` (the padding); `buffer` must be `buffer_len()` or longer.
    pub fn emit(&self, buffer: &mut [u8]) {
        let mut p = HelloPacket::new_unchecked(buffer);
        p.set_token_len(self.token.len() as u16);
        p.token_mut().copy_from_slice(self.token);
        let t = p.trailer_mut();
        t.fill(0);
        if let Some(proof) = self.proof {
            t[..32].copy_from_slice(proof);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        let mut buf = [0xaau8; 10];
        HelloRepr {
            token: b"abc",
            proof: None,
        }
        .emit(&mut buf);
        assert_eq!(buf, [0, 3, b'a', b'b', b'c', 0, 0, 0, 0, 0]);
        let p = HelloPacket::new_checked(&buf[..]).unwrap();
        assert_eq!(p.token_len(), 3);
        assert_eq!(p.token(), b"abc");
        assert_eq!(p.trailer(), &[0u8; 5]);
        let r = HelloRepr::parse(&p).unwrap();
        assert_eq!(r.token, b"abc");
        assert_eq!(r.proof, None);
    }

    #[test]
    fn proof_follows_the_token() {
        let proof = [7u8; 32];
        let mut buf = vec![0xffu8; 2 + 2 + 32 + 4];
        let r = HelloRepr {
            token: b"xy",
            proof: Some(&proof),
        };
        assert_eq!(r.buffer_len(), 36);
        r.emit(&mut buf);
        assert_eq!(&buf[..4], &[0, 2, b'x', b'y']);
        assert_eq!(&buf[4..36], &proof);
        assert_eq!(&buf[36..], &[0, 0, 0, 0]);
        let p = HelloPacket::new_checked(&buf[..]).unwrap();
        assert_eq!(HelloRepr::parse(&p).unwrap().proof, Some(&proof));
    }

    #[test]
    fn empty_hello_and_rejections() {
        let p = HelloPacket::new_checked(&[0u8, 0][..]).unwrap();
        assert_eq!(p.token(), b"");
        assert!(HelloPacket::new_checked(&[0u8][..]).is_err());
        // token_len says 4, only 3 bytes follow.
        assert_eq!(
            HelloPacket::new_checked(&[0u8, 4, 1, 2, 3][..]).unwrap_err(),
            WireError::Truncated
        );
        let mut b = [0u8; 100];
        b[1] = 65;
        assert!(matches!(
            HelloPacket::new_checked(&b[..]),
            Err(WireError::Malformed(_))
        ));
    }
}
