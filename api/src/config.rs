use moetune_types::s3::S3Config;
use serde::Deserialize;

/// Defaults, with comments, live in `api/config.default.toml`; `MOETUNE_*` env vars override.
#[derive(Debug, Clone, Deserialize)]
pub struct ApiConfig {
    pub bind_addr: String,
    pub database_url: String,
    pub redis_url: String,
    pub redis_prefix: String,
    pub jwt_secret: String,
    pub token_ttl_days: i64,
    pub s3: S3Config,
}

const DEFAULTS: &str = include_str!("../config.default.toml");

impl ApiConfig {
    pub fn load() -> anyhow::Result<Self> {
        moetune_types::settings::load(DEFAULTS)
    }
}
