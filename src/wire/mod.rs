//! TWP/1 wire formats: typed, zero-copy views over byte slices plus
//! high-level representations with `parse` / `emit` (smoltcp's `wire` style).
//!
//! Nothing here does I/O or allocates. A view built with `new_checked` has
//! been length-checked, so none of its getters can panic.

pub mod error_packet;
mod header;
pub mod image;
pub mod response;
pub mod text;

pub use error_packet::{ErrorPacket, ErrorRepr};
pub use header::{HeaderPrefix, HeaderRepr, Packet};
pub use image::{ImageFragment, ImageRepr, Rect};
pub use response::{ResponsePacket, ResponseRepr};
pub use text::{TextChunk, TextRepr};

/// ASCII "TW".
pub const MAGIC: u16 = 0x5457;
/// The only protocol version this crate speaks.
pub const VERSION: u8 = 1;
/// Length of the common header that starts every datagram.
pub const HEADER_LEN: usize = 24;
/// Flag bit 0: set on the fragment with the highest seq.
pub const FLAG_LAST: u16 = 0x0001;
/// Longest ERROR message, in bytes.
pub const MAX_ERROR_MESSAGE: usize = 1024;
/// UDP payload every proxy accepts (IPv4, MTU 1500).
pub const DEFAULT_MAX_DATAGRAM: usize = 1472;

/// A field's byte range within a buffer.
pub(crate) type Field = core::ops::Range<usize>;

pub(crate) fn read_u16(b: &[u8], f: Field) -> u16 {
    u16::from_be_bytes([b[f.start], b[f.start + 1]])
}
pub(crate) fn read_u32(b: &[u8], f: Field) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[f]);
    u32::from_be_bytes(a)
}
pub(crate) fn read_u64(b: &[u8], f: Field) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[f]);
    u64::from_be_bytes(a)
}
pub(crate) fn write_u16(b: &mut [u8], f: Field, v: u16) {
    b[f].copy_from_slice(&v.to_be_bytes());
}
pub(crate) fn write_u32(b: &mut [u8], f: Field, v: u32) {
    b[f].copy_from_slice(&v.to_be_bytes());
}
pub(crate) fn write_u64(b: &mut [u8], f: Field, v: u64) {
    b[f].copy_from_slice(&v.to_be_bytes());
}

/// Why a buffer could not be read as TWP/1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("datagram too short")]
    Truncated,
    #[error("wrong magic: not TWP traffic")]
    BadMagic,
    #[error("{0}")]
    Malformed(&'static str),
}

/// The datagram kinds of TWP/1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    ImageRows = 0x01,
    ImageTile = 0x02,
    TextChunk = 0x03,
    Describe = 0x04,
    Response = 0x81,
    Error = 0x82,
}

impl Kind {
    pub fn from_u8(v: u8) -> Option<Kind> {
        Some(match v {
            0x01 => Kind::ImageRows,
            0x02 => Kind::ImageTile,
            0x03 => Kind::TextChunk,
            0x04 => Kind::Describe,
            0x81 => Kind::Response,
            0x82 => Kind::Error,
            _ => return None,
        })
    }
    /// Kinds that only the proxy sends.
    pub fn is_reply(self) -> bool {
        matches!(self, Kind::Response | Kind::Error)
    }
    pub fn is_image(self) -> bool {
        matches!(self, Kind::ImageRows | Kind::ImageTile)
    }
}

/// ERROR codes (spec "ERROR").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum ErrorCode {
    Malformed = 1,
    UnsupportedVersion = 2,
    UnknownPipeline = 3,
    KindMismatch = 4,
    TooLarge = 5,
    Incomplete = 6,
    Overloaded = 7,
    UpstreamUnavailable = 8,
    UpstreamError = 9,
    InvalidContent = 10,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 10] = [
        ErrorCode::Malformed,
        ErrorCode::UnsupportedVersion,
        ErrorCode::UnknownPipeline,
        ErrorCode::KindMismatch,
        ErrorCode::TooLarge,
        ErrorCode::Incomplete,
        ErrorCode::Overloaded,
        ErrorCode::UpstreamUnavailable,
        ErrorCode::UpstreamError,
        ErrorCode::InvalidContent,
    ];
    pub fn from_u16(v: u16) -> Option<ErrorCode> {
        ErrorCode::ALL.iter().copied().find(|c| *c as u16 == v)
    }
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::Malformed => "MALFORMED",
            ErrorCode::UnsupportedVersion => "UNSUPPORTED_VERSION",
            ErrorCode::UnknownPipeline => "UNKNOWN_PIPELINE",
            ErrorCode::KindMismatch => "KIND_MISMATCH",
            ErrorCode::TooLarge => "TOO_LARGE",
            ErrorCode::Incomplete => "INCOMPLETE",
            ErrorCode::Overloaded => "OVERLOADED",
            ErrorCode::UpstreamUnavailable => "UPSTREAM_UNAVAILABLE",
            ErrorCode::UpstreamError => "UPSTREAM_ERROR",
            ErrorCode::InvalidContent => "INVALID_CONTENT",
        }
    }
    /// Index into per-code counter arrays.
    pub fn index(self) -> usize {
        self as usize - 1
    }
}

impl core::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// Pixel formats of image fragments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[repr(u8)]
pub enum PixelFormat {
    #[serde(rename = "GRAY8")]
    Gray8 = 0,
    #[serde(rename = "RGB8")]
    Rgb8 = 1,
    #[serde(rename = "BGR8")]
    Bgr8 = 2,
    #[serde(rename = "RGBA8")]
    Rgba8 = 3,
    #[serde(rename = "BGRA8")]
    Bgra8 = 4,
}

impl PixelFormat {
    pub const ALL: [PixelFormat; 5] = [
        PixelFormat::Gray8,
        PixelFormat::Rgb8,
        PixelFormat::Bgr8,
        PixelFormat::Rgba8,
        PixelFormat::Bgra8,
    ];
    pub fn from_u8(v: u8) -> Option<PixelFormat> {
        PixelFormat::ALL.get(v as usize).copied()
    }
    pub fn channels(self) -> usize {
        match self {
            PixelFormat::Gray8 => 1,
            PixelFormat::Rgb8 | PixelFormat::Bgr8 => 3,
            PixelFormat::Rgba8 | PixelFormat::Bgra8 => 4,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            PixelFormat::Gray8 => "GRAY8",
            PixelFormat::Rgb8 => "RGB8",
            PixelFormat::Bgr8 => "BGR8",
            PixelFormat::Rgba8 => "RGBA8",
            PixelFormat::Bgra8 => "BGRA8",
        }
    }
    /// Source channel index of red, green and blue (gray: all 0).
    pub fn rgb_indices(self) -> [usize; 3] {
        match self {
            PixelFormat::Gray8 => [0, 0, 0],
            PixelFormat::Rgb8 | PixelFormat::Rgba8 => [0, 1, 2],
            PixelFormat::Bgr8 | PixelFormat::Bgra8 => [2, 1, 0],
        }
    }
}

/// Response content types.
pub mod content_type {
    pub const JSON: u16 = 1;
    pub const KSERVE_BINARY: u16 = 2;
    pub const RAW_TENSOR: u16 = 3;
}
