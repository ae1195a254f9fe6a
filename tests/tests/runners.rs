//! The runner registry and draining, with real runner processes: runners publish their capabilities,
//! operators see idle/busy/draining/lost, and a drained runner finishes its job but takes no new one.

use std::time::Duration;

use moetune_e2e::{runner_command, KillOnDrop, TestEnv};
use serde_json::{json, Value};
use sqlx::PgPool;

struct Operator<'a> {
    env: &'a TestEnv,
    token: String,
}

impl Operator<'_> {
    async fn get(&self, path: &str) -> (u16, Value) {
        let response = self.env.http.get(self.env.url(path)).bearer_auth(&self.token).send().await.unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }

    async fn post(&self, path: &str) -> (u16, Value) {
        let response = self.env.http.post(self.env.url(path)).bearer_auth(&self.token).json(&json!({})).send().await.unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }

    /// Polls `GET /v1/runners/{id}` until `check` holds.
    async fn wait_for(&self, id: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let (status, runner) = self.get(&format!("/v1/runners/{id}")).await;
            if status == 200 && check(&runner) {
                return runner;
            }
            assert!(tokio::time::Instant::now() < deadline, "runner {id} never became {what}: {runner}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn runner_of(job: &Value, events: &Value) -> String {
    let started = events["data"].as_array().unwrap().iter().find_map(|e| e["message"].as_str()?.strip_prefix("Job started on runner ").map(String::from));
    started.unwrap_or_else(|| panic!("no start event for {}", job["id"])).split(' ').next().unwrap().to_string()
}

#[sqlx::test(migrations = "../migrations")]
async fn runners_register_capabilities_and_drain(pool: PgPool) {
    let env = TestEnv::start(pool.clone()).await;
    let _scheduler = tokio::spawn(moetune_scheduler::run(env.scheduler_config(), pool.clone(), std::future::pending()));
    let ops = Operator { env: &env, token: env.admin_token().await };
    let _east = KillOnDrop(runner_command(&env, "east").env("MOETUNE_LABELS__ZONE", "east").env("MOETUNE_GPU_MODEL", "none").spawn().unwrap());
    let west = KillOnDrop(runner_command(&env, "west").spawn().unwrap());
    let east = ops.wait_for("east", "idle", |r| r["state"] == "idle").await;
    ops.wait_for("west", "idle", |r| r["state"] == "idle").await;
    let capabilities = &east["capabilities"];
    assert_eq!((capabilities["device"].as_str(), capabilities["gpu_count"].as_i64()), (Some("cpu"), Some(0)), "{east}");
    assert_eq!(capabilities["labels"], json!({"zone": "east"}));
    assert_eq!(capabilities["gpu_model"], "none");
    assert!(capabilities["host_memory_bytes"].as_i64().unwrap() > 1 << 30, "{east}");
    assert_eq!(capabilities["methods"], json!(["lora", "full"]));
    let (status, listed) = ops.get("/v1/runners").await;
    assert_eq!(status, 200);
    let ids: Vec<&str> = listed["data"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["east", "west"]);

    // Operators only: a tenant token gets 403, an unknown runner 404.
    let tenant = env.http.get(env.url("/v1/runners")).bearer_auth(&env.token).send().await.unwrap();
    assert_eq!(tenant.status(), 403);
    assert_eq!(ops.post("/v1/runners/nobody/drain").await.0, 404);

    // A long job makes one runner busy; draining it lets the job go on but sends new work elsewhere.
    let file: Value = env.upload_demo_dataset().await;
    let long = json!({"model": "moetune/tiny-mixtral", "training_file": file["id"], "hyperparameters": {"batch_size": 16},
                      "method": {"type": "moe_sft_qat", "moe_sft_qat": {"max_steps": 100000, "checkpoint_every_n_steps": 0}}});
    let long: Value = env.post_json("/v1/fine_tuning/jobs", long).await.json().await.unwrap();
    let long_id = long["id"].as_str().unwrap().to_string();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let busy = loop {
        let (_, listed) = ops.get("/v1/runners").await;
        if let Some(busy) = listed["data"].as_array().unwrap().iter().find(|r| r["state"] == "busy") {
            break busy.clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "no runner took the job: {listed}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(busy["current_jobs"], json!([long_id]));
    let (busy_id, other_id) = if busy["id"] == "east" { ("east", "west") } else { ("west", "east") };
    let (status, drained) = ops.post(&format!("/v1/runners/{busy_id}/drain")).await;
    assert_eq!((status, drained["state"].as_str(), drained["current_jobs"].clone()), (200, Some("draining"), json!([long_id])));

    let short = json!({"model": "moetune/tiny-mixtral", "training_file": file["id"],
                       "method": {"type": "moe_sft_qat", "moe_sft_qat": {"max_steps": 2, "qat": {"steps": 1}}}});
    for _ in 0..2 {
        let job: Value = env.post_json("/v1/fine_tuning/jobs", short.clone()).await.json().await.unwrap();
        let job = env.wait_for_job(job["id"].as_str().unwrap(), Duration::from_secs(120)).await;
        assert_eq!(job["status"], "succeeded", "{job:#}");
        let events = env.get_json(&format!("/v1/fine_tuning/jobs/{}/events?limit=100", job["id"].as_str().unwrap())).await;
        assert_eq!(runner_of(&job, &events), other_id, "a drained runner took new work");
    }
    let still = env.get_json(&format!("/v1/fine_tuning/jobs/{long_id}")).await;
    assert_eq!(still["status"], "running", "draining stopped the job it held");

    // Its job over, a drained runner stays idle-but-draining; undrained, it takes work again.
    env.post_json(&format!("/v1/fine_tuning/jobs/{long_id}/cancel"), json!({})).await;
    ops.wait_for(busy_id, "draining with no job", |r| r["state"] == "draining" && r["current_jobs"] == json!([])).await;
    let (status, undrained) = ops.post(&format!("/v1/runners/{busy_id}/undrain")).await;
    assert_eq!((status, undrained["state"].as_str()), (200, Some("idle")));

    // A runner that stops heartbeating is shown as lost, with what it declared.
    drop(west);
    let lost = ops.wait_for("west", "lost", |r| r["state"] == "lost").await;
    assert_eq!(lost["capabilities"]["runner_id"], "west");
}

/// A runner with its own Redis user (`moetune-scheduler runner-credentials`) runs a job end to end, and
/// that user can touch nothing beyond what a runner needs: not another runner's claims, not job
/// assignments (read-only), not admin commands.
#[sqlx::test(migrations = "../migrations")]
async fn a_runner_with_its_own_redis_user_runs_jobs_and_nothing_else(pool: PgPool) {
    let env = TestEnv::start(pool.clone()).await;
    let _scheduler = tokio::spawn(moetune_scheduler::run(env.scheduler_config(), pool.clone(), std::future::pending()));
    let queue = env.queue().await;
    let password = uuid::Uuid::new_v4().simple().to_string();
    let user = moetune_domain::registry::create_runner_user(&queue, &moetune_types::RunnerId::parse("locked").unwrap(), &password).await.unwrap();
    let url = format!("redis://{user}:{password}@127.0.0.1:6379");
    let _runner = KillOnDrop(runner_command(&env, "locked").env("MOETUNE_REDIS_URL", &url).spawn().unwrap());

    let file = env.upload_demo_dataset().await;
    let body = json!({"model": "moetune/tiny-mixtral", "training_file": file["id"], "method": {"type": "moe_sft_qat", "moe_sft_qat": {"max_steps": 3, "qat": {"steps": 1}}}});
    let job: Value = env.post_json("/v1/fine_tuning/jobs", body).await.json().await.unwrap();
    let done = env.wait_for_job(job["id"].as_str().unwrap(), Duration::from_secs(180)).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let events = env.get_json(&format!("/v1/fine_tuning/jobs/{}/events?limit=100", job["id"].as_str().unwrap())).await;
    assert_eq!(runner_of(&job, &events), "locked");

    let prefix = &env.config.redis_prefix;
    let mut redis = redis::Client::open(url.as_str()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let refused = |result: redis::RedisResult<redis::Value>| result.err().and_then(|e| e.code().map(String::from));
    let attempts: [(&str, Vec<String>); 5] = [
        ("LPUSH", vec![format!("{prefix}:runner:other:claimed"), "x".into()]),
        ("SET", vec![format!("{prefix}:job:{}", job["id"].as_str().unwrap()), "{}".into()]),
        ("DEL", vec![format!("{prefix}:queue:tenants")]),
        ("FLUSHALL", vec![]),
        ("KEYS", vec!["*".into()]),
    ];
    for (command, args) in attempts {
        let result = redis::cmd(command).arg(&args).query_async(&mut redis).await;
        assert_eq!(refused(result).as_deref(), Some("NOPERM"), "{command} {args:?} must be refused");
    }
    let _: () = redis::cmd("ACL").arg("DELUSER").arg(&user).query_async(&mut queue.connection()).await.unwrap();
}
