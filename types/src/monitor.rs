//! The expert-usage monitor's options (docs/design.md): the router-collapse alert and the
//! routing-drift guardrail.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::invalid::{check, InvalidOption};

/// The expert-usage monitor (docs/design.md); thresholds are job options.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct MonitorOptions {
    pub enabled: bool,
    /// Run the diagnostic prompts every this many optimiser steps. Default 50.
    pub every_n_steps: u32,
    /// Alert when the mean `top1_share` over layers is at least this ... Default 0.70.
    pub top1_share_threshold: f64,
    /// ... and the mean `entropy_norm` is at most this. Default 0.40.
    pub entropy_norm_threshold: f64,
    /// On alert the learning rate is multiplied by this. Default 0.5.
    pub lr_decay: f64,
    /// The learning rate is never lowered below this. Default 1e-7.
    pub min_lr: f64,
    /// Steps between two learning-rate drops. Default 200.
    pub cooldown_steps: u32,
    /// Stop training after this many consecutive alerts. Default 3.
    pub early_stop_after: u32,
    /// Router choices counted per token. Default 1 (each token's first choice). The seed counts all
    /// top-k slots (2 for Mixtral); then no expert can exceed a 1/k share, so with k = 2 the 0.70
    /// threshold could never fire. Set 2 to count exactly as the seed does.
    pub top_k: u32,
    /// Diagnostic prompts; default: prompts drawn from the validation data.
    pub diagnostic_prompts: Vec<String>,
    /// The routing-drift guardrail, in (0, 1]. At every check the held-out validation tokens are
    /// routed by the model in training and by the base model; the drift is the fraction (mean over
    /// MoE layers) whose top-k experts changed. Above this, the job stores a checkpoint and pauses
    /// (`monitor.alert` webhook). Resuming accepts the drift reached: the guardrail then pauses again
    /// only if the drift grows by this much more. Default: no guardrail (drift is still reported).
    pub max_routing_drift: Option<f64>,
}

impl Default for MonitorOptions {
    fn default() -> Self {
        Self {
            enabled: true,
            every_n_steps: 50,
            top1_share_threshold: 0.70,
            entropy_norm_threshold: 0.40,
            lr_decay: 0.5,
            min_lr: 1e-7,
            cooldown_steps: 200,
            early_stop_after: 3,
            top_k: 1,
            diagnostic_prompts: Vec::new(),
            max_routing_drift: None,
        }
    }
}

impl MonitorOptions {
    pub(crate) fn validate(&self) -> Result<(), InvalidOption> {
        check(self.every_n_steps >= 1, "monitor.every_n_steps", "`monitor.every_n_steps` must be at least 1.")?;
        check((0.0..=1.0).contains(&self.top1_share_threshold), "monitor.top1_share_threshold", "`monitor.top1_share_threshold` must be in [0, 1].")?;
        check((0.0..=1.0).contains(&self.entropy_norm_threshold), "monitor.entropy_norm_threshold", "`monitor.entropy_norm_threshold` must be in [0, 1].")?;
        check(self.lr_decay > 0.0 && self.lr_decay <= 1.0, "monitor.lr_decay", "`monitor.lr_decay` must be in (0, 1].")?;
        check(self.min_lr >= 0.0, "monitor.min_lr", "`monitor.min_lr` must not be negative.")?;
        check((1..=64).contains(&self.top_k), "monitor.top_k", "`monitor.top_k` must be from 1 to 64.")?;
        check(self.early_stop_after >= 1, "monitor.early_stop_after", "`monitor.early_stop_after` must be at least 1.")?;
        check(self.diagnostic_prompts.len() <= 256, "monitor.diagnostic_prompts", "at most 256 diagnostic prompts.")?;
        check(
            self.max_routing_drift.is_none_or(|d| d > 0.0 && d <= 1.0),
            "monitor.max_routing_drift",
            "`monitor.max_routing_drift` must be in (0, 1]: the fraction of held-out tokens whose experts may change.",
        )?;
        check(self.enabled || self.max_routing_drift.is_none(), "monitor.max_routing_drift", "`monitor.max_routing_drift` needs the monitor (`monitor.enabled: true`).")
    }

    /// Whether a check measuring `drift` crosses the guardrail, given the drift a resume accepted.
    pub fn drift_exceeded(&self, drift: f64, accepted: f64) -> bool {
        self.enabled && self.max_routing_drift.is_some_and(|max| drift > accepted + max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guardrail_is_optional_and_bounded() {
        assert!(MonitorOptions::default().validate().is_ok());
        for bad in [0.0, -0.1, 1.5, f64::NAN] {
            let options = MonitorOptions { max_routing_drift: Some(bad), ..Default::default() };
            assert_eq!(options.validate().unwrap_err().param, "method.moe_sft_qat.monitor.max_routing_drift", "{bad}");
        }
        let off = MonitorOptions { enabled: false, max_routing_drift: Some(0.2), ..Default::default() };
        assert!(off.validate().is_err());
    }

    #[test]
    fn a_resume_accepts_the_drift_reached_and_the_guardrail_moves_up_by_its_margin() {
        let options = MonitorOptions { max_routing_drift: Some(0.2), ..Default::default() };
        assert!(!options.drift_exceeded(0.2, 0.0));
        assert!(options.drift_exceeded(0.21, 0.0));
        assert!(!options.drift_exceeded(0.35, 0.21));
        assert!(options.drift_exceeded(0.42, 0.21));
        assert!(!MonitorOptions::default().drift_exceeded(1.0, 0.0));
    }
}
