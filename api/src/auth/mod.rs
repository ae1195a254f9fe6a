//! Who is calling and what they may do. A bearer credential is either a JWT (HS256 or RS256, see
//! `jwt`) or an API key (`mtk-…`, see `api_keys`); both resolve to a [`Principal`]: a tenant and its
//! scopes. Every `/v1` request is authenticated first ([`middleware`]); the scope is then checked by
//! [`require`], which wraps each route of the route table with the scope declared beside it. The
//! `Principal` a handler takes exists only after that check, so a route without a declared scope is
//! denied rather than open.

pub mod api_keys;
pub mod jwt;

use moetune_types::TenantId;
use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, FromRequest, HttpMessage, HttpRequest};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

pub use jwt::TokenKeys;

use crate::error::ApiError;
use crate::AppState;

/// What a credential allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum Scope {
    #[serde(rename = "files:read")]
    FilesRead,
    #[serde(rename = "files:write")]
    FilesWrite,
    #[serde(rename = "jobs:read")]
    JobsRead,
    #[serde(rename = "jobs:write")]
    JobsWrite,
    #[serde(rename = "models:read")]
    ModelsRead,
    #[serde(rename = "webhooks:read")]
    WebhooksRead,
    /// Register, change and delete webhook endpoints; redeliver events.
    #[serde(rename = "webhooks:write")]
    WebhooksWrite,
    /// Manage tenants, API keys, models and runners.
    #[serde(rename = "admin")]
    Admin,
}

impl Scope {
    /// What a tenant credential gets when no scopes are named.
    pub const TENANT: [Scope; 7] =
        [Scope::FilesRead, Scope::FilesWrite, Scope::JobsRead, Scope::JobsWrite, Scope::ModelsRead, Scope::WebhooksRead, Scope::WebhooksWrite];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::FilesRead => "files:read",
            Scope::FilesWrite => "files:write",
            Scope::JobsRead => "jobs:read",
            Scope::JobsWrite => "jobs:write",
            Scope::ModelsRead => "models:read",
            Scope::WebhooksRead => "webhooks:read",
            Scope::WebhooksWrite => "webhooks:write",
            Scope::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        Self::TENANT.into_iter().chain([Scope::Admin]).find(|scope| scope.as_str() == s)
    }

    pub fn parse_list(list: &str) -> Result<Vec<Scope>, String> {
        let known = || Self::TENANT.into_iter().chain([Scope::Admin]).map(Scope::as_str).collect::<Vec<_>>().join(", ");
        list.split_whitespace().map(|s| Scope::parse(s).ok_or_else(|| format!("unknown scope '{s}'; scopes are {}", known()))).collect()
    }
}

/// The authenticated caller. Taking it as a handler argument makes the route require a credential
/// carrying the route's scope.
#[derive(Debug, Clone)]
pub struct Principal {
    pub tenant: TenantId,
    pub scopes: Vec<Scope>,
    /// The API key used, if any (for logs).
    pub key_id: Option<String>,
}

/// The caller a credential names, before any scope is checked. Set by [`middleware`] for every `/v1`
/// request; handlers never see it.
#[derive(Debug, Clone)]
struct Authenticated(Principal);

/// One `/v1` route as the route table (`routes::V1_ROUTES`) declares it. The one the router matched
/// is kept in the request's extensions: metrics label it and idempotency keys it by its pattern, never
/// by the raw path, whose spellings are the caller's to choose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    pub method: &'static str,
    /// The full pattern, as the router matches it: `/v1/files/{id}`.
    pub pattern: &'static str,
    /// What a credential must carry to use the route.
    pub scope: Scope,
}

impl FromRequest for Principal {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    /// Only [`require`] puts a `Principal` in the request, after checking the scope its route
    /// declares; a handler on a route that declares none is denied.
    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let authorized = req.extensions().get::<Principal>().cloned();
        std::future::ready(authorized.ok_or_else(|| ApiError::forbidden("This route declares no scope, so no credential may use it.")))
    }
}

/// Middleware for `/v1`: every request is authenticated before routing, so an unauthenticated caller
/// gets 401 for any path and learns nothing about which routes exist or what their bodies look like.
pub async fn middleware(req: ServiceRequest, next: Next<impl MessageBody + 'static>) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    match authenticate(req.request()).await {
        Ok(principal) => {
            tracing::Span::current().record("tenant_id", tracing::field::display(principal.tenant));
            req.extensions_mut().insert(Authenticated(principal));
            next.call(req).await.map(ServiceResponse::map_into_boxed_body)
        }
        Err(e) => Ok(req.error_response(e)),
    }
}

/// Route middleware: the scope the matched route declares (see `routes::V1_ROUTES`). It runs after
/// the router chose the route, so the decision follows what was matched, however the path was spelled.
pub async fn require(route: Endpoint, req: ServiceRequest, next: Next<BoxBody>) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    req.extensions_mut().insert(route);
    let authenticated = req.extensions().get::<Authenticated>().map(|a| a.0.clone());
    let Some(principal) = authenticated else {
        return Ok(req.error_response(ApiError::unauthorized("Missing bearer token: send `Authorization: Bearer <token or API key>`.")));
    };
    if !principal.scopes.contains(&route.scope) {
        let message = format!("This credential lacks the '{}' scope that {} {} needs.", route.scope.as_str(), route.method, route.pattern);
        return Ok(req.error_response(ApiError::forbidden(message)));
    }
    let state = req.app_data::<web::Data<AppState>>().expect("AppState registered").clone();
    if let Err(e) = crate::rate_limit::take(&state, principal.tenant, crate::rate_limit::Bucket::Requests).await {
        return Ok(req.error_response(e));
    }
    req.extensions_mut().insert(principal);
    next.call(req).await
}

/// Resolves the bearer credential of a request (no scope check).
pub async fn authenticate(req: &HttpRequest) -> Result<Principal, ApiError> {
    let header = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .ok_or_else(|| ApiError::unauthorized("Missing bearer token: send `Authorization: Bearer <token or API key>` (get a token with deploy/token TENANT)."))?;
    let credential = header
        .to_str()
        .ok()
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or_else(|| ApiError::unauthorized("Authorization header must be `Bearer <token or API key>`."))?;
    let state = req.app_data::<web::Data<AppState>>().expect("AppState registered");
    if credential.starts_with(api_keys::KEY_PREFIX) {
        // A key row references its tenant, so the tenant exists.
        api_keys::authenticate(&state.db, credential).await
    } else {
        let keys = req.app_data::<web::Data<TokenKeys>>().expect("TokenKeys registered");
        let principal = keys.verify(credential)?;
        state.tenants.check(&state.db, principal.tenant).await?;
        Ok(principal)
    }
}

/// Tenant ids seen to exist. A token is signed for a tenant id, which may never have existed (an
/// identity provider's subject) or whose row is gone: such a token is refused with 401 instead of
/// acting for a tenant nobody created. Tenants are never deleted, so a known id stays known.
#[derive(Default)]
pub struct KnownTenants(std::sync::RwLock<std::collections::HashSet<TenantId>>);

impl KnownTenants {
    pub async fn check(&self, db: &sqlx::PgPool, tenant: TenantId) -> Result<(), ApiError> {
        if self.0.read().expect("tenant cache lock").contains(&tenant) {
            return Ok(());
        }
        let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM tenants WHERE id = $1)").bind(tenant).fetch_one(db).await?;
        if !exists {
            return Err(ApiError::unauthorized("Invalid bearer token: it names a tenant that does not exist; ask an admin to create the tenant."));
        }
        self.0.write().expect("tenant cache lock").insert(tenant);
        Ok(())
    }
}

/// Creates the tenant if needed and returns its id.
pub async fn ensure_tenant(pool: &sqlx::PgPool, name: &str) -> anyhow::Result<TenantId> {
    let id: TenantId = sqlx::query_scalar(
        "INSERT INTO tenants (id, name) VALUES ($1, $2)
         ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name RETURNING id",
    )
    .bind(Uuid::new_v4())
    .bind(name)
    .fetch_one(pool)
    .await?;
    Ok(id)
}
