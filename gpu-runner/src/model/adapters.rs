//! Hooks a forward pass applies on top of the base weights: LoRA updates (attention projections and
//! fused expert weights, in PEFT's layouts) and activation fake-quantization of the expert inputs.
//!
//! The model code only names the weight it is about to use; what is applied is decided here, so the
//! architectures stay free of training concerns.

use std::collections::HashMap;

use tch::Tensor;

/// One LoRA pair in PEFT's layout.
///
/// * Linear `[out, in]` weights: `a` is `[r, in]`, `b` is `[out, r]`; the update is `scale · b · a`.
/// * Fused experts `[E, d1, d2]` (PEFT `ParamWrapper`): `a` is `[E·r, in]` with row `e·r + j`, `b` is
///   `[out, r·E]` with column `j·E + e` (rank-major), so expert `e` gets `scale · b_e · a_e`.
///
/// `expert_factor` (fused experts only, `[E]`): each expert's scale as a multiple of the adapters'
/// `scale`, where experts have ranks of their own (`rank_pattern`: rank `r_e` is scaled `alpha / r_e`).
/// It multiplies `b` inside the forward pass, so it scales `b`'s gradient as a per-expert scale would.
pub struct LoraPair {
    pub a: Tensor,
    pub b: Tensor,
    pub expert_factor: Option<Tensor>,
}

impl LoraPair {
    /// `b` `[out, r·E]` as `[E, out, r]` with each expert's factor applied, in `kind`.
    pub fn expert_b(&self, experts: i64, kind: tch::Kind) -> Tensor {
        let (out, rank) = (self.b.size()[0], self.b.size()[1] / experts);
        let b = self.b.to_kind(kind).view([out, rank, experts]).permute([2, 0, 1]);
        match &self.expert_factor {
            Some(factor) => b * factor.to_kind(kind).view([experts, 1, 1]),
            None => b,
        }
    }
}

/// Which expert projection an activation hook sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExpertInput {
    GateUp,
    Down,
}

/// Applied to the input activations of a layer's experts (NVFP4 W4A4 QAT and its calibration).
pub type ActivationHook<'a> = &'a dyn Fn(usize, ExpertInput, &Tensor) -> Tensor;

pub struct Adapters {
    /// `alpha / r`, or `alpha / sqrt(r)` with rsLoRA.
    pub scale: f64,
    /// Dropout on the adapters' inputs (linear targets only), active while `training`.
    pub dropout: f64,
    pub training: std::cell::Cell<bool>,
    /// Keyed by the base weight's name, e.g. `model.layers.0.self_attn.q_proj.weight`.
    pub linear: HashMap<String, LoraPair>,
    /// Keyed by the fused parameter's name, e.g. `model.layers.0.mlp.experts.gate_up_proj`.
    pub experts: HashMap<String, LoraPair>,
}

impl Adapters {
    /// `x · Wᵀ (+ bias)` plus the low-rank update computed on the activations, as PEFT's `lora.Linear`.
    pub fn linear(&self, name: &str, x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Tensor {
        let base = x.linear(weight, bias);
        let Some(pair) = self.linear.get(name) else { return base };
        let input = if self.dropout > 0.0 { x.dropout(self.dropout, self.training.get()) } else { x.shallow_clone() };
        // The adapters are fp32 masters; they compute in the activations' dtype (a no-op in fp32).
        let (a, b) = (pair.a.to_kind(x.kind()), pair.b.to_kind(x.kind()));
        base + input.linear(&a, None::<Tensor>).linear(&b, None::<Tensor>) * self.scale
    }

    /// The update of a fused expert parameter, shaped like it (`transposed`: stored `[E, in, out]`).
    pub fn expert_delta(&self, name: &str, experts: i64, transposed: bool) -> Option<Tensor> {
        let pair = self.experts.get(name)?;
        Some(expert_delta(pair, self.scale, experts, transposed))
    }
}

/// `[E, out, in]` (or `[E, in, out]` when `transposed`) from PEFT's expert-major `a` and rank-major `b`.
pub fn expert_delta(pair: &LoraPair, scale: f64, experts: i64, transposed: bool) -> Tensor {
    let (rank, in_features) = (pair.a.size()[0] / experts, pair.a.size()[1]);
    let a = pair.a.view([experts, rank, in_features]);
    let delta = pair.expert_b(experts, pair.b.kind()).bmm(&a) * scale;
    if transposed { delta.transpose(1, 2) } else { delta }
}

/// Linear with optional adapters: the common path of every adaptable projection.
pub fn adapted_linear(adapters: Option<&Adapters>, name: &str, x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Tensor {
    match adapters {
        Some(a) => a.linear(name, x, weight, bias),
        None => x.linear(weight, bias),
    }
}
