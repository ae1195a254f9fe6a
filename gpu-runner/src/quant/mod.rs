//! Quantization formats: the pure-Rust codecs of checkpoints (`fp4`) and QAT's fake quantization (`mxfp4`, `nvfp4`).

pub mod fp4;
pub mod mxfp4;
pub mod nvfp4;
