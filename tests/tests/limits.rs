//! Per-tenant quotas (429) and Idempotency-Key replays (same request → stored response, different → 409).

use moetune_e2e::TestEnv;
use serde_json::{json, Value};
use sqlx::PgPool;

const GOOD: &str = "{\"prompt\": \"2+2?\", \"completion\": \"4\"}\n{\"prompt\": \"3+3?\", \"completion\": \"6\"}\n";

async fn set_quota(env: &TestEnv, body: Value) -> Value {
    let response = env.http.post(env.url("/v1/admin/tenants")).bearer_auth(env.admin_token().await).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

async fn upload_file(env: &TestEnv) -> String {
    let file: Value = env.upload("fine-tune", "good.jsonl", GOOD.into()).await.json().await.unwrap();
    file["id"].as_str().unwrap().to_string()
}

fn job_body(file: &str) -> Value {
    json!({"model": "moetune/tiny-mixtral", "training_file": file})
}

#[sqlx::test(migrations = "../migrations")]
async fn concurrent_job_quota_refuses_with_429(pool: PgPool) {
    let env = TestEnv::start(pool).await;
    let file = upload_file(&env).await;
    let tenant = set_quota(&env, json!({"name": "acme", "max_concurrent_jobs": 2})).await;
    assert_eq!((tenant["max_concurrent_jobs"].as_i64(), tenant["active_jobs"].as_i64()), (Some(2), Some(0)));
    let first: Value = env.post_json("/v1/fine_tuning/jobs", job_body(&file)).await.json().await.unwrap();
    assert_eq!(env.post_json("/v1/fine_tuning/jobs", job_body(&file)).await.status(), 200);
    let refused = env.post_json("/v1/fine_tuning/jobs", job_body(&file)).await;
    assert_eq!(refused.status(), 429);
    let error: Value = refused.json().await.unwrap();
    assert_eq!((error["error"]["code"].as_str(), error["error"]["type"].as_str()), (Some("quota_exceeded"), Some("rate_limit_error")));
    assert!(error["error"]["message"].as_str().unwrap().contains("limit is 2"), "{error}");
    let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs").fetch_one(&env.pool).await.unwrap();
    assert_eq!(jobs, 2, "the refused job left nothing behind");

    // Finishing (here: cancelling) a job frees its slot.
    let id = first["id"].as_str().unwrap();
    assert_eq!(env.post_json(&format!("/v1/fine_tuning/jobs/{id}/cancel"), json!({})).await.status(), 200);
    assert_eq!(env.post_json("/v1/fine_tuning/jobs", job_body(&file)).await.status(), 200);

    // Another tenant is not affected, and null restores the default.
    let globex = env.token_for("globex", None).await;
    let other = env.http.get(env.url("/v1/fine_tuning/jobs")).bearer_auth(&globex).send().await.unwrap();
    assert_eq!(other.status(), 200);
    let restored = set_quota(&env, json!({"name": "acme", "max_concurrent_jobs": null})).await;
    assert_eq!(restored["max_concurrent_jobs"].as_i64(), Some(env.config.quotas.max_concurrent_jobs));
    assert_eq!(restored["active_jobs"].as_i64(), Some(2));
}

/// Creations racing for the last slots: the tenant lock orders them, and each one counts the jobs
/// committed before it got the lock, so exactly the limit's worth succeed.
#[sqlx::test(migrations = "../migrations")]
async fn concurrent_creations_never_exceed_the_job_quota(pool: PgPool) {
    let env = TestEnv::start(pool).await;
    let file = upload_file(&env).await;
    set_quota(&env, json!({"name": "acme", "max_concurrent_jobs": 3})).await;
    let mut racing = tokio::task::JoinSet::new();
    for _ in 0..12 {
        let (http, url, token, body) = (env.http.clone(), env.url("/v1/fine_tuning/jobs"), env.token.clone(), job_body(&file));
        racing.spawn(async move { http.post(url).bearer_auth(token).json(&body).send().await.unwrap().status().as_u16() });
    }
    let mut statuses = racing.join_all().await;
    statuses.sort_unstable();
    assert_eq!(statuses, [vec![200; 3], vec![429; 9]].concat());
    let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs").fetch_one(&env.pool).await.unwrap();
    assert_eq!(jobs, 3);
}

#[sqlx::test(migrations = "../migrations")]
async fn storage_quota_refuses_uploads_and_stores_nothing(pool: PgPool) {
    let env = TestEnv::start(pool).await;
    upload_file(&env).await;
    let tenant = set_quota(&env, json!({"name": "acme", "max_storage_bytes": GOOD.len() + 10})).await;
    assert_eq!(tenant["storage_bytes"].as_i64(), Some(GOOD.len() as i64));
    let (objects_before, _) = env.stored_objects().await;
    let refused = env.upload("fine-tune", "more.jsonl", GOOD.into()).await;
    assert_eq!(refused.status(), 429);
    let error: Value = refused.json().await.unwrap();
    assert!(error["error"]["message"].as_str().unwrap().contains("delete files you no longer need"), "{error}");
    assert_eq!(env.stored_objects().await, (objects_before, 0), "nothing new stored");
    assert_eq!(env.file_rows().await, 1);

    let bad = env.http.post(env.url("/v1/admin/tenants")).bearer_auth(env.admin_token().await).json(&json!({"name": "acme", "max_storage_bytes": -1})).send().await.unwrap();
    assert_eq!(bad.status(), 400);
}

#[sqlx::test(migrations = "../migrations")]
async fn idempotency_key_replays_the_same_request_and_refuses_a_different_one(pool: PgPool) {
    let env = TestEnv::start(pool).await;
    let file = upload_file(&env).await;
    let post = |key: &str, body: Value| env.http.post(env.url("/v1/fine_tuning/jobs")).bearer_auth(&env.token).header("Idempotency-Key", key).json(&body).send();

    let first = post("create-1", job_body(&file)).await.unwrap();
    assert_eq!(first.status(), 200);
    assert!(!first.headers().contains_key("idempotent-replayed"));
    let first: Value = first.json().await.unwrap();
    let again = post("create-1", job_body(&file)).await.unwrap();
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: Value = again.json().await.unwrap();
    assert_eq!(first["id"], again["id"]);
    let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs").fetch_one(&env.pool).await.unwrap();
    assert_eq!(jobs, 1);

    let mut different = job_body(&file);
    different["suffix"] = json!("other");
    let conflict = post("create-1", different).await.unwrap();
    assert_eq!(conflict.status(), 409);
    let error: Value = conflict.json().await.unwrap();
    assert_eq!(error["error"]["code"], "idempotency_key_reused");

    // Errors are replayed too (the request was processed), and keys are per tenant.
    let bad = post("create-2", job_body("file-missing")).await.unwrap();
    assert_eq!(bad.status(), 400);
    assert_eq!(post("create-2", job_body("file-missing")).await.unwrap().headers()["idempotent-replayed"], "true");
    let globex = env.token_for("globex", None).await;
    let other = env.http.post(env.url("/v1/fine_tuning/jobs")).bearer_auth(&globex).header("Idempotency-Key", "create-1").json(&job_body(&file)).send().await.unwrap();
    assert_eq!(other.status(), 400, "globex's key 'create-1' is its own; acme's file is not visible to it");

    let malformed = env.http.post(env.url("/v1/fine_tuning/jobs")).bearer_auth(&env.token).header("Idempotency-Key", "").json(&job_body(&file)).send().await.unwrap();
    assert_eq!(malformed.status(), 400);

    // Cancel is a POST too.
    let cancel = |key: &'static str| env.http.post(env.url(&format!("/v1/fine_tuning/jobs/{}/cancel", first["id"].as_str().unwrap()))).bearer_auth(&env.token).header("Idempotency-Key", key).send();
    assert_eq!(cancel("cancel-1").await.unwrap().status(), 200);
    assert_eq!(cancel("cancel-1").await.unwrap().status(), 200, "a retried cancel replays the success");
    assert_eq!(cancel("cancel-2").await.unwrap().status(), 409, "a new cancel of a cancelled job is a conflict");
}

#[sqlx::test(migrations = "../migrations")]
async fn idempotent_file_upload_stores_one_file(pool: PgPool) {
    let env = TestEnv::start(pool).await;
    let upload = |body: &'static str| {
        let form = reqwest::multipart::Form::new()
            .text("purpose", "fine-tune")
            .part("file", reqwest::multipart::Part::bytes(body.as_bytes().to_vec()).file_name("data.jsonl"));
        env.http.post(env.url("/v1/files")).bearer_auth(&env.token).header("Idempotency-Key", "upload-1").multipart(form).send()
    };
    let first: Value = upload(GOOD).await.unwrap().json().await.unwrap();
    let replay = upload(GOOD).await.unwrap();
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    let replay: Value = replay.json().await.unwrap();
    assert_eq!(first["id"], replay["id"]);
    let conflict = upload("{\"prompt\": \"x\", \"completion\": \"y\"}\n").await.unwrap();
    assert_eq!(conflict.status(), 409);
    assert_eq!(env.file_rows().await, 1);
    assert_eq!(env.stored_objects().await.0.len(), 1, "the duplicate and the refused upload were removed from storage");
}
