//! Authentication and authorization: JWTs (HS256/RS256, iss/aud/exp, pinned algorithms), API keys
//! (hashed, scoped, revocable) and the admin endpoints that manage them.

use base64::Engine;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use moetune_e2e::TestEnv;
use serde_json::{json, Value};
use sqlx::PgPool;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures");

async fn status_and_error(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    (status, body["error"].clone())
}

async fn list_files(env: &TestEnv, credential: &str) -> (u16, Value) {
    status_and_error(env.http.get(env.url("/v1/files")).bearer_auth(credential).send().await.unwrap()).await
}

fn claims(env: &TestEnv, tenant: uuid::Uuid, exp_offset: i64) -> Value {
    let now = chrono_now();
    json!({"sub": tenant, "iss": env.config.jwt_issuer, "aud": env.config.jwt_audience, "iat": now, "exp": now + exp_offset})
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

fn sign(alg: Algorithm, key: &EncodingKey, claims: &Value) -> String {
    encode(&Header::new(alg), claims, key).unwrap()
}

fn rsa_key(name: &str) -> EncodingKey {
    EncodingKey::from_rsa_pem(&std::fs::read(format!("{FIXTURES}/{name}")).unwrap()).unwrap()
}

async fn start_with_rs256(pool: PgPool) -> TestEnv {
    TestEnv::start_with(pool, |c| c.jwt_rs256_public_key = format!("{FIXTURES}/jwt-test-rs256.pub.pem")).await
}

async fn tenant_id(env: &TestEnv, name: &str) -> uuid::Uuid {
    moetune_api::auth::ensure_tenant(&env.pool, name).await.unwrap().0
}

#[sqlx::test(migrations = "../migrations")]
async fn jwt_claims_and_algorithms_are_checked(pool: PgPool) {
    let env = start_with_rs256(pool).await;
    let acme = tenant_id(&env, "acme").await;
    let secret = EncodingKey::from_secret(env.config.jwt_secret.as_bytes());

    assert_eq!(list_files(&env, &sign(Algorithm::HS256, &secret, &claims(&env, acme, 600))).await.0, 200);
    assert_eq!(list_files(&env, &sign(Algorithm::RS256, &rsa_key("jwt-test-rs256.key.pem"), &claims(&env, acme, 600))).await.0, 200);

    let expired = sign(Algorithm::HS256, &secret, &claims(&env, acme, -3600));
    let (status, error) = list_files(&env, &expired).await;
    assert_eq!((status, error["code"].as_str()), (401, Some("invalid_api_key")));
    assert!(error["message"].as_str().unwrap().contains("ExpiredSignature"), "{error}");

    let mut wrong_audience = claims(&env, acme, 600);
    wrong_audience["aud"] = json!("someone-else");
    let (status, error) = list_files(&env, &sign(Algorithm::HS256, &secret, &wrong_audience)).await;
    assert_eq!(status, 401);
    assert!(error["message"].as_str().unwrap().contains("InvalidAudience"), "{error}");

    let mut wrong_issuer = claims(&env, acme, 600);
    wrong_issuer["iss"] = json!("evil-idp");
    assert!(list_files(&env, &sign(Algorithm::HS256, &secret, &wrong_issuer)).await.1["message"].as_str().unwrap().contains("InvalidIssuer"));

    let mut no_audience = claims(&env, acme, 600);
    no_audience.as_object_mut().unwrap().remove("aud");
    assert_eq!(list_files(&env, &sign(Algorithm::HS256, &secret, &no_audience)).await.0, 401);

    // Algorithms other than the two pinned ones are refused even when signed with the right secret.
    let (status, error) = list_files(&env, &sign(Algorithm::HS384, &secret, &claims(&env, acme, 600))).await;
    assert_eq!(status, 401);
    assert!(error["message"].as_str().unwrap().contains("HS384 is not accepted"), "{error}");

    // An RS256 token signed by a key we do not trust.
    assert_eq!(list_files(&env, &sign(Algorithm::RS256, &rsa_key("jwt-test-rs256-other.key.pem"), &claims(&env, acme, 600))).await.0, 401);

    // HMAC with the RSA public key as the secret (the classic key-confusion attack).
    let public_pem = std::fs::read(format!("{FIXTURES}/jwt-test-rs256.pub.pem")).unwrap();
    let confused = sign(Algorithm::HS256, &EncodingKey::from_secret(&public_pem), &claims(&env, acme, 600));
    assert_eq!(list_files(&env, &confused).await.0, 401);

    // `alg: none`, unsigned.
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let unsigned = format!("{}.{}.", b64.encode(br#"{"alg":"none","typ":"JWT"}"#), b64.encode(claims(&env, acme, 600).to_string()));
    assert_eq!(list_files(&env, &unsigned).await.0, 401);

    // Tampered payload.
    let good = sign(Algorithm::HS256, &secret, &claims(&env, acme, 600));
    let parts: Vec<&str> = good.split('.').collect();
    let mut other = claims(&env, tenant_id(&env, "globex").await, 600);
    other["iat"] = json!(0);
    let tampered = format!("{}.{}.{}", parts[0], b64.encode(other.to_string()), parts[2]);
    assert_eq!(list_files(&env, &tampered).await.0, 401);
}

#[sqlx::test(migrations = "../migrations")]
async fn rs256_is_refused_when_no_public_key_is_configured(pool: PgPool) {
    let env = TestEnv::start_with(pool, |c| c.jwt_rs256_public_key = String::new()).await;
    let acme = tenant_id(&env, "acme").await;
    let (status, error) = list_files(&env, &sign(Algorithm::RS256, &rsa_key("jwt-test-rs256.key.pem"), &claims(&env, acme, 600))).await;
    assert_eq!(status, 401);
    assert!(error["message"].as_str().unwrap().contains("RS256 tokens are not accepted"), "{error}");
}

#[sqlx::test(migrations = "../migrations")]
async fn api_keys_are_hashed_scoped_and_revocable(pool: PgPool) {
    let env = TestEnv::start(pool).await;
    let admin = env.admin_token().await;
    let post_admin = |path: &str, body: Value| env.http.post(env.url(path)).bearer_auth(&admin).json(&body).send();

    // Tenant tokens cannot use admin endpoints.
    let (status, error) = status_and_error(env.http.get(env.url("/v1/admin/api_keys")).bearer_auth(&env.token).send().await.unwrap()).await;
    assert_eq!((status, error["code"].as_str(), error["type"].as_str()), (403, Some("insufficient_scope"), Some("permission_error")));

    let created: Value = post_admin("/v1/admin/api_keys", json!({"tenant": "acme", "name": "ci"})).await.unwrap().json().await.unwrap();
    let full_key = created["value"].as_str().unwrap().to_string();
    assert!(full_key.starts_with("mtk-"), "{created}");
    assert_eq!(created["scopes"], json!(["files:read", "files:write", "jobs:read", "jobs:write", "models:read", "webhooks:read", "webhooks:write"]));
    let stored: String = sqlx::query_scalar("SELECT secret_sha256 FROM api_keys").fetch_one(&env.pool).await.unwrap();
    let secret = full_key.rsplit('-').next().unwrap();
    assert!(!stored.contains(secret) && stored.len() == 64, "only a hash is stored");

    assert_eq!(list_files(&env, &full_key).await.0, 200);
    let uploaded = env.http.post(env.url("/v1/files")).bearer_auth(&full_key).multipart(
        reqwest::multipart::Form::new().text("purpose", "fine-tune").part("file", reqwest::multipart::Part::bytes(b"{\"prompt\": \"a\", \"completion\": \"b\"}\n".to_vec())),
    );
    assert_eq!(uploaded.send().await.unwrap().status(), 200, "a key acts for its tenant");
    let files = env.get_json("/v1/files").await;
    assert_eq!(files["data"].as_array().unwrap().len(), 1, "the key's upload belongs to acme");

    // A wrong secret with a real id, and a malformed key.
    let forged = format!("{}-{}", &full_key[..full_key.rfind('-').unwrap()], "0".repeat(40));
    assert_eq!(list_files(&env, &forged).await.0, 401);
    assert_eq!(list_files(&env, "mtk-garbage").await.0, 401);

    // A read-only key can read, not write.
    let read_only: Value = post_admin("/v1/admin/api_keys", json!({"tenant": "acme", "name": "dashboard", "scopes": ["files:read", "jobs:read"]}))
        .await.unwrap().json().await.unwrap();
    let read_only = read_only["value"].as_str().unwrap();
    assert_eq!(list_files(&env, read_only).await.0, 200);
    let (status, error) = status_and_error(env.http.post(env.url("/v1/fine_tuning/jobs")).bearer_auth(read_only).json(&json!({})).send().await.unwrap()).await;
    assert_eq!(status, 403);
    assert!(error["message"].as_str().unwrap().contains("'jobs:write'"), "{error}");

    let (status, error) = status_and_error(post_admin("/v1/admin/api_keys", json!({"tenant": "acme", "name": "x", "scopes": ["root"]})).await.unwrap()).await;
    assert_eq!((status, error["param"].as_str()), (400, Some("scopes")));
    let (status, error) = status_and_error(post_admin("/v1/admin/api_keys", json!({"tenant": "nobody", "name": "x"})).await.unwrap()).await;
    assert_eq!((status, error["param"].as_str()), (404, Some("tenant")));

    // Listing never shows a secret; revoking takes effect on the next request.
    let listed: Value = env.http.get(env.url("/v1/admin/api_keys?tenant=acme")).bearer_auth(&admin).send().await.unwrap().json().await.unwrap();
    assert_eq!(listed["data"].as_array().unwrap().len(), 2);
    assert!(!listed.to_string().contains(secret));
    let key_id = created["id"].as_str().unwrap();
    let revoked: Value = env.http.delete(env.url(&format!("/v1/admin/api_keys/{key_id}"))).bearer_auth(&admin).send().await.unwrap().json().await.unwrap();
    assert!(revoked["revoked_at"].is_number(), "{revoked}");
    let (status, error) = list_files(&env, &full_key).await;
    assert_eq!(status, 401);
    assert!(error["message"].as_str().unwrap().contains("revoked"), "{error}");
    assert_eq!(list_files(&env, read_only).await.0, 200, "other keys still work");
    let missing = env.http.delete(env.url("/v1/admin/api_keys/key-000000000000")).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(missing.status(), 404);
}
