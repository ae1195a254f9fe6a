//! Jobs on a gang of runners, through the whole service: the API takes `world_size`, the queue picks
//! every rank at once, the runners meet over c10d (Gloo on loopback here) and train one job with the
//! losses of one runner. A rank killed mid-job (SIGKILL) sends the job back; it resumes from its
//! checkpoint on a new gang with the losses of the uninterrupted run.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use moetune_e2e::{error_of, runner_command, spawn_runner, KillOnDrop, TestEnv};
use serde_json::{json, Value};
use sqlx::PgPool;

/// Relative difference allowed between one runner's losses and a gang's: the same gradient sums,
/// taken in another order.
const TOLERANCE: f64 = 1e-5;

fn job_body(file: &Value, world_size: u32) -> Value {
    json!({
        "model": "moetune/tiny-mixtral", "training_file": file["id"], "seed": 11, "hyperparameters": {"batch_size": 2},
        "method": {"type": "moe_sft_qat", "moe_sft_qat": {
            "learning_rate": 1e-3, "max_steps": 60, "gradient_accumulation_steps": 2, "world_size": world_size,
            "checkpoint_every_n_steps": 10, "monitor": {"every_n_steps": 100}, "qat": {"steps": 2}}},
    })
}

/// The job with its experts split across its ranks.
fn expert_parallel(mut body: Value) -> Value {
    body["method"]["moe_sft_qat"]["expert_parallel"] = json!(true);
    body
}

/// SFT losses by (attempt, step).
async fn sft_losses(pool: &PgPool, job: &str) -> BTreeMap<(i32, u64), f64> {
    let rows: Vec<(i32, Value)> = sqlx::query_as("SELECT attempt, data FROM job_events WHERE job_id = $1 AND type = 'metrics' ORDER BY seq")
        .bind(job)
        .fetch_all(pool)
        .await
        .unwrap();
    rows.into_iter()
        .filter(|(_, d)| d["stage"] == "sft")
        .map(|(attempt, d)| ((attempt, d["step"].as_u64().unwrap()), d["train_loss"].as_f64().unwrap()))
        .collect()
}

fn assert_close(actual: f64, expected: f64, what: &str) {
    let diff = (actual - expected).abs() / expected.abs().max(1e-12);
    assert!(diff <= TOLERANCE, "{what}: {actual} vs one runner's {expected} (relative difference {diff:e})");
}

#[sqlx::test(migrations = "../migrations")]
async fn a_gang_trains_like_one_runner_and_survives_a_killed_rank(pool: PgPool) {
    a_gang_survives_a_killed_rank(pool, false).await;
}

/// The same with the experts split across the two ranks: a rank killed mid-exchange ends the other's
/// attempt as a lost peer, and the job resumes on a new gang from the ranks' expert files.
#[sqlx::test(migrations = "../migrations")]
async fn an_expert_parallel_gang_trains_like_one_runner_and_survives_a_killed_rank(pool: PgPool) {
    a_gang_survives_a_killed_rank(pool, true).await;
}

async fn a_gang_survives_a_killed_rank(pool: PgPool, split_experts: bool) {
    let env = TestEnv::start(pool.clone()).await;
    let _scheduler = tokio::spawn(moetune_scheduler::run(env.scheduler_config(), pool.clone(), std::future::pending()));
    let file = env.upload_demo_dataset().await;

    // What the API refuses: a world size that does not divide the step's micro-batches.
    let mut bad = job_body(&file, 3);
    bad["method"]["moe_sft_qat"]["max_steps"] = json!(2);
    let refused = error_of(env.post_json("/v1/fine_tuning/jobs", bad).await, 400).await;
    assert_eq!(refused["param"], "method.moe_sft_qat.world_size", "{refused}");

    let mut runners: HashMap<String, KillOnDrop> = ["gang-a", "gang-b", "gang-c"].into_iter().map(|id| (id.to_string(), spawn_runner(&env, id))).collect();

    // One runner, the reference.
    let single: Value = env.post_json("/v1/fine_tuning/jobs", job_body(&file, 1)).await.json().await.unwrap();
    let single_id = single["id"].as_str().unwrap().to_string();
    let done = env.wait_for_job(&single_id, Duration::from_secs(300)).await;
    assert_eq!(done["status"], "succeeded", "{done:#}");
    assert!(done.get("ranks").is_none(), "a job on one runner lists no ranks: {done}");
    let reference: BTreeMap<u64, f64> = sft_losses(&pool, &single_id).await.into_iter().map(|((_, step), loss)| (step, loss)).collect();
    assert_eq!(reference.len(), 60);

    // The same job on two runners.
    let body = if split_experts { expert_parallel(job_body(&file, 2)) } else { job_body(&file, 2) };
    let created: Value = env.post_json("/v1/fine_tuning/jobs", body).await.json().await.unwrap();
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(created["requirements"]["world_size"], 2, "{created}");
    assert_eq!(created["method"]["moe_sft_qat"]["world_size"], 2);

    // Once it runs on its gang and stored a checkpoint, its rank 1 is killed.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    let first_ranks = loop {
        let job = env.get_json(&format!("/v1/fine_tuning/jobs/{id}")).await;
        let checkpoints: i64 = sqlx::query_scalar("SELECT count(*) FROM checkpoints WHERE job_id = $1").bind(&id).fetch_one(&pool).await.unwrap();
        if job["status"] == "running" && checkpoints > 0 && job["ranks"].is_array() {
            break job["ranks"].as_array().unwrap().iter().map(|r| r.as_str().unwrap().to_string()).collect::<Vec<_>>();
        }
        assert!(job["status"] != "succeeded" && tokio::time::Instant::now() < deadline, "the gang job never ran to a checkpoint: {job:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(first_ranks.len(), 2);
    let started: String = sqlx::query_scalar("SELECT message FROM job_events WHERE job_id = $1 AND message LIKE 'Job started on 2 runners%'").bind(&id).fetch_one(&pool).await.unwrap();
    assert!(started.contains(&format!("rank 0 {}, rank 1 {}", first_ranks[0], first_ranks[1])), "{started}");
    drop(runners.remove(&first_ranks[1]).expect("a runner of ours"));

    let job = env.wait_for_job(&id, Duration::from_secs(300)).await;
    assert_eq!(job["status"], "succeeded", "{job:#}");
    assert_eq!(job["attempt"], 2, "one lost rank, one more attempt: {job:#}");
    let ranks: Vec<&str> = job["ranks"].as_array().expect("the second gang's ranks").iter().map(|r| r.as_str().unwrap()).collect();
    assert_eq!(ranks.len(), 2);
    assert!(!ranks.contains(&first_ranks[1].as_str()), "the killed runner is not in the new gang: {ranks:?}");
    let lost: i64 = sqlx::query_scalar("SELECT count(*) FROM job_events WHERE job_id = $1 AND (message LIKE 'A rank of the job''s gang was lost%' OR message LIKE 'Runner % was lost%')")
        .bind(&id)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(lost >= 1, "the job's events say a rank was lost");

    // Every step of both attempts has one runner's loss; the second attempt starts right after a checkpoint.
    let losses = sft_losses(&pool, &id).await;
    for ((attempt, step), loss) in &losses {
        assert_close(*loss, reference[step], &format!("attempt {attempt} step {step}"));
    }
    let resumed_at = losses.keys().filter(|(a, _)| *a == 2).map(|(_, s)| *s).min().expect("attempt 2 trained") - 1;
    assert!(resumed_at >= 10 && resumed_at % 10 == 0, "attempt 2 started after step {resumed_at}, not at a checkpoint");
    assert_eq!(losses.keys().filter(|(a, _)| *a == 2).map(|(_, s)| *s).max(), Some(60));
    let artifacts: Vec<&str> = job["artifacts"].as_array().unwrap().iter().map(|a| a["name"].as_str().unwrap()).collect();
    assert!(artifacts.contains(&"adapter/adapter_model.safetensors"), "{artifacts:?}");
}

/// A rank that fails on its own before training (here: its runner takes smaller files than the job's)
/// fails the whole job with that rank's error at once, without waiting out the gang's timeout or
/// being retried as a lost runner.
#[sqlx::test(migrations = "../migrations")]
async fn a_rank_that_fails_on_its_own_fails_the_job_with_its_error(pool: PgPool) {
    let env = TestEnv::start(pool.clone()).await;
    let _scheduler = tokio::spawn(moetune_scheduler::run(env.scheduler_config(), pool.clone(), std::future::pending()));
    let _roomy = spawn_runner(&env, "roomy");
    let _cramped = KillOnDrop(runner_command(&env, "cramped").env("MOETUNE_MAX_DATASET_BYTES", "1000").spawn().unwrap());
    let file = env.upload_demo_dataset().await;
    let created: Value = env.post_json("/v1/fine_tuning/jobs", job_body(&file, 2)).await.json().await.unwrap();
    let id = created["id"].as_str().unwrap();
    let started = std::time::Instant::now();
    let job = env.wait_for_job(id, Duration::from_secs(120)).await;
    assert_eq!(job["status"], "failed", "{job:#}");
    assert_eq!(job["attempt"], 1, "a rank's own failure is no lost runner: {job:#}");
    let message = job["error"]["message"].as_str().unwrap();
    assert!(message.contains("this runner trains on files up to 1000 bytes"), "{message}");
    assert!(started.elapsed() < Duration::from_secs(45), "the job failed only after {:?} (the gang timeout is 60 s)", started.elapsed());
}
