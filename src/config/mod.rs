//! Configuration: a TOML file (or the built-in default) plus
//! `TENSORWIRE__SECTION__KEY` environment overrides, validated into one
//! clear error that names the offending key. The binary's layer: each
//! section deserializes into its layer's own settings (`[limits]` into
//! the reassembly's, `[upstreams.*]` into the upstream layer's, ...) and
//! the layers below never see this module.
//!
//! `mod.rs` is the schema, `load.rs` reads it and builds the layers,
//! `validate.rs` checks it.

mod load;
mod validate;

use crate::ingress::xdp::worker::XdpConfig;
use crate::pipeline::PipelineConfig;
use crate::reassembly::Limits;
use crate::upstream::UpstreamConfig;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;

/// The shipped default configuration (also `config/tensorwire.toml`).
pub const DEFAULT_CONFIG: &str = include_str!("../../config/tensorwire.toml");

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
    pub upstreams: std::collections::BTreeMap<String, UpstreamConfig>,
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
    /// Socket ingress: reply fragments in UDP GSO batches (UDP_SEGMENT)
    /// where the kernel allows; falls back by itself.
    pub gso: bool,
    pub xdp: XdpConfig,
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
            gso: true,
            xdp: Default::default(),
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
