//! Dataset files: streamed to S3 while every line is validated; an invalid file stores nothing.

use moetune_types::FileStatus;
use moetune_types::FileId;
use moetune_types::TenantId;
use moetune_types::ErrorCode;
use actix_multipart::Field;
use futures_util::TryStreamExt;
use moetune_types::DatasetSummary;
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::unix_time::UnixTime;
use crate::dataset_sink::ValidatingSink;
use crate::AppState;

/// The OpenAI file object, plus what validation found.
#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct FileObject {
    pub id: String,
    /// Always `file`.
    #[sqlx(skip)]
    #[schema(example = "file")]
    pub object: &'static str,
    pub bytes: i64,
    #[sqlx(try_from = "chrono::DateTime<chrono::Utc>")]
    #[sqlx(rename = "created_at_ts")]
    pub created_at: UnixTime,
    pub filename: String,
    pub purpose: String,
    /// `processed` once validated. Direct uploads are validated as they stream (an invalid one is
    /// refused and never stored); files assembled by the Uploads API are `uploaded` until validated,
    /// then `processed` or `error`.
    pub status: String,
    /// Why the file is in `error`, with line numbers.
    pub status_details: Option<String>,
    /// For a file in `error`: the first 20 offending lines.
    #[schema(value_type = Option<Vec<moetune_types::LineError>>)]
    pub validation_errors: Option<serde_json::Value>,
    /// `chat`, `alpaca` or `prompt_completion`.
    pub format: Option<String>,
    pub example_count: Option<i64>,
    pub estimated_tokens: Option<i64>,
    pub sha256: String,
}

/// A response body of raw bytes (a dataset, an artifact), as generated clients should read it.
#[derive(ToSchema)]
#[schema(value_type = String, format = Binary)]
#[allow(dead_code)]
pub struct BinaryContent(Vec<u8>);

pub const FILE_COLUMNS: &str = "id, bytes, created_at AS created_at_ts, filename, purpose, status, status_details, \
     validation_errors, format, example_count, estimated_tokens, sha256";

/// A dataset written to S3 (not yet recorded in Postgres).
pub struct StoredUpload {
    pub id: String,
    pub key: String,
    pub filename: String,
    pub bytes: i64,
    pub sha256: String,
    pub summary: DatasetSummary,
}

/// Largest file `POST /v1/files` and the Uploads API take (8 GiB).
pub const MAX_FILE_BYTES: i64 = 8 << 30;

/// Streams the multipart `file` field to S3, validating each line on the way. The stream is cut off as
/// soon as it passes [`MAX_FILE_BYTES`] or the tenant's free storage, whether or not the request
/// announced its length.
pub async fn store_upload(state: &AppState, tenant: TenantId, mut field: Field) -> Result<StoredUpload, ApiError> {
    let room = crate::quotas::storage_room(&state.db, tenant, &state.config.quotas).await?;
    let filename = field
        .content_disposition()
        .and_then(|d| d.get_filename())
        .unwrap_or("upload.jsonl")
        .to_string();
    check_filename(&filename)?;
    let id = FileId::generate();
    let key = format!("files/{tenant}/{id}.jsonl");
    let mut sink = ValidatingSink::new(state.s3.clone(), &state.config.s3.bucket, &key);
    loop {
        let chunk = match field.try_next().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(e) => {
                sink.abort().await;
                return Err(ApiError::invalid(ErrorCode::UploadInterrupted, "file", format!("Upload failed: {e}")));
            }
        };
        if sink.bytes() + chunk.len() as i64 > MAX_FILE_BYTES.min(room) {
            sink.abort().await;
            return Err(too_large(room));
        }
        if let Err(e) = sink.write(&chunk).await {
            sink.abort().await;
            return Err(ApiError::internal(e));
        }
    }
    let (finished, object) = sink.finish();
    let summary = match finished.validation {
        Ok(summary) => summary,
        Err((lines, total)) => {
            object.abort().await;
            return Err(dataset_error(lines, total));
        }
    };
    object.commit().await.map_err(ApiError::internal)?;
    Ok(StoredUpload { id: id.into(), key, filename, bytes: finished.bytes, sha256: finished.sha256, summary })
}

fn too_large(room: i64) -> ApiError {
    if room < MAX_FILE_BYTES {
        return ApiError::quota_exceeded(format!(
            "Storage quota exceeded: this upload goes past the {room} bytes your organization may still store; delete files you no longer need (DELETE /v1/files/{{id}}), then retry. Nothing was stored."
        ));
    }
    ApiError::invalid(ErrorCode::FileTooLarge, "file", format!("A file holds at most {MAX_FILE_BYTES} bytes (8 GiB). Nothing was stored."))
}

/// A file name is shown in listings, downloads' `content-disposition` and logs: 1 to 255 characters,
/// none of them control characters.
pub fn check_filename(name: &str) -> Result<(), ApiError> {
    if name.is_empty() || name.chars().count() > 255 {
        return Err(ApiError::invalid(ErrorCode::InvalidFilename, "filename", "The file name must be 1 to 255 characters."));
    }
    if name.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            ErrorCode::InvalidFilename,
            "filename",
            format!("The file name '{}' contains control characters; rename the file.", moetune_types::text::echo(name, 100)),
        ));
    }
    Ok(())
}

fn dataset_error(lines: Vec<moetune_types::LineError>, total: u64) -> ApiError {
    let message = format!("{} Nothing was stored.", crate::dataset_sink::describe_problems(&lines, total));
    ApiError::invalid(ErrorCode::InvalidFileFormat, "file", message).with_lines(lines)
}

/// Records a stored upload; removes the S3 object if the database refuses it.
pub async fn record_upload(state: &AppState, tenant: TenantId, upload: StoredUpload, purpose: &str) -> Result<FileObject, ApiError> {
    match insert_file(state, tenant, &upload, purpose).await {
        Ok(file) => Ok(file),
        Err(e) => {
            delete_object(state, &upload.key).await;
            Err(e)
        }
    }
}

/// Inserts the file row once the tenant's storage quota has room for it.
async fn insert_file(state: &AppState, tenant: TenantId, upload: &StoredUpload, purpose: &str) -> Result<FileObject, ApiError> {
    let mut tx = state.db.begin().await?;
    crate::quotas::reserve_storage(&mut tx, tenant, upload.bytes, &state.config.quotas).await?;
    let file = sqlx::query_as::<_, FileObject>(&format!(
        "INSERT INTO files (id, tenant_id, filename, purpose, bytes, s3_bucket, s3_key, sha256, status, format,
                            example_count, estimated_tokens)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'processed', $9, $10, $11) RETURNING {FILE_COLUMNS}"
    ))
    .bind(&upload.id)
    .bind(tenant)
    .bind(&upload.filename)
    .bind(purpose)
    .bind(upload.bytes)
    .bind(&state.config.s3.bucket)
    .bind(&upload.key)
    .bind(&upload.sha256)
    .bind(upload.summary.format.as_str())
    .bind(upload.summary.examples as i64)
    .bind(upload.summary.estimated_tokens as i64)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(file.with_object())
}

pub async fn delete_object(state: &AppState, key: &str) {
    if let Err(e) = state.s3.delete_object().bucket(&state.config.s3.bucket).key(key).send().await {
        tracing::error!(key, error = %e, "could not delete S3 object");
    }
}

impl FileObject {
    pub fn with_object(mut self) -> Self {
        self.object = "file";
        self
    }
}

/// Order of a listing.
#[derive(Debug, Clone, Copy, Default, serde::Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    Asc,
    #[default]
    Desc,
}

/// One page of the tenant's live files, newest first unless `order` is `asc`; `after` is the id of the
/// last file of the previous page.
pub async fn list(state: &AppState, tenant: TenantId, purpose: Option<&str>, after: Option<&str>, limit: i64, order: Order) -> Result<(Vec<FileObject>, bool), ApiError> {
    let cursor = crate::pagination::cursor(&state.db, "files", tenant, after).await?;
    let mut query = sqlx::QueryBuilder::new(format!("SELECT {FILE_COLUMNS} FROM files WHERE deleted_at IS NULL AND tenant_id = "));
    query.push_bind(tenant);
    if let Some(purpose) = purpose {
        query.push(" AND purpose = ").push_bind(purpose);
    }
    crate::pagination::finish_page(&mut query, cursor, matches!(order, Order::Desc), limit);
    let (rows, has_more) = crate::pagination::page(query.build_query_as::<FileObject>().fetch_all(&state.db).await?, limit);
    Ok((rows.into_iter().map(FileObject::with_object).collect(), has_more))
}

/// The stored location of a live file of the tenant; 409 while an upload's parts are still being
/// assembled into it (its object does not exist yet).
pub async fn location(state: &AppState, tenant: TenantId, id: &FileId) -> Result<(String, String, i64, String), ApiError> {
    let row: (String, String, i64, String, FileStatus) =
        sqlx::query_as("SELECT s3_bucket, s3_key, bytes, filename, status FROM files WHERE id = $1 AND tenant_id = $2 AND deleted_at IS NULL")
            .bind(id)
            .bind(tenant)
            .fetch_optional(&state.db)
            .await?
            .ok_or_else(|| ApiError::not_found("file", id))?;
    let (bucket, key, bytes, filename, status) = row;
    if status == FileStatus::Uploaded {
        return Err(ApiError::new(ErrorCode::FileNotReady, format!("File '{id}' is still being assembled from its upload's parts; retry once its status is `processed` or `error`.")));
    }
    Ok((bucket, key, bytes, filename))
}

/// Deletes a file: refused while a queued or running job needs it; otherwise its data leaves S3 and the
/// file disappears from the API (jobs that used it keep their reference).
pub async fn delete(state: &AppState, tenant: TenantId, id: &FileId) -> Result<(), ApiError> {
    let mut tx = state.db.begin().await?;
    // The row lock orders this against a job being created on the file (it takes a share lock).
    let (bucket, key): (String, String) = sqlx::query_as("SELECT s3_bucket, s3_key FROM files WHERE id = $1 AND tenant_id = $2 AND deleted_at IS NULL FOR UPDATE")
        .bind(id)
        .bind(tenant)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| ApiError::not_found("file", id))?;
    let active: Option<(String, String, String)> = sqlx::query_as(
        "SELECT id, method_type, model FROM jobs WHERE (training_file = $1 OR validation_file = $1) AND status IN ('validating_files', 'queued', 'running', 'pausing', 'paused') LIMIT 1",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    match active {
        Some((_, method, model)) if method == moetune_types::routing::PROFILE_METHOD => {
            let message = format!("File '{id}' is being profiled with model '{model}'; wait until that finishes (GET /v1/files/{id}/routing_profile) or cancel it (POST /v1/files/{id}/routing_profile/cancel), then delete the file.");
            return Err(ApiError::new(ErrorCode::FileInUse, message));
        }
        Some((job, _, _)) => {
            return Err(ApiError::new(ErrorCode::FileInUse, format!("File '{id}' is used by job '{job}', which has not finished; cancel it or wait, then delete the file.")));
        }
        None => {}
    }
    sqlx::query("UPDATE files SET deleted_at = now() WHERE id = $1").bind(id).execute(&mut *tx).await?;
    tx.commit().await?;
    if let Err(e) = state.s3.delete_object().bucket(&bucket).key(&key).send().await {
        tracing::error!(key, error = %e, "file hidden but its S3 object could not be deleted");
    }
    Ok(())
}
