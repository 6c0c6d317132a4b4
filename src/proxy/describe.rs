//! The DESCRIBE document (spec "DESCRIBE"): limits, pipelines, and the
//! model servers with their live state.

use super::ProxySettings;
use crate::pipeline::Pipelines;
use crate::upstream::Upstream;
use serde_json::{json, Value};

/// The DESCRIBE JSON.
pub fn document(settings: &ProxySettings, pipelines: &Pipelines, upstreams: &[Upstream]) -> Value {
    let l = &settings.limits;
    let mut d = json!({
        "protocol": 1,
        "server": concat!("tensorwire ", env!("CARGO_PKG_VERSION")),
        "max_datagram": l.max_datagram,
        "reassembly_timeout_ms": l.reassembly_timeout_ms,
        "limits": {
            "max_fragments": l.max_fragments,
            "max_image_pixels": l.max_image_pixels,
            "max_text_bytes": l.max_text_bytes,
            "max_requests_in_flight": l.max_requests_in_flight,
            "max_bytes_in_flight": l.max_bytes_in_flight,
            "max_requests_per_source": l.max_requests_per_source,
            "max_bytes_per_source": l.max_bytes_per_source,
        },
        "pipelines": pipelines.iter().map(|p| {
            let mut d = p.describe();
            // The spec's `upstream` is the kind (echo, kserve, openai);
            // the configured name goes in `upstream_name`.
            if let Some(u) = upstreams.iter().find(|u| u.name == p.upstream) {
                d["upstream"] = u.cfg.kind.name().into();
                d["upstream_name"] = p.upstream.clone().into();
            }
            d
        }).collect::<Vec<_>>(),
    });
    if !upstreams.is_empty() {
        d["upstreams"] = upstreams
            .iter()
            .map(Upstream::describe)
            .collect::<Vec<_>>()
            .into();
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_has_the_spec_keys() {
        // The shipped default's two pipelines, all defaults.
        let configs: Vec<crate::pipeline::PipelineConfig> = serde_json::from_value(json!([
            {"id": 1, "name": "resnet50", "kind": "image", "image": {"width": 224, "height": 224}},
            {"id": 2, "name": "minilm", "kind": "text",
             "text": {"tokenizer": "builtin:all-MiniLM-L6-v2"}},
        ]))
        .unwrap();
        let p = Pipelines::build(&configs, None).unwrap();
        let settings = ProxySettings::new(crate::reassembly::Limits::default(), 1500);
        let d = document(&settings, &p, &[]);
        assert_eq!(d["protocol"], 1);
        assert_eq!(d["max_datagram"], 1472);
        assert_eq!(d["reassembly_timeout_ms"], 250);
        for k in [
            "max_fragments",
            "max_image_pixels",
            "max_text_bytes",
            "max_requests_in_flight",
            "max_bytes_in_flight",
        ] {
            assert!(d["limits"][k].is_u64(), "{k}");
        }
        let img = &d["pipelines"][0];
        assert_eq!(img["id"], 1);
        assert_eq!(img["kind"], "image");
        assert_eq!(img["upstream"], "echo");
        assert_eq!(img["image"]["width"], 224);
        assert_eq!(img["image"]["antialias"], true);
        assert_eq!(img["image"]["layout"], "NCHW");
        assert_eq!(img["image"]["dtype"], "FP32");
        assert_eq!(img["image"]["mean"][0], 0.485);
        assert_eq!(img["image"]["pixel_formats"].as_array().unwrap().len(), 5);
        let txt = &d["pipelines"][1];
        assert_eq!(txt["text"]["tokenizer"], "all-MiniLM-L6-v2");
        assert_eq!(txt["text"]["padding"], "none");
        assert_eq!(txt["text"]["dtype"], "INT64");
        assert_eq!(txt["text"]["outputs"][2], "token_type_ids");
    }
}
