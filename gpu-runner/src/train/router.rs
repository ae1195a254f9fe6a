//! Router losses (docs/design.md): the load-balancing auxiliary loss and the router z-loss.

use tch::{Kind, Tensor};

/// `N · Σ_i f_i · P_i` for one layer, as transformers' `load_balancing_loss_func`: `f_i` is the
/// fraction of tokens with expert i among their top-k, `P_i` the mean router probability of i.
/// `valid`: `[tokens]` bool, false on padding. Equals k when routing is uniform.
pub fn load_balancing_loss(router_logits: &Tensor, top_k: &Tensor, valid: &Tensor) -> Tensor {
    let experts = router_logits.size()[1];
    let weight = valid.to_kind(Kind::Float);
    let tokens = weight.sum(Kind::Float).clamp_min(1.0);
    let probs = router_logits.to_kind(Kind::Float).softmax(-1, Kind::Float);
    // [tokens, experts]: 1 where the expert is among the token's top-k
    // A scatter rather than `one_hot`, which may check its input's range on the host.
    let chosen = Tensor::zeros([top_k.size()[0], experts], (Kind::Float, top_k.device())).scatter_value(1, top_k, 1.0);
    let f = (chosen * weight.unsqueeze(1)).sum_dim_intlist(0, false, Kind::Float) / &tokens;
    let p = (probs * weight.unsqueeze(1)).sum_dim_intlist(0, false, Kind::Float) / &tokens;
    (f * p).sum(Kind::Float) * experts as f64
}

/// `mean(logsumexp(logits)²)` over valid tokens (ST-MoE's router z-loss).
pub fn z_loss(router_logits: &Tensor, valid: &Tensor) -> Tensor {
    let weight = valid.to_kind(Kind::Float);
    let lse = router_logits.to_kind(Kind::Float).logsumexp([-1].as_slice(), false);
    (lse.pow_tensor_scalar(2) * &weight).sum(Kind::Float) / weight.sum(Kind::Float).clamp_min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn balanced_routing_gives_k_and_collapse_gives_more() {
        // 4 tokens, 4 experts, top-2, uniform probabilities, each expert chosen twice.
        let logits = Tensor::zeros([4, 4], (Kind::Float, tch::Device::Cpu));
        let top = Tensor::from_slice(&[0i64, 1, 2, 3, 0, 1, 2, 3]).view([4, 2]);
        let valid = Tensor::ones([4], (Kind::Bool, tch::Device::Cpu));
        assert!((load_balancing_loss(&logits, &top, &valid).double_value(&[]) - 2.0).abs() < 1e-6);
        // Every token to experts 0 and 1 with most of the probability there: the loss grows.
        let logits = Tensor::from_slice(&[5.0f32, 5.0, 0.0, 0.0]).repeat([4, 1]);
        let top = Tensor::from_slice(&[0i64, 1]).repeat([4, 1]);
        assert!(load_balancing_loss(&logits, &top, &valid).double_value(&[]) > 3.9);
    }

    #[test]
    fn z_loss_ignores_padding() {
        let logits = Tensor::from_slice(&[0.0f32, 0.0, 100.0, 100.0]).view([2, 2]);
        let valid = Tensor::from_slice(&[true, false]);
        let expected = 2f64.ln().powi(2);
        assert!((z_loss(&logits, &valid).double_value(&[]) - expected).abs() < 1e-5);
    }
}
