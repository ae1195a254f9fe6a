use moetune_types::FileId;
use moetune_types::ErrorCode;
use actix_multipart::Multipart;
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::TryStreamExt;

use crate::auth::Principal;
use crate::error::{ApiError, ErrorBody};
use crate::files::{self, FileObject, Order, FILE_COLUMNS};
use crate::routing_profiles::{self, CreateRoutingProfileRequest, RoutingProfileObject};
use crate::{idempotency, quotas};
use crate::AppState;

/// Multipart form of `POST /v1/files`.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct UploadForm {
    /// Must be `fine-tune`.
    purpose: String,
    /// JSONL, one training example per line (chat, alpaca or prompt/completion).
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
}

/// Upload a training file. Every line is validated while the file streams to storage; a file with
/// any bad line is refused with the line numbers and nothing is stored.
#[utoipa::path(post, path = "/v1/files", tag = "files",
    request_body(content = UploadForm, content_type = "multipart/form-data"),
    responses((status = 200, body = FileObject), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn upload(caller: Principal, req: HttpRequest, state: web::Data<AppState>, form: Multipart) -> Result<HttpResponse, ApiError> {
    let idempotency_key = idempotency::key_of(&req)?;
    if let Some(announced) = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<i64>().ok()) {
        quotas::precheck_storage(&state.db, caller.tenant, announced, &state.config.quotas).await?;
    }
    let (purpose, upload) = read_upload_form(&state, &caller, form).await?;
    let Some(key) = idempotency_key else {
        return Ok(HttpResponse::Ok().json(files::record_upload(&state, caller.tenant, upload, &purpose).await?));
    };
    let print = idempotency::fingerprint(&[b"POST /v1/files", purpose.as_bytes(), upload.filename.as_bytes(), upload.sha256.as_bytes()]);
    let stored_key = upload.key.clone();
    let record = async { Ok(HttpResponse::Ok().json(files::record_upload(&state, caller.tenant, upload, &purpose).await?)) };
    idempotency::settle_streamed(&state, caller.tenant, &key, &print, record, files::delete_object(&state, &stored_key)).await
}

/// Reads `purpose` and `file` (streamed to storage); on any error nothing stays stored.
async fn read_upload_form(state: &AppState, caller: &Principal, mut form: Multipart) -> Result<(String, files::StoredUpload), ApiError> {
    let mut purpose: Option<String> = None;
    let mut stored = None;
    let malformed = |e: actix_multipart::MultipartError| ApiError::invalid(ErrorCode::InvalidMultipart, "file", format!("Malformed multipart body: {e}"));
    while let Some(mut field) = form.try_next().await.map_err(malformed)? {
        match field.name().unwrap_or_default() {
            "purpose" => {
                let mut value = Vec::new();
                while let Some(chunk) = field.try_next().await.map_err(malformed)? {
                    value.extend_from_slice(&chunk);
                    if value.len() > 64 {
                        break;
                    }
                }
                purpose = Some(String::from_utf8_lossy(&value).trim().to_string());
            }
            "file" if stored.is_none() => stored = Some(files::store_upload(state, caller.tenant, field).await?),
            other => {
                let other = other.to_string();
                if let Some(upload) = stored.take() {
                    files::delete_object(state, &upload.key).await;
                }
                return Err(ApiError::invalid(ErrorCode::UnexpectedField, &other, format!("Unexpected form field '{other}'; send `purpose` and `file`.")));
            }
        }
    }
    let purpose_error = match purpose.as_deref() {
        Some("fine-tune") => None,
        None => Some(ApiError::invalid(ErrorCode::MissingParameter, "purpose", "Missing form field `purpose`; set it to 'fine-tune'.")),
        Some(other) => Some(ApiError::invalid(ErrorCode::InvalidPurpose, "purpose", format!("Unsupported purpose '{other}'; use 'fine-tune'."))),
    };
    match (purpose_error, stored) {
        (Some(error), stored) => {
            if let Some(upload) = stored {
                files::delete_object(state, &upload.key).await;
            }
            Err(error)
        }
        (None, None) => Err(ApiError::invalid(ErrorCode::MissingParameter, "file", "Missing form field `file` with the JSONL training data.")),
        (None, Some(upload)) => Ok(("fine-tune".to_string(), upload)),
    }
}

/// Retrieve a file's metadata and validation summary.
#[utoipa::path(get, path = "/v1/files/{id}", tag = "files",
    params(("id" = String, Path, description = "File id")),
    responses((status = 200, body = FileObject), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn retrieve(caller: Principal, state: web::Data<AppState>, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let id = FileId::parse(&id).map_err(ApiError::no_such)?;
    let file: FileObject = sqlx::query_as(&format!("SELECT {FILE_COLUMNS} FROM files WHERE id = $1 AND tenant_id = $2 AND deleted_at IS NULL"))
        .bind(id.as_str())
        .bind(caller.tenant)
        .fetch_optional(&state.db)
        .await?
        .ok_or_else(|| ApiError::not_found("file", &id))?;
    Ok(HttpResponse::Ok().json(file.with_object()))
}

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FilesQuery {
    /// Id of the last file from the previous page.
    after: Option<String>,
    /// Files per page, 1–10000 (default 10000, as OpenAI).
    limit: Option<i64>,
    /// `desc` (newest first, default) or `asc`.
    order: Option<Order>,
    /// Only files with this purpose.
    purpose: Option<String>,
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct FileList {
    /// Always `list`.
    object: &'static str,
    data: Vec<FileObject>,
    has_more: bool,
    first_id: Option<String>,
    last_id: Option<String>,
}

/// List the tenant's files.
#[utoipa::path(get, path = "/v1/files", tag = "files", params(FilesQuery),
    responses((status = 200, body = FileList), (status = 400, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(caller: Principal, state: web::Data<AppState>, query: web::Query<FilesQuery>) -> Result<HttpResponse, ApiError> {
    let limit = query.limit.unwrap_or(10_000);
    if !(1..=10_000).contains(&limit) {
        return Err(ApiError::invalid(ErrorCode::InvalidLimit, "limit", "`limit` must be from 1 to 10000."));
    }
    let order = query.order.unwrap_or_default();
    let (data, has_more) = files::list(&state, caller.tenant, query.purpose.as_deref(), query.after.as_deref(), limit, order).await?;
    let (first_id, last_id) = (data.first().map(|f| f.id.clone()), data.last().map(|f| f.id.clone()));
    Ok(HttpResponse::Ok().json(FileList { object: "list", data, has_more, first_id, last_id }))
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct FileDeleted {
    id: String,
    /// Always `file`.
    object: &'static str,
    deleted: bool,
}

/// Delete a file. Refused with 409 while a queued or running job uses it.
#[utoipa::path(delete, path = "/v1/files/{id}", tag = "files",
    params(("id" = String, Path, description = "File id")),
    responses((status = 200, body = FileDeleted), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn delete(caller: Principal, state: web::Data<AppState>, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let id = FileId::parse(&id).map_err(ApiError::no_such)?;
    files::delete(&state, caller.tenant, &id).await?;
    Ok(HttpResponse::Ok().json(FileDeleted { id: id.into(), object: "file", deleted: true }))
}

/// Download a file's content as uploaded; streamed from storage. 409 while a file made by the Uploads
/// API is still being assembled.
#[utoipa::path(get, path = "/v1/files/{id}/content", tag = "files",
    params(("id" = String, Path, description = "File id")),
    responses((status = 200, content_type = "application/octet-stream", body = crate::files::BinaryContent), (status = 404, body = ErrorBody),
              (status = 409, description = "The file is still being assembled from its upload's parts (`file_not_ready`)", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn content(caller: Principal, state: web::Data<AppState>, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let id = FileId::parse(&id).map_err(ApiError::no_such)?;
    let (bucket, key, bytes, filename) = files::location(&state, caller.tenant, &id).await?;
    let object = state.s3.get_object().bucket(&bucket).key(&key).send().await.map_err(ApiError::internal)?;
    let stream = tokio_util::io::ReaderStream::new(object.body.into_async_read());
    Ok(HttpResponse::Ok()
        .content_type("application/octet-stream")
        .insert_header(("content-disposition", format!("attachment; filename=\"{}\"", filename.replace('"', ""))))
        .insert_header(("content-length", bytes.to_string()))
        .streaming(stream))
}

/// Profile how a base model routes a file: a short job of its own kind routes the file's first
/// examples (and those of `validation_file`) through `model` on a runner and records, per MoE layer,
/// every expert's share of the tokens, the dead experts, entropy and KL to uniform. Poll
/// `GET /v1/files/{id}/routing_profile` until it has `succeeded`. Counts against the job quota while
/// it runs; sends no fine-tuning webhooks.
#[utoipa::path(post, path = "/v1/files/{id}/routing_profile", tag = "files",
    params(("id" = String, Path, description = "File id")),
    request_body = CreateRoutingProfileRequest,
    responses((status = 200, body = RoutingProfileObject), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 429, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create_routing_profile(caller: Principal, state: web::Data<AppState>, id: web::Path<String>, body: web::Json<CreateRoutingProfileRequest>) -> Result<HttpResponse, ApiError> {
    let id = FileId::parse(&id).map_err(ApiError::no_such)?;
    Ok(HttpResponse::Ok().json(routing_profiles::create(&state, caller.tenant, &id, body.into_inner()).await?))
}

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RoutingProfileQuery {
    /// Only a profile under this base model (at most 200 characters).
    model: Option<String>,
}

/// The newest routing profile of a file (under `model`, when given): its status and, once
/// `succeeded`, the profile of the file and of its validation file.
#[utoipa::path(get, path = "/v1/files/{id}/routing_profile", tag = "files",
    params(("id" = String, Path, description = "File id"), RoutingProfileQuery),
    responses((status = 200, body = RoutingProfileObject), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn routing_profile(caller: Principal, state: web::Data<AppState>, id: web::Path<String>, query: web::Query<RoutingProfileQuery>) -> Result<HttpResponse, ApiError> {
    let id = FileId::parse(&id).map_err(ApiError::no_such)?;
    let model = model_filter(&query)?;
    Ok(HttpResponse::Ok().json(routing_profiles::latest(&state, caller.tenant, &id, model).await?))
}

/// Cancel the newest routing profile of a file (under `model`, when given) that has not finished.
#[utoipa::path(post, path = "/v1/files/{id}/routing_profile/cancel", tag = "files",
    params(("id" = String, Path, description = "File id"), RoutingProfileQuery),
    responses((status = 200, body = RoutingProfileObject), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "No profile of the file is in progress (`job_not_cancellable`)")),
    security(("bearer" = [])))]
pub async fn cancel_routing_profile(caller: Principal, state: web::Data<AppState>, id: web::Path<String>, query: web::Query<RoutingProfileQuery>) -> Result<HttpResponse, ApiError> {
    let id = FileId::parse(&id).map_err(ApiError::no_such)?;
    let model = model_filter(&query)?;
    Ok(HttpResponse::Ok().json(routing_profiles::cancel(&state, caller.tenant, &id, model).await?))
}

fn model_filter(query: &RoutingProfileQuery) -> Result<Option<&str>, ApiError> {
    let model = query.model.as_deref().filter(|m| !m.is_empty());
    if model.is_some_and(|m| m.len() > 200) {
        return Err(ApiError::invalid(ErrorCode::InvalidQuery, "model", "`model` is a model id of at most 200 characters."));
    }
    Ok(model)
}
