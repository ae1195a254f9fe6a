//! The model registry: built-in and admin-registered base models (S3 directories checked against
//! their `inspect` output), and jobs naming them.

use moetune_e2e::TestEnv;
use serde_json::{json, Value};
use sqlx::PgPool;

fn mixtral_config() -> Value {
    json!({"architectures": ["MixtralForCausalLM"], "model_type": "mixtral", "num_hidden_layers": 2, "hidden_size": 64, "vocab_size": 512,
           "num_local_experts": 4, "num_experts_per_tok": 2})
}

fn inspect_output() -> Value {
    json!({"architecture": "MixtralForCausalLM", "model_type": "mixtral", "num_hidden_layers": 2, "moe_layers": 2, "num_experts": 4, "top_k": 2,
           "hidden_size": 64, "vocab_size": 512, "parameters": {"total": 123456, "active_per_token": 80000}})
}

async fn put(env: &TestEnv, key: &str, body: Vec<u8>) {
    env.s3.put_object().bucket(&env.config.s3.bucket).key(key).body(body.into()).send().await.unwrap();
}

#[sqlx::test(migrations = "../migrations")]
async fn admins_register_models_from_s3_and_jobs_can_name_them(pool: PgPool) {
    let env = TestEnv::start(pool).await;
    let admin = env.admin_token().await;
    let register = |body: Value| env.http.post(env.url("/v1/admin/models")).bearer_auth(&admin).json(&body).send();
    let uri = format!("s3://{}/models/acme/mixtral-mini", env.config.s3.bucket);
    let request = json!({"id": "acme/mixtral-mini", "uri": uri, "inspect": inspect_output()});

    let listed = env.get_json("/v1/models").await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 1);
    assert_eq!((listed["data"][0]["id"].as_str(), listed["data"][0]["source"].as_str()), (Some("moetune/tiny-mixtral"), Some("builtin")));

    // Nothing in S3 yet.
    let error: Value = register(request.clone()).await.unwrap().json().await.unwrap();
    assert_eq!(error["error"]["code"], "model_files_missing", "{error}");

    put(&env, "models/acme/mixtral-mini/config.json", mixtral_config().to_string().into_bytes()).await;
    put(&env, "models/acme/mixtral-mini/tokenizer.json", b"{}".to_vec()).await;
    put(&env, "models/acme/mixtral-mini/model.safetensors", b"weights".to_vec()).await;

    let mut wrong = request.clone();
    wrong["inspect"]["hidden_size"] = json!(128);
    let error: Value = register(wrong).await.unwrap().json().await.unwrap();
    assert_eq!((error["error"]["code"].as_str(), error["error"]["param"].as_str()), (Some("inspect_mismatch"), Some("inspect")));
    assert!(error["error"]["message"].as_str().unwrap().contains("hidden_size"));
    let error: Value = register(json!({"id": "no-owner", "uri": uri, "inspect": inspect_output()})).await.unwrap().json().await.unwrap();
    assert_eq!(error["error"]["param"], "id");

    // A tenant cannot register.
    let tenant_try = env.http.post(env.url("/v1/admin/models")).bearer_auth(&env.token).json(&request).send().await.unwrap();
    assert_eq!(tenant_try.status(), 403);

    let model: Value = register(request.clone()).await.unwrap().json().await.unwrap();
    assert_eq!((model["object"].as_str(), model["architecture"].as_str(), model["owned_by"].as_str()), (Some("model"), Some("MixtralForCausalLM"), Some("acme")));
    assert_eq!(model["inspect"]["parameters"]["total"], 123456);
    assert_eq!(register(request).await.unwrap().status(), 409);
    assert_eq!(env.get_json("/v1/models/acme/mixtral-mini").await["uri"], format!("{uri}/"));
    let missing = env.http.get(env.url("/v1/models/acme/nope")).bearer_auth(&env.token).send().await.unwrap();
    assert_eq!(missing.status(), 404);

    // Jobs: an unknown model is refused with the list; a registered one is queued with its location.
    let file: Value = env.upload("fine-tune", "d.jsonl", b"{\"prompt\": \"a\", \"completion\": \"b\"}\n".to_vec()).await.json().await.unwrap();
    let error: Value = env.post_json("/v1/fine_tuning/jobs", json!({"model": "acme/other", "training_file": file["id"]})).await.json().await.unwrap();
    assert_eq!(error["error"]["code"], "model_not_found");
    assert!(error["error"]["message"].as_str().unwrap().contains("acme/mixtral-mini, moetune/tiny-mixtral"), "{error}");
    let job: Value = env.post_json("/v1/fine_tuning/jobs", json!({"model": "acme/mixtral-mini", "training_file": file["id"]})).await.json().await.unwrap();
    assert_eq!(job["status"], "queued", "{job}");
    let mut redis = redis::Client::open(env.config.redis_url.as_str()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let key = format!("{}:job:{}", env.config.redis_prefix, job["id"].as_str().unwrap());
    let assignment: String = redis::AsyncCommands::get(&mut redis, key).await.unwrap();
    let assignment: Value = serde_json::from_str(&assignment).unwrap();
    assert_eq!(assignment["model_location"], json!({"bucket": env.config.s3.bucket, "prefix": "models/acme/mixtral-mini"}));
}
