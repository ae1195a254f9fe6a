//! The API's background sweeper: files left `uploaded` by a crash, jobs waiting on their files,
//! upload parts nothing will assemble, checkpoints retention pruned, and expired idempotency keys.

use std::sync::Arc;
use std::time::Duration;

use crate::AppState;

#[derive(sqlx::FromRow)]
struct AbandonedPart {
    id: String,
    key: String,
    bucket: String,
}

#[derive(sqlx::FromRow)]
struct PrunedCheckpoint {
    job_id: String,
    name: String,
    bucket: String,
    prefix: String,
}

/// Deletes the parts nothing will assemble any more: those of expired and cancelled uploads, and of
/// uploads whose file was deleted. An expired upload is left 10 minutes more, so that a completion
/// racing the expiry (judged by the API host's clock) never loses its parts. Each object goes first, then its row, so a failed delete is retried
/// on the next sweep instead of leaving an object nobody knows about.
pub async fn sweep_abandoned_parts(state: &AppState) -> anyhow::Result<usize> {
    let abandoned: Vec<AbandonedPart> = sqlx::query_as(
        "SELECT p.id, p.s3_key AS key, u.s3_bucket AS bucket FROM upload_parts p JOIN uploads u ON u.id = p.upload_id LEFT JOIN files f ON f.id = u.file_id
         WHERE (u.status = 'pending' AND u.expires_at < now() - interval '10 minutes') OR u.status = 'cancelled' OR f.deleted_at IS NOT NULL
         LIMIT 1000",
    )
    .fetch_all(&state.db)
    .await?;
    let mut deleted = 0;
    for AbandonedPart { id, key, bucket } in abandoned {
        if let Err(e) = state.s3.delete_object().bucket(&bucket).key(&key).send().await {
            tracing::warn!(key, error = %aws_sdk_s3::error::DisplayErrorContext(&e), "could not delete an abandoned upload part; will retry");
            continue;
        }
        sqlx::query("DELETE FROM upload_parts WHERE id = $1").bind(&id).execute(&state.db).await?;
        deleted += 1;
    }
    Ok(deleted)
}

/// Deletes from storage the checkpoints the scheduler's retention marked deleted (a job keeps its
/// newest few and its stage finals), then their rows.
pub async fn sweep_pruned_checkpoints(state: &AppState) -> anyhow::Result<usize> {
    let pruned: Vec<PrunedCheckpoint> =
        sqlx::query_as("SELECT job_id, name, s3_bucket AS bucket, s3_prefix AS prefix FROM checkpoints WHERE deleted_at IS NOT NULL LIMIT 100").fetch_all(&state.db).await?;
    let mut removed = 0;
    for PrunedCheckpoint { job_id, name, bucket, prefix } in pruned {
        // One that fails is tried again next sweep; the others go on.
        match remove_checkpoint(state, &job_id, &name, &bucket, &prefix).await {
            Ok(true) => removed += 1,
            Ok(false) => {}
            Err(e) => tracing::warn!(job = job_id, checkpoint = name, error = %e, "could not delete a pruned checkpoint; will retry"),
        }
    }
    Ok(removed)
}

/// Deletes one pruned checkpoint's objects, then its row once none is left; false while more remain.
async fn remove_checkpoint(state: &AppState, job_id: &str, name: &str, bucket: &str, prefix: &str) -> anyhow::Result<bool> {
    let listed = state.s3.list_objects_v2().bucket(bucket).prefix(format!("{prefix}/")).send().await?;
    for object in listed.contents() {
        if let Some(key) = object.key() {
            state.s3.delete_object().bucket(bucket).key(key).send().await?;
        }
    }
    if listed.is_truncated() == Some(true) {
        return Ok(false);
    }
    sqlx::query("DELETE FROM checkpoints WHERE job_id = $1 AND name = $2 AND deleted_at IS NOT NULL").bind(job_id).bind(name).execute(&state.db).await?;
    Ok(true)
}

/// Every `upload_sweep_interval_ms`: validates files left `uploaded` by a crash or restart, advances
/// jobs waiting on them, deletes abandoned parts and pruned checkpoints. Runs in every API instance; the file lease keeps
/// them from doing the same file twice.
pub async fn sweep_forever(state: Arc<AppState>) {
    let interval = Duration::from_millis(state.config.upload_sweep_interval_ms.max(50));
    loop {
        let stale: Vec<moetune_types::FileId> = sqlx::query_scalar(
            "SELECT id FROM files WHERE status = 'uploaded' AND deleted_at IS NULL AND (validating_until IS NULL OR validating_until < now())",
        )
        .fetch_all(&state.db)
        .await
        .unwrap_or_default();
        for file in stale {
            crate::uploads::validate_assembled_file(&state, &file).await;
        }
        if let Err(e) = crate::jobs::advance_validating(&state).await {
            tracing::warn!(error = %e, "sweeper could not advance validating jobs");
        }
        if let Err(e) = sweep_abandoned_parts(&state).await {
            tracing::warn!(error = %e, "sweeper could not delete abandoned upload parts");
        }
        if let Err(e) = sweep_pruned_checkpoints(&state).await {
            tracing::warn!(error = %e, "sweeper could not delete pruned checkpoints");
        }
        if let Err(e) = crate::idempotency::expire(&state.db).await {
            tracing::warn!(error = %e, "sweeper could not delete expired idempotency keys");
        }
        tokio::time::sleep(interval).await;
    }
}
