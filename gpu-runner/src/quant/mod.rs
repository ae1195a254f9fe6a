//! Quantization formats: the pure-Rust codecs of checkpoints (`fp4`, the `moetune-fp4` crate, which
//! does not link libtorch) and QAT's fake quantization (`mxfp4`, `nvfp4`).

pub use moetune_fp4 as fp4;
pub mod mxfp4;
pub mod nvfp4;
