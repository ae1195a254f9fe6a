//! The SFT → QAT workflow on one device: tokenise, SFT with the router frozen, evaluate the
//! post-training-quantized (PTQ) model, QAT with MXFP4 fake-quantized experts, evaluate again.

use std::time::Instant;

use anyhow::{bail, Context};
use moetune_types::{Example, RunnerEventKind, TrainingSpec};
use tch::nn::{self, OptimizerConfig};
use tch::{Device, Kind, Tensor};

use crate::model::{tiny, ForwardMode, MoeModel};
use crate::quant::mxfp4;
use crate::text::TextCodec;

const IGNORE: i64 = -100;

/// A tokenised example: ids and labels (`-100` on prompt tokens: the loss is on the response only).
struct Sample {
    ids: Vec<i64>,
    labels: Vec<i64>,
}

fn tokenize(codec: &TextCodec, examples: &[Example], seq_len: usize) -> anyhow::Result<Vec<Sample>> {
    let mut samples = Vec::with_capacity(examples.len());
    for (i, example) in examples.iter().enumerate() {
        let (mut ids, mut labels) = codec.encode_example(example, IGNORE).with_context(|| format!("example {}", i + 1))?;
        ids.truncate(seq_len);
        labels.truncate(seq_len);
        if labels.iter().all(|&l| l == IGNORE) {
            continue; // prompt alone fills seq_len: nothing to learn from this example
        }
        samples.push(Sample { ids, labels });
    }
    if samples.is_empty() {
        bail!("no example has response tokens within seq_len={seq_len}; raise seq_len or shorten prompts");
    }
    Ok(samples)
}

/// Pads a batch to its longest sample.
fn collate(samples: &[&Sample], pad: i64, device: Device) -> (Tensor, Tensor) {
    let width = samples.iter().map(|s| s.ids.len()).max().unwrap_or(1);
    let mut ids = Vec::with_capacity(samples.len() * width);
    let mut labels = Vec::with_capacity(samples.len() * width);
    for s in samples {
        ids.extend(s.ids.iter().copied().chain(std::iter::repeat_n(pad, width - s.ids.len())));
        labels.extend(s.labels.iter().copied().chain(std::iter::repeat_n(IGNORE, width - s.labels.len())));
    }
    let shape = [samples.len() as i64, width as i64];
    (Tensor::from_slice(&ids).view(shape).to(device), Tensor::from_slice(&labels).view(shape).to(device))
}

/// Next-token cross entropy over response tokens.
fn loss(model: &MoeModel, mode: ForwardMode, ids: &Tensor, labels: &Tensor) -> Tensor {
    let logits = model.forward(ids, mode).logits;
    let vocab = logits.size()[2];
    let t = ids.size()[1];
    let shifted_logits = logits.narrow(1, 0, t - 1).reshape([-1, vocab]).to_kind(Kind::Float);
    let shifted_labels = labels.narrow(1, 1, t - 1).reshape([-1]);
    shifted_logits.cross_entropy_loss::<Tensor>(&shifted_labels, None, tch::Reduction::Mean, IGNORE, 0.0)
}

/// Linear warmup over the first 10% of steps, then cosine decay to 10% of the peak.
pub fn learning_rate(peak: f64, step: u32, total: u32) -> f64 {
    let warmup = (total / 10).max(1);
    if step < warmup {
        return peak * f64::from(step + 1) / f64::from(warmup);
    }
    let progress = f64::from(step - warmup) / f64::from((total - warmup).max(1));
    peak * (0.1 + 0.9 * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()))
}

/// Deterministic shuffled order of batches over as many epochs as needed.
struct BatchPlan {
    order: Vec<usize>,
    cursor: usize,
    batch: usize,
    rng: u64,
}

impl BatchPlan {
    fn new(n: usize, batch: usize, seed: u64) -> Self {
        let mut plan = Self { order: (0..n).collect(), cursor: n, batch: batch.min(n), rng: seed | 1 };
        plan.reshuffle();
        plan
    }

    fn reshuffle(&mut self) {
        for i in (1..self.order.len()).rev() {
            // xorshift64: enough for shuffling, and no extra dependency
            self.rng ^= self.rng << 13;
            self.rng ^= self.rng >> 7;
            self.rng ^= self.rng << 17;
            self.order.swap(i, (self.rng % (i as u64 + 1)) as usize);
        }
        self.cursor = 0;
    }

    fn next(&mut self) -> Vec<usize> {
        if self.cursor + self.batch > self.order.len() {
            self.reshuffle();
        }
        let picked = self.order[self.cursor..self.cursor + self.batch].to_vec();
        self.cursor += self.batch;
        picked
    }
}

/// What the workflow produced.
pub struct TrainOutput {
    pub model: MoeModel,
    pub vars: nn::VarStore,
    pub trained_tokens: i64,
    pub summary: serde_json::Value,
    pub codec: TextCodec,
}

/// The base model and its tokenizer: the built-in tiny model, or a Hugging Face model directory.
fn base_model(name: &str, device: Device) -> anyhow::Result<(nn::VarStore, MoeModel, TextCodec)> {
    if name == tiny::NAME {
        let vars = nn::VarStore::new(device);
        let model = crate::model::new_seeded(&vars, tiny::config(), tiny::BASE_SEED);
        return Ok((vars, model, TextCodec::tiny()?));
    }
    let dir = std::path::Path::new(name);
    if dir.join("config.json").exists() {
        // Training runs in fp32 (DESIGN.md §4: bf16 is not usable on CPU; on CUDA this is a later option).
        let (vars, model) = MoeModel::load_dir(dir, device, Kind::Float)?;
        return Ok((vars, model, TextCodec::from_dir(dir)?));
    }
    bail!("model '{name}' is not available on this runner (supported: {}, or a local model directory)", tiny::NAME)
}

/// Runs SFT then QAT, reporting each step through `report`.
pub fn run(
    spec: &TrainingSpec,
    examples: &[Example],
    device: Device,
    mut report: impl FnMut(RunnerEventKind),
) -> anyhow::Result<TrainOutput> {
    let (vars, model, codec) = base_model(&spec.model, device)?;
    let samples = tokenize(&codec, examples, spec.moe.seq_len as usize)?;
    let pad = codec.pad_id();
    tch::manual_seed(spec.seed as i64);
    let sft_mode = ForwardMode::default();
    let qat_transform = |w: &Tensor| mxfp4::fake_quantize_ste(w);
    let qat_mode = ForwardMode { expert_transform: Some(&qat_transform), ..Default::default() };

    let batch = spec.batch_size as usize;
    let steps_per_epoch = samples.len().div_ceil(batch) as u32;
    let sft_steps = spec.moe.sft_steps.min(spec.n_epochs * steps_per_epoch).max(1);
    let mut plan = BatchPlan::new(samples.len(), batch, spec.seed);
    let eval_batches: Vec<(Tensor, Tensor)> = samples
        .chunks(batch)
        .take(4)
        .map(|chunk| collate(&chunk.iter().collect::<Vec<_>>(), pad, device))
        .collect();
    let evaluate = |mode: ForwardMode| -> f64 {
        tch::no_grad(|| {
            let total: f64 = eval_batches.iter().map(|(ids, labels)| loss(&model, mode, ids, labels).double_value(&[])).sum();
            total / eval_batches.len() as f64
        })
    };

    let mut optimizer = nn::AdamW::default().build(&vars, spec.moe.learning_rate)?;
    let base_loss = evaluate(sft_mode);
    report(RunnerEventKind::Message { level: "info".into(), message: format!(
        "SFT: {sft_steps} steps, batch {batch}, {} examples, router frozen, base eval loss {base_loss:.4}", samples.len()) });
    let mut stage = Stage { name: "sft", steps: sft_steps, peak_lr: spec.moe.learning_rate, log_every: spec.moe.log_every_n_steps, mode: sft_mode, pad };
    let (sft_losses, mut tokens) = stage.train(&model, &mut optimizer, &samples, &mut plan, device, &mut report)?;
    let sft_loss = evaluate(sft_mode);
    let ptq_loss = evaluate(qat_mode);
    let qat_lr = spec.moe.qat_learning_rate.unwrap_or(spec.moe.learning_rate / 10.0);
    report(RunnerEventKind::Message { level: "info".into(), message: format!(
        "QAT ({:?}): {} steps at lr {qat_lr:e}; eval loss after SFT {sft_loss:.4}, after PTQ {ptq_loss:.4}", spec.moe.qat_format, spec.moe.qat_steps) });
    stage = Stage { name: "qat", steps: spec.moe.qat_steps, peak_lr: qat_lr, log_every: spec.moe.log_every_n_steps, mode: qat_mode, pad };
    let (qat_losses, qat_tokens) = stage.train(&model, &mut optimizer, &samples, &mut plan, device, &mut report)?;
    tokens += qat_tokens;
    let qat_loss = evaluate(qat_mode);

    let summary = serde_json::json!({
        "device": format!("{device:?}"),
        "dtype": "float32",
        "sft": { "steps": sft_steps, "first_loss": sft_losses.first(), "last_loss": sft_losses.last() },
        "qat": { "steps": spec.moe.qat_steps, "format": spec.moe.qat_format, "first_loss": qat_losses.first(), "last_loss": qat_losses.last() },
        "eval_loss": { "base": base_loss, "sft": sft_loss, "ptq": ptq_loss, "qat": qat_loss },
    });
    Ok(TrainOutput { model, vars, trained_tokens: tokens, summary, codec })
}

struct Stage<'a> {
    name: &'static str,
    steps: u32,
    peak_lr: f64,
    log_every: u32,
    mode: ForwardMode<'a>,
    pad: i64,
}

impl Stage<'_> {
    /// Returns the per-step losses and the number of tokens trained on.
    fn train(
        &self,
        model: &MoeModel,
        optimizer: &mut nn::Optimizer,
        samples: &[Sample],
        plan: &mut BatchPlan,
        device: Device,
        report: &mut impl FnMut(RunnerEventKind),
    ) -> anyhow::Result<(Vec<f64>, i64)> {
        let mut losses = Vec::with_capacity(self.steps as usize);
        let mut tokens = 0i64;
        for step in 0..self.steps {
            let started = Instant::now();
            let lr = learning_rate(self.peak_lr, step, self.steps);
            optimizer.set_lr(lr);
            let picked: Vec<&Sample> = plan.next().into_iter().map(|i| &samples[i]).collect();
            let step_tokens: usize = picked.iter().map(|s| s.ids.len()).sum();
            let (ids, labels) = collate(&picked, self.pad, device);
            let value = loss(model, self.mode, &ids, &labels);
            optimizer.backward_step_clip_norm(&value, 1.0);
            let value = value.double_value(&[]);
            if !value.is_finite() {
                bail!("{} loss became {value} at step {}; lower the learning rate", self.name, step + 1);
            }
            losses.push(value);
            tokens += step_tokens as i64;
            if (step + 1) % self.log_every == 0 || step + 1 == self.steps {
                report(RunnerEventKind::Metrics {
                    stage: self.name.into(),
                    step: step + 1,
                    total_steps: self.steps,
                    train_loss: value,
                    learning_rate: lr,
                    tokens_per_second: step_tokens as f64 / started.elapsed().as_secs_f64(),
                });
            }
        }
        Ok((losses, tokens))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_warms_up_then_decays() {
        assert!((learning_rate(1.0, 0, 100) - 0.1).abs() < 1e-12);
        assert!((learning_rate(1.0, 10, 100) - 1.0).abs() < 1e-12);
        assert!((learning_rate(1.0, 99, 100) - 0.1).abs() < 1e-3);
    }
}
