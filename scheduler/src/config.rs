use serde::Deserialize;

/// Defaults, with comments, live in `scheduler/config.default.toml`; `MOETUNE_*` env vars override.
#[derive(Debug, Clone, Deserialize)]
pub struct SchedulerConfig {
    pub database_url: String,
    pub redis_url: String,
    pub redis_prefix: String,
    pub consumer_name: String,
    pub reconcile_interval_ms: u64,
    pub placement_interval_ms: u64,
    pub max_attempts: i32,
    pub s3_bucket: String,
    pub metrics_addr: String,
    pub webhooks: crate::webhooks::WebhookConfig,
}

const DEFAULTS: &str = include_str!("../config.default.toml");

impl SchedulerConfig {
    pub fn load() -> anyhow::Result<Self> {
        moetune_platform::settings::load(DEFAULTS)
    }
}
