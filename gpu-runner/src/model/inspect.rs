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

/// Training settings the estimate is for.
#[derive(Debug, Clone, Copy)]
pub struct EstimateInput {
    pub batch: i64,
    pub seq_len: i64,
    /// Bytes per element of the training dtype (2 for bf16).
    pub dtype_bytes: i64,
    pub lora_rank: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct MemoryEstimate {
    pub trainable_params: i64,
    pub weights_bytes: i64,
    pub gradients_bytes: i64,
    pub optimizer_bytes: i64,
    pub activations_bytes: i64,
    pub total_bytes: i64,
}

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
    pub estimate_for: serde_json::Value,
    pub memory: BTreeMap<&'static str, MemoryEstimate>,
}

/// Activation bytes kept for backward, per token per layer, in elements of the training dtype:
/// attention (norm input, q/k/v after rope, output) + MoE (norm input, router logits, each of the k
/// routed copies: gathered input, gate_up, activation, output). Eager attention (sinks) also keeps the
/// `[heads, seq]` probabilities. An estimate, documented in docs/architecture.md.
fn activation_elements_per_token(c: &ArchConfig, seq: i64) -> i64 {
    let attn = 3 * c.hidden_size + 3 * c.num_attention_heads * c.head_dim + 4 * c.num_key_value_heads * c.head_dim;
    let eager = if c.attention.sinks { 2 * c.num_attention_heads * seq } else { 0 };
    let m = &c.moe;
    let moe = m.num_experts + m.top_k * (2 * c.hidden_size + 4 * m.intermediate_size) + m.shared_expert_intermediate_size.map_or(0, |s| 4 * s + c.hidden_size);
    let dense = 4 * c.dense_intermediate_size + c.hidden_size;
    let mlp: i64 = c.sparse_layers.iter().map(|&sparse| if sparse { moe } else { dense }).sum();
    c.num_hidden_layers * (attn + eager) + mlp
}

pub fn estimate(config: &ArchConfig, by_role: &BTreeMap<Role, i64>, input: EstimateInput) -> BTreeMap<&'static str, MemoryEstimate> {
    let role = |r: Role| by_role.get(&r).copied().unwrap_or(0);
    let total: i64 = by_role.values().sum();
    let b = input.dtype_bytes;
    let tokens = input.batch * input.seq_len;
    // Logits in the training dtype, their fp32 copy for the loss and its gradient.
    let logits = tokens * config.vocab_size * (b + 8);
    let activations = tokens * activation_elements_per_token(config, input.seq_len) * b + logits;
    let weights = total * b;
    // Mixed precision keeps an fp32 master copy next to AdamW's two fp32 moments.
    let optimizer_per_param = 8 + if b < 4 { 4 } else { 0 };
    let full_trainable = total - role(Role::Router);
    let full = MemoryEstimate {
        trainable_params: full_trainable,
        weights_bytes: weights,
        gradients_bytes: full_trainable * b,
        optimizer_bytes: full_trainable * optimizer_per_param,
        activations_bytes: activations,
        total_bytes: 0,
    };
    // LoRA on q/k/v/o: r · (in + out) per projection; adapters, their gradients and moments in fp32.
    let (h, q, kv) = (config.hidden_size, config.num_attention_heads * config.head_dim, config.num_key_value_heads * config.head_dim);
    let lora_trainable = config.num_hidden_layers * input.lora_rank * ((h + q) + 2 * (h + kv) + (q + h));
    let lora = MemoryEstimate {
        trainable_params: lora_trainable,
        weights_bytes: weights + lora_trainable * 4,
        gradients_bytes: lora_trainable * 4,
        optimizer_bytes: lora_trainable * 8,
        activations_bytes: activations,
        total_bytes: 0,
    };
    // QAT trains like full fine-tuning and also keeps every layer's fake-quantized expert weights for backward.
    let qat = MemoryEstimate { activations_bytes: activations + role(Role::Expert) * b, ..full.clone() };
    let mut out = BTreeMap::from([("lora", lora), ("full", full), ("qat", qat)]);
    for e in out.values_mut() {
        e.total_bytes = e.weights_bytes + e.gradients_bytes + e.optimizer_bytes + e.activations_bytes;
    }
    out
}

pub fn inspect(dir: &Path, input: EstimateInput) -> anyhow::Result<Inspection> {
    let config = ArchConfig::from_dir(dir)?;
    let params = MoeModel::param_infos(&config);
    let mut by_role: BTreeMap<Role, i64> = BTreeMap::new();
    for p in &params {
        *by_role.entry(p.role).or_default() += p.numel();
    }
    let total: i64 = by_role.values().sum();
    let experts = by_role.get(&Role::Expert).copied().unwrap_or(0);
    let active = total - experts + experts * config.moe.top_k / config.moe.num_experts;
    let has_weights = dir.join("model.safetensors").exists() || dir.join("model.safetensors.index.json").exists();
    let bytes_on_disk = if has_weights { Checkpoint::open(dir)?.dtype_bytes() } else { BTreeMap::new() };
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
        memory: estimate(&config, &by_role, input),
        parameters: ParameterCounts {
            total,
            active_per_token: active,
            by_role,
        },
        dtype_on_disk,
        bytes_on_disk,
        quantization,
        estimate_for: serde_json::json!({
            "batch": input.batch, "seq_len": input.seq_len, "dtype_bytes": input.dtype_bytes, "lora_rank": input.lora_rank,
            "lora_targets": ["q_proj", "k_proj", "v_proj", "o_proj"], "router": "frozen",
        }),
    })
}
