//! Cutting requests into TWP/1 datagrams (pure; no I/O).

use crate::transform::resize::{Resampling, ResizePlan};
use crate::wire::image::IMAGE_HEADER_LEN;
use crate::wire::text::TEXT_HEADER_LEN;
use crate::wire::{
    HeaderRepr, ImageFragment, ImageRepr, Kind, Packet, PixelFormat, Rect, TextChunk, TextRepr,
    HEADER_LEN,
};

/// An image in memory: row-major pixels of `format`.
#[derive(Debug, Clone)]
pub struct RawImage {
    pub width: u32,
    pub height: u32,
    pub format: PixelFormat,
    pub data: Vec<u8>,
}

impl RawImage {
    /// Copies rectangle `r` out, row-major.
    pub fn crop(&self, r: Rect) -> Vec<u8> {
        let ch = self.format.channels();
        let mut out = Vec::with_capacity(r.area() as usize * ch);
        for y in r.y..r.bottom() {
            let s = ((y * self.width + r.x) as usize) * ch;
            out.extend_from_slice(&self.data[s..s + r.w as usize * ch]);
        }
        out
    }
}

fn datagram(
    kind: Kind,
    pipeline: u16,
    request_id: u64,
    seq: u32,
    count: u32,
    body: &[u8],
) -> Vec<u8> {
    let mut d = vec![0u8; HEADER_LEN + body.len()];
    let mut p = Packet::new_unchecked(&mut d[..]);
    HeaderRepr::fragment(kind, pipeline, request_id, seq, count).emit(&mut p);
    p.body_mut().copy_from_slice(body);
    d
}

fn image_body(img: &RawImage, rect: Rect, out_rect: Option<Rect>, kind: Kind) -> Vec<u8> {
    let repr = ImageRepr {
        width: img.width as u16,
        height: img.height as u16,
        pixel_format: img.format,
        rect,
        out_rect: if kind == Kind::ImageTile {
            out_rect
        } else {
            None
        },
    };
    let mut b = vec![0u8; repr.buffer_len()];
    let mut f = ImageFragment::new_unchecked(&mut b[..]);
    repr.emit(&mut f);
    f.pixels_mut().copy_from_slice(&img.crop(rect));
    b
}

/// IMAGE_ROWS: whole rows per datagram, or row segments when a row is
/// larger than a datagram; top to bottom.
pub fn image_rows(
    img: &RawImage,
    pipeline: u16,
    request_id: u64,
    max_datagram: usize,
) -> Vec<Vec<u8>> {
    let ch = img.format.channels() as u32;
    let room = (max_datagram - HEADER_LEN - IMAGE_HEADER_LEN) as u32 / ch;
    assert!(room >= 1, "max_datagram too small for one pixel");
    let mut rects = Vec::new();
    if room >= img.width {
        let rows = (room / img.width).max(1);
        let mut y = 0;
        while y < img.height {
            let h = rows.min(img.height - y);
            rects.push(Rect::new(0, y, img.width, h));
            y += h;
        }
    } else {
        for y in 0..img.height {
            let mut x = 0;
            while x < img.width {
                let w = room.min(img.width - x);
                rects.push(Rect::new(x, y, w, 1));
                x += w;
            }
        }
    }
    let count = rects.len() as u32;
    rects
        .iter()
        .enumerate()
        .map(|(i, r)| {
            datagram(
                Kind::ImageRows,
                pipeline,
                request_id,
                i as u32,
                count,
                &image_body(img, *r, None, Kind::ImageRows),
            )
        })
        .collect()
}

/// The output side of a pipeline, as DESCRIBE gives it.
#[derive(Debug, Clone, Copy)]
pub struct OutputGeometry {
    pub width: u32,
    pub height: u32,
    pub antialias: bool,
}

/// Cuts the output image into a grid of tiles whose input rectangles
/// (output rect + minimal halo) fit in one datagram; fewest tiles first.
pub fn tile_grid(
    img_w: u32,
    img_h: u32,
    ch: usize,
    out: OutputGeometry,
    max_datagram: usize,
) -> Option<Vec<(Rect, Rect)>> {
    let mode = Resampling::from_antialias(out.antialias);
    let room = (max_datagram - HEADER_LEN - IMAGE_HEADER_LEN) / ch;
    let grid = |nx: u32, ny: u32| -> Option<Vec<(Rect, Rect)>> {
        let mut v = Vec::with_capacity((nx * ny) as usize);
        for j in 0..ny {
            let (y0, y1) = (j * out.height / ny, (j + 1) * out.height / ny);
            for i in 0..nx {
                let (x0, x1) = (i * out.width / nx, (i + 1) * out.width / nx);
                if x1 == x0 || y1 == y0 {
                    return None;
                }
                let o = Rect::new(x0, y0, x1 - x0, y1 - y0);
                let input = ResizePlan::halo_rect(mode, img_w, img_h, out.width, out.height, o);
                if input.area() as usize > room {
                    return None;
                }
                v.push((input, o));
            }
        }
        Some(v)
    };
    let mut best: Option<Vec<(Rect, Rect)>> = None;
    for nx in 1..=out.width {
        if best.as_ref().is_some_and(|b| nx as usize >= b.len()) {
            break;
        }
        for ny in 1..=out.height {
            if best.as_ref().is_some_and(|b| (nx * ny) as usize >= b.len()) {
                break;
            }
            if let Some(g) = grid(nx, ny) {
                best = Some(g);
                break;
            }
        }
    }
    best
}

/// IMAGE_TILE datagrams for a tile grid.
pub fn image_tiles(
    img: &RawImage,
    pipeline: u16,
    request_id: u64,
    tiles: &[(Rect, Rect)],
) -> Vec<Vec<u8>> {
    let count = tiles.len() as u32;
    tiles
        .iter()
        .enumerate()
        .map(|(i, (input, out))| {
            datagram(
                Kind::ImageTile,
                pipeline,
                request_id,
                i as u32,
                count,
                &image_body(img, *input, Some(*out), Kind::ImageTile),
            )
        })
        .collect()
}

/// TEXT_CHUNK datagrams: chunks as large as a datagram allows, each
/// repeating the last `overlap` bytes of the previous one.
pub fn text_chunks(
    text: &[u8],
    pipeline: u16,
    request_id: u64,
    max_datagram: usize,
    overlap: usize,
) -> Vec<Vec<u8>> {
    let room = max_datagram - HEADER_LEN - TEXT_HEADER_LEN;
    let overlap = overlap.min(room.saturating_sub(1));
    let mut spans = Vec::new();
    let mut start = 0;
    loop {
        let end = (start + room).min(text.len());
        spans.push((start, end));
        if end == text.len() {
            break;
        }
        start = end - overlap;
    }
    let count = spans.len() as u32;
    spans
        .iter()
        .enumerate()
        .map(|(i, &(s, e))| {
            let mut b = vec![0u8; TEXT_HEADER_LEN + e - s];
            let mut c = TextChunk::new_unchecked(&mut b[..]);
            TextRepr {
                offset: s as u32,
                total_len: text.len() as u32,
            }
            .emit(&mut c);
            c.bytes_mut().copy_from_slice(&text[s..e]);
            datagram(Kind::TextChunk, pipeline, request_id, i as u32, count, &b)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_cover_the_image_once() {
        for (w, h) in [(640u32, 480u32), (3, 1), (1000, 2)] {
            let img = RawImage {
                width: w,
                height: h,
                format: PixelFormat::Rgb8,
                data: vec![1; (w * h * 3) as usize],
            };
            let d = image_rows(&img, 1, 9, 1472);
            let mut area = 0;
            for (i, x) in d.iter().enumerate() {
                assert!(x.len() <= 1472);
                let p = Packet::new_checked(&x[..]).unwrap();
                assert_eq!(p.seq() as usize, i);
                assert_eq!(p.count() as usize, d.len());
                let r = ImageRepr::parse(
                    Kind::ImageRows,
                    &ImageFragment::new_checked(p.body()).unwrap(),
                )
                .unwrap();
                area += r.rect.area();
            }
            assert_eq!(area, (w * h) as u64);
        }
    }

    #[test]
    fn tiles_fit_and_partition() {
        for aa in [true, false] {
            let g = tile_grid(
                640,
                480,
                3,
                OutputGeometry {
                    width: 224,
                    height: 224,
                    antialias: aa,
                },
                1472,
            )
            .unwrap();
            let total: u64 = g.iter().map(|(_, o)| o.area()).sum();
            assert_eq!(total, 224 * 224);
            for (i, _) in &g {
                assert!(i.area() * 3 + 48 <= 1472);
            }
        }
    }

    #[test]
    fn text_chunks_overlap_and_cover() {
        let text: Vec<u8> = (0..5000u32).map(|i| b'a' + (i % 26) as u8).collect();
        for overlap in [0, 64] {
            let d = text_chunks(&text, 2, 1, 1472, overlap);
            let mut rebuilt = vec![0u8; text.len()];
            let mut prev_end = 0;
            for x in &d {
                assert!(x.len() <= 1472);
                let p = Packet::new_checked(&x[..]).unwrap();
                let c = TextChunk::new_checked(p.body()).unwrap();
                let off = c.offset() as usize;
                if off > 0 {
                    assert_eq!(prev_end - off, overlap);
                }
                rebuilt[off..off + c.bytes().len()].copy_from_slice(c.bytes());
                prev_end = off + c.bytes().len();
            }
            assert_eq!(rebuilt, text);
        }
        assert_eq!(text_chunks(b"", 2, 1, 1472, 0).len(), 1);
    }
}
