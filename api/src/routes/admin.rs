//! Operator endpoints under `/v1/admin` (scope `admin`): tenants with their quotas, and API keys.

use moetune_types::ErrorCode;
use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::api_keys::{self, ApiKeyObject, CreatedApiKey};
use crate::auth::{Principal, Scope};
use crate::error::{ApiError, ErrorBody};
use crate::quotas::{self, TenantObject, TenantRequest};
use crate::AppState;

/// Create a tenant or change its quotas.
#[utoipa::path(post, path = "/v1/admin/tenants", tag = "admin",
    request_body = TenantRequest,
    responses((status = 200, body = TenantObject), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn upsert_tenant(_admin: Principal, state: web::Data<AppState>, body: web::Json<TenantRequest>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(quotas::upsert_tenant(&state.db, &body, &state.config.quotas).await?))
}

/// A tenant's quotas and current use.
#[utoipa::path(get, path = "/v1/admin/tenants/{name}", tag = "admin",
    params(("name" = String, Path, description = "Tenant name")),
    responses((status = 200, body = TenantObject), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get_tenant(_admin: Principal, state: web::Data<AppState>, name: web::Path<String>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(quotas::get_tenant(&state.db, &name, &state.config.quotas).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKeyRequest {
    /// Name of an existing tenant the key acts for.
    pub tenant: String,
    /// A label to recognise the key by, e.g. `ci-pipeline`.
    pub name: String,
    /// Defaults to every tenant scope: files:read, files:write, jobs:read, jobs:write, models:read, webhooks:read, webhooks:write.
    pub scopes: Option<Vec<String>>,
}

/// Create an API key for a tenant; the response carries the key once.
#[utoipa::path(post, path = "/v1/admin/api_keys", tag = "admin",
    request_body = CreateApiKeyRequest,
    responses((status = 200, body = CreatedApiKey), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create_api_key(_admin: Principal, state: web::Data<AppState>, body: web::Json<CreateApiKeyRequest>) -> Result<HttpResponse, ApiError> {
    let name = body.name.trim();
    if name.is_empty() || name.len() > 128 {
        return Err(ApiError::invalid(ErrorCode::InvalidName, "name", "`name` must be 1 to 128 characters."));
    }
    let scopes = match &body.scopes {
        None => Scope::TENANT.to_vec(),
        Some(list) if list.is_empty() => return Err(ApiError::invalid(ErrorCode::InvalidScopes, "scopes", "`scopes` must name at least one scope.")),
        Some(list) => Scope::parse_list(&list.join(" ")).map_err(|e| ApiError::invalid(ErrorCode::InvalidScopes, "scopes", format!("Invalid `scopes`: {e}.")))?,
    };
    let tenant = quotas::tenant_id(&state.db, &body.tenant).await.map_err(|e| e.with_param("tenant"))?;
    Ok(HttpResponse::Ok().json(api_keys::create(&state.db, tenant, name, &scopes).await?))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct ApiKeysQuery {
    /// Only this tenant's keys.
    tenant: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKeyList {
    /// Always `list`.
    object: &'static str,
    data: Vec<ApiKeyObject>,
    has_more: bool,
}

/// List API keys, revoked ones included, newest first.
#[utoipa::path(get, path = "/v1/admin/api_keys", tag = "admin",
    params(ApiKeysQuery),
    responses((status = 200, body = ApiKeyList), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_api_keys(_admin: Principal, state: web::Data<AppState>, query: web::Query<ApiKeysQuery>) -> Result<HttpResponse, ApiError> {
    let tenant = match &query.tenant {
        Some(name) => Some(quotas::tenant_id(&state.db, name).await?),
        None => None,
    };
    let data = api_keys::list(&state.db, tenant).await?;
    Ok(HttpResponse::Ok().json(ApiKeyList { object: "list", data, has_more: false }))
}

/// Revoke an API key: it is refused from the next request on.
#[utoipa::path(delete, path = "/v1/admin/api_keys/{id}", tag = "admin",
    params(("id" = String, Path, description = "API key id, `key-…`")),
    responses((status = 200, body = ApiKeyObject), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn revoke_api_key(_admin: Principal, state: web::Data<AppState>, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(api_keys::revoke(&state.db, &id).await?))
}
