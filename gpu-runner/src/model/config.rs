//! `config.json` → one normalised description of the network ([`ArchConfig`]). Each architecture file
//! parses its own transformers config and says how it differs; the shared layers read only this.

use anyhow::Context;
use serde::Deserialize;
use serde_json::Value;

/// The architectures the runner implements, by their transformers class name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    Mixtral,
    Qwen2Moe,
    Qwen3Moe,
    GptOss,
}

impl Architecture {
    pub const ALL: [Architecture; 4] = [Self::Mixtral, Self::Qwen2Moe, Self::Qwen3Moe, Self::GptOss];

    pub fn class_name(self) -> &'static str {
        match self {
            Self::Mixtral => "MixtralForCausalLM",
            Self::Qwen2Moe => "Qwen2MoeForCausalLM",
            Self::Qwen3Moe => "Qwen3MoeForCausalLM",
            Self::GptOss => "GptOssForCausalLM",
        }
    }

    pub fn model_type(self) -> &'static str {
        match self {
            Self::Mixtral => "mixtral",
            Self::Qwen2Moe => "qwen2_moe",
            Self::Qwen3Moe => "qwen3_moe",
            Self::GptOss => "gpt_oss",
        }
    }

    /// Reads `architectures[0]`, falling back to `model_type`.
    pub(super) fn detect(config: &Value) -> anyhow::Result<Self> {
        let class = config.get("architectures").and_then(|a| a.get(0)).and_then(Value::as_str);
        let model_type = config.get("model_type").and_then(Value::as_str);
        Self::ALL
            .into_iter()
            .find(|a| class == Some(a.class_name()) || (class.is_none() && model_type == Some(a.model_type())))
            .ok_or_else(|| {
                let supported: Vec<&str> = Self::ALL.iter().map(|a| a.class_name()).collect();
                let found = class.or(model_type).unwrap_or("nothing (no `architectures` or `model_type`)");
                anyhow::anyhow!("unsupported architecture {found}; supported: {}", supported.join(", "))
            })
    }
}

/// Rotary embedding variants.
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    Default,
    /// YaRN as transformers' `_compute_yarn_parameters` computes it.
    Yarn { factor: f64, beta_fast: f64, beta_slow: f64, original_max_position_embeddings: f64, truncate: bool, attention_factor: Option<f64> },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Rope {
    pub theta: f64,
    pub scaling: RopeScaling,
}

impl Rope {
    /// Reads `rope_parameters` (transformers 5) or `rope_theta` + `rope_scaling` (older configs).
    pub fn from_config(config: &Value, default_theta: f64) -> anyhow::Result<Self> {
        let params = config.get("rope_parameters").or_else(|| config.get("rope_scaling")).filter(|v| !v.is_null());
        let number = |key: &str| params.and_then(|p| p.get(key)).and_then(Value::as_f64);
        let theta = number("rope_theta").or_else(|| config.get("rope_theta").and_then(Value::as_f64)).unwrap_or(default_theta);
        let kind = params.and_then(|p| p.get("rope_type").or_else(|| p.get("type"))).and_then(Value::as_str).unwrap_or("default");
        let scaling = match kind {
            "default" => RopeScaling::Default,
            "yarn" => RopeScaling::Yarn {
                factor: number("factor").context("rope yarn: missing `factor`")?,
                beta_fast: number("beta_fast").unwrap_or(32.0),
                beta_slow: number("beta_slow").unwrap_or(1.0),
                original_max_position_embeddings: number("original_max_position_embeddings")
                    .context("rope yarn: missing `original_max_position_embeddings`")?,
                truncate: params.and_then(|p| p.get("truncate")).and_then(Value::as_bool).unwrap_or(true),
                attention_factor: number("attention_factor"),
            },
            other => anyhow::bail!("unsupported rope type {other:?} (supported: default, yarn)"),
        };
        Ok(Self { theta, scaling })
    }
}

/// How a router turns logits into the top-k experts and their weights.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Routing {
    /// Softmax over all experts, top-k, optionally renormalised (Mixtral always, Qwen when `norm_topk_prob`).
    SoftmaxTopK { renormalize: bool },
    /// Top-k on the logits, softmax over those k (gpt-oss).
    TopKSoftmax,
}

/// The experts' feed-forward function.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ExpertActivation {
    /// `down(silu(gate x) · up x)`; `gate_up_proj` is `[E, 2I, H]` with gate then up.
    SwiGlu,
    /// gpt-oss: `gate_up_proj` is `[E, H, 2I]` with gate/up interleaved, biases, clamped SwiGLU.
    GptOssClamped { alpha: f64, limit: f64 },
}

/// The MoE block of every sparse layer.
#[derive(Debug, Clone, PartialEq)]
pub struct MoeSpec {
    pub num_experts: i64,
    pub top_k: i64,
    pub intermediate_size: i64,
    pub routing: Routing,
    pub activation: ExpertActivation,
    /// Name of the router module under `mlp.` (`gate` or `router`) and whether it has a bias.
    pub router_name: &'static str,
    pub router_bias: bool,
    /// Qwen2-MoE: a dense SwiGLU expert every token uses, scaled by `sigmoid(shared_expert_gate x)`.
    pub shared_expert_intermediate_size: Option<i64>,
    /// How checkpoints on disk store the experts.
    pub checkpoint: ExpertCheckpoint,
}

/// The on-disk layout of expert weights. transformers 5 fuses the experts into 3-D parameters in memory
/// (the names the runner uses) but still saves Mixtral and Qwen checkpoints one expert at a time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ExpertCheckpoint {
    /// `model.layers.{l}.{module}.experts.{e}.{gate|up|down}.weight`, each `[out, in]`; the module's
    /// other tensors (the router) are also under `{module}` instead of `mlp`.
    PerExpert { module: &'static str, gate: &'static str, up: &'static str, down: &'static str },
    /// The fused names themselves; gpt-oss may store them as MXFP4 `{name}_blocks` + `{name}_scales`.
    Fused,
}

impl ExpertCheckpoint {
    /// The on-disk name of a parameter outside the experts (`.mlp.` becomes `.{module}.`).
    pub fn disk_name(&self, name: &str) -> String {
        match self {
            Self::PerExpert { module, .. } if *module != "mlp" => name.replace(".mlp.", &format!(".{module}.")),
            _ => name.to_string(),
        }
    }
}

/// The attention block.
#[derive(Debug, Clone, PartialEq)]
pub struct AttentionSpec {
    pub qkv_bias: bool,
    pub o_bias: bool,
    /// Qwen3: RMSNorm over the head dimension of q and k before rope.
    pub qk_norm: bool,
    /// gpt-oss: a learned per-head logit that joins the softmax and is then dropped.
    pub sinks: bool,
}

/// Everything the shared layers need, whatever the architecture.
#[derive(Debug, Clone, PartialEq)]
pub struct ArchConfig {
    pub architecture: Architecture,
    pub vocab_size: i64,
    pub hidden_size: i64,
    pub num_hidden_layers: i64,
    pub num_attention_heads: i64,
    pub num_key_value_heads: i64,
    pub head_dim: i64,
    pub rms_norm_eps: f64,
    /// gpt-oss multiplies the RMSNorm weight in fp32 before casting back; the others cast first.
    pub norm_weight_in_fp32: bool,
    pub rope: Rope,
    pub tie_word_embeddings: bool,
    pub attention: AttentionSpec,
    /// Per layer: `Some(window)` for sliding-window attention, `None` for full causal attention.
    pub sliding_windows: Vec<Option<i64>>,
    /// Per layer: whether its MLP is the MoE block (else a dense SwiGLU of `dense_intermediate_size`).
    pub sparse_layers: Vec<bool>,
    pub dense_intermediate_size: i64,
    pub moe: MoeSpec,
    pub eos_token_ids: Vec<i64>,
    /// config.json as read, written back unchanged with exported checkpoints.
    pub raw: Value,
}

impl ArchConfig {
    pub(super) fn validate(&self) -> anyhow::Result<()> {
        let c = self;
        anyhow::ensure!(c.num_attention_heads % c.num_key_value_heads == 0, "num_attention_heads must be a multiple of num_key_value_heads");
        anyhow::ensure!(c.head_dim % 2 == 0, "head_dim must be even for rotary embeddings");
        anyhow::ensure!(c.moe.top_k >= 1 && c.moe.top_k <= c.moe.num_experts, "num_experts_per_tok must be between 1 and the number of experts");
        anyhow::ensure!(c.sliding_windows.len() == c.num_hidden_layers as usize, "layer_types must have one entry per layer");
        Ok(())
    }

    pub fn moe_layers(&self) -> impl Iterator<Item = usize> + '_ {
        self.sparse_layers.iter().enumerate().filter(|(_, sparse)| **sparse).map(|(i, _)| i)
    }
}

/// Per-layer windows from transformers' `layer_types` (`sliding_attention` / `full_attention`).
pub fn windows_from_layer_types(layer_types: &[String], window: Option<i64>, layers: i64) -> anyhow::Result<Vec<Option<i64>>> {
    anyhow::ensure!(layer_types.len() == layers as usize, "layer_types has {} entries for {layers} layers", layer_types.len());
    layer_types
        .iter()
        .map(|t| match t.as_str() {
            "full_attention" => Ok(None),
            "sliding_attention" => window.filter(|w| *w > 0).map(Some).context("a sliding_attention layer needs `sliding_window`"),
            other => anyhow::bail!("unsupported layer type {other:?}"),
        })
        .collect()
}

/// Qwen's sparse-layer rule: MoE unless listed in `mlp_only_layers`, every `decoder_sparse_step` layers.
pub fn qwen_sparse_layers(layers: i64, num_experts: i64, decoder_sparse_step: i64, mlp_only_layers: &[i64]) -> Vec<bool> {
    (0..layers)
        .map(|i| !mlp_only_layers.contains(&i) && num_experts > 0 && decoder_sparse_step > 0 && (i + 1) % decoder_sparse_step == 0)
        .collect()
}

/// Fields several configs share, with transformers' defaults.
#[derive(Debug, Clone, Deserialize)]
pub struct CommonFields {
    pub vocab_size: i64,
    pub hidden_size: i64,
    pub num_hidden_layers: i64,
    pub num_attention_heads: i64,
    pub num_key_value_heads: Option<i64>,
    pub head_dim: Option<i64>,
    pub rms_norm_eps: f64,
    #[serde(default)]
    pub tie_word_embeddings: bool,
}

impl CommonFields {
    /// The configuration these fields give with the Llama-style defaults (no attention biases or extras,
    /// full attention, every layer MoE); architecture files override what differs.
    pub fn arch_config(&self, architecture: Architecture, raw: &Value, rope: Rope, moe: MoeSpec) -> ArchConfig {
        let layers = self.num_hidden_layers as usize;
        ArchConfig {
            architecture,
            vocab_size: self.vocab_size,
            hidden_size: self.hidden_size,
            num_hidden_layers: self.num_hidden_layers,
            num_attention_heads: self.num_attention_heads,
            num_key_value_heads: self.kv_heads(),
            head_dim: self.head_dim(),
            rms_norm_eps: self.rms_norm_eps,
            norm_weight_in_fp32: false,
            rope,
            tie_word_embeddings: self.tie_word_embeddings,
            attention: AttentionSpec { qkv_bias: false, o_bias: false, qk_norm: false, sinks: false },
            sliding_windows: vec![None; layers],
            sparse_layers: vec![true; layers],
            dense_intermediate_size: moe.intermediate_size,
            moe,
            eos_token_ids: Vec::new(),
            raw: raw.clone(),
        }
    }

    pub fn kv_heads(&self) -> i64 {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    pub fn head_dim(&self) -> i64 {
        self.head_dim.unwrap_or(self.hidden_size / self.num_attention_heads)
    }
}
