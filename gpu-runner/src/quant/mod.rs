//! Quantization formats: the pure-Rust codecs of checkpoints (`fp4`, the `moetune-fp4` crate, which
//! does not link libtorch) and QAT's fake quantization (`mxfp4`, `nvfp4`).

pub use moetune_fp4 as fp4;
pub mod mxfp4;
pub mod nvfp4;

/// The codec's scale rule for a job's `qat.mxfp4_scale_rule`.
pub fn mxfp4_scale_rule(rule: moetune_types::Mxfp4ScaleRule) -> fp4::Mxfp4ScaleRule {
    match rule {
        moetune_types::Mxfp4ScaleRule::Ocp => fp4::Mxfp4ScaleRule::Ocp,
        moetune_types::Mxfp4ScaleRule::Ceil => fp4::Mxfp4ScaleRule::Ceil,
    }
}
