//! IMAGE_ROWS / IMAGE_TILE body: the 24-byte image header and the pixels.

use super::{read_u16, write_u16, Field, Kind, PixelFormat, WireError};

mod field {
    use super::Field;
    pub const WIDTH: Field = 0..2;
    pub const HEIGHT: Field = 2..4;
    pub const PIXEL_FORMAT: usize = 4;
    pub const RESERVED0: usize = 5;
    pub const X: Field = 6..8;
    pub const Y: Field = 8..10;
    pub const W: Field = 10..12;
    pub const H: Field = 12..14;
    pub const OUT_X: Field = 14..16;
    pub const OUT_Y: Field = 16..18;
    pub const OUT_W: Field = 18..20;
    pub const OUT_H: Field = 20..22;
    pub const RESERVED1: Field = 22..24;
}

/// Length of the image header.
pub const IMAGE_HEADER_LEN: usize = 24;

/// A pixel rectangle (x, y, w, h).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Rect {
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
}

impl Rect {
    pub fn new(x: u32, y: u32, w: u32, h: u32) -> Rect {
        Rect { x, y, w, h }
    }
    pub fn right(&self) -> u32 {
        self.x + self.w
    }
    pub fn bottom(&self) -> u32 {
        self.y + self.h
    }
    pub fn area(&self) -> u64 {
        self.w as u64 * self.h as u64
    }
    /// Whether this rectangle lies inside a `width` x `height` image.
    pub fn inside(&self, width: u32, height: u32) -> bool {
        self.right() <= width && self.bottom() <= height
    }
    pub fn contains(&self, other: &Rect) -> bool {
        other.x >= self.x
            && other.y >= self.y
            && other.right() <= self.right()
            && other.bottom() <= self.bottom()
    }
}

/// A view of an image body (the bytes after the common header).
#[derive(Debug, Clone)]
pub struct ImageFragment<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> ImageFragment<T> {
    pub fn new_unchecked(buffer: T) -> Self {
        ImageFragment { buffer }
    }
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let f = Self::new_unchecked(buffer);
        f.check_len()?;
        Ok(f)
    }
    pub fn check_len(&self) -> Result<(), WireError> {
        if self.buffer.as_ref().len() < IMAGE_HEADER_LEN {
            Err(WireError::Malformed("image header truncated"))
        } else {
            Ok(())
        }
    }
    pub fn width(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::WIDTH)
    }
    pub fn height(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::HEIGHT)
    }
    pub fn pixel_format_raw(&self) -> u8 {
        self.buffer.as_ref()[field::PIXEL_FORMAT]
    }
    pub fn reserved0(&self) -> u8 {
        self.buffer.as_ref()[field::RESERVED0]
    }
    pub fn x(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::X)
    }
    pub fn y(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::Y)
    }
    pub fn w(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::W)
    }
    pub fn h(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::H)
    }
    pub fn out_x(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::OUT_X)
    }
    pub fn out_y(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::OUT_Y)
    }
    pub fn out_w(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::OUT_W)
    }
    pub fn out_h(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::OUT_H)
    }
    pub fn reserved1(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::RESERVED1)
    }
    pub fn pixels(&self) -> &[u8] {
        &self.buffer.as_ref()[IMAGE_HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> ImageFragment<T> {
    fn put(&mut self, f: Field, v: u16) {
        write_u16(self.buffer.as_mut(), f, v)
    }
    pub fn pixels_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[IMAGE_HEADER_LEN..]
    }
}

/// The meaning of an image header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageRepr {
    pub width: u16,
    pub height: u16,
    pub pixel_format: PixelFormat,
    /// The input pixel rectangle carried.
    pub rect: Rect,
    /// IMAGE_TILE: the output rectangle this tile produces.
    pub out_rect: Option<Rect>,
}

impl ImageRepr {
    /// Reads the pixel format alone: the proxy checks it against the
    /// pipeline (KIND_MISMATCH) before the other fields (MALFORMED).
    pub fn peek_pixel_format(body: &[u8]) -> Result<PixelFormat, WireError> {
        let f = ImageFragment::new_checked(body)?;
        PixelFormat::from_u8(f.pixel_format_raw())
            .ok_or(WireError::Malformed("unknown pixel_format"))
    }

    /// Parses and validates an image body of the given kind: reserved
    /// fields, rectangle bounds, payload length.
    pub fn parse<T: AsRef<[u8]>>(kind: Kind, f: &ImageFragment<T>) -> Result<ImageRepr, WireError> {
        f.check_len()?;
        let pixel_format = PixelFormat::from_u8(f.pixel_format_raw())
            .ok_or(WireError::Malformed("unknown pixel_format"))?;
        if f.reserved0() != 0 || f.reserved1() != 0 {
            return Err(WireError::Malformed("reserved image header field is not 0"));
        }
        let (width, height) = (f.width(), f.height());
        if width == 0 || height == 0 {
            return Err(WireError::Malformed("image width and height must be >= 1"));
        }
        let rect = Rect::new(f.x() as u32, f.y() as u32, f.w() as u32, f.h() as u32);
        if rect.w == 0 || rect.h == 0 {
            return Err(WireError::Malformed("rectangle w and h must be >= 1"));
        }
        if !rect.inside(width as u32, height as u32) {
            return Err(WireError::Malformed("rectangle lies outside the image"));
        }
        let out = Rect::new(
            f.out_x() as u32,
            f.out_y() as u32,
            f.out_w() as u32,
            f.out_h() as u32,
        );
        let out_rect = match kind {
            Kind::ImageRows => {
                if out != Rect::default() {
                    return Err(WireError::Malformed("IMAGE_ROWS out_* fields must be 0"));
                }
                None
            }
            Kind::ImageTile => {
                if out.w == 0 || out.h == 0 {
                    return Err(WireError::Malformed("tile out_w and out_h must be >= 1"));
                }
                Some(out)
            }
            _ => return Err(WireError::Malformed("not an image kind")),
        };
        let expected = rect.area() as usize * pixel_format.channels();
        if f.pixels().len() != expected {
            return Err(WireError::Malformed(
                "payload length is not w * h * channels(pixel_format)",
            ));
        }
        Ok(ImageRepr {
            width,
            height,
            pixel_format,
            rect,
            out_rect,
        })
    }

    /// Bytes of pixels this header announces.
    pub fn pixel_bytes(&self) -> usize {
        self.rect.area() as usize * self.pixel_format.channels()
    }

    /// Body length (image header + pixels).
    pub fn buffer_len(&self) -> usize {
        IMAGE_HEADER_LEN + self.pixel_bytes()
    }

    /// Writes the image header (not the pixels). Coordinates must fit u16.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, f: &mut ImageFragment<T>) {
        f.put(field::WIDTH, self.width);
        f.put(field::HEIGHT, self.height);
        f.buffer.as_mut()[field::PIXEL_FORMAT] = self.pixel_format as u8;
        f.buffer.as_mut()[field::RESERVED0] = 0;
        f.put(field::X, self.rect.x as u16);
        f.put(field::Y, self.rect.y as u16);
        f.put(field::W, self.rect.w as u16);
        f.put(field::H, self.rect.h as u16);
        let out = self.out_rect.unwrap_or_default();
        f.put(field::OUT_X, out.x as u16);
        f.put(field::OUT_Y, out.y as u16);
        f.put(field::OUT_W, out.w as u16);
        f.put(field::OUT_H, out.h as u16);
        f.put(field::RESERVED1, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // 4x2 RGB8 image, rectangle (1,1) 2x1, IMAGE_ROWS: 6 pixel bytes.
    static ROWS: [u8; 30] = [
        0x00, 0x04, 0x00, 0x02, 0x01, 0x00, 0x00, 0x01, 0x00, 0x01, 0x00, 0x02, 0x00, 0x01, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 1, 2, 3, 4, 5, 6,
    ];

    fn repr() -> ImageRepr {
        ImageRepr {
            width: 4,
            height: 2,
            pixel_format: PixelFormat::Rgb8,
            rect: Rect::new(1, 1, 2, 1),
            out_rect: None,
        }
    }

    #[test]
    fn deconstruct() {
        let f = ImageFragment::new_checked(&ROWS[..]).unwrap();
        assert_eq!(ImageRepr::parse(Kind::ImageRows, &f).unwrap(), repr());
        assert_eq!(f.pixels(), &[1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn construct() {
        let mut buf = [0xaau8; 30];
        let mut f = ImageFragment::new_unchecked(&mut buf[..]);
        repr().emit(&mut f);
        f.pixels_mut().copy_from_slice(&[1, 2, 3, 4, 5, 6]);
        assert_eq!(buf, ROWS);
        assert_eq!(repr().buffer_len(), 30);
    }

    fn parse_modified(kind: Kind, edit: impl FnOnce(&mut Vec<u8>)) -> Result<ImageRepr, WireError> {
        let mut v = ROWS.to_vec();
        edit(&mut v);
        ImageRepr::parse(kind, &ImageFragment::new_unchecked(&v[..]))
    }

    #[test]
    fn rejections() {
        // Truncated header.
        assert!(ImageFragment::new_checked(&ROWS[..23]).is_err());
        // Payload one byte short / long.
        assert!(parse_modified(Kind::ImageRows, |v| {
            v.pop();
        })
        .is_err());
        assert!(parse_modified(Kind::ImageRows, |v| v.push(0)).is_err());
        // Reserved fields.
        assert!(parse_modified(Kind::ImageRows, |v| v[5] = 1).is_err());
        assert!(parse_modified(Kind::ImageRows, |v| v[23] = 1).is_err());
        // Unknown pixel format.
        assert!(parse_modified(Kind::ImageRows, |v| v[4] = 5).is_err());
        // Zero width image / zero rect.
        assert!(parse_modified(Kind::ImageRows, |v| v[1] = 0).is_err());
        assert!(parse_modified(Kind::ImageRows, |v| v[11] = 0).is_err());
        // Rectangle past the right edge (x=3, w=2 on width 4).
        assert!(parse_modified(Kind::ImageRows, |v| v[7] = 3).is_err());
        // Rows with out_* set.
        assert!(parse_modified(Kind::ImageRows, |v| v[19] = 1).is_err());
        // Tile without an output rectangle.
        assert!(parse_modified(Kind::ImageTile, |_| {}).is_err());
        // Tile with one.
        let t = parse_modified(Kind::ImageTile, |v| {
            v[19] = 1;
            v[21] = 1;
        })
        .unwrap();
        assert_eq!(t.out_rect, Some(Rect::new(0, 0, 1, 1)));
    }
}
