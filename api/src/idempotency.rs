//! `Idempotency-Key` on POST requests: the first request with a key runs and its response is stored;
//! a retry with the same key and the same request gets that stored response (header
//! `idempotent-replayed: true`); the same key with a different request, or while the first is still
//! running, gets 409. Keys are per tenant and kept 24 hours (the upload sweeper deletes older ones).
//! Server errors (5xx) and limits (429) are not stored, so a retry after one runs again; a claim whose
//! request never finished (the process died) is given up after 10 minutes.
//!
//! Stored responses can hold secrets (a new API key, a webhook signing secret), so nothing readable is
//! stored: the row is addressed by an HMAC of the tenant and key under the server's JWT secret, the
//! request's fingerprint is keyed the same way, and the response is sealed (ChaCha20-Poly1305) under a
//! key derived the same way. Reading the database
//! alone reveals neither the Idempotency-Key values nor the responses.
//!
//! JSON routes go through [`middleware`], which buffers the (small) body to fingerprint it. Streaming
//! uploads cannot be buffered; their handlers fingerprint the content as it streams and call
//! [`claim`]/[`complete`] themselves.

use moetune_types::TenantId;
use moetune_types::ErrorCode;
use actix_web::body::{to_bytes, BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{header, Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::AppState;

pub const HEADER: &str = "idempotency-key";

/// What the store says about a key.
pub enum Claim {
    /// First use: run the request, then [`complete`] (or [`release`] on failure).
    Fresh,
    /// Done before with the same request: send this again.
    Replay(HttpResponse),
}

/// The key of a request, if it sent one; 400 when it is malformed.
pub fn key_of(req: &HttpRequest) -> Result<Option<String>, ApiError> {
    let Some(value) = req.headers().get(HEADER) else { return Ok(None) };
    let key = value.to_str().ok().map(str::trim).filter(|k| !k.is_empty() && k.len() <= 255 && k.bytes().all(|b| b.is_ascii_graphic()));
    key.map(|k| Some(k.to_string()))
        .ok_or_else(|| ApiError::invalid(ErrorCode::InvalidIdempotencyKey, "Idempotency-Key", "`Idempotency-Key` must be 1 to 255 visible ASCII characters, e.g. a UUID."))
}

/// A fingerprint of what makes two requests "the same".
pub fn fingerprint(parts: &[&[u8]]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    hex::encode(hasher.finalize())
}

/// Where one tenant's key is stored, and the key its response is sealed with.
struct Record {
    tenant: TenantId,
    /// Hex HMAC of tenant and key: the row's `key` column.
    address: String,
    seal: chacha20poly1305::Key,
}

impl Record {
    fn new(state: &AppState, tenant: TenantId, key: &str) -> Self {
        let derive = |purpose: &[u8]| {
            let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(state.config.jwt_secret.as_bytes()).expect("HMAC takes any key length");
            mac.update(purpose);
            mac.update(tenant.0.as_bytes());
            mac.update(key.as_bytes());
            mac.finalize().into_bytes()
        };
        Self { tenant, address: hex::encode(derive(b"idempotency-address\0")), seal: derive(b"idempotency-seal\0") }
    }

    /// What is stored of a request's fingerprint: keyed, so a guessed body cannot be confirmed.
    fn keyed(&self, fingerprint: &str) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.seal).expect("HMAC takes any key length");
        mac.update(fingerprint.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    fn seal(&self, body: &[u8]) -> Vec<u8> {
        let nonce = ChaCha20Poly1305::generate_nonce(&mut OsRng);
        let mut sealed = nonce.to_vec();
        sealed.extend(ChaCha20Poly1305::new(&self.seal).encrypt(&nonce, body).expect("sealing a response cannot fail"));
        sealed
    }

    fn open(&self, sealed: &[u8]) -> Result<Vec<u8>, ApiError> {
        let (nonce, body) = sealed.split_at_checked(12).ok_or_else(|| ApiError::internal("stored idempotent response too short"))?;
        let nonce: [u8; 12] = nonce.try_into().expect("split at 12");
        ChaCha20Poly1305::new(&self.seal).decrypt(&Nonce::from(nonce), body).map_err(|_| ApiError::internal("stored idempotent response does not open"))
    }
}

/// Records the first use of `key` or finds the earlier one.
pub async fn claim(state: &AppState, tenant: TenantId, key: &str, fingerprint: &str) -> Result<Claim, ApiError> {
    let record = Record::new(state, tenant, key);
    let fingerprint = &record.keyed(fingerprint);
    let db = &state.db;
    // Expired keys go, and so do claims whose request never finished (the API process died mid-request).
    sqlx::query(
        "DELETE FROM idempotency_keys WHERE tenant_id = $1 AND key = $2
           AND (created_at < now() - interval '24 hours' OR (status_code IS NULL AND created_at < now() - interval '10 minutes'))",
    )
        .bind(tenant)
        .bind(&record.address)
        .execute(db)
        .await?;
    let inserted = sqlx::query("INSERT INTO idempotency_keys (tenant_id, key, fingerprint) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
        .bind(tenant)
        .bind(&record.address)
        .bind(fingerprint)
        .execute(db)
        .await?;
    if inserted.rows_affected() == 1 {
        return Ok(Claim::Fresh);
    }
    let (stored, status, content_type, body): (String, Option<i32>, Option<String>, Option<Vec<u8>>) =
        sqlx::query_as("SELECT fingerprint, status_code, content_type, body FROM idempotency_keys WHERE tenant_id = $1 AND key = $2")
            .bind(tenant)
            .bind(&record.address)
            .fetch_one(db)
            .await?;
    if &stored != fingerprint {
        return Err(ApiError::new(
            ErrorCode::IdempotencyKeyReused,
            format!("Idempotency-Key '{key}' was already used with a different request; use a new key for a new request."),
        ));
    }
    let Some(status) = status else {
        return Err(ApiError::new(ErrorCode::IdempotencyKeyInUse, format!("A request with Idempotency-Key '{key}' is still being processed; retry shortly.")));
    };
    let status = StatusCode::from_u16(status as u16).map_err(ApiError::internal)?;
    let body = record.open(&body.unwrap_or_default())?;
    let mut response = HttpResponse::build(status);
    response.insert_header(("idempotent-replayed", "true"));
    if let Some(content_type) = content_type {
        response.content_type(content_type);
    }
    Ok(Claim::Replay(response.body(body)))
}

/// Stores the response of a fresh request for replays, sealed.
async fn complete(state: &AppState, tenant: TenantId, key: &str, status: StatusCode, content_type: Option<&str>, body: &[u8]) -> Result<(), ApiError> {
    let record = Record::new(state, tenant, key);
    sqlx::query("UPDATE idempotency_keys SET status_code = $3, content_type = $4, body = $5 WHERE tenant_id = $1 AND key = $2")
        .bind(record.tenant)
        .bind(&record.address)
        .bind(i32::from(status.as_u16()))
        .bind(content_type)
        .bind(record.seal(body))
        .execute(&state.db)
        .await?;
    Ok(())
}

/// Deletes keys older than 24 hours (the sweeper calls it; a key is also refreshed when reused late).
pub async fn expire(db: &sqlx::PgPool) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query("DELETE FROM idempotency_keys WHERE created_at < now() - interval '24 hours'").execute(db).await?.rows_affected())
}

/// Forgets a claim whose request failed on our side, so a retry runs again.
pub async fn release(state: &AppState, tenant: TenantId, key: &str) {
    let record = Record::new(state, tenant, key);
    let deleted = sqlx::query("DELETE FROM idempotency_keys WHERE tenant_id = $1 AND key = $2 AND status_code IS NULL")
        .bind(tenant)
        .bind(&record.address)
        .execute(&state.db)
        .await;
    if let Err(e) = deleted {
        tracing::error!(key, error = %e, "could not release an idempotency key");
    }
}

/// Stores `response` under the key (or releases the key on a 5xx) and returns it unchanged.
pub async fn finish(state: &AppState, tenant: TenantId, key: &str, response: HttpResponse) -> Result<HttpResponse, ApiError> {
    let status = response.status();
    // Server errors and limits (429) say nothing final about the request: a retry runs it again.
    if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
        release(state, tenant, key).await;
        return Ok(response);
    }
    let content_type = response.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(String::from);
    let body = to_bytes(response.into_body()).await.map_err(|_| ApiError::internal("unreadable response body"))?;
    complete(state, tenant, key, status, content_type.as_deref(), &body).await?;
    let mut rebuilt = HttpResponse::build(status);
    if let Some(content_type) = content_type {
        rebuilt.content_type(content_type);
    }
    Ok(rebuilt.body(body))
}

/// For a streamed request whose data is already stored: on first use of the key, `record` makes the
/// response (stored for replays, errors included); on a replay or a refusal, `discard` removes what
/// this request stored, since the first request's copy is the one kept.
pub async fn settle_streamed(
    state: &AppState,
    tenant: TenantId,
    key: &str,
    fingerprint: &str,
    record: impl std::future::Future<Output = Result<HttpResponse, ApiError>>,
    discard: impl std::future::Future<Output = ()>,
) -> Result<HttpResponse, ApiError> {
    match claim(state, tenant, key, fingerprint).await {
        Ok(Claim::Fresh) => {
            let response = record.await.unwrap_or_else(|e| actix_web::ResponseError::error_response(&e));
            finish(state, tenant, key, response).await
        }
        Ok(Claim::Replay(response)) => {
            discard.await;
            Ok(response)
        }
        Err(e) => {
            discard.await;
            Err(e)
        }
    }
}

/// Routes whose bodies stream (uploads): their handlers apply the key themselves.
fn streams_body(pattern: &str) -> bool {
    pattern == "/v1/files" || pattern == "/v1/uploads/{id}/parts"
}

/// The middleware for every other POST; it wraps each route inside the scope check, which has put the
/// caller and the matched route in the request.
pub async fn middleware(mut req: ServiceRequest, next: Next<impl MessageBody + 'static>) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let route = req.extensions().get::<crate::auth::Endpoint>().copied();
    let tenant = req.extensions().get::<crate::auth::Principal>().map(|p| p.tenant);
    let (Some(route), Some(tenant)) = (route, tenant) else {
        return next.call(req).await.map(ServiceResponse::map_into_boxed_body);
    };
    if req.method() != Method::POST || streams_body(route.pattern) || !req.headers().contains_key(HEADER) {
        return next.call(req).await.map(ServiceResponse::map_into_boxed_body);
    }
    let key = match key_of(req.request()) {
        Ok(key) => key.expect("header present"),
        Err(e) => return Ok(req.error_response(e)),
    };
    let body = req.extract::<web::Bytes>().await?;
    let state = req.app_data::<web::Data<AppState>>().expect("AppState registered").clone();
    let print = fingerprint(&[req.method().as_str().as_bytes(), req.match_info().as_str().as_bytes(), req.query_string().as_bytes(), &body]);
    match claim(&state, tenant, &key, &print).await {
        Err(e) => Ok(req.error_response(e)),
        Ok(Claim::Replay(response)) => Ok(req.into_response(response)),
        Ok(Claim::Fresh) => {
            req.set_payload(actix_web::dev::Payload::from(body));
            let response = match next.call(req).await {
                Ok(response) => response.map_into_boxed_body(),
                Err(e) => {
                    release(&state, tenant, &key).await;
                    return Err(e);
                }
            };
            let (request, response) = response.into_parts();
            match finish(&state, tenant, &key, response).await {
                Ok(response) => Ok(ServiceResponse::new(request, response)),
                Err(e) => Ok(ServiceResponse::new(request, actix_web::ResponseError::error_response(&e))),
            }
        }
    }
}
