//! QAT's view of the FP4 formats: the weight transform, and for NVFP4 W4A4 the activation hook with
//! per-(layer, projection) amax from a calibration pass.

use std::cell::RefCell;
use std::collections::HashMap;

use moetune_types::{MoeSftQatOptions, QatFormat};
use tch::{Kind, Tensor};

use crate::export::fp4::ActivationAmax;
use crate::model::ExpertInput;
use crate::quant::{mxfp4, nvfp4};

pub struct Quantizer {
    pub format: QatFormat,
    /// How MXFP4 picks its block scales.
    pub mxfp4_rule: mxfp4::Mxfp4ScaleRule,
    /// Calibrated activation amax (NVFP4 with activation quantization only).
    pub activations: Option<ActivationAmax>,
}

impl Quantizer {
    /// The quantizer of a job's QAT stage (its format resolved): `activations` from its calibration.
    pub fn for_job(options: &MoeSftQatOptions, activations: Option<ActivationAmax>) -> Self {
        Self { format: options.qat_format(), mxfp4_rule: crate::quant::mxfp4_scale_rule(options.qat.mxfp4_scale_rule), activations }
    }

    /// Fake quantization of expert weights (last dimension = input), straight-through.
    pub fn weights(&self, w: &Tensor) -> Tensor {
        match self.format {
            QatFormat::Mxfp4 => mxfp4::fake_quantize_ste(w, self.mxfp4_rule),
            QatFormat::Nvfp4 => fake_nvfp4_per_expert(w),
        }
    }

    /// Fake quantization of an expert input activation with its calibrated per-tensor scale.
    pub fn activation(&self, layer: usize, which: ExpertInput, x: &Tensor) -> Tensor {
        match self.activations.as_ref().and_then(|a| a.get(&(layer, which))) {
            Some(&amax) => nvfp4::fake_quantize_ste(x, Some(&Tensor::full([], f64::from(amax), (Kind::Float, x.device())))),
            None => x.shallow_clone(),
        }
    }
}

/// NVFP4's per-tensor scale is per Linear, i.e. per expert: each expert of `[E, out, in]` has its own
/// (all experts in one pass, no loop over them).
fn fake_nvfp4_per_expert(w: &Tensor) -> Tensor {
    w + (nvfp4::quantize_dequantize_per_expert(w) - w).detach()
}

/// Records the amax of every expert input it sees (the calibration pass).
#[derive(Default)]
pub struct Calibrator {
    seen: RefCell<HashMap<(usize, ExpertInput), f32>>,
}

impl Calibrator {
    pub fn observe(&self, layer: usize, which: ExpertInput, x: &Tensor) -> Tensor {
        if x.numel() > 0 {
            let amax = x.abs().max().to_kind(Kind::Float).double_value(&[]) as f32;
            let mut seen = self.seen.borrow_mut();
            let entry = seen.entry((layer, which)).or_insert(0.0);
            *entry = entry.max(amax);
        }
        x.shallow_clone()
    }

    pub fn finish(self) -> ActivationAmax {
        self.seen.into_inner()
    }
}
