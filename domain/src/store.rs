//! Job state in Postgres: status transitions and the job's event log.

use moetune_types::{JobAssignment, JobId, JobRequirements, JobStatus, Placement, RunnerId, S3Location, TenantId, TrainingSpec};
use sqlx::{PgConnection, PgPool};

use crate::webhooks::{outbox, EventType};

/// A row for the job event log.
pub struct NewEvent<'a> {
    pub job_id: &'a JobId,
    pub attempt: i32,
    pub level: &'a str,
    pub kind: &'a str,
    pub message: String,
    pub data: Option<serde_json::Value>,
    /// Redis stream entry id for runner events, so a replayed entry is recorded once.
    pub source_id: Option<&'a str>,
}

impl<'a> NewEvent<'a> {
    /// An informational message.
    pub fn message(job_id: &'a JobId, attempt: i32, message: String) -> Self {
        Self { job_id, attempt, level: "info", kind: "message", message, data: None, source_id: None }
    }

    /// The event recording a move to status `to`.
    pub fn transition(job_id: &'a JobId, attempt: i32, to: JobStatus, message: String) -> Self {
        let level = if to == JobStatus::Failed { "error" } else { "info" };
        let data = Some(serde_json::json!({ "status": to.as_str() }));
        Self { job_id, attempt, level, kind: "message", message, data, source_id: None }
    }
}

/// Appends an event; returns false when its `source_id` was recorded before.
pub async fn insert_event(conn: &mut PgConnection, event: NewEvent<'_>) -> sqlx::Result<bool> {
    let result = sqlx::query(
        "INSERT INTO job_events (job_id, attempt, level, type, message, data, source_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (source_id) DO NOTHING",
    )
    .bind(event.job_id)
    .bind(event.attempt)
    .bind(event.level)
    .bind(event.kind)
    // Messages quote runners and tenants: no control characters (Postgres refuses NUL), bounded.
    .bind(moetune_types::text::message(&event.message, 4000))
    .bind(event.data)
    .bind(event.source_id)
    .execute(conn)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// Sets the status and records the transition as an event (and a webhook event for the statuses
/// tenants can subscribe to), in the caller's transaction.
pub async fn transition(
    conn: &mut PgConnection,
    job_id: &JobId,
    attempt: i32,
    to: JobStatus,
    message: String,
) -> sqlx::Result<()> {
    let finished = to.is_terminal();
    sqlx::query(
        "UPDATE jobs SET status = $2, status_details = NULL,
                queued_at = CASE WHEN $2 = 'queued' THEN now() ELSE queued_at END,
                finished_at = CASE WHEN $3 THEN now() ELSE finished_at END,
                started_at = CASE WHEN $2 = 'running' AND started_at IS NULL THEN now() ELSE started_at END
         WHERE id = $1",
    )
    .bind(job_id)
    .bind(to)
    .bind(finished)
    .execute(&mut *conn)
    .await?;
    insert_event(&mut *conn, NewEvent::transition(job_id, attempt, to, message)).await?;
    if let Some(event) = EventType::for_status(to) {
        outbox::publish(conn, job_id, event, serde_json::json!({})).await?;
    }
    Ok(())
}

/// Counts one more lost runner of the job's current `attempt` (its runner, or a rank of its gang).
/// Once `max_attempts` were lost the job fails (`runner_lost`, "{what}; giving up after …") and this
/// returns true; the caller then lets Redis forget it.
pub async fn lose_runner(conn: &mut PgConnection, job_id: &JobId, attempt: i32, max_attempts: i32, what: &str) -> sqlx::Result<bool> {
    let losses: i32 = sqlx::query_scalar("UPDATE jobs SET runner_losses = runner_losses + 1 WHERE id = $1 RETURNING runner_losses")
        .bind(job_id)
        .fetch_one(&mut *conn)
        .await?;
    if losses < max_attempts {
        return Ok(false);
    }
    sqlx::query("UPDATE jobs SET error_code = $2, error_message = $3 WHERE id = $1")
        .bind(job_id)
        .bind(moetune_types::ErrorCode::RunnerLost.as_str())
        .bind(format!("the job's runner was lost {losses} times"))
        .execute(&mut *conn)
        .await?;
    transition(conn, job_id, attempt, JobStatus::Failed, format!("{what}; giving up after {losses} lost runners")).await?;
    Ok(true)
}

/// Hands the job out again as attempt `attempt + 1` (no runner or ranks yet), `queued` with the
/// message `message` makes of the new attempt; returns it. Anything the previous attempt's runners
/// still send is refused as stale, and the new one writes under its own prefix.
pub async fn requeue_as_next_attempt(conn: &mut PgConnection, job_id: &JobId, attempt: i32, message: impl FnOnce(i32) -> String) -> sqlx::Result<i32> {
    let next = attempt + 1;
    sqlx::query("UPDATE jobs SET runner_id = NULL, ranks = NULL, attempt = $2 WHERE id = $1").bind(job_id).bind(next).execute(&mut *conn).await?;
    transition(conn, job_id, next, JobStatus::Queued, message(next)).await?;
    Ok(next)
}

/// Jobs Redis should know about: everything queued, running or pausing (a runner still holds it).
#[derive(Debug, sqlx::FromRow)]
pub struct ActiveJob {
    pub id: JobId,
    pub status: JobStatus,
    pub attempt: i32,
    pub runner_id: Option<RunnerId>,
    /// How many of its runners were lost (a pause or a graceful hand-back starts an attempt too, but
    /// is no loss).
    pub runner_losses: i32,
}

pub async fn active_jobs(pool: &PgPool) -> sqlx::Result<Vec<ActiveJob>> {
    sqlx::query_as(
        "SELECT id, status, attempt, runner_id, runner_losses FROM jobs
         WHERE status IN ('queued', 'running', 'pausing') ORDER BY created_at",
    )
    .fetch_all(pool)
    .await
}

/// What an attempt's assignment is made of: the job's stored fields and where its inputs are.
pub struct AssignmentParts {
    pub attempt: i32,
    pub spec: TrainingSpec,
    pub training_file_key: String,
    pub validation_file_key: Option<String>,
    pub model_location: Option<S3Location>,
    pub tenant: TenantId,
    pub priority: i16,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub requirements: JobRequirements,
    /// The newest accepted checkpoint's prefix (none for a new job).
    pub resume_from: Option<String>,
}

impl AssignmentParts {
    /// The assignment of `job_id` (every attempt gets its own checkpoint and artifact prefix).
    pub fn into_assignment(self, job_id: &JobId, bucket: &str) -> JobAssignment {
        let attempt = self.attempt;
        JobAssignment {
            job_id: job_id.clone(),
            attempt,
            spec: self.spec,
            bucket: bucket.to_string(),
            training_file_key: self.training_file_key,
            validation_file_key: self.validation_file_key,
            checkpoint_prefix: format!("checkpoints/{job_id}/attempt-{attempt}"),
            resume_from: self.resume_from,
            artifact_prefix: format!("artifacts/{job_id}/attempt-{attempt}"),
            model_location: self.model_location,
            placement: Placement {
                tenant: self.tenant.0.simple().to_string(),
                priority: self.priority,
                created_at_ms: self.created_at.timestamp_millis(),
                requirements: self.requirements,
            },
        }
    }
}

/// The stored fields an assignment is built from.
#[derive(sqlx::FromRow)]
struct AssignmentRow {
    attempt: i32,
    spec: sqlx::types::Json<TrainingSpec>,
    training_key: String,
    validation_key: Option<String>,
    model_bucket: Option<String>,
    model_prefix: Option<String>,
    tenant_id: TenantId,
    priority: i16,
    created_at: chrono::DateTime<chrono::Utc>,
    requirements: sqlx::types::Json<JobRequirements>,
}

/// Builds what a runner needs for a job's current attempt from Postgres (the reconciler republishes it
/// after data loss).
pub async fn assignment(conn: &mut PgConnection, job_id: &JobId, bucket: &str) -> anyhow::Result<JobAssignment> {
    let row: AssignmentRow = sqlx::query_as(
        "SELECT j.attempt, j.spec, f.s3_key AS training_key, v.s3_key AS validation_key, m.s3_bucket AS model_bucket,
                m.s3_prefix AS model_prefix, j.tenant_id, j.priority, j.created_at, j.requirements
         FROM jobs j JOIN files f ON f.id = j.training_file
         LEFT JOIN files v ON v.id = j.validation_file LEFT JOIN models m ON m.id = j.model WHERE j.id = $1",
    )
    .bind(job_id)
    .fetch_one(&mut *conn)
    .await?;
    let resume_from: Option<String> = sqlx::query_scalar("SELECT s3_prefix FROM checkpoints WHERE job_id = $1 AND deleted_at IS NULL ORDER BY created_at DESC, step DESC LIMIT 1")
        .bind(job_id)
        .fetch_optional(&mut *conn)
        .await?;
    let parts = AssignmentParts {
        attempt: row.attempt,
        spec: row.spec.0,
        training_file_key: row.training_key,
        validation_file_key: row.validation_key,
        model_location: row.model_bucket.zip(row.model_prefix).map(|(bucket, prefix)| S3Location { bucket, prefix }),
        tenant: row.tenant_id,
        priority: row.priority,
        created_at: row.created_at,
        requirements: row.requirements.0,
        resume_from,
    };
    Ok(parts.into_assignment(job_id, bucket))
}
