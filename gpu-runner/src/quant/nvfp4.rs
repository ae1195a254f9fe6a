//! NVFP4 fake quantization for QAT, computed step for step as modelopt computes its export (and as
//! `quant::fp4::nvfp4_encode` does in pure Rust), so the exported checkpoint holds exactly the values
//! the model was trained against: a per-tensor scale `amax / (6 · 448)`, per 16 elements an FP8-E4M3
//! scale, E2M1 elements rounded to nearest even.

use tch::{Kind, Tensor};

use super::mxfp4::round_to_e2m1;

pub const BLOCK: i64 = 16;

/// Quantize-dequantize along the last dimension (a multiple of 16). `global_amax`: the amax the
/// per-tensor scale comes from; `None` = this tensor's own amax (weights; activations pass their
/// calibrated amax).
pub fn quantize_dequantize(x: &Tensor, global_amax: Option<&Tensor>) -> Tensor {
    let x32 = x.to_kind(Kind::Float);
    let amax = match global_amax {
        Some(a) => a.to_kind(Kind::Float),
        None => x32.abs().amax([] as [i64; 0], false),
    };
    blocks_quantize_dequantize(x, &x32.reshape([1, -1, BLOCK]), &amax.reshape([1, 1, 1]))
}

/// [`quantize_dequantize`] of every `w[e]` of `w` `[E, …]` with its own per-tensor scale (NVFP4's
/// per-tensor scale is per Linear, i.e. per expert), in one pass over all of them: the same values,
/// bit for bit, as quantizing each expert on its own.
pub fn quantize_dequantize_per_expert(w: &Tensor) -> Tensor {
    let experts = w.size()[0];
    let w32 = w.to_kind(Kind::Float);
    let amax = w32.abs().reshape([experts, -1]).amax([1].as_slice(), false);
    blocks_quantize_dequantize(w, &w32.reshape([experts, -1, BLOCK]), &amax.reshape([experts, 1, 1]))
}

/// `blocks` `[groups, blocks, 16]` (fp32) of `x`, each group scaled from its `amax` `[groups, 1, 1]`;
/// returns the dequantised values in `x`'s shape and kind.
fn blocks_quantize_dequantize(x: &Tensor, blocks: &Tensor, amax: &Tensor) -> Tensor {
    let shape = x.size();
    let cols = *shape.last().expect("tensor has a last dimension");
    assert_eq!(cols % BLOCK, 0, "NVFP4 needs the input dimension to be a multiple of {BLOCK}, got {cols}");
    let global = amax / (6.0 * 448.0);
    let block_amax = blocks.abs().amax([-1].as_slice(), true);
    let scale = &block_amax / (&global * 6.0);
    let scale = scale.where_self(&scale.ne(0.0), &scale.ones_like());
    // The FP8 round trip is the quantization of the scale itself. The upper clamp matters for
    // activations past their calibrated amax (modelopt's static path clamps the same way); for weights
    // it changes nothing, as their block scales never exceed 448 by more than rounding.
    let scale = scale.clamp(2f64.powi(-9), 448.0).to_kind(Kind::Float8e4m3fn).to_kind(Kind::Float);
    let factor = scale * &global;
    let dequantized = round_to_e2m1(&(blocks / &factor)) * factor;
    dequantized.reshape(shape.as_slice()).to_kind(x.kind())
}

/// Straight-through estimator: forward sees NVFP4 values, backward the identity.
pub fn fake_quantize_ste(x: &Tensor, global_amax: Option<&Tensor>) -> Tensor {
    x + (quantize_dequantize(x, global_amax) - x).detach()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::fp4;

    #[test]
    fn matches_the_pure_rust_encoder_bit_for_bit() {
        let w = Tensor::randn([8, 64], (Kind::Float, tch::Device::Cpu)) * 0.05;
        let values = Vec::<f32>::try_from(w.flatten(0, -1)).unwrap();
        let encoded = fp4::nvfp4_encode(&values, 64, fp4::nvfp4_global_scale(&values)).unwrap();
        let expected = fp4::nvfp4_decode(&encoded).unwrap();
        let got = Vec::<f32>::try_from(quantize_dequantize(&w, None).flatten(0, -1)).unwrap();
        assert_eq!(got, expected);
    }

    #[test]
    fn all_experts_at_once_equal_each_expert_on_its_own_bit_for_bit() {
        tch::manual_seed(4);
        let scales = Tensor::from_slice(&[0.01f32, 0.3, 2.0, 40.0]).reshape([4, 1, 1]);
        let w = Tensor::randn([4, 8, 64], (Kind::Float, tch::Device::Cpu)) * scales;
        let each: Vec<Tensor> = (0..4).map(|e| quantize_dequantize(&w.get(e), None)).collect();
        let all = quantize_dequantize_per_expert(&w);
        assert!(all.equal(&Tensor::stack(&each, 0)));
        // The experts' scales differ: one scale for the whole tensor would not give these values.
        assert!(!all.equal(&quantize_dequantize(&w, None)));
    }
}
