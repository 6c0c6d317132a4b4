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
    /// The `config` crate's error as text (not as a source: printed once).
    #[error("{0}")]
    Load(String),
    #[error("invalid config key `{key}`: {msg}")]
    Invalid { key: String, msg: String },
}

impl From<config::ConfigError> for ConfigError {
    fn from(e: config::ConfigError) -> Self {
        ConfigError::Load(dotted_key_paths(&e.to_string()))
    }
}

/// The `config` crate writes a field after an array index without its
/// dot (`pipelines[0]image.width`): put it back.
fn dotted_key_paths(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len() + 4);
    let mut chars = msg.chars().peekable();
    while let Some(c) = chars.next() {
        out.push(c);
        if c == ']'
            && chars
                .peek()
                .is_some_and(|n| n.is_alphanumeric() || *n == '_')
        {
            out.push('.');
        }
    }
    out
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
    pub security: SecurityConfig,
    #[serde(default)]
    pub stats: StatsConfig,
    #[serde(default)]
    pub admin: AdminConfig,
    #[serde(default)]
    pub log: LogConfig,
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
    /// Socket ingress worker threads (one SO_REUSEPORT group): a number,
    /// or "auto" (one per core).
    pub workers: Workers,
    /// On SIGTERM: new requests get OVERLOADED, those in flight have this
    /// long to finish (keep terminationGracePeriodSeconds above it).
    pub drain_timeout_ms: u64,
    pub xdp: XdpConfig,
}

/// `ingress.workers`: a count, or "auto".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Workers {
    Count(usize),
    Named(String),
}

impl IngressConfig {
    /// Socket ingress workers: the configured count, or one per core.
    pub fn worker_count(&self) -> usize {
        match &self.workers {
            Workers::Count(n) => (*n).max(1),
            Workers::Named(_) => std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
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
            workers: Workers::Named("auto".into()),
            drain_timeout_ms: 5000,
            xdp: Default::default(),
        }
    }
}

/// `[security]`: who may reach the proxy and how much it may send to an
/// address that has not proved it receives there (spec rev 3, "Address
/// validation").
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecurityConfig {
    /// Off only on a trusted network: then any source gets full answers.
    pub address_validation: bool,
    /// Tokens stay good this long; the token key rotates as often.
    pub token_lifetime_s: u32,
    /// Validated addresses remembered (oldest forgotten first).
    pub validated_addresses: usize,
    /// A validated address is forgotten this long after its last datagram.
    pub validation_lifetime_s: u32,
    /// Pre-shared key file: only clients that hold it get validated.
    pub psk_file: String,
    /// Source addresses or CIDR prefixes allowed (both ingresses); empty =
    /// everyone.
    pub allowlist: Vec<String>,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        SecurityConfig {
            address_validation: true,
            token_lifetime_s: 300,
            validated_addresses: 65536,
            validation_lifetime_s: 600,
            psk_file: String::new(),
            allowlist: Vec::new(),
        }
    }
}

impl SecurityConfig {
    /// Checks the values: Err((key, why)).
    pub fn check(&self) -> Result<(), (String, String)> {
        for (k, v) in [
            ("token_lifetime_s", self.token_lifetime_s as u64),
            ("validated_addresses", self.validated_addresses as u64),
            ("validation_lifetime_s", self.validation_lifetime_s as u64),
        ] {
            if v == 0 {
                return Err((k.into(), "must be at least 1".into()));
            }
        }
        for (i, a) in self.allowlist.iter().enumerate() {
            if crate::proxy::Prefix::parse(a).is_none() {
                return Err((
                    format!("allowlist[{i}]"),
                    format!("`{a}` is not an address or CIDR prefix"),
                ));
            }
        }
        Ok(())
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

/// The admin endpoint: HTTP with /healthz, /readyz, /describe, /metrics.
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

/// `[log]`: how the log lines look (the level comes from TENSORWIRE_LOG).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
}

/// `log.format`: human-readable lines, or one JSON object a line with
/// each field apart (for log collectors).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_default_is_valid() {
        let c = Config::builtin();
        assert_eq!(c.ingress.listen.port(), 7878);
        assert_eq!(c.pipelines.len(), 2);
        assert_eq!(c.limits.reassembly_timeout_ms, 1000);
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
    fn partial_tables_start_with_the_defaults() {
        // An image table with one key: width and height default to 224.
        let c = Config::from_toml(
            "[[pipelines]]\nid = 1\nname = \"img\"\nkind = \"image\"\n\n[pipelines.image]\nantialias = false\n",
        )
        .unwrap();
        let i = c.pipelines[0].image.as_ref().unwrap();
        assert_eq!((i.width, i.height, i.antialias), (224, 224, false));
        // A text pipeline without a text table, and one without `tokenizer`.
        let c = Config::from_toml(
            "[[pipelines]]\nid = 1\nname = \"t\"\nkind = \"text\"\n\n[[pipelines]]\nid = 2\nname = \"u\"\nkind = \"text\"\n[pipelines.text]\nmax_length = 64\n\n[[pipelines]]\nid = 3\nname = \"i\"\nkind = \"image\"\n",
        )
        .unwrap();
        let t = c.pipelines[0].text.as_ref().unwrap();
        assert_eq!(t.tokenizer, "builtin:all-MiniLM-L6-v2");
        assert_eq!(t.max_length, 256);
        let u = c.pipelines[1].text.as_ref().unwrap();
        assert_eq!(
            (u.tokenizer.as_str(), u.max_length),
            ("builtin:all-MiniLM-L6-v2", 64)
        );
        assert_eq!(c.pipelines[2].image.as_ref().unwrap().width, 224);
        assert!(c.build_pipelines().is_ok());
        // Sections left out keep their defaults.
        assert!(c.security.address_validation);
        assert_eq!(c.limits.reassembly_timeout_ms, 1000);
        assert_eq!(c.limits.request_deadline_ms, 10_000);
    }

    #[test]
    fn load_errors_name_the_key_once_with_its_dot() {
        let e = Config::from_toml(
            "[[pipelines]]\nid = 1\nname = \"img\"\nkind = \"image\"\n[pipelines.image]\nwidth = \"wide\"\n",
        )
        .unwrap_err();
        let msg = format!("{:#}", anyhow::Error::from(e));
        assert!(msg.contains("pipelines[0].image.width"), "{msg}");
        assert_eq!(msg.matches("image.width").count(), 1, "{msg}");
        assert_eq!(
            dotted_key_paths("a[0]b.c[12]_d e[1]"),
            "a[0].b.c[12]._d e[1]"
        );
    }

    #[test]
    fn security_section() {
        let c = Config::builtin();
        assert!(c.security.address_validation);
        assert!(c.security.allowlist.is_empty());
        let s = c.security_settings().unwrap();
        assert!(s.address_validation && s.psk.is_none());
        let bad = DEFAULT_CONFIG.replace("allowlist = []", "allowlist = [\"10.0.0.0/40\"]");
        let e = Config::from_toml(&bad).unwrap_err().to_string();
        assert!(e.contains("security.allowlist[0]"), "{e}");
        // The old key is refused with the new one named.
        let old =
            DEFAULT_CONFIG.replace("[ingress.xdp]", "[ingress.xdp]\nallowlist = [\"10.0.0.1\"]");
        let e = Config::from_toml(&old).unwrap_err().to_string();
        assert!(e.contains("security.allowlist"), "{e}");
        let dir = std::env::temp_dir().join(format!("tw-psk-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("psk"), "0123456789abcdef0123\n").unwrap();
        let mut c =
            Config::from_toml(&DEFAULT_CONFIG.replace("psk_file = \"\"", "psk_file = \"psk\""))
                .unwrap();
        c.base_dir = Some(dir.clone());
        let s = c.security_settings().unwrap();
        assert_eq!(s.psk.as_deref(), Some(&b"0123456789abcdef0123"[..]));
        // Two settings, two secrets.
        assert_ne!(s.secret, c.security_settings().unwrap().secret);
        std::fs::remove_dir_all(dir).unwrap();
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
