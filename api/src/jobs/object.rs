//! The OpenAI fine-tuning job object, read from the job's row with its artifacts; one job or a page.

use moetune_types::JobId;
use moetune_types::TenantId;
use std::collections::HashMap;

use moetune_types::{JobRequirements, JobStatus, MoeSftQatOptions, TrainingSpec};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::types::Json;
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::unix_time::UnixTime;
use crate::AppState;
use super::request::ResolvedHyperparameters;

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
    /// moetune: the runners a job with `world_size` > 1 trains on, by rank (rank 0 first); absent on
    /// one runner and while it waits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ranks: Option<Vec<String>>,
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
pub(super) struct JobRow {
    pub(super) id: JobId,
    pub(super) tenant_id: TenantId,
    pub(super) model: String,
    pub(super) training_file: String,
    pub(super) validation_file: Option<String>,
    pub(super) stop_reason: Option<String>,
    pub(super) suffix: Option<String>,
    // Typed JSON columns decode straight from Postgres' bytes, without a `Value` in between.
    pub(super) spec: Json<TrainingSpec>,
    pub(super) hyperparameters: Json<ResolvedHyperparameters>,
    pub(super) status: JobStatus,
    pub(super) method_type: String,
    pub(super) priority: i16,
    pub(super) attempt: i32,
    pub(super) error_code: Option<String>,
    pub(super) error_message: Option<String>,
    pub(super) trained_tokens: Option<i64>,
    pub(super) result: Option<Value>,
    pub(super) metadata: Value,
    pub(super) created_at: chrono::DateTime<chrono::Utc>,
    pub(super) finished_at: Option<chrono::DateTime<chrono::Utc>>,
    pub(super) requirements: Json<JobRequirements>,
    pub(super) status_details: Option<String>,
    #[sqlx(default)]
    pub(super) ranks: Option<Vec<String>>,
    /// The job's artifacts by name, when the query is `SELECT_JOBS`.
    #[sqlx(default)]
    pub(super) artifact_list: Option<Json<Vec<ArtifactRecord>>>,
}

/// Jobs with their artifacts as one JSON column, so a job or a page of jobs is one query; the caller
/// appends the conditions.
pub const SELECT_JOBS: &str = "SELECT *, (SELECT json_agg(json_build_object('name', a.name, 's3_bucket', a.s3_bucket, 's3_key', a.s3_key, 'bytes', a.bytes, 'sha256', a.sha256) ORDER BY a.name)
     FROM artifacts a WHERE a.job_id = jobs.id) AS artifact_list
 FROM jobs WHERE ";

/// The jobs the fine-tuning endpoints show: not the routing profiles (`crate::routing_profiles`).
pub const FINE_TUNES: &str = "method_type <> 'routing_profile'";
/// The rows of routing-profile jobs.
pub const PROFILES: &str = "method_type = 'routing_profile'";

/// An artifact row, as `SELECT_JOBS` aggregates it or as read alone.
#[derive(Deserialize, sqlx::FromRow)]
pub(super) struct ArtifactRecord {
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

pub async fn get(state: &AppState, tenant: TenantId, id: &JobId) -> Result<JobObject, ApiError> {
    let row: JobRow = sqlx::query_as(&format!("{SELECT_JOBS}id = $1 AND tenant_id = $2 AND {FINE_TUNES}"))
        .bind(id)
        .bind(tenant)
        .fetch_optional(&state.db)
        .await?
        .ok_or_else(|| ApiError::not_found("fine-tuning job", id))?;
    job_object(row)
}

pub(super) fn job_object(row: JobRow) -> Result<JobObject, ApiError> {
    let artifacts = row.artifact_list.map_or_else(Vec::new, |Json(list)| list.into_iter().map(Artifact::from).collect());
    let (Json(spec), Json(hyperparameters)) = (row.spec, row.hyperparameters);
    let status = row.status;
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
        organization_id: format!("org-{}", row.tenant_id.0.simple()),
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
        ranks: row.ranks,
        id: row.id.into(),
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

pub async fn artifacts(state: &AppState, job_id: &JobId) -> Result<Vec<Artifact>, ApiError> {
    let rows: Vec<ArtifactRecord> =
        sqlx::query_as("SELECT name, s3_bucket, s3_key, bytes, sha256 FROM artifacts WHERE job_id = $1 ORDER BY name").bind(job_id).fetch_all(&state.db).await?;
    Ok(rows.into_iter().map(Artifact::from).collect())
}



/// One page of the tenant's jobs, newest first; `after` is the id of the last job of the previous
/// page; `metadata` pairs must all match.
pub async fn list(state: &AppState, tenant: TenantId, after: Option<&str>, limit: i64, metadata: &HashMap<String, String>) -> Result<(Vec<JobObject>, bool), ApiError> {
    let cursor = crate::pagination::cursor(&state.db, "jobs", tenant, after).await?;
    // One query for the page with its artifacts (a page of 20 was once 40 queries, then 2).
    let mut query = sqlx::QueryBuilder::new(SELECT_JOBS);
    query.push("tenant_id = ").push_bind(tenant).push(format!(" AND {FINE_TUNES}"));
    if !metadata.is_empty() {
        query.push(" AND metadata @> ").push_bind(serde_json::to_value(metadata).map_err(ApiError::internal)?);
    }
    crate::pagination::finish_page(&mut query, cursor, true, limit);
    let (rows, has_more) = crate::pagination::page(query.build_query_as::<JobRow>().fetch_all(&state.db).await?, limit);
    let jobs = rows.into_iter().map(job_object).collect::<Result<_, _>>()?;
    Ok((jobs, has_more))
}
