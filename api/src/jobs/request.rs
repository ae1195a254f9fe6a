//! The create-job request: its fields, and their resolution into the training spec and the
//! hyperparameters the job echoes.

use moetune_types::ErrorCode;
use std::collections::HashMap;

use moetune_types::{MoeSftQatOptions, TrainingSpec};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::error::ApiError;

/// Body of `POST /v1/fine_tuning/jobs` (the OpenAI shape; `method.moe_sft_qat` carries MoE options).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateJobRequest {
    /// Base model to fine-tune, e.g. `moetune/tiny-mixtral`.
    pub model: String,
    /// Id of an uploaded file with `purpose=fine-tune`.
    pub training_file: String,
    /// Id of an uploaded `fine-tune` file used for validation loss, token accuracy, the expert-usage
    /// monitor's prompts and the evaluation report; without one, `validation_split` of the training file is held out.
    pub validation_file: Option<String>,
    /// Up to 64 characters added to the fine-tuned model name.
    pub suffix: Option<String>,
    pub seed: Option<u64>,
    /// moetune: 0-9 (default 0), higher first among your own queued jobs. Between tenants the queue is
    /// fair-shared, so a priority never takes a turn from another tenant.
    pub priority: Option<i16>,
    /// Up to 16 string key-value pairs stored with the job.
    pub metadata: Option<HashMap<String, String>>,
    pub hyperparameters: Option<Hyperparameters>,
    pub method: Option<Method>,
}

/// OpenAI hyperparameters; each accepts `"auto"` or a number.
#[derive(Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Hyperparameters {
    /// `"auto"` (1) or a positive integer.
    #[schema(value_type = Object)]
    pub n_epochs: Option<Value>,
    /// `"auto"` (4) or a positive integer.
    #[schema(value_type = Object)]
    pub batch_size: Option<Value>,
    /// `"auto"` (1.0) or a positive number multiplying the method's learning rate.
    #[schema(value_type = Object)]
    pub learning_rate_multiplier: Option<Value>,
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Method {
    /// `supervised` (runs the MoE SFT→QAT workflow with defaults) or `moe_sft_qat`.
    #[serde(rename = "type")]
    pub kind: String,
    pub supervised: Option<SupervisedMethod>,
    pub moe_sft_qat: Option<MoeSftQatOptions>,
}

/// OpenAI's `method.supervised`: hyperparameters here replace the legacy top-level ones.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SupervisedMethod {
    pub hyperparameters: Option<Hyperparameters>,
}

/// Resolved hyperparameters, echoed on the job object.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ResolvedHyperparameters {
    pub n_epochs: u32,
    pub batch_size: u32,
    pub learning_rate_multiplier: f64,
}

fn positive_int(value: &Option<Value>, param: &str, auto: u32, max: u32) -> Result<u32, ApiError> {
    match value {
        None => Ok(auto),
        Some(Value::String(s)) if s == "auto" => Ok(auto),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(v) if (1..=max as u64).contains(&v) => Ok(v as u32),
            _ => Err(ApiError::invalid(ErrorCode::InvalidHyperparameter, param, format!("`{param}` must be \"auto\" or an integer from 1 to {max}."))),
        },
        Some(_) => Err(ApiError::invalid(ErrorCode::InvalidHyperparameter, param, format!("`{param}` must be \"auto\" or an integer."))),
    }
}

fn positive_float(value: &Option<Value>, param: &str) -> Result<f64, ApiError> {
    match value {
        None => Ok(1.0),
        Some(Value::String(s)) if s == "auto" => Ok(1.0),
        Some(Value::Number(n)) if n.as_f64().is_some_and(|v| v > 0.0 && v <= 100.0) => Ok(n.as_f64().unwrap_or(1.0)),
        Some(_) => Err(ApiError::invalid(ErrorCode::InvalidHyperparameter, param, format!("`{param}` must be \"auto\" or a number in (0, 100]."))),
    }
}

/// Checks the request and turns it into the runner's spec; every refusal names its parameter.
pub fn resolve(request: &CreateJobRequest) -> Result<(TrainingSpec, ResolvedHyperparameters), ApiError> {
    if request.priority.is_some_and(|p| !(0..=9).contains(&p)) {
        return Err(ApiError::invalid(ErrorCode::InvalidPriority, "priority", "`priority` must be an integer from 0 to 9 (higher runs first among your jobs)."));
    }
    if request.suffix.as_ref().is_some_and(|s| s.len() > 64 || s.is_empty()) {
        return Err(ApiError::invalid(ErrorCode::InvalidSuffix, "suffix", "`suffix` must be 1 to 64 characters."));
    }
    if request.metadata.as_ref().is_some_and(|m| m.len() > 16) {
        return Err(ApiError::invalid(ErrorCode::InvalidMetadata, "metadata", "`metadata` holds at most 16 pairs."));
    }
    let supervised = request.method.as_ref().and_then(|m| m.supervised.as_ref()).and_then(|s| s.hyperparameters.as_ref());
    if supervised.is_some() && request.hyperparameters.is_some() {
        return Err(ApiError::invalid(ErrorCode::ConflictingParameters, "hyperparameters", "Give hyperparameters either at the top level or in `method.supervised`, not both."));
    }
    let none = Hyperparameters::default();
    let hp = supervised.or(request.hyperparameters.as_ref()).unwrap_or(&none);
    let resolved = ResolvedHyperparameters {
        n_epochs: positive_int(&hp.n_epochs, "hyperparameters.n_epochs", 1, 50)?,
        batch_size: positive_int(&hp.batch_size, "hyperparameters.batch_size", 4, 256)?,
        learning_rate_multiplier: positive_float(&hp.learning_rate_multiplier, "hyperparameters.learning_rate_multiplier")?,
    };
    let mut moe = match &request.method {
        None => MoeSftQatOptions::default(),
        Some(Method { kind, moe_sft_qat, .. }) if kind == "moe_sft_qat" => moe_sft_qat.clone().unwrap_or_default(),
        Some(Method { kind, .. }) if kind == "supervised" => MoeSftQatOptions::default(),
        Some(Method { kind, .. }) => {
            return Err(ApiError::invalid(ErrorCode::InvalidMethod, "method.type", format!("Unknown method type '{kind}'; use \"supervised\" or \"moe_sft_qat\".")))
        }
    };
    moe.validate().map_err(|e| ApiError::invalid(ErrorCode::InvalidMethod, &e.param, e.message))?;
    // A checkpoint is the trainable tensors and their optimiser state: one every few steps would spend
    // the job's time (and the bucket's bandwidth) writing them. The runner's own CLI has no such floor.
    let every = moe.checkpoint_every_n_steps;
    if every != 0 && every < MIN_CHECKPOINT_INTERVAL {
        return Err(ApiError::invalid(
            ErrorCode::InvalidMethod,
            "method.moe_sft_qat.checkpoint_every_n_steps",
            format!("`checkpoint_every_n_steps` must be 0 (only the stage-final checkpoints) or at least {MIN_CHECKPOINT_INTERVAL}."),
        ));
    }
    moe.learning_rate *= resolved.learning_rate_multiplier;
    if moe.learning_rate >= 1.0 {
        return Err(ApiError::invalid(ErrorCode::InvalidHyperparameter, "hyperparameters.learning_rate_multiplier", "`learning_rate_multiplier` makes the learning rate 1 or more; lower it."));
    }
    let seed = request.seed.unwrap_or_else(|| u64::from(rand::random::<u32>()));
    let spec = TrainingSpec { model: request.model.clone(), n_epochs: resolved.n_epochs, batch_size: resolved.batch_size, seed, moe, routing_profile: None };
    Ok((spec, resolved))
}

/// The fewest steps between two periodic checkpoints a job may ask for.
pub const MIN_CHECKPOINT_INTERVAL: u32 = 10;
