//! Fine-tuning jobs: request parsing and resolution, persistence, and the OpenAI job object.

use std::collections::HashMap;

use moetune_scheduler::store;
use moetune_types::{JobRequirements, JobStatus, MoeSftQatOptions, TrainingSpec};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use sqlx::{FromRow, Row};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::ApiError;
use crate::files::UnixTime;
use crate::AppState;

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
            _ => Err(ApiError::invalid("invalid_hyperparameter", param, format!("`{param}` must be \"auto\" or an integer from 1 to {max}."))),
        },
        Some(_) => Err(ApiError::invalid("invalid_hyperparameter", param, format!("`{param}` must be \"auto\" or an integer."))),
    }
}

fn positive_float(value: &Option<Value>, param: &str) -> Result<f64, ApiError> {
    match value {
        None => Ok(1.0),
        Some(Value::String(s)) if s == "auto" => Ok(1.0),
        Some(Value::Number(n)) if n.as_f64().is_some_and(|v| v > 0.0 && v <= 100.0) => Ok(n.as_f64().unwrap_or(1.0)),
        Some(_) => Err(ApiError::invalid("invalid_hyperparameter", param, format!("`{param}` must be \"auto\" or a number in (0, 100]."))),
    }
}

/// Checks the request and turns it into the runner's spec; every refusal names its parameter.
pub fn resolve(request: &CreateJobRequest) -> Result<(TrainingSpec, ResolvedHyperparameters), ApiError> {
    if request.priority.is_some_and(|p| !(0..=9).contains(&p)) {
        return Err(ApiError::invalid("invalid_priority", "priority", "`priority` must be an integer from 0 to 9 (higher runs first among your jobs)."));
    }
    if request.suffix.as_ref().is_some_and(|s| s.len() > 64 || s.is_empty()) {
        return Err(ApiError::invalid("invalid_suffix", "suffix", "`suffix` must be 1 to 64 characters."));
    }
    if request.metadata.as_ref().is_some_and(|m| m.len() > 16) {
        return Err(ApiError::invalid("invalid_metadata", "metadata", "`metadata` holds at most 16 pairs."));
    }
    let supervised = request.method.as_ref().and_then(|m| m.supervised.as_ref()).and_then(|s| s.hyperparameters.as_ref());
    if supervised.is_some() && request.hyperparameters.is_some() {
        return Err(ApiError::invalid("conflicting_parameters", "hyperparameters", "Give hyperparameters either at the top level or in `method.supervised`, not both."));
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
            return Err(ApiError::invalid("invalid_method", "method.type", format!("Unknown method type '{kind}'; use \"supervised\" or \"moe_sft_qat\".")))
        }
    };
    moe.validate().map_err(|e| ApiError::invalid("invalid_method", &e.param, e.message))?;
    // A checkpoint is the trainable tensors and their optimiser state: one every few steps would spend
    // the job's time (and the bucket's bandwidth) writing them. The runner's own CLI has no such floor.
    let every = moe.checkpoint_every_n_steps;
    if every != 0 && every < MIN_CHECKPOINT_INTERVAL {
        return Err(ApiError::invalid(
            "invalid_method",
            "method.moe_sft_qat.checkpoint_every_n_steps",
            format!("`checkpoint_every_n_steps` must be 0 (only the stage-final checkpoints) or at least {MIN_CHECKPOINT_INTERVAL}."),
        ));
    }
    moe.learning_rate *= resolved.learning_rate_multiplier;
    if moe.learning_rate >= 1.0 {
        return Err(ApiError::invalid("invalid_hyperparameter", "hyperparameters.learning_rate_multiplier", "`learning_rate_multiplier` makes the learning rate 1 or more; lower it."));
    }
    let seed = request.seed.unwrap_or_else(|| u64::from(rand::random::<u32>()));
    let spec = TrainingSpec { model: request.model.clone(), n_epochs: resolved.n_epochs, batch_size: resolved.batch_size, seed, moe };
    Ok((spec, resolved))
}

/// The fewest steps between two periodic checkpoints a job may ask for.
pub const MIN_CHECKPOINT_INTERVAL: u32 = 10;

/// Creates the job. Its files are validated at upload (direct) or right after completion (Uploads API),
/// so usually they already are: then the job is created `queued` and published to Redis. Otherwise it
/// waits in `validating_files` until its last file's validation ends.
///
/// The usual path is one round trip to Postgres (the `create_job` function: file checks, quota, the
/// job with its events; the model comes from the registry's cache) and one to Redis; the response
/// comes from the inserted row.
pub async fn create(state: &AppState, tenant: Uuid, request: CreateJobRequest) -> Result<JobObject, ApiError> {
    let (mut spec, hyperparameters) = resolve(&request)?;
    let model = crate::models::require(state, &mut spec).await?;
    let id = format!("ftjob-{}", Uuid::new_v4().simple());
    let created = insert_job(state, &id, tenant, &request, &spec, &hyperparameters, &model.requirements).await?;
    if created.row.status != JobStatus::Queued.as_str() {
        advance_validating(state).await?;
        return get(state, tenant, &id).await;
    }
    let parts = store::AssignmentParts {
        attempt: created.row.attempt,
        spec,
        training_file_key: created.training_key,
        validation_file_key: created.validation_key,
        model_location: model.location,
        tenant,
        priority: created.row.priority,
        created_at: created.row.created_at,
        requirements: model.requirements,
        resume_from: None,
    };
    enqueue(state, &parts.into_assignment(&id, &state.config.s3.bucket)).await;
    job_object(created.row)
}

/// A job as `create_job` inserted it, with its files' S3 keys.
struct CreatedJob {
    row: JobRow,
    training_key: String,
    validation_key: Option<String>,
}

/// Runs `create_job` (migrations/20261129000001_create_job_function.sql): in one statement, share-locks
/// the files against deletion and checks them, takes a quota slot under the tenant's lock, and inserts
/// the job with its first events, `queued` at once (with the event `store::transition` would record
/// for it) when its files are processed. A refusal leaves nothing behind and becomes a 400 or 429.
#[allow(clippy::too_many_arguments)]
async fn insert_job(
    state: &AppState,
    id: &str,
    tenant: Uuid,
    request: &CreateJobRequest,
    spec: &TrainingSpec,
    hyperparameters: &ResolvedHyperparameters,
    requirements: &JobRequirements,
) -> Result<CreatedJob, ApiError> {
    // Queued publishes no webhook event, so the outbox has nothing to write for it.
    debug_assert!(moetune_scheduler::webhooks::EventType::for_status(JobStatus::Queued).is_none());
    let events = [
        store::NewEvent::message(id, 1, format!("Validating training file: {}", request.training_file)),
        store::NewEvent::transition(id, 1, JobStatus::Queued, "Files validated, job queued".into()),
    ];
    let json = |value: serde_json::Result<Value>| value.map_err(ApiError::internal);
    let row = sqlx::query(
        "SELECT refusal, refused_param, refused_file, file_purpose, file_details, active_jobs, job_limit, training_key, validation_key, (job).*
         FROM create_job($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
    )
    .bind(id)
    .bind(tenant)
    .bind(state.config.quotas.max_concurrent_jobs)
    .bind(&request.training_file)
    .bind(&request.validation_file)
    .bind(&request.model)
    .bind(&request.suffix)
    .bind(json(serde_json::to_value(spec))?)
    .bind(json(serde_json::to_value(hyperparameters))?)
    .bind(json(serde_json::to_value(request.metadata.clone().unwrap_or_default()))?)
    .bind(request.method.as_ref().map_or("supervised", |m| m.kind.as_str()))
    .bind(request.priority.unwrap_or(0))
    .bind(json(serde_json::to_value(requirements))?)
    .bind(events.iter().map(|e| e.level).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.message.as_str()).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.data.clone()).collect::<Vec<_>>())
    .fetch_one(&state.db)
    .await?;
    if let Some(refusal) = row.try_get::<Option<String>, _>("refusal")? {
        return Err(refusal_error(&refusal, &row)?);
    }
    let training_key = row.try_get::<Option<String>, _>("training_key")?.ok_or_else(|| ApiError::internal("create_job returned no training key"))?;
    Ok(CreatedJob { training_key, validation_key: row.try_get("validation_key")?, row: JobRow::from_row(&row)? })
}

/// Why a job's file (`param`) cannot be used.
pub enum FileRefusal<'a> {
    NotFound,
    /// Its purpose is not `fine-tune`.
    Purpose(&'a str),
    /// It failed validation, with the details.
    FailedValidation(&'a str),
}

/// The 400 for a file a job cannot use, worded the same wherever it is refused.
pub fn file_refusal(why: FileRefusal, param: &str, id: &str) -> ApiError {
    match why {
        FileRefusal::NotFound => ApiError::invalid("file_not_found", param, format!("No file found with id '{id}'; upload one with POST /v1/files.")),
        FileRefusal::Purpose(purpose) => ApiError::invalid("invalid_file_purpose", param, format!("File '{id}' has purpose '{purpose}'; {param} needs purpose 'fine-tune'.")),
        FileRefusal::FailedValidation(details) => ApiError::invalid("invalid_file_status", param, format!("File '{id}' failed validation, fix it and upload it again: {details}")),
    }
}

/// The error for a `create_job` refusal, worded from the facts it returned.
fn refusal_error(refusal: &str, row: &PgRow) -> Result<ApiError, ApiError> {
    let text = |column: &str| -> Result<String, ApiError> { Ok(row.try_get::<Option<String>, _>(column)?.unwrap_or_default()) };
    let (param, id) = (text("refused_param")?, text("refused_file")?);
    Ok(match refusal {
        "file_not_found" => file_refusal(FileRefusal::NotFound, &param, &id),
        "invalid_file_purpose" => file_refusal(FileRefusal::Purpose(&text("file_purpose")?), &param, &id),
        "invalid_file_status" => file_refusal(FileRefusal::FailedValidation(&text("file_details")?), &param, &id),
        "quota_exceeded" => crate::quotas::job_quota_exceeded(row.try_get("active_jobs")?, row.try_get("job_limit")?),
        other => ApiError::internal(format!("create_job refused with an unknown reason '{other}'")),
    })
}

/// Moves jobs waiting in `validating_files`: to `queued` (and onto the Redis queue) once all their
/// files are `processed`, to `failed` if one is in `error`. Called after each file validation, at job
/// creation, and by the uploads sweeper.
pub async fn advance_validating(state: &AppState) -> Result<(), ApiError> {
    let mut tx = state.db.begin().await?;
    let waiting: Vec<(String, i32, String, String, Option<String>, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT j.id, j.attempt, t.id, t.status, t.status_details, v.status, v.status_details
         FROM jobs j JOIN files t ON t.id = j.training_file LEFT JOIN files v ON v.id = j.validation_file
         WHERE j.status = 'validating_files' AND t.status <> 'uploaded' AND coalesce(v.status, '') <> 'uploaded'
         FOR UPDATE OF j SKIP LOCKED",
    )
    .fetch_all(&mut *tx)
    .await?;
    let mut queued = Vec::new();
    for (job, attempt, training_file, training_status, training_details, validation_status, validation_details) in waiting {
        let failure = if training_status == "error" {
            Some(("invalid_training_file", format!("Training file {training_file} failed validation: {}", training_details.unwrap_or_default())))
        } else if validation_status.as_deref() == Some("error") {
            Some(("invalid_validation_file", format!("Validation file failed validation: {}", validation_details.unwrap_or_default())))
        } else {
            None
        };
        match failure {
            Some((code, message)) => {
                sqlx::query("UPDATE jobs SET error_code = $2, error_message = $3 WHERE id = $1").bind(&job).bind(code).bind(&message).execute(&mut *tx).await?;
                store::transition(&mut tx, &job, attempt, JobStatus::Failed, message).await?;
            }
            None => {
                store::transition(&mut tx, &job, attempt, JobStatus::Queued, "Files validated, job queued".into()).await?;
                queued.push(store::assignment(&mut tx, &job, &state.config.s3.bucket).await?);
            }
        }
    }
    tx.commit().await?;
    for assignment in queued {
        enqueue(state, &assignment).await;
    }
    Ok(())
}

/// Publishes a queued job. Postgres holds the truth; if Redis is down now, the scheduler's reconciler
/// publishes the job.
async fn enqueue(state: &AppState, assignment: &moetune_types::JobAssignment) {
    if let Err(e) = state.queue.enqueue(assignment).await {
        tracing::warn!(job = %assignment.job_id, error = %e, "enqueue failed; the reconciler will publish the job");
    }
}

/// The OpenAI fine-tuning job object, with moetune's additions (`attempt`, `artifacts`, `result`).
#[derive(Debug, Serialize, ToSchema)]
pub struct JobObject {
    pub id: String,
    /// Always `fine_tuning.job`.
    pub object: &'static str,
    pub created_at: UnixTime,
    pub finished_at: Option<UnixTime>,
    pub model: String,
    pub fine_tuned_model: Option<String>,
    pub organization_id: String,
    pub status: JobStatus,
    pub training_file: String,
    pub validation_file: Option<String>,
    pub hyperparameters: ResolvedHyperparameters,
    /// The method as created (`supervised` or `moe_sft_qat`); `moe_sft_qat` holds every resolved
    /// workflow option either way.
    #[schema(value_type = Object)]
    pub method: MethodEcho,
    pub result_files: Vec<String>,
    pub trained_tokens: Option<i64>,
    pub error: Option<JobError>,
    pub seed: u64,
    pub estimated_finish: Option<UnixTime>,
    pub integrations: Vec<Value>,
    #[schema(value_type = Object)]
    pub metadata: Value,
    pub user_provided_suffix: Option<String>,
    /// 0-9, higher first among this tenant's queued jobs.
    pub priority: i16,
    /// Fencing counter: 1 on the first run, +1 each time the job is handed out again (its runner was lost,
    /// or it was paused before starting, or resumed).
    pub attempt: i32,
    /// Files the job produced, downloadable at `/v1/fine_tuning/jobs/{id}/artifacts/{name}/content`.
    pub artifacts: Vec<Artifact>,
    /// Summary written by the runner at the end (losses, steps, the evaluation table, timings).
    #[schema(value_type = Option<Object>)]
    pub result: Option<Value>,
    /// Why training ended: `completed`, or `early_stop_router_collapse` when the expert-usage monitor stopped it.
    pub stop_reason: Option<String>,
    /// moetune: what the job needs from a runner (device kind, estimated peak training memory).
    pub requirements: JobRequirements,
    /// moetune: why the job is waiting, when it needs saying (e.g. no registered runner fits it).
    pub status_details: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct JobError {
    pub code: String,
    pub message: String,
    pub param: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Artifact {
    pub name: String,
    /// Where the artifact is stored, `s3://bucket/key`.
    pub uri: String,
    #[serde(skip)]
    #[schema(ignore)]
    pub s3_bucket: String,
    #[serde(skip)]
    #[schema(ignore)]
    pub s3_key: String,
    pub bytes: i64,
    pub sha256: String,
}

#[derive(sqlx::FromRow)]
struct JobRow {
    id: String,
    tenant_id: Uuid,
    model: String,
    training_file: String,
    validation_file: Option<String>,
    stop_reason: Option<String>,
    suffix: Option<String>,
    // Typed JSON columns decode straight from Postgres' bytes, without a `Value` in between.
    spec: Json<TrainingSpec>,
    hyperparameters: Json<ResolvedHyperparameters>,
    status: String,
    method_type: String,
    priority: i16,
    attempt: i32,
    error_code: Option<String>,
    error_message: Option<String>,
    trained_tokens: Option<i64>,
    result: Option<Value>,
    metadata: Value,
    created_at: chrono::DateTime<chrono::Utc>,
    finished_at: Option<chrono::DateTime<chrono::Utc>>,
    requirements: Json<JobRequirements>,
    status_details: Option<String>,
    /// The job's artifacts by name, when the query is `SELECT_JOBS`.
    #[sqlx(default)]
    artifact_list: Option<Json<Vec<ArtifactRecord>>>,
}

/// Jobs with their artifacts as one JSON column, so a job or a page of jobs is one query; the caller
/// appends the conditions.
pub const SELECT_JOBS: &str = "SELECT *, (SELECT json_agg(json_build_object('name', a.name, 's3_bucket', a.s3_bucket, 's3_key', a.s3_key, 'bytes', a.bytes, 'sha256', a.sha256) ORDER BY a.name)
     FROM artifacts a WHERE a.job_id = jobs.id) AS artifact_list
 FROM jobs WHERE ";

/// An artifact row as `SELECT_JOBS` aggregates it.
#[derive(Deserialize)]
struct ArtifactRecord {
    name: String,
    s3_bucket: String,
    s3_key: String,
    bytes: i64,
    sha256: String,
}

impl From<ArtifactRecord> for Artifact {
    fn from(ArtifactRecord { name, s3_bucket, s3_key, bytes, sha256 }: ArtifactRecord) -> Self {
        let uri = format!("s3://{s3_bucket}/{s3_key}");
        Artifact { name, uri, s3_bucket, s3_key, bytes, sha256 }
    }
}

pub async fn get(state: &AppState, tenant: Uuid, id: &str) -> Result<JobObject, ApiError> {
    let row: JobRow = sqlx::query_as(&format!("{SELECT_JOBS}id = $1 AND tenant_id = $2"))
        .bind(id)
        .bind(tenant)
        .fetch_optional(&state.db)
        .await?
        .ok_or_else(|| ApiError::not_found("fine-tuning job", id))?;
    job_object(row)
}

fn job_object(row: JobRow) -> Result<JobObject, ApiError> {
    let artifacts = row.artifact_list.map_or_else(Vec::new, |Json(list)| list.into_iter().map(Artifact::from).collect());
    let (Json(spec), Json(hyperparameters)) = (row.spec, row.hyperparameters);
    let status = JobStatus::parse(&row.status).ok_or_else(|| ApiError::internal(format!("bad status {}", row.status)))?;
    let seed = spec.seed;
    let method = MethodEcho::new(&row.method_type, &hyperparameters, spec.moe);
    let fine_tuned_model = (status == JobStatus::Succeeded).then(|| {
        let suffix = row.suffix.as_deref().map(|s| format!("{s}:")).unwrap_or_default();
        format!("ft:{}:{suffix}{}", row.model, row.id)
    });
    Ok(JobObject {
        object: "fine_tuning.job",
        created_at: row.created_at.into(),
        finished_at: row.finished_at.map(Into::into),
        fine_tuned_model,
        organization_id: format!("org-{}", row.tenant_id.simple()),
        status,
        validation_file: row.validation_file,
        stop_reason: row.stop_reason,
        hyperparameters,
        method,
        result_files: Vec::new(),
        trained_tokens: row.trained_tokens,
        error: row.error_code.map(|code| JobError { code, message: row.error_message.unwrap_or_default(), param: None }),
        seed,
        estimated_finish: None,
        integrations: Vec::new(),
        metadata: row.metadata,
        user_provided_suffix: row.suffix,
        priority: row.priority,
        attempt: row.attempt,
        artifacts,
        result: row.result,
        requirements: row.requirements.0,
        status_details: row.status_details,
        id: row.id,
        model: row.model,
        training_file: row.training_file,
    })
}

/// The job's `method` as created: OpenAI's `supervised` shape for jobs created the OpenAI way (so their
/// SDKs' types hold), `moe_sft_qat` otherwise; both carry every resolved workflow option in `moe_sft_qat`.
#[derive(Debug, Serialize)]
pub struct MethodEcho {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    supervised: Option<SupervisedEcho>,
    moe_sft_qat: MoeSftQatOptions,
}

#[derive(Debug, Serialize)]
struct SupervisedEcho {
    hyperparameters: ResolvedHyperparameters,
}

impl MethodEcho {
    fn new(method_type: &str, hyperparameters: &ResolvedHyperparameters, moe_sft_qat: MoeSftQatOptions) -> Self {
        match method_type {
            "supervised" => Self { kind: "supervised", supervised: Some(SupervisedEcho { hyperparameters: hyperparameters.clone() }), moe_sft_qat },
            _ => Self { kind: "moe_sft_qat", supervised: None, moe_sft_qat },
        }
    }
}

pub async fn artifacts(state: &AppState, job_id: &str) -> Result<Vec<Artifact>, ApiError> {
    let rows: Vec<(String, String, String, i64, String)> =
        sqlx::query_as("SELECT name, s3_bucket, s3_key, bytes, sha256 FROM artifacts WHERE job_id = $1 ORDER BY name").bind(job_id).fetch_all(&state.db).await?;
    Ok(rows.into_iter().map(|(name, s3_bucket, s3_key, bytes, sha256)| Artifact::from(ArtifactRecord { name, s3_bucket, s3_key, bytes, sha256 })).collect())
}

/// One entry of the job's event log (OpenAI `fine_tuning.job.event`).
#[derive(Debug, Serialize, ToSchema)]
pub struct JobEvent {
    pub id: String,
    /// Always `fine_tuning.job.event`.
    pub object: &'static str,
    pub created_at: UnixTime,
    pub level: String,
    pub message: String,
    /// `message` or `metrics`.
    #[serde(rename = "type")]
    pub kind: String,
    #[schema(value_type = Option<Object>)]
    pub data: Option<Value>,
}

/// Newest first, like OpenAI; `after` is the id of the last event already seen (older ones follow).
pub async fn events(state: &AppState, tenant: Uuid, job_id: &str, after: Option<&str>, limit: i64) -> Result<(Vec<JobEvent>, bool), ApiError> {
    get_owned(state, tenant, job_id).await?;
    let after_seq = match after {
        None => i64::MAX,
        Some(cursor) => crate::event_stream::parse_event_id(cursor, "after")?,
    };
    let rows: Vec<(i64, chrono::DateTime<chrono::Utc>, String, String, String, Option<Value>)> = sqlx::query_as(
        "SELECT seq, created_at, level, message, type, data FROM job_events
         WHERE job_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3",
    )
    .bind(job_id)
    .bind(after_seq)
    .bind(limit + 1)
    .fetch_all(&state.db)
    .await?;
    let has_more = rows.len() as i64 > limit;
    let events = rows
        .into_iter()
        .take(limit as usize)
        .map(|(seq, created_at, level, message, kind, data)| JobEvent {
            id: format!("ftevent-{seq}"),
            object: "fine_tuning.job.event",
            created_at: created_at.into(),
            level,
            message,
            kind,
            data,
        })
        .collect();
    Ok((events, has_more))
}

/// 404 unless the job exists and belongs to the tenant.
pub async fn get_owned(state: &AppState, tenant: Uuid, job_id: &str) -> Result<(), ApiError> {
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM jobs WHERE id = $1 AND tenant_id = $2)")
        .bind(job_id)
        .bind(tenant)
        .fetch_one(&state.db)
        .await?;
    if exists { Ok(()) } else { Err(ApiError::not_found("fine-tuning job", job_id)) }
}

/// A resumable checkpoint (OpenAI `fine_tuning.job.checkpoint`, plus where it is stored).
#[derive(Debug, Serialize, ToSchema)]
pub struct JobCheckpoint {
    /// `ftckpt-…`: the job id and checkpoint name.
    pub id: String,
    /// Always `fine_tuning.job.checkpoint`.
    pub object: &'static str,
    pub created_at: UnixTime,
    pub fine_tuning_job_id: String,
    /// `sft-step-000100`, `sft-final`, `qat-final`, …
    pub name: String,
    /// `sft` or `qat`.
    pub stage: String,
    pub step_number: i32,
    /// Attempt that wrote it (a resumed attempt continues from the latest one).
    pub attempt: i32,
    /// `s3://bucket/prefix/` holding weights, optimiser state and data position.
    pub uri: String,
    pub bytes: i64,
}

pub async fn checkpoints(state: &AppState, tenant: Uuid, job_id: &str) -> Result<Vec<JobCheckpoint>, ApiError> {
    get_owned(state, tenant, job_id).await?;
    let rows: Vec<(String, i32, String, i32, String, String, i64, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(
        "SELECT name, attempt, stage, step, s3_bucket, s3_prefix, bytes, created_at FROM checkpoints
         WHERE job_id = $1 AND deleted_at IS NULL ORDER BY created_at DESC, name DESC",
    )
    .bind(job_id)
    .fetch_all(&state.db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(name, attempt, stage, step, bucket, prefix, bytes, created_at)| JobCheckpoint {
            id: format!("ftckpt-{}-{name}", job_id.trim_start_matches("ftjob-")),
            object: "fine_tuning.job.checkpoint",
            created_at: created_at.into(),
            fine_tuning_job_id: job_id.to_string(),
            name,
            stage,
            step_number: step,
            attempt,
            uri: format!("s3://{bucket}/{prefix}/"),
            bytes,
        })
        .collect())
}

/// One page of the tenant's jobs, newest first; `after` is the id of the last job of the previous
/// page; `metadata` pairs must all match.
pub async fn list(state: &AppState, tenant: Uuid, after: Option<&str>, limit: i64, metadata: &HashMap<String, String>) -> Result<(Vec<JobObject>, bool), ApiError> {
    let cursor = crate::pagination::cursor(&state.db, "jobs", tenant, after).await?;
    // One query for the page with its artifacts (a page of 20 was once 40 queries, then 2).
    let mut query = sqlx::QueryBuilder::new(SELECT_JOBS);
    query.push("tenant_id = ").push_bind(tenant);
    if !metadata.is_empty() {
        query.push(" AND metadata @> ").push_bind(serde_json::to_value(metadata).map_err(ApiError::internal)?);
    }
    crate::pagination::finish_page(&mut query, cursor, true, limit);
    let (rows, has_more) = crate::pagination::page(query.build_query_as::<JobRow>().fetch_all(&state.db).await?, limit);
    let jobs = rows.into_iter().map(job_object).collect::<Result<_, _>>()?;
    Ok((jobs, has_more))
}

/// Cancels a job that has not finished: Postgres first (the truth; later runner events are refused as
/// the job is terminal), then Redis withdraws it and flags the runner, which stops at its next step.
pub async fn cancel(state: &AppState, tenant: Uuid, id: &str) -> Result<JobObject, ApiError> {
    let mut tx = state.db.begin().await?;
    let (status, attempt) = lock_job(&mut tx, tenant, id).await?;
    if status.is_terminal() {
        return Err(ApiError::conflict("job_not_cancellable", format!("Job '{id}' has already {}; only jobs that have not finished can be cancelled.", status.as_str())));
    }
    store::transition(&mut tx, id, attempt, JobStatus::Cancelled, "Job cancelled".into()).await?;
    tx.commit().await?;
    if let Err(e) = state.queue.cancel(id).await {
        // The reconciler only republishes queued/running jobs, so a cancelled one is never handed out again.
        tracing::warn!(job = %id, error = %e, "could not withdraw the cancelled job from Redis");
    }
    get(state, tenant, id).await
}

/// Pauses a job that has not finished. One not yet started is paused at once: a new attempt fences off
/// any runner that claimed it, and Redis withdraws it. A running one turns `pausing`: its runner
/// checkpoints at the next step and lets go (the scheduler then records `paused`).
pub async fn pause(state: &AppState, tenant: Uuid, id: &str) -> Result<JobObject, ApiError> {
    let mut tx = state.db.begin().await?;
    let (status, attempt) = lock_job(&mut tx, tenant, id).await?;
    let (to, attempt_now, withdraw) = match status {
        JobStatus::ValidatingFiles | JobStatus::Queued => (JobStatus::Paused, attempt + 1, true),
        JobStatus::Running => (JobStatus::Pausing, attempt, false),
        JobStatus::Pausing | JobStatus::Paused => return Err(ApiError::conflict("job_not_pausable", format!("Job '{id}' is already {}.", status.as_str()))),
        _ => return Err(ApiError::conflict("job_not_pausable", format!("Job '{id}' has already {}; only jobs that have not finished can be paused.", status.as_str()))),
    };
    sqlx::query("UPDATE jobs SET attempt = $2 WHERE id = $1").bind(id).bind(attempt_now).execute(&mut *tx).await?;
    let message = match to {
        JobStatus::Paused => "Job paused before it started".to_string(),
        _ => "Pause requested; the runner checkpoints at its next step".to_string(),
    };
    store::transition(&mut tx, id, attempt_now, to, message).await?;
    tx.commit().await?;
    // Postgres holds the truth: if Redis misses this, the fenced attempt's events are refused anyway,
    // and a pausing job whose runner never answers is settled by the reconciler once the runner is gone.
    if let Err(e) = state.queue.pause(id, attempt, withdraw).await {
        tracing::warn!(job = %id, error = %e, "could not signal the pause through Redis");
    }
    get(state, tenant, id).await
}

/// Resumes a paused job as a new attempt, which continues from the job's latest checkpoint. It counts
/// against the concurrent-job quota again.
pub async fn resume(state: &AppState, tenant: Uuid, id: &str) -> Result<JobObject, ApiError> {
    let mut tx = state.db.begin().await?;
    let (status, attempt) = lock_job(&mut tx, tenant, id).await?;
    if status != JobStatus::Paused {
        let hint = if status == JobStatus::Pausing { " wait until it is paused, then resume" } else { " only paused jobs can be resumed" };
        return Err(ApiError::conflict("job_not_resumable", format!("Job '{id}' is {};{hint}.", status.as_str())));
    }
    crate::quotas::reserve_job(&mut tx, tenant, &state.config.quotas).await?;
    let attempt = attempt + 1;
    sqlx::query("UPDATE jobs SET attempt = $2, runner_id = NULL WHERE id = $1").bind(id).bind(attempt).execute(&mut *tx).await?;
    // Back through validation: queued at once when its files are processed (advance_validating below).
    store::transition(&mut tx, id, attempt, JobStatus::ValidatingFiles, format!("Job resumed as attempt {attempt}")).await?;
    tx.commit().await?;
    advance_validating(state).await?;
    get(state, tenant, id).await
}

/// Locks the tenant's job row; its status and attempt.
async fn lock_job(tx: &mut sqlx::PgConnection, tenant: Uuid, id: &str) -> Result<(JobStatus, i32), ApiError> {
    let row: Option<(String, i32)> = sqlx::query_as("SELECT status, attempt FROM jobs WHERE id = $1 AND tenant_id = $2 FOR UPDATE")
        .bind(id)
        .bind(tenant)
        .fetch_optional(&mut *tx)
        .await?;
    let (status, attempt) = row.ok_or_else(|| ApiError::not_found("fine-tuning job", id))?;
    let status = JobStatus::parse(&status).ok_or_else(|| ApiError::internal(format!("bad status {status}")))?;
    Ok((status, attempt))
}
