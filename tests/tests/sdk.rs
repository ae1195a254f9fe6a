//! The generated SDKs: current with the contract, and each runs a whole job against the real server
//! (API and scheduler in this process, a runner as its own process, real Postgres, Redis and S3).

use std::process::Command;
use std::time::Duration;

use futures_util::TryStreamExt;
use moetune_client::types;
use moetune_e2e::{repo_path, run_ok, spawn_runner, TestEnv};
use serde_json::json;
use sha2::Digest;
use sqlx::PgPool;

const DATASET: &str = "deploy/demo/finance-alpaca-mini.jsonl";

/// sdk/generate --check regenerates both SDKs into a temporary directory and compares.
#[test]
fn generated_sdks_match_the_contract() {
    run_ok(Command::new(repo_path("sdk/generate")).arg("--check"));
}

#[sqlx::test(migrations = "../migrations")]
async fn the_python_sdk_runs_a_job(pool: PgPool) {
    let env = TestEnv::start(pool.clone()).await;
    let _scheduler = tokio::spawn(moetune_scheduler::run(env.scheduler_config(), pool, std::future::pending()));
    let _runner = spawn_runner(&env, "python-sdk-runner");
    let (base, token) = (env.base.clone(), env.token.clone());
    let output = tokio::task::spawn_blocking(move || {
        run_ok(Command::new("python3").arg(repo_path("tests/python/sdk_job.py")).args([&base, &token, &repo_path(DATASET)]).env("PYTHONPATH", repo_path("sdk/python")).env("PYTHONDONTWRITEBYTECODE", "1"))
    })
    .await
    .unwrap();
    let summary: serde_json::Value = serde_json::from_str(output.trim()).expect("the script prints JSON");
    assert_eq!(summary["status"], "succeeded", "{summary}");
    assert_eq!(summary["file_format"], "alpaca");
    assert!(summary["fine_tuned_model"].as_str().unwrap().contains(":python-sdk:"), "{summary}");
    assert!(summary["artifacts"].as_array().unwrap().contains(&json!("nvfp4/model.safetensors")), "{summary}");
    assert_eq!(summary["config_sha256_matches"], true);
    assert_eq!(summary["metrics_events"], 8, "6 SFT steps and 2 QAT steps");
}

#[sqlx::test(migrations = "../migrations")]
async fn the_rust_sdk_runs_a_job(pool: PgPool) {
    let env = TestEnv::start(pool.clone()).await;
    let _scheduler = tokio::spawn(moetune_scheduler::run(env.scheduler_config(), pool, std::future::pending()));
    let _runner = spawn_runner(&env, "rust-sdk-runner");
    let client = moetune_client::Client::with_token(&env.base, &env.token).unwrap();

    let dataset = std::fs::read(repo_path(DATASET)).unwrap();
    let length = dataset.len() as u64;
    let file = client.upload_file("fine-tune", "finance.jsonl", dataset.into(), length).await.expect("upload");
    assert_eq!(file.format.as_deref(), Some("alpaca"));
    // A bad dataset comes back as the API's error, with the line at fault.
    let bad = client.upload_file("fine-tune", "bad.jsonl", "{\"prompt\": 1}\n".into(), 14).await.unwrap_err();
    assert!(matches!(&bad, moetune_client::UploadError::Api { status, .. } if status.as_u16() == 400), "{bad}");

    let request: types::CreateJobRequest = serde_json::from_value(json!({
        "model": "moetune/tiny-mixtral", "training_file": file.id, "suffix": "rust-sdk",
        "method": {"type": "moe_sft_qat", "moe_sft_qat": {"max_steps": 6, "qat": {"steps": 2}}},
    }))
    .unwrap();
    let mut job = client.fine_tuning_create().body(request).send().await.expect("create").into_inner();
    let deadline = std::time::Instant::now() + Duration::from_secs(240);
    while !matches!(job.status, types::JobStatus::Succeeded | types::JobStatus::Failed | types::JobStatus::Cancelled) {
        assert!(std::time::Instant::now() < deadline, "job {} still {:?}", job.id, job.status);
        tokio::time::sleep(Duration::from_millis(500)).await;
        job = client.fine_tuning_retrieve().id(&job.id).send().await.unwrap().into_inner();
    }
    assert!(matches!(job.status, types::JobStatus::Succeeded), "{job:?}");

    let artifacts = client.fine_tuning_list_artifacts().id(&job.id).send().await.unwrap().into_inner().data;
    let weights = artifacts.iter().find(|a| a.name == "merged/model.safetensors").expect("merged weights");
    let stream = client.fine_tuning_download_artifact().id(&job.id).name(&weights.name).send().await.unwrap().into_inner();
    let bytes: Vec<u8> = stream.into_inner().map_ok(|chunk| chunk.to_vec()).try_concat().await.unwrap();
    assert_eq!(hex::encode(sha2::Sha256::digest(&bytes)), weights.sha256);
    let listed = client.fine_tuning_list().limit(10).send().await.unwrap().into_inner();
    assert_eq!(listed.data.first().map(|j| j.id.as_str()), Some(job.id.as_str()));
}
