//! AdamW with decoupled weight decay, global-norm gradient clipping and warmup + cosine schedule.
//! Written out (rather than tch's optimiser) because its state must be saved to and restored from
//! checkpoints, so a resumed job continues with exactly the same updates.
//!
//! Mixed precision: a trainable tensor held in bf16 gets an fp32 master copy here. The update is
//! computed on the master (moments are always fp32) and the tensor the model uses is its rounding,
//! so small updates accumulate instead of vanishing under bf16's 8-bit mantissa.

use std::path::Path;

use anyhow::Context;
use tch::{Device, Kind, Tensor};

use super::adamw_cpu;

/// A trainable tensor and whether weight decay applies to it (not to norms and biases).
pub struct Trainable {
    pub name: String,
    pub tensor: Tensor,
    pub decay: bool,
}

pub struct AdamW {
    params: Vec<Trainable>,
    /// fp32 master copies of trainables held in a narrower dtype.
    masters: Vec<Option<Tensor>>,
    exp_avg: Vec<Tensor>,
    exp_avg_sq: Vec<Tensor>,
    pub step: i64,
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
    /// Whether contiguous fp32 CPU tensors take the one-pass update (`adamw_cpu`); off only in tests
    /// that compare it with the tensor form.
    fused_cpu: bool,
    /// Which trainables this optimiser updates and holds state for. All of them, except under data
    /// parallelism with sharded state (ZeRO-1), where each rank owns a share and the owners'
    /// updated values are broadcast ([`super::parallel::DataParallel::broadcast_params`]).
    owned: Vec<bool>,
}

impl AdamW {
    pub fn new(params: Vec<Trainable>, weight_decay: f64) -> Self {
        let owned = vec![true; params.len()];
        Self::sharded(params, weight_decay, owned)
    }

    /// An optimiser that keeps moments and fp32 masters only for the trainables marked `owned`, and
    /// updates only those: the other ranks of a data-parallel job hold the rest.
    pub fn sharded(params: Vec<Trainable>, weight_decay: f64, owned: Vec<bool>) -> Self {
        assert_eq!(params.len(), owned.len(), "one ownership flag per trainable");
        let zeros = |(p, &own): (&Trainable, &bool)| tch::no_grad(|| if own { p.tensor.zeros_like().to_kind(Kind::Float) } else { Tensor::new() });
        let exp_avg = params.iter().zip(&owned).map(zeros).collect();
        let exp_avg_sq = params.iter().zip(&owned).map(zeros).collect();
        let masters = params.iter().zip(&owned).map(|(p, &own)| (own && p.tensor.kind() != Kind::Float).then(|| p.tensor.detach().to_kind(Kind::Float))).collect();
        Self { params, masters, exp_avg, exp_avg_sq, step: 0, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay, fused_cpu: true, owned }
    }

    /// Whether this optimiser updates trainable `index`.
    pub fn owns(&self, index: usize) -> bool {
        self.owned[index]
    }

    pub fn params(&self) -> &[Trainable] {
        &self.params
    }

    /// Sets the fp32 masters from the trainables' current values (after they were restored).
    pub fn sync_masters(&mut self) {
        tch::no_grad(|| {
            for (p, master) in self.params.iter().zip(&mut self.masters) {
                if let Some(master) = master {
                    master.copy_(&p.tensor);
                }
            }
        });
    }

    pub fn zero_grad(&mut self) {
        for p in &mut self.params {
            let mut grad = p.tensor.grad();
            if grad.defined() {
                let _ = grad.detach_().zero_();
            }
        }
    }

    /// Scales gradients so their global L2 norm is at most `max_norm`. On the GPU nothing is read back:
    /// the scale `min(1, max_norm / (norm + 1e-6))` is applied on the device to every gradient.
    pub fn clip_grad_norm(&mut self, max_norm: f64) {
        tch::no_grad(|| {
            let grads: Vec<Tensor> = self.params.iter().map(|p| p.tensor.grad()).filter(|g| g.defined()).collect();
            if grads.is_empty() {
                return;
            }
            if grads.iter().all(is_cpu_f32) {
                let threads = intra_op_threads();
                let norm = grads.iter().map(|g| adamw_cpu::sum_of_squares(f32_slice(g), threads)).sum::<f64>().sqrt();
                if norm > max_norm {
                    let factor = max_norm / (norm + 1e-6);
                    for mut g in grads {
                        let _ = g.g_mul_scalar_(factor);
                    }
                }
            } else {
                let squares: Vec<Tensor> = grads.iter().map(|g| g.to_kind(Kind::Float).pow_tensor_scalar(2).sum(Kind::Float)).collect();
                let norm = Tensor::stack(&squares, 0).sum(Kind::Float).sqrt();
                let factor = (norm.full_like(max_norm) / (&norm + 1e-6)).clamp_max(1.0);
                for mut g in grads {
                    let _ = g.g_mul_(&factor.to_kind(g.kind()));
                }
            }
        })
    }

    /// [`Self::clip_grad_norm`] where the trainables marked `split` are this rank's share of tensors
    /// split across ranks (its experts): the squares of their gradients are summed over the ranks by
    /// `across_ranks` before they join the others', so every rank scales by the whole model's norm.
    pub fn clip_grad_norm_split(&mut self, max_norm: f64, split: &[bool], across_ranks: impl FnOnce(Tensor) -> anyhow::Result<Tensor>) -> anyhow::Result<()> {
        let _no_grad = tch::no_grad_guard();
        let squares = |own: bool| -> Option<Tensor> {
            let parts: Vec<Tensor> = self
                .params
                .iter()
                .zip(split)
                .filter(|(p, &s)| s == own && p.tensor.grad().defined())
                // Each gradient's norm without a wider copy of it, squared in f64 to be summed.
                .map(|(p, _)| p.tensor.grad().to_kind(Kind::Float).norm().to_kind(Kind::Double).pow_tensor_scalar(2))
                .collect();
            (!parts.is_empty()).then(|| Tensor::stack(&parts, 0).sum(Kind::Double))
        };
        let whole = squares(false);
        let device = self.params.first().map_or(Device::Cpu, |p| p.tensor.device());
        let shares = across_ranks(squares(true).unwrap_or_else(|| Tensor::zeros([], (Kind::Double, device))))?;
        let norm = match whole {
            Some(w) => w + shares,
            None => shares,
        }
        .sqrt();
        let factor = (norm.full_like(max_norm) / (&norm + 1e-6)).clamp_max(1.0);
        for p in &self.params {
            let mut g = p.tensor.grad();
            if g.defined() {
                let _ = g.g_mul_(&factor.to_kind(g.kind()));
            }
        }
        Ok(())
    }

    pub fn step(&mut self, lr: f64) {
        self.step += 1;
        let scalars = self.scalars(lr);
        let fused = self.fused_cpu;
        tch::no_grad(|| {
            for ((((p, master), m), v), &owned) in self.params.iter_mut().zip(&mut self.masters).zip(&mut self.exp_avg).zip(&mut self.exp_avg_sq).zip(&self.owned) {
                let grad = p.tensor.grad();
                if !grad.defined() || !owned {
                    continue;
                }
                let decay = (p.decay && scalars.weight_decay > 0.0).then_some(1.0 - lr * scalars.weight_decay);
                let target = master.as_mut().unwrap_or(&mut p.tensor);
                if fused && [&*target, &grad, &*m, &*v].into_iter().all(is_cpu_f32) {
                    // SAFETY: four distinct contiguous f32 CPU tensors (checked above), each `numel` long;
                    // nothing else reads or writes them during the step (autograd is off).
                    unsafe {
                        adamw_cpu::step(f32_slice_mut(target), f32_slice(&grad), f32_slice_mut(m), f32_slice_mut(v), scalars.as_f32(decay), intra_op_threads());
                    }
                } else {
                    step_tensors(target, &grad, m, v, &scalars, decay);
                }
                if let Some(master) = master {
                    p.tensor.copy_(master);
                }
            }
        });
    }

    fn scalars(&self, lr: f64) -> Scalars {
        let t = self.step as f64;
        Scalars {
            beta1: self.beta1,
            beta2: self.beta2,
            bias1: 1.0 - self.beta1.powf(t),
            bias2: 1.0 - self.beta2.powf(t),
            eps: self.eps,
            lr,
            weight_decay: self.weight_decay,
        }
    }

    /// Writes the moment estimates and step count (safetensors) next to the weights of a checkpoint:
    /// the state of the trainables this optimiser owns (all but under sharded data parallelism, where
    /// each rank writes its own file and any world size reads them back by name).
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        self.save_where(path, |_| true)
    }

    /// [`Self::save`] of the owned trainables `which` selects by index (expert parallelism writes a
    /// rank's own experts' state to a file of their own).
    pub fn save_where(&self, path: &Path, which: impl Fn(usize) -> bool) -> anyhow::Result<()> {
        Tensor::write_safetensors(&self.state(which), path).with_context(|| format!("writing {}", path.display()))
    }

    /// The state (moments, fp32 master) of the owned trainables `which` selects by index, and the step
    /// count, under the names `save` writes.
    pub fn state(&self, which: impl Fn(usize) -> bool) -> Vec<(String, Tensor)> {
        let mut named: Vec<(String, Tensor)> = Vec::with_capacity(self.params.len() * 2 + 1);
        let owned = self.params.iter().zip(&self.masters).zip(&self.exp_avg).zip(&self.exp_avg_sq).enumerate().filter(|&(i, _)| self.owned[i] && which(i));
        for (_, (((p, master), m), v)) in owned {
            named.push((format!("{}.exp_avg", p.name), m.shallow_clone()));
            named.push((format!("{}.exp_avg_sq", p.name), v.shallow_clone()));
            if let Some(master) = master {
                named.push((format!("{}.master", p.name), master.shallow_clone()));
            }
        }
        named.push(("step".into(), Tensor::from_slice(&[self.step])));
        named
    }

    /// Restores the owned trainables' state from the files `save` wrote (one, or one per rank of the
    /// job that wrote them: a checkpoint loads into any world size). The files are mapped and only
    /// the owned tensors are read, so a rank never holds the other ranks' state. `split`: the state of
    /// this rank's share of a split model, read from its own files.
    pub fn load(&mut self, paths: &[std::path::PathBuf], split: &std::collections::HashMap<String, Tensor>) -> anyhow::Result<()> {
        let saved = crate::model::checkpoint::Checkpoint::open_files(paths)?;
        let stored = |name: &str| -> Option<anyhow::Result<Tensor>> { split.get(name).map(|t| Ok(t.shallow_clone())).or_else(|| saved.get(name).map(|t| t.to_tensor())) };
        let get = |name: &str| stored(name).with_context(|| format!("optimiser state lacks {name}"))?;
        tch::no_grad(|| -> anyhow::Result<()> {
            for ((((p, master), m), v), _) in self.params.iter().zip(&mut self.masters).zip(&mut self.exp_avg).zip(&mut self.exp_avg_sq).zip(&self.owned).filter(|(_, &own)| own) {
                for (moment, which) in [(&mut *m, "exp_avg"), (&mut *v, "exp_avg_sq")] {
                    let name = format!("{}.{which}", p.name);
                    copy_checked(moment, &get(&name)?, &name)?;
                }
                if let Some(master) = master {
                    // Without a saved master (a checkpoint of an fp32 run), the restored weight is it.
                    let name = format!("{}.master", p.name);
                    match stored(&name) {
                        Some(value) => copy_checked(master, &value?, &name)?,
                        None => master.copy_(&p.tensor),
                    }
                }
            }
            Ok(())
        })?;
        self.step = get("step")?.int64_value(&[0]);
        Ok(())
    }
}

/// Copies a saved tensor into `target`, refusing one of another shape (a checkpoint written for
/// another model or split) instead of broadcasting it.
pub fn copy_checked(target: &mut Tensor, saved: &Tensor, name: &str) -> anyhow::Result<()> {
    anyhow::ensure!(saved.size() == target.size(), "the checkpoint's {name} has shape {:?}, this job's {:?}: it was written for another model or split", saved.size(), target.size());
    target.f_copy_(saved).with_context(|| format!("restoring {name}"))
}

/// One step's scalars (bias corrections for the current step count).
struct Scalars {
    beta1: f64,
    beta2: f64,
    bias1: f64,
    bias2: f64,
    eps: f64,
    lr: f64,
    weight_decay: f64,
}

impl Scalars {
    /// As torch casts them for an fp32 tensor; `decay` is `1 − lr · weight_decay` where it applies.
    fn as_f32(&self, decay: Option<f64>) -> adamw_cpu::StepScalars {
        adamw_cpu::StepScalars {
            beta1: self.beta1 as f32,
            one_minus_beta1: (1.0 - self.beta1) as f32,
            beta2: self.beta2 as f32,
            one_minus_beta2: (1.0 - self.beta2) as f32,
            bias1: self.bias1 as f32,
            bias2: self.bias2 as f32,
            eps: self.eps as f32,
            lr: self.lr as f32,
            decay: decay.map(|d| d as f32),
        }
    }
}

/// The update in tensor operations: any device and dtype (GPU, bf16). The same operations in the same
/// order as the textbook form and as `adamw_cpu::step` (which differs only in rounding its square root
/// correctly), with the temporaries updated in place.
fn step_tensors(param: &mut Tensor, grad: &Tensor, m: &mut Tensor, v: &mut Tensor, s: &Scalars, decay: Option<f64>) {
    let grad = grad.to_kind(Kind::Float);
    if let Some(decay) = decay {
        let _ = param.g_mul_scalar_(decay);
    }
    let _ = m.g_mul_scalar_(s.beta1).g_add_(&(&grad * (1.0 - s.beta1)));
    let mut squared = &grad * &grad;
    let _ = v.g_mul_scalar_(s.beta2).g_add_(&squared.g_mul_scalar_(1.0 - s.beta2));
    let mut denom = &*v / s.bias2;
    let _ = denom.sqrt_().g_add_scalar_(s.eps);
    let mut update = &*m / s.bias1;
    let _ = update.g_div_(&denom).g_mul_scalar_(s.lr);
    let _ = param.g_sub_(&update.to_kind(param.kind()));
}

/// Whether the fused CPU path can read `t` as a plain f32 slice.
fn is_cpu_f32(t: &Tensor) -> bool {
    t.device() == Device::Cpu && t.kind() == Kind::Float && t.is_contiguous() && t.numel() > 0
}

fn intra_op_threads() -> usize {
    usize::try_from(tch::get_num_threads()).unwrap_or(1).max(1)
}

/// The elements of a tensor that `is_cpu_f32` accepted.
fn f32_slice(t: &Tensor) -> &[f32] {
    // SAFETY: contiguous f32 storage of `numel` elements on the CPU, alive as long as `t`.
    unsafe { std::slice::from_raw_parts(t.data_ptr() as *const f32, t.numel()) }
}

/// # Safety
/// As `f32_slice`, and nothing else may access the tensor's storage while the slice lives.
#[allow(clippy::mut_from_ref)]
unsafe fn f32_slice_mut(t: &Tensor) -> &mut [f32] {
    std::slice::from_raw_parts_mut(t.data_ptr() as *mut f32, t.numel())
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
    fn one_pass_cpu_update_matches_the_tensor_form() {
        let run = |fused: bool| {
            tch::manual_seed(5);
            let w = Tensor::randn([300, 257], (Kind::Float, Device::Cpu)).set_requires_grad(true);
            let b = Tensor::randn([257], (Kind::Float, Device::Cpu)).set_requires_grad(true);
            let params = vec![
                Trainable { name: "w".into(), tensor: w.shallow_clone(), decay: true },
                Trainable { name: "b".into(), tensor: b.shallow_clone(), decay: false },
            ];
            let mut opt = AdamW::new(params, 0.1);
            opt.fused_cpu = fused;
            for step in 0..3 {
                opt.zero_grad();
                let loss = (w.sin() * (step + 1) as f64 + &b).pow_tensor_scalar(2).sum(Kind::Float);
                loss.backward();
                opt.step(1e-2);
            }
            let copy = |t: &Tensor| t.detach().copy();
            [copy(&w), copy(&b), copy(&opt.exp_avg[0]), copy(&opt.exp_avg_sq[0]), copy(&opt.exp_avg[1])]
        };
        // torch's vectorised sqrt is within an ulp of the correctly rounded one the fused path uses;
        // everything else is the same f32 operation in the same order.
        for (i, (fused, tensors)) in run(true).iter().zip(run(false)).enumerate() {
            let worst = (fused - &tensors).abs().max().double_value(&[]);
            let scale = tensors.abs().max().double_value(&[]);
            assert!(worst <= 1e-6 * scale, "tensor {i}: the fused update differs by {worst} (values up to {scale})");
        }
    }

    /// The device form of clipping (no norm read back; a non-contiguous gradient takes it on the CPU)
    /// scales as the host form does, and leaves gradients under the limit untouched.
    #[test]
    fn clipping_on_the_device_equals_clipping_on_the_host() {
        let clipped = |contiguous: bool, max_norm: f64| {
            tch::manual_seed(8);
            let w = Tensor::randn([64, 48], (Kind::Float, Device::Cpu)).set_requires_grad(true);
            let mut opt = AdamW::new(vec![Trainable { name: "w".into(), tensor: w.shallow_clone(), decay: true }], 0.0);
            (w.sin() * 3.0).sum(Kind::Float).backward();
            if !contiguous {
                // A transposed copy with the same values: the host path takes contiguous f32 only.
                let mut grad = w.grad();
                let strided = grad.detach().t_().contiguous().t_();
                tch::no_grad(|| grad.set_data(&strided));
                assert!(!w.grad().is_contiguous());
            }
            opt.clip_grad_norm(max_norm);
            w.grad().detach().copy()
        };
        for max_norm in [1.0, 1e6] {
            let (host, device) = (clipped(true, max_norm), clipped(false, max_norm));
            let worst = (&host - &device).abs().max().double_value(&[]);
            assert!(worst <= 1e-6 * host.abs().max().double_value(&[]), "max_norm {max_norm}: differs by {worst}");
        }
        let norm = clipped(false, 1.0).pow_tensor_scalar(2).sum(Kind::Float).sqrt().double_value(&[]);
        assert!((norm - 1.0).abs() < 1e-5, "clipped norm {norm}");
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
