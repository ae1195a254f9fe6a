//! Training data as the optimiser sees it: tokenised samples, the validation hold-out, optional packing,
//! and a resumable shuffled order.

use anyhow::{bail, Context};
use moetune_types::Example;
use serde::{Deserialize, Serialize};
use tch::{Device, Tensor};

use crate::text::TextCodec;

pub const IGNORE: i64 = -100;

/// A tokenised sequence: ids and labels (`IGNORE` where no loss is taken).
#[derive(Debug, Clone)]
pub struct Sample {
    pub ids: Vec<i64>,
    pub labels: Vec<i64>,
    /// Where each packed example starts (position resets are not needed: attention stays causal over
    /// the whole sequence, as in HF's default packing without `position_ids`).
    pub example_count: usize,
}

/// Tokenises examples; `response_only`: labels only on the response. Examples whose response falls
/// entirely beyond `seq_len` are skipped (they would train on nothing).
pub fn tokenize(codec: &TextCodec, examples: &[Example], seq_len: usize, response_only: bool) -> anyhow::Result<Vec<Sample>> {
    let mut samples = Vec::with_capacity(examples.len());
    for (i, example) in examples.iter().enumerate() {
        let (mut ids, mut labels) = codec.encode_example(example, IGNORE).with_context(|| format!("example {}", i + 1))?;
        if !response_only {
            labels.clone_from(&ids);
        }
        ids.truncate(seq_len);
        labels.truncate(seq_len);
        if labels.iter().all(|&l| l == IGNORE) {
            continue;
        }
        samples.push(Sample { ids, labels, example_count: 1 });
    }
    if samples.is_empty() {
        bail!("no example has response tokens within seq_len={seq_len}; raise seq_len or shorten prompts");
    }
    Ok(samples)
}

/// Greedy first-fit packing of whole examples into sequences of at most `seq_len` tokens.
pub fn pack(samples: Vec<Sample>, seq_len: usize) -> Vec<Sample> {
    let mut packed: Vec<Sample> = Vec::new();
    for sample in samples {
        match packed.iter_mut().find(|p| p.ids.len() + sample.ids.len() <= seq_len) {
            Some(target) => {
                target.ids.extend(&sample.ids);
                target.labels.extend(&sample.labels);
                target.example_count += 1;
            }
            None => packed.push(sample),
        }
    }
    packed
}

/// Splits off a deterministic validation set (every k-th example) when no validation file was given.
pub fn split_validation(examples: Vec<Example>, fraction: f64) -> (Vec<Example>, Vec<Example>) {
    if fraction <= 0.0 || examples.len() < 4 {
        return (examples, Vec::new());
    }
    let held = ((examples.len() as f64 * fraction).round() as usize).clamp(1, examples.len() / 2);
    let stride = examples.len() / held;
    let (mut train, mut validation) = (Vec::new(), Vec::new());
    for (i, example) in examples.into_iter().enumerate() {
        if i % stride == stride - 1 && validation.len() < held {
            validation.push(example);
        } else {
            train.push(example);
        }
    }
    (train, validation)
}

/// Pads a batch to its longest sample.
pub fn collate(samples: &[&Sample], pad: i64, device: Device) -> (Tensor, Tensor) {
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

/// Deterministic shuffled order of batches over as many epochs as needed. Its whole state is
/// serialisable, so a resumed job sees exactly the batches the interrupted one would have.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchPlan {
    order: Vec<usize>,
    cursor: usize,
    batch: usize,
    rng: u64,
}

impl BatchPlan {
    pub fn new(n: usize, batch: usize, seed: u64) -> Self {
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

    pub fn next_batch(&mut self) -> Vec<usize> {
        if self.cursor + self.batch > self.order.len() {
            self.reshuffle();
        }
        let picked = self.order[self.cursor..self.cursor + self.batch].to_vec();
        self.cursor += self.batch;
        picked
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(n: usize) -> Sample {
        Sample { ids: vec![1; n], labels: vec![1; n], example_count: 1 }
    }

    #[test]
    fn packing_keeps_examples_whole_and_under_the_limit() {
        let packed = pack(vec![sample(6), sample(5), sample(4), sample(3)], 10);
        assert!(packed.iter().all(|p| p.ids.len() <= 10));
        assert_eq!(packed.iter().map(|p| p.example_count).sum::<usize>(), 4);
        assert_eq!(packed.len(), 2); // 6+4, 5+3
    }

    #[test]
    fn plan_state_resumes_the_same_order() {
        let mut a = BatchPlan::new(10, 3, 7);
        a.next_batch();
        let mut b: BatchPlan = serde_json::from_str(&serde_json::to_string(&a).unwrap()).unwrap();
        for _ in 0..10 {
            assert_eq!(a.next_batch(), b.next_batch());
        }
    }

    #[test]
    fn validation_split_is_deterministic_and_bounded() {
        let examples: Vec<Example> = (0..20)
            .map(|i| Example { system: None, instruction: i.to_string(), input: String::new(), response: "r".into(), messages: vec![] })
            .collect();
        let (train, validation) = split_validation(examples, 0.1);
        assert_eq!((train.len(), validation.len()), (18, 2));
    }
}
