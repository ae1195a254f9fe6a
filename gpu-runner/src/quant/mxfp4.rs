//! MXFP4 (OCP microscaling): E2M1 elements sharing one power-of-two (E8M0) scale per 32 consecutive
//! elements along the input dimension.

use tch::{Kind, Tensor};

pub use super::fp4::Mxfp4ScaleRule;

pub const BLOCK: i64 = 32;
/// Largest E2M1 magnitude, and the exponent of its leading power of two (6 = 1.5 · 2²).
const E2M1_MAX: f64 = 6.0;
const E2M1_EMAX: f64 = 2.0;

/// Rounds magnitudes already divided by the block scale to the E2M1 grid {0, .5, 1, 1.5, 2, 3, 4, 6},
/// to nearest, ties to even (torch.round), saturating at 6.
pub fn round_to_e2m1(scaled: &Tensor) -> Tensor {
    let magnitude = scaled.abs();
    let fine = (&magnitude * 2.0).round() / 2.0; // [0, 2): steps of 0.5
    let mid = magnitude.round(); // [2, 4): steps of 1
    let coarse = ((&magnitude / 2.0).round() * 2.0).clamp_max(E2M1_MAX); // [4, 6]: steps of 2
    let q = fine.where_self(&magnitude.lt(2.0), &mid.where_self(&magnitude.lt(4.0), &coarse));
    q * scaled.sign()
}

/// Quantize-dequantize `w` (last dimension a multiple of 32) with the scale `rule` picks for each block:
/// OCP's `2^(floor(log2 amax) − 2)` puts the block maximum in E2M1's top binade; the ceil rule's
/// `2^ceil(log2(amax / 6))` maps it to at most 6.
pub fn quantize_dequantize(w: &Tensor, rule: Mxfp4ScaleRule) -> Tensor {
    let shape = w.size();
    let cols = *shape.last().expect("weight has a last dimension");
    assert_eq!(cols % BLOCK, 0, "MXFP4 needs the input dimension to be a multiple of {BLOCK}, got {cols}");
    let w32 = w.to_kind(Kind::Float);
    let blocks = w32.reshape([-1, BLOCK]);
    // An all-zero block gets the smallest scale (its elements are zero anyway).
    let amax = blocks.abs().amax([-1].as_slice(), true).clamp_min(f32::MIN_POSITIVE as f64);
    let scale = Tensor::full([], 2.0, (Kind::Float, w.device())).pow(&scale_exponent(&amax, rule));
    let dequantized = round_to_e2m1(&(&blocks / &scale)) * scale;
    dequantized.reshape(shape.as_slice()).to_kind(w.kind())
}

/// The blocks' scale exponents, exact (from frexp: x = m·2^e, m ∈ [0.5, 1)), as the pure-Rust
/// encoder reads them from the bits, within E8M0's [−127, 127].
fn scale_exponent(amax: &Tensor, rule: Mxfp4ScaleRule) -> Tensor {
    let exponent = match rule {
        Mxfp4ScaleRule::Ocp => {
            let (_, e) = amax.frexp();
            e.to_kind(Kind::Float) - 1.0 - E2M1_EMAX
        }
        Mxfp4ScaleRule::Ceil => {
            // ceil(log2 x) is e, less one when x is a power of two (m = 0.5).
            let (m, e) = (amax / E2M1_MAX).frexp();
            e.to_kind(Kind::Float) - m.eq(0.5).to_kind(Kind::Float)
        }
    };
    exponent.clamp(-127.0, 127.0)
}

/// Fake quantization for training: forward sees the MXFP4 value, backward passes the gradient
/// straight through to the full-precision weight.
pub fn fake_quantize_ste(w: &Tensor, rule: Mxfp4ScaleRule) -> Tensor {
    w + (quantize_dequantize(w, rule) - w).detach()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_values_survive_and_others_round() {
        // One block whose amax is 6 → scale 1, so elements map onto the E2M1 grid directly.
        let mut values = vec![0.0f32; 32];
        let inputs = [6.0, 0.25, 0.75, 1.75, 2.5, 3.5, 5.0, -4.4, 0.5, -1.5];
        values[..inputs.len()].copy_from_slice(&inputs);
        let q = Vec::<f32>::try_from(quantize_dequantize(&Tensor::from_slice(&values), Mxfp4ScaleRule::Ocp)).unwrap();
        // ties go to even: 0.25→0, 0.75→1, 1.75→2, 2.5→2, 3.5→4, 5→4
        assert_eq!(&q[..10], &[6.0, 0.0, 1.0, 2.0, 2.0, 4.0, 4.0, -4.0, 0.5, -1.5]);
    }

    #[test]
    fn scale_is_power_of_two_from_block_max() {
        // amax 0.1 → floor(log2 0.1) = -4 → scale 2^-6; 0.1 / 2^-6 = 6.4 → saturates to 6.
        let mut values = vec![0.0f32; 64];
        values[0] = 0.1;
        values[32] = 100.0; // second block independent: 2^(6-2)=16, 100/16=6.25 → 6 → 96
        let q = Vec::<f32>::try_from(quantize_dequantize(&Tensor::from_slice(&values), Mxfp4ScaleRule::Ocp)).unwrap();
        assert_eq!(q[0], 6.0 * 2f32.powi(-6));
        assert_eq!(q[32], 96.0);
        assert!(q[1..32].iter().all(|&v| v == 0.0));
    }

    #[test]
    fn straight_through_gradient_is_identity() {
        let w = Tensor::randn([4, 32], (Kind::Float, tch::Device::Cpu)).set_requires_grad(true);
        let y = fake_quantize_ste(&w, Mxfp4ScaleRule::Ocp).sum(Kind::Float);
        y.backward();
        let grad = Vec::<f32>::try_from(w.grad().flatten(0, -1)).unwrap();
        assert!(grad.iter().all(|&g| g == 1.0));
    }
}

#[cfg(test)]
mod codec_tests {
    use super::*;
    use crate::quant::fp4;

    #[test]
    fn fake_quantization_equals_the_exported_codes() {
        // Magnitudes over many binades, an all-zero block and a block of subnormal-sized values.
        let w = Tensor::randn([8, 128], (Kind::Float, tch::Device::Cpu)) * Tensor::logspace(-30.0, 3.0, 128, 10.0, (Kind::Float, tch::Device::Cpu));
        let _ = w.get(0).narrow(0, 0, 32).fill_(0.0);
        let _ = w.get(1).narrow(0, 0, 32).fill_(1e-39);
        let values = Vec::<f32>::try_from(w.flatten(0, -1)).unwrap();
        for rule in [Mxfp4ScaleRule::Ocp, Mxfp4ScaleRule::Ceil] {
            let (blocks, scales) = fp4::mxfp4_encode_with(&values, 128, rule).unwrap();
            let expected = fp4::mxfp4_decode(&blocks, &scales).unwrap();
            let got = Vec::<f32>::try_from(quantize_dequantize(&w, rule).flatten(0, -1)).unwrap();
            assert_eq!(got, expected, "{rule:?}");
        }
    }
}
