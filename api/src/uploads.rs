//! The Uploads API (OpenAI `/v1/uploads`) for files too large for one request: create an upload
//! announcing the size, add parts of up to 64 MiB (in parallel if you like), then complete it naming
//! the parts in order. Each part is stored in S3 as it streams in. Completing creates the file in
//! status `uploaded`; a background task then streams the parts, in order, through the validator into
//! the file's S3 object (written as an S3 multipart upload) and marks it `processed` or `error`.
//! Jobs created on a file that is still `uploaded` wait in `validating_files` for that outcome.

use std::sync::Arc;
use std::time::Duration;

use actix_multipart::Field;
use futures_util::TryStreamExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::dataset_sink::{describe_problems, ValidatingSink};
use crate::error::ApiError;
use crate::files::{FileObject, UnixTime, FILE_COLUMNS};
use crate::storage::StagedObject;
use crate::AppState;

pub const MAX_UPLOAD_BYTES: i64 = 8 << 30;
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
    id: String,
    filename: String,
    purpose: String,
    bytes: i64,
    status: String,
    s3_bucket: String,
    file_id: Option<String>,
    created_at: chrono::DateTime<chrono::Utc>,
    expires_at: chrono::DateTime<chrono::Utc>,
}

impl UploadRow {
    fn status(&self) -> &str {
        if self.status == "pending" && self.expires_at < chrono::Utc::now() { "expired" } else { &self.status }
    }

    /// 409 unless parts may still be added and the upload completed.
    fn require_pending(&self) -> Result<(), ApiError> {
        match self.status() {
            "pending" => Ok(()),
            status => Err(ApiError::conflict("upload_not_pending", format!("Upload '{}' is {status}; create a new upload to send the file again.", self.id))),
        }
    }
}

async fn row<'e>(db: impl sqlx::PgExecutor<'e>, tenant: Uuid, id: &str) -> Result<UploadRow, ApiError> {
    row_query(db, tenant, id, "").await
}

/// The upload's row; `lock` is appended to the query (e.g. `FOR UPDATE`).
async fn row_query<'e>(db: impl sqlx::PgExecutor<'e>, tenant: Uuid, id: &str, lock: &str) -> Result<UploadRow, ApiError> {
    sqlx::query_as(&format!("SELECT id, filename, purpose, bytes, status, s3_bucket, file_id, created_at, expires_at FROM uploads WHERE id = $1 AND tenant_id = $2 {lock}"))
        .bind(id)
        .bind(tenant)
        .fetch_optional(db)
        .await?
        .ok_or_else(|| ApiError::not_found("upload", id))
}

pub async fn get(state: &AppState, tenant: Uuid, id: &str) -> Result<UploadObject, ApiError> {
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
        id: row.id,
        filename: row.filename,
        purpose: row.purpose,
        file,
    })
}

pub async fn create(state: &AppState, tenant: Uuid, request: &CreateUploadRequest) -> Result<UploadObject, ApiError> {
    if request.purpose != "fine-tune" {
        return Err(ApiError::invalid("invalid_purpose", "purpose", format!("Unsupported purpose '{}'; use 'fine-tune'.", request.purpose)));
    }
    if !(1..=MAX_UPLOAD_BYTES).contains(&request.bytes) {
        return Err(ApiError::invalid("invalid_bytes", "bytes", format!("`bytes` must be from 1 to {MAX_UPLOAD_BYTES} (8 GiB).")));
    }
    if !MIME_TYPES.contains(&request.mime_type.as_str()) {
        return Err(ApiError::invalid("invalid_mime_type", "mime_type", format!("Unsupported mime_type '{}'; fine-tune files are JSONL: use 'application/jsonl'.", request.mime_type)));
    }
    if request.filename.is_empty() || request.filename.len() > 255 {
        return Err(ApiError::invalid("invalid_filename", "filename", "`filename` must be 1 to 255 characters."));
    }
    crate::quotas::precheck_storage(&state.db, tenant, request.bytes, &state.config.quotas).await?;
    let id = format!("upload_{}", Uuid::new_v4().simple());
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

fn part_key(tenant: Uuid, upload: &str, part: &str) -> String {
    format!("uploads/{tenant}/{upload}/{part}")
}

/// Streams one part (the multipart field `data`) to S3; over 64 MiB it is refused and removed.
pub async fn add_part(state: &AppState, tenant: Uuid, upload_id: &str, mut field: Field) -> Result<UploadPart, ApiError> {
    row(&state.db, tenant, upload_id).await?.require_pending()?;
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
                return Err(ApiError::invalid("upload_interrupted", "data", format!("Part upload failed: {e}")));
            }
        };
        bytes += chunk.len() as i64;
        hasher.update(&chunk);
        if bytes > MAX_PART_BYTES {
            object.abort().await;
            return Err(ApiError::invalid("part_too_large", "data", format!("A part holds at most {MAX_PART_BYTES} bytes (64 MiB); split the file into more parts.")));
        }
        if let Err(e) = object.write(&chunk).await {
            object.abort().await;
            return Err(ApiError::internal(e));
        }
    }
    if bytes == 0 {
        object.abort().await;
        return Err(ApiError::invalid("empty_part", "data", "The part is empty; send its bytes in the form field `data`."));
    }
    object.commit().await.map_err(ApiError::internal)?;
    // Recorded only if the upload is still pending: a part racing a cancel or completion is dropped.
    let created: Option<chrono::DateTime<chrono::Utc>> = sqlx::query_scalar(
        "INSERT INTO upload_parts (id, upload_id, s3_key, bytes)
         SELECT $1, id, $3, $4 FROM uploads WHERE id = $2 AND status = 'pending' AND expires_at > now() FOR UPDATE
         RETURNING created_at",
    )
    .bind(&id)
    .bind(upload_id)
    .bind(&key)
    .bind(bytes)
    .fetch_optional(&state.db)
    .await?;
    let Some(created_at) = created else {
        crate::files::delete_object(state, &key).await;
        return Err(row(&state.db, tenant, upload_id).await?.require_pending().err().unwrap_or_else(|| ApiError::internal("part not recorded")));
    };
    let sha256 = hex::encode(hasher.finalize());
    Ok(UploadPart { id, object: "upload.part", created_at: created_at.into(), upload_id: upload_id.to_string(), bytes, sha256 })
}

/// Creates the file from the parts in the given order; validation continues in the background.
pub async fn complete(state: &Arc<AppState>, tenant: Uuid, upload_id: &str, request: &CompleteUploadRequest) -> Result<UploadObject, ApiError> {
    let mut tx = state.db.begin().await?;
    let upload = row_query(&mut *tx, tenant, upload_id, "FOR UPDATE").await?;
    upload.require_pending()?;
    if let Some(md5) = &request.md5 {
        if md5.len() != 32 || !md5.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ApiError::invalid("invalid_md5", "md5", "`md5` must be 32 hex digits."));
        }
    }
    let parts: Vec<(String, i64)> = sqlx::query_as("SELECT id, bytes FROM upload_parts WHERE upload_id = $1").bind(upload_id).fetch_all(&mut *tx).await?;
    let mut seen = std::collections::HashSet::new();
    let mut total = 0i64;
    for id in &request.part_ids {
        let bytes = parts.iter().find(|(p, _)| p == id).map(|(_, b)| *b).ok_or_else(|| {
            ApiError::invalid("invalid_part_ids", "part_ids", format!("Part '{id}' does not belong to upload '{upload_id}'."))
        })?;
        if !seen.insert(id) {
            return Err(ApiError::invalid("invalid_part_ids", "part_ids", format!("Part '{id}' is listed twice.")));
        }
        total += bytes;
    }
    if request.part_ids.is_empty() || total != upload.bytes {
        return Err(ApiError::invalid(
            "upload_size_mismatch",
            "part_ids",
            format!("The listed parts hold {total} bytes but the upload was created for {}; list every part, in order.", upload.bytes),
        ));
    }
    crate::quotas::reserve_storage(&mut tx, tenant, total, &state.config.quotas).await?;
    let file_id = format!("file-{}", Uuid::new_v4().simple());
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

/// Forgets a part (an idempotent retry stored a duplicate of one already recorded).
pub async fn drop_part(state: &AppState, part: &UploadPart) {
    let key: Option<String> = sqlx::query_scalar("DELETE FROM upload_parts WHERE id = $1 RETURNING s3_key").bind(&part.id).fetch_optional(&state.db).await.unwrap_or(None);
    if let Some(key) = key {
        crate::files::delete_object(state, &key).await;
    }
}

/// Cancels a pending upload and removes its parts.
pub async fn cancel(state: &AppState, tenant: Uuid, upload_id: &str) -> Result<UploadObject, ApiError> {
    let updated = sqlx::query("UPDATE uploads SET status = 'cancelled' WHERE id = $1 AND tenant_id = $2 AND status = 'pending'")
        .bind(upload_id)
        .bind(tenant)
        .execute(&state.db)
        .await?;
    if updated.rows_affected() == 0 {
        let upload = row(&state.db, tenant, upload_id).await?;
        if upload.status != "pending" {
            return Err(ApiError::conflict("upload_not_pending", format!("Upload '{upload_id}' is {}; only a pending upload can be cancelled.", upload.status)));
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

/// Streams the parts of a completed upload, in order, through the validator into the file's object,
/// then records `processed` or `error`. Holds a lease on the file so only one API instance does it; a
/// crash leaves the file `uploaded` and the sweeper tries again once the lease runs out.
pub async fn validate_assembled_file(state: &AppState, file_id: &str) {
    let leased = sqlx::query("UPDATE files SET validating_until = now() + interval '10 minutes' WHERE id = $1 AND status = 'uploaded' AND (validating_until IS NULL OR validating_until < now())")
        .bind(file_id)
        .execute(&state.db)
        .await;
    if !matches!(leased, Ok(r) if r.rows_affected() == 1) {
        return;
    }
    if let Err(e) = assemble(state, file_id).await {
        tracing::error!(file = file_id, error = %e, "could not assemble an upload; will retry");
        let _ = sqlx::query("UPDATE files SET validating_until = now() + interval '30 seconds' WHERE id = $1").bind(file_id).execute(&state.db).await;
        return;
    }
    if let Err(e) = crate::jobs::advance_validating(state).await {
        tracing::error!(error = %e, "could not advance jobs waiting on file validation");
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
    for part in &part_order {
        let part_key: String = sqlx::query_scalar("SELECT s3_key FROM upload_parts WHERE id = $1").bind(part).fetch_one(&state.db).await?;
        let object = state.s3.get_object().bucket(&bucket).key(&part_key).send().await?;
        let mut body = object.body;
        while let Some(chunk) = body.try_next().await? {
            md5_context.consume(&chunk);
            sink.write(&chunk).await?;
        }
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
    sqlx::query(
        "UPDATE files SET status = $2, status_details = $3, validation_errors = $4, sha256 = $5, format = $6, example_count = $7,
                          estimated_tokens = $8, validating_until = NULL
         WHERE id = $1",
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
    delete_parts(state, &upload_id).await;
    Ok(())
}

/// Every `SWEEP`: validates files left `uploaded` by a crash or restart, and advances jobs waiting on
/// them. Runs in every API instance; the file lease keeps them from doing the same file twice.
pub async fn sweep_forever(state: Arc<AppState>) {
    const SWEEP: Duration = Duration::from_secs(15);
    loop {
        let stale: Vec<String> = sqlx::query_scalar("SELECT id FROM files WHERE status = 'uploaded' AND (validating_until IS NULL OR validating_until < now())")
            .fetch_all(&state.db)
            .await
            .unwrap_or_default();
        for file in stale {
            validate_assembled_file(&state, &file).await;
        }
        if let Err(e) = crate::jobs::advance_validating(&state).await {
            tracing::warn!(error = %e, "sweeper could not advance validating jobs");
        }
        tokio::time::sleep(SWEEP).await;
    }
}
