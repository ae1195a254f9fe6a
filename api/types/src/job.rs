//! Job spec and status: what a user asks for and where the job stands.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Lifecycle of a fine-tuning job; names and values follow the OpenAI fine-tuning API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    ValidatingFiles,
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ValidatingFiles => "validating_files",
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::ValidatingFiles,
            Self::Queued,
            Self::Running,
            Self::Succeeded,
            Self::Failed,
            Self::Cancelled,
        ]
        .into_iter()
        .find(|status| status.as_str() == s)
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}

/// FP4 format the QAT stage fake-quantizes expert weights to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum QatFormat {
    #[default]
    Mxfp4,
}

/// Native MoE options (`method.moe_sft_qat`). Every field has a documented default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct MoeSftQatOptions {
    /// Optimiser steps of supervised fine-tuning (router frozen). Default 40.
    pub sft_steps: u32,
    /// Peak learning rate of the SFT stage. Default 1e-3 for the tiny demo model; real MoE models want 1e-5.
    pub learning_rate: f64,
    /// Optimiser steps of quantization-aware training after SFT. Default 10.
    pub qat_steps: u32,
    /// Learning rate of the QAT stage; defaults to a tenth of `learning_rate`.
    pub qat_learning_rate: Option<f64>,
    /// Format expert weights are fake-quantized to during QAT.
    pub qat_format: QatFormat,
    /// Tokens per training sequence (longer examples are truncated). Default 128.
    pub seq_len: u32,
    /// Emit a metrics event every this many steps. Default 1.
    pub log_every_n_steps: u32,
}

impl Default for MoeSftQatOptions {
    fn default() -> Self {
        Self {
            sft_steps: 40,
            learning_rate: 1e-3,
            qat_steps: 10,
            qat_learning_rate: None,
            qat_format: QatFormat::Mxfp4,
            seq_len: 128,
            log_every_n_steps: 1,
        }
    }
}

/// Everything the runner needs to train, resolved from the user's request (no "auto" left).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TrainingSpec {
    pub model: String,
    pub n_epochs: u32,
    pub batch_size: u32,
    pub seed: u64,
    pub moe: MoeSftQatOptions,
}
