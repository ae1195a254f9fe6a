//! Creating a job: the `create_job` insert with its refusals, and the move from `validating_files`
//! to `queued` once the job's files are validated.

use moetune_types::FileStatus;
use moetune_types::JobId;
use moetune_types::TenantId;
use moetune_types::ErrorCode;

use moetune_domain::store;
use moetune_types::{JobRequirements, JobStatus, TrainingSpec};
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::{FromRow, Row};

use crate::error::ApiError;
use crate::AppState;
use super::object::{get, job_object, JobObject, JobRow};
use super::request::{resolve, CreateJobRequest, ResolvedHyperparameters};

/// Creates the job. Its files are validated at upload (direct) or right after completion (Uploads API),
/// so usually they already are: then the job is created `queued` and published to Redis. Otherwise it
/// waits in `validating_files` until its last file's validation ends.
///
/// The usual path is one round trip to Postgres (the `create_job` function: file checks, quota, the
/// job with its events; the model comes from the registry's cache) and one to Redis; the response
/// comes from the inserted row.
pub async fn create(state: &AppState, tenant: TenantId, request: CreateJobRequest) -> Result<JobObject, ApiError> {
    let (spec, hyperparameters) = resolve(&request)?;
    match insert_and_enqueue(state, tenant, &request, spec, &hyperparameters).await? {
        Ok(row) => job_object(row),
        Err(id) => get(state, tenant, &id).await,
    }
}

/// Creates a job of another kind than a fine-tune (a routing profile: its spec says what it runs),
/// with the same checks, quota and placement. Returns its id.
pub async fn submit(state: &AppState, tenant: TenantId, request: &CreateJobRequest, spec: TrainingSpec, hyperparameters: &ResolvedHyperparameters) -> Result<JobId, ApiError> {
    Ok(match insert_and_enqueue(state, tenant, request, spec, hyperparameters).await? {
        Ok(row) => row.id,
        Err(id) => id,
    })
}

/// Inserts the job and publishes it when it is queued at once: then its row as inserted, else (it
/// waits for its files) only its id.
async fn insert_and_enqueue(state: &AppState, tenant: TenantId, request: &CreateJobRequest, mut spec: TrainingSpec, hyperparameters: &ResolvedHyperparameters) -> Result<Result<JobRow, JobId>, ApiError> {
    let model = crate::models::require(state, &mut spec).await?;
    let id = JobId::generate();
    let job = NewJob { id: &id, tenant, request, spec: &spec, hyperparameters, requirements: &model.requirements };
    let created = insert_job(state, job).await?;
    if created.row.status != JobStatus::Queued {
        advance_validating(state).await?;
        return Ok(Err(id));
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
    Ok(Ok(created.row))
}

/// A job as `create_job` inserted it, with its files' S3 keys.
struct CreatedJob {
    row: JobRow,
    training_key: String,
    validation_key: Option<String>,
}

/// A job about to be inserted: what the request asked for, resolved.
struct NewJob<'a> {
    id: &'a JobId,
    tenant: TenantId,
    request: &'a CreateJobRequest,
    spec: &'a TrainingSpec,
    hyperparameters: &'a ResolvedHyperparameters,
    requirements: &'a JobRequirements,
}

/// Runs `create_job` (migrations/20261129000001_create_job_function.sql): in one statement, share-locks
/// the files against deletion and checks them, takes a quota slot under the tenant's lock, and inserts
/// the job with its first events, `queued` at once (with the event `store::transition` would record
/// for it) when its files are processed. A refusal leaves nothing behind and becomes a 400 or 429.
async fn insert_job(state: &AppState, job: NewJob<'_>) -> Result<CreatedJob, ApiError> {
    let NewJob { id, tenant, request, spec, hyperparameters, requirements } = job;
    // Queued publishes no webhook event, so the outbox has nothing to write for it.
    debug_assert!(moetune_domain::webhooks::EventType::for_status(JobStatus::Queued).is_none());
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
        FileRefusal::NotFound => ApiError::invalid(ErrorCode::FileNotFound, param, format!("No file found with id '{id}'; upload one with POST /v1/files.")),
        FileRefusal::Purpose(purpose) => ApiError::invalid(ErrorCode::InvalidFilePurpose, param, format!("File '{id}' has purpose '{purpose}'; {param} needs purpose 'fine-tune'.")),
        FileRefusal::FailedValidation(details) => ApiError::invalid(ErrorCode::InvalidFileStatus, param, format!("File '{id}' failed validation, fix it and upload it again: {details}")),
    }
}

/// The error for a `create_job` refusal, worded from the facts it returned.
fn refusal_error(refusal: &str, row: &PgRow) -> Result<ApiError, ApiError> {
    let text = |column: &str| -> Result<String, ApiError> { Ok(row.try_get::<Option<String>, _>(column)?.unwrap_or_default()) };
    let (param, id) = (text("refused_param")?, text("refused_file")?);
    Ok(match ErrorCode::parse(refusal) {
        Some(ErrorCode::FileNotFound) => file_refusal(FileRefusal::NotFound, &param, &id),
        Some(ErrorCode::InvalidFilePurpose) => file_refusal(FileRefusal::Purpose(&text("file_purpose")?), &param, &id),
        Some(ErrorCode::InvalidFileStatus) => file_refusal(FileRefusal::FailedValidation(&text("file_details")?), &param, &id),
        Some(ErrorCode::QuotaExceeded) => crate::quotas::job_quota_exceeded(row.try_get("active_jobs")?, row.try_get("job_limit")?),
        _ => ApiError::internal(format!("create_job refused with an unknown reason '{refusal}'")),
    })
}

/// A job in `validating_files` with its files' validation state.
#[derive(sqlx::FromRow)]
struct WaitingJob {
    id: JobId,
    attempt: i32,
    training_file: String,
    training_status: FileStatus,
    training_details: Option<String>,
    validation_status: Option<FileStatus>,
    validation_details: Option<String>,
}

/// Moves jobs waiting in `validating_files`: to `queued` (and onto the Redis queue) once all their
/// files are `processed`, to `failed` if one is in `error`. Called after each file validation, at job
/// creation, and by the uploads sweeper.
pub async fn advance_validating(state: &AppState) -> Result<(), ApiError> {
    let mut tx = state.db.begin().await?;
    let waiting: Vec<WaitingJob> = sqlx::query_as(
        "SELECT j.id, j.attempt, t.id AS training_file, t.status AS training_status, t.status_details AS training_details,
                v.status AS validation_status, v.status_details AS validation_details
         FROM jobs j JOIN files t ON t.id = j.training_file LEFT JOIN files v ON v.id = j.validation_file
         WHERE j.status = 'validating_files' AND t.status <> 'uploaded' AND coalesce(v.status, '') <> 'uploaded'
         FOR UPDATE OF j SKIP LOCKED",
    )
    .fetch_all(&mut *tx)
    .await?;
    let mut queued = Vec::new();
    for WaitingJob { id: job, attempt, training_file, training_status, training_details, validation_status, validation_details } in waiting {
        let failure = if training_status == FileStatus::Error {
            Some((ErrorCode::InvalidTrainingFile, format!("Training file {training_file} failed validation: {}", training_details.unwrap_or_default())))
        } else if validation_status == Some(FileStatus::Error) {
            Some((ErrorCode::InvalidValidationFile, format!("Validation file failed validation: {}", validation_details.unwrap_or_default())))
        } else {
            None
        };
        match failure {
            Some((code, message)) => {
                sqlx::query("UPDATE jobs SET error_code = $2, error_message = $3 WHERE id = $1").bind(&job).bind(code.as_str()).bind(&message).execute(&mut *tx).await?;
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
