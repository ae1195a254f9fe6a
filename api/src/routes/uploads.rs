use moetune_types::UploadId;
use moetune_types::ErrorCode;
use actix_multipart::Multipart;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::TryStreamExt;

use crate::auth::Principal;
use crate::error::{ApiError, ErrorBody};
use crate::idempotency;
use crate::uploads::{self, CompleteUploadRequest, CreateUploadRequest, UploadObject, UploadPart};
use crate::AppState;

/// Start a multi-part upload of a large training file (up to 8 GiB); it expires after an hour.
#[utoipa::path(post, path = "/v1/uploads", tag = "uploads",
    request_body = CreateUploadRequest,
    responses((status = 200, body = UploadObject), (status = 400, body = ErrorBody), (status = 429, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create(caller: Principal, state: web::Data<AppState>, body: web::Json<CreateUploadRequest>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(uploads::create(&state, caller.tenant, &body).await?))
}

/// Retrieve an upload, with its file once completed.
#[utoipa::path(get, path = "/v1/uploads/{id}", tag = "uploads",
    params(("id" = String, Path, description = "Upload id")),
    responses((status = 200, body = UploadObject), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn retrieve(caller: Principal, state: web::Data<AppState>, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let id = UploadId::parse(&id).map_err(ApiError::no_such)?;
    Ok(HttpResponse::Ok().json(uploads::get(&state, caller.tenant, &id).await?))
}

/// Multipart form of `POST /v1/uploads/{id}/parts`.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct PartForm {
    /// The part's bytes, up to 64 MiB.
    #[schema(value_type = String, format = Binary)]
    data: Vec<u8>,
}

/// Add a part (multipart field `data`, up to 64 MiB). Parts may be sent in parallel; their order is
/// given at completion.
#[utoipa::path(post, path = "/v1/uploads/{id}/parts", tag = "uploads",
    params(("id" = String, Path, description = "Upload id")),
    request_body(content = PartForm, content_type = "multipart/form-data"),
    responses((status = 200, body = UploadPart), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn add_part(caller: Principal, req: HttpRequest, state: web::Data<AppState>, id: web::Path<String>, mut form: Multipart) -> Result<HttpResponse, ApiError> {
    let id = UploadId::parse(&id).map_err(ApiError::no_such)?;
    let idempotency_key = idempotency::key_of(&req)?;
    let malformed = |e: actix_multipart::MultipartError| ApiError::invalid(ErrorCode::InvalidMultipart, "data", format!("Malformed multipart body: {e}"));
    if let Some(field) = form.try_next().await.map_err(malformed)? {
        if field.name() != Some("data") {
            let name = field.name().unwrap_or_default().to_string();
            return Err(ApiError::invalid(ErrorCode::UnexpectedField, &name, format!("Unexpected form field '{name}'; send the part's bytes as `data`.")));
        }
        let Some(key) = idempotency_key else { return Ok(HttpResponse::Ok().json(uploads::add_part(&state, caller.tenant, &id, field).await?)) };
        // The same bytes sent again under the same key are the same part: the first one's answer is
        // replayed and the copy deleted; only a first try is recorded against the upload.
        let stored = uploads::store_part(&state, caller.tenant, &id, field, false).await?;
        let print = idempotency::fingerprint(&[b"POST /v1/uploads/parts", id.as_bytes(), stored.sha256.as_bytes()]);
        let stored_key = stored.key.clone();
        let record = async { Ok(HttpResponse::Ok().json(uploads::record(&state, caller.tenant, stored).await?)) };
        return idempotency::settle_streamed(&state, caller.tenant, &key, &print, record, crate::files::delete_object(&state, &stored_key)).await;
    }
    Err(ApiError::invalid(ErrorCode::MissingParameter, "data", "Missing form field `data` with the part's bytes."))
}

/// Complete the upload: the parts, in order, become a file (status `uploaded`, then `processed` or
/// `error` once validated in the background).
#[utoipa::path(post, path = "/v1/uploads/{id}/complete", tag = "uploads",
    params(("id" = String, Path, description = "Upload id")),
    request_body = CompleteUploadRequest,
    responses((status = 200, body = UploadObject), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 429, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn complete(caller: Principal, state: web::Data<AppState>, id: web::Path<String>, body: web::Json<CompleteUploadRequest>) -> Result<HttpResponse, ApiError> {
    let id = UploadId::parse(&id).map_err(ApiError::no_such)?;
    Ok(HttpResponse::Ok().json(uploads::complete(&state.into_inner(), caller.tenant, &id, &body).await?))
}

/// Cancel a pending upload; its parts are deleted.
#[utoipa::path(post, path = "/v1/uploads/{id}/cancel", tag = "uploads",
    params(("id" = String, Path, description = "Upload id")),
    responses((status = 200, body = UploadObject), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn cancel(caller: Principal, state: web::Data<AppState>, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let id = UploadId::parse(&id).map_err(ApiError::no_such)?;
    Ok(HttpResponse::Ok().json(uploads::cancel(&state, caller.tenant, &id).await?))
}
