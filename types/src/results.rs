//! What a job reports when it finishes: the evaluation report (base / SFT / PTQ / SFT+QAT, with the
//! FP4 models' routing agreement) and the job's result summary. The runner builds these, the scheduler
//! keeps figures from them for estimates, and the report page draws them; all three use these structs,
//! so a field is named in one place. Fields a runner of an earlier version may not have sent are
//! optional, since finished jobs keep what their runner sent.

use serde::{Deserialize, Serialize};

use crate::job::{Mxfp4ScaleRule, QatFormat, SftMethod};

/// One row of the evaluation table: one model on the validation data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalRow {
    /// `base`, `sft`, `ptq` or `sft_qat`.
    pub model: String,
    /// Null when not measurable (no validation tokens).
    pub validation_loss: Option<f64>,
    pub token_accuracy: Option<f64>,
    /// Exact-match accuracy on the evaluation prompts, when the job gave any.
    #[serde(default)]
    pub task_accuracy: Option<f64>,
}

/// Top-k routing agreement of the FP4 models with the SFT model, per MoE layer.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct RoutingAgreement {
    pub layers: Vec<usize>,
    pub ptq: Vec<f64>,
    pub sft_qat: Vec<f64>,
    pub ptq_mean: f64,
    pub sft_qat_mean: f64,
}

/// The evaluation report (also stored as `eval_report.json` with the artifacts).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    pub format: QatFormat,
    pub table: Vec<EvalRow>,
    pub routing_agreement: RoutingAgreement,
    /// One line for the event log.
    pub summary: String,
}

/// How the frozen experts were held during training.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct BaseExperts {
    /// `mxfp4` / `nvfp4` when kept packed, else the training dtype.
    #[serde(default)]
    pub format: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_on_device: Option<i64>,
    /// Per MoE layer, when the experts were quantised on load: top-k agreement with the dense base.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing_agreement_with_dense: Option<Option<Vec<f64>>>,
}

/// One stage's losses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageLosses {
    pub steps: usize,
    pub first_loss: Option<f64>,
    pub last_loss: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SftResult {
    pub method: SftMethod,
    #[serde(flatten)]
    pub losses: StageLosses,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QatResult {
    pub format: QatFormat,
    #[serde(default)]
    pub mxfp4_scale_rule: Mxfp4ScaleRule,
    #[serde(flatten)]
    pub losses: StageLosses,
}

/// The part of a [`JobResult`] the estimates learn from, read on its own so that a result of any
/// runner version yields it (an older runner's result has neither).
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct ResultTimings {
    #[serde(default)]
    pub runner_class: Option<String>,
    #[serde(default)]
    pub training_seconds: Option<f64>,
}

/// A succeeded job's `result`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobResult {
    pub device: String,
    pub dtype: String,
    #[serde(default)]
    pub activation_checkpointing: bool,
    /// `lora` or `full`.
    #[serde(default)]
    pub qat_trainable: Option<String>,
    #[serde(default)]
    pub base_experts: BaseExperts,
    pub sft: SftResult,
    pub qat: QatResult,
    /// `completed`, or why training stopped early (the monitor's `early_stop`).
    pub stop_reason: String,
    /// Seconds in training steps (what the estimates learn from).
    #[serde(default)]
    pub training_seconds: Option<f64>,
    /// The evaluation table ([`EvalReport::table`]).
    #[serde(default)]
    pub eval: Vec<EvalRow>,
    #[serde(default)]
    pub routing_agreement: RoutingAgreement,
    /// The runner's class (`moetune_types::estimate::runner_class`), for the estimates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner_class: Option<String>,
    /// Every exported artifact loaded back and compared with the trained model before success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serve_check: Option<ServeCheck>,
    /// The experts that got LoRA adapters, per MoE layer that has any (absent without expert adapters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expert_adapters: Option<Vec<LayerAdapters>>,
    /// The training data's routing under the base model, when `lora.target_experts.from_profile`
    /// chose the experts from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training_routing_profile: Option<crate::routing::RoutingProfile>,
}

/// The expert adapters of one MoE layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerAdapters {
    /// Decoder layer index.
    pub layer: usize,
    pub experts: Vec<u32>,
    /// Each listed expert's LoRA rank.
    pub ranks: Vec<u32>,
}

/// The serve check: each exported artifact loaded as a consumer loads it and run on a probe batch of
/// validation data next to the model it must reproduce.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServeCheck {
    /// Real tokens in the probe batch.
    pub probe_tokens: i64,
    pub artifacts: Vec<ArtifactCheck>,
    /// Every artifact passed (else the job failed and published none).
    pub passed: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArtifactCheck {
    /// `merged`, `adapter`, `mxfp4` or `nvfp4`.
    pub artifact: String,
    /// What it was compared with.
    pub reference: String,
    /// Largest absolute logit difference over the probe tokens.
    pub max_logit_diff: f64,
    /// The largest allowed: 1% of the largest reference logit (at least 0.01).
    pub tolerance: f64,
    /// Probe tokens routed to the same top-k experts (mean over MoE layers); at least 0.99 passes.
    pub routing_agreement: f64,
    /// No NaN or Inf among the loaded artifact's logits.
    pub finite: bool,
    pub passed: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_result_round_trips_and_an_older_one_still_reads() {
        let json = serde_json::json!({
            "device": "cpu", "dtype": "float32", "activation_checkpointing": false, "qat_trainable": "lora",
            "base_experts": {"format": "float32"},
            "sft": {"method": "lora", "steps": 3, "first_loss": 2.5, "last_loss": 1.5},
            "qat": {"format": "nvfp4", "mxfp4_scale_rule": "ocp", "steps": 2, "first_loss": 1.4, "last_loss": 1.3},
            "stop_reason": "completed", "training_seconds": 1.5,
            "eval": [{"model": "base", "validation_loss": null, "token_accuracy": 0.5, "task_accuracy": null}],
            "routing_agreement": {"layers": [0], "ptq": [1.0], "sft_qat": [0.9], "ptq_mean": 1.0, "sft_qat_mean": 0.9},
            "runner_class": "cpu"
        });
        let result: JobResult = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(result.training_seconds, Some(1.5));
        assert_eq!(serde_json::to_value(&result).unwrap(), json);
        let older = serde_json::json!({
            "device": "cpu", "dtype": "float32",
            "sft": {"method": "full", "steps": 1, "first_loss": null, "last_loss": null},
            "qat": {"format": "mxfp4", "mxfp4_scale_rule": "ocp", "steps": 0, "first_loss": null, "last_loss": null},
            "stop_reason": "completed"
        });
        let older: JobResult = serde_json::from_value(older).unwrap();
        assert_eq!((older.training_seconds, older.runner_class), (None, None));
    }
}
