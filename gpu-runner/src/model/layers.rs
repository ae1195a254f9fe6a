//! The pieces every architecture shares: RMSNorm, rotary tables (default and YaRN), attention (GQA,
//! optional biases, q/k norm, sinks, sliding window) and the dense SwiGLU MLP.

use tch::{Kind, Tensor};

use super::adapters::{adapted_linear, Adapters};
use super::config::{ArchConfig, Rope, RopeScaling};
use super::params::{Params, Role};

/// RMSNorm computed in fp32, as transformers does. `weight_in_fp32`: multiply by the weight before
/// casting back (gpt-oss) instead of after (Llama family).
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64, weight_in_fp32: bool) -> Tensor {
    let kind = x.kind();
    let x32 = x.to_kind(Kind::Float);
    let variance = x32.pow_tensor_scalar(2).mean_dim(-1, true, Kind::Float);
    let normed = x32 * (variance + eps).rsqrt();
    if weight_in_fp32 {
        (weight * normed).to_kind(kind)
    } else {
        weight * normed.to_kind(kind)
    }
}

/// Inverse frequencies and the attention scaling of transformers' rope initialisers.
fn inv_freq(rope: &Rope, dim: i64, device: tch::Device) -> (Tensor, f64) {
    let exponents = Tensor::arange_start_step(0, dim, 2, (Kind::Float, device)) / dim as f64;
    // Made on the device (a host tensor copied there would wait for the device's queue).
    let pos_freqs = Tensor::full([], rope.theta, (Kind::Double, device)).pow(&exponents);
    match rope.scaling {
        RopeScaling::Default => (pos_freqs.reciprocal(), 1.0),
        RopeScaling::Yarn { factor, beta_fast, beta_slow, original_max_position_embeddings, truncate, attention_factor } => {
            let correction_dim = |rotations: f64| {
                (dim as f64 * (original_max_position_embeddings / (rotations * 2.0 * std::f64::consts::PI)).ln()) / (2.0 * rope.theta.ln())
            };
            let (mut low, mut high) = (correction_dim(beta_fast), correction_dim(beta_slow));
            if truncate {
                (low, high) = (low.floor(), high.ceil());
            }
            let (low, mut high) = (low.max(0.0), high.min(dim as f64 - 1.0));
            if low == high {
                high += 0.001; // as transformers: avoids a division by zero
            }
            let ramp = ((Tensor::arange(dim / 2, (Kind::Float, device)) - low) / (high - low)).clamp(0.0, 1.0);
            let extrapolation_factor = 1.0 - ramp;
            let extrapolation = pos_freqs.reciprocal();
            let interpolation = (&pos_freqs * factor).reciprocal();
            let inv = interpolation * (1.0 - &extrapolation_factor) + extrapolation * extrapolation_factor;
            let scaling = attention_factor.unwrap_or(if factor <= 1.0 { 1.0 } else { 0.1 * factor.ln() + 1.0 });
            (inv, scaling)
        }
    }
}

/// `(cos, sin)` of shape `[seq, head_dim]` (rotate-half layout), in `kind`.
pub fn rope_tables(rope: &Rope, head_dim: i64, seq: i64, device: tch::Device, kind: Kind) -> (Tensor, Tensor) {
    let (inv, scaling) = inv_freq(rope, head_dim, device);
    let freqs = Tensor::arange(seq, (Kind::Float, device)).outer(&inv);
    let emb = Tensor::cat(&[&freqs, &freqs], -1);
    ((emb.cos() * scaling).to_kind(kind), (emb.sin() * scaling).to_kind(kind))
}

/// Applies rotary embeddings to `x` of shape `[batch, heads, seq, head_dim]`.
pub fn apply_rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Tensor {
    let half = x.size()[3] / 2;
    let x1 = x.narrow(-1, 0, half);
    let x2 = x.narrow(-1, half, half);
    let rotated = Tensor::cat(&[&(-x2), &x1], -1);
    x * cos + rotated * sin
}

/// `[seq, seq]` boolean mask, true where query i may attend to key j: `j ≤ i` and, with a window W,
/// `i − j < W` (transformers' sliding-window overlay).
pub fn causal_mask(seq: i64, window: Option<i64>, device: tch::Device) -> Tensor {
    let q = Tensor::arange(seq, (Kind::Int64, device)).unsqueeze(1);
    let k = Tensor::arange(seq, (Kind::Int64, device)).unsqueeze(0);
    let causal = k.le_tensor(&q);
    match window {
        Some(w) => causal.logical_and(&(&q - &k).lt(w)),
        None => causal,
    }
}

pub fn linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Tensor {
    x.linear(weight, bias)
}

pub struct Attention {
    q_proj: Tensor,
    k_proj: Tensor,
    v_proj: Tensor,
    o_proj: Tensor,
    q_bias: Option<Tensor>,
    k_bias: Option<Tensor>,
    v_bias: Option<Tensor>,
    o_bias: Option<Tensor>,
    q_norm: Option<Tensor>,
    k_norm: Option<Tensor>,
    sinks: Option<Tensor>,
    heads: i64,
    kv_heads: i64,
    head_dim: i64,
    window: Option<i64>,
    eps: f64,
    /// Weight names of q, k, v, o (what LoRA adapters are keyed by).
    names: [String; 4],
}

impl Attention {
    pub fn new(p: &Params, c: &ArchConfig, layer: usize) -> Self {
        let (h, d, a) = (c.hidden_size, c.head_dim, &c.attention);
        let q_out = c.num_attention_heads * d;
        let kv_out = c.num_key_value_heads * d;
        let bias = |on: bool, name: &str, size: i64| on.then(|| p.bias(name, size, Role::Attention));
        Self {
            q_proj: p.linear("q_proj", q_out, h, Role::Attention),
            q_bias: bias(a.qkv_bias, "q_proj", q_out),
            k_proj: p.linear("k_proj", kv_out, h, Role::Attention),
            k_bias: bias(a.qkv_bias, "k_proj", kv_out),
            v_proj: p.linear("v_proj", kv_out, h, Role::Attention),
            v_bias: bias(a.qkv_bias, "v_proj", kv_out),
            o_proj: p.linear("o_proj", h, q_out, Role::Attention),
            o_bias: bias(a.o_bias, "o_proj", h),
            q_norm: a.qk_norm.then(|| p.norm("q_norm", d)),
            k_norm: a.qk_norm.then(|| p.norm("k_norm", d)),
            sinks: a.sinks.then(|| p.param("sinks", &[c.num_attention_heads], Role::Attention, super::params::normal())),
            heads: c.num_attention_heads,
            kv_heads: c.num_key_value_heads,
            head_dim: d,
            window: c.sliding_windows[layer],
            eps: c.rms_norm_eps,
            names: ["q_proj", "k_proj", "v_proj", "o_proj"].map(|n| p.sub(n).name("weight")),
        }
    }

    pub fn forward(&self, x: &Tensor, cos: &Tensor, sin: &Tensor, adapters: Option<&Adapters>) -> Tensor {
        let (b, t, _) = x.size3().expect("[batch, seq, hidden]");
        let [q_name, k_name, v_name, o_name] = &self.names;
        let project = |name: &str, w: &Tensor, bias: &Option<Tensor>, heads: i64, norm: &Option<Tensor>| {
            let y = adapted_linear(adapters, name, x, w, bias.as_ref()).view([b, t, heads, self.head_dim]);
            let y = match norm {
                Some(weight) => rms_norm(&y, weight, self.eps, false),
                None => y,
            };
            y.transpose(1, 2)
        };
        let q = apply_rope(&project(q_name, &self.q_proj, &self.q_bias, self.heads, &self.q_norm), cos, sin);
        let k = apply_rope(&project(k_name, &self.k_proj, &self.k_bias, self.kv_heads, &self.k_norm), cos, sin);
        let v = project(v_name, &self.v_proj, &self.v_bias, self.kv_heads, &None);
        let out = match &self.sinks {
            Some(sinks) => self.attention_with_sinks(&q, &k, &v, sinks),
            None => {
                let gqa = self.heads != self.kv_heads;
                match self.window {
                    None => Tensor::scaled_dot_product_attention(&q, &k, &v, None::<Tensor>, 0.0, true, None, gqa),
                    Some(w) => {
                        let mask = causal_mask(t, Some(w), x.device());
                        Tensor::scaled_dot_product_attention(&q, &k, &v, Some(mask), 0.0, false, None, gqa)
                    }
                }
            }
        };
        let merged = out.transpose(1, 2).reshape([b, t, self.heads * self.head_dim]);
        adapted_linear(adapters, o_name, &merged, &self.o_proj, self.o_bias.as_ref())
    }

    fn attention_with_sinks(&self, q: &Tensor, k: &Tensor, v: &Tensor, sinks: &Tensor) -> Tensor {
        let groups = self.heads / self.kv_heads;
        let repeat = |x: &Tensor| x.repeat_interleave_self_int(groups, 1, None::<i64>);
        sink_attention(q, &repeat(k), &repeat(v), sinks, self.window)
    }
}

/// Query dimensions added for the sink: one holds it, the rest keep the head dimension a multiple of 8
/// (what the fused attention kernels need).
const SINK_DIMS: i64 = 8;

/// Attention with sinks (gpt-oss): each head's learned sink logit joins the softmax as one more key whose
/// value is zero, so a head can attend "nowhere". `q`, `k`, `v`: `[batch, heads, seq, dim]` (keys and
/// values already repeated to every query head). Runs through `scaled_dot_product_attention`, so the
/// fused kernels never hold the `[heads, seq, seq]` probabilities: the sink is a key at position 0
/// that every query may attend to, found by one extra query dimension holding `sink / scale` where the
/// sink key holds 1 and the real keys 0 (their scores are unchanged).
pub fn sink_attention(q: &Tensor, k: &Tensor, v: &Tensor, sinks: &Tensor, window: Option<i64>) -> Tensor {
    let (b, heads, t, d) = q.size4().expect("[batch, heads, seq, dim]");
    let (device, kind) = (q.device(), q.kind());
    let scale = (d as f64).powf(-0.5);
    let sink_query = (sinks.to_kind(Kind::Float) / scale).to_kind(kind).reshape([1, heads, 1, 1]).expand([b, heads, t, 1], false);
    let pad = |rows: i64, width: i64| Tensor::zeros([b, heads, rows, width], (kind, device));
    let q = Tensor::cat(&[q, &sink_query, &pad(t, SINK_DIMS - 1)], -1);
    let sink_key = pad(1, d + SINK_DIMS);
    let _ = sink_key.narrow(-1, d, 1).fill_(1.0);
    let k = Tensor::cat(&[&sink_key, &Tensor::cat(&[k, &pad(t, SINK_DIMS)], -1)], 2);
    let v = Tensor::cat(&[&pad(1, v.size()[3]), v], 2);
    let mask = Tensor::cat(&[&Tensor::ones([t, 1], (Kind::Bool, device)), &causal_mask(t, window, device)], 1);
    Tensor::scaled_dot_product_attention(&q, &k, &v, Some(mask), 0.0, false, Some(scale), false)
}

/// The straightforward form of [`sink_attention`], as transformers' eager gpt-oss attention computes
/// it: scores, the sink logit concatenated as one more column, softmax, the sink column dropped.
#[cfg(test)]
fn sink_attention_eager(q: &Tensor, k: &Tensor, v: &Tensor, sinks: &Tensor, window: Option<i64>) -> Tensor {
    let (b, heads, t, d) = q.size4().expect("[batch, heads, seq, dim]");
    let scale = (d as f64).powf(-0.5);
    let mask = causal_mask(t, window, q.device());
    let scores = (q.matmul(&k.transpose(2, 3)) * scale).masked_fill(&mask.logical_not(), f64::NEG_INFINITY);
    let sink = sinks.to_kind(scores.kind()).reshape([1, -1, 1, 1]).expand([b, heads, t, 1], false);
    let combined = Tensor::cat(&[&scores, &sink], -1);
    let combined = &combined - combined.amax(-1, true);
    let probs = combined.softmax(-1, combined.kind()).narrow(-1, 0, t);
    probs.to_kind(v.kind()).matmul(v)
}

/// Dense SwiGLU MLP `down(silu(gate x) · up x)` (Qwen dense layers and the shared expert).
pub struct DenseMlp {
    gate_proj: Tensor,
    up_proj: Tensor,
    down_proj: Tensor,
}

impl DenseMlp {
    pub fn new(p: &Params, hidden: i64, intermediate: i64, role: Role) -> Self {
        Self {
            gate_proj: p.linear("gate_proj", intermediate, hidden, role),
            up_proj: p.linear("up_proj", intermediate, hidden, role),
            down_proj: p.linear("down_proj", hidden, intermediate, role),
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        (x.linear(&self.gate_proj, None::<Tensor>).silu() * x.linear(&self.up_proj, None::<Tensor>)).linear(&self.down_proj, None::<Tensor>)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn sink_attention_through_sdpa_equals_the_eager_form_with_gradients() {
        for window in [None, Some(3)] {
            tch::manual_seed(3);
            let leaf = |shape: &[i64]| (Tensor::randn(shape, (Kind::Float, Device::Cpu)) * 0.7).set_requires_grad(true);
            let (q, k, v, sinks) = (leaf(&[2, 4, 9, 16]), leaf(&[2, 4, 9, 16]), leaf(&[2, 4, 9, 16]), leaf(&[4]));
            let weights = Tensor::randn([2, 4, 9, 16], (Kind::Float, Device::Cpu));
            let run = |f: fn(&Tensor, &Tensor, &Tensor, &Tensor, Option<i64>) -> Tensor| {
                let out = f(&q, &k, &v, &sinks, window);
                (&out * &weights).sum(Kind::Float).backward();
                let grads: Vec<Tensor> = [&q, &k, &v, &sinks].iter().map(|t| t.grad().copy()).collect();
                for t in [&q, &k, &v, &sinks] {
                    let _ = t.grad().zero_();
                }
                (out.detach(), grads)
            };
            let (want, want_grads) = run(sink_attention_eager);
            let (got, got_grads) = run(sink_attention);
            let diff = |a: &Tensor, b: &Tensor| (a - b).abs().max().double_value(&[]);
            assert!(diff(&want, &got) < 1e-5, "window {window:?}: outputs differ by {}", diff(&want, &got));
            for (name, (a, b)) in ["q", "k", "v", "sinks"].iter().zip(want_grads.iter().zip(&got_grads)) {
                assert!(diff(a, b) < 1e-5, "window {window:?}: gradient of {name} differs by {}", diff(a, b));
            }
        }
    }
}
