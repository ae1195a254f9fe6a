//! Bearer JWTs. Each configured key is pinned to one algorithm (HS256 for the shared secret, RS256 for
//! the public key) and a token is checked only against the key of the algorithm its header names, so
//! an RS256 public key can never be used as an HMAC secret; `none` and every other algorithm are refused.

use moetune_types::TenantId;
use jsonwebtoken::{decode, decode_header, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::{Principal, Scope};
use crate::config::ApiConfig;
use crate::error::ApiError;

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    /// The tenant id.
    sub: TenantId,
    iss: String,
    aud: String,
    iat: i64,
    exp: i64,
    /// Not before; checked when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nbf: Option<i64>,
    /// Space-separated scopes; absent means every tenant scope (never `admin`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    scope: Option<String>,
}

/// Secrets shipped in this repository's example configurations; a server using one would accept tokens
/// anyone can mint.
const PLACEHOLDER_SECRETS: [&str; 3] = ["change-me-in-production", "change-me", "CHANGE-ME"];

/// The HS256 secret must be at least 32 bytes (the HMAC-SHA256 key size) and not a shipped placeholder.
fn check_secret(secret: &str) -> anyhow::Result<()> {
    if PLACEHOLDER_SECRETS.iter().any(|p| p.eq_ignore_ascii_case(secret.trim())) {
        anyhow::bail!("jwt_secret is the placeholder from an example configuration: set MOETUNE_JWT_SECRET to 32 or more random bytes (e.g. `openssl rand -hex 32`), or set MOETUNE_ALLOW_INSECURE_JWT_SECRET=true for local development");
    }
    if secret.len() < 32 {
        anyhow::bail!("jwt_secret is {} bytes; it must be at least 32 (e.g. `openssl rand -hex 32`), or set MOETUNE_ALLOW_INSECURE_JWT_SECRET=true for local development", secret.len());
    }
    Ok(())
}

/// Signing and verification keys, built once from the configuration.
pub struct TokenKeys {
    issuer: String,
    audience: String,
    hs256: (EncodingKey, DecodingKey),
    rs256: Option<DecodingKey>,
}

impl TokenKeys {
    pub fn from_config(config: &ApiConfig) -> anyhow::Result<Self> {
        if !config.allow_insecure_jwt_secret {
            check_secret(&config.jwt_secret)?;
        }
        let rs256 = match config.jwt_rs256_public_key.trim() {
            "" => None,
            path => {
                let pem = std::fs::read(path).map_err(|e| anyhow::anyhow!("jwt_rs256_public_key {path}: {e}"))?;
                Some(DecodingKey::from_rsa_pem(&pem).map_err(|e| anyhow::anyhow!("jwt_rs256_public_key {path}: {e}"))?)
            }
        };
        let secret = config.jwt_secret.as_bytes();
        Ok(Self {
            issuer: config.jwt_issuer.clone(),
            audience: config.jwt_audience.clone(),
            hs256: (EncodingKey::from_secret(secret), DecodingKey::from_secret(secret)),
            rs256,
        })
    }

    /// An HS256 token for the tenant; `scopes` None means every tenant scope.
    pub fn mint(&self, tenant_id: TenantId, scopes: Option<&[Scope]>, ttl_seconds: i64) -> anyhow::Result<String> {
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
            sub: tenant_id,
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            iat: now,
            exp: now + ttl_seconds,
            nbf: None,
            scope: scopes.map(|s| s.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" ")),
        };
        Ok(encode(&Header::new(Algorithm::HS256), &claims, &self.hs256.0)?)
    }

    pub fn verify(&self, token: &str) -> Result<Principal, ApiError> {
        let invalid = |e: jsonwebtoken::errors::Error| ApiError::unauthorized(format!("Invalid bearer token: {e}."));
        let header = decode_header(token).map_err(invalid)?;
        let key = match header.alg {
            Algorithm::HS256 => &self.hs256.1,
            Algorithm::RS256 => self.rs256.as_ref().ok_or_else(|| ApiError::unauthorized("Invalid bearer token: RS256 tokens are not accepted by this server (no public key configured)."))?,
            other => return Err(ApiError::unauthorized(format!("Invalid bearer token: algorithm {other:?} is not accepted; use HS256 or RS256."))),
        };
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = 30;
        let claims = decode::<Claims>(token, key, &validation).map_err(invalid)?.claims;
        let scopes = match claims.scope.as_deref() {
            None => Scope::TENANT.to_vec(),
            Some(list) => Scope::parse_list(list).map_err(ApiError::unauthorized)?,
        };
        Ok(Principal { tenant: claims.sub, scopes, key_id: None })
    }
}
