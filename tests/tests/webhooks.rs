//! Webhooks against a real receiver on loopback, every delivery verified with the independent
//! `standardwebhooks` crate: signing, the outbox's atomicity, retries with Retry-After, 410 Gone,
//! secret rotation, manual redelivery, and the network policy at registration and at delivery.

use std::time::Duration;

use moetune_e2e::webhook_receiver::Receiver;
use moetune_e2e::{error_of, TestEnv};
use moetune_scheduler::SchedulerConfig;
use serde_json::{json, Value};
use sqlx::PgPool;

const LOOPBACK: &str = "127.0.0.0/8";

async fn start(pool: PgPool) -> TestEnv {
    TestEnv::start_with(pool, |c| c.webhooks.allowed_private_networks = LOOPBACK.into()).await
}

/// The scheduler with a quick retry schedule (`delays_ms`), no jitter, and loopback allowed.
fn scheduler(env: &TestEnv, delays_ms: &str) -> SchedulerConfig {
    let mut config = env.scheduler_config();
    config.webhooks.retry_schedule_ms = delays_ms.into();
    config.webhooks.jitter = 0.0;
    config.webhooks.poll_interval_ms = 50;
    config.webhooks.request_timeout_ms = 2000;
    config.webhooks.allowed_private_networks = LOOPBACK.into();
    config
}

fn spawn_scheduler(env: &TestEnv, config: SchedulerConfig) -> tokio::task::JoinHandle<anyhow::Result<()>> {
    tokio::spawn(moetune_scheduler::run(config, env.pool.clone(), std::future::pending()))
}

async fn register(env: &TestEnv, body: Value) -> Value {
    let response = env.post_json("/v1/webhook_endpoints", body).await;
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    response.json().await.unwrap()
}

/// Creates a job on the demo dataset and cancels it: one `fine_tuning.job.cancelled` event.
async fn cancelled_job(env: &TestEnv, file_id: &Value) -> String {
    let job: Value = env.post_json("/v1/fine_tuning/jobs", json!({"model": "moetune/tiny-mixtral", "training_file": file_id})).await.json().await.unwrap();
    let id = job["id"].as_str().unwrap_or_else(|| panic!("job not created: {job}")).to_string();
    let cancelled = env.post_json(&format!("/v1/fine_tuning/jobs/{id}/cancel"), json!({})).await;
    assert_eq!(cancelled.status(), 200);
    id
}

async fn error_code(response: reqwest::Response, status: u16) -> String {
    error_of(response, status).await["code"].as_str().unwrap().to_string()
}

async fn wait_until(what: &str, mut check: impl AsyncFnMut() -> bool) {
    for _ in 0..200 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting until {what}");
}

#[sqlx::test(migrations = "../migrations")]
async fn a_cancelled_job_is_announced_signed_and_listed(pool: PgPool) {
    let env = start(pool).await;
    let receiver = Receiver::start().await;
    let endpoint = register(&env, json!({"url": receiver.url, "event_types": ["fine_tuning.job.cancelled"], "description": "portal"})).await;
    assert_eq!((endpoint["object"].as_str(), endpoint["enabled"].as_bool()), (Some("webhook_endpoint"), Some(true)));
    let secret = endpoint["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("whsec_"));
    let endpoint_id = endpoint["id"].as_str().unwrap();
    assert!(env.get_json(&format!("/v1/webhook_endpoints/{endpoint_id}")).await.get("secret").is_none(), "the secret is shown once");
    let _scheduler = spawn_scheduler(&env, scheduler(&env, "0,100"));

    let file = env.upload_demo_dataset().await;
    let job_id = cancelled_job(&env, &file["id"]).await;
    let delivery = receiver.wait_for(1, Duration::from_secs(10)).await.remove(0);
    delivery.verify(&secret).expect("standardwebhooks verifies the delivery");
    assert!(delivery.verify("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_err(), "another secret does not verify");
    let payload = delivery.json();
    assert_eq!(payload["object"], "event");
    assert_eq!(payload["type"], "fine_tuning.job.cancelled");
    assert_eq!(payload["data"], json!({"id": job_id}));
    assert_eq!(delivery.header("webhook-id"), payload["id"].as_str().unwrap());
    assert!(payload["id"].as_str().unwrap().starts_with("evt_"));
    assert_eq!(delivery.header("content-type"), "application/json");

    // Only the subscribed type was delivered, but the event log and the attempts are listed.
    let events = env.get_json("/v1/webhook_events").await;
    assert_eq!(events["data"][0], payload);
    wait_until("the attempt is recorded", async || {
        env.get_json(&format!("/v1/webhook_endpoints/{endpoint_id}/attempts")).await["data"].as_array().unwrap().len() == 1
    })
    .await;
    let attempts = env.get_json(&format!("/v1/webhook_endpoints/{endpoint_id}/attempts")).await;
    let attempt = &attempts["data"][0];
    assert_eq!((attempt["status"].as_str(), attempt["response_status_code"].as_i64()), (Some("succeeded"), Some(200)));
    assert_eq!((attempt["trigger"].as_str(), attempt["response_body"].as_str()), (Some("scheduled"), Some("answered 200")));
    assert_eq!(attempt["event_id"], payload["id"]);
    assert_eq!(attempt["object"], "webhook_attempt");

    // Another tenant sees none of it.
    let other = env.token_for("globex", None).await;
    let foreign = env.http.get(env.url(&format!("/v1/webhook_endpoints/{endpoint_id}"))).bearer_auth(&other).send().await.unwrap();
    assert_eq!(foreign.status(), 404);
    let foreign_events: Value = env.http.get(env.url("/v1/webhook_events")).bearer_auth(&other).send().await.unwrap().json().await.unwrap();
    assert_eq!(foreign_events["data"], json!([]));
}

#[sqlx::test(migrations = "../migrations")]
async fn failures_are_retried_on_schedule_honouring_retry_after(pool: PgPool) {
    let env = start(pool).await;
    let receiver = Receiver::start().await;
    receiver.script(&[(500, None), (503, Some("2")), (200, None)]);
    let endpoint = register(&env, json!({"url": receiver.url})).await;
    let _scheduler = spawn_scheduler(&env, scheduler(&env, "0,100,100,100"));

    let file = env.upload_demo_dataset().await;
    cancelled_job(&env, &file["id"]).await;
    let received = receiver.wait_for(3, Duration::from_secs(15)).await;
    let ids: Vec<&str> = received.iter().map(|d| d.header("webhook-id")).collect();
    assert!(ids.iter().all(|id| *id == ids[0]), "retries keep the webhook-id: {ids:?}");
    for delivery in &received {
        delivery.verify(endpoint["secret"].as_str().unwrap()).expect("every attempt is signed");
    }
    let first_gap = received[1].at - received[0].at;
    let second_gap = received[2].at - received[1].at;
    assert!(first_gap < Duration::from_millis(1500), "the schedule's 100 ms: {first_gap:?}");
    assert!(second_gap >= Duration::from_millis(1900), "Retry-After: 2 was not honoured: {second_gap:?}");

    let endpoint_id = endpoint["id"].as_str().unwrap();
    wait_until("three attempts are listed", async || {
        env.get_json(&format!("/v1/webhook_endpoints/{endpoint_id}/attempts")).await["data"].as_array().unwrap().len() == 3
    })
    .await;
    let attempts = env.get_json(&format!("/v1/webhook_endpoints/{endpoint_id}/attempts?limit=2")).await;
    assert_eq!(attempts["has_more"], true);
    let codes: Vec<i64> = attempts["data"].as_array().unwrap().iter().map(|a| a["response_status_code"].as_i64().unwrap()).collect();
    assert_eq!(codes, [200, 503], "newest first");
    let last = attempts["data"][1]["id"].as_str().unwrap();
    let rest = env.get_json(&format!("/v1/webhook_endpoints/{endpoint_id}/attempts?after={last}")).await;
    assert_eq!(rest["data"][0]["response_status_code"], 500);
    assert_eq!(rest["has_more"], false);
}

#[sqlx::test(migrations = "../migrations")]
async fn an_exhausted_schedule_fails_the_delivery_and_redelivery_starts_again(pool: PgPool) {
    let env = start(pool).await;
    let receiver = Receiver::start().await;
    receiver.script(&[(500, None), (502, None)]);
    let endpoint = register(&env, json!({"url": receiver.url})).await;
    let endpoint_id = endpoint["id"].as_str().unwrap();
    let _scheduler = spawn_scheduler(&env, scheduler(&env, "0,100"));
    let file = env.upload_demo_dataset().await;
    cancelled_job(&env, &file["id"]).await;
    receiver.wait_for(2, Duration::from_secs(10)).await;
    wait_until("the delivery has failed", async || {
        let status: Option<String> = sqlx::query_scalar("SELECT status FROM webhook_deliveries").fetch_optional(&env.pool).await.unwrap();
        status.as_deref() == Some("failed")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.received().len(), 2, "two attempts, as scheduled, then no more");

    let event_id = receiver.received()[0].header("webhook-id").to_string();
    let redelivered = env.post_json(&format!("/v1/webhook_endpoints/{endpoint_id}/events/{event_id}/redeliver"), json!({})).await;
    assert_eq!(redelivered.status(), 202);
    let third = receiver.wait_for(3, Duration::from_secs(10)).await.remove(2);
    assert_eq!(third.header("webhook-id"), event_id);
    wait_until("the manual attempt is listed", async || {
        let attempts = env.get_json(&format!("/v1/webhook_endpoints/{endpoint_id}/attempts?event_id={event_id}")).await;
        attempts["data"][0]["trigger"] == "manual" && attempts["data"][0]["status"] == "succeeded"
    })
    .await;
    let unknown = env.post_json(&format!("/v1/webhook_endpoints/{endpoint_id}/events/evt_nope/redeliver"), json!({})).await;
    assert_eq!(error_code(unknown, 404).await, "not_found");
}

#[sqlx::test(migrations = "../migrations")]
async fn gone_disables_the_endpoint_until_it_is_enabled(pool: PgPool) {
    let env = start(pool).await;
    let receiver = Receiver::start().await;
    receiver.script(&[(410, None)]);
    let endpoint = register(&env, json!({"url": receiver.url})).await;
    let endpoint_id = endpoint["id"].as_str().unwrap();
    let _scheduler = spawn_scheduler(&env, scheduler(&env, "0,100,100"));
    let file = env.upload_demo_dataset().await;
    cancelled_job(&env, &file["id"]).await;
    receiver.wait_for(1, Duration::from_secs(10)).await;
    wait_until("the endpoint is disabled", async || env.get_json(&format!("/v1/webhook_endpoints/{endpoint_id}")).await["enabled"] == false).await;
    let disabled = env.get_json(&format!("/v1/webhook_endpoints/{endpoint_id}")).await;
    assert!(disabled["disabled_reason"].as_str().unwrap().contains("410 Gone"), "{disabled}");

    // Nothing more goes to it, not even a retry, and redelivery is refused until it is enabled.
    let event_id = receiver.received()[0].header("webhook-id").to_string();
    cancelled_job(&env, &file["id"]).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(receiver.received().len(), 1);
    let refused = env.post_json(&format!("/v1/webhook_endpoints/{endpoint_id}/events/{event_id}/redeliver"), json!({})).await;
    assert_eq!(error_code(refused, 409).await, "webhook_endpoint_disabled");

    let enabled: Value = env.http.patch(env.url(&format!("/v1/webhook_endpoints/{endpoint_id}"))).bearer_auth(&env.token).json(&json!({"enabled": true})).send().await.unwrap().json().await.unwrap();
    assert_eq!((enabled["enabled"].as_bool(), enabled["disabled_reason"].as_str()), (Some(true), None));
    let redelivered = env.post_json(&format!("/v1/webhook_endpoints/{endpoint_id}/events/{event_id}/redeliver"), json!({})).await;
    assert_eq!(redelivered.status(), 202);
    let again = receiver.wait_for(2, Duration::from_secs(10)).await.remove(1);
    assert_eq!(again.header("webhook-id"), event_id);
    again.verify(endpoint["secret"].as_str().unwrap()).unwrap();
}

#[sqlx::test(migrations = "../migrations")]
async fn a_rotated_secret_keeps_signing_through_its_grace_period(pool: PgPool) {
    let env = start(pool).await;
    let receiver = Receiver::start().await;
    let endpoint = register(&env, json!({"url": receiver.url})).await;
    let endpoint_id = endpoint["id"].as_str().unwrap();
    let old = endpoint["secret"].as_str().unwrap().to_string();
    let typo = env.post_json(&format!("/v1/webhook_endpoints/{endpoint_id}/rotate_secret"), json!({"grace_period": 60})).await;
    assert_eq!(error_code(typo, 400).await, "invalid_request_body", "an unknown field is refused, not ignored");
    let chosen = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let rotated: Value = env.post_json(&format!("/v1/webhook_endpoints/{endpoint_id}/rotate_secret"), json!({"secret": chosen, "grace_period_seconds": 3600})).await.json().await.unwrap();
    assert_eq!(rotated["secret"], chosen);
    assert!(rotated["previous_secret_expires_at"].as_i64().unwrap() > chrono_now() + 3500);
    let _scheduler = spawn_scheduler(&env, scheduler(&env, "0,100"));
    let file = env.upload_demo_dataset().await;
    cancelled_job(&env, &file["id"]).await;
    let during = receiver.wait_for(1, Duration::from_secs(10)).await.remove(0);
    assert_eq!(during.header("webhook-signature").split(' ').count(), 2);
    during.verify(&old).expect("the old secret verifies during the grace period");
    during.verify(chosen).expect("the new secret verifies");

    // Rotating with no grace: only the newest secret signs.
    let newest: Value = env.post_json(&format!("/v1/webhook_endpoints/{endpoint_id}/rotate_secret"), json!({"grace_period_seconds": 0})).await.json().await.unwrap();
    assert!(newest["previous_secret_expires_at"].is_null());
    cancelled_job(&env, &file["id"]).await;
    let after = receiver.wait_for(2, Duration::from_secs(10)).await.remove(1);
    after.verify(newest["secret"].as_str().unwrap()).unwrap();
    assert!(after.verify(chosen).is_err());
    assert!(after.verify(&old).is_err());
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

#[sqlx::test(migrations = "../migrations")]
async fn registration_refuses_what_cannot_work(pool: PgPool) {
    let env = TestEnv::start(pool).await;
    let refused = |body: Value| env.post_json("/v1/webhook_endpoints", body);
    let private = refused(json!({"url": "http://127.0.0.1:9/hooks"})).await;
    let error: Value = private.json().await.unwrap();
    assert_eq!(error["error"]["code"], "invalid_webhook_url");
    assert!(error["error"]["message"].as_str().unwrap().contains("private"), "{error}");
    assert_eq!(error_code(refused(json!({"url": "http://169.254.169.254/latest/meta-data"})).await, 400).await, "invalid_webhook_url");
    assert_eq!(error_code(refused(json!({"url": "ftp://example.com/"})).await, 400).await, "invalid_webhook_url");
    assert_eq!(error_code(refused(json!({"url": "https://1.1.1.1/hooks", "event_types": ["job.done"]})).await, 400).await, "invalid_event_type");
    assert_eq!(error_code(refused(json!({"url": "https://1.1.1.1/hooks", "secret": "hunter2"})).await, 400).await, "invalid_webhook_secret");
    let public = env.post_json("/v1/webhook_endpoints", json!({"url": "https://1.1.1.1/hooks"})).await;
    assert_eq!(public.status(), 200, "a public address needs no allowlist");
    let read_only = env.token_for("acme", Some(&[moetune_api::auth::Scope::WebhooksRead])).await;
    let forbidden = env.http.post(env.url("/v1/webhook_endpoints")).bearer_auth(read_only).json(&json!({"url": "https://1.1.1.1/hooks"})).send().await.unwrap();
    assert_eq!(error_code(forbidden, 403).await, "insufficient_scope");
}

/// The api allowed the URL, but the scheduler's own policy does not: the delivery is refused at
/// connection time (as for a name that re-resolves to a private address) and the attempt says why.
#[sqlx::test(migrations = "../migrations")]
async fn deliveries_are_checked_again_when_sent(pool: PgPool) {
    let env = start(pool).await;
    let receiver = Receiver::start().await;
    let by_name = receiver.url.replace("127.0.0.1", "localhost");
    let endpoint = register(&env, json!({"url": by_name})).await;
    let endpoint_id = endpoint["id"].as_str().unwrap();
    let mut config = scheduler(&env, "0");
    config.webhooks.allowed_private_networks = String::new();
    let _scheduler = spawn_scheduler(&env, config);
    let file = env.upload_demo_dataset().await;
    cancelled_job(&env, &file["id"]).await;
    wait_until("the refused attempt is listed", async || {
        env.get_json(&format!("/v1/webhook_endpoints/{endpoint_id}/attempts")).await["data"].as_array().unwrap().len() == 1
    })
    .await;
    let attempt = env.get_json(&format!("/v1/webhook_endpoints/{endpoint_id}/attempts")).await["data"][0].clone();
    assert_eq!(attempt["status"], "failed");
    assert!(attempt["response_status_code"].is_null());
    assert!(attempt["error"].as_str().unwrap().contains("private"), "{attempt}");
    assert!(receiver.received().is_empty());
}

/// Events are written in the transaction of the state change: a rolled-back change leaves none.
#[sqlx::test(migrations = "../migrations")]
async fn events_commit_and_roll_back_with_their_state_change(pool: PgPool) {
    let env = start(pool).await;
    let receiver = Receiver::start().await;
    register(&env, json!({"url": receiver.url})).await;
    let file = env.upload_demo_dataset().await;
    let job: Value = env.post_json("/v1/fine_tuning/jobs", json!({"model": "moetune/tiny-mixtral", "training_file": file["id"]})).await.json().await.unwrap();
    let id = job["id"].as_str().unwrap();
    let count = async || -> (i64, i64) {
        sqlx::query_as("SELECT (SELECT count(*) FROM webhook_events), (SELECT count(*) FROM webhook_deliveries)").fetch_one(&env.pool).await.unwrap()
    };
    let mut tx = env.pool.begin().await.unwrap();
    moetune_domain::store::transition(&mut tx, &moetune_types::JobId::parse(id).unwrap(), 1, moetune_types::JobStatus::Running, "started".into()).await.unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(count().await, (0, 0));
    let mut tx = env.pool.begin().await.unwrap();
    moetune_domain::store::transition(&mut tx, &moetune_types::JobId::parse(id).unwrap(), 1, moetune_types::JobStatus::Running, "started".into()).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(count().await, (1, 1));
    let event = env.get_json("/v1/webhook_events").await["data"][0].clone();
    assert_eq!((event["type"].as_str(), event["data"]["id"].as_str()), (Some("fine_tuning.job.running"), Some(id)));
}

/// Old events go with their deliveries and attempts, except while a delivery is pending.
#[sqlx::test(migrations = "../migrations")]
async fn events_past_their_retention_are_pruned(pool: PgPool) {
    let env = start(pool).await;
    let receiver = Receiver::start().await;
    register(&env, json!({"url": receiver.url})).await;
    let file = env.upload_demo_dataset().await;
    for _ in 0..3 {
        cancelled_job(&env, &file["id"]).await;
    }
    // Age two of the three events past the 30 days; one of those still has its delivery pending.
    let ids: Vec<String> = sqlx::query_scalar("SELECT id FROM webhook_events ORDER BY created_at").fetch_all(&env.pool).await.unwrap();
    sqlx::query("UPDATE webhook_events SET created_at = now() - interval '40 days' WHERE id = ANY($1)").bind(&ids[..2]).execute(&env.pool).await.unwrap();
    sqlx::query("UPDATE webhook_deliveries SET status = 'delivered' WHERE event_id <> $1").bind(&ids[1]).execute(&env.pool).await.unwrap();
    sqlx::query("INSERT INTO webhook_attempts (id, delivery_id, event_id, endpoint_id, trigger, status, duration_ms) SELECT 'atmpt_old', id, event_id, endpoint_id, 'scheduled', 'succeeded', 1 FROM webhook_deliveries WHERE event_id = $1")
        .bind(&ids[0])
        .execute(&env.pool)
        .await
        .unwrap();

    let metrics = std::sync::Arc::new(moetune_scheduler::metrics::Metrics::default());
    let dispatcher = moetune_scheduler::webhooks::dispatch::Dispatcher::new(env.pool.clone(), scheduler(&env, "0").webhooks, metrics).unwrap();
    assert_eq!(dispatcher.prune().await.unwrap(), 1);
    let left: Vec<String> = sqlx::query_scalar("SELECT id FROM webhook_events ORDER BY created_at").fetch_all(&env.pool).await.unwrap();
    assert_eq!(left, ids[1..], "the old delivered event went; the old pending one and the recent one stay");
    let attempts: i64 = sqlx::query_scalar("SELECT count(*) FROM webhook_attempts WHERE id = 'atmpt_old'").fetch_one(&env.pool).await.unwrap();
    assert_eq!(attempts, 0, "its attempts went with it");
}

/// A slow endpoint holds at most `per_endpoint_concurrency` of the dispatcher's slots: another
/// tenant's delivery goes out at once instead of waiting behind its backlog.
#[sqlx::test(migrations = "../migrations")]
async fn a_slow_endpoint_does_not_delay_other_tenants(pool: PgPool) {
    let env = start(pool).await;
    let slow = Receiver::start().await;
    slow.answer_after(Duration::from_millis(1500));
    let fast = Receiver::start().await;
    register(&env, json!({"url": slow.url})).await;
    let file = env.upload_demo_dataset().await;
    for _ in 0..8 {
        cancelled_job(&env, &file["id"]).await;
    }
    let mut config = scheduler(&env, "0,60000");
    (config.webhooks.concurrency, config.webhooks.per_endpoint_concurrency) = (2, 1);
    let _scheduler = spawn_scheduler(&env, config);
    slow.wait_for(1, Duration::from_secs(10)).await;

    // Another tenant's endpoint and event, while the slow backlog (about 12 s of answers) drains.
    let globex = env.token_for("globex", None).await;
    let registered = env.http.post(env.url("/v1/webhook_endpoints")).bearer_auth(&globex).json(&json!({"url": fast.url})).send().await.unwrap();
    assert_eq!(registered.status(), 200);
    let form = reqwest::multipart::Form::new().text("purpose", "fine-tune").part("file", reqwest::multipart::Part::bytes(b"{\"prompt\": \"a\", \"completion\": \"b\"}\n".to_vec()).file_name("d.jsonl"));
    let file: Value = env.http.post(env.url("/v1/files")).bearer_auth(&globex).multipart(form).send().await.unwrap().json().await.unwrap();
    let job: Value = env.http.post(env.url("/v1/fine_tuning/jobs")).bearer_auth(&globex).json(&json!({"model": "moetune/tiny-mixtral", "training_file": file["id"]})).send().await.unwrap().json().await.unwrap();
    let sent = std::time::Instant::now();
    let cancelled = env.http.post(env.url(&format!("/v1/fine_tuning/jobs/{}/cancel", job["id"].as_str().unwrap()))).bearer_auth(&globex).send().await.unwrap();
    assert_eq!(cancelled.status(), 200);
    let delivered = fast.wait_for(1, Duration::from_secs(10)).await;
    let waited = delivered[0].at.duration_since(sent);
    assert!(waited < Duration::from_millis(1200), "the other tenant's delivery waited {waited:?} behind the slow endpoint");
    assert!(slow.received().len() < 8, "the slow backlog was still draining");
}

/// The dispatcher ignores proxy variables: a proxy would resolve tenants' hosts itself, past the
/// network policy's resolver (and here it does not even exist).
#[sqlx::test(migrations = "../migrations")]
async fn deliveries_ignore_proxy_variables(pool: PgPool) {
    let env = start(pool).await;
    let receiver = Receiver::start().await;
    register(&env, json!({"url": receiver.url})).await;
    let _scheduler = moetune_e2e::KillOnDrop(
        moetune_e2e::scheduler_command(&env)
            .env("MOETUNE_WEBHOOKS__ALLOWED_PRIVATE_NETWORKS", LOOPBACK)
            .env("MOETUNE_WEBHOOKS__POLL_INTERVAL_MS", "50")
            .env("HTTP_PROXY", "http://127.0.0.1:9")
            .env("HTTPS_PROXY", "http://127.0.0.1:9")
            .env("ALL_PROXY", "http://127.0.0.1:9")
            .spawn()
            .unwrap(),
    );
    let file = env.upload_demo_dataset().await;
    cancelled_job(&env, &file["id"]).await;
    let delivered = receiver.wait_for(1, Duration::from_secs(20)).await;
    assert_eq!(delivered[0].json()["type"], "fine_tuning.job.cancelled");
}
