//! Reading `config.json`: each architecture file parses its own transformers config into the shared
//! [`ArchConfig`]; this module picks the file (so `config` needs none of them).

use std::path::Path;

use anyhow::Context;
use serde_json::Value;

use super::config::{ArchConfig, Architecture};
use super::{gpt_oss, mixtral, qwen2_moe, qwen3_moe};

impl ArchConfig {
    pub fn from_json(raw: Value) -> anyhow::Result<Self> {
        let architecture = Architecture::detect(&raw)?;
        let parse_error = |e: serde_json::Error| anyhow::anyhow!("config.json is not a valid {} config: {e}", architecture.class_name());
        let mut config = match architecture {
            Architecture::Mixtral => mixtral::arch_config(serde_json::from_value(raw.clone()).map_err(parse_error)?, &raw)?,
            Architecture::Qwen2Moe => qwen2_moe::arch_config(serde_json::from_value(raw.clone()).map_err(parse_error)?, &raw)?,
            Architecture::Qwen3Moe => qwen3_moe::arch_config(serde_json::from_value(raw.clone()).map_err(parse_error)?, &raw)?,
            Architecture::GptOss => gpt_oss::arch_config(serde_json::from_value(raw.clone()).map_err(parse_error)?, &raw)?,
        };
        config.eos_token_ids = match raw.get("eos_token_id") {
            Some(Value::Number(n)) => n.as_i64().into_iter().collect(),
            Some(Value::Array(ids)) => ids.iter().filter_map(Value::as_i64).collect(),
            _ => Vec::new(),
        };
        config.validate()?;
        Ok(config)
    }

    pub fn from_dir(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join("config.json");
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let raw: Value = serde_json::from_slice(&bytes).with_context(|| format!("{} is not JSON", path.display()))?;
        Self::from_json(raw).with_context(|| format!("in {}", path.display()))
    }
}
