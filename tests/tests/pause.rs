//! Pause and resume: a job not yet started is withdrawn at once; a running one checkpoints at its next
//! step and frees its runner; resuming continues from that checkpoint with exactly the losses an
//! uninterrupted run has.

use std::collections::BTreeMap;
use std::time::Duration;

use moetune_e2e::{spawn_runner, TestEnv};
use redis::AsyncCommands;
use serde_json::{json, Value};
use sqlx::PgPool;

const GOOD: &str = "{\"prompt\": \"2+2?\", \"completion\": \"4\"}\n{\"prompt\": \"3+3?\", \"completion\": \"6\"}\n";

async fn post(env: &TestEnv, path: &str) -> (u16, Value) {
    let response = env.post_json(path, json!({})).await;
    (response.status().as_u16(), response.json().await.unwrap())
}

#[sqlx::test(migrations = "../migrations")]
async fn queued_job_pauses_at_once_and_resumes_onto_the_queue(pool: PgPool) {
    let env = TestEnv::start(pool).await;
    let keys = moetune_types::RedisKeys::new(&env.config.redis_prefix);
    let mut redis = redis::Client::open(env.config.redis_url.as_str()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let file: Value = env.upload("fine-tune", "good.jsonl", GOOD.into()).await.json().await.unwrap();
    let body = json!({"model": "moetune/tiny-mixtral", "training_file": file["id"]});
    let job: Value = env.post_json("/v1/fine_tuning/jobs", body.clone()).await.json().await.unwrap();
    let id = job["id"].as_str().unwrap().to_string();
    assert_eq!((job["status"].as_str(), job["attempt"].as_i64()), (Some("queued"), Some(1)));

    // Paused: off the queue, no assignment to claim, and a new attempt fences off any runner that had it.
    let (status, paused) = post(&env, &format!("/v1/fine_tuning/jobs/{id}/pause")).await;
    assert_eq!(status, 200, "{paused}");
    assert_eq!((paused["status"].as_str(), paused["attempt"].as_i64()), (Some("paused"), Some(2)));
    assert!(env.waiting_jobs().await.is_empty());
    assert!(!redis.exists::<_, bool>(keys.assignment(&id)).await.unwrap());
    assert_eq!(redis.get::<_, Option<i32>>(keys.pause(&id)).await.unwrap(), Some(1), "the pause names the fenced attempt");
    let (status, error) = post(&env, &format!("/v1/fine_tuning/jobs/{id}/pause")).await;
    assert_eq!((status, error["error"]["code"].as_str()), (409, Some("job_not_pausable")));

    // A paused job holds no concurrent-job slot; resuming takes one again.
    let quota = json!({"name": "acme", "max_concurrent_jobs": 1});
    let set = env.http.post(env.url("/v1/admin/tenants")).bearer_auth(env.admin_token().await).json(&quota).send().await.unwrap();
    assert_eq!(set.status(), 200);
    let other: Value = env.post_json("/v1/fine_tuning/jobs", body).await.json().await.unwrap();
    assert_eq!(other["status"], "queued", "{other}");
    let (status, error) = post(&env, &format!("/v1/fine_tuning/jobs/{id}/resume")).await;
    assert_eq!((status, error["error"]["code"].as_str()), (429, Some("quota_exceeded")));
    let (status, _) = post(&env, &format!("/v1/fine_tuning/jobs/{}/cancel", other["id"].as_str().unwrap())).await;
    assert_eq!(status, 200);

    let (status, resumed) = post(&env, &format!("/v1/fine_tuning/jobs/{id}/resume")).await;
    assert_eq!(status, 200, "{resumed}");
    assert_eq!((resumed["status"].as_str(), resumed["attempt"].as_i64()), (Some("queued"), Some(3)));
    assert_eq!(env.waiting_jobs().await, [id.clone()]);
    let assignment: String = redis.get(keys.assignment(&id)).await.unwrap();
    assert_eq!(serde_json::from_str::<Value>(&assignment).unwrap()["attempt"], 3);
    let (status, error) = post(&env, &format!("/v1/fine_tuning/jobs/{id}/resume")).await;
    assert_eq!((status, error["error"]["code"].as_str()), (409, Some("job_not_resumable")));

    let events = env.get_json(&format!("/v1/fine_tuning/jobs/{id}/events")).await;
    let messages: Vec<&str> = events["data"].as_array().unwrap().iter().map(|e| e["message"].as_str().unwrap()).collect();
    for expected in ["Job paused before it started", "Job resumed as attempt 3", "Files validated, job queued"] {
        assert!(messages.contains(&expected), "{expected:?} not in {messages:?}");
    }

    // Paused jobs can be cancelled; finished ones cannot be paused. Another tenant's id is a 404.
    post(&env, &format!("/v1/fine_tuning/jobs/{id}/pause")).await;
    let (status, cancelled) = post(&env, &format!("/v1/fine_tuning/jobs/{id}/cancel")).await;
    assert_eq!((status, cancelled["status"].as_str()), (200, Some("cancelled")));
    let (status, error) = post(&env, &format!("/v1/fine_tuning/jobs/{id}/pause")).await;
    assert_eq!((status, error["error"]["code"].as_str()), (409, Some("job_not_pausable")));
    let stranger = env.token_for("globex", None).await;
    for action in ["pause", "resume", "cancel"] {
        let response = env.http.post(env.url(&format!("/v1/fine_tuning/jobs/{id}/{action}"))).bearer_auth(&stranger).json(&json!({})).send().await.unwrap();
        assert_eq!(response.status(), 404, "{action}");
    }
}

/// Per-step training loss of each stage, from every attempt's metrics events.
async fn losses(pool: &PgPool, id: &str) -> BTreeMap<(String, u64), f64> {
    let rows: Vec<(Value,)> = sqlx::query_as("SELECT data FROM job_events WHERE job_id = $1 AND type = 'metrics' ORDER BY seq")
        .bind(id)
        .fetch_all(pool)
        .await
        .unwrap();
    rows.into_iter()
        .map(|(d,)| ((d["stage"].as_str().unwrap().to_string(), d["step"].as_u64().unwrap()), d["train_loss"].as_f64().unwrap()))
        .collect()
}

async fn wait_for_status(env: &TestEnv, id: &str, want: &str, timeout: Duration) -> Value {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let job = env.get_json(&format!("/v1/fine_tuning/jobs/{id}")).await;
        if job["status"] == want {
            return job;
        }
        assert!(tokio::time::Instant::now() < deadline, "job {id} is {} after {timeout:?}, not {want}", job["status"]);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn running_job_pauses_at_a_checkpoint_and_resumes_with_identical_losses(pool: PgPool) {
    let env = TestEnv::start(pool.clone()).await;
    let _scheduler = tokio::spawn(moetune_scheduler::run(env.scheduler_config(), pool.clone(), std::future::pending()));
    let _runner = spawn_runner(&env, "pausable-runner");
    let file: Value = env.upload_demo_dataset().await;
    // No periodic checkpoints: the pause's own checkpoint is the only one the resumed attempt can use.
    let body = json!({"model": "moetune/tiny-mixtral", "training_file": file["id"], "seed": 11, "hyperparameters": {"batch_size": 8},
        "method": {"type": "moe_sft_qat", "moe_sft_qat": {"learning_rate": 1e-3, "max_steps": 80, "checkpoint_every_n_steps": 0,
            "qat": {"steps": 4}, "monitor": {"every_n_steps": 20}}}});
    let job: Value = env.post_json("/v1/fine_tuning/jobs", body.clone()).await.json().await.unwrap();
    let id = job["id"].as_str().unwrap().to_string();
    env.wait_for_steps(&id, 5).await;

    let (status, pausing) = post(&env, &format!("/v1/fine_tuning/jobs/{id}/pause")).await;
    assert_eq!((status, pausing["status"].as_str()), (200, Some("pausing")), "{pausing}");
    let (status, error) = post(&env, &format!("/v1/fine_tuning/jobs/{id}/resume")).await;
    assert_eq!((status, error["error"]["code"].as_str()), (409, Some("job_not_resumable")));
    wait_for_status(&env, &id, "paused", Duration::from_secs(60)).await;
    let before = losses(&pool, &id).await;
    let (stage, step) = before.keys().last().unwrap().clone();
    let checkpoints = env.get_json(&format!("/v1/fine_tuning/jobs/{id}/checkpoints")).await;
    assert_eq!(checkpoints["data"][0]["name"], format!("{stage}-step-{step:06}"), "{checkpoints}");
    // Paused means let go: no more steps arrive.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(losses(&pool, &id).await, before);

    let (status, resumed) = post(&env, &format!("/v1/fine_tuning/jobs/{id}/resume")).await;
    assert_eq!((status, resumed["attempt"].as_i64()), (200, Some(2)), "{resumed}");
    let job = env.wait_for_job(&id, Duration::from_secs(240)).await;
    assert_eq!(job["status"], "succeeded", "{job:#}");
    let first_resumed: i64 = sqlx::query_scalar("SELECT min((data->>'step')::bigint) FROM job_events WHERE job_id = $1 AND attempt = 2 AND type = 'metrics' AND data->>'stage' = $2")
        .bind(&id)
        .bind(&stage)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(first_resumed as u64, step + 1, "attempt 2 did not continue from the pause");

    // The same job without a pause, on the same runner: every loss of every step is identical.
    let twin: Value = env.post_json("/v1/fine_tuning/jobs", body).await.json().await.unwrap();
    let twin_job = env.wait_for_job(twin["id"].as_str().unwrap(), Duration::from_secs(240)).await;
    assert_eq!(twin_job["status"], "succeeded");
    let (paused_run, straight_run) = (losses(&pool, &id).await, losses(&pool, twin["id"].as_str().unwrap()).await);
    // (The monitor's alerts and learning-rate decays, which this run has, carry over the pause too.)
    assert!(paused_run.len() >= 80, "{:?}", paused_run.keys());
    assert_eq!(job["stop_reason"], twin_job["stop_reason"]);
    assert_eq!(paused_run, straight_run);
}

/// The routing drift of every monitor check of one attempt, with whether it crossed the guardrail.
async fn drift_checks(env: &TestEnv, id: &str, attempt: i64) -> Vec<(u64, f64, bool)> {
    let page = env.get_json(&format!("/v1/fine_tuning/jobs/{id}/expert_usage?limit=100")).await;
    let mut checks: Vec<(u64, f64, bool)> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["attempt"] == attempt && c["stage"] == "sft")
        .map(|c| (c["step"].as_u64().unwrap(), c["routing_drift"].as_f64().expect("drift measured"), c["drift_exceeded"].as_bool().unwrap()))
        .collect();
    checks.reverse(); // oldest first
    checks
}

#[sqlx::test(migrations = "../migrations")]
async fn the_routing_drift_guardrail_pauses_at_a_checkpoint_and_a_resume_accepts_the_drift(pool: PgPool) {
    let env = TestEnv::start(pool.clone()).await;
    let _scheduler = tokio::spawn(moetune_scheduler::run(env.scheduler_config(), pool.clone(), std::future::pending()));
    let _runner = spawn_runner(&env, "guarded-runner");
    let file: Value = env.upload_demo_dataset().await;
    // LoRA at this rate moves ~3% of the validation tokens to other experts by step 5, ~8% by step 20.
    let max = 0.04;
    let body = json!({"model": "moetune/tiny-mixtral", "training_file": file["id"], "seed": 5, "hyperparameters": {"batch_size": 8},
        "method": {"type": "moe_sft_qat", "moe_sft_qat": {"learning_rate": 1e-4, "max_steps": 20, "checkpoint_every_n_steps": 0,
            "qat": {"steps": 5}, "monitor": {"every_n_steps": 5, "max_routing_drift": max}}}});
    let job: Value = env.post_json("/v1/fine_tuning/jobs", body).await.json().await.unwrap();
    let id = job["id"].as_str().unwrap().to_string();

    // Training moves the routing away from the base's: the first check over the guardrail pauses the job.
    let paused = wait_for_status(&env, &id, "paused", Duration::from_secs(180)).await;
    let first = drift_checks(&env, &id, 1).await;
    let &(step, drift, exceeded) = first.last().expect("monitor checks");
    assert!(exceeded && drift > max, "{first:?}");
    assert!(first[..first.len() - 1].iter().all(|&(_, d, e)| !e && d <= max), "{first:?}");
    let usage = env.get_json(&format!("/v1/fine_tuning/jobs/{id}/expert_usage?limit=1")).await;
    let latest = &usage["data"][0];
    assert_eq!((latest["object"].as_str(), latest["action"].as_str(), usage["has_more"].as_bool()), (Some("fine_tuning.job.expert_usage"), Some("paused"), Some(true)), "{usage:#}");
    for layer in latest["layers"].as_array().unwrap() {
        let shares: f64 = layer["shares"].as_array().unwrap().iter().map(|s| s.as_f64().unwrap()).sum();
        assert!((shares - 1.0).abs() < 1e-9, "{layer}");
        assert!((0.0..=1.0).contains(&layer["base_agreement"].as_f64().unwrap()), "{layer}");
    }
    let older = env.get_json(&format!("/v1/fine_tuning/jobs/{id}/expert_usage?limit=100&after={}", latest["id"].as_str().unwrap())).await;
    assert_eq!(older["data"].as_array().unwrap().len(), first.len() - 1, "{older:#}");
    let too_many = env.http.get(env.url(&format!("/v1/fine_tuning/jobs/{id}/expert_usage?limit=101"))).bearer_auth(&env.token).send().await.unwrap();
    assert_eq!(too_many.status(), 400);
    let stranger = env.token_for("globex", None).await;
    let hidden = env.http.get(env.url(&format!("/v1/fine_tuning/jobs/{id}/expert_usage"))).bearer_auth(&stranger).send().await.unwrap();
    assert_eq!(hidden.status(), 404, "another tenant's job");

    // Paused with the reason, a checkpoint of that step, and a monitor.alert webhook event.
    let events = env.get_json(&format!("/v1/fine_tuning/jobs/{id}/events?limit=100")).await;
    let reason = events["data"].as_array().unwrap().iter().find_map(|e| e["message"].as_str().filter(|m| m.starts_with("Job paused at"))).unwrap().to_string();
    assert!(reason.contains("monitor.max_routing_drift") && reason.contains(&format!("sft step {step}")), "{reason}");
    let pausing = format!("The routing-drift guardrail is pausing the job at sft step {step}");
    assert!(events["data"].as_array().unwrap().iter().any(|e| e["message"] == pausing.as_str()), "pausing from the check's event on");
    let checkpoints = env.get_json(&format!("/v1/fine_tuning/jobs/{id}/checkpoints")).await;
    assert_eq!(checkpoints["data"][0]["name"], format!("sft-step-{step:06}"), "{checkpoints}");
    let alert: Value = sqlx::query_scalar("SELECT payload FROM webhook_events WHERE type = 'monitor.alert' AND payload->'data'->>'id' = $1")
        .bind(&id)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!((alert["data"]["kind"].as_str(), alert["data"]["step"].as_u64()), (Some("routing_drift"), Some(step)), "{alert}");
    assert_eq!(paused["attempt"], 1);

    // Resumed: it continues after the checkpoint, and pauses again only past the accepted drift + max.
    let (status, resumed) = post(&env, &format!("/v1/fine_tuning/jobs/{id}/resume")).await;
    assert_eq!(status, 200, "{resumed}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(240);
    let settled = loop {
        let job = env.get_json(&format!("/v1/fine_tuning/jobs/{id}")).await;
        if job["attempt"] == 2 && ["paused", "succeeded", "failed"].contains(&job["status"].as_str().unwrap()) {
            break job;
        }
        assert!(tokio::time::Instant::now() < deadline, "{job:#}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_ne!(settled["status"], "failed", "{settled:#}");
    let first_resumed: i64 = sqlx::query_scalar("SELECT min((data->>'step')::bigint) FROM job_events WHERE job_id = $1 AND attempt = 2 AND type = 'metrics' AND data->>'stage' = 'sft'")
        .bind(&id)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(first_resumed as u64, step + 1);
    let second = drift_checks(&env, &id, 2).await;
    assert!(!second.is_empty());
    for &(_, d, e) in &second {
        assert_eq!(e, d > drift + max, "accepted {drift}, checks {second:?}");
    }
    assert_eq!(settled["status"] == "paused", second.iter().any(|&(_, _, e)| e), "{settled:#} {second:?}");
}
