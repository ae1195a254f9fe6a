use actix_web::{web, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::Principal;
use crate::error::{ApiError, ErrorBody};
use crate::models::{self, ModelObject, RegisterModelRequest};
use crate::AppState;

#[derive(Debug, Serialize, ToSchema)]
pub struct ModelList {
    /// Always `list`.
    object: &'static str,
    data: Vec<ModelObject>,
}

/// List the base models jobs may fine-tune.
#[utoipa::path(get, path = "/v1/models", tag = "models",
    responses((status = 200, body = ModelList), (status = 401, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(_caller: Principal, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(ModelList { object: "list", data: models::list(&state).await? }))
}

/// Retrieve a model (ids contain a slash: `/v1/models/moetune/tiny-mixtral`).
#[utoipa::path(get, path = "/v1/models/{id}", tag = "models",
    params(("id" = String, Path, description = "Model id, `owner/name`")),
    responses((status = 200, body = ModelObject), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn retrieve(_caller: Principal, state: web::Data<AppState>, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(models::get(&state, &id).await?))
}

/// Register a base model stored in S3 (admin).
#[utoipa::path(post, path = "/v1/admin/models", operation_id = "admin_register_model", tag = "admin",
    request_body = RegisterModelRequest,
    responses((status = 200, body = ModelObject), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn register(_admin: Principal, state: web::Data<AppState>, body: web::Json<RegisterModelRequest>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(models::register(&state, &body).await?))
}
