//! KServe v2 (Triton, KServe, OpenVINO Model Server) inference requests
//! with the binary tensor data extension, and reading their answers.
//! Pure: bytes in, bytes out.

use super::codec::HttpResponse;
use super::UpstreamFailure;
use crate::transform::Tensor;
use serde_json::json;

/// `/v2/models/{model}[/versions/{version}]/infer` under `base_path`.
pub fn infer_path(base_path: &str, model: &str, version: &str) -> String {
    if version.is_empty() {
        format!("{base_path}/v2/models/{model}/infer")
    } else {
        format!("{base_path}/v2/models/{model}/versions/{version}/infer")
    }
}

/// Readiness paths: the server's, then the model's.
pub fn ready_paths(base_path: &str, model: &str, version: &str) -> [String; 2] {
    let model_ready = if version.is_empty() {
        format!("{base_path}/v2/models/{model}/ready")
    } else {
        format!("{base_path}/v2/models/{model}/versions/{version}/ready")
    };
    [format!("{base_path}/v2/health/ready"), model_ready]
}

/// An inference request body: the JSON header (inputs with
/// `binary_data_size`, outputs asked as binary) followed by each input's
/// bytes. Returns (body, header length) — the header length goes in
/// `Inference-Header-Content-Length`.
pub fn infer_body(tensors: &[Tensor], outputs: &[String]) -> (Vec<u8>, usize) {
    let mut header = json!({
        "inputs": tensor_descriptors(tensors),
        // Triton reads `binary_data` per output; KServe's Python server
        // reads `binary_data_output` on the request: ask both ways.
        "parameters": {"binary_data_output": true},
    });
    if !outputs.is_empty() {
        header["outputs"] = outputs
            .iter()
            .map(|o| json!({"name": o, "parameters": {"binary_data": true}}))
            .collect();
    }
    binary_body(&header, tensors)
}

/// The binary extension's description of each tensor: name, shape,
/// datatype and `binary_data_size` (the bytes follow the JSON header).
pub fn tensor_descriptors(tensors: &[Tensor]) -> Vec<serde_json::Value> {
    tensors
        .iter()
        .map(|t| {
            json!({
                "name": t.name,
                "shape": t.shape,
                "datatype": t.dtype.name(),
                "parameters": {"binary_data_size": t.data.len()},
            })
        })
        .collect()
}

/// A binary-extension body (request or response): the JSON header, then
/// each tensor's bytes in order. Returns (body, header length).
pub fn binary_body(header: &serde_json::Value, tensors: &[Tensor]) -> (Vec<u8>, usize) {
    let header = serde_json::to_vec(header).expect("JSON of plain values");
    let total = header.len() + tensors.iter().map(|t| t.data.len()).sum::<usize>();
    let mut body = Vec::with_capacity(total);
    body.extend_from_slice(&header);
    for t in tensors {
        body.extend_from_slice(&t.data);
    }
    (body, header.len())
}

/// What goes back to the client: (content_type, header_len, body).
pub fn read_answer(resp: HttpResponse) -> Result<(u16, usize, Vec<u8>), UpstreamFailure> {
    if !(200..300).contains(&resp.status) {
        return Err(UpstreamFailure::http(&resp));
    }
    match resp.header("inference-header-content-length") {
        Some(v) => {
            let n: usize = v.parse().map_err(|_| {
                UpstreamFailure::Malformed(format!("bad Inference-Header-Content-Length `{v}`"))
            })?;
            if n > resp.body.len() {
                return Err(UpstreamFailure::Malformed(format!(
                    "Inference-Header-Content-Length {n} exceeds the {}-byte body",
                    resp.body.len()
                )));
            }
            Ok((crate::wire::content_type::KSERVE_BINARY, n, resp.body))
        }
        None => Ok((crate::wire::content_type::JSON, 0, resp.body)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transform::DType;
    use crate::upstream::echo::parse_kserve_binary_response;

    #[test]
    fn paths() {
        assert_eq!(infer_path("", "m", ""), "/v2/models/m/infer");
        assert_eq!(
            infer_path("/p", "m", "3"),
            "/p/v2/models/m/versions/3/infer"
        );
        assert_eq!(ready_paths("", "m", "")[0], "/v2/health/ready");
        assert_eq!(
            ready_paths("", "m", "2")[1],
            "/v2/models/m/versions/2/ready"
        );
    }

    #[test]
    fn body_layout() {
        let t = vec![
            Tensor::from_ids("input_ids", DType::Int64, &[101, 102]),
            Tensor::from_ids("attention_mask", DType::Int32, &[1, 1]),
        ];
        let (body, hl) = infer_body(&t, &["sum".to_string()]);
        let h: serde_json::Value = serde_json::from_slice(&body[..hl]).unwrap();
        assert_eq!(h["inputs"][0]["name"], "input_ids");
        assert_eq!(h["inputs"][0]["datatype"], "INT64");
        assert_eq!(h["inputs"][0]["shape"], json!([1, 2]));
        assert_eq!(h["inputs"][0]["parameters"]["binary_data_size"], 16);
        assert_eq!(h["inputs"][1]["parameters"]["binary_data_size"], 8);
        assert_eq!(h["outputs"][0]["parameters"]["binary_data"], true);
        assert_eq!(h["parameters"]["binary_data_output"], true);
        assert_eq!(body.len(), hl + 24);
        assert_eq!(&body[hl..hl + 8], &101i64.to_le_bytes());
        assert_eq!(&body[hl + 16..hl + 20], &1i32.to_le_bytes());
    }

    #[test]
    fn answers() {
        let t = vec![Tensor::from_ids("out", DType::Int64, &[5])];
        let (body, hl) = crate::upstream::echo::kserve_binary_response("m", &t);
        let resp = HttpResponse {
            status: 200,
            headers: vec![("inference-header-content-length".into(), hl.to_string())],
            body: body.clone(),
            keep_alive: true,
        };
        let (ct, n, b) = read_answer(resp.clone()).unwrap();
        assert_eq!((ct, n), (2, hl));
        assert_eq!(parse_kserve_binary_response(&b, n).unwrap(), t);
        let json_only = HttpResponse {
            headers: vec![],
            ..resp.clone()
        };
        assert_eq!(read_answer(json_only).unwrap().0, 1);
        let too_long = HttpResponse {
            headers: vec![("inference-header-content-length".into(), "99999".into())],
            ..resp.clone()
        };
        assert!(matches!(
            read_answer(too_long),
            Err(UpstreamFailure::Malformed(_))
        ));
        let err = HttpResponse {
            status: 400,
            headers: vec![],
            body: br#"{"error":"unexpected shape for input 'input'"}"#.to_vec(),
            keep_alive: true,
        };
        match read_answer(err) {
            Err(UpstreamFailure::Http(m)) => {
                assert!(m.contains("400") && m.contains("unexpected shape"), "{m}")
            }
            other => panic!("{other:?}"),
        }
    }
}
