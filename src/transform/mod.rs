//! Pure transforms over slices: resize, normalize, tokenize.
//!
//! `reference` holds the independent oracles (the `image` crate, float64
//! formulas of the spec, the `tokenizers` crate on the whole text) that
//! the serving-path code is tested against.

pub mod image;
pub mod lut;
pub mod normalize;
pub mod reference;
pub mod resize;
pub mod stitch;
pub mod stream;
pub mod tensor;
pub mod text;
pub mod wordpiece;

pub use tensor::{DType, Tensor};
