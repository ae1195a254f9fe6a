//! `POST /v1/fine_tuning/jobs/estimate`: what a job would train, the memory it needs, which classes of
//! runners fit it and how long it would take on each, answered from the job body without creating
//! anything. Durations come from what runners of each class measured on recent jobs of the same model
//! and method (`job_measurements`, written by the scheduler as jobs succeed).

use moetune_types::TenantId;
use moetune_types::ErrorCode;
use std::collections::BTreeMap;

use moetune_domain::registry::{largest_runners, live_runners, RunnerView};
use moetune_types::estimate::{self, Measurement, Throughput, TrainingPlan, RECENT_JOBS};
use moetune_types::gang_size::gang_reason;
use moetune_types::placement::{unplaceable_reason, JobMemory, TrainingDevice};
use moetune_types::{JobRequirements, TrainingSpec};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::jobs::{self, CreateJobRequest, FileRefusal};
use crate::AppState;

/// The answer to `POST /v1/fine_tuning/jobs/estimate`.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobEstimate {
    /// Always `fine_tuning.job.estimate`.
    pub object: &'static str,
    pub model: String,
    /// The SFT method, `lora` or `full`.
    pub method: &'static str,
    /// What the estimate was computed from: the training file's counts and the job's resolved options.
    pub inputs: EstimateInputs,
    /// Steps and tokens, as the runner will plan them.
    pub plan: TrainingPlan,
    /// Tokens the job is expected to train on (OpenAI's `trained_tokens`): the plan's estimate times
    /// what recent jobs of this model trained per estimated token.
    pub expected_trained_tokens: u64,
    /// Trained tokens per estimated token on recent jobs of this model (1 when none ran): the plan
    /// counts characters / 4, the runner its tokenizer's tokens under the loss.
    pub tokens_per_estimated_token: f64,
    /// What the job needs from a runner (the scheduler's fit uses exactly this).
    pub requirements: JobRequirements,
    /// The job's memory per stage on each kind of runner; null for a model with no recorded memory model.
    pub memory: Option<EstimateMemory>,
    /// Ranks the job trains on at once, one runner each (one GPU or one CPU host); the memory figures
    /// are one rank's.
    pub world_size: u32,
    /// Whether a registered runner fits the job now.
    pub fits: bool,
    /// Why none does, and what to change; null when one fits.
    pub reason: Option<String>,
    /// Each class of registered runners: whether it fits, and the expected duration on it.
    pub runner_classes: Vec<RunnerClassEstimate>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EstimateInputs {
    pub training_file: String,
    pub example_count: u64,
    /// The training file's token estimate (characters / 4).
    pub file_estimated_tokens: u64,
    pub validation_file: Option<String>,
    pub n_epochs: u32,
    pub batch_size: u32,
    pub gradient_accumulation_steps: u32,
    pub max_steps: Option<u32>,
    pub qat_steps: u32,
    pub seq_len: u32,
    pub packing: bool,
    /// Held out of the training file when no validation file is given.
    pub validation_split: f64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EstimateMemory {
    /// On one GPU of a CUDA runner (the merge and export run on its host: `host_bytes`).
    pub cuda: JobMemory,
    /// On a CPU runner's host memory.
    pub cpu: JobMemory,
}

/// Registered runners of one class and what the job would do on them.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunnerClassEstimate {
    /// `cpu`, or `cuda:` and the GPU model the operator named.
    pub class: String,
    /// `cpu` or `cuda`.
    pub device: String,
    /// Registered runners of the class that are not lost.
    pub runners: u32,
    /// The most training memory one of them has (one GPU's, or the host's).
    pub training_memory_bytes: i64,
    /// The job's memory on this class (`requirements` on its device).
    pub needed_memory_bytes: i64,
    pub fits: bool,
    /// Why the class does not fit; null when it does.
    pub reason: Option<String>,
    /// What runners of this class measured on recent jobs of this model and method; null when none ran.
    pub measured: Option<Throughput>,
    /// Overhead plus the expected trained tokens at the measured rate; null without a measurement.
    pub expected_duration_seconds: Option<f64>,
    /// `expected_duration_seconds × world_size / 3600` on a CUDA class; null on CPU or without a measurement.
    pub gpu_hours: Option<f64>,
}

/// The estimate for `request`, refused for exactly what creating it would refuse (bad options, an
/// unknown model, a file that is missing, of another purpose or invalid), and 409 for a file still
/// being validated.
pub async fn estimate(state: &AppState, tenant: TenantId, request: CreateJobRequest) -> Result<JobEstimate, ApiError> {
    let (mut spec, _) = jobs::resolve(&request)?;
    let model = crate::models::require(state, &mut spec).await?;
    let (examples, file_tokens) = dataset_counts(state, tenant, &request.training_file, "training_file").await?;
    if let Some(validation) = &request.validation_file {
        dataset_counts(state, tenant, validation, "validation_file").await?;
    }
    let plan = estimate::plan(&spec, examples, file_tokens, request.validation_file.is_some());
    let method = spec.moe.sft_method.as_str();
    let ratio = estimate::tokens_per_estimated_token(&measurements(state, &spec.model, None).await?);
    let expected_trained_tokens = (plan.estimated_tokens as f64 * ratio).round() as u64;

    let runners = state.queue.runners().await?;
    let requirements = model.requirements;
    let reason = unplaceable_reason(&requirements, &largest_runners(&runners)).or_else(|| gang_reason(&requirements, &live_runners(&runners)));
    let mut runner_classes = Vec::new();
    for (class, members) in classes(&runners) {
        let measured = estimate::throughput(&measurements(state, &spec.model, Some((method, &class))).await?);
        runner_classes.push(class_estimate(class, &members, &requirements, measured, expected_trained_tokens as f64));
    }
    let options = &spec.moe;
    Ok(JobEstimate {
        object: "fine_tuning.job.estimate",
        model: spec.model.clone(),
        method,
        inputs: EstimateInputs {
            training_file: request.training_file.clone(),
            example_count: examples,
            file_estimated_tokens: file_tokens,
            validation_file: request.validation_file.clone(),
            n_epochs: spec.n_epochs,
            batch_size: spec.batch_size,
            gradient_accumulation_steps: options.gradient_accumulation_steps,
            max_steps: options.max_steps,
            qat_steps: options.qat.steps,
            seq_len: options.seq_len,
            packing: options.packing,
            validation_split: options.validation_split,
        },
        plan,
        expected_trained_tokens,
        tokens_per_estimated_token: ratio,
        requirements,
        memory: model.memory_model.map(|m| memory(&m, &spec)),
        world_size: options.world_size,
        fits: reason.is_none(),
        reason,
        runner_classes,
    })
}

fn memory(model: &moetune_types::MemoryModel, spec: &TrainingSpec) -> EstimateMemory {
    EstimateMemory { cuda: model.job_memory(spec, TrainingDevice::Cuda), cpu: model.job_memory(spec, TrainingDevice::Cpu) }
}

/// The example count and token estimate of the tenant's file `id`, refused as job creation refuses it.
async fn dataset_counts(state: &AppState, tenant: TenantId, id: &str, param: &str) -> Result<(u64, u64), ApiError> {
    type Row = (String, String, Option<String>, Option<i64>, Option<i64>);
    let row: Option<Row> = sqlx::query_as(
        "SELECT purpose, status, status_details, example_count, estimated_tokens FROM files WHERE id = $1 AND tenant_id = $2 AND deleted_at IS NULL",
    )
    .bind(id)
    .bind(tenant)
    .fetch_optional(&state.db)
    .await?;
    let Some((purpose, status, details, examples, tokens)) = row else {
        return Err(jobs::file_refusal(FileRefusal::NotFound, param, id));
    };
    if purpose != "fine-tune" {
        return Err(jobs::file_refusal(FileRefusal::Purpose(&purpose), param, id));
    }
    match (status.as_str(), examples, tokens) {
        ("error", _, _) => Err(jobs::file_refusal(FileRefusal::FailedValidation(&details.unwrap_or_default()), param, id)),
        ("processed", Some(examples), Some(tokens)) => Ok((examples.max(0) as u64, tokens.max(0) as u64)),
        _ => Err(ApiError::new(ErrorCode::FileNotReady, format!("File '{id}' is still being validated; estimate again once its status is `processed`.")).with_param(param)),
    }
}

/// Recent measurements of `model`: of one method on one runner class, or (None) of any.
async fn measurements(state: &AppState, model: &str, of: Option<(&str, &str)>) -> Result<Vec<Measurement>, ApiError> {
    let (method, class) = of.unzip();
    let rows: Vec<(i64, i64, f64, Option<f64>)> = sqlx::query_as(
        "SELECT estimated_tokens, trained_tokens, training_seconds, wall_seconds FROM job_measurements
         WHERE model = $1 AND ($2::text IS NULL OR method = $2) AND ($3::text IS NULL OR runner_class = $3)
         ORDER BY recorded_at DESC LIMIT $4",
    )
    .bind(model)
    .bind(method)
    .bind(class)
    .bind(RECENT_JOBS)
    .fetch_all(&state.db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(estimated_tokens, trained_tokens, training_seconds, wall_seconds)| Measurement { estimated_tokens, trained_tokens, training_seconds, wall_seconds })
        .collect())
}

/// Registered runners that are not lost, by class.
fn classes(runners: &[RunnerView]) -> BTreeMap<String, Vec<&moetune_types::RunnerInfo>> {
    let mut classes: BTreeMap<String, Vec<&moetune_types::RunnerInfo>> = BTreeMap::new();
    for info in live_runners(runners) {
        classes.entry(estimate::runner_class(info)).or_default().push(info);
    }
    classes
}

fn class_estimate(class: String, members: &[&moetune_types::RunnerInfo], needs: &JobRequirements, measured: Option<Throughput>, tokens: f64) -> RunnerClassEstimate {
    let ranks = needs.world_size.max(1);
    let device = members[0].device.clone();
    let training_memory_bytes = members.iter().map(|r| r.training_memory_bytes()).max().unwrap_or(0);
    let needed_memory_bytes = needs.memory_on(&device);
    let reason = if !needs.device.allows(&device) {
        Some(format!("The job asks for device '{}'; these runners are {device}.", needs.device.as_str()))
    } else if needed_memory_bytes > training_memory_bytes {
        Some(format!(
            "The job needs {:.2} GiB of training memory; these runners have {:.2} GiB. Lower batch_size or seq_len, or use sft_method=lora.",
            needed_memory_bytes as f64 / GIB,
            training_memory_bytes as f64 / GIB
        ))
    } else if (members.len() as u32) < ranks {
        Some(format!("The job trains on {ranks} runners at once, one rank each; this class has {}. Lower world_size, or add runners.", members.len()))
    } else {
        None
    };
    let expected_duration_seconds = measured.as_ref().map(|m| estimate::expected_seconds(tokens, m));
    RunnerClassEstimate {
        gpu_hours: expected_duration_seconds.filter(|_| device == "cuda").map(|s| s * f64::from(ranks) / 3600.0),
        class,
        device,
        runners: members.len() as u32,
        training_memory_bytes,
        needed_memory_bytes,
        fits: reason.is_none(),
        reason,
        measured,
        expected_duration_seconds,
    }
}

const GIB: f64 = (1u64 << 30) as f64;
