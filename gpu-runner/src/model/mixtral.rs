//! Mixtral (`MixtralForCausalLM`): router softmax over all experts → top-k → renormalise; SwiGLU
//! experts `w2(silu(w1 x) · w3 x)`. Parameter names are transformers' names.

use serde::{Deserialize, Serialize};
use tch::nn::{self, Init};
use tch::{Kind, Tensor};

use super::{apply_rope, rms_norm, rope_tables};
use crate::quant::mxfp4;

/// The fields of transformers' `MixtralConfig` this implementation reads (same names as config.json).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MixtralConfig {
    pub vocab_size: i64,
    pub hidden_size: i64,
    pub intermediate_size: i64,
    pub num_hidden_layers: i64,
    pub num_attention_heads: i64,
    pub num_key_value_heads: i64,
    pub num_local_experts: i64,
    pub num_experts_per_tok: i64,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub max_position_embeddings: i64,
    #[serde(default)]
    pub tie_word_embeddings: bool,
}

impl MixtralConfig {
    pub fn head_dim(&self) -> i64 {
        self.hidden_size / self.num_attention_heads
    }

    /// config.json as transformers writes it for this architecture.
    pub fn to_hf_json(&self, torch_dtype: &str) -> serde_json::Value {
        let mut value = serde_json::to_value(self).expect("config serializes");
        let extra = serde_json::json!({
            "architectures": ["MixtralForCausalLM"],
            "model_type": "mixtral",
            "hidden_act": "silu",
            "attention_dropout": 0.0,
            "router_aux_loss_coef": 0.02,
            "output_router_logits": false,
            "sliding_window": null,
            "bos_token_id": 1,
            "eos_token_id": 2,
            "pad_token_id": 0,
            "initializer_range": 0.02,
            "use_cache": true,
            "torch_dtype": torch_dtype,
        });
        if let (Some(map), serde_json::Value::Object(extra)) = (value.as_object_mut(), extra) {
            map.extend(extra);
        }
        value
    }
}

fn weight(p: &nn::Path, out_features: i64, in_features: i64) -> Tensor {
    p.var("weight", &[out_features, in_features], Init::Randn { mean: 0.0, stdev: 0.02 })
}

struct Attention {
    q_proj: Tensor,
    k_proj: Tensor,
    v_proj: Tensor,
    o_proj: Tensor,
    heads: i64,
    kv_heads: i64,
    head_dim: i64,
}

impl Attention {
    fn new(p: &nn::Path, c: &MixtralConfig) -> Self {
        let d = c.head_dim();
        Self {
            q_proj: weight(&(p / "q_proj"), c.num_attention_heads * d, c.hidden_size),
            k_proj: weight(&(p / "k_proj"), c.num_key_value_heads * d, c.hidden_size),
            v_proj: weight(&(p / "v_proj"), c.num_key_value_heads * d, c.hidden_size),
            o_proj: weight(&(p / "o_proj"), c.hidden_size, c.num_attention_heads * d),
            heads: c.num_attention_heads,
            kv_heads: c.num_key_value_heads,
            head_dim: d,
        }
    }

    fn forward(&self, x: &Tensor, cos: &Tensor, sin: &Tensor) -> Tensor {
        let (b, t, _) = x.size3().expect("[batch, seq, hidden]");
        let project = |w: &Tensor, heads: i64| x.matmul(&w.tr()).view([b, t, heads, self.head_dim]).transpose(1, 2);
        let q = apply_rope(&project(&self.q_proj, self.heads), cos, sin);
        let k = apply_rope(&project(&self.k_proj, self.kv_heads), cos, sin);
        let v = project(&self.v_proj, self.kv_heads);
        let gqa = self.heads != self.kv_heads;
        let out = Tensor::scaled_dot_product_attention(&q, &k, &v, None::<Tensor>, 0.0, true, None, gqa);
        out.transpose(1, 2).reshape([b, t, self.heads * self.head_dim]).matmul(&self.o_proj.tr())
    }
}

struct Expert {
    w1: Tensor,
    w2: Tensor,
    w3: Tensor,
}

/// `block_sparse_moe`: the router (`gate`) and the experts.
struct SparseMoe {
    gate: Tensor,
    experts: Vec<Expert>,
    top_k: i64,
}

impl SparseMoe {
    fn new(p: &nn::Path, c: &MixtralConfig) -> Self {
        // The router is not a trainable variable: SFT keeps it frozen (DESIGN.md §1).
        let mut gate = (p / "gate").zeros_no_train("weight", &[c.num_local_experts, c.hidden_size]);
        tch::no_grad(|| gate.f_normal_(0.0, 0.02).map(|_| ())).expect("router init");
        let experts = (0..c.num_local_experts)
            .map(|i| {
                let e = p / "experts" / i;
                Expert {
                    w1: weight(&(&e / "w1"), c.intermediate_size, c.hidden_size),
                    w2: weight(&(&e / "w2"), c.hidden_size, c.intermediate_size),
                    w3: weight(&(&e / "w3"), c.intermediate_size, c.hidden_size),
                }
            })
            .collect();
        Self { gate, experts, top_k: c.num_experts_per_tok }
    }

    /// Returns the output and the router logits `[tokens, experts]`. Tokens are grouped by expert
    /// (one sort), so work is proportional to tokens × k rather than tokens × experts.
    fn forward(&self, x: &Tensor, qat: bool) -> (Tensor, Tensor) {
        let shape = x.size();
        let hidden = *shape.last().expect("hidden dim");
        let tokens = x.reshape([-1, hidden]);
        let logits = tokens.matmul(&self.gate.tr());
        let probs = logits.softmax(-1, Kind::Float);
        let (top_weights, top_experts) = probs.topk(self.top_k, -1, true, true);
        let top_weights = (&top_weights / top_weights.sum_dim_intlist(-1, true, Kind::Float)).to_kind(x.kind());
        let flat_experts = top_experts.flatten(0, -1);
        let order = flat_experts.argsort(0, false);
        let token_of_slot = order.floor_divide_scalar(self.top_k);
        let weight_of_slot = top_weights.flatten(0, -1).index_select(0, &order);
        let counts = Vec::<i64>::try_from(flat_experts.bincount(None::<Tensor>, self.experts.len() as i64))
            .expect("expert counts");
        let mut out = tokens.zeros_like();
        let mut offset = 0;
        for (expert, &count) in self.experts.iter().zip(&counts) {
            if count == 0 {
                continue;
            }
            let idx = token_of_slot.narrow(0, offset, count);
            let gate_w = weight_of_slot.narrow(0, offset, count).unsqueeze(1);
            offset += count;
            let xe = tokens.index_select(0, &idx);
            let (w1, w2, w3) = if qat {
                (mxfp4::fake_quantize_ste(&expert.w1), mxfp4::fake_quantize_ste(&expert.w2), mxfp4::fake_quantize_ste(&expert.w3))
            } else {
                (expert.w1.shallow_clone(), expert.w2.shallow_clone(), expert.w3.shallow_clone())
            };
            let h = xe.matmul(&w1.tr()).silu() * xe.matmul(&w3.tr());
            out = out.index_add(0, &idx, &(h.matmul(&w2.tr()) * gate_w));
        }
        (out.reshape(shape.as_slice()), logits)
    }
}

struct DecoderLayer {
    input_layernorm: Tensor,
    self_attn: Attention,
    post_attention_layernorm: Tensor,
    block_sparse_moe: SparseMoe,
}

pub struct Mixtral {
    pub config: MixtralConfig,
    embed_tokens: Tensor,
    layers: Vec<DecoderLayer>,
    norm: Tensor,
    lm_head: Tensor,
    /// When set, expert weights are MXFP4 fake-quantized in the forward pass (QAT).
    pub qat: bool,
}

/// Output of a forward pass.
pub struct ForwardOutput {
    pub logits: Tensor,
    /// Per MoE layer, `[tokens, experts]`; for the aux loss and the expert-usage monitor.
    pub router_logits: Vec<Tensor>,
}

impl Mixtral {
    /// Creates the parameters under `root` with transformers' names and initialisation.
    pub fn new(root: &nn::Path, config: MixtralConfig) -> Self {
        let c = &config;
        let model = root / "model";
        let ones = |p: nn::Path| p.var("weight", &[c.hidden_size], Init::Const(1.0));
        let layers = (0..c.num_hidden_layers)
            .map(|i| {
                let l = &model / "layers" / i;
                DecoderLayer {
                    input_layernorm: ones(&l / "input_layernorm"),
                    self_attn: Attention::new(&(&l / "self_attn"), c),
                    post_attention_layernorm: ones(&l / "post_attention_layernorm"),
                    block_sparse_moe: SparseMoe::new(&(&l / "block_sparse_moe"), c),
                }
            })
            .collect();
        Self {
            embed_tokens: weight(&(&model / "embed_tokens"), c.vocab_size, c.hidden_size),
            layers,
            norm: ones(&model / "norm"),
            lm_head: weight(&(root / "lm_head"), c.vocab_size, c.hidden_size),
            config,
            qat: false,
        }
    }

    /// Loads `config.json` and `model.safetensors` from a Hugging Face model directory.
    pub fn load_dir(dir: &std::path::Path, device: tch::Device) -> anyhow::Result<(nn::VarStore, Self)> {
        use anyhow::Context;
        let config_path = dir.join("config.json");
        let config: MixtralConfig = serde_json::from_slice(&std::fs::read(&config_path).with_context(|| format!("reading {}", config_path.display()))?)
            .with_context(|| format!("{} is not a Mixtral config", config_path.display()))?;
        let mut vars = nn::VarStore::new(device);
        let model = Self::new(&vars.root(), config);
        vars.load(dir.join("model.safetensors")).with_context(|| format!("loading weights from {}", dir.display()))?;
        Ok((vars, model))
    }

    pub fn forward(&self, input_ids: &Tensor) -> ForwardOutput {
        let c = &self.config;
        let seq = input_ids.size()[1];
        let (cos, sin) = rope_tables(seq, c.head_dim(), c.rope_theta, input_ids.device());
        let mut h = Tensor::embedding(&self.embed_tokens, input_ids, -1, false, false);
        let mut router_logits = Vec::with_capacity(self.layers.len());
        for layer in &self.layers {
            let attn = layer.self_attn.forward(&rms_norm(&h, &layer.input_layernorm, c.rms_norm_eps), &cos, &sin);
            h = h + attn;
            let normed = rms_norm(&h, &layer.post_attention_layernorm, c.rms_norm_eps);
            let (moe, logits) = layer.block_sparse_moe.forward(&normed, self.qat);
            h = h + moe;
            router_logits.push(logits);
        }
        let logits = rms_norm(&h, &self.norm, c.rms_norm_eps).matmul(&self.lm_head.tr());
        ForwardOutput { logits, router_logits }
    }
}
