//! AdamW with decoupled weight decay, global-norm gradient clipping and warmup + cosine schedule.
//! Written out (rather than tch's optimiser) because its state must be saved to and restored from
//! checkpoints, so a resumed job continues with exactly the same updates.

use std::path::Path;

use anyhow::Context;
use tch::{Kind, Tensor};

/// A trainable tensor and whether weight decay applies to it (not to norms and biases).
pub struct Trainable {
    pub name: String,
    pub tensor: Tensor,
    pub decay: bool,
}

pub struct AdamW {
    params: Vec<Trainable>,
    exp_avg: Vec<Tensor>,
    exp_avg_sq: Vec<Tensor>,
    pub step: i64,
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
}

impl AdamW {
    pub fn new(params: Vec<Trainable>, weight_decay: f64) -> Self {
        let zeros = |p: &Trainable| tch::no_grad(|| p.tensor.zeros_like().to_kind(Kind::Float));
        let exp_avg = params.iter().map(zeros).collect();
        let exp_avg_sq = params.iter().map(zeros).collect();
        Self { params, exp_avg, exp_avg_sq, step: 0, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay }
    }

    pub fn params(&self) -> &[Trainable] {
        &self.params
    }

    pub fn zero_grad(&mut self) {
        for p in &mut self.params {
            let mut grad = p.tensor.grad();
            if grad.defined() {
                let _ = grad.detach_().zero_();
            }
        }
    }

    /// Scales gradients so their global L2 norm is at most `max_norm`; returns the norm before clipping.
    pub fn clip_grad_norm(&mut self, max_norm: f64) -> f64 {
        tch::no_grad(|| {
            let grads: Vec<Tensor> = self.params.iter().map(|p| p.tensor.grad()).filter(|g| g.defined()).collect();
            if grads.is_empty() {
                return 0.0;
            }
            let squares: Vec<Tensor> = grads.iter().map(|g| g.to_kind(Kind::Float).pow_tensor_scalar(2).sum(Kind::Float)).collect();
            let norm = Tensor::stack(&squares, 0).sum(Kind::Float).sqrt().double_value(&[]);
            if norm > max_norm {
                let factor = max_norm / (norm + 1e-6);
                for mut g in grads {
                    let _ = g.g_mul_scalar_(factor);
                }
            }
            norm
        })
    }

    pub fn step(&mut self, lr: f64) {
        self.step += 1;
        let t = self.step as f64;
        let (bias1, bias2) = (1.0 - self.beta1.powf(t), 1.0 - self.beta2.powf(t));
        tch::no_grad(|| {
            for ((p, m), v) in self.params.iter_mut().zip(&mut self.exp_avg).zip(&mut self.exp_avg_sq) {
                let grad = p.tensor.grad();
                if !grad.defined() {
                    continue;
                }
                let grad = grad.to_kind(Kind::Float);
                if p.decay && self.weight_decay > 0.0 {
                    let _ = p.tensor.g_mul_scalar_(1.0 - lr * self.weight_decay);
                }
                // The same operations in the same order as the textbook form (so the same bits), with
                // the temporaries updated in place: at 10⁸ parameters each fresh temporary is another
                // large allocation per step (page faults on CPU).
                let _ = m.g_mul_scalar_(self.beta1).g_add_(&(&grad * (1.0 - self.beta1)));
                let mut squared = &grad * &grad;
                let _ = v.g_mul_scalar_(self.beta2).g_add_(&squared.g_mul_scalar_(1.0 - self.beta2));
                let mut denom = &*v / bias2;
                let _ = denom.sqrt_().g_add_scalar_(self.eps);
                let mut update = &*m / bias1;
                let _ = update.g_div_(&denom).g_mul_scalar_(lr);
                let _ = p.tensor.g_sub_(&update.to_kind(p.tensor.kind()));
            }
        });
    }

    /// Writes the moment estimates and step count (safetensors) next to the weights of a checkpoint.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let mut named: Vec<(String, Tensor)> = Vec::with_capacity(self.params.len() * 2 + 1);
        for ((p, m), v) in self.params.iter().zip(&self.exp_avg).zip(&self.exp_avg_sq) {
            named.push((format!("{}.exp_avg", p.name), m.shallow_clone()));
            named.push((format!("{}.exp_avg_sq", p.name), v.shallow_clone()));
        }
        named.push(("step".into(), Tensor::from_slice(&[self.step])));
        Tensor::write_safetensors(&named, path).with_context(|| format!("writing {}", path.display()))
    }

    pub fn load(&mut self, path: &Path) -> anyhow::Result<()> {
        let saved: std::collections::HashMap<String, Tensor> =
            Tensor::read_safetensors(path).with_context(|| format!("reading {}", path.display()))?.into_iter().collect();
        let get = |name: &str| saved.get(name).with_context(|| format!("optimiser state lacks {name}"));
        tch::no_grad(|| -> anyhow::Result<()> {
            for ((p, m), v) in self.params.iter().zip(&mut self.exp_avg).zip(&mut self.exp_avg_sq) {
                m.copy_(get(&format!("{}.exp_avg", p.name))?);
                v.copy_(get(&format!("{}.exp_avg_sq", p.name))?);
            }
            Ok(())
        })?;
        self.step = get("step")?.int64_value(&[0]);
        Ok(())
    }
}

/// Linear warmup over `warmup` steps, then cosine decay to zero at `total` (HF's
/// `get_cosine_schedule_with_warmup`); returns the multiplier of the peak rate for `step` (0-based).
pub fn warmup_cosine(step: u32, warmup: u32, total: u32) -> f64 {
    if step < warmup {
        return f64::from(step + 1) / f64::from(warmup + 1);
    }
    let progress = f64::from(step - warmup) / f64::from((total - warmup).max(1));
    0.5 * (1.0 + (std::f64::consts::PI * progress.min(1.0)).cos())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_warms_up_then_decays_to_zero() {
        assert!((warmup_cosine(0, 9, 100) - 0.1).abs() < 1e-12);
        assert!((warmup_cosine(9, 9, 100) - 1.0).abs() < 1e-12);
        assert!(warmup_cosine(99, 9, 100) < 0.01);
        assert!((warmup_cosine(0, 0, 10) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn matches_torch_adamw_on_a_quadratic() {
        // One step of AdamW from torch.optim.AdamW(lr=0.1, weight_decay=0.01) on loss = sum(w²), w = [1, -2]:
        // grad = [2, -4]; m̂/√v̂ = sign(grad) → w = w·(1 − 0.001) − 0.1·sign(grad) = [0.899, -1.898].
        let w = Tensor::from_slice(&[1.0f32, -2.0]).set_requires_grad(true);
        let mut opt = AdamW::new(vec![Trainable { name: "w".into(), tensor: w.shallow_clone(), decay: true }], 0.01);
        w.pow_tensor_scalar(2).sum(Kind::Float).backward();
        opt.step(0.1);
        let after = Vec::<f32>::try_from(&w.detach()).unwrap();
        assert!((after[0] - 0.899).abs() < 1e-5 && (after[1] + 1.898).abs() < 1e-5, "{after:?}");
    }
}
