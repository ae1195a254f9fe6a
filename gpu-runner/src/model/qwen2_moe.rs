//! Qwen2-MoE (`Qwen2MoeForCausalLM`): softmax → top-k, renormalised only when `norm_topk_prob`; a
//! shared SwiGLU expert gated by `sigmoid(shared_expert_gate x)` added to the routed experts; q/k/v
//! biases; dense MLP layers per `mlp_only_layers` / `decoder_sparse_step`; sliding windows per `layer_types`.

use serde::Deserialize;
use serde_json::Value;

use super::config::{
    qwen_sparse_layers, windows_from_layer_types, ArchConfig, Architecture, AttentionSpec, CommonFields, ExpertActivation, ExpertCheckpoint,
    MoeSpec, Rope, Routing,
};

/// Qwen's per-expert checkpoint names (`mlp.experts.{e}.gate_proj.weight`, …).
pub const QWEN_EXPERTS: ExpertCheckpoint = ExpertCheckpoint::PerExpert { module: "mlp", gate: "gate_proj", up: "up_proj", down: "down_proj" };

#[derive(Debug, Clone, Deserialize)]
pub struct Qwen2MoeConfig {
    #[serde(flatten)]
    pub common: CommonFields,
    pub intermediate_size: i64,
    pub moe_intermediate_size: i64,
    pub shared_expert_intermediate_size: i64,
    #[serde(alias = "num_local_experts")]
    pub num_experts: i64,
    pub num_experts_per_tok: i64,
    #[serde(default)]
    pub norm_topk_prob: bool,
    #[serde(default = "one")]
    pub decoder_sparse_step: i64,
    #[serde(default)]
    pub mlp_only_layers: Vec<i64>,
    #[serde(default = "yes")]
    pub qkv_bias: bool,
    #[serde(default)]
    pub use_sliding_window: bool,
    #[serde(default)]
    pub sliding_window: Option<i64>,
    #[serde(default = "default_max_window_layers")]
    pub max_window_layers: i64,
    #[serde(default)]
    pub layer_types: Option<Vec<String>>,
}

fn one() -> i64 {
    1
}
fn yes() -> bool {
    true
}
fn default_max_window_layers() -> i64 {
    28
}

pub fn arch_config(c: Qwen2MoeConfig, raw: &Value) -> anyhow::Result<ArchConfig> {
    let layers = c.common.num_hidden_layers;
    // transformers derives layer_types when absent: every other layer below max_window_layers slides.
    let layer_types = c.layer_types.clone().unwrap_or_else(|| {
        (0..layers)
            .map(|i| if (i + 1) % 2 == 1 && i < c.max_window_layers && c.use_sliding_window { "sliding_attention" } else { "full_attention" }.to_string())
            .collect()
    });
    let window = c.sliding_window.filter(|_| c.use_sliding_window);
    let moe = MoeSpec {
        num_experts: c.num_experts,
        top_k: c.num_experts_per_tok,
        intermediate_size: c.moe_intermediate_size,
        routing: Routing::SoftmaxTopK { renormalize: c.norm_topk_prob },
        activation: ExpertActivation::SwiGlu,
        router_name: "gate",
        router_bias: false,
        shared_expert_intermediate_size: Some(c.shared_expert_intermediate_size),
        checkpoint: QWEN_EXPERTS,
    };
    let base = c.common.arch_config(Architecture::Qwen2Moe, raw, Rope::from_config(raw, 10_000.0)?, moe);
    Ok(ArchConfig {
        attention: AttentionSpec { qkv_bias: c.qkv_bias, o_bias: false, qk_norm: false, sinks: false },
        sliding_windows: windows_from_layer_types(&layer_types, window, layers)?,
        sparse_layers: qwen_sparse_layers(layers, c.num_experts, c.decoder_sparse_step, &c.mlp_only_layers),
        dense_intermediate_size: c.intermediate_size,
        ..base
    })
}
