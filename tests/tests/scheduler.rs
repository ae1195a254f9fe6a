//! Scheduler guarantees on real Redis and Postgres: lost runners' jobs are requeued with a new
//! attempt, their late writes are refused, replays are recorded once, and Redis can be rebuilt.

use moetune_e2e::TestEnv;
use moetune_scheduler::ingest::{apply, Applied};
use moetune_scheduler::reconcile::Reconciler;
use moetune_domain::JobQueue;
use moetune_scheduler::SchedulerConfig;
use moetune_types::{JobId, RedisKeys, RunnerEvent, RunnerEventKind, RunnerId};
use redis::aio::ConnectionManager;
use redis::AsyncCommands;
use serde_json::json;
use sqlx::PgPool;

async fn queued_job(env: &TestEnv) -> String {
    let data = "{\"prompt\": \"a\", \"completion\": \"b\"}\n";
    let file: serde_json::Value = env.upload("fine-tune", "d.jsonl", data.into()).await.json().await.unwrap();
    let body = json!({"model": "moetune/tiny-mixtral", "training_file": file["id"]});
    let job: serde_json::Value = env.post_json("/v1/fine_tuning/jobs", body).await.json().await.unwrap();
    assert_eq!(job["status"], "queued");
    job["id"].as_str().unwrap().to_string()
}

async fn scheduler_parts(env: &TestEnv) -> (SchedulerConfig, JobQueue, RedisKeys, ConnectionManager) {
    let config = env.scheduler_config();
    let queue = JobQueue::connect(&config.redis_url, &config.redis_prefix).await.unwrap();
    let (keys, redis) = (RedisKeys::new(&config.redis_prefix), queue.connection());
    (config, queue, keys, redis)
}

/// Claims the next job the way a CPU runner with plenty of memory does.
async fn claim(queue: &JobQueue, runner: &str) -> Option<String> {
    queue.claim(&RunnerId::parse(runner).unwrap(), "cpu", 1 << 40, 0).await.unwrap().map(String::from)
}

fn event(job_id: &str, attempt: i32, runner: &str, kind: RunnerEventKind) -> RunnerEvent {
    RunnerEvent { job_id: JobId::parse(job_id).unwrap(), attempt, runner_id: RunnerId::parse(runner).unwrap(), kind }
}

async fn job_state(pool: &PgPool, id: &str) -> (String, i32) {
    sqlx::query_as("SELECT status, attempt FROM jobs WHERE id = $1").bind(id).fetch_one(pool).await.unwrap()
}

#[sqlx::test(migrations = "../migrations")]
async fn lost_runner_is_fenced_off_and_its_job_requeued(pool: PgPool) {
    let env = TestEnv::start(pool.clone()).await;
    let job = queued_job(&env).await;
    let (config, queue, keys, mut redis) = scheduler_parts(&env).await;

    // A runner claims the job the reliable way, starts it, and then dies (its heartbeat key expires).
    let _: () = redis.sadd(keys.runners(), "ghost").await.unwrap();
    let claimed = claim(&queue, "ghost").await;
    assert_eq!(claimed.as_deref(), Some(job.as_str()));
    let started = event(&job, 1, "ghost", RunnerEventKind::Started { device: "cpu".into(), dtype: "float32".into(), ranks: vec![] });
    assert_eq!(apply(&pool, &started, Some("1-0")).await.unwrap(), Applied::Recorded);
    assert_eq!(job_state(&pool, &job).await, ("running".into(), 1));
    assert_eq!(apply(&pool, &started, Some("1-0")).await.unwrap(), Applied::Duplicate, "a replayed entry is recorded once");

    Reconciler::new(queue.clone(), pool.clone(), config.clone()).reconcile_once().await.unwrap();
    assert_eq!(job_state(&pool, &job).await, ("queued".into(), 2));
    let ghost_claims: Vec<String> = redis.lrange(keys.claimed("ghost"), 0, -1).await.unwrap();
    assert_eq!((env.waiting_jobs().await, ghost_claims), (vec![job.clone()], vec![]));
    let assignment: String = redis.get(keys.assignment(&job)).await.unwrap();
    assert!(assignment.contains("\"attempt\":2"), "{assignment}");

    // The dead runner's late completion is refused: the job stays queued for attempt 2.
    let late = event(&job, 1, "ghost", RunnerEventKind::Succeeded { trained_tokens: 1, result: json!({}) });
    assert_eq!(apply(&pool, &late, Some("2-0")).await.unwrap(), Applied::Stale);
    assert_eq!(job_state(&pool, &job).await, ("queued".into(), 2));
    let artifacts: i64 = sqlx::query_scalar("SELECT count(*) FROM artifacts").fetch_one(&pool).await.unwrap();
    assert_eq!(artifacts, 0);
}

#[sqlx::test(migrations = "../migrations")]
async fn jobs_survive_losing_redis_and_fail_after_max_attempts(pool: PgPool) {
    let env = TestEnv::start(pool.clone()).await;
    let job = queued_job(&env).await;
    let (config, queue, keys, mut redis) = scheduler_parts(&env).await;
    let reconciler = Reconciler::new(queue.clone(), pool.clone(), config.clone());

    // Everything this test has in Redis disappears (a FLUSHALL, scoped to our prefix).
    let flushed: Vec<String> = redis.keys(format!("{}:*", config.redis_prefix)).await.unwrap();
    let _: () = redis.del(&flushed).await.unwrap();
    assert!(env.waiting_jobs().await.is_empty());
    reconciler.reconcile_once().await.unwrap();
    assert_eq!(env.waiting_jobs().await, vec![job.clone()], "the reconciler republished the job from Postgres");
    let assignment: Option<String> = redis.get(keys.assignment(&job)).await.unwrap();
    assert!(assignment.is_some());

    // Lost on every attempt: after max_attempts the job fails with a clear error.
    for attempt in 1..=config.max_attempts {
        let runner = format!("doomed-{attempt}");
        let _: () = redis.sadd(keys.runners(), &runner).await.unwrap();
        assert_eq!(claim(&queue, &runner).await.as_deref(), Some(job.as_str()));
        reconciler.reconcile_once().await.unwrap();
    }
    let (status, error): (String, Option<String>) =
        sqlx::query_as("SELECT status, error_code FROM jobs WHERE id = $1").bind(&job).fetch_one(&pool).await.unwrap();
    assert_eq!((status.as_str(), error.as_deref()), ("failed", Some("runner_lost")));
    let view = env.get_json(&format!("/v1/fine_tuning/jobs/{job}")).await;
    assert!(view["error"]["message"].as_str().unwrap().contains("lost 3 times"), "{view}");
}

/// Runner events keep flowing after Redis loses the stream and its consumer group.
#[sqlx::test(migrations = "../migrations")]
async fn ingest_recovers_when_the_event_stream_is_lost(pool: PgPool) {
    let env = TestEnv::start(pool.clone()).await;
    let job = queued_job(&env).await;
    let (config, queue, keys, mut redis) = scheduler_parts(&env).await;
    let _: () = redis.sadd(keys.runners(), "r1").await.unwrap();
    let _: () = redis.set(keys.runner_alive("r1"), "1").await.unwrap();
    assert_eq!(claim(&queue, "r1").await.as_deref(), Some(job.as_str()));
    tokio::spawn(moetune_scheduler::run(config, pool.clone(), std::future::pending()));

    let send = |kind: RunnerEventKind| serde_json::to_string(&event(&job, 1, "r1", kind)).unwrap();
    let stream = keys.runner_events("r1");
    let started = send(RunnerEventKind::Started { device: "cpu".into(), dtype: "float32".into(), ranks: vec![] });
    let _: String = redis.xadd(&stream, "*", &[("event", started)]).await.unwrap();
    wait_until(&pool, &job, "SELECT count(*) FROM job_events WHERE job_id = $1 AND message = 'Fine-tuning job started'").await;

    let _: () = redis.del(&stream).await.unwrap(); // the stream and its group are gone
    let message = send(RunnerEventKind::Message { level: "info".into(), message: "after the flush".into() });
    let _: String = redis.xadd(&stream, "*", &[("event", message)]).await.unwrap();
    wait_until(&pool, &job, "SELECT count(*) FROM job_events WHERE job_id = $1 AND message = 'after the flush'").await;
}

async fn wait_until(pool: &PgPool, job: &str, count_query: &str) {
    for _ in 0..100 {
        let count: i64 = sqlx::query_scalar(count_query).bind(job).fetch_one(pool).await.unwrap();
        if count == 1 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("not applied within 10 s: {count_query}");
}

/// A running job asked to pause becomes `paused` when its runner reports it let go, or, if that runner
/// dies first, when the reconciler notices; it is never requeued by itself.
#[sqlx::test(migrations = "../migrations")]
async fn pausing_jobs_settle_as_paused_whether_or_not_their_runner_answers(pool: PgPool) {
    let env = TestEnv::start(pool.clone()).await;
    let (config, queue, keys, mut redis) = scheduler_parts(&env).await;
    let reconciler = Reconciler::new(queue.clone(), pool.clone(), config.clone());
    let started = RunnerEventKind::Started { device: "cpu".into(), dtype: "float32".into(), ranks: vec![] };
    let mut jobs = Vec::new();
    for runner in ["answers", "dies"] {
        let job = queued_job(&env).await;
        let _: () = redis.sadd(keys.runners(), runner).await.unwrap();
        let _: () = redis.set(keys.runner_alive(runner), "1").await.unwrap();
        assert_eq!(claim(&queue, runner).await.as_deref(), Some(job.as_str()));
        apply(&pool, &event(&job, 1, runner, started.clone()), None).await.unwrap();
        let pausing = env.post_json(&format!("/v1/fine_tuning/jobs/{job}/pause"), json!({})).await.json::<serde_json::Value>().await.unwrap();
        assert_eq!(pausing["status"], "pausing");
        assert_eq!(redis.get::<_, Option<i32>>(keys.pause(&job)).await.unwrap(), Some(1));
        jobs.push(job);
    }
    // Alive runners are left alone while they checkpoint.
    reconciler.reconcile_once().await.unwrap();
    assert_eq!(job_state(&pool, &jobs[0]).await, ("pausing".into(), 1));
    assert_eq!(job_state(&pool, &jobs[1]).await, ("pausing".into(), 1));

    let paused = event(&jobs[0], 1, "answers", RunnerEventKind::Paused { stage: "sft".into(), step: 7, reason: None });
    assert_eq!(apply(&pool, &paused, None).await.unwrap(), Applied::Recorded);
    assert_eq!(job_state(&pool, &jobs[0]).await, ("paused".into(), 1));

    let _: () = redis.del(keys.runner_alive("dies")).await.unwrap();
    reconciler.reconcile_once().await.unwrap();
    assert_eq!(job_state(&pool, &jobs[1]).await, ("paused".into(), 1));
    let claims: Vec<String> = redis.lrange(keys.claimed("dies"), 0, -1).await.unwrap();
    let pending = env.waiting_jobs().await;
    assert!(claims.is_empty() && pending.is_empty(), "{claims:?} {pending:?}");
    let view = env.get_json(&format!("/v1/fine_tuning/jobs/{}", jobs[1])).await;
    assert_eq!(view["status"], "paused");
    // A late Started from the paused attempt does not make it run again.
    apply(&pool, &event(&jobs[0], 1, "answers", started), None).await.unwrap();
    assert_eq!(job_state(&pool, &jobs[0]).await, ("paused".into(), 1));
}

/// A running job keeps its newest 3 periodic checkpoints and every stage final; a resumed attempt
/// starts from the newest kept one.
#[sqlx::test(migrations = "../migrations")]
async fn periodic_checkpoints_beyond_the_newest_three_are_pruned(pool: PgPool) {
    let env = TestEnv::start(pool.clone()).await;
    let job = queued_job(&env).await;
    let (config, queue, keys, mut redis) = scheduler_parts(&env).await;
    let _: () = redis.sadd(keys.runners(), "keeper").await.unwrap();
    assert_eq!(claim(&queue, "keeper").await.as_deref(), Some(job.as_str()));
    apply(&pool, &event(&job, 1, "keeper", RunnerEventKind::Started { device: "cpu".into(), dtype: "float32".into(), ranks: vec![] }), None).await.unwrap();
    let checkpoint = |name: &str, step: u32| {
        let uri = format!("s3://{}/checkpoints/{job}/attempt-1/{name}", config.s3_bucket);
        event(&job, 1, "keeper", RunnerEventKind::Checkpoint { name: name.into(), stage: "sft".into(), step, uri, bytes: 10 })
    };
    for step in [10, 20] {
        apply(&pool, &checkpoint(&format!("sft-step-{step:06}"), step), None).await.unwrap();
    }
    apply(&pool, &checkpoint("sft-final", 25), None).await.unwrap();
    for step in [30, 40, 50] {
        apply(&pool, &checkpoint(&format!("sft-step-{step:06}"), step), None).await.unwrap();
    }
    let kept: Vec<String> = sqlx::query_scalar("SELECT name FROM checkpoints WHERE job_id = $1 AND deleted_at IS NULL ORDER BY name").bind(&job).fetch_all(&pool).await.unwrap();
    assert_eq!(kept, ["sft-final", "sft-step-000030", "sft-step-000040", "sft-step-000050"]);
    let mut conn = pool.acquire().await.unwrap();
    let assignment = moetune_domain::store::assignment(&mut conn, &JobId::parse(&job).unwrap(), &config.s3_bucket).await.unwrap();
    assert!(assignment.resume_from.unwrap().ends_with("sft-step-000050"));
}
