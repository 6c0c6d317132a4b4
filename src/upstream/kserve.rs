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

/// `/v2/models/{model}[/versions/{version}]`: the model's metadata.
pub fn metadata_path(base_path: &str, model: &str, version: &str) -> String {
    if version.is_empty() {
        format!("{base_path}/v2/models/{model}")
    } else {
        format!("{base_path}/v2/models/{model}/versions/{version}")
    }
}

/// `upstreams.X.check_metadata`: what a model whose inputs do not match
/// the pipelines' tensors does at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckMetadata {
    /// A mismatch is a start-up error (exit 78).
    #[default]
    Error,
    /// A mismatch is logged; the proxy starts.
    Warn,
    /// Not asked.
    Off,
}

/// One tensor a pipeline sends: name, datatype and shape (`None`: a
/// length that varies per request, such as a text's token count).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentTensor {
    pub name: String,
    pub datatype: String,
    pub shape: Vec<Option<i64>>,
}

impl std::fmt::Display for SentTensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let dims: Vec<String> = self
            .shape
            .iter()
            .map(|d| d.map_or("n".to_string(), |d| d.to_string()))
            .collect();
        write!(f, "`{}` {} [{}]", self.name, self.datatype, dims.join(", "))
    }
}

fn model_input_text(i: &serde_json::Value) -> String {
    let dims: Vec<String> = i["shape"]
        .as_array()
        .map(|a| a.iter().map(|d| d.to_string()).collect())
        .unwrap_or_default();
    format!(
        "`{}` {} [{}]",
        i["name"].as_str().unwrap_or("?"),
        i["datatype"].as_str().unwrap_or("?"),
        dims.join(", ")
    )
}

/// Compares the tensors a pipeline sends with a model's metadata (the
/// JSON of `GET /v2/models/{model}`): every tensor must be one of the
/// model's inputs with the same datatype and rank, each dimension equal
/// or variable (-1) on the model's side; the proxy sends a batch of one
/// (`[1, ...]`), so a batching model has -1 first (Triton:
/// `max_batch_size` > 0). Ok(None): matches; Ok(Some(note)): nothing to
/// compare (the model lists no inputs); Err: the mismatch, naming both
/// sides.
pub fn check_inputs(
    meta: &serde_json::Value,
    sent: &[SentTensor],
) -> Result<Option<String>, String> {
    let inputs = meta["inputs"].as_array().cloned().unwrap_or_default();
    if inputs.is_empty() {
        return Ok(Some(
            "the model's metadata lists no inputs: nothing to compare".into(),
        ));
    }
    let all = || {
        inputs
            .iter()
            .map(model_input_text)
            .collect::<Vec<_>>()
            .join(", ")
    };
    for t in sent {
        let Some(i) = inputs.iter().find(|i| i["name"] == t.name.as_str()) else {
            return Err(format!(
                "the pipeline sends {t}, but the model has no input `{}`; its inputs: {} (set the pipeline's tensor name to one of them)",
                t.name,
                all()
            ));
        };
        let dt = i["datatype"].as_str().unwrap_or("");
        if dt != t.datatype {
            return Err(format!(
                "the pipeline sends {t}, the model's input is {}: datatype {} vs {dt}",
                model_input_text(i),
                t.datatype
            ));
        }
        let shape: Vec<i64> = i["shape"]
            .as_array()
            .map(|a| a.iter().filter_map(|d| d.as_i64()).collect())
            .unwrap_or_default();
        let fits = shape.len() == t.shape.len()
            && shape
                .iter()
                .zip(&t.shape)
                .all(|(m, s)| *m == -1 || s.is_none_or(|s| s == *m));
        if !fits {
            let hint = if shape.len() + 1 == t.shape.len() {
                " (the proxy sends a batch of one, [1, ...]: the model needs a batch dimension, -1 first; Triton: max_batch_size > 0)"
            } else {
                ""
            };
            return Err(format!(
                "the pipeline sends {t}, the model's input is {}: shapes differ{hint}",
                model_input_text(i)
            ));
        }
    }
    Ok(None)
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
    fn metadata_comparison() {
        let meta = json!({"name": "resnet50", "inputs": [
            {"name": "input__0", "datatype": "FP32", "shape": [-1, 3, 224, 224]}]});
        let t = |name: &str, dt: &str, shape: Vec<Option<i64>>| SentTensor {
            name: name.into(),
            datatype: dt.into(),
            shape,
        };
        let img = |n: &str| t(n, "FP32", vec![Some(1), Some(3), Some(224), Some(224)]);
        assert_eq!(check_inputs(&meta, &[img("input__0")]), Ok(None));
        let e = check_inputs(&meta, &[img("input")]).unwrap_err();
        assert!(
            e.contains("`input` FP32 [1, 3, 224, 224]")
                && e.contains("`input__0` FP32 [-1, 3, 224, 224]"),
            "{e}"
        );
        let e = check_inputs(&meta, &[t("input__0", "FP16", img("x").shape)]).unwrap_err();
        assert!(
            e.contains("FP32 vs FP16") || e.contains("FP16 vs FP32"),
            "{e}"
        );
        let nhwc = t(
            "input__0",
            "FP32",
            vec![Some(1), Some(224), Some(224), Some(3)],
        );
        assert!(check_inputs(&meta, &[nhwc])
            .unwrap_err()
            .contains("shapes differ"));
        let unbatched = json!({"inputs": [
            {"name": "input__0", "datatype": "FP32", "shape": [3, 224, 224]}]});
        let e = check_inputs(&unbatched, &[img("input__0")]).unwrap_err();
        assert!(e.contains("batch"), "{e}");
        let text = json!({"inputs": [
            {"name": "input_ids", "datatype": "INT64", "shape": [-1, -1]}]});
        let ids = t("input_ids", "INT64", vec![Some(1), None]);
        assert_eq!(check_inputs(&text, &[ids]), Ok(None));
        assert!(check_inputs(&json!({"inputs": []}), &[img("x")])
            .unwrap()
            .is_some());
        assert_eq!(metadata_path("", "m", "2"), "/v2/models/m/versions/2");
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
