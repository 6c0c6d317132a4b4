//! Checks a whole configuration: each section with its layer's own
//! checks, then what ties sections together (pipeline ids, the upstream
//! each pipeline names). One error, naming the key.

use super::{invalid, Config, ConfigError};
use crate::pipeline::PipelineKind;
use crate::upstream::{UpstreamKind, ECHO};

impl Config {
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
        self.limits
            .check()
            .map_err(|(k, msg)| invalid(format!("limits.{k}"), msg))?;
        for (name, u) in &self.upstreams {
            if name == ECHO {
                return Err(invalid(
                    format!("upstreams.{name}"),
                    "`echo` is the built-in upstream's name",
                ));
            }
            u.check()
                .map_err(|(k, msg)| invalid(format!("upstreams.{name}.{k}"), msg))?;
        }
        if self.pipelines.is_empty() {
            return Err(invalid("pipelines", "at least one pipeline is needed"));
        }
        let mut seen = std::collections::HashSet::new();
        for (n, p) in self.pipelines.iter().enumerate() {
            let key = |k: &str| format!("pipelines[{n}].{k}");
            p.check().map_err(|(k, msg)| invalid(key(&k), msg))?;
            if !seen.insert(p.id) {
                return Err(invalid(
                    key("id"),
                    format!("duplicate pipeline id {}", p.id),
                ));
            }
            if p.upstream == ECHO {
                continue;
            }
            let Some(u) = self.upstreams.get(&p.upstream) else {
                let mut known: Vec<&str> = vec![ECHO];
                known.extend(self.upstreams.keys().map(String::as_str));
                let msg = format!(
                    "unknown upstream `{}` (available: {})",
                    p.upstream,
                    known.join(", ")
                );
                return Err(invalid(key("upstream"), msg));
            };
            if u.kind == UpstreamKind::Openai && p.kind != PipelineKind::Text {
                let msg = format!(
                    "upstream `{}` is openai: it takes token ids, so only text pipelines",
                    p.upstream
                );
                return Err(invalid(key("upstream"), msg));
            }
        }
        Ok(())
    }
}
