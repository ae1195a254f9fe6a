//! Routing profiles of files: a job of its own kind (method type `routing_profile`) routes the first
//! examples of a file through a base model on a runner, and the profile is read back from that job's
//! result. The job is placed, leased, retried and counted against the tenant's job quota like a
//! fine-tuning job, but it is not one: the fine-tuning job endpoints and webhooks leave it out.

use moetune_types::routing::{ProfileJob, ProfileResult, PROFILE_METHOD};
use moetune_types::{ErrorCode, FileId, JobId, JobStatus, MoeSftQatOptions, RoutingProfile, TenantId, TrainingSpec};
use serde::Deserialize;
use serde::Serialize;
use sqlx::types::Json;
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::jobs::{self, CreateJobRequest, JobError, Method, ResolvedHyperparameters};
use crate::unix_time::UnixTime;
use crate::AppState;

const DEFAULT_EXAMPLES: u32 = 256;
const MAX_EXAMPLES: u32 = 10_000;
const DEFAULT_SEQ_LEN: u32 = 2048;

/// `POST /v1/files/{id}/routing_profile`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRoutingProfileRequest {
    /// The base model whose routers route the file, e.g. `moetune/tiny-mixtral`.
    pub model: String,
    /// How many examples of the file (the first ones) to route: 1 to 10000. Default 256.
    #[schema(minimum = 1, maximum = 10000)]
    pub max_examples: Option<u32>,
    /// Another `fine-tune` file, such as a job's validation data, profiled the same way.
    pub validation_file: Option<String>,
    /// Tokens per example beyond which it is cut: 16 to 32768. Default 2048.
    #[schema(minimum = 16, maximum = 32768)]
    pub seq_len: Option<u32>,
}

/// How a base model routes a file's tokens: per MoE layer, every expert's share of the first and of
/// the top-k choices, dead experts, entropy and KL divergence to uniform routing.
#[derive(Debug, Serialize, ToSchema)]
pub struct RoutingProfileObject {
    /// The job that computes it (not a fine-tuning job: the fine-tuning endpoints do not show it).
    pub id: String,
    /// Always `routing_profile`.
    pub object: &'static str,
    pub file_id: String,
    pub model: String,
    pub validation_file: Option<String>,
    pub max_examples: u32,
    /// `validating_files`, `queued`, `running`, then `succeeded`, `failed` or `cancelled`.
    pub status: JobStatus,
    pub created_at: UnixTime,
    pub finished_at: Option<UnixTime>,
    /// Why it failed.
    pub error: Option<JobError>,
    /// The file's profile, once `succeeded`.
    pub training: Option<RoutingProfile>,
    /// The validation file's profile, once `succeeded`.
    pub validation: Option<RoutingProfile>,
}

#[derive(sqlx::FromRow)]
struct ProfileRow {
    id: JobId,
    training_file: String,
    validation_file: Option<String>,
    model: String,
    spec: Json<TrainingSpec>,
    status: JobStatus,
    created_at: chrono::DateTime<chrono::Utc>,
    finished_at: Option<chrono::DateTime<chrono::Utc>>,
    error_code: Option<String>,
    error_message: Option<String>,
    result: Option<serde_json::Value>,
}

impl ProfileRow {
    fn into_object(self) -> RoutingProfileObject {
        let parsed = self.result.map(serde_json::from_value::<ProfileResult>);
        let (training, validation) = match parsed {
            Some(Ok(r)) => (Some(r.training), r.validation),
            _ => (None, None),
        };
        // A succeeded job whose result is not a profile (a runner that predates profiles trained it
        // instead): shown as the error it is, never as a profile without data.
        let unreadable = self.status == JobStatus::Succeeded && training.is_none();
        let (status, error_code, error_message) = if unreadable {
            let message = "The runner that took this profile did not return a routing profile (it predates them); create the profile again.";
            (JobStatus::Failed, Some(ErrorCode::TrainingError.as_str().to_string()), Some(message.to_string()))
        } else {
            (self.status, self.error_code, self.error_message)
        };
        RoutingProfileObject {
            id: self.id.to_string(),
            object: "routing_profile",
            file_id: self.training_file,
            model: self.model,
            validation_file: self.validation_file,
            max_examples: self.spec.0.routing_profile.map_or(0, |p| p.max_examples),
            status,
            created_at: self.created_at.into(),
            finished_at: self.finished_at.map(Into::into),
            error: error_code.map(|code| JobError { code, message: error_message.unwrap_or_default(), param: None }),
            training,
            validation,
        }
    }
}

const SELECT_PROFILE: &str =
    "SELECT id, training_file, validation_file, model, spec, status, created_at, finished_at, error_code, error_message, result FROM jobs WHERE method_type = 'routing_profile' AND tenant_id = $1";

/// Starts profiling `file` (the tenant's) with `request.model`.
pub async fn create(state: &AppState, tenant: TenantId, file: &FileId, request: CreateRoutingProfileRequest) -> Result<RoutingProfileObject, ApiError> {
    let max_examples = request.max_examples.unwrap_or(DEFAULT_EXAMPLES);
    if !(1..=MAX_EXAMPLES).contains(&max_examples) {
        return Err(ApiError::invalid(ErrorCode::InvalidProfileRequest, "max_examples", format!("`max_examples` must be from 1 to {MAX_EXAMPLES}.")));
    }
    let seq_len = request.seq_len.unwrap_or(DEFAULT_SEQ_LEN);
    if !(16..=32768).contains(&seq_len) {
        return Err(ApiError::invalid(ErrorCode::InvalidProfileRequest, "seq_len", "`seq_len` must be from 16 to 32768."));
    }
    require_file(state, tenant, file).await?;
    let moe = MoeSftQatOptions { seq_len, ..Default::default() };
    let spec = TrainingSpec { model: request.model.clone(), n_epochs: 1, batch_size: 8, seed: 0, moe, routing_profile: Some(ProfileJob { max_examples }) };
    let job = CreateJobRequest {
        model: request.model,
        training_file: file.to_string(),
        validation_file: request.validation_file,
        suffix: None,
        seed: Some(0),
        priority: None,
        metadata: None,
        hyperparameters: None,
        method: Some(Method { kind: PROFILE_METHOD.into(), supervised: None, moe_sft_qat: None }),
    };
    let hyperparameters = ResolvedHyperparameters { n_epochs: 1, batch_size: 8, learning_rate_multiplier: 1.0 };
    let id = jobs::submit(state, tenant, &job, spec, &hyperparameters).await?;
    let row: ProfileRow = sqlx::query_as(&format!("{SELECT_PROFILE} AND id = $2")).bind(tenant).bind(&id).fetch_one(&state.db).await?;
    Ok(row.into_object())
}

/// The newest profile of `file` (with `model`, when given).
pub async fn latest(state: &AppState, tenant: TenantId, file: &FileId, model: Option<&str>) -> Result<RoutingProfileObject, ApiError> {
    match newest(state, tenant, file.as_str(), model, "").await? {
        Some(row) => Ok(row.into_object()),
        None => {
            require_file(state, tenant, file).await?;
            let with = if model.is_some() { " under that model" } else { "" };
            Err(ApiError::new(ErrorCode::NotFound, format!("File '{file}' has no routing profile{with}; create one with POST /v1/files/{file}/routing_profile.")))
        }
    }
}

/// Cancels the newest profile of `file` (under `model`, when given) that has not finished.
pub async fn cancel(state: &AppState, tenant: TenantId, file: &FileId, model: Option<&str>) -> Result<RoutingProfileObject, ApiError> {
    let unfinished = " AND status IN ('validating_files', 'queued', 'running', 'pausing', 'paused')";
    let Some(row) = newest(state, tenant, file.as_str(), model, unfinished).await? else {
        require_file(state, tenant, file).await?;
        return Err(ApiError::new(ErrorCode::JobNotCancellable, format!("File '{file}' has no routing profile in progress to cancel.")));
    };
    jobs::cancel_profile(state, tenant, &row.id).await?;
    let row: ProfileRow = sqlx::query_as(&format!("{SELECT_PROFILE} AND id = $2")).bind(tenant).bind(&row.id).fetch_one(&state.db).await?;
    Ok(row.into_object())
}

/// The newest succeeded profile of the tenant's `file` under `model` (the report's heatmap).
pub async fn succeeded(state: &AppState, tenant: TenantId, file: &str, model: &str) -> Result<Option<RoutingProfile>, ApiError> {
    let row = newest(state, tenant, file, Some(model), " AND status = 'succeeded'").await?;
    Ok(row.and_then(|r| r.into_object().training))
}

/// The tenant's newest profile of `file` (under `model`, when given) among those the SQL condition
/// `and` (empty, or starting with ` AND`) selects.
async fn newest(state: &AppState, tenant: TenantId, file: &str, model: Option<&str>, and: &str) -> Result<Option<ProfileRow>, ApiError> {
    Ok(sqlx::query_as(&format!("{SELECT_PROFILE} AND training_file = $2 AND ($3::text IS NULL OR model = $3){and} ORDER BY created_at DESC LIMIT 1"))
        .bind(tenant)
        .bind(file)
        .bind(model)
        .fetch_optional(&state.db)
        .await?)
}

/// 404 unless `file` is a live file of the tenant; 400 unless it can be routed (a fine-tune file
/// that passed validation).
async fn require_file(state: &AppState, tenant: TenantId, file: &FileId) -> Result<(), ApiError> {
    let row: Option<(String, String, Option<String>)> = sqlx::query_as("SELECT purpose, status, status_details FROM files WHERE id = $1 AND tenant_id = $2 AND deleted_at IS NULL")
        .bind(file)
        .bind(tenant)
        .fetch_optional(&state.db)
        .await?;
    match row {
        None => Err(ApiError::not_found("file", file)),
        Some((purpose, _, _)) if purpose != "fine-tune" => Err(jobs::file_refusal(jobs::FileRefusal::Purpose(&purpose), "file_id", file.as_str())),
        Some((_, status, details)) if status == "error" => Err(jobs::file_refusal(jobs::FileRefusal::FailedValidation(details.as_deref().unwrap_or("")), "file_id", file.as_str())),
        Some(_) => Ok(()),
    }
}
