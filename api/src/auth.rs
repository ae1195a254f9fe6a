//! Tenant bearer tokens: HS256 JWTs whose subject is the tenant id.

use std::future::{ready, Ready};

use actix_web::{web, FromRequest, HttpRequest};
use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::ApiError;

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: Uuid,
    name: String,
    iat: i64,
    exp: i64,
}

/// Signing and verification keys, built once from the configured secret.
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl TokenKeys {
    pub fn new(secret: &str) -> Self {
        Self {
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            decoding: DecodingKey::from_secret(secret.as_bytes()),
        }
    }

    pub fn mint(&self, tenant_id: Uuid, name: &str, ttl_days: i64) -> anyhow::Result<String> {
        let now = chrono::Utc::now().timestamp();
        let claims = Claims { sub: tenant_id, name: name.to_string(), iat: now, exp: now + ttl_days * 86_400 };
        Ok(encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)?)
    }

    fn verify(&self, token: &str) -> Result<Tenant, ApiError> {
        let data = decode::<Claims>(token, &self.decoding, &Validation::new(Algorithm::HS256))
            .map_err(|e| ApiError::unauthorized(format!("Invalid bearer token: {e}.")))?;
        Ok(Tenant { id: data.claims.sub })
    }
}

/// The authenticated caller. Taking it as a handler argument makes the route require a token.
#[derive(Debug, Clone, Copy)]
pub struct Tenant {
    pub id: Uuid,
}

impl FromRequest for Tenant {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        ready(authenticate(req))
    }
}

fn authenticate(req: &HttpRequest) -> Result<Tenant, ApiError> {
    let keys = req.app_data::<web::Data<TokenKeys>>().expect("TokenKeys registered");
    let header = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .ok_or_else(|| ApiError::unauthorized("Missing bearer token: send `Authorization: Bearer <token>` (get one with deploy/token TENANT)."))?;
    let token = header
        .to_str()
        .ok()
        .and_then(|h| h.strip_prefix("Bearer "))
        .ok_or_else(|| ApiError::unauthorized("Authorization header must be `Bearer <token>`."))?;
    keys.verify(token.trim())
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
