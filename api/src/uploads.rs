//! The Uploads API (OpenAI `/v1/uploads`) for files too large for one request: create an upload
//! announcing the size, add parts of up to 64 MiB (in parallel if you like), then complete it naming
//! the parts in order. Each part is stored in S3 as it streams in. Completing creates the file in
//! status `uploaded`; a background task then streams the parts, in order, through the validator into
//! the file's S3 object (written as an S3 multipart upload) and marks it `processed` or `error`.
//! Jobs created on a file that is still `uploaded` wait in `validating_files` for that outcome.

use moetune_types::UploadStatus;
use moetune_types::UploadId;
use moetune_types::FileId;
use moetune_types::TenantId;
use moetune_types::ErrorCode;
use std::sync::Arc;

use actix_multipart::Field;
use futures_util::TryStreamExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::dataset_sink::{describe_problems, ValidatingSink};
use crate::error::ApiError;
use crate::files::{FileObject, FILE_COLUMNS};
use crate::unix_time::UnixTime;
use crate::storage::StagedObject;
use crate::AppState;

/// An upload becomes one file, so it is as large as a file may be.
pub const MAX_UPLOAD_BYTES: i64 = crate::files::MAX_FILE_BYTES;
pub const MAX_PART_BYTES: i64 = 64 << 20;
const EXPIRES_AFTER: &str = "1 hour";
const MIME_TYPES: [&str; 4] = ["application/jsonl", "application/x-ndjson", "application/json", "text/plain"];

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUploadRequest {
    pub filename: String,
    /// Must be `fine-tune`.
    pub purpose: String,
    /// Total size of the file in bytes (up to 8 GiB); the parts must add up to it.
    pub bytes: i64,
    /// `application/jsonl` (also accepted: application/x-ndjson, application/json, text/plain).
    pub mime_type: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteUploadRequest {
    /// Every part's id, in the order the file is made of.
    pub part_ids: Vec<String>,
    /// Optional MD5 of the whole file (hex), checked while assembling.
    pub md5: Option<String>,
}

/// OpenAI's upload object.
#[derive(Debug, Serialize, ToSchema)]
pub struct UploadObject {
    pub id: String,
    /// Always `upload`.
    pub object: &'static str,
    pub bytes: i64,
    pub created_at: UnixTime,
    pub filename: String,
    pub purpose: String,
    /// `pending`, `completed`, `cancelled` or `expired`.
    pub status: String,
    pub expires_at: UnixTime,
    /// The file, once completed (status `uploaded` until validated).
    pub file: Option<FileObject>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UploadPart {
    pub id: String,
    /// Always `upload.part`.
    pub object: &'static str,
    pub created_at: UnixTime,
    pub upload_id: String,
    pub bytes: i64,
    /// SHA-256 of the part's bytes.
    pub sha256: String,
}

#[derive(sqlx::FromRow)]
struct UploadRow {
    id: UploadId,
    filename: String,
    purpose: String,
    bytes: i64,
    status: UploadStatus,
    s3_bucket: String,
    file_id: Option<String>,
    created_at: chrono::DateTime<chrono::Utc>,
    expires_at: chrono::DateTime<chrono::Utc>,
}

impl UploadRow {
    /// The status a client sees: a pending upload past its expiry is `expired`.
    fn status(&self) -> &'static str {
        if self.status == UploadStatus::Pending && self.expires_at < chrono::Utc::now() { "expired" } else { self.status.as_str() }
    }

    /// 409 unless parts may still be added and the upload completed.
    fn require_pending(&self) -> Result<(), ApiError> {
        match self.status() {
            "pending" => Ok(()),
            status => Err(ApiError::new(ErrorCode::UploadNotPending, format!("Upload '{}' is {status}; create a new upload to send the file again.", self.id))),
        }
    }
}

async fn row<'e>(db: impl sqlx::PgExecutor<'e>, tenant: TenantId, id: &UploadId) -> Result<UploadRow, ApiError> {
    row_query(db, tenant, id, "").await
}

/// The upload's row; `lock` is appended to the query (e.g. `FOR UPDATE`).
async fn row_query<'e>(db: impl sqlx::PgExecutor<'e>, tenant: TenantId, id: &UploadId, lock: &str) -> Result<UploadRow, ApiError> {
    sqlx::query_as(&format!("SELECT id, filename, purpose, bytes, status, s3_bucket, file_id, created_at, expires_at FROM uploads WHERE id = $1 AND tenant_id = $2 {lock}"))
        .bind(id)
        .bind(tenant)
        .fetch_optional(db)
        .await?
        .ok_or_else(|| ApiError::not_found("upload", id))
}

pub async fn get(state: &AppState, tenant: TenantId, id: &UploadId) -> Result<UploadObject, ApiError> {
    let row = row(&state.db, tenant, id).await?;
    let file = match &row.file_id {
        Some(file_id) => Some(
            sqlx::query_as::<_, FileObject>(&format!("SELECT {FILE_COLUMNS} FROM files WHERE id = $1"))
                .bind(file_id)
                .fetch_one(&state.db)
                .await?
                .with_object(),
        ),
        None => None,
    };
    Ok(UploadObject {
        object: "upload",
        bytes: row.bytes,
        created_at: row.created_at.into(),
        status: row.status().to_string(),
        expires_at: row.expires_at.into(),
        id: row.id.into(),
        filename: row.filename,
        purpose: row.purpose,
        file,
    })
}

pub async fn create(state: &AppState, tenant: TenantId, request: &CreateUploadRequest) -> Result<UploadObject, ApiError> {
    if request.purpose != "fine-tune" {
        return Err(ApiError::invalid(ErrorCode::InvalidPurpose, "purpose", format!("Unsupported purpose '{}'; use 'fine-tune'.", request.purpose)));
    }
    if !(1..=MAX_UPLOAD_BYTES).contains(&request.bytes) {
        return Err(ApiError::invalid(ErrorCode::InvalidBytes, "bytes", format!("`bytes` must be from 1 to {MAX_UPLOAD_BYTES} (8 GiB).")));
    }
    if !MIME_TYPES.contains(&request.mime_type.as_str()) {
        return Err(ApiError::invalid(ErrorCode::InvalidMimeType, "mime_type", format!("Unsupported mime_type '{}'; fine-tune files are JSONL: use 'application/jsonl'.", request.mime_type)));
    }
    crate::files::check_filename(&request.filename)?;
    crate::quotas::precheck_storage(&state.db, tenant, request.bytes, &state.config.quotas).await?;
    let id = UploadId::generate();
    sqlx::query(&format!(
        "INSERT INTO uploads (id, tenant_id, filename, purpose, bytes, mime_type, status, s3_bucket, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7, now() + interval '{EXPIRES_AFTER}')"
    ))
    .bind(&id)
    .bind(tenant)
    .bind(&request.filename)
    .bind(&request.purpose)
    .bind(request.bytes)
    .bind(&request.mime_type)
    .bind(&state.config.s3.bucket)
    .execute(&state.db)
    .await?;
    get(state, tenant, &id).await
}

fn part_key(tenant: TenantId, upload: &str, part: &str) -> String {
    format!("uploads/{tenant}/{upload}/{part}")
}

/// A part's bytes stored in S3, not yet recorded against its upload.
pub struct StoredPart {
    upload: UploadRow,
    id: String,
    pub key: String,
    bytes: i64,
    pub sha256: String,
}

/// Streams one part (the multipart field `data`) to S3. A part may hold up to 64 MiB and, with
/// `within_room`, no more than the upload still lacks (a retry under an Idempotency-Key streams without
/// that bound, since its first try may be what filled the upload; [`record`] checks it either way).
pub async fn store_part(state: &AppState, tenant: TenantId, upload_id: &UploadId, mut field: Field, within_room: bool) -> Result<StoredPart, ApiError> {
    let upload = row(&state.db, tenant, upload_id).await?;
    upload.require_pending()?;
    let limit = if within_room { MAX_PART_BYTES.min(upload.bytes - parts_bytes(&state.db, upload_id).await?) } else { MAX_PART_BYTES };
    let id = format!("part_{}", Uuid::new_v4().simple());
    let key = part_key(tenant, upload_id, &id);
    let mut object = StagedObject::new(state.s3.clone(), &state.config.s3.bucket, &key);
    let mut bytes = 0i64;
    let mut hasher = Sha256::new();
    loop {
        let chunk = match field.try_next().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(e) => {
                object.abort().await;
                return Err(ApiError::invalid(ErrorCode::UploadInterrupted, "data", format!("Part upload failed: {e}")));
            }
        };
        bytes += chunk.len() as i64;
        hasher.update(&chunk);
        if bytes > limit {
            object.abort().await;
            return Err(part_too_large(&upload, limit));
        }
        if let Err(e) = object.write(&chunk).await {
            object.abort().await;
            return Err(ApiError::internal(e));
        }
    }
    if bytes == 0 {
        object.abort().await;
        return Err(ApiError::invalid(ErrorCode::EmptyPart, "data", "The part is empty; send its bytes in the form field `data`."));
    }
    object.commit().await.map_err(ApiError::internal)?;
    Ok(StoredPart { upload, id, key, bytes, sha256: hex::encode(hasher.finalize()) })
}

/// Records a stored part against its upload (the parts' sum within the declared size, the tenant's
/// storage quota); on refusal its object is deleted.
pub async fn record(state: &AppState, tenant: TenantId, part: StoredPart) -> Result<UploadPart, ApiError> {
    match record_part(state, tenant, &part.upload, &part.id, &part.key, part.bytes).await {
        Ok(created_at) => Ok(UploadPart { id: part.id, object: "upload.part", created_at: created_at.into(), upload_id: part.upload.id.into(), bytes: part.bytes, sha256: part.sha256 }),
        Err(e) => {
            crate::files::delete_object(state, &part.key).await;
            Err(e)
        }
    }
}

/// Stores and records one part.
pub async fn add_part(state: &AppState, tenant: TenantId, upload_id: &UploadId, field: Field) -> Result<UploadPart, ApiError> {
    let stored = store_part(state, tenant, upload_id, field, true).await?;
    record(state, tenant, stored).await
}

async fn parts_bytes<'e>(db: impl sqlx::PgExecutor<'e>, upload_id: &str) -> Result<i64, ApiError> {
    Ok(sqlx::query_scalar("SELECT coalesce(sum(bytes), 0)::bigint FROM upload_parts WHERE upload_id = $1").bind(upload_id).fetch_one(db).await?)
}

fn part_too_large(upload: &UploadRow, limit: i64) -> ApiError {
    if limit < MAX_PART_BYTES {
        let message = format!(
            "This part would take the upload past the {} bytes it was created for (room left: {} bytes); parts must add up to the declared size.",
            upload.bytes,
            limit.max(0)
        );
        return ApiError::invalid(ErrorCode::UploadSizeExceeded, "data", message);
    }
    ApiError::invalid(ErrorCode::PartTooLarge, "data", format!("A part holds at most {MAX_PART_BYTES} bytes (64 MiB); split the file into more parts."))
}

/// Records a stored part, in one transaction with the upload's row locked, so parts racing each other,
/// a cancel or a completion are checked one at a time: the upload must still be pending, the parts'
/// sum must stay within its size, and the tenant's storage must have room.
async fn record_part(state: &AppState, tenant: TenantId, upload: &UploadRow, id: &str, key: &str, bytes: i64) -> Result<chrono::DateTime<chrono::Utc>, ApiError> {
    let mut tx = state.db.begin().await?;
    let current = row_query(&mut *tx, tenant, &upload.id, "FOR UPDATE").await?;
    current.require_pending()?;
    let room = current.bytes - parts_bytes(&mut *tx, &upload.id).await?;
    if bytes > room {
        return Err(part_too_large(&current, room));
    }
    crate::quotas::reserve_storage(&mut tx, tenant, bytes, &state.config.quotas).await?;
    let created_at = sqlx::query_scalar("INSERT INTO upload_parts (id, upload_id, s3_key, bytes) VALUES ($1, $2, $3, $4) RETURNING created_at")
        .bind(id)
        .bind(&upload.id)
        .bind(key)
        .bind(bytes)
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(created_at)
}

/// Creates the file from the parts in the given order; validation continues in the background.
pub async fn complete(state: &Arc<AppState>, tenant: TenantId, upload_id: &UploadId, request: &CompleteUploadRequest) -> Result<UploadObject, ApiError> {
    let mut tx = state.db.begin().await?;
    let upload = row_query(&mut *tx, tenant, upload_id, "FOR UPDATE").await?;
    upload.require_pending()?;
    if let Some(md5) = &request.md5 {
        if md5.len() != 32 || !md5.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ApiError::invalid(ErrorCode::InvalidMd5, "md5", "`md5` must be 32 hex digits."));
        }
    }
    let parts: Vec<(String, i64)> = sqlx::query_as("SELECT id, bytes FROM upload_parts WHERE upload_id = $1").bind(upload_id).fetch_all(&mut *tx).await?;
    let mut seen = std::collections::HashSet::new();
    let mut total = 0i64;
    for id in &request.part_ids {
        let bytes = parts.iter().find(|(p, _)| p == id).map(|(_, b)| *b).ok_or_else(|| {
            ApiError::invalid(ErrorCode::InvalidPartIds, "part_ids", format!("Part '{id}' does not belong to upload '{upload_id}'."))
        })?;
        if !seen.insert(id) {
            return Err(ApiError::invalid(ErrorCode::InvalidPartIds, "part_ids", format!("Part '{id}' is listed twice.")));
        }
        total += bytes;
    }
    if request.part_ids.is_empty() || total != upload.bytes {
        return Err(ApiError::invalid(
            ErrorCode::UploadSizeMismatch,
            "part_ids",
            format!("The listed parts hold {total} bytes but the upload was created for {}; list every part, in order.", upload.bytes),
        ));
    }
    // The parts are already counted against the quota; from now on the file is, in their place.
    let stored_parts: i64 = parts.iter().map(|(_, bytes)| bytes).sum();
    crate::quotas::reserve_storage(&mut tx, tenant, total - stored_parts, &state.config.quotas).await?;
    let file_id = FileId::generate();
    sqlx::query(
        "INSERT INTO files (id, tenant_id, filename, purpose, bytes, s3_bucket, s3_key, sha256, status)
         VALUES ($1, $2, $3, $4, $5, $6, $7, '', 'uploaded')",
    )
    .bind(&file_id)
    .bind(tenant)
    .bind(&upload.filename)
    .bind(&upload.purpose)
    .bind(total)
    .bind(&upload.s3_bucket)
    .bind(format!("files/{tenant}/{file_id}.jsonl"))
    .execute(&mut *tx)
    .await?;
    sqlx::query("UPDATE uploads SET status = 'completed', file_id = $2, part_order = $3, md5 = $4 WHERE id = $1")
        .bind(upload_id)
        .bind(&file_id)
        .bind(&request.part_ids)
        .bind(request.md5.as_ref().map(|m| m.to_lowercase()))
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    let background = state.clone();
    tokio::spawn(async move { validate_assembled_file(&background, &file_id).await });
    get(state, tenant, upload_id).await
}

/// Cancels a pending upload and removes its parts.
pub async fn cancel(state: &AppState, tenant: TenantId, upload_id: &UploadId) -> Result<UploadObject, ApiError> {
    let updated = sqlx::query("UPDATE uploads SET status = 'cancelled' WHERE id = $1 AND tenant_id = $2 AND status = 'pending'")
        .bind(upload_id)
        .bind(tenant)
        .execute(&state.db)
        .await?;
    if updated.rows_affected() == 0 {
        let upload = row(&state.db, tenant, upload_id).await?;
        if upload.status != UploadStatus::Pending {
            return Err(ApiError::new(ErrorCode::UploadNotPending, format!("Upload '{upload_id}' is {}; only a pending upload can be cancelled.", upload.status.as_str())));
        }
    }
    delete_parts(state, upload_id).await;
    get(state, tenant, upload_id).await
}

async fn delete_parts(state: &AppState, upload_id: &str) {
    let keys: Vec<String> = sqlx::query_scalar("DELETE FROM upload_parts WHERE upload_id = $1 RETURNING s3_key")
        .bind(upload_id)
        .fetch_all(&state.db)
        .await
        .unwrap_or_default();
    for key in keys {
        crate::files::delete_object(state, &key).await;
    }
}

/// Assembly attempts before a file that keeps failing is given up on (`error`); the waits between
/// attempts double from 30 s.
pub const MAX_ASSEMBLY_ATTEMPTS: i32 = 5;

/// Streams the parts of a completed upload, in order, through the validator into the file's object,
/// then records `processed` or `error`. Holds a lease on the file so only one API instance does it; a
/// crash leaves the file `uploaded` and the sweeper tries again once the lease runs out.
///
/// A failure never loops: one the input decides (Postgres refusing a value, a part gone) ends the file
/// in `error` at once; any other is retried with a doubling wait, and after
/// [`MAX_ASSEMBLY_ATTEMPTS`] the file ends in `error` too, with a message saying to upload it again.
pub async fn validate_assembled_file(state: &AppState, file_id: &FileId) {
    let leased = sqlx::query(
        "UPDATE files SET validating_until = now() + interval '10 minutes', assembly_attempts = assembly_attempts + 1
         WHERE id = $1 AND status = 'uploaded' AND deleted_at IS NULL AND (validating_until IS NULL OR validating_until < now())
         RETURNING assembly_attempts",
    )
    .bind(file_id)
    .fetch_optional(&state.db)
    .await;
    let attempt: i32 = match leased {
        Ok(Some(row)) => sqlx::Row::get(&row, 0),
        _ => return,
    };
    if let Err(e) = assemble(state, file_id).await {
        let deterministic = is_deterministic(&e);
        tracing::error!(file = %file_id, attempt, deterministic, error = %format!("{e:#}"), "could not assemble an upload");
        if deterministic || attempt >= MAX_ASSEMBLY_ATTEMPTS {
            give_up_assembly(state, file_id, attempt, deterministic).await;
        } else {
            let wait_seconds = 30i64 << (attempt - 1).clamp(0, 6);
            let _ = sqlx::query("UPDATE files SET validating_until = now() + make_interval(secs => $2) WHERE id = $1")
                .bind(file_id)
                .bind(wait_seconds as f64)
                .execute(&state.db)
                .await;
            return;
        }
    }
    if let Err(e) = crate::jobs::advance_validating(state).await {
        tracing::error!(error = %e, "could not advance jobs waiting on file validation");
    }
}

/// Failures that would recur on every attempt: the data, not the moment, is at fault.
fn is_deterministic(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        if let Some(sqlx::Error::Database(db)) = cause.downcast_ref::<sqlx::Error>() {
            // Class 22: data exceptions (NUL in text, bad Unicode escapes, values too long).
            return db.code().is_some_and(|code| code.starts_with("22"));
        }
        cause.downcast_ref::<MissingPart>().is_some()
    })
}

/// A part listed at completion whose row or object is gone.
#[derive(Debug, thiserror::Error)]
#[error("part {0} of the upload is missing")]
struct MissingPart(String);

/// Ends a file that cannot be assembled in `error`, with a message the tenant can act on (the
/// underlying error is only logged: it names hosts and buckets).
async fn give_up_assembly(state: &AppState, file_id: &str, attempts: i32, deterministic: bool) {
    let details = if deterministic {
        "The file could not be assembled from its upload's parts: its content or a part could not be stored as sent. Upload it again; if this repeats, check the file's encoding.".to_string()
    } else {
        format!("The file could not be assembled from its upload's parts after {attempts} attempts. Upload it again.")
    };
    let marked = sqlx::query("UPDATE files SET status = 'error', status_details = $2, validating_until = NULL WHERE id = $1 AND status = 'uploaded'")
        .bind(file_id)
        .bind(details)
        .execute(&state.db)
        .await;
    if let Err(e) = marked {
        tracing::error!(file = file_id, error = %e, "could not mark an unassemblable file as failed");
    }
    if let Ok(Some(upload_id)) = sqlx::query_scalar::<_, String>("SELECT id FROM uploads WHERE file_id = $1").bind(file_id).fetch_optional(&state.db).await {
        delete_parts(state, &upload_id).await;
    }
}

async fn assemble(state: &AppState, file_id: &str) -> anyhow::Result<()> {
    let (bucket, key, upload_id, part_order, expected_md5): (String, String, String, Vec<String>, Option<String>) = sqlx::query_as(
        "SELECT f.s3_bucket, f.s3_key, u.id, u.part_order, u.md5 FROM files f JOIN uploads u ON u.file_id = f.id WHERE f.id = $1",
    )
    .bind(file_id)
    .fetch_one(&state.db)
    .await?;
    let mut sink = ValidatingSink::new(state.s3.clone(), &bucket, &key);
    let mut md5_context = md5::Context::new();
    // A failed attempt aborts its multipart upload: nothing of it stays in the bucket.
    if let Err(e) = copy_parts(state, &bucket, &part_order, &mut sink, &mut md5_context).await {
        sink.abort().await;
        return Err(e);
    }
    let (finished, object) = sink.finish();
    object.commit().await?;
    let actual_md5 = format!("{:x}", md5_context.compute());
    let (status, details, errors, summary) = match (&finished.validation, expected_md5) {
        (_, Some(expected)) if expected != actual_md5 => {
            ("error", Some(format!("The assembled file's MD5 is {actual_md5}, not the {expected} given at completion; upload it again.")), None, None)
        }
        (Ok(summary), _) => ("processed", None, None, Some(summary)),
        (Err((lines, total)), _) => ("error", Some(describe_problems(lines, *total)), Some(serde_json::to_value(lines)?), None),
    };
    // Only a live file is updated: one deleted while it was being assembled keeps no object.
    let updated = sqlx::query(
        "UPDATE files SET status = $2, status_details = $3, validation_errors = $4, sha256 = $5, format = $6, example_count = $7,
                          estimated_tokens = $8, validating_until = NULL
         WHERE id = $1 AND deleted_at IS NULL",
    )
    .bind(file_id)
    .bind(status)
    .bind(details)
    .bind(errors)
    .bind(&finished.sha256)
    .bind(summary.map(|s| s.format.as_str()))
    .bind(summary.map(|s| s.examples as i64))
    .bind(summary.map(|s| s.estimated_tokens as i64))
    .execute(&state.db)
    .await?;
    if updated.rows_affected() == 0 {
        crate::files::delete_object(state, &key).await;
    }
    delete_parts(state, &upload_id).await;
    Ok(())
}

/// Streams the parts, in order, into the sink.
async fn copy_parts(state: &AppState, bucket: &str, part_order: &[String], sink: &mut ValidatingSink, md5_context: &mut md5::Context) -> anyhow::Result<()> {
    for part in part_order {
        let part_key: Option<String> = sqlx::query_scalar("SELECT s3_key FROM upload_parts WHERE id = $1").bind(part).fetch_optional(&state.db).await?;
        let part_key = part_key.ok_or_else(|| MissingPart(part.clone()))?;
        let object = match state.s3.get_object().bucket(bucket).key(&part_key).send().await {
            Ok(object) => object,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => return Err(MissingPart(part.clone()).into()),
            Err(e) => return Err(e.into()),
        };
        let mut body = object.body;
        while let Some(chunk) = body.try_next().await? {
            md5_context.consume(&chunk);
            sink.write(&chunk).await?;
        }
    }
    Ok(())
}
