//! Placement: runners take jobs in fair-share order, a tenant's jobs by priority then age, and only
//! jobs they fit (device kind, estimated training memory); a job no registered runner fits waits in
//! `queued` with the reason on the job.

use std::time::Duration;

use moetune_e2e::{runner_command, KillOnDrop, TestEnv};
use moetune_domain::JobQueue;
use moetune_types::{DeviceRequest, JobAssignment, JobId, JobRequirements, Placement, RunnerId, TrainingSpec};
use serde_json::{json, Value};
use sqlx::PgPool;

fn assignment(job: &str, tenant: &str, priority: i16, created_at_ms: i64, device: DeviceRequest, memory_bytes: i64) -> JobAssignment {
    JobAssignment {
        job_id: job_id(job),
        attempt: 1,
        spec: TrainingSpec { model: "m".into(), n_epochs: 1, batch_size: 1, seed: 0, moe: Default::default(), routing_profile: None },
        bucket: "b".into(),
        training_file_key: "k".into(),
        validation_file_key: None,
        checkpoint_prefix: String::new(),
        resume_from: None,
        artifact_prefix: String::new(),
        model_location: None,
        placement: Placement { tenant: tenant.into(), priority, created_at_ms, requirements: JobRequirements { device, memory_bytes, ..Default::default() } },
    }
}

/// Jobs here are named by what follows `ftjob-`.
fn job_id(name: &str) -> JobId {
    JobId::parse(&format!("ftjob-{name}")).unwrap()
}

fn runner_id(name: &str) -> RunnerId {
    RunnerId::parse(name).unwrap()
}

async fn claim(queue: &JobQueue, runner: &str, device: &str, memory: i64) -> Option<String> {
    let job = queue.claim(&runner_id(runner), device, memory, 0).await.unwrap();
    job.map(|job| job.as_str().trim_start_matches("ftjob-").to_string())
}

/// The queue script alone, on real Redis: fairness between tenants, priority within one, fit.
#[sqlx::test(migrations = "../migrations")]
async fn claims_follow_fair_share_priority_and_fit(pool: PgPool) {
    let env = TestEnv::start(pool).await;
    let queue = env.queue().await;
    const GIB: i64 = 1 << 30;
    let auto = DeviceRequest::Auto;
    for (job, tenant, priority, at, device, memory) in [
        ("a1", "a", 0, 1, auto, GIB),
        ("a2", "a", 0, 2, auto, GIB),
        ("a3", "a", 0, 3, auto, GIB),
        ("a-urgent", "a", 9, 9, auto, GIB),
        ("b-gpu", "b", 0, 4, DeviceRequest::Cuda, GIB),
        ("b-big", "b", 0, 5, auto, 64 * GIB),
        ("b1", "b", 0, 6, auto, GIB),
    ] {
        queue.enqueue(&assignment(job, tenant, priority, at, device, memory)).await.unwrap();
    }
    // Neither tenant was served yet, neither holds a job: the tie goes by tenant id, so a first. Its
    // urgent job goes ahead of its older ones. Then b, now served least recently; a CPU runner with
    // 8 GiB fits b1 only (b-gpu needs CUDA, b-big 64 GiB).
    assert_eq!(claim(&queue, "cpu-1", "cpu", 8 * GIB).await.as_deref(), Some("a-urgent"));
    assert_eq!(claim(&queue, "cpu-2", "cpu", 8 * GIB).await.as_deref(), Some("b1"));
    // Both hold one job: round robin, so a.
    assert_eq!(claim(&queue, "cpu-3", "cpu", 8 * GIB).await.as_deref(), Some("a1"));
    // a holds two, b one: b, whose first job a CUDA runner with 80 GiB fits is b-gpu.
    assert_eq!(claim(&queue, "gpu-1", "cuda", 80 * GIB).await.as_deref(), Some("b-gpu"));
    // Two each; a was served before b's last claim: a.
    assert_eq!(claim(&queue, "gpu-2", "cuda", 80 * GIB).await.as_deref(), Some("a2"));
    // b holds fewer, but this runner fits none of b's jobs: a's next one.
    assert_eq!(claim(&queue, "cpu-4", "cpu", 8 * GIB).await.as_deref(), Some("a3"));
    assert_eq!(env.waiting_jobs().await, ["ftjob-b-big"]);

    // A requeued job goes back to its tenant's line, ahead of younger jobs; a runner that lets go of a
    // job lowers its tenant's count.
    let keys = moetune_types::RedisKeys::new(&env.config.redis_prefix);
    let mut redis = queue.connection();
    use redis::AsyncCommands;
    let held: Vec<String> = redis.lrange(keys.claimed("cpu-3"), 0, -1).await.unwrap();
    assert_eq!(held, ["ftjob-a1"]);
    queue.requeue_from(&runner_id("cpu-3"), &assignment("a1", "a", 0, 1, auto, GIB)).await.unwrap();
    assert!(redis.lrange::<_, Vec<String>>(keys.claimed("cpu-3"), 0, -1).await.unwrap().is_empty());
    let running: std::collections::HashMap<String, i64> = redis.hgetall(keys.running()).await.unwrap();
    assert_eq!(running, [("a".to_string(), 3), ("b".to_string(), 2)].into());
    assert_eq!(claim(&queue, "tiny", "cpu", GIB / 2).await, None, "every waiting job needs more than 0.5 GiB");
    assert_eq!(claim(&queue, "cpu-5", "cpu", 8 * GIB).await.as_deref(), Some("a1"));
    queue.forget(Some(&runner_id("cpu-5")), &job_id("a1")).await.unwrap();
    let running: std::collections::HashMap<String, i64> = redis.hgetall(keys.running()).await.unwrap();
    assert_eq!(running["a"], 3, "a1 was forgotten: a holds a-urgent, a2, a3");
    assert_eq!(claim(&queue, "cpu-big", "cpu", 128 * GIB).await.as_deref(), Some("b-big"));
    assert_eq!(claim(&queue, "cpu-6", "cpu", 8 * GIB).await, None);
    assert!(env.waiting_jobs().await.is_empty());
}

/// A job on a gang of runners is taken whole or not at all: with too few runners waiting it holds
/// none (a one-rank job behind it goes first), and once enough wait, the claiming runner is rank 0 and
/// the waiting ones are picked in the same step. Losing the job (requeue) takes it from every rank.
#[sqlx::test(migrations = "../migrations")]
async fn a_gang_is_claimed_whole_or_not_at_all(pool: PgPool) {
    let env = TestEnv::start(pool).await;
    let queue = env.queue().await;
    const GIB: i64 = 1 << 30;
    let gang_job = |name: &str, at: i64, world_size: u32| {
        let mut job = assignment(name, "t", 0, at, DeviceRequest::Auto, GIB);
        job.placement.requirements.world_size = world_size;
        job
    };
    queue.enqueue(&gang_job("pair", 1, 2)).await.unwrap();
    queue.enqueue(&gang_job("solo", 2, 1)).await.unwrap();
    let keys = moetune_types::RedisKeys::new(&env.config.redis_prefix);
    let mut redis = queue.connection();
    use redis::AsyncCommands;
    let reader = queue.connection();
    let held = |runner: &'static str| {
        let mut redis = reader.clone();
        let key = keys.claimed(runner);
        async move { redis.lrange::<_, Vec<String>>(key, 0, -1).await.unwrap() }
    };
    let take = |runner: &'static str, device: &'static str, memory: i64| {
        let queue = queue.clone();
        async move { queue.claim(&runner_id(runner), device, memory, 60_000).await.unwrap().map(|j| j.as_str().trim_start_matches("ftjob-").to_string()) }
    };

    // A one-runner job keeps the five-field ticket earlier queue scripts read; a gang's adds its size.
    let tickets: std::collections::HashMap<String, String> = redis.hgetall(keys.tickets()).await.unwrap();
    assert_eq!(tickets["ftjob-solo"].split(' ').count(), 5);
    assert!(tickets["ftjob-pair"].ends_with(" 2"), "{}", tickets["ftjob-pair"]);

    // Alone, the first runner cannot make up the pair: it takes the solo job behind it.
    assert_eq!(take("a", "cpu", 8 * GIB).await.as_deref(), Some("solo"));
    // The next finds nothing it can run alone: it holds nothing and waits.
    assert_eq!(take("b", "cpu", 8 * GIB).await, None);
    assert!(held("b").await.is_empty());
    assert_eq!(env.waiting_jobs().await, ["ftjob-pair"]);
    // Waiting runners that do not fit (another device kind, too little memory) are not picked.
    assert_eq!(take("gpu", "cuda", 80 * GIB).await, None);
    assert_eq!(take("tiny", "cpu", GIB / 2).await, None);
    // A fitting runner asks: it is rank 0, b (waiting) rank 1; nothing else moved.
    assert_eq!(take("c", "cpu", 8 * GIB).await.as_deref(), Some("pair"));
    assert_eq!(queue.gang(&job_id("pair")).await.unwrap(), [runner_id("c"), runner_id("b")]);
    assert_eq!(held("c").await, ["ftjob-pair"]);
    // b was picked, not yet running it: it asks for nothing else until it takes it up.
    assert_eq!(take("b", "cpu", 8 * GIB).await, None);
    assert_eq!(queue.join_gang(&runner_id("gpu")).await.unwrap(), None);
    assert_eq!(queue.join_gang(&runner_id("b")).await.unwrap(), Some(job_id("pair")));
    assert_eq!(held("b").await, ["ftjob-pair"]);
    let running: std::collections::HashMap<String, i64> = redis.hgetall(keys.running()).await.unwrap();
    assert_eq!(running["t"], 3, "solo on a, and pair on b and c");

    // Rank 0 publishes the rendezvous; a note for a gang that is gone is dropped.
    assert!(queue.set_gang_note(&job_id("pair"), "rendezvous", "1 127.0.0.1:1234").await.unwrap());
    assert_eq!(queue.gang_note(&job_id("pair"), "rendezvous").await.unwrap().as_deref(), Some("1 127.0.0.1:1234"));
    assert!(!queue.set_gang_note(&job_id("solo"), "rendezvous", "x").await.unwrap());

    // Requeued (a rank was lost): out of both ranks' lists, the gang dissolved, waiting again.
    queue.requeue_from(&runner_id("b"), &gang_job("pair", 1, 2)).await.unwrap();
    assert!(held("b").await.is_empty() && held("c").await.is_empty());
    assert!(queue.gang(&job_id("pair")).await.unwrap().is_empty());
    assert!(!redis.exists::<_, bool>(keys.gang("ftjob-pair")).await.unwrap());
    assert_eq!(env.waiting_jobs().await, ["ftjob-pair"]);
    let running: std::collections::HashMap<String, i64> = redis.hgetall(keys.running()).await.unwrap();
    assert_eq!(running["t"], 1);

    // A gang again (c and b wait now: b asked above); rank 0 lets go first, then the other rank:
    // the ticket stays until the last rank let go; the scheduler's `forget` drops the record.
    assert_eq!(take("b", "cpu", 8 * GIB).await, None);
    assert_eq!(take("c", "cpu", 8 * GIB).await.as_deref(), Some("pair"));
    assert_eq!(queue.join_gang(&runner_id("b")).await.unwrap(), Some(job_id("pair")));
    queue.finish(&runner_id("c"), &job_id("pair")).await.unwrap();
    assert!(redis.hexists::<_, _, bool>(keys.tickets(), "ftjob-pair").await.unwrap());
    queue.finish(&runner_id("b"), &job_id("pair")).await.unwrap();
    assert!(!redis.hexists::<_, _, bool>(keys.tickets(), "ftjob-pair").await.unwrap());
    queue.forget(None, &job_id("pair")).await.unwrap();
    assert!(!redis.exists::<_, bool>(keys.gang("ftjob-pair")).await.unwrap());
    let running: std::collections::HashMap<String, i64> = redis.hgetall(keys.running()).await.unwrap();
    assert_eq!(running["t"], 1, "only solo is held");

    // A runner's waiting mark lapses: past it, no gang picks it.
    queue.enqueue(&gang_job("late", 3, 2)).await.unwrap();
    queue.claim(&runner_id("d"), "cpu", 8 * GIB, 1).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(take("e", "cpu", 8 * GIB).await, None, "d's waiting mark lapsed");
    // Draining keeps a waiting runner out of gangs at once.
    queue.set_draining(&runner_id("e"), true).await.unwrap();
    assert_eq!(take("f", "cpu", 8 * GIB).await, None, "e is draining");
}

async fn job_view(env: &TestEnv, id: &str) -> Value {
    env.get_json(&format!("/v1/fine_tuning/jobs/{id}")).await
}

/// Waits until the job's `status_details` satisfies `done`.
async fn wait_for_details(env: &TestEnv, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let job = job_view(env, id).await;
        if done(&job["status_details"]) {
            return job;
        }
        assert!(tokio::time::Instant::now() < deadline, "status_details never settled: {job}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// With one CPU runner declaring 1 GiB: a CUDA job and a job estimated far above 1 GiB wait with a
/// reason and are never claimed, while a small job runs to completion on that runner.
#[sqlx::test(migrations = "../migrations")]
async fn a_job_no_runner_fits_waits_with_its_reason(pool: PgPool) {
    let env = TestEnv::start(pool.clone()).await;
    let mut config = env.scheduler_config();
    let metrics_port = moetune_e2e::free_port();
    config.metrics_addr = format!("127.0.0.1:{metrics_port}");
    let _scheduler = tokio::spawn(moetune_scheduler::run(config, pool.clone(), std::future::pending()));
    let _runner = KillOnDrop(runner_command(&env, "small-cpu").env("MOETUNE_HOST_MEMORY_GIB", "1").spawn().unwrap());
    let file = env.upload_demo_dataset().await;
    let env = &env;
    let create = |options: Value| {
        let body = json!({"model": "moetune/tiny-mixtral", "training_file": file["id"], "method": {"type": "moe_sft_qat", "moe_sft_qat": options}});
        async move { env.post_json("/v1/fine_tuning/jobs", body).await.json::<Value>().await.unwrap() }
    };
    let gpu = create(json!({"device": "cuda", "max_steps": 2})).await;
    assert_eq!(gpu["requirements"]["device"], "cuda", "{gpu}");
    let big = create(json!({"seq_len": 32768, "max_steps": 2})).await;
    // The runner here is a CPU runner: what counts is the CPU figure (fp32, no checkpointing).
    let big_bytes = big["requirements"]["cpu_memory_bytes"].as_i64().unwrap();
    assert!(big_bytes > 4 << 30, "seq_len 32768 must need several GiB, estimated {big_bytes}");
    assert!(big["requirements"]["memory_bytes"].as_i64().unwrap() < big_bytes, "bf16 with checkpointing needs less on a GPU");
    let small = create(json!({"max_steps": 4, "qat": {"steps": 2}})).await;
    let small_bytes = small["requirements"]["cpu_memory_bytes"].as_i64().unwrap();
    assert!(small_bytes > 0 && small_bytes < 1 << 30, "the tiny model's default job fits 1 GiB, estimated {small_bytes}");

    let gpu = wait_for_details(env, gpu["id"].as_str().unwrap(), |d| d.is_string()).await;
    assert_eq!(gpu["status_details"], "Waiting for a cuda runner: none is registered.");
    // Until the runner's first heartbeat lands, the reason is that no runner is registered at all.
    let big = wait_for_details(env, big["id"].as_str().unwrap(), |d| d.as_str().is_some_and(|r| r.contains("largest registered"))).await;
    let reason = big["status_details"].as_str().unwrap();
    assert!(reason.contains("the largest registered cpu runner has 1.00 GiB"), "{reason}");

    let small = env.wait_for_job(small["id"].as_str().unwrap(), Duration::from_secs(180)).await;
    assert_eq!(small["status"], "succeeded", "{small}");
    assert!(small["status_details"].is_null());
    for waiting in [&gpu, &big] {
        let job = job_view(env, waiting["id"].as_str().unwrap()).await;
        assert_eq!(job["status"], "queued", "{job}");
        let runner: Option<String> = sqlx::query_scalar("SELECT runner_id FROM jobs WHERE id = $1").bind(waiting["id"].as_str()).fetch_one(&pool).await.unwrap();
        assert_eq!(runner, None, "no runner may take a job it does not fit");
    }
    assert_eq!(env.waiting_jobs().await.len(), 2);

    // A runner that fits registers (its registry entry and heartbeat, written as a runner would; it
    // claims nothing): the big job's reason is cleared, the CUDA job's stays.
    let keys = moetune_types::RedisKeys::new(&env.config.redis_prefix);
    let mut redis = env.queue().await.connection();
    let mut info: moetune_types::RunnerInfo = serde_json::from_str(&redis::AsyncCommands::get::<_, String>(&mut redis, keys.runner_info("small-cpu")).await.unwrap()).unwrap();
    info.runner_id = runner_id("large-cpu");
    info.host_memory_bytes = 4096 << 30;
    let () = redis::pipe()
        .sadd(keys.runners(), "large-cpu")
        .set_ex(keys.runner_alive("large-cpu"), "1", 60)
        .set(keys.runner_info("large-cpu"), serde_json::to_string(&info).unwrap())
        .query_async(&mut redis)
        .await
        .unwrap();
    let cleared = wait_for_details(env, big["id"].as_str().unwrap(), Value::is_null).await;
    assert_eq!(cleared["status"], "queued");
    assert_eq!(job_view(env, gpu["id"].as_str().unwrap()).await["status_details"], "Waiting for a cuda runner: none is registered.");

    // The scheduler's Prometheus endpoint shows the same: two jobs waiting, one no runner fits, two
    // idle runners, one job placed and how long it waited.
    let expected = ["moetune_queue_waiting_jobs 2", "moetune_queue_unplaceable_jobs 1", "moetune_runners{state=\"idle\"} 2", "moetune_jobs{status=\"succeeded\"} 1", "moetune_placement_latency_seconds_count 1"];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let text = env.http.get(format!("http://127.0.0.1:{metrics_port}/metrics")).send().await.unwrap().text().await.unwrap();
        if expected.iter().all(|line| text.lines().any(|l| l == *line)) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "metrics never showed {expected:?}:\n{text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for id in [&gpu["id"], &big["id"]] {
        let cancelled = env.post_json(&format!("/v1/fine_tuning/jobs/{}/cancel", id.as_str().unwrap()), json!({})).await;
        assert_eq!(cancelled.status(), 200);
    }
}

/// A CPU runner that declares far more memory than its host has claims only what fits the host's
/// available memory now: a job estimated above it stays queued and unclaimed while a small job
/// queued after it runs.
#[sqlx::test(migrations = "../migrations")]
async fn a_runner_claims_only_what_fits_its_free_memory(pool: PgPool) {
    let env = TestEnv::start(pool.clone()).await;
    let _scheduler = tokio::spawn(moetune_scheduler::run(env.scheduler_config(), pool.clone(), std::future::pending()));
    let _runner = KillOnDrop(runner_command(&env, "overdeclared-cpu").env("MOETUNE_HOST_MEMORY_GIB", "100000").spawn().unwrap());
    let file = env.upload_demo_dataset().await;
    let env = &env;
    let create = |options: Value, hyperparameters: Value| {
        let body = json!({"model": "moetune/tiny-mixtral", "training_file": file["id"], "method": {"type": "moe_sft_qat", "moe_sft_qat": options}, "hyperparameters": hyperparameters});
        async move { env.post_json("/v1/fine_tuning/jobs", body).await.json::<Value>().await.unwrap() }
    };
    let big = create(json!({"seq_len": 32768, "max_steps": 2}), json!({"batch_size": 128})).await;
    let big_bytes = big["requirements"]["cpu_memory_bytes"].as_i64().expect("requirements");
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let total_kib: i64 = meminfo.lines().find_map(|l| l.strip_prefix("MemTotal:")).unwrap().trim().trim_end_matches("kB").trim().parse().unwrap();
    assert!(big_bytes > total_kib * 1024 && big_bytes < 100_000 << 30, "the big job must exceed this host ({total_kib} KiB) and fit the declared 100000 GiB: {big_bytes}");
    let small = create(json!({"max_steps": 2, "qat": {"steps": 1}}), json!({})).await;

    let small = env.wait_for_job(small["id"].as_str().unwrap(), Duration::from_secs(180)).await;
    assert_eq!(small["status"], "succeeded", "{small}");
    let big_id = big["id"].as_str().unwrap();
    assert_eq!(job_view(env, big_id).await["status"], "queued");
    let runner: Option<String> = sqlx::query_scalar("SELECT runner_id FROM jobs WHERE id = $1").bind(big_id).fetch_one(&pool).await.unwrap();
    assert_eq!(runner, None, "the runner took a job its free memory does not fit");
    assert_eq!(env.post_json(&format!("/v1/fine_tuning/jobs/{big_id}/cancel"), json!({})).await.status(), 200);
}
