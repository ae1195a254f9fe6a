//! Who is calling and what they may do. A bearer credential is either a JWT (HS256 or RS256, see
//! `jwt`) or an API key (`mtk-…`, see `api_keys`); both resolve to a [`Principal`]: a tenant and its
//! scopes. The scope a route needs follows from its path and method (one table, `required_scope`), so
//! no handler can forget to check.

pub mod api_keys;
pub mod jwt;

use actix_web::http::Method;
use actix_web::{web, FromRequest, HttpMessage, HttpRequest};
use futures_util::future::LocalBoxFuture;
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
    pub tenant: Uuid,
    pub scopes: Vec<Scope>,
    /// The API key used, if any (for logs).
    pub key_id: Option<String>,
}

/// The scope a request needs, from its path and method.
pub fn required_scope(method: &Method, path: &str) -> Scope {
    let reads = method == Method::GET || method == Method::HEAD;
    let (read, write) = if path.starts_with("/v1/admin") || path.starts_with("/v1/runners") {
        (Scope::Admin, Scope::Admin)
    } else if path.starts_with("/v1/fine_tuning") {
        (Scope::JobsRead, Scope::JobsWrite)
    } else if path.starts_with("/v1/webhook") {
        (Scope::WebhooksRead, Scope::WebhooksWrite)
    } else if path.starts_with("/v1/models") {
        (Scope::ModelsRead, Scope::Admin)
    } else {
        (Scope::FilesRead, Scope::FilesWrite)
    };
    if reads { read } else { write }
}

impl FromRequest for Principal {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let known = req.extensions().get::<Principal>().cloned();
            match known {
                Some(principal) => Ok(principal),
                None => authorize(&req).await,
            }
        })
    }
}

/// Authenticates and checks the route's scope; the principal is kept in the request's extensions.
pub async fn authorize(req: &HttpRequest) -> Result<Principal, ApiError> {
    let known = req.extensions().get::<Principal>().cloned();
    let principal = match known {
        Some(principal) => principal,
        None => authenticate(req).await?,
    };
    let needed = required_scope(req.method(), req.path());
    if !principal.scopes.contains(&needed) {
        return Err(ApiError::forbidden(format!("This credential lacks the '{}' scope that {} {} needs.", needed.as_str(), req.method(), req.path())));
    }
    tracing::Span::current().record("tenant_id", tracing::field::display(principal.tenant));
    req.extensions_mut().insert(principal.clone());
    Ok(principal)
}

/// Middleware for `/v1`: authentication and scope come before any body or query is looked at, so an
/// unauthorized caller learns nothing from validation errors.
pub async fn middleware(req: actix_web::dev::ServiceRequest, next: actix_web::middleware::Next<impl actix_web::body::MessageBody + 'static>) -> Result<actix_web::dev::ServiceResponse<actix_web::body::BoxBody>, actix_web::Error> {
    match authorize(req.request()).await {
        Ok(_) => next.call(req).await.map(actix_web::dev::ServiceResponse::map_into_boxed_body),
        Err(e) => Ok(req.error_response(e)),
    }
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
    if credential.starts_with(api_keys::KEY_PREFIX) {
        let state = req.app_data::<web::Data<AppState>>().expect("AppState registered");
        api_keys::authenticate(&state.db, credential).await
    } else {
        let keys = req.app_data::<web::Data<TokenKeys>>().expect("TokenKeys registered");
        keys.verify(credential)
    }
}

/// Creates the tenant if needed and returns its id.
pub async fn ensure_tenant(pool: &sqlx::PgPool, name: &str) -> anyhow::Result<Uuid> {
    let id: Uuid = sqlx::query_scalar(
        "INSERT INTO tenants (id, name) VALUES ($1, $2)
         ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name RETURNING id",
    )
    .bind(Uuid::new_v4())
    .bind(name)
    .fetch_one(pool)
    .await?;
    Ok(id)
}
