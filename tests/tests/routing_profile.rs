//! Routing profiles of files through the API: a short job of its own kind on a real runner, with the
//! real scheduler, Postgres, Redis and S3; and the job report drawing it.

use std::time::Duration;

use moetune_e2e::{error_of, spawn_runner, TestEnv};
use serde_json::json;
use sqlx::PgPool;

async fn wait_for_profile(env: &TestEnv, path: &str) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    loop {
        let profile = env.get_json(path).await;
        if matches!(profile["status"].as_str(), Some("succeeded" | "failed" | "cancelled")) {
            return profile;
        }
        assert!(tokio::time::Instant::now() < deadline, "profile still {} after 180 s", profile["status"]);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn shares(layer: &serde_json::Value, field: &str) -> Vec<f64> {
    layer[field].as_array().unwrap().iter().map(|s| s.as_f64().unwrap()).collect()
}

#[sqlx::test(migrations = "../migrations")]
async fn a_routing_profile_runs_on_a_runner_stays_out_of_fine_tuning_jobs_and_shows_in_the_report(pool: PgPool) {
    let env = TestEnv::start(pool.clone()).await;
    let scheduler = tokio::spawn(moetune_scheduler::run(env.scheduler_config(), pool.clone(), std::future::pending()));
    let _runner = spawn_runner(&env, "profile-runner");
    let file = env.upload_demo_dataset().await;
    let id = file["id"].as_str().unwrap();
    let path = format!("/v1/files/{id}/routing_profile");
    let get = |path: String, token: String| env.http.get(env.url(&path)).bearer_auth(token).send();

    // Nothing yet; bad requests name what to fix; another tenant's file does not exist for this one.
    let none = error_of(get(path.clone(), env.token.clone()).await.unwrap(), 404).await;
    assert!(none["message"].as_str().unwrap().contains("POST /v1/files/"), "{none}");
    let refused = error_of(env.post_json(&path, json!({"model": "moetune/tiny-mixtral", "max_examples": 0})).await, 400).await;
    assert_eq!((refused["code"].as_str(), refused["param"].as_str()), (Some("invalid_profile_request"), Some("max_examples")));
    let refused = error_of(env.post_json(&path, json!({"model": "nobody/nothing"})).await, 400).await;
    assert_eq!(refused["code"], "model_not_found");
    let refused = error_of(env.post_json(&path, json!({"model": "moetune/tiny-mixtral", "max_example": 3})).await, 400).await;
    assert!(refused["message"].as_str().unwrap().contains("max_example"), "{refused}");
    let other = env.token_for("globex", None).await;
    let response = env.http.post(env.url(&path)).bearer_auth(&other).json(&json!({"model": "moetune/tiny-mixtral"})).send().await.unwrap();
    assert_eq!(error_of(response, 404).await["code"], "not_found");
    assert_eq!(error_of(get(path.clone(), other).await.unwrap(), 404).await["code"], "not_found");

    let created = env.post_json(&path, json!({"model": "moetune/tiny-mixtral", "max_examples": 40, "validation_file": id})).await;
    assert_eq!(created.status(), 200);
    let created: serde_json::Value = created.json().await.unwrap();
    assert_eq!((created["object"].as_str(), created["max_examples"].as_u64()), (Some("routing_profile"), Some(40)));
    assert!(matches!(created["status"].as_str(), Some("queued" | "running")), "{created}");

    let profile = wait_for_profile(&env, &format!("{path}?model=moetune/tiny-mixtral")).await;
    assert!(!scheduler.is_finished(), "scheduler stopped: {scheduler:?}");
    assert_eq!(profile["status"], "succeeded", "{profile:#}");
    for part in ["training", "validation"] {
        let p = &profile[part];
        assert_eq!((p["examples"].as_u64(), p["top_k"].as_u64()), (Some(40), Some(2)), "{part}: {p}");
        assert!(p["tokens"].as_u64().unwrap() > 40 * 10, "{part}: {p}");
        let layers = p["layers"].as_array().unwrap();
        assert_eq!(layers.len(), 2, "tiny-mixtral has 2 MoE layers");
        for layer in layers {
            for field in ["top1_share", "topk_share"] {
                let s = shares(layer, field);
                assert_eq!(s.len(), 4);
                assert!((s.iter().sum::<f64>() - 1.0).abs() < 1e-9, "{field} sums to 1: {s:?}");
            }
            let dead: Vec<u64> = shares(layer, "topk_share").iter().enumerate().filter(|(_, s)| **s < 0.001).map(|(e, _)| e as u64).collect();
            assert_eq!(layer["dead_experts"], json!(dead));
            let entropy = layer["entropy_norm"].as_f64().unwrap();
            assert!(entropy > 0.0 && entropy <= 1.0 + 1e-12, "{layer}");
        }
    }
    assert_eq!(profile["training"], profile["validation"], "the same file routed twice routes the same");

    assert_eq!(profile["id"], created["id"]);
    let done = error_of(env.post_json(&format!("{path}/cancel"), json!({})).await, 409).await;
    assert_eq!(done["code"], "job_not_cancellable", "nothing in progress: {done}");

    // It is not a fine-tuning job: not listed, not shown or changed by id, sent no webhook events.
    let jobs = env.get_json("/v1/fine_tuning/jobs").await;
    assert_eq!(jobs["data"], json!([]), "{jobs}");
    let job_path = format!("/v1/fine_tuning/jobs/{}", profile["id"].as_str().unwrap());
    assert_eq!(error_of(get(job_path.clone(), env.token.clone()).await.unwrap(), 404).await["code"], "not_found");
    assert_eq!(error_of(env.post_json(&format!("{job_path}/cancel"), json!({})).await, 404).await["code"], "not_found");
    assert_eq!(error_of(get(format!("{job_path}/events"), env.token.clone()).await.unwrap(), 404).await["code"], "not_found");
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM webhook_events").fetch_one(&pool).await.unwrap();
    assert_eq!(events, 0);

    // A fine-tuning job on the file shows the profile in its report.
    let body = json!({"model": "moetune/tiny-mixtral", "training_file": id,
                      "method": {"type": "moe_sft_qat", "moe_sft_qat": {"max_steps": 2, "qat": {"steps": 1}, "checkpoint_every_n_steps": 0}}});
    let job: serde_json::Value = env.post_json("/v1/fine_tuning/jobs", body).await.json().await.unwrap();
    let job = env.wait_for_job(job["id"].as_str().unwrap(), Duration::from_secs(180)).await;
    assert_eq!(job["status"], "succeeded", "{job:#}");
    let report = env.http.get(env.url(&format!("/v1/fine_tuning/jobs/{}/report", job["id"].as_str().unwrap()))).bearer_auth(&env.token).send().await.unwrap();
    let page = report.text().await.unwrap();
    let heatmap = page.split("id=\"routing-profile\"").nth(1).expect("the report draws the routing profile");
    let cells = heatmap.split("</svg>").next().unwrap().matches("<rect class=\"mark\"").count();
    assert_eq!(cells, 8, "a cell per layer and expert");
}
