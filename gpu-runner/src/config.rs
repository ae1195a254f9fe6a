use moetune_platform::s3::S3Config;
use serde::Deserialize;

/// Defaults, with comments, live in `gpu-runner/config.default.toml`; `MOETUNE_*` env vars override.
#[derive(Debug, Clone, Deserialize)]
pub struct RunnerConfig {
    pub redis_url: String,
    pub redis_prefix: String,
    pub runner_id: String,
    pub work_dir: String,
    pub threads: i32,
    pub heartbeat_ms: u64,
    pub device: String,
    pub gpu_model: String,
    pub gpu_memory_gib: u64,
    pub host_memory_gib: u64,
    pub claim_poll_ms: u64,
    pub metrics_addr: String,
    pub max_dataset_bytes: i64,
    pub labels: std::collections::BTreeMap<String, String>,
    /// Where other runners reach this one when it is rank 0 of a gang; empty = the host's name.
    pub address: String,
    /// How long a gang's ranks wait for each other to join, and for any collective.
    pub gang_timeout_seconds: u64,
    pub s3: S3Config,
}

const DEFAULTS: &str = include_str!("../config.default.toml");

impl RunnerConfig {
    pub fn load() -> anyhow::Result<Self> {
        let mut config: Self = moetune_platform::settings::load(DEFAULTS)?;
        if config.runner_id.is_empty() {
            let host = std::fs::read_to_string("/etc/hostname").unwrap_or_else(|_| "runner".into());
            config.runner_id = format!("{}-{}", host.trim(), std::process::id());
        }
        if config.address.is_empty() {
            config.address = std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_string()).ok().filter(|h| !h.is_empty()).unwrap_or_else(|| "127.0.0.1".into());
        }
        anyhow::ensure!((1..=86_400).contains(&config.gang_timeout_seconds), "gang_timeout_seconds must be from 1 to 86400");
        Ok(config)
    }

    pub fn device(&self) -> anyhow::Result<tch::Device> {
        match self.device.as_str() {
            "cpu" => Ok(tch::Device::Cpu),
            "cuda" => Ok(tch::Device::Cuda(0)),
            "auto" => Ok(tch::Device::cuda_if_available()),
            other => anyhow::bail!("device must be cpu, cuda or auto, not {other:?}"),
        }
    }
}
