//! What a job will cost before it runs: how many steps and tokens it trains, and how long it takes on
//! a class of runners, from what runners of that class measured on recent jobs of the same model and
//! method. The API's `POST /v1/fine_tuning/jobs/estimate` answers with these; the scheduler records a
//! [`Measurement`] for every job that succeeds.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{RunnerInfo, TrainingSpec};

/// How many recent jobs of a model, method and runner class an estimate reads.
pub const RECENT_JOBS: i64 = 20;

/// The training a job's spec and dataset describe, step for step as the runner plans it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TrainingPlan {
    /// Examples trained on: the training file's, less the `validation_split` held out when no
    /// validation file is given.
    pub training_examples: u64,
    /// Sequences the runner trains on per epoch (examples, or fewer when `packing` joins them).
    pub sequences: u64,
    /// `batch_size × gradient_accumulation_steps`.
    pub sequences_per_step: u64,
    /// `max_steps`, or `n_epochs` passes over the sequences.
    pub sft_steps: u32,
    pub qat_steps: u32,
    /// Tokens per sequence, from the file's estimate (characters / 4), cut at `seq_len`.
    pub tokens_per_sequence: f64,
    /// `(sft_steps + qat_steps) × sequences_per_step × tokens_per_sequence`.
    pub estimated_tokens: u64,
}

/// The plan for `spec` on a training file of `examples` lines and `estimated_tokens` tokens
/// (characters / 4). `validation_file` says whether the job names one (then nothing is held out).
pub fn plan(spec: &TrainingSpec, examples: u64, estimated_tokens: u64, validation_file: bool) -> TrainingPlan {
    let options = &spec.moe;
    let training_examples = if validation_file { examples } else { examples - held_out(examples, options.validation_split) };
    let seq_len = f64::from(options.seq_len.max(1));
    let per_example = if examples == 0 { 0.0 } else { estimated_tokens as f64 / examples as f64 };
    let tokens_per_example = per_example.min(seq_len);
    let sequences = if options.packing && tokens_per_example > 0.0 {
        // First-fit packing fills sequences up to seq_len: about this many.
        ((training_examples as f64 * tokens_per_example) / seq_len).ceil().max(1.0) as u64
    } else {
        training_examples
    };
    let tokens_per_sequence = if sequences == 0 { 0.0 } else { training_examples as f64 * tokens_per_example / sequences as f64 };
    let sequences_per_step = u64::from(spec.batch_size) * u64::from(options.gradient_accumulation_steps.max(1));
    let steps_per_epoch = sequences.div_ceil(sequences_per_step).max(1) as u32;
    let sft_steps = options.max_steps.unwrap_or(spec.n_epochs * steps_per_epoch).max(1);
    let qat_steps = options.qat.steps;
    let estimated_tokens = (f64::from(sft_steps + qat_steps) * sequences_per_step as f64 * tokens_per_sequence).round() as u64;
    TrainingPlan { training_examples, sequences, sequences_per_step, sft_steps, qat_steps, tokens_per_sequence, estimated_tokens }
}

/// Examples the runner holds out for validation when no validation file is given (its
/// `split_validation`: none below 4 examples, at least one, at most half).
fn held_out(examples: u64, fraction: f64) -> u64 {
    if fraction <= 0.0 || examples < 4 {
        return 0;
    }
    ((examples as f64 * fraction).round() as u64).clamp(1, examples / 2)
}

/// Runners of one class are interchangeable for estimates: CPU runners, or CUDA runners of one GPU
/// model as the operator named it (`cuda:H100-80GB`; the GPU's memory when it named none).
pub fn runner_class(info: &RunnerInfo) -> String {
    match (info.device.as_str(), info.gpu_model.trim()) {
        ("cuda", "") => format!("cuda:{}GiB", info.gpu_memory_bytes >> 30),
        ("cuda", model) => format!("cuda:{model}"),
        (device, _) => device.to_string(),
    }
}

/// What one succeeded job measured, recorded by the scheduler when it succeeds.
#[derive(Debug, Clone, PartialEq)]
pub struct Measurement {
    /// What [`plan`] said for the job.
    pub estimated_tokens: i64,
    /// What the runner trained on (tokens under the loss, every attempt).
    pub trained_tokens: i64,
    /// Time in the training steps (forward, backward, update, periodic validation), every attempt.
    pub training_seconds: f64,
    /// Started to succeeded, for a job that ran in one attempt (a paused or handed-over one has none).
    pub wall_seconds: Option<f64>,
}

/// What runners of one class measured on recent jobs of one model and method.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Throughput {
    /// How many jobs the figures are the medians of.
    pub jobs: u32,
    /// Trained tokens per second of training steps (periodic validation included).
    pub tokens_per_second: f64,
    /// Time outside the steps: loading the model and data, evaluations, the merge, the export and
    /// the uploads.
    pub overhead_seconds: f64,
}

/// The medians of `measurements`; none without a measurement that trained for a measurable time.
pub fn throughput(measurements: &[Measurement]) -> Option<Throughput> {
    let timed: Vec<&Measurement> = measurements.iter().filter(|m| m.training_seconds > 0.0 && m.trained_tokens > 0).collect();
    let tokens_per_second = median(timed.iter().map(|m| m.trained_tokens as f64 / m.training_seconds).collect())?;
    let overhead_seconds = median(timed.iter().filter_map(|m| m.wall_seconds.map(|w| (w - m.training_seconds).max(0.0))).collect()).unwrap_or(0.0);
    Some(Throughput { jobs: timed.len() as u32, tokens_per_second, overhead_seconds })
}

/// Trained tokens per estimated token on recent jobs of a model: the estimate counts characters / 4,
/// the runner counts its tokenizer's tokens under the loss (prompts excluded with
/// `response_only_loss`). 1 with no measurement.
pub fn tokens_per_estimated_token(measurements: &[Measurement]) -> f64 {
    median(measurements.iter().filter(|m| m.estimated_tokens > 0).map(|m| m.trained_tokens as f64 / m.estimated_tokens as f64).collect()).unwrap_or(1.0)
}

/// Seconds a job training `tokens` takes on a runner that measured `throughput`.
pub fn expected_seconds(tokens: f64, throughput: &Throughput) -> f64 {
    throughput.overhead_seconds + tokens / throughput.tokens_per_second
}

fn median(mut values: Vec<f64>) -> Option<f64> {
    values.retain(|v| v.is_finite());
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 { values[mid] } else { (values[mid - 1] + values[mid]) / 2.0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(edit: impl FnOnce(&mut TrainingSpec)) -> TrainingSpec {
        let mut spec = TrainingSpec { model: "m".into(), n_epochs: 2, batch_size: 4, seed: 0, moe: Default::default(), routing_profile: None };
        spec.moe.qat.steps = 3;
        edit(&mut spec);
        spec
    }

    #[test]
    fn steps_follow_the_runner_plan() {
        // 50 examples, 5 % held out (3 rounded... 2.5 → 3): 47 train; ceil(47 / 4) = 12 steps an epoch.
        let plan = plan(&spec(|s| s.moe.validation_split = 0.05), 50, 5_000, false);
        assert_eq!((plan.training_examples, plan.sequences, plan.sft_steps, plan.qat_steps), (47, 47, 24, 3));
        assert_eq!(plan.estimated_tokens, 27 * 4 * 100);
        // With a validation file nothing is held out; max_steps wins over epochs.
        let plan = super::plan(&spec(|s| s.moe.max_steps = Some(5)), 50, 5_000, true);
        assert_eq!((plan.training_examples, plan.sft_steps), (50, 5));
        // Gradient accumulation takes more sequences per step.
        let plan = super::plan(&spec(|s| s.moe.gradient_accumulation_steps = 3), 48, 4_800, true);
        assert_eq!((plan.sequences_per_step, plan.sft_steps), (12, 8));
    }

    #[test]
    fn long_examples_are_cut_and_short_ones_packed() {
        let cut = plan(&spec(|s| s.moe.seq_len = 64), 10, 10_000, true);
        assert_eq!(cut.tokens_per_sequence, 64.0);
        let packed = plan(&spec(|s| (s.moe.seq_len, s.moe.packing) = (100, true)), 100, 2_500, true);
        assert_eq!((packed.sequences, packed.tokens_per_sequence), (25, 100.0));
    }

    #[test]
    fn throughput_is_the_median_of_recent_jobs() {
        let m = |tokens: i64, train: f64, wall: Option<f64>| Measurement { estimated_tokens: tokens / 2, trained_tokens: tokens, training_seconds: train, wall_seconds: wall };
        let measured = throughput(&[m(1000, 10.0, Some(40.0)), m(3000, 10.0, None), m(2000, 10.0, Some(30.0)), m(5, 0.0, Some(1.0))]).unwrap();
        assert_eq!(measured, Throughput { jobs: 3, tokens_per_second: 200.0, overhead_seconds: 25.0 });
        assert_eq!(expected_seconds(4000.0, &measured), 45.0);
        assert_eq!(tokens_per_estimated_token(&[m(1000, 1.0, None)]), 2.0);
        assert_eq!(tokens_per_estimated_token(&[]), 1.0);
        assert_eq!(throughput(&[]), None);
    }

    #[test]
    fn runner_classes_name_the_gpu() {
        let info = |device: &str, model: &str| RunnerInfo { gpu_model: model.into(), ..RunnerInfo::for_tests(device, 80) };
        assert_eq!(runner_class(&info("cuda", "H100-80GB")), "cuda:H100-80GB");
        assert_eq!(runner_class(&info("cuda", "")), "cuda:80GiB");
        assert_eq!(runner_class(&info("cpu", "")), "cpu");
    }
}
