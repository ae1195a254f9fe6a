use moetune_platform::s3::S3Config;
use serde::Deserialize;

/// Defaults, with comments, live in `api/config.default.toml`; `MOETUNE_*` env vars override.
#[derive(Debug, Clone, Deserialize)]
pub struct ApiConfig {
    pub bind_addr: String,
    pub database_url: String,
    pub redis_url: String,
    pub redis_prefix: String,
    pub jwt_secret: String,
    /// Development only: accept a `jwt_secret` shorter than 32 bytes or equal to a shipped placeholder.
    pub allow_insecure_jwt_secret: bool,
    pub jwt_issuer: String,
    pub jwt_audience: String,
    pub jwt_rs256_public_key: String,
    pub token_ttl_days: i64,
    pub upload_sweep_interval_ms: u64,
    pub quotas: QuotaDefaults,
    pub s3: S3Config,
    pub webhooks: WebhookSettings,
    pub rate_limits: crate::rate_limit::RateLimits,
}

/// What the api checks when a tenant registers a webhook endpoint (the scheduler delivers).
#[derive(Debug, Clone, Deserialize)]
pub struct WebhookSettings {
    pub allowed_private_networks: String,
}

/// Limits for tenants that have no override of their own (admin `POST /v1/admin/tenants`).
#[derive(Debug, Clone, Deserialize)]
pub struct QuotaDefaults {
    pub max_concurrent_jobs: i64,
    pub max_storage_bytes: i64,
}

const DEFAULTS: &str = include_str!("../config.default.toml");

impl ApiConfig {
    pub fn load() -> anyhow::Result<Self> {
        moetune_platform::settings::load(DEFAULTS)
    }
}
