//! Configuration: a TOML file (or the built-in default) plus
//! `TENSORWIRE__SECTION__KEY` environment overrides, validated into one
//! clear error that names the offending key.

use crate::transform::normalize::{ChannelOrder, Layout};
use crate::transform::text::{Padding, TextOutput};
use crate::transform::DType;
use crate::wire::PixelFormat;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The shipped default configuration (also `config/tensorwire.toml`).
pub const DEFAULT_CONFIG: &str = include_str!("../config/tensorwire.toml");

/// A configuration that cannot be used; the message names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Load(#[from] config::ConfigError),
    #[error("invalid config key `{key}`: {msg}")]
    Invalid { key: String, msg: String },
}

fn invalid(key: impl Into<String>, msg: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        msg: msg.into(),
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub ingress: IngressConfig,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub stats: StatsConfig,
    #[serde(default)]
    pub admin: AdminConfig,
    /// Model servers by name (`[upstreams.<name>]`); pipelines name one,
    /// or the built-in `echo`.
    #[serde(default)]
    pub upstreams: std::collections::BTreeMap<String, crate::upstream::UpstreamConfig>,
    #[serde(default)]
    pub pipelines: Vec<PipelineConfig>,
    /// Directory of the config file: relative paths resolve against it.
    #[serde(skip)]
    pub base_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IngressMode {
    Auto,
    Xdp,
    Socket,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngressConfig {
    pub mode: IngressMode,
    pub listen: SocketAddr,
    pub interface: String,
    pub mtu: u32,
    pub recv_batch: usize,
    pub socket_buffer_bytes: usize,
    pub tx_queue_datagrams: usize,
    pub xdp: crate::ingress::xdp::worker::XdpConfig,
}

impl Default for IngressConfig {
    fn default() -> Self {
        IngressConfig {
            mode: IngressMode::Auto,
            listen: "0.0.0.0:7878".parse().unwrap(),
            interface: String::new(),
            mtu: 1500,
            recv_batch: 64,
            socket_buffer_bytes: 8 << 20,
            tx_queue_datagrams: 65536,
            xdp: Default::default(),
        }
    }
}

impl IngressConfig {
    /// Largest reply UDP payload for a peer of this address family.
    pub fn reply_payload_max(&self, ipv6: bool) -> usize {
        let ip_header = if ipv6 { 40 } else { 20 };
        self.mtu as usize - ip_header - 8
    }
}

/// Protocol limits (DESCRIBE's `limits`) and memory bounds.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    pub max_datagram: usize,
    pub reassembly_timeout_ms: u64,
    pub max_fragments: u32,
    pub max_image_pixels: u64,
    pub max_text_bytes: u32,
    pub max_requests_in_flight: usize,
    pub max_bytes_in_flight: usize,
    pub max_requests_per_source: usize,
    pub max_bytes_per_source: usize,
    /// Memory requests in flight may hold (output tensors, streaming
    /// windows, text), all clients together.
    pub max_state_bytes: usize,
    pub answered_keys: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_datagram: 1472,
            reassembly_timeout_ms: 250,
            max_fragments: 65536,
            max_image_pixels: 16_777_216,
            max_text_bytes: 1_048_576,
            max_requests_in_flight: 1024,
            max_bytes_in_flight: 268_435_456,
            max_requests_per_source: 256,
            max_bytes_per_source: 67_108_864,
            max_state_bytes: 536_870_912,
            answered_keys: 65536,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StatsConfig {
    pub log_interval_ms: u64,
}

impl Default for StatsConfig {
    fn default() -> Self {
        StatsConfig {
            log_interval_ms: 10_000,
        }
    }
}

/// The admin endpoint (counters as JSON for `tensorwire stats`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Address to listen on; empty = no admin endpoint.
    pub listen: String,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: "127.0.0.1:9878".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PipelineKind {
    Image,
    Text,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    pub id: u16,
    pub name: String,
    pub kind: PipelineKind,
    #[serde(default = "default_upstream")]
    pub upstream: String,
    pub image: Option<ImageConfig>,
    pub text: Option<TextConfig>,
}

fn default_upstream() -> String {
    "echo".into()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageConfig {
    pub width: u32,
    pub height: u32,
    #[serde(default = "yes")]
    pub antialias: bool,
    #[serde(default = "all_formats")]
    pub pixel_formats: Vec<PixelFormat>,
    #[serde(default = "three")]
    pub channels: u32,
    #[serde(default = "nchw")]
    pub layout: Layout,
    #[serde(default = "fp32")]
    pub dtype: DType,
    #[serde(default = "rgb")]
    pub channel_order: ChannelOrder,
    #[serde(default = "imagenet_mean")]
    pub mean: [f64; 3],
    #[serde(default = "imagenet_std")]
    pub std: [f64; 3],
    /// INT8 only: QuantizeLinear scale and zero point.
    pub scale: Option<f64>,
    pub zero_point: Option<i32>,
    #[serde(default = "input_name")]
    pub tensor_name: String,
}

fn yes() -> bool {
    true
}
fn three() -> u32 {
    3
}
fn all_formats() -> Vec<PixelFormat> {
    PixelFormat::ALL.to_vec()
}
fn nchw() -> Layout {
    Layout::Nchw
}
fn fp32() -> DType {
    DType::Fp32
}
fn rgb() -> ChannelOrder {
    ChannelOrder::Rgb
}
fn imagenet_mean() -> [f64; 3] {
    [0.485, 0.456, 0.406]
}
fn imagenet_std() -> [f64; 3] {
    [0.229, 0.224, 0.225]
}
fn input_name() -> String {
    "input".into()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextConfig {
    /// Path to a tokenizer.json, or `builtin:all-MiniLM-L6-v2`.
    pub tokenizer: String,
    /// Name reported in DESCRIBE (default: derived from `tokenizer`).
    pub tokenizer_name: Option<String>,
    #[serde(default = "max_len")]
    pub max_length: usize,
    #[serde(default = "yes")]
    pub truncation: bool,
    #[serde(default = "no_padding")]
    pub padding: Padding,
    #[serde(default = "all_outputs")]
    pub outputs: Vec<TextOutput>,
    #[serde(default = "int64")]
    pub dtype: DType,
}

fn max_len() -> usize {
    256
}
fn no_padding() -> Padding {
    Padding::None
}
fn all_outputs() -> Vec<TextOutput> {
    vec![
        TextOutput::InputIds,
        TextOutput::AttentionMask,
        TextOutput::TokenTypeIds,
    ]
}
fn int64() -> DType {
    DType::Int64
}

/// Tokenizers shipped inside the binary, so the default config needs no
/// files next to it.
pub const BUILTIN_TOKENIZERS: &[(&str, &str)] = &[(
    "all-MiniLM-L6-v2",
    include_str!("../testdata/tokenizers/all-MiniLM-L6-v2/tokenizer.json"),
)];

impl TextConfig {
    /// The tokenizer.json text this pipeline names.
    pub fn tokenizer_json(&self, base_dir: Option<&Path>) -> Result<String, String> {
        if let Some(name) = self.tokenizer.strip_prefix("builtin:") {
            return BUILTIN_TOKENIZERS
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, j)| j.to_string())
                .ok_or_else(|| {
                    let known: Vec<_> = BUILTIN_TOKENIZERS.iter().map(|(n, _)| *n).collect();
                    format!("no builtin tokenizer `{name}` (have: {})", known.join(", "))
                });
        }
        let mut path = PathBuf::from(&self.tokenizer);
        if path.is_relative() {
            if let Some(b) = base_dir {
                path = b.join(path);
            }
        }
        std::fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))
    }

    /// The name DESCRIBE reports.
    pub fn display_name(&self) -> String {
        if let Some(n) = &self.tokenizer_name {
            return n.clone();
        }
        if let Some(n) = self.tokenizer.strip_prefix("builtin:") {
            return n.to_string();
        }
        // .../all-MiniLM-L6-v2/tokenizer.json -> all-MiniLM-L6-v2
        let p = Path::new(&self.tokenizer);
        let dir = p
            .parent()
            .and_then(|d| d.file_name())
            .and_then(|s| s.to_str());
        match (p.file_stem().and_then(|s| s.to_str()), dir) {
            (Some("tokenizer"), Some(d)) => d.to_string(),
            (Some(s), _) => s.to_string(),
            _ => self.tokenizer.clone(),
        }
    }
}

impl Config {
    /// Loads `path` (or the built-in default when `None`), applies
    /// environment overrides and validates.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let mut b = config::Config::builder();
        b = match path {
            Some(p) => b.add_source(config::File::from(p).format(config::FileFormat::Toml)),
            None => b.add_source(config::File::from_str(
                DEFAULT_CONFIG,
                config::FileFormat::Toml,
            )),
        };
        b = b.add_source(
            config::Environment::with_prefix("TENSORWIRE")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true),
        );
        let mut cfg: Config = b.build()?.try_deserialize()?;
        cfg.base_dir = path.and_then(|p| p.parent()).map(Path::to_path_buf);
        cfg.validate()?;
        Ok(cfg)
    }

    /// Parses TOML text (no environment), validated.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let cfg: Config = config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .build()?
            .try_deserialize()?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The built-in default configuration.
    pub fn builtin() -> Config {
        Config::from_toml(DEFAULT_CONFIG).expect("the shipped default config is valid")
    }

    fn validate_upstreams(&self) -> Result<(), ConfigError> {
        use crate::upstream::{HttpUrl, UpstreamKind};
        for (name, u) in &self.upstreams {
            let key = |k: &str| format!("upstreams.{name}.{k}");
            if name == "echo" {
                return Err(invalid(
                    format!("upstreams.{name}"),
                    "`echo` is the built-in upstream's name",
                ));
            }
            if let Err(e) = HttpUrl::parse(&u.url) {
                return Err(invalid(key("url"), e));
            }
            if u.model.is_empty() || u.model.contains('/') && u.kind == UpstreamKind::Kserve {
                return Err(invalid(key("model"), "a model name is needed (no `/`)"));
            }
            for (k, v) in [
                ("connections", u.connections as u64),
                ("max_pending", u.max_pending as u64),
                ("connect_timeout_ms", u.connect_timeout_ms),
                ("request_timeout_ms", u.request_timeout_ms),
                ("reconnect_backoff_ms", u.reconnect_backoff_ms),
            ] {
                if v == 0 {
                    return Err(invalid(key(k), "must be at least 1"));
                }
            }
            if u.connections > 1024 {
                return Err(invalid(key("connections"), "at most 1024"));
            }
            if u.kind == UpstreamKind::Kserve && !u.params.is_empty() {
                return Err(invalid(key("params"), "only openai upstreams take params"));
            }
            if let Some(k) = u
                .params
                .keys()
                .find(|k| crate::upstream::openai::RESERVED_KEYS.contains(&k.as_str()))
            {
                return Err(invalid(
                    format!("upstreams.{name}.params.{k}"),
                    "set by tensorwire (model comes from `model`, the prompt from the pipeline; streaming is not supported)",
                ));
            }
        }
        Ok(())
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let i = &self.ingress;
        if !(576..=65535).contains(&i.mtu) {
            return Err(invalid("ingress.mtu", "must be between 576 and 65535"));
        }
        if i.recv_batch == 0 || i.recv_batch > 1024 {
            return Err(invalid("ingress.recv_batch", "must be between 1 and 1024"));
        }
        if i.tx_queue_datagrams == 0 {
            return Err(invalid("ingress.tx_queue_datagrams", "must be at least 1"));
        }
        let l = &self.limits;
        if !(64..=65507).contains(&l.max_datagram) {
            return Err(invalid(
                "limits.max_datagram",
                "must be between 64 and 65507",
            ));
        }
        if l.reassembly_timeout_ms == 0 {
            return Err(invalid(
                "limits.reassembly_timeout_ms",
                "must be at least 1",
            ));
        }
        for (k, v) in [
            ("limits.max_fragments", l.max_fragments as u64),
            ("limits.max_image_pixels", l.max_image_pixels),
            (
                "limits.max_requests_in_flight",
                l.max_requests_in_flight as u64,
            ),
            ("limits.max_bytes_in_flight", l.max_bytes_in_flight as u64),
            (
                "limits.max_requests_per_source",
                l.max_requests_per_source as u64,
            ),
            ("limits.max_bytes_per_source", l.max_bytes_per_source as u64),
            ("limits.max_state_bytes", l.max_state_bytes as u64),
            ("limits.answered_keys", l.answered_keys as u64),
        ] {
            if v == 0 {
                return Err(invalid(k, "must be at least 1"));
            }
        }
        self.validate_upstreams()?;
        if self.pipelines.is_empty() {
            return Err(invalid("pipelines", "at least one pipeline is needed"));
        }
        let mut seen = std::collections::HashSet::new();
        for (n, p) in self.pipelines.iter().enumerate() {
            let key = |k: &str| format!("pipelines[{n}].{k}");
            if p.id == 0 {
                return Err(invalid(key("id"), "must be 1..65535 (0 is DESCRIBE's)"));
            }
            if !seen.insert(p.id) {
                return Err(invalid(
                    key("id"),
                    format!("duplicate pipeline id {}", p.id),
                ));
            }
            if p.upstream != "echo" {
                let Some(u) = self.upstreams.get(&p.upstream) else {
                    let mut known: Vec<&str> = vec!["echo"];
                    known.extend(self.upstreams.keys().map(String::as_str));
                    return Err(invalid(
                        key("upstream"),
                        format!(
                            "unknown upstream `{}` (available: {})",
                            p.upstream,
                            known.join(", ")
                        ),
                    ));
                };
                if u.kind == crate::upstream::UpstreamKind::Openai && p.kind != PipelineKind::Text {
                    return Err(invalid(
                        key("upstream"),
                        format!(
                            "upstream `{}` is openai: it takes token ids, so only text pipelines",
                            p.upstream
                        ),
                    ));
                }
            }
            match p.kind {
                PipelineKind::Image => {
                    let img = p.image.as_ref().ok_or_else(|| {
                        invalid(
                            key("image"),
                            "an image pipeline needs an [pipelines.image] table",
                        )
                    })?;
                    if p.text.is_some() {
                        return Err(invalid(key("text"), "an image pipeline has no text table"));
                    }
                    if img.width == 0 || img.height == 0 || img.width > 65535 || img.height > 65535
                    {
                        return Err(invalid(
                            key("image.width"),
                            "width and height must be 1..65535",
                        ));
                    }
                    if img.channels != 3 {
                        return Err(invalid(
                            key("image.channels"),
                            "only 3-channel outputs are supported",
                        ));
                    }
                    if img.pixel_formats.is_empty() {
                        return Err(invalid(
                            key("image.pixel_formats"),
                            "list at least one pixel format",
                        ));
                    }
                    if !matches!(
                        img.dtype,
                        DType::Fp32 | DType::Fp16 | DType::Uint8 | DType::Int8
                    ) {
                        return Err(invalid(
                            key("image.dtype"),
                            "must be FP32, FP16, UINT8 or INT8",
                        ));
                    }
                    if img.std.iter().any(|s| *s == 0.0 || !s.is_finite()) {
                        return Err(invalid(
                            key("image.std"),
                            "every std must be finite and non-zero",
                        ));
                    }
                    if img.dtype == DType::Int8 {
                        match (img.scale, img.zero_point) {
                            (Some(s), Some(z)) if s > 0.0 && (-128..=127).contains(&z) => {}
                            _ => {
                                return Err(invalid(
                                    key("image.scale"),
                                    "INT8 needs scale > 0 and zero_point in -128..127",
                                ))
                            }
                        }
                    }
                }
                PipelineKind::Text => {
                    let t = p.text.as_ref().ok_or_else(|| {
                        invalid(
                            key("text"),
                            "a text pipeline needs a [pipelines.text] table",
                        )
                    })?;
                    if p.image.is_some() {
                        return Err(invalid(key("image"), "a text pipeline has no image table"));
                    }
                    if t.max_length == 0 {
                        return Err(invalid(key("text.max_length"), "must be at least 1"));
                    }
                    if t.outputs.is_empty() || t.outputs[0] != TextOutput::InputIds {
                        return Err(invalid(key("text.outputs"), "must start with input_ids"));
                    }
                    if !matches!(t.dtype, DType::Int64 | DType::Int32) {
                        return Err(invalid(key("text.dtype"), "must be INT64 or INT32"));
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_default_is_valid() {
        let c = Config::builtin();
        assert_eq!(c.ingress.listen.port(), 7878);
        assert_eq!(c.pipelines.len(), 2);
        assert_eq!(c.limits.reassembly_timeout_ms, 250);
    }

    #[test]
    fn errors_name_the_key() {
        let bad = DEFAULT_CONFIG.replace("width = 224", "width = 0");
        let e = Config::from_toml(&bad).unwrap_err().to_string();
        assert!(e.contains("pipelines[0].image.width"), "{e}");
        let bad = DEFAULT_CONFIG.replace("mtu = 1500", "mtu = \"big\"");
        let e = Config::from_toml(&bad).unwrap_err().to_string();
        assert!(e.contains("mtu"), "{e}");
        let bad = DEFAULT_CONFIG.replace("upstream = \"echo\"", "upstream = \"nowhere\"");
        let e = Config::from_toml(&bad).unwrap_err().to_string();
        assert!(e.contains("pipelines[0].upstream"), "{e}");
        let bad = DEFAULT_CONFIG.replace("[limits]", "[limits]\nmax_fragmentz = 3");
        let e = Config::from_toml(&bad).unwrap_err().to_string();
        assert!(e.contains("max_fragmentz"), "{e}");
        let bad = DEFAULT_CONFIG.replace("id = 2", "id = 1");
        let e = Config::from_toml(&bad).unwrap_err().to_string();
        assert!(e.contains("duplicate"), "{e}");
    }

    #[test]
    fn upstream_keys_are_validated() {
        let with = |ups: &str, upstream: &str| {
            let text = DEFAULT_CONFIG.replacen(
                "upstream = \"echo\"",
                &format!("upstream = \"{upstream}\""),
                1,
            ) + ups;
            Config::from_toml(&text).map_err(|e| e.to_string())
        };
        let ks = "\n[upstreams.triton]\nkind = \"kserve\"\nurl = \"http://127.0.0.1:8000\"\nmodel = \"resnet\"\n";
        let c = with(ks, "triton").unwrap();
        let u = &c.upstreams["triton"];
        assert_eq!(
            (u.connections, u.max_pending, u.request_timeout_ms),
            (4, 256, 5000)
        );
        let e = with(ks, "tritn").unwrap_err();
        assert!(
            e.contains("pipelines[0].upstream") && e.contains("echo, triton"),
            "{e}"
        );
        let e = with(&ks.replace("http://", "https://"), "triton").unwrap_err();
        assert!(
            e.contains("upstreams.triton.url") && e.contains("http://"),
            "{e}"
        );
        let e = with(&format!("{ks}connections = 0\n"), "triton").unwrap_err();
        assert!(e.contains("upstreams.triton.connections"), "{e}");
        let e = with(&format!("{ks}colour = 1\n"), "triton").unwrap_err();
        assert!(e.contains("colour"), "{e}");
        // openai takes token ids: not for the image pipeline.
        let oa = "\n[upstreams.vllm]\nkind = \"openai\"\nurl = \"http://127.0.0.1:8001\"\nmodel = \"m\"\n";
        let e = with(oa, "vllm").unwrap_err();
        assert!(
            e.contains("pipelines[0].upstream") && e.contains("text pipelines"),
            "{e}"
        );
        let e = with(&format!("{oa}params = {{ prompt = \"x\" }}\n"), "echo").unwrap_err();
        assert!(e.contains("upstreams.vllm.params.prompt"), "{e}");
        let c = with(&format!("{oa}endpoint = \"embeddings\"\nparams = {{ max_tokens = 16, temperature = 0.0 }}\n"), "echo").unwrap();
        assert_eq!(c.upstreams["vllm"].params["max_tokens"], 16);
    }

    #[test]
    fn tokenizer_display_names() {
        let mut t = Config::builtin().pipelines[1].text.clone().unwrap();
        assert_eq!(t.display_name(), "all-MiniLM-L6-v2");
        t.tokenizer = "/models/bert-base/tokenizer.json".into();
        assert_eq!(t.display_name(), "bert-base");
        assert!(t.tokenizer_json(None).is_err());
    }
}
