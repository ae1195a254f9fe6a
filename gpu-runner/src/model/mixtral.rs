//! Mixtral (`MixtralForCausalLM`): softmax over all experts → top-k → renormalise; SwiGLU experts
//! `w2(silu(w1 x) · w3 x)`; no attention biases; optional sliding window on every layer.
//! Checkpoints store experts one by one as `block_sparse_moe.experts.{e}.w1|w2|w3.weight`.

use serde::Deserialize;
use serde_json::Value;

use super::config::{ArchConfig, Architecture, CommonFields, ExpertActivation, ExpertCheckpoint, MoeSpec, Rope, Routing};

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
    let moe = MoeSpec {
        num_experts: c.num_local_experts,
        top_k: c.num_experts_per_tok,
        intermediate_size: c.intermediate_size,
        routing: Routing::SoftmaxTopK { renormalize: true },
        activation: ExpertActivation::SwiGlu,
        router_name: "gate",
        router_bias: false,
        shared_expert_intermediate_size: None,
        checkpoint: ExpertCheckpoint::PerExpert { module: "block_sparse_moe", gate: "w1", up: "w3", down: "w2" },
    };
    let base = c.common.arch_config(Architecture::Mixtral, raw, Rope::from_config(raw, 1e6)?, moe);
    Ok(ArchConfig { sliding_windows: vec![c.sliding_window.filter(|w| *w > 0); c.common.num_hidden_layers as usize], ..base })
}
