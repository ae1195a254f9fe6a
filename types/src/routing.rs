//! A routing profile: how a model's routers spread a dataset's tokens over the experts of each MoE
//! layer. It shows which experts a fine-tune on that data will exercise, and which it leaves dead.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The routing of a set of tokens through every MoE layer of one model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RoutingProfile {
    /// Examples routed.
    pub examples: u64,
    /// Tokens routed (padding excluded).
    pub tokens: u64,
    /// Experts each token is sent to.
    pub top_k: u32,
    /// An expert is dead in a layer where its top-k share is below this.
    pub dead_share: f64,
    pub layers: Vec<LayerProfile>,
}

/// The routing of one MoE layer. Shares are fractions of the layer's assignments: `top1_share` of
/// the tokens' first choices, `topk_share` of all `tokens × top_k` choices; each sums to 1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LayerProfile {
    /// Decoder layer index.
    pub layer: usize,
    pub top1_share: Vec<f64>,
    pub topk_share: Vec<f64>,
    /// Experts whose `topk_share` is below `dead_share`.
    pub dead_experts: Vec<u32>,
    /// Entropy of `topk_share` over ln(experts): 1 when routing is uniform, 0 when one expert gets all.
    pub entropy_norm: f64,
    /// KL divergence of `topk_share` from uniform, in nats.
    pub kl_to_uniform: f64,
}

impl LayerProfile {
    /// The profile of `layer` from how often each expert was a token's first choice (`top1`) and
    /// among its top-k (`topk`).
    pub fn from_counts(layer: usize, top1: &[u64], topk: &[u64], dead_share: f64) -> Self {
        let shares = |counts: &[u64]| {
            let total = counts.iter().sum::<u64>().max(1) as f64;
            counts.iter().map(|&c| c as f64 / total).collect::<Vec<f64>>()
        };
        let (top1_share, topk_share) = (shares(top1), shares(topk));
        let n = topk_share.len().max(1) as f64;
        let entropy: f64 = -topk_share.iter().filter(|&&p| p > 0.0).map(|&p| p * p.ln()).sum::<f64>();
        let kl_to_uniform: f64 = topk_share.iter().filter(|&&p| p > 0.0).map(|&p| p * (p * n).ln()).sum();
        let dead_experts = topk_share.iter().enumerate().filter(|(_, &s)| s < dead_share).map(|(e, _)| e as u32).collect();
        let entropy_norm = if n > 1.0 { entropy / n.ln() } else { 0.0 };
        Self { layer, top1_share, topk_share, dead_experts, entropy_norm, kl_to_uniform }
    }
}

/// The method type of a routing-profile job: a job of its own kind, placed and run like a
/// fine-tuning job but only routing its files through the base model (`/v1/files/{id}/routing_profile`).
pub const PROFILE_METHOD: &str = "routing_profile";

/// What a routing-profile job measures (`TrainingSpec::routing_profile`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ProfileJob {
    /// The first examples of each file routed.
    pub max_examples: u32,
}

/// A routing-profile job's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ProfileResult {
    /// The file profiled.
    pub training: RoutingProfile,
    /// The validation file given with it, profiled the same way.
    pub validation: Option<RoutingProfile>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_and_collapsed_routing_have_the_textbook_figures() {
        let uniform = LayerProfile::from_counts(0, &[5, 5, 5, 5], &[10, 10, 10, 10], 0.01);
        assert!((uniform.entropy_norm - 1.0).abs() < 1e-12 && uniform.kl_to_uniform.abs() < 1e-12);
        assert_eq!(uniform.topk_share, [0.25; 4]);
        let collapsed = LayerProfile::from_counts(3, &[20, 0, 0, 0], &[20, 20, 0, 0], 0.01);
        assert_eq!(collapsed.dead_experts, [2, 3]);
        assert_eq!(collapsed.top1_share, [1.0, 0.0, 0.0, 0.0]);
        assert!((collapsed.entropy_norm - 0.5).abs() < 1e-12, "two of four experts equally: ln 2 / ln 4");
        assert!((collapsed.kl_to_uniform - 2f64.ln()).abs() < 1e-12);
    }
}
