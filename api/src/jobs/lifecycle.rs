//! Changing a job's course: cancel, pause and resume.

use moetune_types::JobId;
use moetune_types::TenantId;
use moetune_types::ErrorCode;

use moetune_domain::store;
use moetune_types::JobStatus;

use crate::error::ApiError;
use crate::AppState;
use super::create::advance_validating;
use super::object::{get, JobObject, FINE_TUNES, PROFILES};

/// Cancels a job that has not finished: Postgres first (the truth; later runner events are refused as
/// the job is terminal), then Redis withdraws it and flags the runner, which stops at its next step.
pub async fn cancel(state: &AppState, tenant: TenantId, id: &JobId) -> Result<JobObject, ApiError> {
    withdraw(state, tenant, id, FINE_TUNES).await?;
    get(state, tenant, id).await
}

/// Cancels a routing-profile job (`crate::routing_profiles`) that has not finished.
pub async fn cancel_profile(state: &AppState, tenant: TenantId, id: &JobId) -> Result<(), ApiError> {
    withdraw(state, tenant, id, PROFILES).await
}

/// Cancels the tenant's job `id` among the rows `which` selects.
async fn withdraw(state: &AppState, tenant: TenantId, id: &JobId, which: &str) -> Result<(), ApiError> {
    let mut tx = state.db.begin().await?;
    let (status, attempt) = lock_job(&mut tx, tenant, id, which).await?;
    if status.is_terminal() {
        return Err(ApiError::new(ErrorCode::JobNotCancellable, format!("Job '{id}' has already {}; only jobs that have not finished can be cancelled.", status.as_str())));
    }
    store::transition(&mut tx, id, attempt, JobStatus::Cancelled, "Job cancelled".into()).await?;
    tx.commit().await?;
    if let Err(e) = state.queue.cancel(id).await {
        // The reconciler only republishes queued/running jobs, so a cancelled one is never handed out again.
        tracing::warn!(job = %id, error = %e, "could not withdraw the cancelled job from Redis");
    }
    Ok(())
}

/// Pauses a job that has not finished. One not yet started is paused at once: a new attempt fences off
/// any runner that claimed it, and Redis withdraws it. A running one turns `pausing`: its runner
/// checkpoints at the next step and lets go (the scheduler then records `paused`).
pub async fn pause(state: &AppState, tenant: TenantId, id: &JobId) -> Result<JobObject, ApiError> {
    let mut tx = state.db.begin().await?;
    let (status, attempt) = lock_job(&mut tx, tenant, id, FINE_TUNES).await?;
    let (to, attempt_now, withdraw) = match status {
        JobStatus::ValidatingFiles | JobStatus::Queued => (JobStatus::Paused, attempt + 1, true),
        JobStatus::Running => (JobStatus::Pausing, attempt, false),
        JobStatus::Pausing | JobStatus::Paused => return Err(ApiError::new(ErrorCode::JobNotPausable, format!("Job '{id}' is already {}.", status.as_str()))),
        _ => return Err(ApiError::new(ErrorCode::JobNotPausable, format!("Job '{id}' has already {}; only jobs that have not finished can be paused.", status.as_str()))),
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
pub async fn resume(state: &AppState, tenant: TenantId, id: &JobId) -> Result<JobObject, ApiError> {
    let mut tx = state.db.begin().await?;
    let (status, attempt) = lock_job(&mut tx, tenant, id, FINE_TUNES).await?;
    if status != JobStatus::Paused {
        let hint = if status == JobStatus::Pausing { " wait until it is paused, then resume" } else { " only paused jobs can be resumed" };
        return Err(ApiError::new(ErrorCode::JobNotResumable, format!("Job '{id}' is {};{hint}.", status.as_str())));
    }
    crate::quotas::reserve_job(&mut tx, tenant, &state.config.quotas).await?;
    let attempt = attempt + 1;
    sqlx::query("UPDATE jobs SET attempt = $2, runner_id = NULL, ranks = NULL WHERE id = $1").bind(id).bind(attempt).execute(&mut *tx).await?;
    // Back through validation: queued at once when its files are processed (advance_validating below).
    store::transition(&mut tx, id, attempt, JobStatus::ValidatingFiles, format!("Job resumed as attempt {attempt}")).await?;
    tx.commit().await?;
    advance_validating(state).await?;
    get(state, tenant, id).await
}

/// Locks the tenant's job row among those `which` selects; its status and attempt.
async fn lock_job(tx: &mut sqlx::PgConnection, tenant: TenantId, id: &JobId, which: &str) -> Result<(JobStatus, i32), ApiError> {
    let row: Option<(JobStatus, i32)> = sqlx::query_as(&format!("SELECT status, attempt FROM jobs WHERE id = $1 AND tenant_id = $2 AND {which} FOR UPDATE"))
        .bind(id)
        .bind(tenant)
        .fetch_optional(&mut *tx)
        .await?;
    row.ok_or_else(|| ApiError::not_found("fine-tuning job", id))
}
