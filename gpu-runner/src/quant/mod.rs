//! Quantization formats used by QAT.

pub mod mxfp4;
