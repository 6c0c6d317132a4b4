//! Reading the configuration (file or built-in default, then the
//! environment) and building each layer's pieces from it.

use super::{Config, ConfigError, DEFAULT_CONFIG};
use crate::ingress::udp::UdpSettings;
use crate::pipeline::{PipelineError, Pipelines};
use crate::proxy::{BuildError, Proxy, ProxySettings};
use std::path::Path;

impl Config {
    /// The proxy core's settings.
    pub fn proxy_settings(&self) -> ProxySettings {
        ProxySettings::new(self.limits.clone(), self.ingress.mtu)
    }

    /// The socket ingress's settings.
    pub fn udp_settings(&self) -> UdpSettings {
        UdpSettings {
            recv_batch: self.ingress.recv_batch,
            socket_buffer_bytes: self.ingress.socket_buffer_bytes,
            tx_queue_datagrams: self.ingress.tx_queue_datagrams,
            max_datagram: self.limits.max_datagram,
            gso: self.ingress.gso,
        }
    }

    /// Every pipeline, built (tokenizers loaded).
    pub fn build_pipelines(&self) -> Result<Pipelines, PipelineError> {
        Pipelines::build(&self.pipelines, self.base_dir.as_deref())
    }

    /// A proxy core for one worker.
    pub fn build_proxy(&self) -> Result<Proxy, BuildError> {
        self.build_proxy_with(self.build_pipelines()?)
    }

    /// A proxy core for one worker, with pipelines already built (they
    /// are shared between workers).
    pub fn build_proxy_with(&self, pipelines: Pipelines) -> Result<Proxy, BuildError> {
        let upstreams = self.upstreams.iter().map(|(n, c)| (n.as_str(), c));
        Proxy::new(self.proxy_settings(), pipelines, upstreams)
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
}
