//! gpt-oss (`GptOssForCausalLM`): router linear with bias, top-k on the logits then softmax over the k;
//! experts with biases and interleaved gate/up (`[E, H, 2I]`, `x @ W`), gate clamped above at `limit`,
//! up clamped to ±`limit`, `(up + 1) · gate · sigmoid(alpha · gate)`; attention sinks; biases on all
//! attention projections; sliding/full attention alternating per `layer_types`; YaRN rope.
//! Released checkpoints store the experts as MXFP4 `*_blocks`/`*_scales` (see `checkpoint.rs`).

use serde::Deserialize;
use serde_json::Value;

use super::config::{
    windows_from_layer_types, ArchConfig, Architecture, AttentionSpec, CommonFields, ExpertActivation, ExpertCheckpoint, MoeSpec, Rope,
    Routing,
};

#[derive(Debug, Clone, Deserialize)]
pub struct GptOssConfig {
    #[serde(flatten)]
    pub common: CommonFields,
    pub intermediate_size: i64,
    #[serde(alias = "num_experts")]
    pub num_local_experts: i64,
    pub num_experts_per_tok: i64,
    #[serde(default)]
    pub sliding_window: Option<i64>,
    #[serde(default)]
    pub layer_types: Option<Vec<String>>,
    #[serde(default = "default_alpha")]
    pub swiglu_alpha: f64,
    #[serde(default = "default_limit")]
    pub swiglu_limit: f64,
    #[serde(default = "yes")]
    pub attention_bias: bool,
}

fn default_alpha() -> f64 {
    1.702
}
fn default_limit() -> f64 {
    7.0
}
fn yes() -> bool {
    true
}

pub fn arch_config(c: GptOssConfig, raw: &Value) -> anyhow::Result<ArchConfig> {
    let layers = c.common.num_hidden_layers;
    let layer_types = c.layer_types.clone().unwrap_or_else(|| {
        (0..layers).map(|i| if (i + 1) % 2 == 1 { "sliding_attention" } else { "full_attention" }.to_string()).collect()
    });
    let mut rope = Rope::from_config(raw, 150_000.0)?;
    if raw.get("rope_parameters").is_none() && raw.get("rope_scaling").is_none() {
        // transformers' GptOssConfig default when the file names no scaling.
        rope.scaling = super::config::RopeScaling::Yarn {
            factor: 32.0,
            beta_fast: 32.0,
            beta_slow: 1.0,
            original_max_position_embeddings: 4096.0,
            truncate: false,
            attention_factor: None,
        };
    }
    let moe = MoeSpec {
        num_experts: c.num_local_experts,
        top_k: c.num_experts_per_tok,
        intermediate_size: c.intermediate_size,
        routing: Routing::TopKSoftmax,
        activation: ExpertActivation::GptOssClamped { alpha: c.swiglu_alpha, limit: c.swiglu_limit },
        router_name: "router",
        router_bias: true,
        shared_expert_intermediate_size: None,
        checkpoint: ExpertCheckpoint::Fused,
    };
    let base = c.common.arch_config(Architecture::GptOss, raw, rope, moe);
    Ok(ArchConfig {
        head_dim: c.common.head_dim.unwrap_or(64),
        norm_weight_in_fp32: true,
        attention: AttentionSpec { qkv_bias: c.attention_bias, o_bias: c.attention_bias, qk_norm: false, sinks: true },
        sliding_windows: windows_from_layer_types(&layer_types, c.sliding_window, layers)?,
        ..base
    })
}
