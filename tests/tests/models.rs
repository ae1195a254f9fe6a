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

/// A model an operator registers from S3 is trained for real: a random Qwen2-MoE in Hugging Face layout
/// (made by transformers) is uploaded, described by `moetune-runner inspect`, registered, fine-tuned by
/// a runner that downloads it, and the merged result loads back in transformers as the same class.
#[sqlx::test(migrations = "../migrations")]
async fn a_registered_model_is_downloaded_and_fine_tuned_by_a_runner(pool: PgPool) {
    use moetune_e2e::{run_ok, runner_command, workspace_binary, KillOnDrop};
    use std::process::Command;
    let env = TestEnv::start(pool.clone()).await;
    let _scheduler = tokio::spawn(moetune_scheduler::run(env.scheduler_config(), pool.clone(), std::future::pending()));
    let work = std::env::temp_dir().join(format!("moetune-registered-{}", uuid::Uuid::new_v4().simple()));
    let runner_dir = work.join("runner");
    let model_dir = work.join("qwen-mini");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/make_hf_moe.py");
    run_ok(Command::new("python3").arg(script).arg(&model_dir));
    let inspect: Value = serde_json::from_str(&run_ok(Command::new(workspace_binary("moetune-runner")).arg("inspect").arg(&model_dir))).unwrap();
    assert_eq!(inspect["architecture"], "Qwen2MoeForCausalLM", "{inspect}");
    for entry in std::fs::read_dir(&model_dir).unwrap() {
        let entry = entry.unwrap();
        put(&env, &format!("models/acme/qwen-mini/{}", entry.file_name().to_string_lossy()), std::fs::read(entry.path()).unwrap()).await;
    }
    let request = json!({"id": "acme/qwen-mini", "uri": format!("s3://{}/models/acme/qwen-mini", env.config.s3.bucket), "inspect": inspect});
    let registered = env.http.post(env.url("/v1/admin/models")).bearer_auth(env.admin_token().await).json(&request).send().await.unwrap();
    assert_eq!(registered.status(), 200, "{}", registered.text().await.unwrap());

    // A runner with its own (empty) model cache, so the download is part of the test.
    let runner = KillOnDrop(runner_command(&env, "model-runner").env("MOETUNE_WORK_DIR", &runner_dir).spawn().unwrap());
    let file: Value = env.upload_demo_dataset().await;
    // Its expert intermediate size (48) is not whole MXFP4 blocks of 32: refused up front, naming NVFP4.
    let body = |format: &str| json!({"model": "acme/qwen-mini", "training_file": file["id"], "hyperparameters": {"batch_size": 8},
        "method": {"type": "moe_sft_qat", "moe_sft_qat": {"max_steps": 6, "learning_rate": 1e-3, "qat": {"steps": 2, "format": format}}}});
    let refused: Value = env.post_json("/v1/fine_tuning/jobs", body("mxfp4")).await.json().await.unwrap();
    assert_eq!(refused["error"]["code"], "model_incompatible_with_format", "{refused}");
    assert!(refused["error"]["message"].as_str().unwrap().contains("use format nvfp4"), "{refused}");
    let job: Value = env.post_json("/v1/fine_tuning/jobs", body("nvfp4")).await.json().await.unwrap();
    let job = env.wait_for_job(job["id"].as_str().unwrap(), std::time::Duration::from_secs(240)).await;
    assert_eq!(job["status"], "succeeded", "{job:#}");
    assert!(job["fine_tuned_model"].as_str().unwrap().starts_with("ft:acme/qwen-mini:"));
    let cached = runner_dir.join("models").join(&env.config.s3.bucket).join("models/acme/qwen-mini/model.safetensors");
    assert_eq!(std::fs::read(&cached).unwrap(), std::fs::read(model_dir.join("model.safetensors")).unwrap(), "the runner's copy differs");
    drop(runner);

    // The merged model loads in transformers as the architecture it came from.
    let merged = work.join("merged");
    std::fs::create_dir_all(&merged).unwrap();
    let id = job["id"].as_str().unwrap();
    for name in ["config.json", "model.safetensors", "tokenizer.json"] {
        let url = env.url(&format!("/v1/fine_tuning/jobs/{id}/artifacts/merged/{name}/content"));
        let response = env.http.get(url).bearer_auth(&env.token).send().await.unwrap();
        assert_eq!(response.status(), 200, "merged/{name}");
        std::fs::write(merged.join(name), response.bytes().await.unwrap()).unwrap();
    }
    let load = "import sys\nfrom transformers import Qwen2MoeForCausalLM\nm, info = Qwen2MoeForCausalLM.from_pretrained(sys.argv[1], output_loading_info=True)\nassert not any(info.values()), info\nprint('loaded')";
    assert_eq!(run_ok(Command::new("python3").args(["-c", load]).arg(&merged)).trim(), "loaded");
    std::fs::remove_dir_all(&work).unwrap();
}
