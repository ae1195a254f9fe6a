//! `moetune-runner inspect`: what a checkpoint is and how much memory training it takes, from
//! config.json and the safetensors headers only (nothing is loaded, so it works for any size).
//! The scheduler places jobs with these estimates.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use super::checkpoint::Checkpoint;
use super::config::ArchConfig;
use super::params::Role;
use super::MoeModel;
use moetune_types::placement::{JobMemory, MemoryModel, TrainingDevice};
use moetune_types::TrainingSpec;

#[derive(Debug, Serialize)]
pub struct ParameterCounts {
    pub total: i64,
    pub active_per_token: i64,
    pub by_role: BTreeMap<Role, i64>,
}

#[derive(Debug, Serialize)]
pub struct Inspection {
    pub architecture: &'static str,
    pub model_type: &'static str,
    pub num_hidden_layers: i64,
    pub moe_layers: usize,
    pub num_experts: i64,
    pub top_k: i64,
    pub hidden_size: i64,
    pub expert_intermediate_size: i64,
    pub vocab_size: i64,
    pub parameters: ParameterCounts,
    /// Dominant tensor dtype on disk and bytes per dtype (`u8` = MXFP4-packed experts).
    pub dtype_on_disk: Option<String>,
    pub bytes_on_disk: BTreeMap<String, u64>,
    pub quantization: Option<String>,
    /// The job the estimate is for: batch size and the method options, defaults filled in.
    pub estimate_for: serde_json::Value,
    /// That job's peak per stage on a GPU of a CUDA runner and on a CPU runner.
    pub memory: BTreeMap<&'static str, JobMemory>,
    /// What the scheduler recomputes `memory` from for each job's batch and sequence length.
    pub memory_model: MemoryModel,
}

/// Activation bytes kept for backward, per token per layer, in elements of the training dtype:
/// attention (norm input, q/k/v after rope, output) + MoE (norm input, router logits, each of the k
/// routed copies: gathered input, gate_up, activation, output). Attention runs through SDPA (sinks
/// included), which keeps no `[heads, seq]` probabilities, so nothing grows with the sequence. An
/// estimate, documented in docs/architecture.md.
fn activation_elements_per_token(c: &ArchConfig) -> i64 {
    let attn = 3 * c.hidden_size + 3 * c.num_attention_heads * c.head_dim + 4 * c.num_key_value_heads * c.head_dim;
    let m = &c.moe;
    let moe = m.num_experts + m.top_k * (2 * c.hidden_size + 4 * m.intermediate_size) + m.shared_expert_intermediate_size.map_or(0, |s| 4 * s + c.hidden_size);
    let dense = 4 * c.dense_intermediate_size + c.hidden_size;
    let mlp: i64 = c.sparse_layers.iter().map(|&sparse| if sparse { moe } else { dense }).sum();
    c.num_hidden_layers * attn + mlp
}

/// The memory model of a config: what the shared estimate (and the scheduler's placement) needs.
pub fn memory_model(config: &ArchConfig, by_role: &BTreeMap<Role, i64>) -> MemoryModel {
    let role = |r: Role| by_role.get(&r).copied().unwrap_or(0);
    let quant_method = config.raw.get("quantization_config").and_then(|q| q.get("quant_method")).and_then(|m| m.as_str());
    MemoryModel {
        total_params: by_role.values().sum(),
        router_params: role(Role::Router),
        expert_params: role(Role::Expert),
        vocab_size: config.vocab_size,
        hidden_size: config.hidden_size,
        num_hidden_layers: config.num_hidden_layers,
        q_dim: config.num_attention_heads * config.head_dim,
        kv_dim: config.num_key_value_heads * config.head_dim,
        activation_elements_per_token: activation_elements_per_token(config),
        activation_elements_per_token_per_seq: 0,
        moe_layers: config.moe_layers().count() as i64,
        num_experts: config.moe.num_experts,
        expert_intermediate_size: config.moe.intermediate_size,
        // gpt-oss ships its experts MXFP4 (`quantization_config.quant_method: mxfp4`).
        shipped_expert_format: (quant_method == Some("mxfp4")).then(|| "mxfp4".to_string()),
    }
}

/// What the checkpoint in `dir` is, and the memory of the job `spec` on it.
pub fn inspect(dir: &Path, spec: &TrainingSpec) -> anyhow::Result<Inspection> {
    let config = ArchConfig::from_dir(dir)?;
    let params = MoeModel::param_infos(&config);
    let mut by_role: BTreeMap<Role, i64> = BTreeMap::new();
    for p in &params {
        *by_role.entry(p.role).or_default() += p.numel();
    }
    let mut model = memory_model(&config, &by_role);
    let total: i64 = by_role.values().sum();
    let experts = by_role.get(&Role::Expert).copied().unwrap_or(0);
    let active = total - experts + experts * config.moe.top_k / config.moe.num_experts;
    let has_weights = dir.join("model.safetensors").exists() || dir.join("model.safetensors.index.json").exists();
    let checkpoint = has_weights.then(|| Checkpoint::open(dir)).transpose()?;
    let bytes_on_disk = checkpoint.as_ref().map(Checkpoint::dtype_bytes).unwrap_or_default();
    // With weights at hand, packed experts are what the loader finds (`_blocks`), as the runner decides.
    if let Some(ckpt) = &checkpoint {
        model.shipped_expert_format = super::checkpoint::shipped_expert_format(ckpt, &params).map(|f| f.as_str().to_string());
    }
    let dtype_on_disk = bytes_on_disk.iter().filter(|(d, _)| *d != "u8").max_by_key(|(_, n)| **n).map(|(d, _)| d.clone());
    let quantization = config.raw.get("quantization_config").and_then(|q| q.get("quant_method")).and_then(|m| m.as_str()).map(str::to_string);
    Ok(Inspection {
        architecture: config.architecture.class_name(),
        model_type: config.architecture.model_type(),
        num_hidden_layers: config.num_hidden_layers,
        moe_layers: config.moe_layers().count(),
        num_experts: config.moe.num_experts,
        top_k: config.moe.top_k,
        hidden_size: config.hidden_size,
        expert_intermediate_size: config.moe.intermediate_size,
        vocab_size: config.vocab_size,
        memory: BTreeMap::from([("cuda", model.job_memory(spec, TrainingDevice::Cuda)), ("cpu", model.job_memory(spec, TrainingDevice::Cpu))]),
        memory_model: model,
        parameters: ParameterCounts {
            total,
            active_per_token: active,
            by_role,
        },
        dtype_on_disk,
        bytes_on_disk,
        quantization,
        estimate_for: serde_json::json!({ "batch_size": spec.batch_size, "moe_sft_qat": spec.moe }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The built-in model has no directory to inspect; its memory model is recorded by a migration, which
    /// must say what `inspect` computes from its config.
    #[test]
    fn the_builtin_models_recorded_memory_model_matches_its_config() {
        let config = ArchConfig::from_json(super::super::tiny::config_json()).unwrap();
        let mut by_role: BTreeMap<Role, i64> = BTreeMap::new();
        for p in MoeModel::param_infos(&config) {
            *by_role.entry(p.role).or_default() += p.numel();
        }
        let computed = serde_json::to_value(memory_model(&config, &by_role)).unwrap();
        let migration = include_str!("../../../migrations/20261126000001_placement.sql");
        let recorded = migration.split_once("SET inspect = '").and_then(|(_, rest)| rest.split_once("' WHERE")).map(|(json, _)| json).expect("the migration records the tiny model's inspect");
        let recorded: serde_json::Value = serde_json::from_str(recorded).unwrap();
        // The memory model as the latest migration that sets it leaves it.
        let update = include_str!("../../../migrations/20261205000001_memory_model.sql");
        let latest = update.split_once("'{memory_model}', '").and_then(|(_, rest)| rest.split_once("')")).map(|(json, _)| json).expect("the migration sets the memory model");
        let latest: serde_json::Value = serde_json::from_str(latest).unwrap();
        assert_eq!(latest, computed, "add a migration that sets the memory_model to {computed}");
        assert_eq!(recorded["hidden_size"], config.hidden_size);
        assert_eq!(recorded["expert_intermediate_size"], config.moe.intermediate_size);
    }
}
