//! Bad input at the HTTP boundary: each gets a clear 4xx naming what to fix, and nothing is stored.

use moetune_e2e::{error_of, TestEnv};
use serde_json::json;
use sqlx::PgPool;

const GOOD: &str = "{\"prompt\": \"2+2?\", \"completion\": \"4\"}\n{\"prompt\": \"3+3?\", \"completion\": \"6\"}\n";

#[sqlx::test(migrations = "../migrations")]
async fn missing_or_bad_token_is_401(pool: PgPool) {
    let env = TestEnv::start(pool).await;
    let response = env.http.get(env.url("/v1/fine_tuning/jobs/ftjob-x")).send().await.unwrap();
    let error = error_of(response, 401).await;
    assert_eq!(error["code"], "invalid_api_key");
    assert!(error["message"].as_str().unwrap().contains("Missing bearer token"));
    let response = env.http.get(env.url("/v1/fine_tuning/jobs/ftjob-x")).bearer_auth("not-a-jwt").send().await.unwrap();
    assert_eq!(error_of(response, 401).await["type"], "authentication_error");
    let form = reqwest::multipart::Form::new().text("purpose", "fine-tune");
    let response = env.http.post(env.url("/v1/files")).multipart(form).send().await.unwrap();
    assert_eq!(response.status(), 401);
}

#[sqlx::test(migrations = "../migrations")]
async fn malformed_jsonl_names_the_lines_and_stores_nothing(pool: PgPool) {
    let env = TestEnv::start(pool).await;
    let body = "{\"prompt\": \"a\", \"completion\": \"b\"}\n{\"prompt\": \"a\", \n{\"prompt\": \"a\", \"completion\": 7}\n";
    let error = error_of(env.upload("fine-tune", "bad.jsonl", body.into()).await, 400).await;
    assert_eq!(error["code"], "invalid_file_format");
    assert_eq!(error["param"], "file");
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("line 2: invalid JSON"), "{message}");
    assert!(message.contains("line 3: `completion` must be a string, found a number"), "{message}");
    assert_eq!(error["lines"][0]["line"], 2);
    assert_eq!(env.stored_objects().await, (vec![], 0));
    assert_eq!(env.file_rows().await, 0);
}

#[sqlx::test(migrations = "../migrations")]
async fn empty_file_is_refused(pool: PgPool) {
    let env = TestEnv::start(pool).await;
    let error = error_of(env.upload("fine-tune", "empty.jsonl", Vec::new()).await, 400).await;
    assert!(error["message"].as_str().unwrap().contains("the file is empty"), "{error}");
    assert_eq!(env.stored_objects().await, (vec![], 0));
}

#[sqlx::test(migrations = "../migrations")]
async fn wrong_or_missing_purpose_is_refused(pool: PgPool) {
    let env = TestEnv::start(pool).await;
    let error = error_of(env.upload("assistants", "a.jsonl", GOOD.into()).await, 400).await;
    assert_eq!((error["code"].as_str(), error["param"].as_str()), (Some("invalid_purpose"), Some("purpose")));
    assert!(error["message"].as_str().unwrap().contains("use 'fine-tune'"));
    let form = reqwest::multipart::Form::new().part("file", reqwest::multipart::Part::bytes(GOOD.as_bytes().to_vec()));
    let response = env.http.post(env.url("/v1/files")).bearer_auth(&env.token).multipart(form).send().await.unwrap();
    assert_eq!(error_of(response, 400).await["param"], "purpose");
    assert_eq!(env.stored_objects().await, (vec![], 0));
    assert_eq!(env.file_rows().await, 0);
}

#[sqlx::test(migrations = "../migrations")]
async fn job_requests_are_checked(pool: PgPool) {
    let env = TestEnv::start(pool).await;
    let file: serde_json::Value = env.upload("fine-tune", "good.jsonl", GOOD.into()).await.json().await.unwrap();
    assert_eq!((file["status"].as_str(), file["example_count"].as_i64()), (Some("processed"), Some(2)));
    let file_id = file["id"].as_str().unwrap();

    let error = error_of(env.post_json("/v1/fine_tuning/jobs", json!({"model": "gpt-4o", "training_file": file_id})).await, 400).await;
    assert_eq!((error["code"].as_str(), error["param"].as_str()), (Some("model_not_found"), Some("model")));
    assert!(error["message"].as_str().unwrap().contains("moetune/tiny-mixtral"));

    let error = error_of(env.post_json("/v1/fine_tuning/jobs", json!({"model": "moetune/tiny-mixtral", "training_file": "file-nope"})).await, 400).await;
    assert_eq!(error["param"], "training_file");

    let body = json!({"model": "moetune/tiny-mixtral", "training_file": file_id, "learning_rate": 1});
    let error = error_of(env.post_json("/v1/fine_tuning/jobs", body).await, 400).await;
    assert!(error["message"].as_str().unwrap().contains("unknown field `learning_rate`"), "{error}");

    let body = json!({"model": "moetune/tiny-mixtral", "training_file": file_id, "hyperparameters": {"n_epochs": 0}});
    assert_eq!(error_of(env.post_json("/v1/fine_tuning/jobs", body).await, 400).await["param"], "hyperparameters.n_epochs");

    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs").fetch_one(&env.pool).await.unwrap();
    assert_eq!(count, 0, "refused requests create no job");
    let missing = env.http.get(env.url("/v1/fine_tuning/jobs/ftjob-missing")).bearer_auth(&env.token).send().await.unwrap();
    assert_eq!(error_of(missing, 404).await["code"], "not_found");
}

/// Larger than one S3 part, so the multipart path runs: a bad last line aborts every uploaded part;
/// a good file is stored byte for byte.
#[sqlx::test(migrations = "../migrations")]
async fn large_uploads_stream_in_parts(pool: PgPool) {
    let env = TestEnv::start(pool).await;
    let line = format!("{{\"prompt\": \"{}\", \"completion\": \"ok\"}}\n", "x".repeat(200));
    let lines = (moetune_api::storage::PART_SIZE * 2) / line.len() + 10;
    let mut body = line.repeat(lines).into_bytes();
    body.extend_from_slice(b"{\"prompt\": 1}\n");
    let error = error_of(env.upload("fine-tune", "big.jsonl", body.clone()).await, 400).await;
    assert_eq!(error["lines"][0]["line"], lines as u64 + 1);
    assert_eq!(env.stored_objects().await, (vec![], 0));

    body.truncate(body.len() - b"{\"prompt\": 1}\n".len());
    let response = env.upload("fine-tune", "big.jsonl", body.clone()).await;
    assert_eq!(response.status(), 200);
    let file: serde_json::Value = response.json().await.unwrap();
    assert_eq!(file["bytes"].as_u64(), Some(body.len() as u64));
    assert_eq!(file["example_count"].as_u64(), Some(lines as u64));
    let (keys, open_uploads) = env.stored_objects().await;
    assert_eq!((keys.len(), open_uploads), (1, 0));
    let stored = env.s3.get_object().bucket(&env.config.s3.bucket).key(&keys[0]).send().await.unwrap();
    let stored = stored.body.collect().await.unwrap().into_bytes();
    assert!(stored == body, "stored object differs from the upload");
    use sha2::Digest;
    assert_eq!(file["sha256"].as_str(), Some(hex::encode(sha2::Sha256::digest(&body)).as_str()));
}

#[sqlx::test(migrations = "../migrations")]
async fn openai_method_hyperparameters_are_honoured(pool: PgPool) {
    let env = TestEnv::start(pool).await;
    let file: serde_json::Value = env.upload("fine-tune", "good.jsonl", GOOD.into()).await.json().await.unwrap();
    let method = json!({"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2, "batch_size": "auto", "learning_rate_multiplier": 0.5}}});
    let body = json!({"model": "moetune/tiny-mixtral", "training_file": file["id"], "method": method, "metadata": {"team": "risk"}});
    let response = env.post_json("/v1/fine_tuning/jobs", body).await;
    assert_eq!(response.status(), 200);
    let job: serde_json::Value = response.json().await.unwrap();
    assert_eq!(job["hyperparameters"], json!({"n_epochs": 2, "batch_size": 4, "learning_rate_multiplier": 0.5}));
    assert_eq!(job["method"]["moe_sft_qat"]["learning_rate"], json!(5e-6)); // default 1e-5 × 0.5
    assert_eq!(job["method"]["moe_sft_qat"]["qat"]["steps"], json!(500)); // every default is echoed
    // A Mixtral's FP4 export defaults to NVFP4 (transformers loads MXFP4 for gpt-oss only), resolved at creation.
    assert_eq!((job["method"]["moe_sft_qat"]["qat"]["format"].as_str(), job["method"]["moe_sft_qat"]["qat"]["mxfp4_scale_rule"].as_str()), (Some("nvfp4"), Some("ocp")));
    assert_eq!((job["status"].as_str(), job["metadata"]["team"].as_str()), (Some("queued"), Some("risk")));

    let body = json!({"model": "moetune/tiny-mixtral", "training_file": file["id"], "method": method, "hyperparameters": {"n_epochs": 1}});
    assert_eq!(error_of(env.post_json("/v1/fine_tuning/jobs", body).await, 400).await["code"], "conflicting_parameters");
    let body = json!({"model": "moetune/tiny-mixtral", "training_file": file["id"], "method": {"type": "dpo"}});
    assert_eq!(error_of(env.post_json("/v1/fine_tuning/jobs", body).await, 400).await["param"], "method.type");
}

/// `method.moe_sft_qat` carries every workflow option; each bad value is refused naming its path, and
/// a validation file must be a fine-tune file of the tenant.
#[sqlx::test(migrations = "../migrations")]
async fn moe_sft_qat_options_are_validated_and_passed_through(pool: PgPool) {
    let env = TestEnv::start(pool).await;
    let file: serde_json::Value = env.upload("fine-tune", "good.jsonl", GOOD.into()).await.json().await.unwrap();
    let job = |options: serde_json::Value| json!({"model": "moetune/tiny-mixtral", "training_file": file["id"], "method": {"type": "moe_sft_qat", "moe_sft_qat": options}});
    let refused = [
        (json!({"lora": {"target_modules": ["gate"]}}), "method.moe_sft_qat.lora.target_modules", "never a LoRA target"),
        (json!({"qat": {"format": "mxfp4", "quantize_activations": true}}), "method.moe_sft_qat.qat.quantize_activations", "nvfp4"),
        (json!({"qat": {"format": "nvfp4", "mxfp4_scale_rule": "ceil"}}), "method.moe_sft_qat.qat.mxfp4_scale_rule", "mxfp4"),
        (json!({"router": {"capacity_factor": 0.5}}), "method.moe_sft_qat.router.capacity_factor", "at least 1"),
        (json!({"monitor": {"top1_share_threshold": 1.5}}), "method.moe_sft_qat.monitor.top1_share_threshold", "[0, 1]"),
        (json!({"lora": {"dropout": 0.1, "target_experts": true}}), "method.moe_sft_qat.lora.dropout", "PEFT"),
        // Expert targets are checked against the model (tiny-mixtral: 2 decoder layers of 4 experts).
        (json!({"lora": {"target_experts": [[0, 1]]}}), "method.moe_sft_qat.lora.target_experts", "2 decoder layers"),
        (json!({"lora": {"target_experts": [[0, 4], []]}}), "method.moe_sft_qat.lora.target_experts", "indices 0 to 3"),
        (json!({"lora": {"target_experts": true, "rank_pattern": {"layers.0.experts.9": 4}}}), "method.moe_sft_qat.lora.rank_pattern", "expert 9"),
        (json!({"lora": {"target_experts": {"from_profile": {"min_share": 0}}}}), "method.moe_sft_qat.lora.target_experts.from_profile.min_share", "(0, 1)"),
        // Expert parallelism splits tiny-mixtral's 4 experts: the ranks must divide them.
        (json!({"expert_parallel": true}), "method.moe_sft_qat.expert_parallel", "world_size"),
        (json!({"expert_parallel": true, "world_size": 3, "gradient_accumulation_steps": 3}), "method.moe_sft_qat.world_size", "must divide 4"),
        (json!({"expert_parallel": true, "world_size": 2, "gradient_accumulation_steps": 2, "lora": {"target_experts": true}}), "method.moe_sft_qat.lora.target_experts", "expert_parallel"),
        // Fully sharded weights need ranks, a full fine-tune and layer-by-layer recomputation.
        (json!({"fully_sharded": true, "sft_method": "full"}), "method.moe_sft_qat.fully_sharded", "world_size"),
        (json!({"fully_sharded": true, "world_size": 2, "gradient_accumulation_steps": 2}), "method.moe_sft_qat.fully_sharded", "sft_method: full"),
        (json!({"fully_sharded": true, "sft_method": "full", "world_size": 2, "gradient_accumulation_steps": 2, "gradient_checkpointing": false}), "method.moe_sft_qat.gradient_checkpointing", "fully_sharded"),
    ];
    for (options, param, hint) in refused {
        let error = error_of(env.post_json("/v1/fine_tuning/jobs", job(options.clone())).await, 400).await;
        assert_eq!(error["param"], param, "{options}");
        assert!(error["message"].as_str().unwrap().contains(hint), "{error}");
    }
    let error = error_of(env.post_json("/v1/fine_tuning/jobs", job(json!({"qat": {"fromat": "nvfp4"}}))).await, 400).await;
    assert!(error["message"].as_str().unwrap().contains("unknown field `fromat`"), "{error}");
    let error = error_of(env.post_json("/v1/fine_tuning/jobs", job(json!({"lora": {"target_experts": "all"}}))).await, 400).await;
    assert!(error["message"].as_str().unwrap().contains("from_profile"), "{error}");
    let chosen = json!({"lora": {"target_experts": [[1, 3], []], "rank_pattern": {"experts.3": 16}}});
    let created: serde_json::Value = env.post_json("/v1/fine_tuning/jobs", job(chosen)).await.json().await.unwrap();
    assert_eq!(created["method"]["moe_sft_qat"]["lora"]["target_experts"], json!([[1, 3], []]), "{created}");

    let options = json!({"sft_method": "full", "router": {"mode": "train", "aux_loss_coef": 0.01}, "qat": {"format": "nvfp4", "quantize_activations": true},
                         "monitor": {"every_n_steps": 10, "diagnostic_prompts": ["What is a bond?"]}, "eval_prompts": [{"prompt": "2+2?", "answer": "4"}]});
    let mut body = job(options);
    body["validation_file"] = file["id"].clone();
    let response = env.post_json("/v1/fine_tuning/jobs", body.clone()).await;
    assert_eq!(response.status(), 200);
    let created: serde_json::Value = response.json().await.unwrap();
    let echoed = &created["method"]["moe_sft_qat"];
    assert_eq!((echoed["sft_method"].as_str(), echoed["router"]["mode"].as_str(), echoed["qat"]["format"].as_str()), (Some("full"), Some("train"), Some("nvfp4")));
    assert_eq!(echoed["router"]["aux_loss_coef"], json!(0.01));
    assert_eq!(created["validation_file"], file["id"]);
    let checkpoints = env.get_json(&format!("/v1/fine_tuning/jobs/{}/checkpoints", created["id"].as_str().unwrap())).await;
    assert_eq!(checkpoints["data"], json!([]));

    body["validation_file"] = json!("file-missing");
    assert_eq!(error_of(env.post_json("/v1/fine_tuning/jobs", body).await, 400).await["param"], "validation_file");
}

/// Files: list (pagination both ways, purpose filter), content, delete; jobs: list with pagination and
/// metadata filters; every id route refuses another tenant's ids with 404; /readyz.
#[sqlx::test(migrations = "../migrations")]
async fn files_and_jobs_list_download_delete_and_stay_tenant_scoped(pool: PgPool) {
    let env = TestEnv::start(pool.clone()).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let file: serde_json::Value = env.upload("fine-tune", &format!("f{i}.jsonl"), GOOD.into()).await.json().await.unwrap();
        ids.push(file["id"].as_str().unwrap().to_string());
    }
    let page = env.get_json("/v1/files?limit=2").await;
    assert_eq!((page["object"].as_str(), page["has_more"].as_bool()), (Some("list"), Some(true)));
    let first: Vec<&str> = page["data"].as_array().unwrap().iter().map(|f| f["id"].as_str().unwrap()).collect();
    assert_eq!(first, [ids[2].as_str(), ids[1].as_str()]); // newest first
    let rest = env.get_json(&format!("/v1/files?limit=2&after={}", page["last_id"].as_str().unwrap())).await;
    assert_eq!(rest["data"][0]["id"], ids[0].as_str());
    assert_eq!(rest["has_more"], false);
    let ascending = env.get_json("/v1/files?order=asc&purpose=fine-tune").await;
    assert_eq!(ascending["data"][0]["id"], ids[0].as_str());
    assert_eq!(env.get_json("/v1/files?purpose=batch").await["data"], json!([]));

    let content = env.http.get(env.url(&format!("/v1/files/{}/content", ids[0]))).bearer_auth(&env.token).send().await.unwrap();
    assert_eq!(content.status(), 200);
    assert_eq!(content.bytes().await.unwrap(), GOOD.as_bytes());

    // Jobs: newest first, paginated, filtered by metadata.
    let mut jobs = Vec::new();
    for (i, team) in ["risk", "ops", "risk"].iter().enumerate() {
        let body = json!({"model": "moetune/tiny-mixtral", "training_file": ids[1], "metadata": {"team": team, "n": i.to_string()}});
        let job: serde_json::Value = env.post_json("/v1/fine_tuning/jobs", body).await.json().await.unwrap();
        jobs.push(job["id"].as_str().unwrap().to_string());
    }
    let page = env.get_json("/v1/fine_tuning/jobs?limit=2").await;
    assert_eq!((page["data"][0]["id"].as_str(), page["has_more"].as_bool()), (Some(jobs[2].as_str()), Some(true)));
    let rest = env.get_json(&format!("/v1/fine_tuning/jobs?limit=2&after={}", page["data"][1]["id"].as_str().unwrap())).await;
    assert_eq!((rest["data"][0]["id"].as_str(), rest["has_more"].as_bool()), (Some(jobs[0].as_str()), Some(false)));
    let risk = env.get_json("/v1/fine_tuning/jobs?metadata[team]=risk").await;
    let risk: Vec<&str> = risk["data"].as_array().unwrap().iter().map(|j| j["id"].as_str().unwrap()).collect();
    assert_eq!(risk, [jobs[2].as_str(), jobs[0].as_str()]);
    let error = error_of(env.http.get(env.url("/v1/fine_tuning/jobs?colour=red")).bearer_auth(&env.token).send().await.unwrap(), 400).await;
    assert_eq!(error["param"], "colour");

    // Deleting: refused while a queued job uses the file, then done; the file is gone from every route.
    let error = error_of(env.http.delete(env.url(&format!("/v1/files/{}", ids[1]))).bearer_auth(&env.token).send().await.unwrap(), 409).await;
    assert_eq!(error["code"], "file_in_use");
    let deleted: serde_json::Value = env.http.delete(env.url(&format!("/v1/files/{}", ids[0]))).bearer_auth(&env.token).send().await.unwrap().json().await.unwrap();
    assert_eq!(deleted, json!({"id": ids[0], "object": "file", "deleted": true}));
    for path in [format!("/v1/files/{}", ids[0]), format!("/v1/files/{}/content", ids[0])] {
        assert_eq!(env.http.get(env.url(&path)).bearer_auth(&env.token).send().await.unwrap().status(), 404, "{path}");
    }
    assert_eq!(env.get_json("/v1/files").await["data"].as_array().unwrap().len(), 2);
    let body = json!({"model": "moetune/tiny-mixtral", "training_file": ids[0]});
    assert_eq!(error_of(env.post_json("/v1/fine_tuning/jobs", body).await, 400).await["code"], "file_not_found");

    // Another tenant sees none of it.
    let other = moetune_api::auth::ensure_tenant(&pool, "globex").await.unwrap();
    let other_token = moetune_api::auth::TokenKeys::from_config(&env.config).unwrap().mint(other, None, 3600).unwrap();
    let get = |path: String| env.http.get(env.url(&path)).bearer_auth(&other_token).send();
    for path in [
        format!("/v1/files/{}", ids[2]),
        format!("/v1/files/{}/content", ids[2]),
        format!("/v1/fine_tuning/jobs/{}", jobs[0]),
        format!("/v1/fine_tuning/jobs/{}/events", jobs[0]),
        format!("/v1/fine_tuning/jobs/{}/checkpoints", jobs[0]),
        format!("/v1/fine_tuning/jobs/{}/artifacts", jobs[0]),
    ] {
        assert_eq!(get(path.clone()).await.unwrap().status(), 404, "{path}");
    }
    let deleted = env.http.delete(env.url(&format!("/v1/files/{}", ids[2]))).bearer_auth(&other_token).send().await.unwrap();
    assert_eq!(deleted.status(), 404);
    let listing: serde_json::Value = get("/v1/files".into()).await.unwrap().json().await.unwrap();
    assert_eq!(listing["data"], json!([]));
    let listing: serde_json::Value = get("/v1/fine_tuning/jobs".into()).await.unwrap().json().await.unwrap();
    assert_eq!(listing["data"], json!([]));

    let ready = env.http.get(env.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
}

/// Cancelling a queued job: it is cancelled in Postgres, withdrawn from the Redis queue, and a second
/// cancel (or one of another tenant) is refused.
#[sqlx::test(migrations = "../migrations")]
async fn queued_jobs_can_be_cancelled_once(pool: PgPool) {
    use redis::AsyncCommands;
    let env = TestEnv::start(pool).await;
    let file: serde_json::Value = env.upload("fine-tune", "good.jsonl", GOOD.into()).await.json().await.unwrap();
    let job: serde_json::Value = env.post_json("/v1/fine_tuning/jobs", json!({"model": "moetune/tiny-mixtral", "training_file": file["id"]})).await.json().await.unwrap();
    let id = job["id"].as_str().unwrap();
    let keys = moetune_types::RedisKeys::new(&env.config.redis_prefix);
    let mut redis = redis::Client::open(env.config.redis_url.as_str()).unwrap().get_multiplexed_async_connection().await.unwrap();
    assert_eq!(env.waiting_jobs().await, [id]);

    let cancelled: serde_json::Value = env.post_json(&format!("/v1/fine_tuning/jobs/{id}/cancel"), json!({})).await.json().await.unwrap();
    assert_eq!(cancelled["status"], "cancelled");
    assert!(env.waiting_jobs().await.is_empty());
    assert!(redis.exists::<_, bool>(keys.cancelled(id)).await.unwrap());
    let error = error_of(env.post_json(&format!("/v1/fine_tuning/jobs/{id}/cancel"), json!({})).await, 409).await;
    assert_eq!(error["code"], "job_not_cancellable");
    let events = env.get_json(&format!("/v1/fine_tuning/jobs/{id}/events")).await;
    assert_eq!(events["data"][0]["message"], "Job cancelled");
    assert_eq!(error_of(env.post_json("/v1/fine_tuning/jobs/ftjob-nope/cancel", json!({})).await, 404).await["code"], "not_found");
}
