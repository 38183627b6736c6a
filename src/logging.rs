//! Logging through `tracing` to stderr (README "Command line"): the level comes from
//! `RUST_LOG` when set, else from `[log] level`, and follows reloads.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::reload;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{LogConfig, LogFormat};

/// Changes the log level after start.
#[derive(Clone)]
pub struct LogHandle {
    handle: Option<reload::Handle<EnvFilter, tracing_subscriber::Registry>>,
}

impl LogHandle {
    /// A handle that changes nothing (tests, embedding without a subscriber).
    pub fn detached() -> Self {
        Self { handle: None }
    }

    /// Applies `[log] level` unless `RUST_LOG` pins the filter.
    pub fn apply(&self, config: &LogConfig) {
        if let Some(handle) = &self.handle
            && let Ok(filter) = EnvFilter::try_new(&config.level)
            && let Err(error) = handle.reload(filter)
        {
            tracing::warn!(%error, "could not change the log level");
        }
    }
}

/// Installs the global subscriber; called once at start.
pub fn init(config: &LogConfig) -> LogHandle {
    let from_env = std::env::var("RUST_LOG").ok().filter(|v| !v.is_empty());
    let filter = from_env
        .as_deref()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .or_else(|| EnvFilter::try_new(&config.level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    let registry = tracing_subscriber::registry().with(filter);
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let installed = match config.format {
        LogFormat::Json => registry.with(fmt.json()).try_init(),
        LogFormat::Text => registry.with(fmt).try_init(),
    };
    LogHandle {
        handle: (installed.is_ok() && from_env.is_none()).then_some(handle),
    }
}
