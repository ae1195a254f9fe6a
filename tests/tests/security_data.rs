//! What a tenant can make the service store and chew on: upload sizes against what was declared and
//! against the storage quota, parts nobody will assemble, inputs that used to loop for ever (a NUL in
//! a dataset, a part gone missing), names with control characters, and the file shapes the API accepts
//! and the runner must train on.

use std::time::Duration;

use moetune_e2e::{error_of, spawn_runner, spawn_scheduler, TestEnv};
use serde_json::{json, Value};
use sqlx::PgPool;

const PC: &str = r#"{"prompt": "2+2=", "completion": "4"}"#;

async fn create_upload(env: &TestEnv, bytes: usize) -> Value {
    let body = json!({"filename": "big.jsonl", "purpose": "fine-tune", "bytes": bytes, "mime_type": "application/jsonl"});
    let response = env.post_json("/v1/uploads", body).await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

async fn add_part(env: &TestEnv, upload: &Value, data: Vec<u8>) -> reqwest::Response {
    let form = reqwest::multipart::Form::new().part("data", reqwest::multipart::Part::bytes(data));
    let url = env.url(&format!("/v1/uploads/{}/parts", upload["id"].as_str().unwrap()));
    env.http.post(url).bearer_auth(&env.token).multipart(form).send().await.unwrap()
}

async fn complete(env: &TestEnv, upload: &Value, parts: &[&str]) -> Value {
    let response = env.post_json(&format!("/v1/uploads/{}/complete", upload["id"].as_str().unwrap()), json!({"part_ids": parts})).await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

async fn set_storage_limit(env: &TestEnv, bytes: i64) {
    let admin = env.admin_token().await;
    let response = env.http.post(env.url("/v1/admin/tenants")).bearer_auth(admin).json(&json!({"name": "acme", "max_storage_bytes": bytes})).send().await.unwrap();
    assert_eq!(response.status(), 200);
}

async fn storage_used(env: &TestEnv) -> i64 {
    let admin = env.admin_token().await;
    let tenant: Value = env.http.get(env.url("/v1/admin/tenants/acme")).bearer_auth(admin).send().await.unwrap().json().await.unwrap();
    tenant["storage_bytes"].as_i64().unwrap()
}

/// Polls until `done` holds, at most 20 s.
async fn eventually<F: std::future::Future<Output = bool>>(what: &str, mut done: impl FnMut() -> F) {
    for _ in 0..200 {
        if done().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what} did not happen within 20 s");
}

#[sqlx::test(migrations = "../migrations")]
async fn parts_stay_within_the_declared_size_and_the_storage_quota(pool: PgPool) {
    let env = TestEnv::start(pool).await;
    // Declared 10 bytes: a 64 KiB part is refused while it streams, and nothing of it is kept.
    let small = create_upload(&env, 10).await;
    let error = error_of(add_part(&env, &small, vec![b'x'; 64 << 10]).await, 400).await;
    assert_eq!(error["code"], "upload_size_exceeded", "{error}");
    assert_eq!(env.stored_objects().await, (vec![], 0));
    // Parts adding up to exactly the declared size are fine; one byte more is not.
    assert_eq!(add_part(&env, &small, b"12345".to_vec()).await.status(), 200);
    assert_eq!(add_part(&env, &small, b"67890".to_vec()).await.status(), 200);
    assert_eq!(error_of(add_part(&env, &small, b"!".to_vec()).await, 400).await["code"], "upload_size_exceeded");
    assert_eq!(storage_used(&env).await, 10, "parts count against storage while they exist");

    // Parts take quota: with 1,000 bytes allowed and 10 held, two uploads that each fit are created,
    // and once one holds a 900-byte part, a 150-byte part of the other no longer fits.
    set_storage_limit(&env, 1000).await;
    let large = create_upload(&env, 990).await;
    let big = create_upload(&env, 200).await;
    let refused = error_of(add_part(&env, &large, vec![b'y'; 995]).await, 400).await;
    assert_eq!(refused["code"], "upload_size_exceeded", "over the declared size first: {refused}");
    assert_eq!(add_part(&env, &large, vec![b'y'; 900]).await.status(), 200);
    let quota = error_of(add_part(&env, &big, vec![b'z'; 150]).await, 429).await;
    assert_eq!(quota["code"], "quota_exceeded", "{quota}");
    assert_eq!(storage_used(&env).await, 910);

    // A direct upload with no Content-Length is cut off at the quota as it streams.
    let chunks = futures_util::stream::iter((0..50).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(format!("{PC}\n")))));
    let form = reqwest::multipart::Form::new()
        .text("purpose", "fine-tune")
        .part("file", reqwest::multipart::Part::stream(reqwest::Body::wrap_stream(chunks)).file_name("streamed.jsonl"));
    let streamed = env.http.post(env.url("/v1/files")).bearer_auth(&env.token).multipart(form).send().await.unwrap();
    assert_eq!(error_of(streamed, 429).await["code"], "quota_exceeded");
    assert_eq!(env.file_rows().await, 0);
}

#[sqlx::test(migrations = "../migrations")]
async fn the_sweeper_removes_parts_nobody_will_assemble(pool: PgPool) {
    let env = TestEnv::start_with(pool, |c| c.upload_sweep_interval_ms = 200).await;
    let expired = create_upload(&env, 100).await;
    assert_eq!(add_part(&env, &expired, b"part of an upload left to expire".to_vec()).await.status(), 200);
    let cancelled = create_upload(&env, 100).await;
    assert_eq!(add_part(&env, &cancelled, b"part of a cancelled upload".to_vec()).await.status(), 200);
    // A cancel whose own cleanup failed leaves its parts recorded: the sweeper finishes the job.
    sqlx::query("UPDATE uploads SET status = 'cancelled' WHERE id = $1").bind(cancelled["id"].as_str()).execute(&env.pool).await.unwrap();
    sqlx::query("UPDATE uploads SET expires_at = now() - interval '11 minutes' WHERE id = $1").bind(expired["id"].as_str()).execute(&env.pool).await.unwrap();
    eventually("abandoned parts deleted", || async { env.stored_objects().await.0.is_empty() }).await;
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM upload_parts").fetch_one(&env.pool).await.unwrap();
    assert_eq!(rows, 0);
    assert_eq!(storage_used(&env).await, 0);

    // A file deleted while its upload is being assembled leaves nothing behind, whichever finishes first.
    let body = format!("{PC}\n").repeat(60_000);
    let upload = create_upload(&env, body.len()).await;
    let part: Value = add_part(&env, &upload, body.into_bytes()).await.json().await.unwrap();
    let completed = complete(&env, &upload, &[part["id"].as_str().unwrap()]).await;
    let file_id = completed["file"]["id"].as_str().unwrap();
    let deleted = env.http.delete(env.url(&format!("/v1/files/{file_id}"))).bearer_auth(&env.token).send().await.unwrap();
    assert_eq!(deleted.status(), 200);
    eventually("the deleted file's object and parts gone", || async { env.stored_objects().await == (vec![], 0) }).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(env.stored_objects().await, (vec![], 0), "nothing reappeared after the assembly finished");
}

#[sqlx::test(migrations = "../migrations")]
async fn inputs_that_cannot_be_stored_end_in_error_instead_of_retrying(pool: PgPool) {
    let env = TestEnv::start_with(pool, |c| c.upload_sweep_interval_ms = 200).await;
    // A chat role of "\u0000": the message naming it is escaped, and the file ends in `error`.
    let line = "{\"messages\": [{\"role\": \"\\u0000\", \"content\": \"hi\"}, {\"role\": \"assistant\", \"content\": \"yo\"}]}\n";
    let upload = create_upload(&env, line.len()).await;
    let part: Value = add_part(&env, &upload, line.as_bytes().to_vec()).await.json().await.unwrap();
    let file_id = complete(&env, &upload, &[part["id"].as_str().unwrap()]).await["file"]["id"].as_str().unwrap().to_string();
    let file = env.settled_file(&file_id).await;
    assert_eq!(file["status"], "error", "{file}");
    let details = file["status_details"].as_str().unwrap();
    assert!(details.contains("unknown role `\\u{0000}`") && !details.contains('\0'), "{details}");

    // A part gone from storage: assembly fails the same way every time, so the file errors at once.
    let upload = create_upload(&env, PC.len() + 1).await;
    let part: Value = add_part(&env, &upload, format!("{PC}\n").into_bytes()).await.json().await.unwrap();
    let key: String = sqlx::query_scalar("SELECT s3_key FROM upload_parts WHERE id = $1").bind(part["id"].as_str()).fetch_one(&env.pool).await.unwrap();
    env.s3.delete_object().bucket(&env.config.s3.bucket).key(&key).send().await.unwrap();
    let file_id = complete(&env, &upload, &[part["id"].as_str().unwrap()]).await["file"]["id"].as_str().unwrap().to_string();
    let file = env.settled_file(&file_id).await;
    assert_eq!(file["status"], "error", "{file}");
    assert!(file["status_details"].as_str().unwrap().contains("could not be assembled"), "{file}");
    let attempts: i32 = sqlx::query_scalar("SELECT assembly_attempts FROM files WHERE id = $1").bind(&file_id).fetch_one(&env.pool).await.unwrap();
    assert_eq!(attempts, 1, "a deterministic failure is not retried");

    // A failure that might pass (storage answering errors) is retried after a wait, and given up on
    // after a bounded number of attempts.
    let upload = create_upload(&env, PC.len() + 1).await;
    let part: Value = add_part(&env, &upload, format!("{PC}\n").into_bytes()).await.json().await.unwrap();
    sqlx::query("UPDATE uploads SET s3_bucket = 'no-such-bucket' WHERE id = $1").bind(upload["id"].as_str()).execute(&env.pool).await.unwrap();
    let file_id = complete(&env, &upload, &[part["id"].as_str().unwrap()]).await["file"]["id"].as_str().unwrap().to_string();
    let attempts = || sqlx::query_as::<_, (i32, String, bool)>("SELECT assembly_attempts, status, coalesce(validating_until BETWEEN now() + interval '20 seconds' AND now() + interval '40 seconds', false) FROM files WHERE id = $1").bind(&file_id).fetch_one(&env.pool);
    // The first failure puts the next attempt 30 s out (the lease taken for the attempt was 10 min).
    eventually("the first attempt fails", || async { attempts().await.unwrap().0 == 1 && attempts().await.unwrap().2 }).await;
    assert_eq!(attempts().await.unwrap().1, "uploaded", "one failure is retried later");
    sqlx::query("UPDATE files SET assembly_attempts = $2, validating_until = NULL WHERE id = $1")
        .bind(&file_id)
        .bind(moetune_api::uploads::MAX_ASSEMBLY_ATTEMPTS - 1)
        .execute(&env.pool)
        .await
        .unwrap();
    eventually("the last attempt gives up", || async { attempts().await.unwrap().1 == "error" }).await;
    let file = env.get_json(&format!("/v1/files/{file_id}")).await;
    assert!(file["status_details"].as_str().unwrap().contains("after 5 attempts"), "{file}");
}

#[sqlx::test(migrations = "../migrations")]
async fn names_with_control_characters_and_unassembled_content_are_refused(pool: PgPool) {
    let env = TestEnv::start(pool).await;
    let body = json!({"filename": "data\u{7}.jsonl", "purpose": "fine-tune", "bytes": 10, "mime_type": "application/jsonl"});
    let error = error_of(env.post_json("/v1/uploads", body).await, 400).await;
    assert_eq!((error["code"].as_str(), error["param"].as_str()), (Some("invalid_filename"), Some("filename")));
    assert!(error["message"].as_str().unwrap().contains("\\u{0007}"), "{error}");
    let form = reqwest::multipart::Form::new()
        .text("purpose", "fine-tune")
        .part("file", reqwest::multipart::Part::bytes(format!("{PC}\n").into_bytes()).file_name("evil\tname.jsonl"));
    let refused = env.http.post(env.url("/v1/files")).bearer_auth(&env.token).multipart(form).send().await.unwrap();
    assert_eq!(error_of(refused, 400).await["code"], "invalid_filename");
    assert_eq!(env.stored_objects().await, (vec![], 0));

    // The content of a file still being assembled does not exist yet: 409, not a server error.
    let tenant = moetune_api::auth::ensure_tenant(&env.pool, "acme").await.unwrap();
    sqlx::query(
        "INSERT INTO files (id, tenant_id, filename, purpose, bytes, s3_bucket, s3_key, sha256, status, validating_until)
         VALUES ('file-assembling', $1, 'a.jsonl', 'fine-tune', 10, $2, 'files/x/file-assembling.jsonl', '', 'uploaded', now() + interval '1 hour')",
    )
    .bind(tenant)
    .bind(&env.config.s3.bucket)
    .execute(&env.pool)
    .await
    .unwrap();
    let content = env.http.get(env.url("/v1/files/file-assembling/content")).bearer_auth(&env.token).send().await.unwrap();
    assert_eq!(error_of(content, 409).await["code"], "file_not_ready");
}

/// Every shape of file the API accepts (a byte-order mark, CRLF line ends, no final newline, each
/// format) is read identically by the runner: a job on each succeeds and trains on every example.
#[sqlx::test(migrations = "../migrations")]
async fn the_runner_trains_on_every_file_shape_the_api_accepts(pool: PgPool) {
    let env = TestEnv::start(pool).await;
    let _scheduler = spawn_scheduler(&env);
    let _runner = spawn_runner(&env, "shapes-runner");
    let chat = r#"{"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]}"#;
    let alpaca = r#"{"instruction": "Add", "input": "2+2", "output": "4"}"#;
    let shapes = [
        ("bom-crlf-chat", format!("\u{feff}{}", format!("{chat}\r\n").repeat(8))),
        ("no-final-newline-alpaca", vec![alpaca; 8].join("\n")),
        ("bom-lf-prompt-completion", format!("\u{feff}{}", format!("{PC}\n").repeat(8))),
    ];
    for (name, text) in shapes {
        let file: Value = env.upload("fine-tune", &format!("{name}.jsonl"), text.into_bytes()).await.json().await.unwrap();
        assert_eq!((file["status"].as_str(), file["example_count"].as_i64()), (Some("processed"), Some(8)), "{name}: {file}");
        let body = json!({"model": "moetune/tiny-mixtral", "training_file": file["id"],
            "method": {"type": "moe_sft_qat", "moe_sft_qat": {"max_steps": 2, "validation_split": 0.0, "qat": {"steps": 1}}}});
        let job: Value = env.post_json("/v1/fine_tuning/jobs", body).await.json().await.unwrap();
        let done = env.wait_for_job(job["id"].as_str().unwrap(), Duration::from_secs(240)).await;
        assert_eq!(done["status"], "succeeded", "{name}: {done}");
        let loaded: Vec<String> = sqlx::query_scalar("SELECT message FROM job_events WHERE job_id = $1 AND message LIKE 'Loaded %'")
            .bind(job["id"].as_str())
            .fetch_all(&env.pool)
            .await
            .unwrap();
        assert_eq!(loaded, ["Loaded 8 training and 0 validation examples"], "{name}");
    }
}

/// A job keeps its newest periodic checkpoints and its stage finals; the rest leave storage, and what
/// is kept counts against the tenant's storage. The API refuses a checkpoint every few steps, and the
/// job's events never show the runner's local paths.
#[sqlx::test(migrations = "../migrations")]
async fn checkpoints_are_bounded_and_counted(pool: PgPool) {
    let env = TestEnv::start_with(pool, |c| c.upload_sweep_interval_ms = 200).await;
    let file = env.upload_demo_dataset().await;
    let too_often = json!({"model": "moetune/tiny-mixtral", "training_file": file["id"], "method": {"type": "moe_sft_qat", "moe_sft_qat": {"checkpoint_every_n_steps": 3}}});
    let error = error_of(env.post_json("/v1/fine_tuning/jobs", too_often).await, 400).await;
    assert_eq!(error["param"], "method.moe_sft_qat.checkpoint_every_n_steps", "{error}");

    let _scheduler = spawn_scheduler(&env);
    let _runner = spawn_runner(&env, "checkpointing-runner");
    let body = json!({"model": "moetune/tiny-mixtral", "training_file": file["id"], "hyperparameters": {"batch_size": 4},
        "method": {"type": "moe_sft_qat", "moe_sft_qat": {"max_steps": 60, "checkpoint_every_n_steps": 10, "qat": {"steps": 2}}}});
    let job: Value = env.post_json("/v1/fine_tuning/jobs", body).await.json().await.unwrap();
    let id = job["id"].as_str().unwrap().to_string();
    assert_eq!(env.wait_for_job(&id, Duration::from_secs(240)).await["status"], "succeeded");

    let listed = env.get_json(&format!("/v1/fine_tuning/jobs/{id}/checkpoints")).await;
    let mut names: Vec<String> = listed["data"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap().to_string()).collect();
    names.sort();
    assert_eq!(names, ["qat-final", "sft-final", "sft-step-000030", "sft-step-000040", "sft-step-000050"], "the newest three of steps 10 to 50, and the finals");
    let prefix = format!("checkpoints/{id}/");
    let stored_under = |names: Vec<String>| {
        let mut dirs: Vec<String> = names.iter().filter_map(|k| k.strip_prefix(&prefix)?.split('/').nth(1).map(String::from)).collect();
        dirs.sort();
        dirs.dedup();
        dirs
    };
    eventually("pruned checkpoints leave storage", || async { stored_under(env.stored_objects().await.0) == names }).await;
    let kept: i64 = sqlx::query_scalar("SELECT sum(bytes)::bigint FROM checkpoints WHERE job_id = $1 AND deleted_at IS NULL").bind(&id).fetch_one(&env.pool).await.unwrap();
    assert_eq!(storage_used(&env).await, file["bytes"].as_i64().unwrap() + kept, "kept checkpoints count against storage");

    let work_dir = std::env::var("MOETUNE_WORK_DIR").unwrap_or_else(|_| "/tmp/moetune-runner".into());
    let leaked: i64 = sqlx::query_scalar("SELECT count(*) FROM job_events WHERE job_id = $1 AND (message LIKE '%' || $2 || '%' OR message LIKE '%/tmp/%')")
        .bind(&id)
        .bind(&work_dir)
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(leaked, 0, "an event message shows the runner's local paths");
}

/// A runner refuses a file over its `max_dataset_bytes` with a clear error instead of loading it.
#[sqlx::test(migrations = "../migrations")]
async fn a_runner_refuses_a_dataset_over_its_size_cap(pool: PgPool) {
    let env = TestEnv::start(pool).await;
    let _scheduler = spawn_scheduler(&env);
    let _runner = moetune_e2e::KillOnDrop(moetune_e2e::runner_command(&env, "small-runner").env("MOETUNE_MAX_DATASET_BYTES", "1000").spawn().unwrap());
    let file = env.upload_demo_dataset().await;
    let job: Value = env.post_json("/v1/fine_tuning/jobs", json!({"model": "moetune/tiny-mixtral", "training_file": file["id"]})).await.json().await.unwrap();
    let job = env.wait_for_job(job["id"].as_str().unwrap(), Duration::from_secs(120)).await;
    assert_eq!((job["status"].as_str(), job["error"]["code"].as_str()), (Some("failed"), Some("invalid_training_file")), "{job}");
    let message = job["error"]["message"].as_str().unwrap();
    assert!(message.contains("trains on files up to 1000 bytes"), "{message}");
}

/// Retrying the part that filled an upload, under the same Idempotency-Key, gets the first answer
/// back (not a 400 for a full upload), and the retry's copy is not kept.
#[sqlx::test(migrations = "../migrations")]
async fn a_retried_last_part_replays_its_first_answer(pool: PgPool) {
    let env = TestEnv::start(pool).await;
    let upload = create_upload(&env, 5).await;
    let send = || {
        let form = reqwest::multipart::Form::new().part("data", reqwest::multipart::Part::bytes(b"12345".to_vec()));
        let url = env.url(&format!("/v1/uploads/{}/parts", upload["id"].as_str().unwrap()));
        env.http.post(url).bearer_auth(&env.token).header("Idempotency-Key", "part-1").multipart(form).send()
    };
    let first: Value = send().await.unwrap().json().await.unwrap();
    assert_eq!(first["object"], "upload.part", "{first}");
    let retry = send().await.unwrap();
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    let replayed: Value = retry.json().await.unwrap();
    assert_eq!(replayed["id"], first["id"]);
    assert_eq!(env.stored_objects().await.0.len(), 1, "the retry's copy was deleted");
}
