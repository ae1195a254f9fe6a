//! Tenants' webhook endpoints: registration (URL checked against the network policy), secret
//! rotation with a grace period, the event log, delivery attempts, and manual redelivery. Delivery
//! itself is the scheduler's (`moetune_scheduler::webhooks::dispatch`).

use moetune_types::TenantId;
use moetune_types::ErrorCode;
use moetune_domain::webhooks::network::NetworkPolicy;
use moetune_domain::webhooks::signing::Secret;
use moetune_domain::webhooks::EventType;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::ApiError;
use crate::unix_time::UnixTime;
use crate::pagination;
use crate::AppState;

/// How long a rotated-out secret keeps signing, unless the request says otherwise.
const DEFAULT_GRACE_SECONDS: i64 = 24 * 3600;
const MAX_GRACE_SECONDS: i64 = 7 * 24 * 3600;
const MAX_ENDPOINTS_PER_TENANT: i64 = 50;

/// A registered endpoint.
#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct WebhookEndpoint {
    /// `we_…`
    pub id: String,
    /// Always `webhook_endpoint`.
    pub object: String,
    pub url: String,
    pub description: String,
    /// The event types it receives; empty: all of them.
    pub event_types: Vec<String>,
    /// False after the endpoint answered `410 Gone` (see `disabled_reason`) or was disabled by the tenant.
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    #[sqlx(try_from = "chrono::DateTime<chrono::Utc>")]
    pub created_at: UnixTime,
    #[sqlx(try_from = "chrono::DateTime<chrono::Utc>")]
    pub updated_at: UnixTime,
    /// Until when the previous secret still signs (after a rotation), if it does.
    #[sqlx(try_from = "OptionalTime")]
    pub previous_secret_expires_at: Option<UnixTime>,
    /// The signing secret (`whsec_…`): only in the answers to creation and rotation.
    #[sqlx(skip)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

/// `Option<timestamptz>` as sqlx reads it, for `try_from`.
struct OptionalTime(Option<chrono::DateTime<chrono::Utc>>);

impl sqlx::Type<sqlx::Postgres> for OptionalTime {
    fn type_info() -> sqlx::postgres::PgTypeInfo {
        <chrono::DateTime<chrono::Utc> as sqlx::Type<sqlx::Postgres>>::type_info()
    }
}

impl<'r> sqlx::Decode<'r, sqlx::Postgres> for OptionalTime {
    fn decode(value: sqlx::postgres::PgValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
        Ok(Self(<Option<chrono::DateTime<chrono::Utc>> as sqlx::Decode<sqlx::Postgres>>::decode(value)?))
    }
}

impl From<OptionalTime> for Option<UnixTime> {
    fn from(t: OptionalTime) -> Self {
        t.0.map(UnixTime::from)
    }
}

const ENDPOINT_COLUMNS: &str = "id, 'webhook_endpoint' AS object, url, description, event_types, NOT disabled AS enabled, disabled_reason, created_at, updated_at, \
     CASE WHEN previous_secret_expires_at > now() THEN previous_secret_expires_at END AS previous_secret_expires_at";

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEndpointRequest {
    /// Where events are POSTed: http(s) on a public address.
    pub url: String,
    /// Event types to receive (default: all): fine_tuning.job.running, fine_tuning.job.succeeded,
    /// fine_tuning.job.failed, fine_tuning.job.cancelled, checkpoint.created, monitor.alert.
    pub event_types: Option<Vec<String>>,
    pub description: Option<String>,
    /// `whsec_` + base64 of 24–64 bytes; generated when absent.
    pub secret: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateEndpointRequest {
    pub url: Option<String>,
    pub event_types: Option<Vec<String>>,
    pub description: Option<String>,
    /// `true` enables an endpoint again (e.g. after a `410 Gone`); `false` stops deliveries to it.
    pub enabled: Option<bool>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateSecretRequest {
    /// The new secret; generated when absent.
    pub secret: Option<String>,
    /// How long the old secret keeps signing too, 0–604800 s (default 86400).
    pub grace_period_seconds: Option<i64>,
}

pub fn policy(state: &AppState) -> Result<NetworkPolicy, ApiError> {
    NetworkPolicy::parse(&state.config.webhooks.allowed_private_networks).map_err(ApiError::internal)
}

async fn checked_url(state: &AppState, url: &str) -> Result<String, ApiError> {
    match policy(state)?.check_url(url).await {
        Ok(url) => Ok(url.to_string()),
        Err(why) => Err(ApiError::invalid(ErrorCode::InvalidWebhookUrl, "url", format!("Webhook URL refused: {why}."))),
    }
}

fn checked_event_types(types: Option<Vec<String>>) -> Result<Vec<String>, ApiError> {
    let types = types.unwrap_or_default();
    if let Some(unknown) = types.iter().find(|t| EventType::parse(t).is_none()) {
        let known: Vec<&str> = EventType::ALL.iter().map(|t| t.as_str()).collect();
        return Err(ApiError::invalid(ErrorCode::InvalidEventType, "event_types", format!("Unknown event type '{unknown}'; use any of {}.", known.join(", "))));
    }
    Ok(types)
}

fn checked_secret(secret: Option<String>) -> Result<String, ApiError> {
    match secret {
        None => Ok(Secret::generate()),
        Some(text) => match Secret::parse(&text) {
            Ok(_) => Ok(text),
            Err(why) => Err(ApiError::invalid(ErrorCode::InvalidWebhookSecret, "secret", format!("Invalid secret: {why}."))),
        },
    }
}

pub async fn create(state: &AppState, tenant: TenantId, request: CreateEndpointRequest) -> Result<WebhookEndpoint, ApiError> {
    // The checks without network first: the URL's may wait on DNS.
    let event_types = checked_event_types(request.event_types)?;
    let secret = checked_secret(request.secret)?;
    let url = checked_url(state, &request.url).await?;
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM webhook_endpoints WHERE tenant_id = $1").bind(tenant).fetch_one(&state.db).await?;
    if count >= MAX_ENDPOINTS_PER_TENANT {
        return Err(ApiError::quota_exceeded(format!("A tenant may register {MAX_ENDPOINTS_PER_TENANT} webhook endpoints; delete one first.")));
    }
    let id = format!("we_{}", Uuid::new_v4().simple());
    let mut endpoint: WebhookEndpoint = sqlx::query_as(&format!(
        "INSERT INTO webhook_endpoints (id, tenant_id, url, description, event_types, secret) VALUES ($1, $2, $3, $4, $5, $6) RETURNING {ENDPOINT_COLUMNS}"
    ))
    .bind(&id)
    .bind(tenant)
    .bind(url)
    .bind(request.description.unwrap_or_default())
    .bind(event_types)
    .bind(&secret)
    .fetch_one(&state.db)
    .await?;
    tracing::info!(endpoint = %id, "webhook endpoint registered");
    endpoint.secret = Some(secret);
    Ok(endpoint)
}

pub async fn get(state: &AppState, tenant: TenantId, id: &str) -> Result<WebhookEndpoint, ApiError> {
    let endpoint: Option<WebhookEndpoint> = sqlx::query_as(&format!("SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id = $1 AND tenant_id = $2"))
        .bind(id)
        .bind(tenant)
        .fetch_optional(&state.db)
        .await?;
    endpoint.ok_or_else(|| ApiError::not_found("webhook endpoint", id))
}

/// Newest first.
pub async fn list(state: &AppState, tenant: TenantId, after: Option<&str>, limit: i64) -> Result<(Vec<WebhookEndpoint>, bool), ApiError> {
    let cursor = pagination::cursor(&state.db, "webhook_endpoints", tenant, after).await?;
    let mut query = sqlx::QueryBuilder::new(format!("SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE tenant_id = "));
    query.push_bind(tenant);
    pagination::finish_page(&mut query, cursor, true, limit);
    Ok(pagination::page(query.build_query_as::<WebhookEndpoint>().fetch_all(&state.db).await?, limit))
}

pub async fn update(state: &AppState, tenant: TenantId, id: &str, request: UpdateEndpointRequest) -> Result<WebhookEndpoint, ApiError> {
    // An unknown id is a 404 before the URL check (which may wait on DNS).
    get(state, tenant, id).await?;
    let event_types = request.event_types.map(|t| checked_event_types(Some(t))).transpose()?;
    let url = match &request.url {
        Some(url) => Some(checked_url(state, url).await?),
        None => None,
    };
    let updated: Option<WebhookEndpoint> = sqlx::query_as(&format!(
        "UPDATE webhook_endpoints SET url = coalesce($3, url), event_types = coalesce($4, event_types),
                description = coalesce($5, description),
                disabled = coalesce(NOT $6, disabled),
                disabled_reason = CASE WHEN $6 IS NULL THEN disabled_reason WHEN $6 THEN NULL ELSE 'Disabled by the tenant.' END,
                updated_at = now()
         WHERE id = $1 AND tenant_id = $2 RETURNING {ENDPOINT_COLUMNS}"
    ))
    .bind(id)
    .bind(tenant)
    .bind(url)
    .bind(event_types)
    .bind(request.description)
    .bind(request.enabled)
    .fetch_optional(&state.db)
    .await?;
    updated.ok_or_else(|| ApiError::not_found("webhook endpoint", id))
}

/// Deletes the endpoint with its deliveries and attempts.
pub async fn delete(state: &AppState, tenant: TenantId, id: &str) -> Result<(), ApiError> {
    let deleted = sqlx::query("DELETE FROM webhook_endpoints WHERE id = $1 AND tenant_id = $2").bind(id).bind(tenant).execute(&state.db).await?;
    if deleted.rows_affected() == 0 {
        return Err(ApiError::not_found("webhook endpoint", id));
    }
    Ok(())
}

/// A new signing secret; the current one keeps signing too until the grace period ends, so receivers
/// can switch over without dropping a delivery.
pub async fn rotate_secret(state: &AppState, tenant: TenantId, id: &str, request: RotateSecretRequest) -> Result<WebhookEndpoint, ApiError> {
    let grace = request.grace_period_seconds.unwrap_or(DEFAULT_GRACE_SECONDS);
    if !(0..=MAX_GRACE_SECONDS).contains(&grace) {
        return Err(ApiError::invalid(ErrorCode::InvalidGracePeriod, "grace_period_seconds", format!("`grace_period_seconds` must be from 0 to {MAX_GRACE_SECONDS}.")));
    }
    let secret = checked_secret(request.secret)?;
    let rotated: Option<WebhookEndpoint> = sqlx::query_as(&format!(
        "UPDATE webhook_endpoints SET previous_secret = secret, secret = $3,
                previous_secret_expires_at = now() + make_interval(secs => $4), updated_at = now()
         WHERE id = $1 AND tenant_id = $2 RETURNING {ENDPOINT_COLUMNS}"
    ))
    .bind(id)
    .bind(tenant)
    .bind(&secret)
    .bind(grace as f64)
    .fetch_optional(&state.db)
    .await?;
    let mut endpoint = rotated.ok_or_else(|| ApiError::not_found("webhook endpoint", id))?;
    endpoint.secret = Some(secret);
    Ok(endpoint)
}

/// An event, as its webhook body has it (OpenAI's event shape).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WebhookEvent {
    /// `evt_…`; also the `webhook-id` header of its deliveries.
    pub id: String,
    /// Always `event`.
    pub object: String,
    pub created_at: i64,
    /// fine_tuning.job.running | succeeded | failed | cancelled, checkpoint.created or monitor.alert.
    #[serde(rename = "type")]
    pub kind: String,
    /// `{"id": <job id>}`, plus the checkpoint's or alert's figures for those types.
    #[schema(value_type = Object)]
    pub data: Value,
}

/// The tenant's events, newest first.
pub async fn events(state: &AppState, tenant: TenantId, after: Option<&str>, limit: i64) -> Result<(Vec<WebhookEvent>, bool), ApiError> {
    let cursor = pagination::cursor(&state.db, "webhook_events", tenant, after).await?;
    let mut query = sqlx::QueryBuilder::new("SELECT payload FROM webhook_events WHERE tenant_id = ");
    query.push_bind(tenant);
    pagination::finish_page(&mut query, cursor, true, limit);
    let (rows, has_more) = pagination::page(query.build_query_as::<(Value,)>().fetch_all(&state.db).await?, limit);
    let events = rows.into_iter().map(|(payload,)| serde_json::from_value(payload)).collect::<Result<_, _>>().map_err(ApiError::internal)?;
    Ok((events, has_more))
}

/// One HTTP attempt to deliver an event.
#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct WebhookAttempt {
    /// `atmpt_…`
    pub id: String,
    /// Always `webhook_attempt`.
    pub object: String,
    pub event_id: String,
    pub endpoint_id: String,
    /// `scheduled` or `manual` (a redelivery the tenant asked for).
    pub trigger: String,
    /// `succeeded` (a 2xx answer) or `failed`.
    pub status: String,
    /// Null when no answer came (connection refused, timeout, address refused).
    pub response_status_code: Option<i32>,
    /// The first KiB of the answer.
    pub response_body: Option<String>,
    /// Why no answer came.
    pub error: Option<String>,
    pub duration_ms: i32,
    #[sqlx(try_from = "chrono::DateTime<chrono::Utc>")]
    pub created_at: UnixTime,
}

/// An endpoint's attempts, newest first; only those for `event_id` when given.
pub async fn attempts(state: &AppState, tenant: TenantId, endpoint_id: &str, event_id: Option<&str>, after: Option<&str>, limit: i64) -> Result<(Vec<WebhookAttempt>, bool), ApiError> {
    get(state, tenant, endpoint_id).await?;
    let cursor: Option<(chrono::DateTime<chrono::Utc>, String)> = match after {
        None => None,
        Some(after) => Some(
            sqlx::query_as("SELECT created_at, id FROM webhook_attempts WHERE id = $1 AND endpoint_id = $2")
                .bind(after)
                .bind(endpoint_id)
                .fetch_optional(&state.db)
                .await?
                .ok_or_else(|| ApiError::invalid(ErrorCode::InvalidCursor, "after", format!("`after` must be the id of one of this endpoint's attempts; '{after}' is not.")))?,
        ),
    };
    let mut query = sqlx::QueryBuilder::new(
        "SELECT id, 'webhook_attempt' AS object, event_id, endpoint_id, trigger, status, response_status_code, response_body, error, duration_ms, created_at
         FROM webhook_attempts WHERE endpoint_id = ",
    );
    query.push_bind(endpoint_id);
    if let Some(event_id) = event_id {
        query.push(" AND event_id = ").push_bind(event_id);
    }
    pagination::finish_page(&mut query, cursor, true, limit);
    Ok(pagination::page(query.build_query_as::<WebhookAttempt>().fetch_all(&state.db).await?, limit))
}

/// The state of one event's delivery to one endpoint.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookDelivery {
    /// Always `webhook_delivery`.
    pub object: &'static str,
    pub event_id: String,
    pub endpoint_id: String,
    /// `pending`, `delivered` or `failed`.
    pub status: String,
    /// Attempts made in the current schedule.
    pub attempts: i32,
}

/// Sends an event to an endpoint again (or for the first time, if the endpoint was registered after
/// it): a fresh retry schedule whose first attempt is immediate.
pub async fn redeliver(state: &AppState, tenant: TenantId, endpoint_id: &str, event_id: &str) -> Result<WebhookDelivery, ApiError> {
    let endpoint = get(state, tenant, endpoint_id).await?;
    crate::rate_limit::take(state, tenant, crate::rate_limit::Bucket::Redeliveries).await?;
    if !endpoint.enabled {
        return Err(ApiError::new(ErrorCode::WebhookEndpointDisabled, format!("Endpoint '{endpoint_id}' is disabled; enable it (PATCH with enabled: true) before redelivering.")));
    }
    let owned: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM webhook_events WHERE id = $1 AND tenant_id = $2)")
        .bind(event_id)
        .bind(tenant)
        .fetch_one(&state.db)
        .await?;
    if !owned {
        return Err(ApiError::not_found("webhook event", event_id));
    }
    let (status, attempts): (String, i32) = sqlx::query_as(
        "INSERT INTO webhook_deliveries (event_id, endpoint_id, manual) VALUES ($1, $2, true)
         ON CONFLICT (event_id, endpoint_id) DO UPDATE SET status = 'pending', attempts = 0, manual = true, next_attempt_at = now()
         RETURNING status, attempts",
    )
    .bind(event_id)
    .bind(endpoint_id)
    .fetch_one(&state.db)
    .await?;
    Ok(WebhookDelivery { object: "webhook_delivery", event_id: event_id.into(), endpoint_id: endpoint_id.into(), status, attempts })
}
