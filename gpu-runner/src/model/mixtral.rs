//! Mixtral (`MixtralForCausalLM`): softmax over all experts → top-k → renormalise; SwiGLU experts
//! `w2(silu(w1 x) · w3 x)`; no attention biases; optional sliding window on every layer.
//! Checkpoints store experts one by one as `block_sparse_moe.experts.{e}.w1|w2|w3.weight`.

use serde::Deserialize;
use serde_json::Value;

use super::config::{ArchConfig, Architecture, AttentionSpec, CommonFields, ExpertActivation, ExpertCheckpoint, MoeSpec, Rope, Routing};

/// The fields of transformers' `MixtralConfig` this implementation reads (same names as config.json).
#[derive(Debug, Clone, Deserialize)]
pub struct MixtralConfig {
    #[serde(flatten)]
    pub common: CommonFields,
    pub intermediate_size: i64,
    pub num_local_experts: i64,
    pub num_experts_per_tok: i64,
    #[serde(default)]
    pub sliding_window: Option<i64>,
}

pub fn arch_config(c: MixtralConfig, raw: &Value) -> anyhow::Result<ArchConfig> {
    let layers = c.common.num_hidden_layers;
    Ok(ArchConfig {
        architecture: Architecture::Mixtral,
        vocab_size: c.common.vocab_size,
        hidden_size: c.common.hidden_size,
        num_hidden_layers: layers,
        num_attention_heads: c.common.num_attention_heads,
        num_key_value_heads: c.common.kv_heads(),
        head_dim: c.common.head_dim(),
        rms_norm_eps: c.common.rms_norm_eps,
        norm_weight_in_fp32: false,
        rope: Rope::from_config(raw, 1e6)?,
        tie_word_embeddings: c.common.tie_word_embeddings,
        attention: AttentionSpec { qkv_bias: false, o_bias: false, qk_norm: false, sinks: false },
        sliding_windows: vec![c.sliding_window.filter(|w| *w > 0); layers as usize],
        sparse_layers: vec![true; layers as usize],
        dense_intermediate_size: c.intermediate_size,
        moe: MoeSpec {
            num_experts: c.num_local_experts,
            top_k: c.num_experts_per_tok,
            intermediate_size: c.intermediate_size,
            routing: Routing::SoftmaxTopK { renormalize: true },
            activation: ExpertActivation::SwiGlu,
            router_name: "gate",
            router_bias: false,
            shared_expert_intermediate_size: None,
            checkpoint: ExpertCheckpoint::PerExpert { module: "block_sparse_moe", gate: "w1", up: "w3", down: "w2" },
        },
        eos_token_ids: Vec::new(),
        raw: raw.clone(),
    })
}
