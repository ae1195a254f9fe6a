//! What a job recorded: its event log and its resumable checkpoints.

use moetune_types::JobId;
use moetune_types::TenantId;
use moetune_types::ErrorCode;

use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::unix_time::UnixTime;
use crate::AppState;

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

#[derive(sqlx::FromRow)]
struct EventRow {
    seq: i64,
    created_at: chrono::DateTime<chrono::Utc>,
    level: String,
    message: String,
    kind: String,
    data: Option<Value>,
}

#[derive(sqlx::FromRow)]
struct CheckpointRow {
    name: String,
    attempt: i32,
    stage: String,
    step: i32,
    bucket: String,
    prefix: String,
    bytes: i64,
    created_at: chrono::DateTime<chrono::Utc>,
}

/// Newest first, like OpenAI; `after` is the id of the last event already seen (older ones follow).
pub async fn events(state: &AppState, tenant: TenantId, job_id: &JobId, after: Option<&str>, limit: i64) -> Result<(Vec<JobEvent>, bool), ApiError> {
    get_owned(state, tenant, job_id).await?;
    let after_seq = page_start(after)?;
    let rows: Vec<EventRow> = sqlx::query_as(
        "SELECT seq, created_at, level, message, type AS kind, data FROM job_events
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
        .map(|EventRow { seq, created_at, level, message, kind, data }| JobEvent {
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

/// 404 unless the fine-tuning job exists and belongs to the tenant.
pub async fn get_owned(state: &AppState, tenant: TenantId, job_id: &JobId) -> Result<(), ApiError> {
    let exists: bool = sqlx::query_scalar(&format!("SELECT EXISTS (SELECT 1 FROM jobs WHERE id = $1 AND tenant_id = $2 AND {})", super::object::FINE_TUNES))
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

pub async fn checkpoints(state: &AppState, tenant: TenantId, job_id: &JobId) -> Result<Vec<JobCheckpoint>, ApiError> {
    get_owned(state, tenant, job_id).await?;
    let rows: Vec<CheckpointRow> = sqlx::query_as(
        "SELECT name, attempt, stage, step, s3_bucket AS bucket, s3_prefix AS prefix, bytes, created_at FROM checkpoints
         WHERE job_id = $1 AND deleted_at IS NULL ORDER BY created_at DESC, name DESC",
    )
    .bind(job_id)
    .fetch_all(&state.db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|CheckpointRow { name, attempt, stage, step, bucket, prefix, bytes, created_at }| JobCheckpoint {
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

/// Where a newest-first page of events starts: below the `after` cursor (`ftevent-N`), or at the newest.
pub(super) fn page_start(after: Option<&str>) -> Result<i64, ApiError> {
    after.map_or(Ok(i64::MAX), |cursor| parse_event_id(cursor, "after"))
}

/// Parses `Last-Event-ID` (or `after`): `ftevent-N` → N.
pub fn parse_event_id(id: &str, param: &str) -> Result<i64, ApiError> {
    id.strip_prefix("ftevent-")
        .and_then(|s| s.parse::<i64>().ok())
        .ok_or_else(|| ApiError::invalid(ErrorCode::InvalidCursor, param, format!("`{param}` must be an event id like 'ftevent-12', got '{id}'.")))
}
