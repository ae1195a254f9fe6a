//! Long-lived API keys: `mtk-<id>-<secret>`. Only a SHA-256 of the secret is stored (the secret has 160
//! random bits, so a slow hash buys nothing); the key is shown once, at creation. Revoked keys stay
//! listed with `revoked_at` and are refused from the next request on.

use moetune_types::TenantId;
use rand::RngCore;
use serde::Serialize;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use super::{Principal, Scope};
use crate::error::ApiError;
use crate::unix_time::UnixTime;

pub const KEY_PREFIX: &str = "mtk-";

/// An API key as the admin endpoints show it (never the secret).
#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct ApiKeyObject {
    /// `key-<12 hex>`.
    pub id: String,
    /// Always `api_key`.
    #[sqlx(skip)]
    pub object: &'static str,
    /// Name of the tenant the key acts for.
    pub tenant: String,
    pub name: String,
    /// The first characters of the key, to recognise it: `mtk-<12 hex>-…`.
    pub redacted_value: String,
    pub scopes: Vec<String>,
    #[sqlx(try_from = "chrono::DateTime<chrono::Utc>")]
    pub created_at: UnixTime,
    #[sqlx(try_from = "OptionalTime")]
    pub last_used_at: Option<UnixTime>,
    #[sqlx(try_from = "OptionalTime")]
    pub revoked_at: Option<UnixTime>,
}

/// sqlx's `try_from` needs a named source type for nullable timestamps.
pub struct OptionalTime(Option<chrono::DateTime<chrono::Utc>>);

impl From<OptionalTime> for Option<UnixTime> {
    fn from(t: OptionalTime) -> Self {
        t.0.map(Into::into)
    }
}

impl<'r> sqlx::Decode<'r, sqlx::Postgres> for OptionalTime {
    fn decode(value: sqlx::postgres::PgValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
        Ok(Self(<Option<chrono::DateTime<chrono::Utc>> as sqlx::Decode<sqlx::Postgres>>::decode(value)?))
    }
}

impl sqlx::Type<sqlx::Postgres> for OptionalTime {
    fn type_info() -> sqlx::postgres::PgTypeInfo {
        <chrono::DateTime<chrono::Utc> as sqlx::Type<sqlx::Postgres>>::type_info()
    }
}

/// The creation response: the key object plus the secret, shown this once.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedApiKey {
    #[serde(flatten)]
    pub key: ApiKeyObject,
    /// The full key. Store it now: it cannot be shown again.
    pub value: String,
}

const COLUMNS: &str =
    "k.id, t.name AS tenant, k.name, 'mtk-' || k.id_hex || '-…' AS redacted_value, k.scopes, k.created_at, k.last_used_at, k.revoked_at";

fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut buf);
    hex::encode(buf)
}

fn select(filter: &str) -> String {
    format!("SELECT {COLUMNS} FROM api_keys k JOIN tenants t ON t.id = k.tenant_id {filter}")
}

pub async fn create(db: &sqlx::PgPool, tenant: TenantId, name: &str, scopes: &[Scope]) -> Result<CreatedApiKey, ApiError> {
    let id_hex = random_hex(6);
    let secret = random_hex(20);
    let id = format!("key-{id_hex}");
    let scopes: Vec<String> = scopes.iter().map(|s| s.as_str().to_string()).collect();
    sqlx::query("INSERT INTO api_keys (id, id_hex, tenant_id, name, secret_sha256, scopes) VALUES ($1, $2, $3, $4, $5, $6)")
        .bind(&id)
        .bind(&id_hex)
        .bind(tenant)
        .bind(name)
        .bind(hash(&secret))
        .bind(&scopes)
        .execute(db)
        .await?;
    let key = get(db, &id).await?;
    Ok(CreatedApiKey { key, value: format!("{KEY_PREFIX}{id_hex}-{secret}") })
}

pub async fn get(db: &sqlx::PgPool, id: &str) -> Result<ApiKeyObject, ApiError> {
    let key: Option<ApiKeyObject> = sqlx::query_as(&select("WHERE k.id = $1")).bind(id).fetch_optional(db).await?;
    key.map(ApiKeyObject::with_object).ok_or_else(|| ApiError::not_found("API key", id))
}

pub async fn list(db: &sqlx::PgPool, tenant: Option<TenantId>) -> Result<Vec<ApiKeyObject>, ApiError> {
    let keys: Vec<ApiKeyObject> = sqlx::query_as(&select("WHERE ($1::uuid IS NULL OR k.tenant_id = $1) ORDER BY k.created_at DESC, k.id DESC"))
        .bind(tenant)
        .fetch_all(db)
        .await?;
    Ok(keys.into_iter().map(ApiKeyObject::with_object).collect())
}

/// Revokes the key (idempotent: revoking twice keeps the first time).
pub async fn revoke(db: &sqlx::PgPool, id: &str) -> Result<ApiKeyObject, ApiError> {
    sqlx::query("UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1").bind(id).execute(db).await?;
    get(db, id).await
}

/// The principal behind a presented `mtk-…` key; 401 if unknown, wrong or revoked.
pub async fn authenticate(db: &sqlx::PgPool, presented: &str) -> Result<Principal, ApiError> {
    let malformed = || ApiError::unauthorized("Invalid API key: expected `mtk-<id>-<secret>` as issued by POST /v1/admin/api_keys.");
    let (id_hex, secret) = presented.strip_prefix(KEY_PREFIX).and_then(|rest| rest.split_once('-')).ok_or_else(malformed)?;
    let row: Option<(String, TenantId, String, Vec<String>, Option<chrono::DateTime<chrono::Utc>>)> =
        sqlx::query_as("SELECT id, tenant_id, secret_sha256, scopes, revoked_at FROM api_keys WHERE id_hex = $1")
            .bind(id_hex)
            .fetch_optional(db)
            .await?;
    let (id, tenant, stored, scopes, revoked_at) = row.ok_or_else(|| ApiError::unauthorized("Invalid API key: no such key."))?;
    if !constant_time_eq(stored.as_bytes(), hash(secret).as_bytes()) {
        return Err(ApiError::unauthorized("Invalid API key: no such key."));
    }
    if revoked_at.is_some() {
        return Err(ApiError::unauthorized(format!("API key {id} has been revoked; ask an admin for a new one.")));
    }
    // At most one write a minute per key: the hot path stays read-only.
    sqlx::query("UPDATE api_keys SET last_used_at = now() WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')")
        .bind(&id)
        .execute(db)
        .await?;
    let scopes = Scope::parse_list(&scopes.join(" ")).map_err(ApiError::internal)?;
    Ok(Principal { tenant, scopes, key_id: Some(id) })
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl ApiKeyObject {
    fn with_object(mut self) -> Self {
        self.object = "api_key";
        self
    }
}
