//! MoE architectures. One file per architecture; parameter paths equal the Hugging Face names so a
//! checkpoint loads and saves by name lookup.

pub mod mixtral;
pub mod tiny;

use tch::{Kind, Tensor};

/// RMSNorm computed in fp32, as transformers does.
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Tensor {
    let kind = x.kind();
    let x32 = x.to_kind(Kind::Float);
    let variance = x32.pow_tensor_scalar(2).mean_dim(-1, true, Kind::Float);
    (x32 * (variance + eps).rsqrt()).to_kind(kind) * weight
}

/// `(cos, sin)` tables of shape `[seq, head_dim]` for rotary embeddings (the rotate-half layout).
pub fn rope_tables(seq: i64, head_dim: i64, theta: f64, device: tch::Device) -> (Tensor, Tensor) {
    let exponents = Tensor::arange_start_step(0, head_dim, 2, (Kind::Float, device)) / head_dim as f64;
    let inv_freq = Tensor::from(theta).to_device(device).pow(&exponents).reciprocal();
    let positions = Tensor::arange(seq, (Kind::Float, device));
    let freqs = positions.outer(&inv_freq);
    let emb = Tensor::cat(&[&freqs, &freqs], -1);
    (emb.cos(), emb.sin())
}

/// Applies rotary embeddings to `x` of shape `[batch, heads, seq, head_dim]`.
pub fn apply_rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Tensor {
    let half = x.size()[3] / 2;
    let x1 = x.narrow(-1, 0, half);
    let x2 = x.narrow(-1, half, half);
    let rotated = Tensor::cat(&[&(-x2), &x1], -1);
    x * cos + rotated * sin
}
