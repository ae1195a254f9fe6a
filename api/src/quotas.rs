//! Per-tenant limits: concurrent jobs and stored bytes. Checks run inside the transaction that would
//! exceed them, after locking the tenant's row, so two concurrent requests cannot both squeeze in.

use moetune_types::TenantId;
use moetune_types::ErrorCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::config::QuotaDefaults;
use crate::error::ApiError;

/// A tenant's effective limits and current use.
#[derive(Debug, Serialize, ToSchema)]
pub struct TenantObject {
    pub id: Uuid,
    /// Always `tenant`.
    pub object: &'static str,
    pub name: String,
    /// Jobs that may be validating, queued or running at once.
    pub max_concurrent_jobs: i64,
    /// Bytes of live files the tenant may store.
    pub max_storage_bytes: i64,
    pub active_jobs: i64,
    pub storage_bytes: i64,
}

/// Body of `POST /v1/admin/tenants`: creates the tenant or updates its limits. A limit left out keeps
/// its current value; `null` returns it to the server default.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantRequest {
    pub name: String,
    #[serde(default, deserialize_with = "present")]
    pub max_concurrent_jobs: Option<Option<i64>>,
    #[serde(default, deserialize_with = "present")]
    pub max_storage_bytes: Option<Option<i64>>,
}

/// Distinguishes an absent field (None) from an explicit null (Some(None)).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<i64>>, D::Error> {
    Option::<i64>::deserialize(d).map(Some)
}

/// Jobs holding a concurrent-job slot (`job_holds_slot` is defined with `reserve_job_slot`, which
/// enforces the limit, in migrations/20261129000001_create_job_function.sql).
const ACTIVE_JOBS: &str = "SELECT count(*) FROM jobs WHERE tenant_id = $1 AND job_holds_slot(status)";
/// Live files, the parts of uploads not completed (pending, or cancelled and expired ones until the
/// sweeper deletes them: parts take storage from the moment they are stored; a completed upload's
/// parts are counted as its file), and the jobs' kept checkpoints.
const STORED_BYTES: &str = "SELECT (SELECT coalesce(sum(bytes), 0) FROM files WHERE tenant_id = $1 AND deleted_at IS NULL)
     + (SELECT coalesce(sum(p.bytes), 0) FROM upload_parts p JOIN uploads u ON u.id = p.upload_id WHERE u.tenant_id = $1 AND u.file_id IS NULL)
     + (SELECT coalesce(sum(c.bytes), 0) FROM checkpoints c JOIN jobs j ON j.id = c.job_id WHERE j.tenant_id = $1 AND c.deleted_at IS NULL)";

async fn usage<'e>(db: impl sqlx::PgExecutor<'e>, tenant: TenantId) -> Result<(i64, i64), ApiError> {
    Ok(sqlx::query_as(&format!("SELECT ({ACTIVE_JOBS}), ({STORED_BYTES})::bigint")).bind(tenant).fetch_one(db).await?)
}

async fn stored_bytes<'e>(db: impl sqlx::PgExecutor<'e>, tenant: TenantId) -> Result<i64, ApiError> {
    Ok(sqlx::query_scalar(&format!("SELECT ({STORED_BYTES})::bigint")).bind(tenant).fetch_one(db).await?)
}

/// 429 unless the tenant may start one more job. Call inside the transaction that starts it: the
/// tenant's row stays locked until it ends (`reserve_job_slot`, which `create_job` uses too).
pub async fn reserve_job(tx: &mut sqlx::PgConnection, tenant: TenantId, defaults: &QuotaDefaults) -> Result<(), ApiError> {
    let (active, max_jobs): (i64, i64) =
        sqlx::query_as("SELECT active_jobs, job_limit FROM reserve_job_slot($1, $2)").bind(tenant).bind(defaults.max_concurrent_jobs).fetch_one(&mut *tx).await?;
    if active >= max_jobs {
        return Err(job_quota_exceeded(active, max_jobs));
    }
    Ok(())
}

/// The 429 for a tenant with `active` unfinished jobs and a limit of `max_jobs`.
pub fn job_quota_exceeded(active: i64, max_jobs: i64) -> ApiError {
    ApiError::quota_exceeded(format!(
        "Your organization has {active} unfinished fine-tuning job(s), its limit is {max_jobs}; wait for one to finish or cancel one, then retry."
    ))
}

/// 429 unless `incoming` more bytes fit the tenant's storage. Call inside the transaction recording them.
pub async fn reserve_storage(tx: &mut sqlx::PgConnection, tenant: TenantId, incoming: i64, defaults: &QuotaDefaults) -> Result<(), ApiError> {
    let max_bytes: Option<i64> = sqlx::query_scalar("SELECT max_storage_bytes FROM tenants WHERE id = $1 FOR UPDATE").bind(tenant).fetch_one(&mut *tx).await?;
    let max_bytes = max_bytes.unwrap_or(defaults.max_storage_bytes);
    let stored = stored_bytes(&mut *tx, tenant).await?;
    check_storage(stored, incoming, max_bytes)
}

/// The same check without a lock, to refuse an upload before streaming it when its size is announced.
pub async fn precheck_storage(db: &sqlx::PgPool, tenant: TenantId, incoming: i64, defaults: &QuotaDefaults) -> Result<(), ApiError> {
    let max: Option<i64> = sqlx::query_scalar("SELECT max_storage_bytes FROM tenants WHERE id = $1").bind(tenant).fetch_one(db).await?;
    let stored = stored_bytes(db, tenant).await?;
    check_storage(stored, incoming, max.unwrap_or(defaults.max_storage_bytes))
}

/// Bytes the tenant may still store. Read without a lock, to stop a stream of unannounced size early;
/// the transaction recording the data checks again under the lock.
pub async fn storage_room(db: &sqlx::PgPool, tenant: TenantId, defaults: &QuotaDefaults) -> Result<i64, ApiError> {
    let max: Option<i64> = sqlx::query_scalar("SELECT max_storage_bytes FROM tenants WHERE id = $1").bind(tenant).fetch_one(db).await?;
    let stored = stored_bytes(db, tenant).await?;
    Ok(max.unwrap_or(defaults.max_storage_bytes).saturating_sub(stored).max(0))
}

fn check_storage(stored: i64, incoming: i64, max_bytes: i64) -> Result<(), ApiError> {
    if stored.saturating_add(incoming) > max_bytes {
        return Err(ApiError::quota_exceeded(format!(
            "Storage quota exceeded: your organization stores {stored} bytes (files, upload parts not yet assembled, and checkpoints of jobs), this upload adds {incoming}, the limit is {max_bytes}; delete files you no longer need (DELETE /v1/files/{{id}}), then retry."
        )));
    }
    Ok(())
}

/// Creates or updates a tenant (admin).
pub async fn upsert_tenant(db: &sqlx::PgPool, request: &TenantRequest, defaults: &QuotaDefaults) -> Result<TenantObject, ApiError> {
    let name = request.name.trim();
    if name.is_empty() || name.len() > 64 || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
        return Err(ApiError::invalid(ErrorCode::InvalidTenantName, "name", "`name` must be 1 to 64 letters, digits, '-', '_' or '.'."));
    }
    for (param, value) in [("max_concurrent_jobs", request.max_concurrent_jobs), ("max_storage_bytes", request.max_storage_bytes)] {
        if value.flatten().is_some_and(|v| v < 0) {
            return Err(ApiError::invalid(ErrorCode::InvalidQuota, param, format!("`{param}` must be 0 or more, or null for the server default.")));
        }
    }
    let id = crate::auth::ensure_tenant(db, name).await?;
    if let Some(value) = request.max_concurrent_jobs {
        sqlx::query("UPDATE tenants SET max_concurrent_jobs = $2 WHERE id = $1").bind(id).bind(value).execute(db).await?;
    }
    if let Some(value) = request.max_storage_bytes {
        sqlx::query("UPDATE tenants SET max_storage_bytes = $2 WHERE id = $1").bind(id).bind(value).execute(db).await?;
    }
    get_tenant(db, name, defaults).await
}

pub async fn get_tenant(db: &sqlx::PgPool, name: &str, defaults: &QuotaDefaults) -> Result<TenantObject, ApiError> {
    let row: Option<(TenantId, Option<i64>, Option<i64>)> = sqlx::query_as("SELECT id, max_concurrent_jobs, max_storage_bytes FROM tenants WHERE name = $1")
        .bind(name)
        .fetch_optional(db)
        .await?;
    let (id, jobs, bytes) = row.ok_or_else(|| ApiError::not_found("tenant", name))?;
    let (active_jobs, storage_bytes) = usage(db, id).await?;
    Ok(TenantObject {
        id: id.0,
        object: "tenant",
        name: name.to_string(),
        max_concurrent_jobs: jobs.unwrap_or(defaults.max_concurrent_jobs),
        max_storage_bytes: bytes.unwrap_or(defaults.max_storage_bytes),
        active_jobs,
        storage_bytes,
    })
}

/// The tenant id for a name (admin endpoints address tenants by name).
pub async fn tenant_id(db: &sqlx::PgPool, name: &str) -> Result<TenantId, ApiError> {
    sqlx::query_scalar("SELECT id FROM tenants WHERE name = $1")
        .bind(name)
        .fetch_optional(db)
        .await?
        .ok_or_else(|| ApiError::not_found("tenant", name))
}
