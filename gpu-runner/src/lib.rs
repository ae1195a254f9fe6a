//! The moetune GPU runner: claims jobs from Redis and runs the MoE SFT → QAT workflow with libtorch.

pub mod commands;
pub mod config;
pub mod export;
pub mod fidelity;
pub mod gang;
pub mod host_memory;
pub mod metrics;
pub mod model;
pub mod quant;
pub mod train;
pub mod text;
pub mod worker;
