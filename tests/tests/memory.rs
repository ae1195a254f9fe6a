//! Uploads stream: a 1 GiB dataset goes through the API (validated line by line on the way to S3)
//! while the API process's peak resident memory stays far below the file's size.

use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use moetune_e2e::{free_port, spawn_api, TestEnv};
use sqlx::PgPool;

const LINE: usize = 1024;
const LINES: usize = 1 << 20; // 1 GiB
const LINES_PER_CHUNK: usize = 1024;
/// Peak RSS the API may reach while taking the upload; the file is 4× this.
const PEAK_LIMIT_BYTES: u64 = 256 << 20;

/// Line `i` of the dataset: a prompt/completion example padded to exactly LINE bytes.
fn line(i: usize) -> String {
    let head = format!("{{\"prompt\": \"Question {i}: what is {i} + 1?\", \"completion\": \"");
    let tail = "\"}\n";
    let filler = "x".repeat(LINE - head.len() - tail.len());
    format!("{head}{filler}{tail}")
}

fn peak_rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("api process status");
    let kib: u64 = status.lines().find_map(|l| l.strip_prefix("VmHWM:")).expect("VmHWM").trim().trim_end_matches(" kB").trim().parse().unwrap();
    kib * 1024
}

#[sqlx::test(migrations = "../migrations")]
async fn a_one_gib_upload_keeps_the_api_memory_bounded(pool: PgPool) {
    // The in-process API only prepares the bucket, tenant and token; the measured API is its own process.
    let env = TestEnv::start(pool).await;
    let port = free_port();
    let api = spawn_api(&env, port).await;
    let base = format!("http://127.0.0.1:{port}");
    let idle_peak = peak_rss_bytes(api.0.id());

    let chunks = futures_util::stream::iter(0..LINES / LINES_PER_CHUNK).map(|chunk| {
        let lines: String = (chunk * LINES_PER_CHUNK..(chunk + 1) * LINES_PER_CHUNK).map(line).collect();
        Ok::<_, std::io::Error>(Bytes::from(lines))
    });
    let total = (LINE * LINES) as u64;
    let part = reqwest::multipart::Part::stream_with_length(reqwest::Body::wrap_stream(chunks), total).file_name("big.jsonl");
    let form = reqwest::multipart::Form::new().text("purpose", "fine-tune").part("file", part);
    let response = env.http.post(format!("{base}/v1/files")).bearer_auth(&env.token).multipart(form).timeout(Duration::from_secs(600)).send().await.unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    let file: serde_json::Value = response.json().await.unwrap();
    let peak = peak_rss_bytes(api.0.id());
    eprintln!("api peak RSS: {} MiB idle, {} MiB after a {} MiB upload", idle_peak >> 20, peak >> 20, total >> 20);
    assert_eq!((file["bytes"].as_u64(), file["example_count"].as_u64(), file["status"].as_str()), (Some(total), Some(LINES as u64), Some("processed")));
    assert!(peak < PEAK_LIMIT_BYTES, "the API reached {} MiB of resident memory for a {} MiB upload", peak >> 20, total >> 20);

    // Stored whole: S3 holds exactly the bytes sent.
    let id = file["id"].as_str().unwrap();
    let stored = env.s3.list_objects_v2().bucket(&env.config.s3.bucket).send().await.unwrap();
    let object = stored.contents().iter().find(|o| o.key().is_some_and(|k| k.contains(id))).unwrap_or_else(|| panic!("no object for {id} in {stored:?}"));
    assert_eq!(object.size(), Some(total as i64));
    let deleted = env.http.delete(format!("{base}/v1/files/{id}")).bearer_auth(&env.token).send().await.unwrap();
    assert_eq!(deleted.status(), 200);
}
