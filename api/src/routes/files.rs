use actix_multipart::Multipart;
use actix_web::{web, HttpResponse};
use futures_util::TryStreamExt;

use crate::auth::Tenant;
use crate::error::{ApiError, ErrorBody};
use crate::files::{self, FileObject, FILE_COLUMNS};
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
pub async fn upload(tenant: Tenant, state: web::Data<AppState>, mut form: Multipart) -> Result<HttpResponse, ApiError> {
    let mut purpose: Option<String> = None;
    let mut stored = None;
    let malformed = |e: actix_multipart::MultipartError| ApiError::invalid("invalid_multipart", "file", format!("Malformed multipart body: {e}"));
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
            "file" if stored.is_none() => stored = Some(files::store_upload(&state, tenant.id, field).await?),
            other => {
                let other = other.to_string();
                if let Some(upload) = stored.take() {
                    files::delete_object(&state, &upload.key).await;
                }
                return Err(ApiError::invalid("unexpected_field", &other, format!("Unexpected form field '{other}'; send `purpose` and `file`.")));
            }
        }
    }
    let purpose_error = match purpose.as_deref() {
        Some("fine-tune") => None,
        None => Some(ApiError::invalid("missing_parameter", "purpose", "Missing form field `purpose`; set it to 'fine-tune'.")),
        Some(other) => Some(ApiError::invalid("invalid_purpose", "purpose", format!("Unsupported purpose '{other}'; use 'fine-tune'."))),
    };
    match (purpose_error, stored) {
        (Some(error), stored) => {
            if let Some(upload) = stored {
                files::delete_object(&state, &upload.key).await;
            }
            Err(error)
        }
        (None, None) => Err(ApiError::invalid("missing_parameter", "file", "Missing form field `file` with the JSONL training data.")),
        (None, Some(upload)) => Ok(HttpResponse::Ok().json(files::record_upload(&state, tenant.id, upload, "fine-tune").await?)),
    }
}

/// Retrieve a file's metadata and validation summary.
#[utoipa::path(get, path = "/v1/files/{id}", tag = "files",
    params(("id" = String, Path, description = "File id")),
    responses((status = 200, body = FileObject), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn retrieve(tenant: Tenant, state: web::Data<AppState>, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let file: FileObject = sqlx::query_as(&format!("SELECT {FILE_COLUMNS} FROM files WHERE id = $1 AND tenant_id = $2"))
        .bind(id.as_str())
        .bind(tenant.id)
        .fetch_optional(&state.db)
        .await?
        .ok_or_else(|| ApiError::not_found("file", &id))?;
    Ok(HttpResponse::Ok().json(file.with_object()))
}
