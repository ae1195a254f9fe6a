//! Evaluation: validation loss and next-token accuracy, routing agreement between two models, and
//! task accuracy on prompts with expected answers.

use moetune_types::EvalPrompt;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use super::data::{collate, Sample, IGNORE};
use crate::model::checkpoint::Checkpoint;
use crate::model::{ForwardMode, MoeModel};
use crate::text::TextCodec;

/// A padded batch: ids, labels and the `[batch·seq]` mask of real (non-padding) positions.
pub struct Batch {
    pub ids: Tensor,
    pub labels: Tensor,
    pub valid: Tensor,
    /// The positions with a label among the shifted targets `labels[:, 1:]` flattened (row
    /// `b·(seq − 1) + p` for label `p + 1` of sequence `b`). Known on the host when the batch is made,
    /// so a training step never reads its tensors back to find them.
    pub labelled_rows: Tensor,
    /// Real (non-padding) tokens.
    real_tokens: i64,
}

impl Batch {
    pub fn new(samples: &[&Sample], pad: i64, device: Device) -> Self {
        let (ids, labels) = collate(samples, pad, device);
        let width = ids.size()[1];
        let lengths: Vec<i64> = samples.iter().map(|s| s.ids.len() as i64).collect();
        let real_tokens = lengths.iter().sum();
        let lengths = Tensor::from_slice(&lengths).to(device);
        let valid = Tensor::arange(width, (Kind::Int64, device)).unsqueeze(0).lt_tensor(&lengths.unsqueeze(1)).flatten(0, -1);
        let targets = width - 1;
        let rows: Vec<i64> = samples
            .iter()
            .enumerate()
            .flat_map(|(b, s)| (0..targets).filter(move |&p| s.labels.get(p as usize + 1).is_some_and(|&l| l != IGNORE)).map(move |p| b as i64 * targets + p))
            .collect();
        let labelled_rows = Tensor::from_slice(&rows).to(device);
        Self { ids, labels, valid, labelled_rows, real_tokens }
    }

    pub fn tokens(&self) -> i64 {
        self.real_tokens
    }
}

/// Mean next-token cross entropy over labelled positions.
pub fn token_loss(logits: &Tensor, labels: &Tensor) -> Tensor {
    let (vocab, t) = (logits.size()[2], labels.size()[1]);
    let shifted_logits = logits.narrow(1, 0, t - 1).reshape([-1, vocab]).to_kind(Kind::Float);
    let shifted_labels = labels.narrow(1, 1, t - 1).reshape([-1]);
    shifted_logits.cross_entropy_loss::<Tensor>(&shifted_labels, None, tch::Reduction::Mean, IGNORE, 0.0)
}

/// Validation figures of one model variant.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Scores {
    pub loss: f64,
    pub token_accuracy: f64,
}

/// Loss (token-weighted) and accuracy of `mode` over `batches`; also each batch's per-layer top-k.
pub fn score(model: &MoeModel, mode: ForwardMode, batches: &[Batch]) -> (Scores, Vec<Vec<Tensor>>) {
    tch::no_grad(|| {
        let (mut loss_sum, mut correct, mut count) = (0.0, 0i64, 0i64);
        let mut top_k = Vec::with_capacity(batches.len());
        for batch in batches {
            let out = model.forward(&batch.ids, mode);
            let t = batch.ids.size()[1];
            let labels = batch.labels.narrow(1, 1, t - 1);
            let mask = labels.ne(IGNORE);
            let n = mask.sum(Kind::Int64).int64_value(&[]);
            let predicted = out.logits.narrow(1, 0, t - 1).argmax(-1, false);
            correct += predicted.eq_tensor(&labels).logical_and(&mask).sum(Kind::Int64).int64_value(&[]);
            loss_sum += token_loss(&out.logits, &batch.labels).double_value(&[]) * n as f64;
            count += n;
            top_k.push(out.router_top_k.into_iter().map(|(_, k)| k.sort(-1, false).0.to_device(Device::Cpu)).collect());
        }
        let count_f = count.max(1) as f64;
        (Scores { loss: loss_sum / count_f, token_accuracy: correct as f64 / count_f }, top_k)
    })
}

/// The router top-k of `batches` (as [`score`] gives them) had the packed experts not been quantised:
/// each MoE layer's experts are read dense from the checkpoint in `dir`, one layer at a time, and all
/// batches pass through that layer before the next is read, so at most one layer is dense at once.
pub fn dense_base_top_k(model: &MoeModel, dir: &std::path::Path, batches: &[Batch]) -> anyhow::Result<Vec<Vec<Tensor>>> {
    let ckpt = Checkpoint::open(dir)?;
    tch::no_grad(|| {
        let mut hidden: Vec<Tensor> = batches.iter().map(|b| model.embed(&b.ids)).collect();
        let mut top_k: Vec<Vec<Tensor>> = batches.iter().map(|_| Vec::new()).collect();
        let kind = hidden.first().map_or(Kind::Float, Tensor::kind);
        for i in 0..model.num_layers() {
            let dense = model.checkpoint_experts(&ckpt, i, kind)?;
            for (h, chosen) in hidden.iter_mut().zip(&mut top_k) {
                let rope = model.rope(h.size()[1], h.device(), h.kind());
                let forward = || model.layer_forward(i, h, &rope, ForwardMode::default());
                let out = match &dense {
                    Some((gate_up, down)) => model.with_dense_experts(i, gate_up, down, forward),
                    None => forward(),
                };
                if let Some((_, k)) = out.router {
                    chosen.push(k.sort(-1, false).0.to_device(Device::Cpu));
                }
                *h = out.hidden;
            }
        }
        Ok(top_k)
    })
}

/// Per MoE layer, the fraction of real tokens whose top-k expert set is the same in both runs.
pub fn routing_agreement(reference: &[Vec<Tensor>], other: &[Vec<Tensor>], batches: &[Batch]) -> Vec<f64> {
    let layers = reference.first().map_or(0, Vec::len);
    (0..layers)
        .map(|layer| {
            let (mut same, mut total) = (0i64, 0i64);
            for ((a, b), batch) in reference.iter().zip(other).zip(batches) {
                let valid = batch.valid.to_device(Device::Cpu);
                let equal = a[layer].eq_tensor(&b[layer]).all_dim(-1, false).logical_and(&valid);
                same += equal.sum(Kind::Int64).int64_value(&[]);
                total += valid.sum(Kind::Int64).int64_value(&[]);
            }
            same as f64 / total.max(1) as f64
        })
        .collect()
}

/// Lowercase, trim, collapse whitespace and drop trailing punctuation: "exact match after normalisation".
pub fn normalize_answer(text: &str) -> String {
    let lowered = text.to_lowercase();
    let collapsed = lowered.split_whitespace().collect::<Vec<_>>().join(" ");
    collapsed.trim_end_matches(['.', '!', '?', ',', ';', ':']).to_string()
}

/// Fraction of prompts whose greedy answer matches the expected one.
pub fn task_accuracy(model: &MoeModel, mode: ForwardMode, codec: &TextCodec, prompts: &[(Vec<i64>, String)], device: Device) -> f64 {
    if prompts.is_empty() {
        return 0.0;
    }
    let hits = prompts
        .iter()
        .filter(|(ids, answer)| {
            let max_new = (codec.encode(answer).map_or(16, |a| a.len()) + 8).min(256);
            let mut generated = model.generate_greedy_with(ids, max_new, device, mode);
            generated.retain(|t| !model.config.eos_token_ids.contains(t));
            let text = codec.decode(&generated).unwrap_or_default();
            normalize_answer(&text) == normalize_answer(answer)
        })
        .count();
    hits as f64 / prompts.len() as f64
}

/// Prompt ids of the job's eval prompts, rendered like training prompts.
pub fn encode_eval_prompts(codec: &TextCodec, prompts: &[EvalPrompt]) -> anyhow::Result<Vec<(Vec<i64>, String)>> {
    prompts
        .iter()
        .map(|p| {
            let example = moetune_types::Example { system: None, instruction: p.prompt.clone(), input: String::new(), response: String::new(), messages: vec![] };
            Ok((codec.encode_prompt(&example)?, p.answer.clone()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_normalised() {
        assert_eq!(normalize_answer("  The  Answer is 42. "), "the answer is 42");
        assert_eq!(normalize_answer("YES!"), "yes");
    }

    /// The labelled positions found on the host are those a read-back of the labels finds.
    #[test]
    fn labelled_rows_are_the_labelled_shifted_targets() {
        let sample = |ids: Vec<i64>, labels: Vec<i64>| Sample { ids, labels, example_count: 1 };
        let samples = [
            sample(vec![1, 2, 3, 4, 5], vec![IGNORE, IGNORE, 3, 4, 5]),
            sample(vec![6, 7, 8], vec![IGNORE, 7, IGNORE]),
            sample(vec![9], vec![IGNORE]),
        ];
        let batch = Batch::new(&samples.iter().collect::<Vec<_>>(), 0, Device::Cpu);
        let t = batch.labels.size()[1];
        let want = batch.labels.narrow(1, 1, t - 1).reshape([-1]).ne(IGNORE).nonzero().squeeze_dim(1);
        assert!(batch.labelled_rows.equal(&want), "{:?} vs {:?}", batch.labelled_rows, want);
        assert_eq!(Vec::<i64>::try_from(&batch.labelled_rows).unwrap(), [1, 2, 3, 4]);
        assert_eq!(batch.tokens(), 9);
        assert_eq!(batch.tokens(), batch.valid.sum(Kind::Int64).int64_value(&[]));
    }
}
