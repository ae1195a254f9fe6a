//! `POST /v1/fine_tuning/jobs/estimate`: the plan, the memory and the runner classes that fit, from the
//! same body as job creation, refused as creation refuses it, and creating nothing. Its durations against
//! jobs that really ran are checked in tests/tests/cli.rs.

use moetune_api::auth::Scope;
use moetune_e2e::{error_of, TestEnv};
use moetune_types::{RedisKeys, RunnerInfo};
use serde_json::{json, Value};
use sqlx::PgPool;

const GIB: i64 = 1 << 30;

/// A runner's registry entry and heartbeat, written as a runner writes them (it claims nothing).
async fn register(env: &TestEnv, id: &str, device: &str, gpu_model: &str, memory: i64) {
    let info = RunnerInfo {
        runner_id: moetune_types::RunnerId::parse(id).unwrap(),
        device: device.into(),
        gpu_count: i64::from(device == "cuda"),
        gpu_model: gpu_model.into(),
        gpu_memory_bytes: if device == "cuda" { memory } else { 0 },
        host_memory_bytes: if device == "cuda" { 512 * GIB } else { memory },
        labels: Default::default(),
        max_concurrent_jobs: 1,
        methods: vec!["lora".into(), "full".into()],
        qat_formats: vec!["mxfp4".into(), "nvfp4".into()],
        version: "test".into(),
        started_at: 0,
        address: String::new(),
        last_heartbeat_ms: 0,
    };
    let keys = RedisKeys::new(&env.config.redis_prefix);
    let mut redis = env.queue().await.connection();
    let () = redis::pipe()
        .sadd(keys.runners(), id)
        .set_ex(keys.runner_alive(id), "1", 60)
        .set(keys.runner_info(id), serde_json::to_string(&info).unwrap())
        .query_async(&mut redis)
        .await
        .unwrap();
}

async fn estimate(env: &TestEnv, body: Value) -> Value {
    let response = env.post_json("/v1/fine_tuning/jobs/estimate", body).await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

fn class<'a>(estimate: &'a Value, name: &str) -> &'a Value {
    estimate["runner_classes"].as_array().unwrap().iter().find(|c| c["class"] == name).unwrap_or_else(|| panic!("no class {name}: {estimate:#}"))
}

#[sqlx::test(migrations = "../migrations")]
async fn an_estimate_plans_the_job_and_says_where_it_fits(pool: PgPool) {
    let env = TestEnv::start(pool.clone()).await;
    let file = env.upload_demo_dataset().await;
    let file_id = file["id"].as_str().unwrap();
    let file = env.settled_file(file_id).await;
    let body = |moe: Value| json!({"model": "moetune/tiny-mixtral", "training_file": file_id, "hyperparameters": {"n_epochs": 2, "batch_size": 8}, "method": {"type": "moe_sft_qat", "moe_sft_qat": moe}});

    // No runner registered: the plan and the memory, and why it cannot run yet.
    let alone = estimate(&env, body(json!({"qat": {"steps": 5}}))).await;
    assert_eq!(alone["object"], "fine_tuning.job.estimate");
    assert_eq!((alone["fits"].as_bool(), alone["runner_classes"].as_array().unwrap().len()), (Some(false), 0));
    assert_eq!(alone["reason"], "Waiting for a runner: none is registered.");
    // 240 examples, 10 % held out: 216 to train on, 27 steps of 8 per epoch.
    assert_eq!(file["example_count"], 240);
    let plan = &alone["plan"];
    assert_eq!((plan["training_examples"].as_u64(), plan["sft_steps"].as_u64(), plan["qat_steps"].as_u64()), (Some(216), Some(54), Some(5)));
    assert_eq!(alone["inputs"]["file_estimated_tokens"], file["estimated_tokens"]);
    // No job of the model ran: the plan's tokens as they are, and no duration.
    assert_eq!(alone["tokens_per_estimated_token"], 1.0);
    assert_eq!(alone["expected_trained_tokens"], plan["estimated_tokens"]);
    let memory = &alone["memory"];
    assert_eq!(memory["cuda"]["peak_bytes"], alone["requirements"]["memory_bytes"]);
    assert_eq!(memory["cpu"]["peak_bytes"], alone["requirements"]["cpu_memory_bytes"]);
    assert!(memory["cpu"]["stages"]["qat"]["total_bytes"].as_i64().unwrap() > 0, "{memory:#}");

    // Two classes: a CPU host of 8 GiB and an H100. A job too big for the CPU host fits the GPU only.
    register(&env, "cpu-1", "cpu", "", 8 * GIB).await;
    register(&env, "gpu-1", "cuda", "H100-80GB", 80 * GIB).await;
    register(&env, "gpu-2", "cuda", "H100-80GB", 80 * GIB).await;
    let small = estimate(&env, body(json!({}))).await;
    assert_eq!((small["fits"].as_bool(), small["reason"].as_str()), (Some(true), None));
    let (cpu, h100) = (class(&small, "cpu"), class(&small, "cuda:H100-80GB"));
    assert_eq!((cpu["fits"].as_bool(), h100["fits"].as_bool(), h100["runners"].as_u64()), (Some(true), Some(true), Some(2)));
    assert!(cpu["measured"].is_null() && cpu["expected_duration_seconds"].is_null() && h100["gpu_hours"].is_null(), "{small:#}");

    let long = estimate(&env, body(json!({"seq_len": 32768, "sft_method": "full"}))).await;
    let (cpu, h100) = (class(&long, "cpu"), class(&long, "cuda:H100-80GB"));
    assert_eq!((long["fits"].as_bool(), cpu["fits"].as_bool(), h100["fits"].as_bool()), (Some(true), Some(false), Some(true)), "{long:#}");
    assert!(cpu["reason"].as_str().unwrap().contains("these runners have 8.00 GiB"), "{cpu}");
    assert_eq!(cpu["needed_memory_bytes"], long["requirements"]["cpu_memory_bytes"]);

    // A CUDA-only job: the CPU class does not fit it, whatever its memory.
    let cuda = estimate(&env, body(json!({"device": "cuda"}))).await;
    assert_eq!(class(&cuda, "cpu")["reason"], "The job asks for device 'cuda'; these runners are cpu.");

    // A job on 3 ranks: one rank's memory; only a class with 3 runners fits it. Offloaded shards are
    // host memory, reported beside the GPU's.
    let gang = estimate(&env, body(json!({"sft_method": "full", "world_size": 3, "gradient_accumulation_steps": 3, "fully_sharded": true, "cpu_offload": true}))).await;
    assert_eq!((gang["world_size"].as_u64(), gang["requirements"]["world_size"].as_u64()), (Some(3), Some(3)));
    assert_eq!(class(&gang, "cuda:H100-80GB")["reason"], "The job trains on 3 runners at once, one rank each; this class has 2. Lower world_size, or add runners.");
    // Runners of one device kind form a gang: 2 GPUs and a CPU host are not 3 ranks.
    assert_eq!((gang["fits"].as_bool(), gang["reason"].as_str().map(|r| r.starts_with("Waiting for 3 runners that fit the job"))), (Some(false), Some(true)), "{gang:#}");
    let cuda_memory = &gang["memory"]["cuda"];
    assert!(cuda_memory["offloaded_bytes"].as_i64().unwrap() > 0 && long["memory"]["cuda"]["offloaded_bytes"] == 0, "{cuda_memory:#}");

    // Nothing was created, and no quota slot was taken.
    let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs").fetch_one(&pool).await.unwrap();
    assert_eq!(jobs, 0);
}

/// `world_size: "auto"`: the API chooses the fewest ranks whose one rank fits as many registered
/// runners, refuses with the reason when there is none to size against, and the created job carries
/// the number.
#[sqlx::test(migrations = "../migrations")]
async fn an_auto_world_size_is_the_fewest_ranks_that_fit(pool: PgPool) {
    let env = TestEnv::start(pool.clone()).await;
    let file = env.upload_demo_dataset().await;
    let file_id = file["id"].as_str().unwrap();
    env.settled_file(file_id).await;
    let body = |moe: Value| json!({"model": "moetune/tiny-mixtral", "training_file": file_id, "method": {"type": "moe_sft_qat", "moe_sft_qat": moe}});
    let sharded = |world: Value| body(json!({"sft_method": "full", "device": "cpu", "fully_sharded": true, "gradient_accumulation_steps": 8, "world_size": world}));

    let none = error_of(env.post_json("/v1/fine_tuning/jobs/estimate", sharded(json!("auto"))).await, 400).await;
    assert_eq!(none["param"], "method.moe_sft_qat.world_size");
    assert!(none["message"].as_str().unwrap().contains("none is registered"), "{none}");
    for bad in [json!(0), json!("four")] {
        let refused = error_of(env.post_json("/v1/fine_tuning/jobs/estimate", sharded(bad)).await, 400).await;
        assert!(refused["message"].as_str().unwrap().contains("`world_size` takes \"auto\" or an integer from 1 to 64"), "{refused}");
    }

    // Four CPU runners with memory between what one of 4 ranks and one of 2 ranks needs: 4 ranks.
    let need = |estimate: Value| estimate["requirements"]["cpu_memory_bytes"].as_i64().unwrap();
    let (two, four) = (need(estimate(&env, sharded(json!(2))).await), need(estimate(&env, sharded(json!(4))).await));
    assert!(four < two, "{four} vs {two}");
    for i in 0..4 {
        register(&env, &format!("cpu-{i}"), "cpu", "", (two + four) / 2).await;
    }
    let auto = estimate(&env, sharded(json!("auto"))).await;
    assert_eq!((auto["world_size"].as_u64(), auto["requirements"]["world_size"].as_u64(), auto["fits"].as_bool()), (Some(4), Some(4), Some(true)), "{auto:#}");
    // A job that fits one runner whole takes one.
    let small = estimate(&env, body(json!({"world_size": "auto", "device": "cpu", "seq_len": 64}))).await;
    assert_eq!(small["world_size"], 1, "{small:#}");

    // The created job carries the chosen number, in its options and its requirements.
    let created = env.post_json("/v1/fine_tuning/jobs", sharded(json!("auto"))).await;
    assert_eq!(created.status(), 200);
    let job: Value = created.json().await.unwrap();
    assert_eq!((job["method"]["moe_sft_qat"]["world_size"].as_u64(), job["requirements"]["world_size"].as_u64()), (Some(4), Some(4)), "{job:#}");
}

#[sqlx::test(migrations = "../migrations")]
async fn an_estimate_is_refused_as_creation_would_be(pool: PgPool) {
    let env = TestEnv::start(pool).await;
    let file = env.upload_demo_dataset().await;
    let file_id = file["id"].as_str().unwrap().to_string();
    env.settled_file(&file_id).await;
    let refused = |body: Value| async { env.post_json("/v1/fine_tuning/jobs/estimate", body).await };

    let unknown = error_of(refused(json!({"model": "no/such-model", "training_file": file_id})).await, 400).await;
    assert_eq!((unknown["code"].as_str(), unknown["param"].as_str()), (Some("model_not_found"), Some("model")));
    let missing = error_of(refused(json!({"model": "moetune/tiny-mixtral", "training_file": "file-nope"})).await, 400).await;
    assert_eq!((missing["code"].as_str(), missing["param"].as_str()), (Some("file_not_found"), Some("training_file")));
    let bad = json!({"model": "moetune/tiny-mixtral", "training_file": file_id, "hyperparameters": {"batch_size": 0}});
    assert_eq!(error_of(refused(bad).await, 400).await["param"], "hyperparameters.batch_size");
    let unknown_field = json!({"model": "moetune/tiny-mixtral", "training_file": file_id, "n_epoch": 3});
    assert_eq!(refused(unknown_field).await.status(), 400);

    // Another tenant's file is not there for this one.
    let other = env.token_for("other-tenant", None).await;
    let response = env.http.post(env.url("/v1/fine_tuning/jobs/estimate")).bearer_auth(&other).json(&json!({"model": "moetune/tiny-mixtral", "training_file": file_id})).send().await.unwrap();
    assert_eq!(error_of(response, 400).await["code"], "file_not_found");

    // Estimating takes the scope creating does.
    let reader = env.token_for("tenant-a", Some(&[Scope::JobsRead, Scope::FilesRead])).await;
    let response = env.http.post(env.url("/v1/fine_tuning/jobs/estimate")).bearer_auth(&reader).json(&json!({"model": "moetune/tiny-mixtral", "training_file": file_id})).send().await.unwrap();
    assert_eq!(response.status(), 403);
}
