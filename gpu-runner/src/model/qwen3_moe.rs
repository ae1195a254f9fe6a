//! Qwen3-MoE (`Qwen3MoeForCausalLM`): RMSNorm on q and k over the head dimension before rope; softmax →
//! top-k, renormalised when `norm_topk_prob`; no shared expert; `attention_bias` on all four projections.

use serde::Deserialize;
use serde_json::Value;

use super::config::{qwen_sparse_layers, ArchConfig, Architecture, AttentionSpec, CommonFields, ExpertActivation, MoeSpec, Rope, Routing};
use super::qwen2_moe::QWEN_EXPERTS;

#[derive(Debug, Clone, Deserialize)]
pub struct Qwen3MoeConfig {
    #[serde(flatten)]
    pub common: CommonFields,
    pub intermediate_size: i64,
    pub moe_intermediate_size: i64,
    #[serde(alias = "num_local_experts")]
    pub num_experts: i64,
    pub num_experts_per_tok: i64,
    #[serde(default)]
    pub norm_topk_prob: bool,
    #[serde(default = "one")]
    pub decoder_sparse_step: i64,
    #[serde(default)]
    pub mlp_only_layers: Vec<i64>,
    #[serde(default)]
    pub attention_bias: bool,
    #[serde(default)]
    pub use_sliding_window: bool,
    #[serde(default)]
    pub sliding_window: Option<i64>,
}

fn one() -> i64 {
    1
}

pub fn arch_config(c: Qwen3MoeConfig, raw: &Value) -> anyhow::Result<ArchConfig> {
    let layers = c.common.num_hidden_layers;
    let window = c.sliding_window.filter(|w| c.use_sliding_window && *w > 0);
    let moe = MoeSpec {
        num_experts: c.num_experts,
        top_k: c.num_experts_per_tok,
        intermediate_size: c.moe_intermediate_size,
        routing: Routing::SoftmaxTopK { renormalize: c.norm_topk_prob },
        activation: ExpertActivation::SwiGlu,
        router_name: "gate",
        router_bias: false,
        shared_expert_intermediate_size: None,
        checkpoint: QWEN_EXPERTS,
    };
    let base = c.common.arch_config(Architecture::Qwen3Moe, raw, Rope::from_config(raw, 10_000.0)?, moe);
    Ok(ArchConfig {
        attention: AttentionSpec { qkv_bias: c.attention_bias, o_bias: c.attention_bias, qk_norm: true, sinks: false },
        sliding_windows: vec![window; layers as usize],
        sparse_layers: qwen_sparse_layers(layers, c.num_experts, c.decoder_sparse_step, &c.mlp_only_layers),
        dense_intermediate_size: c.intermediate_size,
        ..base
    })
}
