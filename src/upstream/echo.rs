//! The built-in `echo` upstream: answers with the tensors that would have
//! gone upstream, as a KServe v2 binary-extension response.

use super::kserve::{binary_body, tensor_descriptors};
use crate::transform::Tensor;
use serde_json::json;

/// A KServe v2 binary-extension body: JSON header, then each tensor's
/// bytes in the order of `outputs`. Returns (body, header_len).
pub fn kserve_binary_response(model_name: &str, tensors: &[Tensor]) -> (Vec<u8>, usize) {
    let header = json!({"model_name": model_name, "outputs": tensor_descriptors(tensors)});
    binary_body(&header, tensors)
}

/// Error reading a KServe v2 binary response.
#[derive(Debug, thiserror::Error)]
pub enum KserveParseError {
    #[error("header_len {0} exceeds the body")]
    HeaderLen(usize),
    #[error("JSON header: {0}")]
    Json(#[from] serde_json::Error),
    #[error("output {0}: {1}")]
    Output(usize, &'static str),
}

/// Splits a KServe v2 binary response back into tensors (client side).
pub fn parse_kserve_binary_response(
    body: &[u8],
    header_len: usize,
) -> Result<Vec<Tensor>, KserveParseError> {
    if header_len > body.len() {
        return Err(KserveParseError::HeaderLen(header_len));
    }
    let header: serde_json::Value = serde_json::from_slice(&body[..header_len])?;
    let mut pos = header_len;
    let mut out = Vec::new();
    let outputs = header["outputs"].as_array().cloned().unwrap_or_default();
    for (i, o) in outputs.iter().enumerate() {
        let name = o["name"]
            .as_str()
            .ok_or(KserveParseError::Output(i, "no name"))?;
        let dtype = o["datatype"]
            .as_str()
            .and_then(crate::transform::DType::from_name)
            .ok_or(KserveParseError::Output(i, "unknown datatype"))?;
        let shape: Vec<u64> = o["shape"]
            .as_array()
            .ok_or(KserveParseError::Output(i, "no shape"))?
            .iter()
            .map(|d| d.as_u64().ok_or(KserveParseError::Output(i, "bad shape")))
            .collect::<Result<_, _>>()?;
        let size = o["parameters"]["binary_data_size"]
            .as_u64()
            .ok_or(KserveParseError::Output(i, "no binary_data_size"))? as usize;
        if pos + size > body.len() {
            return Err(KserveParseError::Output(i, "binary data past the body"));
        }
        out.push(Tensor {
            name: name.to_string(),
            dtype,
            shape,
            data: body[pos..pos + size].to_vec(),
        });
        pos += size;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transform::DType;

    #[test]
    fn round_trip() {
        let t = vec![
            Tensor::from_ids("input_ids", DType::Int64, &[101, 7592, 102]),
            Tensor::from_ids("attention_mask", DType::Int64, &[1, 1, 1]),
        ];
        let (body, hl) = kserve_binary_response("echo", &t);
        let j: serde_json::Value = serde_json::from_slice(&body[..hl]).unwrap();
        assert_eq!(j["model_name"], "echo");
        assert_eq!(j["outputs"][0]["parameters"]["binary_data_size"], 24);
        assert_eq!(j["outputs"][1]["shape"], json!([1, 3]));
        assert_eq!(&body[hl..hl + 8], &101i64.to_le_bytes());
        assert_eq!(parse_kserve_binary_response(&body, hl).unwrap(), t);
        assert!(parse_kserve_binary_response(&body[..body.len() - 1], hl).is_err());
    }
}
