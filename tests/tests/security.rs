//! The API as an attacker sees it: every route under every spelling of its path, for a tenant token, a
//! read-only key and no credential at all; the JWT and startup checks; echoed input and the metrics
//! labels callers control. Requests whose paths must reach the server byte for byte go over a raw TCP
//! connection (HTTP clients normalise dot segments away).

use moetune_api::auth::Scope;
use moetune_api::routes::V1_ROUTES;
use moetune_types::{JobId, RunnerId};
use moetune_e2e::{error_of, TestEnv};
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sends `METHOD PATH` exactly as written (an empty JSON body) and returns the status and body.
async fn raw(env: &TestEnv, method: &str, path: &str, bearer: Option<&str>) -> (u16, String) {
    let addr = env.base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let auth = bearer.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.expect("read");
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no status line in {text:?}"));
    (status, text)
}

/// A concrete path for a route pattern.
fn concrete(pattern: &str) -> String {
    pattern
        .replace("{id:.*}", "moetune/tiny-mixtral")
        .replace("{name:.*}", "merged/model.safetensors")
        .replace("{event_id}", "evt_1")
        .replace("{name}", "acme")
        .replace("{id}", "x1")
}

/// Spellings of `path` a router might treat differently from the scope check: the original, the
/// first letter of each literal segment percent-encoded, a doubled slash, a dot segment, another case
/// and a trailing slash.
fn spellings(pattern: &str) -> Vec<(&'static str, String)> {
    let path = concrete(pattern);
    let rest = path.strip_prefix("/v1/").expect("under /v1");
    let literal: Vec<&str> = pattern.trim_start_matches("/v1/").split('/').collect();
    let encoded: Vec<String> = rest
        .split('/')
        .enumerate()
        .map(|(i, segment)| match literal.get(i) {
            Some(l) if !l.starts_with('{') && !segment.is_empty() => format!("%{:02X}{}", segment.as_bytes()[0], &segment[1..]),
            _ => segment.to_string(),
        })
        .collect();
    vec![
        ("plain", path.clone()),
        ("percent-encoded", format!("/v1/{}", encoded.join("/"))),
        ("double slash", format!("/v1//{rest}")),
        ("dot segment", format!("/v1/files/../{rest}")),
        ("case changed", format!("/v1/{}", rest.to_uppercase())),
        ("trailing slash", format!("{path}/")),
    ]
}

#[sqlx::test(migrations = "../migrations")]
async fn every_route_under_every_spelling_enforces_its_declared_scope(pool: PgPool) {
    let env = TestEnv::start(pool).await;
    let read_only = env.api_key("acme", "dashboard", Some(&["files:read", "jobs:read"])).await;
    let read_only_scopes = [Scope::FilesRead, Scope::JobsRead];
    let callers: [(&str, Option<&str>, &[Scope]); 3] = [("tenant token", Some(&env.token), &Scope::TENANT), ("read-only key", Some(&read_only), &read_only_scopes), ("no credential", None, &[])];
    let keys_before: i64 = sqlx::query_scalar("SELECT count(*) FROM api_keys").fetch_one(&env.pool).await.unwrap();

    let mut checked = 0;
    for route in V1_ROUTES {
        for (caller, credential, scopes) in callers {
            let allowed = scopes.contains(&route.scope);
            for (spelling, path) in spellings(route.pattern) {
                let (status, response) = raw(&env, route.method, &path, credential).await;
                let at = format!("{caller}: {} {path} ({spelling} spelling of {}) answered {status}", route.method, route.pattern);
                assert!(status < 500, "{at}\n{response}");
                assert!(!response.contains("\0"), "{at}");
                match (credential, allowed, spelling) {
                    (None, _, "case changed") => assert!(status == 401 || status == 404, "{at}"),
                    (None, _, _) => assert_eq!(status, 401, "{at}"),
                    (Some(_), false, "plain" | "percent-encoded") => {
                        assert_eq!(status, 403, "{at}");
                        assert!(response.contains("insufficient_scope") && response.contains(route.pattern), "{at}\n{response}");
                    }
                    (Some(_), false, _) => assert!(matches!(status, 403 | 404 | 405), "{at}\n{response}"),
                    (Some(_), true, "plain" | "percent-encoded") => assert!(status != 401 && status != 403, "{at}\n{response}"),
                    (Some(_), true, _) => {}
                }
                checked += 1;
            }
        }
    }
    assert_eq!(checked, V1_ROUTES.len() * 3 * 6);
    let keys_after: i64 = sqlx::query_scalar("SELECT count(*) FROM api_keys").fetch_one(&env.pool).await.unwrap();
    assert_eq!(keys_before, keys_after, "no spelling created an API key");

    // The reported attack, as sent: a tenant token asking for an admin key through `%61dmin`.
    let attack = env
        .http
        .post(env.url("/v1/%61dmin/api_keys"))
        .bearer_auth(&env.token)
        .json(&json!({"tenant": "acme", "name": "x", "scopes": ["admin"]}))
        .send()
        .await
        .unwrap();
    let error = error_of(attack, 403).await;
    assert_eq!(error["code"], "insufficient_scope");
    let runners = env.http.get(env.url("/v1/%72unners")).bearer_auth(&env.token).send().await.unwrap();
    assert_eq!(runners.status(), 403);
    let drain = env.http.post(env.url("/v1/%72unners/r1/drain")).bearer_auth(&env.token).send().await.unwrap();
    assert_eq!(drain.status(), 403);

    // A path no route matches: 404 for a credential (without echoing the path), 401 without one.
    let (status, body) = raw(&env, "GET", "/v1/nowhere/%00%1b[31m", Some(&env.token)).await;
    assert_eq!(status, 404);
    assert!(body.contains("unknown_route") && !body.contains("nowhere"), "{body}");
    assert_eq!(raw(&env, "GET", "/v1/nowhere", None).await.0, 401);
}

#[sqlx::test(migrations = "../migrations")]
async fn tokens_need_a_strong_secret_a_real_tenant_and_a_started_validity(pool: PgPool) {
    let env = TestEnv::start(pool.clone()).await;
    // Startup refuses a short or placeholder secret unless development mode says otherwise.
    for (secret, expected) in [("short", "at least 32"), ("change-me-in-production", "placeholder"), ("CHANGE-ME", "placeholder")] {
        let mut config = env.config.clone();
        (config.jwt_secret, config.bind_addr) = (secret.into(), "127.0.0.1:0".into());
        let refused = moetune_api::Application::build_with_pool(config.clone(), pool.clone()).await.err().expect("weak secret refused");
        assert!(refused.to_string().contains(expected), "{refused}");
        config.allow_insecure_jwt_secret = true;
        assert!(moetune_api::Application::build_with_pool(config, pool.clone()).await.is_ok(), "development mode accepts {secret:?}");
    }

    use jsonwebtoken::{encode, EncodingKey, Header};
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let key = EncodingKey::from_secret(env.config.jwt_secret.as_bytes());
    let acme = moetune_api::auth::ensure_tenant(&env.pool, "acme").await.unwrap().0;
    let token = |sub: uuid::Uuid, nbf: Option<i64>| {
        let mut claims = json!({"sub": sub, "iss": env.config.jwt_issuer, "aud": env.config.jwt_audience, "iat": now, "exp": now + 600});
        if let Some(nbf) = nbf {
            claims["nbf"] = json!(nbf);
        }
        encode(&Header::default(), &claims, &key).unwrap()
    };
    let files = |token: String| env.http.get(env.url("/v1/files")).bearer_auth(token).send();
    assert_eq!(files(token(acme, Some(now - 10))).await.unwrap().status(), 200);
    let early = error_of(files(token(acme, Some(now + 3600))).await.unwrap(), 401).await;
    assert!(early["message"].as_str().unwrap().contains("ImmatureSignature"), "{early}");
    let nobody = error_of(files(token(uuid::Uuid::new_v4(), None)).await.unwrap(), 401).await;
    assert!(nobody["message"].as_str().unwrap().contains("tenant that does not exist"), "{nobody}");
}

#[sqlx::test(migrations = "../migrations")]
async fn made_up_methods_do_not_add_metric_series(pool: PgPool) {
    let env = TestEnv::start(pool).await;
    let series = |text: &str| text.lines().filter(|l| l.starts_with("moetune_http_requests_total")).count();
    let _ = env.http.get(env.url("/v1/files")).bearer_auth(&env.token).send().await.unwrap();
    let before = series(&env.http.get(env.url("/metrics")).send().await.unwrap().text().await.unwrap());
    for i in 0..200 {
        let _ = raw(&env, &format!("BREW{i}"), &format!("/v1/%2e%2e/x{i}"), None).await;
    }
    let metrics = env.http.get(env.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(series(&metrics) <= before + 2, "made-up methods and paths added series:\n{metrics}");
    assert!(metrics.contains(r#"method="other""#), "{metrics}");
    assert!(!metrics.contains("BREW") && !metrics.contains("x17"), "{metrics}");
}

#[sqlx::test(migrations = "../migrations")]
async fn readiness_names_what_is_down_without_its_error_text(pool: PgPool) {
    let env = TestEnv::start(pool.clone()).await;
    let mut config = env.config.clone();
    config.bind_addr = "127.0.0.1:0".into();
    config.s3.endpoint = "http://127.0.0.1:9".into();
    let app = moetune_api::Application::build_with_pool(config, pool).await.unwrap();
    let url = format!("http://127.0.0.1:{}/readyz", app.port());
    tokio::spawn(app.run_until_stopped());
    let error = error_of(env.http.get(url).send().await.unwrap(), 503).await;
    let message = error["message"].as_str().unwrap();
    assert_eq!(message, "Not ready: s3 unavailable.", "{error}");
}

#[sqlx::test(migrations = "../migrations")]
async fn idempotency_records_keep_no_secret_and_expire(pool: PgPool) {
    let env = TestEnv::start_with(pool, |c| c.upload_sweep_interval_ms = 200).await;
    let admin = env.admin_token().await;
    let create = || {
        env.http
            .post(env.url("/v1/admin/api_keys"))
            .bearer_auth(&admin)
            .header("Idempotency-Key", "create-ci-key")
            .json(&json!({"tenant": "acme", "name": "ci"}))
            .send()
    };
    let first: Value = create().await.unwrap().json().await.unwrap();
    let value = first["value"].as_str().unwrap().to_string();
    let replay = create().await.unwrap();
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    let replayed: Value = replay.json().await.unwrap();
    assert_eq!(replayed["value"], value.as_str(), "a replay answers what the first request did");

    let (key, body): (String, Vec<u8>) = sqlx::query_as("SELECT key, body FROM idempotency_keys").fetch_one(&env.pool).await.unwrap();
    assert!(!key.contains("create-ci-key"), "the key is stored only as an HMAC");
    let secret = value.rsplit('-').next().unwrap();
    assert!(!body.windows(secret.len()).any(|w| w == secret.as_bytes()), "the stored response is sealed");
    assert!(!String::from_utf8_lossy(&body).contains("\"value\""), "the stored response is sealed");

    sqlx::query("UPDATE idempotency_keys SET created_at = now() - interval '25 hours'").execute(&env.pool).await.unwrap();
    for _ in 0..100 {
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM idempotency_keys").fetch_one(&env.pool).await.unwrap();
        if left == 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("an idempotency record older than 24 hours was not deleted");
}

/// Waits until the scheduler's group has taken and acknowledged every entry of `stream`.
async fn settled(redis: &mut redis::aio::ConnectionManager, stream: &str) {
    use redis::AsyncCommands;
    for _ in 0..300 {
        let groups: redis::streams::StreamInfoGroupsReply = redis.xinfo_groups(stream).await.unwrap();
        let newest: redis::streams::StreamRangeReply = redis.xrevrange_count(stream, "+", "-", 1).await.unwrap();
        if let (Some(group), Some(newest)) = (groups.groups.first(), newest.ids.first()) {
            if group.pending == 0 && group.last_delivered_id == newest.id {
                return;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the scheduler did not take every entry of {stream}");
}

/// A runner's credentials let it write its own event stream and nothing else, and what it writes there
/// counts only for jobs it holds, under its attempt's own prefixes.
#[sqlx::test(migrations = "../migrations")]
async fn runner_events_are_bound_to_the_runner_holding_the_attempt(pool: PgPool) {
    use moetune_types::{RunnerEvent, RunnerEventKind};
    use redis::AsyncCommands;
    let env = TestEnv::start(pool.clone()).await;
    let file: Value = env.upload("fine-tune", "d.jsonl", "{\"prompt\": \"a\", \"completion\": \"b\"}\n".into()).await.json().await.unwrap();
    let job: Value = env.post_json("/v1/fine_tuning/jobs", json!({"model": "moetune/tiny-mixtral", "training_file": file["id"]})).await.json().await.unwrap();
    let job = job["id"].as_str().unwrap().to_string();
    let queue = env.queue().await;
    let keys = queue.keys().clone();
    let mut admin = queue.connection();
    for runner in ["honest", "forger"] {
        let _: () = admin.sadd(keys.runners(), runner).await.unwrap();
        let _: () = admin.set(keys.runner_alive(runner), "1").await.unwrap();
    }
    assert_eq!(queue.claim(&RunnerId::parse("honest").unwrap(), "cpu", 1 << 40, 0).await.unwrap().as_deref(), Some(job.as_str()));
    tokio::spawn(moetune_scheduler::run(env.scheduler_config(), pool.clone(), std::future::pending()));

    // The forger's own Redis user, as `moetune-scheduler runner-credentials` makes it.
    let password = uuid::Uuid::new_v4().simple().to_string();
    let user = moetune_domain::registry::create_runner_user(&queue, &RunnerId::parse("forger").unwrap(), &password).await.unwrap();
    let url = format!("redis://{user}:{password}@{}", env.config.redis_url.trim_start_matches("redis://"));
    let mut forger = redis::aio::ConnectionManager::new(redis::Client::open(url).unwrap()).await.unwrap();
    let line = |runner: &str, attempt: i32, kind: RunnerEventKind| serde_json::to_string(&RunnerEvent { job_id: JobId::parse(&job).unwrap(), attempt, runner_id: RunnerId::parse(runner).unwrap(), kind }).unwrap();
    let started = RunnerEventKind::Started { device: "cpu".into(), dtype: "float32".into(), ranks: vec![] };
    let succeeded = RunnerEventKind::Succeeded { trained_tokens: 1, result: json!({}) };

    // Another runner's stream is out of reach.
    let denied: redis::RedisResult<String> = forger.xadd(keys.runner_events("honest"), "*", &[("event", line("honest", 1, started.clone()))]).await;
    assert_eq!(denied.unwrap_err().code(), Some("NOPERM"));
    // On its own stream, claiming to be the holder changes nothing: the stream names the sender.
    let forged_stream = keys.runner_events("forger");
    let _: String = forger.xadd(&forged_stream, "*", &[("event", line("honest", 1, started.clone()))]).await.unwrap();
    settled(&mut admin, &forged_stream).await;
    let state = || sqlx::query_as::<_, (String, i32, Option<String>)>("SELECT status, attempt, runner_id FROM jobs WHERE id = $1").bind(&job).fetch_one(&pool);
    assert_eq!(state().await.unwrap(), ("queued".into(), 1, None), "a runner without the claim cannot start the job");

    let honest_stream = keys.runner_events("honest");
    let _: String = admin.xadd(&honest_stream, "*", &[("event", line("honest", 1, started.clone()))]).await.unwrap();
    settled(&mut admin, &honest_stream).await;
    assert_eq!(state().await.unwrap(), ("running".into(), 1, Some("honest".into())));
    let _: String = forger.xadd(&forged_stream, "*", &[("event", line("honest", 1, succeeded.clone()))]).await.unwrap();
    settled(&mut admin, &forged_stream).await;
    assert_eq!(state().await.unwrap().0, "running", "only the holder may finish the job");

    // The holder may store artifacts only under its attempt's prefix.
    let bucket = &env.config.s3.bucket;
    for uri in [format!("s3://{bucket}/artifacts/ftjob-other/attempt-1/model.safetensors"), format!("s3://{bucket}/artifacts/{job}/attempt-1/../../x"), format!("s3://elsewhere/artifacts/{job}/attempt-1/a")] {
        let artifact = RunnerEventKind::Artifact { name: "stolen".into(), uri, bytes: 1, sha256: "0".repeat(64) };
        let _: String = admin.xadd(&honest_stream, "*", &[("event", line("honest", 1, artifact))]).await.unwrap();
    }
    let good = RunnerEventKind::Artifact { name: "adapter".into(), uri: format!("s3://{bucket}/artifacts/{job}/attempt-1/adapter"), bytes: 1, sha256: "0".repeat(64) };
    let _: String = admin.xadd(&honest_stream, "*", &[("event", line("honest", 1, good))]).await.unwrap();
    settled(&mut admin, &honest_stream).await;
    let names: Vec<String> = sqlx::query_scalar("SELECT name FROM artifacts WHERE job_id = $1").bind(&job).fetch_all(&pool).await.unwrap();
    assert_eq!(names, ["adapter"]);

    // A released job continues as a new attempt: the releasing runner's later writes are stale.
    let released = RunnerEventKind::Released { stage: "sft".into(), step: 1, rank_lost: None };
    let _: String = admin.xadd(&honest_stream, "*", &[("event", line("honest", 1, released))]).await.unwrap();
    let _: String = admin.xadd(&honest_stream, "*", &[("event", line("honest", 1, succeeded))]).await.unwrap();
    settled(&mut admin, &honest_stream).await;
    assert_eq!(state().await.unwrap(), ("queued".into(), 2, None));
}

/// One entry Postgres refuses for good does not hold up the rest: it is retried, then dead-lettered
/// with its job failed and a clear error, and the entries after it are applied.
#[sqlx::test(migrations = "../migrations")]
async fn an_entry_that_cannot_be_applied_is_dead_lettered_and_the_batch_goes_on(pool: PgPool) {
    use moetune_types::{RunnerEvent, RunnerEventKind};
    use redis::AsyncCommands;
    let env = TestEnv::start(pool.clone()).await;
    let file: Value = env.upload("fine-tune", "d.jsonl", "{\"prompt\": \"a\", \"completion\": \"b\"}\n".into()).await.json().await.unwrap();
    let mut jobs = Vec::new();
    for _ in 0..2 {
        let job: Value = env.post_json("/v1/fine_tuning/jobs", json!({"model": "moetune/tiny-mixtral", "training_file": file["id"]})).await.json().await.unwrap();
        jobs.push(job["id"].as_str().unwrap().to_string());
    }
    let queue = env.queue().await;
    let keys = queue.keys().clone();
    let mut redis = queue.connection();
    let _: () = redis.sadd(keys.runners(), "r1").await.unwrap();
    let _: () = redis.set(keys.runner_alive("r1"), "1").await.unwrap();
    for _ in &jobs {
        queue.claim(&RunnerId::parse("r1").unwrap(), "cpu", 1 << 40, 0).await.unwrap().expect("claimed");
    }
    let stream = keys.runner_events("r1");
    let send = |job: &str, kind: RunnerEventKind| serde_json::to_string(&RunnerEvent { job_id: JobId::parse(job).unwrap(), attempt: 1, runner_id: RunnerId::parse("r1").unwrap(), kind }).unwrap();
    let message = |text: &str| RunnerEventKind::Message { level: "info".into(), message: text.into() };
    for job in &jobs {
        let _: String = redis.xadd(&stream, "*", &[("event", send(job, RunnerEventKind::Started { device: "cpu".into(), dtype: "float32".into(), ranks: vec![] }))]).await.unwrap();
    }
    // Postgres cannot store a NUL in a JSON document: this entry fails every time (messages are escaped,
    // event data is stored as sent). The next one is for another job.
    let report = RunnerEventKind::Evaluation { report: json!({"summary": "fine", "table": "bad \u{0} byte"}) };
    let _: String = redis.xadd(&stream, "*", &[("event", send(&jobs[0], report))]).await.unwrap();
    let _: String = redis.xadd(&stream, "*", &[("event", send(&jobs[1], message("after the bad one")))]).await.unwrap();
    tokio::spawn(moetune_scheduler::run(env.scheduler_config(), pool.clone(), std::future::pending()));
    settled(&mut redis, &stream).await;

    let failed = env.get_json(&format!("/v1/fine_tuning/jobs/{}", jobs[0])).await;
    assert_eq!((failed["status"].as_str(), failed["error"]["code"].as_str()), (Some("failed"), Some("event_not_recorded")), "{failed}");
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM job_events WHERE job_id = $1 AND message = 'after the bad one'").bind(&jobs[1]).fetch_one(&pool).await.unwrap();
    assert_eq!(applied, 1, "the entry after the dead-lettered one was applied");
    let dead: Vec<redis::streams::StreamId> = redis.xrange_all::<_, redis::streams::StreamRangeReply>(keys.dead_events()).await.unwrap().ids;
    assert_eq!(dead.len(), 1);
    let error: String = dead[0].get("error").unwrap();
    assert!(error.contains("22P05") || error.contains("\\u0000") || error.to_lowercase().contains("unicode"), "{error}");
    // A runner's message with a NUL is stored escaped, not refused.
    let _: String = redis.xadd(&stream, "*", &[("event", send(&jobs[1], message("nul \u{0} here")))]).await.unwrap();
    settled(&mut redis, &stream).await;
    let stored: String = sqlx::query_scalar("SELECT message FROM job_events WHERE job_id = $1 AND message LIKE 'nul %'").bind(&jobs[1]).fetch_one(&pool).await.unwrap();
    assert_eq!(stored, "nul \\u{0000} here");
}

/// Per-tenant request rate (429 with Retry-After, other tenants unaffected), a cap on open event
/// streams, rate-limited redelivery, and event streams that read Postgres only when their job has news.
#[sqlx::test(migrations = "../migrations")]
async fn tenants_share_the_api_fairly_and_idle_streams_cost_nothing(pool: PgPool) {
    let env = TestEnv::start_with(pool, |c| {
        (c.rate_limits.requests_per_second, c.rate_limits.burst) = (2.0, 12.0);
        (c.rate_limits.streams_per_tenant, c.rate_limits.redeliveries_per_minute) = (2, 2.0);
        c.webhooks.allowed_private_networks = "127.0.0.0/8".into();
    })
    .await;
    let file: Value = env.upload("fine-tune", "d.jsonl", "{\"prompt\": \"a\", \"completion\": \"b\"}\n".into()).await.json().await.unwrap();
    let job: Value = env.post_json("/v1/fine_tuning/jobs", json!({"model": "moetune/tiny-mixtral", "training_file": file["id"]})).await.json().await.unwrap();
    let events = env.url(&format!("/v1/fine_tuning/jobs/{}/events?stream=true", job["id"].as_str().unwrap()));
    let reads = |metrics: String| metrics.lines().find_map(|l| l.strip_prefix("moetune_event_stream_reads_total ")?.parse::<f64>().ok()).unwrap_or(0.0);

    // Two streams stay open on a queued job with no runner; a third is refused.
    let open = [env.http.get(&events).bearer_auth(&env.token).send().await.unwrap(), env.http.get(&events).bearer_auth(&env.token).send().await.unwrap()];
    assert!(open.iter().all(|r| r.status() == 200));
    let third = env.http.get(&events).bearer_auth(&env.token).send().await.unwrap();
    assert_eq!(third.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string()), Some("5".into()));
    assert_eq!(error_of(third, 429).await["code"], "rate_limited");
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let before = reads(env.http.get(env.url("/metrics")).send().await.unwrap().text().await.unwrap());
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let after = reads(env.http.get(env.url("/metrics")).send().await.unwrap().text().await.unwrap());
    assert!(before > 0.0 && after == before, "idle streams read Postgres {} times in 3 s", after - before);
    // A new event wakes them at once.
    let mut tx = env.pool.begin().await.unwrap();
    moetune_domain::store::insert_event(&mut tx, moetune_domain::store::NewEvent::message(&JobId::parse(job["id"].as_str().unwrap()).unwrap(), 1, "news".into())).await.unwrap();
    tx.commit().await.unwrap();
    let [mut first, _second] = open;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(3);
    let mut seen = String::new();
    while !seen.contains("news") {
        let chunk = tokio::time::timeout_at(deadline, first.chunk()).await.expect("the stream was not woken").unwrap().unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }

    // The request bucket: a burst of 12, refilled at 2 per second. Another tenant is unaffected.
    let mut limited = None;
    for _ in 0..30 {
        let response = env.http.get(env.url("/v1/files")).bearer_auth(&env.token).send().await.unwrap();
        if response.status() == 429 {
            limited = Some(response);
            break;
        }
    }
    let limited = limited.expect("30 quick requests were never limited");
    let wait: u64 = limited.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&wait), "Retry-After {wait}");
    assert_eq!(error_of(limited, 429).await["code"], "rate_limited");
    let globex = env.token_for("globex", None).await;
    assert_eq!(env.http.get(env.url("/v1/files")).bearer_auth(&globex).send().await.unwrap().status(), 200);

    // Redelivery has a bucket of its own: 2 a minute.
    let endpoint: Value = env.http.post(env.url("/v1/webhook_endpoints")).bearer_auth(&globex).json(&json!({"url": "http://127.0.0.1:9/hook"})).send().await.unwrap().json().await.unwrap();
    let gfile: Value = env.http.post(env.url("/v1/files")).bearer_auth(&globex)
        .multipart(reqwest::multipart::Form::new().text("purpose", "fine-tune").part("file", reqwest::multipart::Part::bytes(b"{\"prompt\": \"a\", \"completion\": \"b\"}\n".to_vec()).file_name("d.jsonl")))
        .send().await.unwrap().json().await.unwrap();
    let gjob: Value = env.http.post(env.url("/v1/fine_tuning/jobs")).bearer_auth(&globex).json(&json!({"model": "moetune/tiny-mixtral", "training_file": gfile["id"]})).send().await.unwrap().json().await.unwrap();
    env.http.post(env.url(&format!("/v1/fine_tuning/jobs/{}/cancel", gjob["id"].as_str().unwrap()))).bearer_auth(&globex).send().await.unwrap();
    let event_id: String = sqlx::query_scalar("SELECT id FROM webhook_events LIMIT 1").fetch_one(&env.pool).await.unwrap();
    let redeliver = || env.http.post(env.url(&format!("/v1/webhook_endpoints/{}/events/{event_id}/redeliver", endpoint["id"].as_str().unwrap()))).bearer_auth(&globex).send();
    assert_eq!(redeliver().await.unwrap().status(), 202);
    assert_eq!(redeliver().await.unwrap().status(), 202);
    assert_eq!(error_of(redeliver().await.unwrap(), 429).await["code"], "rate_limited");
}
