//! Webhook endpoints, their events and delivery attempts (scopes `webhooks:read`, `webhooks:write`).

use moetune_types::ErrorCode;
use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::Principal;
use crate::error::{ApiError, ErrorBody};
use crate::webhooks::{self, CreateEndpointRequest, RotateSecretRequest, UpdateEndpointRequest, WebhookAttempt, WebhookDelivery, WebhookEndpoint, WebhookEvent};
use crate::AppState;

#[derive(Debug, Deserialize, IntoParams)]
pub struct PageQuery {
    /// Id of the last item of the previous page.
    after: Option<String>,
    /// Items per page, 1–100 (default 20).
    limit: Option<i64>,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct AttemptsQuery {
    /// Id of the last attempt of the previous page.
    after: Option<String>,
    /// Attempts per page, 1–100 (default 20).
    limit: Option<i64>,
    /// Only the attempts for this event.
    event_id: Option<String>,
}

fn page_limit(limit: Option<i64>) -> Result<i64, ApiError> {
    let limit = limit.unwrap_or(20);
    if (1..=100).contains(&limit) { Ok(limit) } else { Err(ApiError::invalid(ErrorCode::InvalidLimit, "limit", "`limit` must be from 1 to 100.")) }
}

/// A page of endpoints, attempts or events: `{"object": "list", "data": [...], "has_more": bool}`.
macro_rules! page_type {
    ($name:ident, $item:ty) => {
        #[derive(Debug, Serialize, ToSchema)]
        pub struct $name {
            /// Always `list`.
            object: &'static str,
            data: Vec<$item>,
            has_more: bool,
        }

        impl From<(Vec<$item>, bool)> for $name {
            fn from((data, has_more): (Vec<$item>, bool)) -> Self {
                Self { object: "list", data, has_more }
            }
        }
    };
}

page_type!(WebhookEndpointList, WebhookEndpoint);
page_type!(WebhookAttemptList, WebhookAttempt);
page_type!(WebhookEventList, WebhookEvent);

/// Register a webhook endpoint. The answer carries its signing secret (`whsec_…`); every delivery is
/// signed per Standard Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature`).
#[utoipa::path(post, path = "/v1/webhook_endpoints", tag = "webhooks",
    request_body = CreateEndpointRequest,
    responses((status = 200, body = WebhookEndpoint), (status = 400, body = ErrorBody), (status = 429, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create(caller: Principal, state: web::Data<AppState>, body: web::Json<CreateEndpointRequest>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(webhooks::create(&state, caller.tenant, body.into_inner()).await?))
}

/// List the tenant's webhook endpoints, newest first.
#[utoipa::path(get, path = "/v1/webhook_endpoints", tag = "webhooks",
    params(PageQuery),
    responses((status = 200, body = WebhookEndpointList), (status = 400, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_endpoints(caller: Principal, state: web::Data<AppState>, query: web::Query<PageQuery>) -> Result<HttpResponse, ApiError> {
    let limit = page_limit(query.limit)?;
    Ok(HttpResponse::Ok().json(WebhookEndpointList::from(webhooks::list(&state, caller.tenant, query.after.as_deref(), limit).await?)))
}

/// Retrieve a webhook endpoint (without its secret).
#[utoipa::path(get, path = "/v1/webhook_endpoints/{id}", tag = "webhooks",
    params(("id" = String, Path, description = "Endpoint id")),
    responses((status = 200, body = WebhookEndpoint), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn retrieve(caller: Principal, state: web::Data<AppState>, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(webhooks::get(&state, caller.tenant, &id).await?))
}

/// Change an endpoint's URL, event types or description, or enable or disable it.
#[utoipa::path(patch, path = "/v1/webhook_endpoints/{id}", tag = "webhooks",
    params(("id" = String, Path, description = "Endpoint id")),
    request_body = UpdateEndpointRequest,
    responses((status = 200, body = WebhookEndpoint), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn update(caller: Principal, state: web::Data<AppState>, id: web::Path<String>, body: web::Json<UpdateEndpointRequest>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(webhooks::update(&state, caller.tenant, &id, body.into_inner()).await?))
}

/// Delete an endpoint; deliveries still pending to it are dropped.
#[utoipa::path(delete, path = "/v1/webhook_endpoints/{id}", tag = "webhooks",
    params(("id" = String, Path, description = "Endpoint id")),
    responses((status = 204, description = "Deleted"), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn delete(caller: Principal, state: web::Data<AppState>, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    webhooks::delete(&state, caller.tenant, &id).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Rotate the signing secret. The old secret keeps signing alongside the new one for the grace period
/// (the `webhook-signature` header then holds two signatures), so receivers can switch without a gap.
#[utoipa::path(post, path = "/v1/webhook_endpoints/{id}/rotate_secret", tag = "webhooks",
    params(("id" = String, Path, description = "Endpoint id")),
    request_body(content = RotateSecretRequest, description = "Optional: the new secret and grace period"),
    responses((status = 200, body = WebhookEndpoint), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn rotate_secret(caller: Principal, state: web::Data<AppState>, id: web::Path<String>, body: web::Bytes) -> Result<HttpResponse, ApiError> {
    // The body is optional, but one that is there must parse: a typo must not rotate with defaults.
    let request = if body.iter().all(u8::is_ascii_whitespace) {
        RotateSecretRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::invalid(ErrorCode::InvalidRequestBody, "body", format!("Invalid request body: {e}")))?
    };
    Ok(HttpResponse::Ok().json(webhooks::rotate_secret(&state, caller.tenant, &id, request).await?))
}

/// An endpoint's delivery attempts, newest first: the status code and the first KiB each answer had.
#[utoipa::path(get, path = "/v1/webhook_endpoints/{id}/attempts", tag = "webhooks",
    params(("id" = String, Path, description = "Endpoint id"), AttemptsQuery),
    responses((status = 200, body = WebhookAttemptList), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn attempts(caller: Principal, state: web::Data<AppState>, id: web::Path<String>, query: web::Query<AttemptsQuery>) -> Result<HttpResponse, ApiError> {
    let limit = page_limit(query.limit)?;
    let page = webhooks::attempts(&state, caller.tenant, &id, query.event_id.as_deref(), query.after.as_deref(), limit).await?;
    Ok(HttpResponse::Ok().json(WebhookAttemptList::from(page)))
}

/// Deliver an event to an endpoint again, now, with a fresh retry schedule.
#[utoipa::path(post, path = "/v1/webhook_endpoints/{id}/events/{event_id}/redeliver", tag = "webhooks",
    params(("id" = String, Path, description = "Endpoint id"), ("event_id" = String, Path, description = "Event id (evt_…)")),
    responses((status = 202, body = WebhookDelivery), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn redeliver(caller: Principal, state: web::Data<AppState>, path: web::Path<(String, String)>) -> Result<HttpResponse, ApiError> {
    let (endpoint_id, event_id) = path.into_inner();
    Ok(HttpResponse::Accepted().json(webhooks::redeliver(&state, caller.tenant, &endpoint_id, &event_id).await?))
}

/// The tenant's webhook events, newest first, exactly as delivered.
#[utoipa::path(get, path = "/v1/webhook_events", tag = "webhooks",
    params(PageQuery),
    responses((status = 200, body = WebhookEventList), (status = 400, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn events(caller: Principal, state: web::Data<AppState>, query: web::Query<PageQuery>) -> Result<HttpResponse, ApiError> {
    let limit = page_limit(query.limit)?;
    Ok(HttpResponse::Ok().json(WebhookEventList::from(webhooks::events(&state, caller.tenant, query.after.as_deref(), limit).await?)))
}
