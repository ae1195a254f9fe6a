//! Nothing is lost when the pieces around the runners fail: with the API, the scheduler and two
//! runners as separate processes, Redis loses every key of the deployment, and the scheduler and the
//! API are killed (SIGKILL) and restarted, all while jobs are queued and running. Every job completes.

use std::time::Duration;

use moetune_e2e::{free_port, spawn_api, spawn_runner, spawn_scheduler, TestEnv};
use redis::AsyncCommands;
use serde_json::{json, Value};
use sqlx::PgPool;

#[sqlx::test(migrations = "../migrations")]
async fn redis_loss_and_api_and_scheduler_crashes_lose_no_job(pool: PgPool) {
    // The in-process API of TestEnv only prepares the bucket, tenant and token.
    let env = TestEnv::start(pool.clone()).await;
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let api = spawn_api(&env, port).await;
    let scheduler = spawn_scheduler(&env);
    let _runners = [spawn_runner(&env, "steady-1"), spawn_runner(&env, "steady-2")];

    let dataset = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/demo/finance-alpaca-mini.jsonl")).unwrap();
    let form = reqwest::multipart::Form::new().text("purpose", "fine-tune").part("file", reqwest::multipart::Part::bytes(dataset).file_name("finance.jsonl"));
    let file: Value = env.http.post(format!("{base}/v1/files")).bearer_auth(&env.token).multipart(form).send().await.unwrap().json().await.unwrap();
    let mut jobs = Vec::new();
    for seed in 0..3 {
        let body = json!({"model": "moetune/tiny-mixtral", "training_file": file["id"], "seed": seed, "hyperparameters": {"batch_size": 8},
            "method": {"type": "moe_sft_qat", "moe_sft_qat": {"max_steps": 30, "checkpoint_every_n_steps": 10, "qat": {"steps": 2}}}});
        let job: Value = env.http.post(format!("{base}/v1/fine_tuning/jobs")).bearer_auth(&env.token).json(&body).send().await.unwrap().json().await.unwrap();
        jobs.push(job["id"].as_str().expect("job created").to_string());
    }
    // Two run, one waits.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let training: i64 = sqlx::query_scalar("SELECT count(DISTINCT job_id) FROM job_events WHERE type = 'metrics'").fetch_one(&pool).await.unwrap();
        if training >= 2 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the jobs never started training");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Redis loses every key of this deployment (a FLUSHALL, scoped to the test's prefix so tests
    // running beside this one keep theirs): the queue, claims, assignments, heartbeats and the stream.
    let mut redis = redis::Client::open(env.config.redis_url.as_str()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis.keys(format!("{}:*", env.config.redis_prefix)).await.unwrap();
    assert!(!keys.is_empty());
    let _: () = redis.del(&keys).await.unwrap();
    // The scheduler and the API crash, and come back.
    drop(scheduler);
    drop(api);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _scheduler = spawn_scheduler(&env);
    let _api = spawn_api(&env, port).await;

    for id in &jobs {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
        let job = loop {
            let job: Value = env.http.get(format!("{base}/v1/fine_tuning/jobs/{id}")).bearer_auth(&env.token).send().await.unwrap().json().await.unwrap();
            if matches!(job["status"].as_str(), Some("succeeded" | "failed" | "cancelled")) {
                break job;
            }
            assert!(tokio::time::Instant::now() < deadline, "job {id} still {} after the failures", job["status"]);
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        assert_eq!(job["status"], "succeeded", "{job:#}");
        eprintln!("{id}: succeeded on attempt {}", job["attempt"]);
        let artifacts: Vec<&str> = job["artifacts"].as_array().unwrap().iter().map(|a| a["name"].as_str().unwrap()).collect();
        assert!(artifacts.contains(&"nvfp4/model.safetensors"), "{artifacts:?}");
        let completions: i64 = sqlx::query_scalar("SELECT count(*) FROM job_events WHERE job_id = $1 AND message = 'The job has successfully completed'")
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(completions, 1, "job {id} completed more than once");
    }
}

/// Four runners wait on the queue for one job: exactly one claims and runs it.
#[sqlx::test(migrations = "../migrations")]
async fn runners_racing_for_one_job_run_it_once(pool: PgPool) {
    let env = TestEnv::start(pool.clone()).await;
    let _scheduler = tokio::spawn(moetune_scheduler::run(env.scheduler_config(), pool.clone(), std::future::pending()));
    let _runners: Vec<_> = (1..=4).map(|i| spawn_runner(&env, &format!("racer-{i}"))).collect();
    // Let all four block on the queue before the job appears.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let file: Value = env.upload("fine-tune", "d.jsonl", b"{\"prompt\": \"2+2?\", \"completion\": \"4\"}\n".repeat(8)).await.json().await.unwrap();
    let body = json!({"model": "moetune/tiny-mixtral", "training_file": file["id"], "method": {"type": "moe_sft_qat", "moe_sft_qat": {"max_steps": 3, "qat": {"steps": 1}}}});
    let job: Value = env.post_json("/v1/fine_tuning/jobs", body).await.json().await.unwrap();
    let id = job["id"].as_str().unwrap();
    let job = env.wait_for_job(id, Duration::from_secs(120)).await;
    assert_eq!((job["status"].as_str(), job["attempt"].as_i64()), (Some("succeeded"), Some(1)), "{job:#}");
    let starts: Vec<String> = sqlx::query_scalar("SELECT message FROM job_events WHERE job_id = $1 AND message LIKE 'Job started on runner %'")
        .bind(id)
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(starts.len(), 1, "{starts:?}");
}

/// A cancel the API could not pass on to Redis (it commits the cancel in Postgres first): the
/// reconciler sets the flag later and the runner stops, instead of training to the end for nothing.
#[sqlx::test(migrations = "../migrations")]
async fn a_cancel_redis_missed_is_delivered_by_the_reconciler(pool: PgPool) {
    let env = TestEnv::start(pool.clone()).await;
    let _scheduler = spawn_scheduler(&env);
    let _runner = spawn_runner(&env, "cancel-runner");
    let file = env.upload_demo_dataset().await;
    let body = json!({"model": "moetune/tiny-mixtral", "training_file": file["id"], "hyperparameters": {"batch_size": 4},
        "method": {"type": "moe_sft_qat", "moe_sft_qat": {"max_steps": 5000, "qat": {"steps": 0}}}});
    let job: Value = env.post_json("/v1/fine_tuning/jobs", body).await.json().await.unwrap();
    let id = job["id"].as_str().unwrap().to_string();
    env.wait_for_steps(&id, 2).await;
    // What the API's cancel commits, without the Redis half.
    let mut tx = pool.begin().await.unwrap();
    moetune_domain::store::transition(&mut tx, &moetune_types::JobId::parse(&id).unwrap(), 1, moetune_types::JobStatus::Cancelled, "Job cancelled".into()).await.unwrap();
    tx.commit().await.unwrap();

    let flag = moetune_types::RedisKeys::new(&env.config.redis_prefix).cancelled(&id);
    let mut redis = env.queue().await.connection();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !redis.exists::<_, bool>(&flag).await.unwrap() {
        assert!(tokio::time::Instant::now() < deadline, "the reconciler never set the cancel flag");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The runner stops at its next step and lets the job go (it would otherwise train 5,000 steps).
    let claimed = moetune_types::RedisKeys::new(&env.config.redis_prefix).claimed("cancel-runner");
    while redis.llen::<_, i64>(&claimed).await.unwrap() > 0 {
        assert!(tokio::time::Instant::now() < deadline, "the runner kept the cancelled job");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Postgres goes away while a job streams metrics and comes back: the scheduler waits with the entry it
/// could not apply instead of dropping it or the rest of its batch, and every step is recorded once.
#[sqlx::test(migrations = "../migrations")]
async fn events_sent_while_postgres_is_down_are_applied_when_it_is_back(pool: PgPool) {
    let env = TestEnv::start(pool.clone()).await;
    let proxy = moetune_e2e::TcpProxy::start("127.0.0.1:5432").await;
    let database = pool.connect_options().get_database().unwrap().to_string();
    let through_proxy = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(60))
        .connect(&format!("postgres://postgres:postgres@127.0.0.1:{}/{database}", proxy.port))
        .await
        .unwrap();
    tokio::spawn(moetune_scheduler::run(env.scheduler_config(), through_proxy, std::future::pending()));
    let _runner = spawn_runner(&env, "steady");
    let file = env.upload_demo_dataset().await;
    let body = json!({"model": "moetune/tiny-mixtral", "training_file": file["id"], "hyperparameters": {"batch_size": 4},
        "method": {"type": "moe_sft_qat", "moe_sft_qat": {"max_steps": 80, "checkpoint_every_n_steps": 0, "validation_split": 0.0, "qat": {"steps": 2}}}});
    let job: Value = env.post_json("/v1/fine_tuning/jobs", body).await.json().await.unwrap();
    let id = job["id"].as_str().unwrap().to_string();
    env.wait_for_steps(&id, 3).await;

    proxy.cut();
    let steps = || sqlx::query_scalar::<_, i64>("SELECT count(*) FROM job_events WHERE job_id = $1 AND type = 'metrics'").bind(&id).fetch_one(&pool);
    let at_cut = steps().await.unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(steps().await.unwrap() <= at_cut + 2, "nothing is applied while the scheduler cannot reach Postgres");
    proxy.restore();

    let job = env.wait_for_job(&id, Duration::from_secs(120)).await;
    assert_eq!(job["status"], "succeeded", "{job:#}");
    let recorded: Vec<i64> = sqlx::query_scalar("SELECT (data->>'step')::bigint FROM job_events WHERE job_id = $1 AND type = 'metrics' AND data->>'stage' = 'sft' ORDER BY seq")
        .bind(&id)
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(recorded, (1..=80).collect::<Vec<i64>>(), "every SFT step recorded exactly once");
    let dead: i64 = env.queue().await.connection().xlen(moetune_types::RedisKeys::new(&env.config.redis_prefix).dead_events()).await.unwrap();
    assert_eq!(dead, 0, "an outage dead-letters nothing");
}
