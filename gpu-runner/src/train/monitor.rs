//! The expert-usage monitor (docs/design.md): every `every_n_steps`, the diagnostic prompts run
//! through the model and each router layer's top-k choices give `top1_share`, `entropy_norm`,
//! `kl_to_uniform` and `avg_token_entropy`. Alert when the layer means cross both thresholds; on alert
//! halve the learning rate (floor, cooldown) and stop after K consecutive alerts.
//!
//! One deliberate difference: padding positions are not counted (the seed's hook counts them too,
//! which skews usage toward whatever experts padding tokens route to).

use moetune_types::{LayerUsage, MonitorOptions};
use tch::{Kind, Tensor};

/// Usage statistics of one layer from its router logits `[tokens, experts]` over valid tokens.
pub fn layer_usage(layer: usize, router_logits: &Tensor, valid: &Tensor, top_k: i64) -> LayerUsage {
    let experts = router_logits.size()[1];
    let logits = router_logits.to_kind(Kind::Float).index_select(0, &valid.nonzero().squeeze_dim(1));
    let probs = logits.softmax(-1, Kind::Float);
    let token_entropy = -(&probs * probs.clamp_min(1e-12).log()).sum_dim_intlist(-1, false, Kind::Float);
    let avg_token_entropy = if logits.size()[0] > 0 { token_entropy.mean(Kind::Float).double_value(&[]) } else { 0.0 };
    let chosen = probs.topk(top_k.min(experts), -1, true, true).1.flatten(0, -1);
    let counts: Vec<i64> = Vec::try_from(chosen.bincount(None::<Tensor>, experts)).expect("counts");
    let counts: Vec<u64> = counts.into_iter().map(|c| c as u64).collect();
    usage_from_counts(layer, counts, avg_token_entropy)
}

pub fn usage_from_counts(layer: usize, counts: Vec<u64>, avg_token_entropy: f64) -> LayerUsage {
    let n = counts.len() as f64;
    let total = counts.iter().sum::<u64>().max(1) as f64;
    let p: Vec<f64> = counts.iter().map(|&c| c as f64 / total).collect();
    let top1_share = p.iter().cloned().fold(0.0, f64::max);
    let entropy: f64 = -p.iter().map(|&x| x * x.max(1e-12).ln()).sum::<f64>();
    let kl_to_uniform: f64 = p.iter().map(|&x| x * (x.max(1e-12).ln() - (1.0 / n).ln())).sum();
    LayerUsage { layer, top1_share, entropy_norm: entropy / n.ln(), kl_to_uniform, avg_token_entropy, counts, base_agreement: None }
}

/// What the monitor decided at one check.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub mean_top1_share: f64,
    pub mean_entropy_norm: f64,
    pub alert: bool,
    /// The learning rate from the next step on, when this check lowered it.
    pub new_lr: Option<f64>,
    pub stop: bool,
}

/// The monitor's state: consecutive alerts, the last drop, and the learning-rate multiplier it
/// applies on top of the schedule (so the drop persists, unlike a callback whose change the
/// scheduler overwrites at the next step).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Monitor {
    pub consecutive_alerts: u32,
    pub last_drop_step: Option<u32>,
    pub lr_multiplier: f64,
}

impl Default for Monitor {
    fn default() -> Self {
        Self { consecutive_alerts: 0, last_drop_step: None, lr_multiplier: 1.0 }
    }
}

impl Monitor {
    /// Applies the alert rule to one check's layers at `step`; `current_lr` is the rate in effect, so
    /// the floor `min_lr` applies to the rate itself.
    pub fn check(&mut self, options: &MonitorOptions, layers: &[LayerUsage], step: u32, current_lr: f64) -> Verdict {
        let count = layers.len().max(1) as f64;
        let mean_top1_share = layers.iter().map(|l| l.top1_share).sum::<f64>() / count;
        let mean_entropy_norm = layers.iter().map(|l| l.entropy_norm).sum::<f64>() / count;
        let alert = !layers.is_empty() && mean_top1_share >= options.top1_share_threshold && mean_entropy_norm <= options.entropy_norm_threshold;
        self.consecutive_alerts = if alert { self.consecutive_alerts + 1 } else { 0 };
        let cooled = self.last_drop_step.is_none_or(|last| step - last >= options.cooldown_steps);
        let mut new_lr = None;
        if alert && cooled && current_lr > 0.0 {
            let lowered = (current_lr * options.lr_decay).max(options.min_lr);
            self.lr_multiplier *= lowered / current_lr;
            self.last_drop_step = Some(step);
            new_lr = Some(lowered);
        }
        let stop = alert && self.consecutive_alerts >= options.early_stop_after;
        Verdict { mean_top1_share, mean_entropy_norm, alert, new_lr, stop }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_match_the_seed_definitions() {
        let uniform = usage_from_counts(0, vec![5, 5, 5, 5], 0.0);
        assert!((uniform.top1_share - 0.25).abs() < 1e-12 && (uniform.entropy_norm - 1.0).abs() < 1e-12);
        assert!(uniform.kl_to_uniform.abs() < 1e-12);
        let collapsed = usage_from_counts(0, vec![20, 0, 0, 0], 0.0);
        assert_eq!(collapsed.top1_share, 1.0);
        assert!(collapsed.entropy_norm.abs() < 1e-9);
        assert!((collapsed.kl_to_uniform - 4f64.ln()).abs() < 1e-9);
    }

    #[test]
    fn alerts_halve_the_rate_with_cooldown_then_stop() {
        let options = MonitorOptions { cooldown_steps: 100, early_stop_after: 3, ..Default::default() };
        let collapsed = [usage_from_counts(0, vec![90, 5, 3, 2], 0.0)];
        let healthy = [usage_from_counts(0, vec![25, 25, 25, 25], 0.0)];
        let mut monitor = Monitor::default();
        let v = monitor.check(&options, &collapsed, 50, 1e-3);
        assert!(v.alert && v.new_lr == Some(5e-4) && !v.stop);
        assert_eq!(monitor.lr_multiplier, 0.5);
        let v = monitor.check(&options, &collapsed, 100, 5e-4); // within cooldown: no drop
        assert!(v.alert && v.new_lr.is_none() && !v.stop);
        assert!(!monitor.check(&options, &healthy, 150, 5e-4).alert); // resets the streak
        monitor.check(&options, &collapsed, 200, 5e-4);
        monitor.check(&options, &collapsed, 250, 2.5e-4);
        assert!(monitor.check(&options, &collapsed, 300, 2.5e-4).stop);
    }

    #[test]
    fn the_floor_holds() {
        let options = MonitorOptions { min_lr: 1e-7, cooldown_steps: 0, ..Default::default() };
        let mut monitor = Monitor::default();
        monitor.check(&options, &[usage_from_counts(0, vec![1, 0], 0.0)], 1, 1.5e-7);
        assert!((1.5e-7 * monitor.lr_multiplier - 1e-7).abs() < 1e-15);
    }
}
