//! OpenAI-compatible requests with token id prompts (vLLM): the ids
//! already carry the special tokens (BOS/CLS/SEP) the tokenizer's
//! post-processor adds, because vLLM does not tokenize id prompts.
//! Pure: tensors in, JSON bytes out.

use super::codec::HttpResponse;
use super::UpstreamFailure;
use crate::transform::{DType, Tensor};
use serde_json::{Map, Value};

/// Which OpenAI endpoint a pipeline calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Endpoint {
    /// POST /v1/completions, `prompt` = the ids.
    Completions,
    /// POST /v1/embeddings, `input` = the ids.
    Embeddings,
}

impl Endpoint {
    pub fn path(self, base_path: &str) -> String {
        match self {
            Endpoint::Completions => format!("{base_path}/v1/completions"),
            Endpoint::Embeddings => format!("{base_path}/v1/embeddings"),
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Endpoint::Completions => "completions",
            Endpoint::Embeddings => "embeddings",
        }
    }
}

/// Keys tensorwire sets itself; `params` may not override them.
pub const RESERVED_KEYS: &[&str] = &["model", "prompt", "input", "stream"];

/// Integer values of an INT64/INT32 tensor.
fn ints(t: &Tensor) -> Result<Vec<i64>, String> {
    match t.dtype {
        DType::Int64 => Ok(t
            .data
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect()),
        DType::Int32 => Ok(t
            .data
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes(c.try_into().expect("4 bytes")) as i64)
            .collect()),
        d => Err(format!("tensor {} is {}, not token ids", t.name, d.name())),
    }
}

/// The prompt ids: `input_ids` without the padding positions
/// (`attention_mask` 0), which a completion must not see.
pub fn prompt_ids(tensors: &[Tensor]) -> Result<Vec<i64>, String> {
    let ids = tensors
        .iter()
        .find(|t| t.name == "input_ids")
        .ok_or("no input_ids tensor (openai upstreams take text pipelines)")?;
    let ids = ints(ids)?;
    match tensors.iter().find(|t| t.name == "attention_mask") {
        Some(m) => {
            let mask = ints(m)?;
            Ok(ids
                .into_iter()
                .zip(mask)
                .filter(|(_, m)| *m != 0)
                .map(|(i, _)| i)
                .collect())
        }
        None => Ok(ids),
    }
}

/// The JSON body: `add_special_tokens: false` (the ids already have them;
/// vLLM adds none to id prompts anyway, this says so explicitly), the
/// configured `params` (max_tokens, temperature, ...), then `model` and
/// the ids as `prompt` (completions) or `input` (embeddings).
pub fn request_body(
    endpoint: Endpoint,
    model: &str,
    params: &Map<String, Value>,
    tensors: &[Tensor],
) -> Result<Vec<u8>, String> {
    let ids = prompt_ids(tensors)?;
    let mut body = Map::new();
    body.insert("add_special_tokens".into(), Value::from(false));
    body.extend(params.clone());
    body.insert("model".into(), Value::from(model));
    let key = match endpoint {
        Endpoint::Completions => "prompt",
        Endpoint::Embeddings => "input",
    };
    body.insert(key.into(), Value::from(ids));
    Ok(serde_json::to_vec(&Value::Object(body)).expect("JSON of plain values"))
}

/// The answer goes back as JSON (content_type 1).
pub fn read_answer(resp: HttpResponse) -> Result<(u16, usize, Vec<u8>), UpstreamFailure> {
    if !(200..300).contains(&resp.status) {
        return Err(UpstreamFailure::http(&resp));
    }
    if serde_json::from_slice::<serde::de::IgnoredAny>(&resp.body).is_err() {
        return Err(UpstreamFailure::Malformed(
            "the answer is not JSON (streaming is not supported)".into(),
        ));
    }
    Ok((crate::wire::content_type::JSON, 0, resp.body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn completions_body_strips_padding() {
        let t = vec![
            Tensor::from_ids("input_ids", DType::Int64, &[101, 7592, 102, 0, 0]),
            Tensor::from_ids("attention_mask", DType::Int64, &[1, 1, 1, 0, 0]),
            Tensor::from_ids("token_type_ids", DType::Int64, &[0, 0, 0, 0, 0]),
        ];
        let params = json!({"max_tokens": 16, "temperature": 0.0})
            .as_object()
            .unwrap()
            .clone();
        let b = request_body(Endpoint::Completions, "m", &params, &t).unwrap();
        let v: Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(
            v,
            json!({"model": "m", "prompt": [101, 7592, 102], "max_tokens": 16, "temperature": 0.0,
                   "add_special_tokens": false})
        );
    }

    #[test]
    fn embeddings_body_int32() {
        let t = vec![Tensor::from_ids("input_ids", DType::Int32, &[1, 2, 3])];
        let b = request_body(Endpoint::Embeddings, "e", &Map::new(), &t).unwrap();
        let v: Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(
            v,
            json!({"model": "e", "input": [1, 2, 3], "add_special_tokens": false})
        );
        let img = vec![Tensor {
            name: "input".into(),
            dtype: DType::Fp32,
            shape: vec![1],
            data: vec![0; 4],
        }];
        assert!(request_body(Endpoint::Embeddings, "e", &Map::new(), &img).is_err());
    }

    #[test]
    fn errors_carry_the_message() {
        let r = HttpResponse {
            status: 400,
            headers: vec![],
            body: br#"{"error":{"message":"max_tokens must be at least 1","type":"BadRequestError","code":400}}"#.to_vec(),
            keep_alive: true,
        };
        match read_answer(r) {
            Err(UpstreamFailure::Http(m)) => assert!(m.contains("max_tokens must be"), "{m}"),
            o => panic!("{o:?}"),
        }
        let r = HttpResponse {
            status: 200,
            headers: vec![],
            body: b"data: {}\n\n".to_vec(),
            keep_alive: true,
        };
        assert!(matches!(read_answer(r), Err(UpstreamFailure::Malformed(_))));
    }
}
