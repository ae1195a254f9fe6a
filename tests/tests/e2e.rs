//! The main job end to end on real services: the API and scheduler in this process, the runner as
//! its own process (as on a GPU node), Postgres, Redis and S3 (SeaweedFS) for real.

use std::process::Command;
use std::time::Duration;

use moetune_e2e::webhook_receiver::Receiver;
use moetune_e2e::{attribute_of, render_in_chromium, run_ok, spawn_runner, TestEnv};
use serde_json::json;
use sha2::Digest;
use sqlx::PgPool;

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}

#[sqlx::test(migrations = "../migrations")]
async fn fine_tuning_job_runs_end_to_end(pool: PgPool) {
    let env = TestEnv::start_with(pool.clone(), |c| c.webhooks.allowed_private_networks = "127.0.0.0/8".into()).await;
    let scheduler = tokio::spawn(moetune_scheduler::run(env.scheduler_config(), pool.clone(), std::future::pending()));
    let _runner = spawn_runner(&env, "e2e-runner");
    // An MLOps portal listening for every event type.
    let receiver = Receiver::start().await;
    let endpoint: serde_json::Value = env.post_json("/v1/webhook_endpoints", json!({"url": receiver.url})).await.json().await.unwrap();
    let secret = endpoint["secret"].as_str().expect("endpoint registered").to_string();

    let file: serde_json::Value = env.upload_demo_dataset().await;
    assert_eq!((file["format"].as_str(), file["example_count"].as_i64()), (Some("alpaca"), Some(240)));
    let body = json!({
        "model": "moetune/tiny-mixtral", "training_file": file["id"], "seed": 3,
        "hyperparameters": {"batch_size": 4, "n_epochs": "auto"},
        "method": {"type": "moe_sft_qat", "moe_sft_qat": {
            "sft_method": "full", "learning_rate": 3e-3, "max_steps": 30, "qat": {"steps": 6, "learning_rate": 3e-4},
            "monitor": {"every_n_steps": 10}, "checkpoint_every_n_steps": 10}},
    });
    let created = env.post_json("/v1/fine_tuning/jobs", body).await;
    assert_eq!(created.status(), 200);
    let created: serde_json::Value = created.json().await.unwrap();
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(created["object"], "fine_tuning.job");

    let job = env.wait_for_job(&id, Duration::from_secs(240)).await;
    assert!(!scheduler.is_finished(), "scheduler stopped: {scheduler:?}");
    assert_eq!(job["status"], "succeeded", "{job:#}");
    assert!(job["fine_tuned_model"].as_str().unwrap().starts_with("ft:moetune/tiny-mixtral:"));
    assert!(job["trained_tokens"].as_i64().unwrap() > 0);

    // Every transition is an event; metrics show the SFT loss going down.
    let events = env.get_json(&format!("/v1/fine_tuning/jobs/{id}/events?limit=1000")).await;
    let events: Vec<serde_json::Value> = events["data"].as_array().unwrap().iter().rev().cloned().collect();
    let messages: Vec<&str> = events.iter().map(|e| e["message"].as_str().unwrap()).collect();
    for expected in ["Validating training file", "Files validated, job queued", "Fine-tuning job started", "The job has successfully completed"] {
        assert!(messages.iter().any(|m| m.starts_with(expected)), "missing event {expected:?} in {messages:#?}");
    }
    let sft_losses: Vec<f64> = events
        .iter()
        .filter(|e| e["type"] == "metrics" && e["data"]["stage"] == "sft")
        .map(|e| e["data"]["train_loss"].as_f64().unwrap())
        .collect();
    assert_eq!(sft_losses.len(), 30);
    let (first, last) = (mean(&sft_losses[..5]), mean(&sft_losses[25..]));
    assert!(last < first * 0.9, "SFT loss did not go down: first {first:.3}, last {last:.3}");
    let qat_steps = events.iter().filter(|e| e["type"] == "metrics" && e["data"]["stage"] == "qat").count();
    assert_eq!(qat_steps, 6);
    let eval = &job["result"]["eval"];
    let loss = |row: usize| eval[row]["validation_loss"].as_f64().unwrap();
    assert_eq!(eval.as_array().unwrap().iter().map(|r| r["model"].as_str().unwrap()).collect::<Vec<_>>(), ["base", "sft", "ptq", "sft_qat"]);
    assert!(loss(1) < loss(0), "{eval}");
    assert_eq!(job["stop_reason"], "completed");
    // The monitor ran every 10 steps, and its figures are on the job.
    let monitor: Vec<&serde_json::Value> = events.iter().filter(|e| e["type"] == "monitor").collect();
    assert_eq!(monitor.len(), 3, "{monitor:#?}");
    assert_eq!(monitor[0]["data"]["layers"].as_array().unwrap().len(), 2);
    assert!(monitor.iter().all(|m| (0.0..=1.0).contains(&m["data"]["routing_drift"].as_f64().unwrap())), "drift from the base is measured at every check");
    assert!(events.iter().any(|e| e["type"] == "evaluation"));
    // Before it succeeded, every export was loaded back and reproduced the trained model.
    let serve = &job["result"]["serve_check"];
    let checked: Vec<&str> = serve["artifacts"].as_array().unwrap().iter().map(|a| a["artifact"].as_str().unwrap()).collect();
    assert_eq!((checked, serve["passed"].as_bool()), (vec!["merged", "nvfp4"], Some(true)), "{serve:#}");
    // Resumable checkpoints are listed on the job.
    let checkpoints = env.get_json(&format!("/v1/fine_tuning/jobs/{id}/checkpoints")).await;
    let checkpoint_names: Vec<&str> = checkpoints["data"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    for expected in ["sft-step-000010", "sft-step-000020", "sft-final", "qat-final"] {
        assert!(checkpoint_names.contains(&expected), "{expected} not in {checkpoint_names:?}");
    }

    // The portal heard of the start, each checkpoint, each monitor alert and the success, all signed.
    let type_of = |hook: &moetune_e2e::webhook_receiver::Delivery| hook.json()["type"].as_str().unwrap().to_string();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !receiver.received().iter().any(|h| type_of(h) == "fine_tuning.job.succeeded") {
        assert!(std::time::Instant::now() < deadline, "no fine_tuning.job.succeeded webhook: {:?}", receiver.received().iter().map(type_of).collect::<Vec<_>>());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let hooks = receiver.received();
    for hook in &hooks {
        hook.verify(&secret).expect("standardwebhooks verifies every delivery");
        assert_eq!(hook.json()["data"]["id"], id.as_str());
    }
    let types: Vec<String> = hooks.iter().map(type_of).collect();
    let count = |kind: &str| types.iter().filter(|t| *t == kind).count();
    let alerts = monitor.iter().filter(|m| m["data"]["alert"] == true).count();
    assert_eq!(types.first().map(String::as_str), Some("fine_tuning.job.running"), "{types:?}");
    assert_eq!((count("checkpoint.created"), count("monitor.alert"), count("fine_tuning.job.succeeded")), (checkpoint_names.len(), alerts, 1), "{types:?}");

    // The report page draws the curves, the heatmap (2 layers x 3 checks) and the table, in a browser.
    let report = env.http.get(env.url(&format!("/v1/fine_tuning/jobs/{id}/report"))).bearer_auth(&env.token).send().await.unwrap();
    assert_eq!(report.status(), 200);
    assert!(report.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let page = report.text().await.unwrap();
    assert!(!page.contains("http://") && !page.contains("https://"), "the report loads nothing from elsewhere");
    let dom = render_in_chromium(&page);
    assert_eq!(attribute_of(&dom, "loss-chart", "data-drawn").as_deref(), Some("3"), "SFT, QAT and validation loss lines");
    assert_eq!(attribute_of(&dom, "lr-chart", "data-drawn").as_deref(), Some("1"));
    assert_eq!(attribute_of(&dom, "usage-heatmap", "data-drawn").as_deref(), Some("6"));
    assert!(dom.contains("SFT+QAT") && dom.contains("id=\"evaluation\""), "the evaluation table is on the page");
    assert!(dom.contains("id=\"serve-check\"") && !dom.contains("FAILED"), "the serve check is on the page");

    // Artifacts: in S3 with the recorded size and sha256, downloadable through the API, and a
    // parseable safetensors checkpoint with transformers' parameter names.
    let artifacts = job["artifacts"].as_array().unwrap();
    let names: Vec<&str> = artifacts.iter().map(|a| a["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["eval_report.json", "merged/config.json", "merged/model.safetensors", "merged/tokenizer.json", "nvfp4/config.json", "nvfp4/hf_quant_config.json", "nvfp4/model.safetensors", "nvfp4/tokenizer.json"]
    );
    let model = artifacts.iter().find(|a| a["name"] == "merged/model.safetensors").unwrap();
    let uri = model["uri"].as_str().unwrap();
    let key = uri.strip_prefix(&format!("s3://{}/", env.config.s3.bucket)).expect("artifact in the test bucket");
    let stored = env.s3.get_object().bucket(&env.config.s3.bucket).key(key).send().await.unwrap();
    let stored = stored.body.collect().await.unwrap().into_bytes();
    assert_eq!(stored.len() as i64, model["bytes"].as_i64().unwrap());
    assert_eq!(hex::encode(sha2::Sha256::digest(&stored)), model["sha256"].as_str().unwrap());
    let downloaded = env.http.get(env.url(&format!("/v1/fine_tuning/jobs/{id}/artifacts/merged/model.safetensors/content")))
        .bearer_auth(&env.token).send().await.unwrap();
    assert_eq!(downloaded.status(), 200);
    assert!(downloaded.bytes().await.unwrap() == stored, "API download differs from S3");

    let (_, metadata) = safetensors::SafeTensors::read_metadata(&stored).unwrap();
    assert_eq!(metadata.metadata().as_ref().and_then(|m| m.get("format")).map(String::as_str), Some("pt"));
    let tensors = safetensors::SafeTensors::deserialize(&stored).unwrap();
    let mut names: Vec<String> = tensors.names().into_iter().map(String::from).collect();
    names.sort();
    for expected in [
        "lm_head.weight",
        "model.embed_tokens.weight",
        "model.norm.weight",
        "model.layers.0.self_attn.q_proj.weight",
        "model.layers.0.block_sparse_moe.gate.weight",
        "model.layers.1.block_sparse_moe.experts.3.w2.weight",
    ] {
        assert!(names.iter().any(|n| n == expected), "{expected} missing from {names:?}");
    }
    assert_eq!(names.len(), 2 + 1 + 2 * (4 + 2 + 1 + 4 * 3));
    assert_eq!(tensors.tensor("model.layers.0.block_sparse_moe.experts.0.w1.weight").unwrap().shape(), [256, 128]);

    // The reference implementation loads the checkpoint unmodified.
    let dir = std::env::temp_dir().join(&id);
    std::fs::create_dir_all(&dir).unwrap();
    for name in ["config.json", "model.safetensors", "tokenizer.json"] {
        let url = env.url(&format!("/v1/fine_tuning/jobs/{id}/artifacts/merged/{name}/content"));
        let bytes = env.http.get(url).bearer_auth(&env.token).send().await.unwrap().bytes().await.unwrap();
        std::fs::write(dir.join(name), bytes).unwrap();
    }
    // python3 is the test venv's (deploy/test puts it first on PATH).
    let stdout = run_ok(Command::new("python3").args(["-c", LOAD_IN_TRANSFORMERS]).arg(&dir));
    assert_eq!(stdout.trim(), "loaded MixtralForCausalLM with no missing or unexpected keys");
    std::fs::remove_dir_all(&dir).unwrap();
}

const LOAD_IN_TRANSFORMERS: &str = r#"
import sys
from transformers import MixtralForCausalLM
model, info = MixtralForCausalLM.from_pretrained(sys.argv[1], output_loading_info=True)
problems = {k: v for k, v in info.items() if v}
assert not problems, problems
print("loaded MixtralForCausalLM with no missing or unexpected keys")
"#;

/// A runner killed mid-job (SIGKILL) loses nothing but time: the scheduler hands the job out again
/// (attempt 2), and the next runner resumes from the newest checkpoint the scheduler accepted, re-running
/// fewer steps than the checkpoint interval and recomputing exactly the losses the dead runner had
/// reported after that checkpoint.
#[sqlx::test(migrations = "../migrations")]
async fn killed_runner_job_resumes_from_its_latest_checkpoint(pool: PgPool) {
    let env = TestEnv::start(pool.clone()).await;
    let _scheduler = tokio::spawn(moetune_scheduler::run(env.scheduler_config(), pool.clone(), std::future::pending()));
    let first = spawn_runner(&env, "doomed-runner");
    let file: serde_json::Value = env.upload_demo_dataset().await;
    let body = json!({
        "model": "moetune/tiny-mixtral", "training_file": file["id"], "seed": 5, "hyperparameters": {"batch_size": 16},
        "method": {"type": "moe_sft_qat", "moe_sft_qat": {
            "learning_rate": 1e-3, "max_steps": 400, "lora": {"target_experts": true},
            "qat": {"steps": 20, "learning_rate": 1e-4, "format": "nvfp4", "quantize_activations": true},
            "checkpoint_every_n_steps": 25, "monitor": {"every_n_steps": 50}}},
    });
    let created: serde_json::Value = env.post_json("/v1/fine_tuning/jobs", body).await.json().await.unwrap();
    let id = created["id"].as_str().unwrap().to_string();
    let checkpoints = |pool: PgPool, id: String| async move {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM checkpoints WHERE job_id = $1").bind(id).fetch_one(&pool).await.unwrap()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while checkpoints(pool.clone(), id.clone()).await < 2 {
        assert!(tokio::time::Instant::now() < deadline, "no checkpoint after 120 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(first); // SIGKILL mid-SFT
    let _second = spawn_runner(&env, "rescue-runner");
    let job = env.wait_for_job(&id, Duration::from_secs(300)).await;
    assert_eq!(job["status"], "succeeded", "{job:#}");
    assert_eq!(job["attempt"], 2);

    let rows: Vec<(i32, serde_json::Value)> = sqlx::query_as("SELECT attempt, data FROM job_events WHERE job_id = $1 AND type = 'metrics' ORDER BY seq")
        .bind(&id)
        .fetch_all(&pool)
        .await
        .unwrap();
    let sft = |attempt: i32| -> std::collections::BTreeMap<u64, f64> {
        rows.iter()
            .filter(|(a, d)| *a == attempt && d["stage"] == "sft")
            .map(|(_, d)| (d["step"].as_u64().unwrap(), d["train_loss"].as_f64().unwrap()))
            .collect()
    };
    let (before, after) = (sft(1), sft(2));
    let resumed_at = *after.keys().next().expect("attempt 2 trained") - 1;
    assert!(resumed_at >= 25 && resumed_at % 25 == 0, "attempt 2 started after step {resumed_at}, not at a checkpoint");
    assert_eq!(*after.keys().last().unwrap(), 400);
    let overlap: Vec<u64> = before.keys().filter(|s| **s > resumed_at).copied().collect();
    assert!(overlap.len() < 25, "{} steps re-run: attempt 2 must resume from the newest checkpoint, fewer than the interval of 25 back", overlap.len());
    for step in &overlap {
        assert_eq!(before[step], after[step], "step {step}: loss differs after resuming");
    }
    let resumed: i64 = sqlx::query_scalar("SELECT count(*) FROM job_events WHERE job_id = $1 AND attempt = 2 AND message LIKE $2")
        .bind(&id)
        .bind(format!("Resumed sft at step {resumed_at}/400%"))
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(resumed, 1);
    let artifacts: Vec<&str> = job["artifacts"].as_array().unwrap().iter().map(|a| a["name"].as_str().unwrap()).collect();
    for expected in ["adapter/adapter_model.safetensors", "nvfp4/model.safetensors", "nvfp4/hf_quant_config.json", "eval_report.json"] {
        assert!(artifacts.contains(&expected), "{expected} not in {artifacts:?}");
    }
}

/// Cancelling a running job stops the runner at its next step; it then takes the next job.
#[sqlx::test(migrations = "../migrations")]
async fn cancelling_a_running_job_frees_its_runner(pool: PgPool) {
    let env = TestEnv::start(pool.clone()).await;
    let _scheduler = tokio::spawn(moetune_scheduler::run(env.scheduler_config(), pool.clone(), std::future::pending()));
    let _runner = spawn_runner(&env, "busy-runner");
    let file: serde_json::Value = env.upload_demo_dataset().await;
    let long = json!({"model": "moetune/tiny-mixtral", "training_file": file["id"], "hyperparameters": {"batch_size": 16},
                      "method": {"type": "moe_sft_qat", "moe_sft_qat": {"max_steps": 100000, "checkpoint_every_n_steps": 0}}});
    let long: serde_json::Value = env.post_json("/v1/fine_tuning/jobs", long).await.json().await.unwrap();
    let long_id = long["id"].as_str().unwrap().to_string();
    env.wait_for_steps(&long_id, 3).await;
    let cancelled: serde_json::Value = env.post_json(&format!("/v1/fine_tuning/jobs/{long_id}/cancel"), json!({})).await.json().await.unwrap();
    assert_eq!(cancelled["status"], "cancelled");

    let short = json!({"model": "moetune/tiny-mixtral", "training_file": file["id"],
                       "method": {"type": "moe_sft_qat", "moe_sft_qat": {"max_steps": 3, "qat": {"steps": 1}}}});
    let short: serde_json::Value = env.post_json("/v1/fine_tuning/jobs", short).await.json().await.unwrap();
    let job = env.wait_for_job(short["id"].as_str().unwrap(), Duration::from_secs(120)).await;
    assert_eq!(job["status"], "succeeded", "{job:#}");
    let long = env.get_json(&format!("/v1/fine_tuning/jobs/{long_id}")).await;
    assert_eq!(long["status"], "cancelled");
    assert!(long["artifacts"].as_array().unwrap().is_empty());
}

/// SIGTERM is a graceful handover: the runner checkpoints at its next step, hands the job back and
/// exits; the next runner continues from that very step as the next attempt (writing under its own
/// prefix), re-running none.
#[sqlx::test(migrations = "../migrations")]
async fn a_runner_stopped_with_sigterm_hands_its_job_over_without_losing_a_step(pool: PgPool) {
    let env = TestEnv::start(pool.clone()).await;
    let _scheduler = tokio::spawn(moetune_scheduler::run(env.scheduler_config(), pool.clone(), std::future::pending()));
    let mut leaving = spawn_runner(&env, "leaving-runner");
    let file: serde_json::Value = env.upload_demo_dataset().await;
    // No periodic checkpoints: the handover's checkpoint is the only one.
    let body = json!({"model": "moetune/tiny-mixtral", "training_file": file["id"], "seed": 2, "hyperparameters": {"batch_size": 8},
        "method": {"type": "moe_sft_qat", "moe_sft_qat": {"learning_rate": 1e-3, "max_steps": 60, "checkpoint_every_n_steps": 0, "qat": {"steps": 2}}}});
    let created: serde_json::Value = env.post_json("/v1/fine_tuning/jobs", body).await.json().await.unwrap();
    let id = created["id"].as_str().unwrap().to_string();
    env.wait_for_steps(&id, 5).await;
    run_ok(Command::new("kill").args(["-TERM", &leaving.0.id().to_string()]));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let exit = loop {
        if let Some(status) = leaving.0.try_wait().unwrap() {
            break status;
        }
        assert!(tokio::time::Instant::now() < deadline, "the runner did not exit after SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(exit.success(), "runner exited with {exit}");

    let _next = spawn_runner(&env, "next-runner");
    let job = env.wait_for_job(&id, Duration::from_secs(240)).await;
    assert_eq!(job["status"], "succeeded", "{job:#}");
    assert_eq!(job["attempt"], 2, "the runner taking over writes as a new attempt");
    let rows: Vec<(String, String, serde_json::Value)> = sqlx::query_as("SELECT type, message, coalesce(data, 'null') FROM job_events WHERE job_id = $1 ORDER BY seq")
        .bind(&id)
        .fetch_all(&pool)
        .await
        .unwrap();
    let requeued = rows.iter().find_map(|(_, m, _)| m.strip_prefix("Job requeued from its checkpoint at sft step ")).expect("a requeue event");
    assert!(requeued.ends_with(" as attempt 2"), "{requeued}");
    let handed_at: u64 = requeued.split(' ').next().unwrap().parse().unwrap();
    let steps: Vec<u64> = rows.iter().filter(|(t, _, d)| t == "metrics" && d["stage"] == "sft").map(|(_, _, d)| d["step"].as_u64().unwrap()).collect();
    assert_eq!(steps, (1..=60).collect::<Vec<_>>(), "every SFT step ran exactly once across the two runners");
    assert!(rows.iter().any(|(_, m, _)| m == &format!("Resumed sft at step {handed_at}/60 from checkpoint")), "the next runner did not resume at step {handed_at}");
}
