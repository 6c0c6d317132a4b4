//! Start-up checks of the model servers (blocking, before the event loop
//! runs): readiness, and for `kserve` upstreams the model's metadata
//! against the tensors the pipelines send. Then, while a server is not
//! ready, a background probe that tells the admin board when it is.

use crate::admin::Board;
use crate::config::{Config, ConfigError};
use crate::http_pool::blocking;
use crate::pipeline::{PipelineConfig, PipelineKind};
use crate::transform::normalize::Layout;
use crate::transform::text::Padding;
use crate::upstream::kserve::{self, CheckMetadata, SentTensor};
use crate::upstream::{HttpUrl, UpstreamKind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The tensors pipeline `p` sends to its model server.
pub fn sent_tensors(p: &PipelineConfig) -> Vec<SentTensor> {
    if let (PipelineKind::Image, Some(i)) = (p.kind, &p.image) {
        let (h, w) = (Some(i.height as i64), Some(i.width as i64));
        let c = Some(i.channels as i64);
        let shape = match i.layout {
            Layout::Nchw => vec![Some(1), c, h, w],
            Layout::Nhwc => vec![Some(1), h, w, c],
        };
        return vec![SentTensor {
            name: i.tensor_name.clone(),
            datatype: i.dtype.name().to_string(),
            shape,
        }];
    }
    if let Some(t) = &p.text {
        let n = match t.padding {
            Padding::MaxLength => Some(t.max_length as i64),
            Padding::None => None,
        };
        return t
            .outputs
            .iter()
            .map(|o| SentTensor {
                name: o.name().to_string(),
                datatype: t.dtype.name().to_string(),
                shape: vec![Some(1), n],
            })
            .collect();
    }
    Vec::new()
}

/// Compares each kserve pipeline's tensors with its model's metadata.
/// A mismatch under `check_metadata = "error"` is a configuration error
/// (exit 78) naming both sides; `warn` logs it; an unreachable server
/// is logged and skipped (readiness reports it).
pub fn check_metadata(config: &Config, timeout: Duration) -> Result<(), ConfigError> {
    for (n, p) in config.pipelines.iter().enumerate() {
        let Some(u) = config.upstreams.get(&p.upstream) else {
            continue;
        };
        if u.kind != UpstreamKind::Kserve || u.check_metadata == CheckMetadata::Off {
            continue;
        }
        let Ok(url) = HttpUrl::parse(&u.url) else {
            continue;
        };
        let path = kserve::metadata_path(&url.base_path, &u.model, &u.version);
        let meta = blocking::resolve(&url).and_then(|addrs| {
            let r = blocking::get_blocking(addrs[0], &url.authority, &path, timeout)
                .map_err(|e| e.to_string())?;
            if r.status != 200 {
                return Err(format!("GET {path}: HTTP {}", r.status));
            }
            serde_json::from_slice::<serde_json::Value>(&r.body)
                .map_err(|e| format!("GET {path}: not JSON: {e}"))
        });
        let meta = match meta {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(
                    upstream = %p.upstream,
                    "model metadata not checked (server not reachable at start: {e}); \
                     /readyz reports it"
                );
                continue;
            }
        };
        let key = match p.kind {
            PipelineKind::Image => format!("pipelines[{n}].image.tensor_name"),
            PipelineKind::Text => format!("pipelines[{n}].text.outputs"),
        };
        match kserve::check_inputs(&meta, &sent_tensors(p)) {
            Ok(None) => tracing::info!(
                pipeline = %p.name,
                upstream = %p.upstream,
                model = %u.model,
                "model metadata matches the pipeline's tensors"
            ),
            Ok(Some(note)) => tracing::info!(
                pipeline = %p.name,
                upstream = %p.upstream,
                "model metadata not compared: {note}"
            ),
            Err(e) => {
                let msg = format!(
                    "pipeline {} ({}) and model `{}` of upstream `{}` ({}{path}) do not match: {e}",
                    p.id, p.name, u.model, p.upstream, u.url
                );
                if u.check_metadata == CheckMetadata::Error {
                    return Err(ConfigError::Invalid {
                        key,
                        msg: msg
                            + &format!(
                                " (upstreams.{}.check_metadata = \"warn\" starts anyway)",
                                p.upstream
                            ),
                    });
                }
                tracing::warn!("{key}: {msg}");
            }
        }
    }
    Ok(())
}

/// Probes the model servers whose last check failed, every `every`,
/// until each is ready or `stop` is set (a background thread: never on
/// the event loop).
pub fn spawn_reprobe(
    config: &Config,
    board: Arc<Board>,
    every: Duration,
    stop: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let upstreams = config.upstreams.clone();
    std::thread::Builder::new()
        .name("tensorwire-probe".into())
        .spawn(move || {
            let mut next = std::time::Instant::now() + every;
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
                if std::time::Instant::now() < next {
                    continue;
                }
                next += every;
                for name in board.failed_probes() {
                    let Some(u) = upstreams.get(&name) else {
                        continue;
                    };
                    let r = HttpUrl::parse(&u.url).and_then(|url| {
                        blocking::check_ready(u.kind, &url, &u.model, &u.version, every)
                    });
                    if r.is_ok() {
                        tracing::info!(upstream = %name, url = %u.url, "upstream ready now");
                    }
                    board.set_probe(&name, r);
                }
            }
        })
}
