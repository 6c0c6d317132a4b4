//! Output tensors as they are handed to an upstream: name, dtype, shape
//! and little-endian row-major bytes.

use serde::{Deserialize, Serialize};

/// Element types of KServe v2 / Triton tensors that tensorwire produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DType {
    #[serde(rename = "FP32")]
    Fp32,
    #[serde(rename = "FP16")]
    Fp16,
    #[serde(rename = "UINT8")]
    Uint8,
    #[serde(rename = "INT8")]
    Int8,
    #[serde(rename = "INT64")]
    Int64,
    #[serde(rename = "INT32")]
    Int32,
}

impl DType {
    /// The KServe v2 datatype name.
    pub fn name(self) -> &'static str {
        match self {
            DType::Fp32 => "FP32",
            DType::Fp16 => "FP16",
            DType::Uint8 => "UINT8",
            DType::Int8 => "INT8",
            DType::Int64 => "INT64",
            DType::Int32 => "INT32",
        }
    }
    pub fn from_name(s: &str) -> Option<DType> {
        [
            DType::Fp32,
            DType::Fp16,
            DType::Uint8,
            DType::Int8,
            DType::Int64,
            DType::Int32,
        ]
        .into_iter()
        .find(|d| d.name() == s)
    }
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::Fp32 | DType::Int32 => 4,
            DType::Fp16 => 2,
            DType::Uint8 | DType::Int8 => 1,
            DType::Int64 => 8,
        }
    }
    /// numpy's dtype string (little-endian), for .npy files.
    pub fn numpy_descr(self) -> &'static str {
        match self {
            DType::Fp32 => "<f4",
            DType::Fp16 => "<f2",
            DType::Uint8 => "|u1",
            DType::Int8 => "|i1",
            DType::Int64 => "<i8",
            DType::Int32 => "<i4",
        }
    }
}

/// One named tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<u64>,
    /// Little-endian, row-major.
    pub data: Vec<u8>,
}

impl Tensor {
    pub fn element_count(&self) -> u64 {
        self.shape.iter().product()
    }

    /// Builds an integer tensor of shape [1, values.len()].
    pub fn from_ids(name: &str, dtype: DType, values: &[u32]) -> Tensor {
        let mut data = Vec::with_capacity(values.len() * dtype.size());
        for &v in values {
            match dtype {
                DType::Int64 => data.extend_from_slice(&(v as i64).to_le_bytes()),
                DType::Int32 => data.extend_from_slice(&(v as i32).to_le_bytes()),
                _ => unreachable!("ids are INT64 or INT32 (checked by config)"),
            }
        }
        Tensor {
            name: name.to_string(),
            dtype,
            shape: vec![1, values.len() as u64],
            data,
        }
    }

    /// FNV-1a 64 of the bytes: a short checksum for printing.
    pub fn checksum(&self) -> u64 {
        fnv1a64(&self.data)
    }
}

/// FNV-1a, 64 bit.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}
