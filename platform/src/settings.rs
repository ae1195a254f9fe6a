//! One way every moetune binary reads its settings: the commented defaults file compiled into it,
//! overridden by `MOETUNE_<KEY>` env vars (`MOETUNE_S3__ENDPOINT` for nested keys); and one way every
//! binary logs.

use serde::de::DeserializeOwned;

pub fn load<T: DeserializeOwned>(defaults_toml: &str) -> anyhow::Result<T> {
    let config = config::Config::builder()
        .add_source(config::File::from_str(defaults_toml, config::FileFormat::Toml))
        .add_source(config::Environment::with_prefix("MOETUNE").prefix_separator("_").separator("__"))
        .build()?;
    Ok(config.try_deserialize()?)
}

/// Installs the global log subscriber of a binary: text on stderr, or one JSON object per line (with the
/// current span's fields, e.g. `job_id`) when `MOETUNE_LOG_FORMAT=json`. `RUST_LOG` filters.
pub fn init_logging(default_level: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| default_level.into());
    // Colours only for a terminal: not in files, the journal or a log collector.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(colour);
    if std::env::var("MOETUNE_LOG_FORMAT").is_ok_and(|f| f == "json") {
        builder.json().flatten_event(true).with_current_span(true).init();
    } else {
        builder.init();
    }
}
