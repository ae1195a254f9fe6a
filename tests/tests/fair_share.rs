//! Fair share across tenants: tenant A queues 50 jobs, then tenant B one; with one runner, B's job
//! starts before A's third. A's last job, with priority 9, goes ahead of A's others, but not of B's.

use std::time::Duration;

use moetune_e2e::{spawn_runner, TestEnv};
use serde_json::{json, Value};
use sqlx::PgPool;

#[sqlx::test(migrations = "../migrations")]
async fn one_tenants_backlog_does_not_starve_another(pool: PgPool) {
    let env = TestEnv::start(pool.clone()).await;
    let _scheduler = tokio::spawn(moetune_scheduler::run(env.scheduler_config(), pool.clone(), std::future::pending()));
    let quota = json!({"name": "acme", "max_concurrent_jobs": 100});
    let set = env.http.post(env.url("/v1/admin/tenants")).bearer_auth(env.admin_token().await).json(&quota).send().await.unwrap();
    assert_eq!(set.status(), 200);
    let _runner = spawn_runner(&env, "only-runner");

    let data = b"{\"prompt\": \"2+2?\", \"completion\": \"4\"}\n".repeat(8);
    let body = |file: &Value| json!({"model": "moetune/tiny-mixtral", "training_file": file["id"],
        "method": {"type": "moe_sft_qat", "moe_sft_qat": {"max_steps": 2, "qat": {"steps": 1}}}});
    let a_file: Value = env.upload("fine-tune", "a.jsonl", data.clone()).await.json().await.unwrap();
    let mut urgent = String::new();
    for i in 0..50 {
        let mut request = body(&a_file);
        if i == 49 {
            request["priority"] = json!(9);
        }
        let created = env.post_json("/v1/fine_tuning/jobs", request).await;
        assert_eq!(created.status(), 200);
        let created: Value = created.json().await.unwrap();
        if i == 49 {
            assert_eq!(created["priority"], 9);
            urgent = created["id"].as_str().unwrap().to_string();
        }
    }
    let b_token = env.token_for("globex", None).await;
    let form = reqwest::multipart::Form::new().text("purpose", "fine-tune").part("file", reqwest::multipart::Part::bytes(data).file_name("b.jsonl"));
    let b_file: Value = env.http.post(env.url("/v1/files")).bearer_auth(&b_token).multipart(form).send().await.unwrap().json().await.unwrap();
    let b_job: Value = env.http.post(env.url("/v1/fine_tuning/jobs")).bearer_auth(&b_token).json(&body(&b_file)).send().await.unwrap().json().await.unwrap();
    let b_id = b_job["id"].as_str().unwrap().to_string();

    let started = |pool: PgPool| async move {
        sqlx::query_as::<_, (String, String)>(
            "SELECT e.job_id, t.name FROM job_events e JOIN jobs j ON j.id = e.job_id JOIN tenants t ON t.id = j.tenant_id
             WHERE e.message LIKE 'Job started on runner %' ORDER BY e.seq",
        )
        .fetch_all(&pool)
        .await
        .unwrap()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let order = loop {
        let order = started(pool.clone()).await;
        if order.iter().any(|(job, _)| *job == b_id) && order.iter().any(|(job, _)| *job == urgent) {
            break order;
        }
        assert!(tokio::time::Instant::now() < deadline, "B's job never started; started so far: {order:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let a_before_b = order.iter().take_while(|(job, _)| *job != b_id).count();
    assert!(a_before_b <= 2, "{a_before_b} of A's jobs started before B's: {order:?}");
    let urgent_at = order.iter().position(|(job, _)| *job == urgent).unwrap();
    assert!(urgent_at <= 3, "A's priority-9 job started {}th: {order:?}", urgent_at + 1);
}

#[sqlx::test(migrations = "../migrations")]
async fn priority_is_checked(pool: PgPool) {
    let env = TestEnv::start(pool).await;
    let file: Value = env.upload("fine-tune", "a.jsonl", b"{\"prompt\": \"a\", \"completion\": \"b\"}\n".to_vec()).await.json().await.unwrap();
    let wrong_type = env.post_json("/v1/fine_tuning/jobs", json!({"model": "moetune/tiny-mixtral", "training_file": file["id"], "priority": "high"})).await;
    assert_eq!(wrong_type.status(), 400);
    for bad in [json!(10), json!(-1)] {
        let response = env.post_json("/v1/fine_tuning/jobs", json!({"model": "moetune/tiny-mixtral", "training_file": file["id"], "priority": bad})).await;
        assert_eq!(response.status(), 400, "{bad}");
        let error: Value = response.json().await.unwrap();
        assert!(error["error"]["message"].as_str().unwrap().contains("priority"), "{error}");
    }
    let job: Value = env.post_json("/v1/fine_tuning/jobs", json!({"model": "moetune/tiny-mixtral", "training_file": file["id"]})).await.json().await.unwrap();
    assert_eq!(job["priority"], 0);
}
