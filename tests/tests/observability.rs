//! Prometheus metrics on all three processes and the job id on their log spans, after a real job:
//! the API in this process, the scheduler and a runner as their own processes with metrics on.

use std::time::Duration;

use moetune_e2e::{free_port, runner_command, scheduler_command, KillOnDrop, TestEnv};
use serde_json::json;
use sqlx::PgPool;

/// The value of the first sample of `series` (a metric name with its labels, as exposed), if any.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find(|l| l.starts_with(series) && l[series.len()..].starts_with(' ')).and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

async fn scrape(http: &reqwest::Client, url: &str) -> String {
    http.get(url).send().await.unwrap_or_else(|e| panic!("{url}: {e}")).text().await.unwrap()
}

#[sqlx::test(migrations = "../migrations")]
async fn every_process_exports_metrics_and_logs_the_job_id(pool: PgPool) {
    let env = TestEnv::start(pool).await;
    let logs = std::env::temp_dir().join(format!("moetune-obs-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&logs).unwrap();
    let (scheduler_port, runner_port) = (free_port(), free_port());
    let _scheduler = KillOnDrop(
        scheduler_command(&env)
            .env("MOETUNE_METRICS_ADDR", format!("127.0.0.1:{scheduler_port}"))
            .env("MOETUNE_PLACEMENT_INTERVAL_MS", "200")
            .env("RUST_LOG", "info,moetune_scheduler=debug")
            .stderr(std::fs::File::create(logs.join("scheduler.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    let _runner = KillOnDrop(
        runner_command(&env, "metrics-runner")
            .env("MOETUNE_METRICS_ADDR", format!("127.0.0.1:{runner_port}"))
            .env("MOETUNE_LOG_FORMAT", "json")
            .stderr(std::fs::File::create(logs.join("runner.log")).unwrap())
            .spawn()
            .unwrap(),
    );

    let file = env.upload_demo_dataset().await;
    let body = json!({"model": "moetune/tiny-mixtral", "training_file": file["id"], "method": {"type": "moe_sft_qat", "moe_sft_qat": {"max_steps": 5, "qat": {"steps": 2}}}});
    let job: serde_json::Value = env.post_json("/v1/fine_tuning/jobs", body).await.json().await.unwrap();
    let id = job["id"].as_str().unwrap();
    assert_eq!(env.wait_for_job(id, Duration::from_secs(240)).await["status"], "succeeded");

    // The API: requests by route pattern (never the raw path) and their latency.
    let api = scrape(&env.http, &env.url("/metrics")).await;
    let polled = sample(&api, r#"moetune_http_requests_total{method="GET",route="/v1/fine_tuning/jobs/{id}",status="200"}"#).unwrap_or(0.0);
    assert!(polled >= 1.0, "{api}");
    assert!(sample(&api, r#"moetune_http_request_duration_seconds_count{method="POST",route="/v1/files"}"#) == Some(1.0), "{api}");
    assert!(!api.contains(id), "a job id in a label would make a series per job");

    // The runner: steps by stage, throughput, the job's outcome.
    let runner = scrape(&env.http, &format!("http://127.0.0.1:{runner_port}/metrics")).await;
    assert_eq!(sample(&runner, r#"moetune_runner_steps_total{stage="sft"}"#), Some(5.0), "{runner}");
    assert_eq!(sample(&runner, r#"moetune_runner_steps_total{stage="qat"}"#), Some(2.0), "{runner}");
    assert_eq!(sample(&runner, r#"moetune_runner_jobs_total{outcome="succeeded"}"#), Some(1.0), "{runner}");
    assert!(sample(&runner, "moetune_runner_training_tokens_per_second").unwrap() > 0.0, "{runner}");
    assert!(sample(&runner, "moetune_runner_trained_tokens_total").unwrap() > 0.0, "{runner}");

    // The scheduler: jobs by status and runners by state (sampled each placement pass), and events.
    let mut scheduler = String::new();
    for _ in 0..50 {
        scheduler = scrape(&env.http, &format!("http://127.0.0.1:{scheduler_port}/metrics")).await;
        if sample(&scheduler, r#"moetune_jobs{status="succeeded"}"#) == Some(1.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(sample(&scheduler, r#"moetune_jobs{status="succeeded"}"#), Some(1.0), "{scheduler}");
    assert_eq!(sample(&scheduler, r#"moetune_runners{state="idle"}"#), Some(1.0), "{scheduler}");
    assert!(sample(&scheduler, r#"moetune_runner_events_total{outcome="recorded"}"#).unwrap() >= 9.0, "{scheduler}");
    assert!(scheduler.contains("moetune_webhook_pending_deliveries 0"), "{scheduler}");

    // The job id is on the scheduler's span for every event it applied, and on the runner's job span
    // (here in JSON lines, as deployments log).
    let scheduler_log = std::fs::read_to_string(logs.join("scheduler.log")).unwrap();
    assert!(scheduler_log.lines().any(|l| l.contains("runner_event") && l.contains(&format!("job_id={id}"))), "{scheduler_log}");
    let runner_log = std::fs::read_to_string(logs.join("runner.log")).unwrap();
    let succeeded = runner_log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l["message"] == "job succeeded")
        .unwrap_or_else(|| panic!("no JSON 'job succeeded' line:\n{runner_log}"));
    assert_eq!(succeeded["span"]["job_id"], id, "{succeeded}");
    std::fs::remove_dir_all(&logs).ok();
}
