//! Reading the configuration (file or built-in default, then the
//! environment) and building each layer's pieces from it.

use super::{invalid, Config, ConfigError, DEFAULT_CONFIG};
use crate::ingress::udp::UdpSettings;
use crate::pipeline::{PipelineError, Pipelines};
use crate::proxy::{BuildError, Prefix, Proxy, ProxySettings, SecuritySettings};
use std::path::Path;

impl Config {
    /// The proxy core's settings, with `security` (one per server: its
    /// token secret is shared by every worker).
    pub fn proxy_settings(&self, security: SecuritySettings) -> ProxySettings {
        ProxySettings::new(self.limits.clone(), self.ingress.mtu, security)
    }

    /// `[security]` for the core, with a fresh random token secret and
    /// the pre-shared key read from `psk_file`.
    pub fn security_settings(&self) -> Result<SecuritySettings, ConfigError> {
        let s = &self.security;
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret)
            .map_err(|e| invalid("security", format!("no randomness for the token key: {e}")))?;
        let psk = if s.psk_file.is_empty() {
            None
        } else {
            let path = match &self.base_dir {
                Some(d) => d.join(&s.psk_file),
                None => s.psk_file.clone().into(),
            };
            let bytes = std::fs::read(&path)
                .map_err(|e| invalid("security.psk_file", format!("{}: {e}", path.display())))?;
            // The key is the file's bytes without trailing whitespace
            // (`openssl rand -hex 32 > psk` works).
            let key = bytes.trim_ascii_end().to_vec();
            if key.len() < 16 {
                return Err(invalid(
                    "security.psk_file",
                    "the key must be at least 16 bytes",
                ));
            }
            Some(key)
        };
        let allowlist = s
            .allowlist
            .iter()
            .map(|a| Prefix::parse(a).expect("validated"))
            .collect();
        Ok(SecuritySettings {
            address_validation: s.address_validation,
            secret,
            epoch: std::time::Instant::now(),
            token_lifetime_s: s.token_lifetime_s,
            validated_addresses: s.validated_addresses,
            validation_lifetime_s: s.validation_lifetime_s,
            psk,
            allowlist,
        })
    }

    /// The socket ingress's settings.
    pub fn udp_settings(&self) -> UdpSettings {
        UdpSettings {
            recv_batch: self.ingress.recv_batch,
            socket_buffer_bytes: self.ingress.socket_buffer_bytes,
            tx_queue_datagrams: self.ingress.tx_queue_datagrams,
            max_datagram: self.limits.max_datagram,
            gso: self.ingress.gso,
            drain_timeout: std::time::Duration::from_millis(self.ingress.drain_timeout_ms),
        }
    }

    /// Every pipeline, built (tokenizers loaded).
    pub fn build_pipelines(&self) -> Result<Pipelines, PipelineError> {
        Pipelines::build(&self.pipelines, self.base_dir.as_deref())
    }

    /// A proxy core for one worker (alone: its own token secret).
    pub fn build_proxy(&self) -> anyhow::Result<Proxy> {
        self.build_proxy_with(self.build_pipelines()?)
    }

    /// A proxy core for one worker, with pipelines already built (they
    /// are shared between workers), with its own token secret.
    pub fn build_proxy_with(&self, pipelines: Pipelines) -> anyhow::Result<Proxy> {
        Ok(self.build_proxy_for(pipelines, self.security_settings()?, 1)?)
    }

    /// A proxy core for one of `workers` workers sharing `security` (one
    /// token secret: a token made by one worker is good at every other).
    /// The limits on all clients together are split evenly between the
    /// workers (each holds its own requests); the per-source limits stay
    /// whole, since one client socket's datagrams all reach one worker.
    pub fn build_proxy_for(
        &self,
        pipelines: Pipelines,
        security: SecuritySettings,
        workers: usize,
    ) -> Result<Proxy, BuildError> {
        let mut settings = self.proxy_settings(security);
        let l = &mut settings.limits;
        let n = workers.max(1);
        l.max_requests_in_flight = l.max_requests_in_flight.div_ceil(n);
        l.max_bytes_in_flight = l.max_bytes_in_flight.div_ceil(n);
        l.max_state_bytes = l.max_state_bytes.div_ceil(n);
        let upstreams = self.upstreams.iter().map(|(n, c)| (n.as_str(), c));
        Proxy::new(settings, pipelines, upstreams)
    }

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
        cfg.fill_defaults();
        cfg.base_dir = path.and_then(|p| p.parent()).map(Path::to_path_buf);
        cfg.validate()?;
        Ok(cfg)
    }

    /// Parses TOML text (no environment), validated.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let mut cfg: Config = config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .build()?
            .try_deserialize()?;
        cfg.fill_defaults();
        cfg.validate()?;
        Ok(cfg)
    }

    /// A pipeline without its `[pipelines.image]` / `[pipelines.text]`
    /// table gets one with every default.
    pub fn fill_defaults(&mut self) {
        for p in &mut self.pipelines {
            p.fill_defaults();
        }
    }

    /// The built-in default configuration.
    pub fn builtin() -> Config {
        Config::from_toml(DEFAULT_CONFIG).expect("the shipped default config is valid")
    }
}
