//! Live job events over Server-Sent Events: delivery as they happen, resumption with Last-Event-ID,
//! and the end of the stream once the job has finished.

use std::time::Duration;

use futures_util::StreamExt;
use moetune_e2e::TestEnv;
use serde_json::{json, Value};
use sqlx::PgPool;

/// One parsed SSE message.
#[derive(Debug)]
struct Message {
    id: Option<String>,
    event: String,
    data: Value,
}

/// Reads SSE messages from a response until `stop` says so or the stream ends.
struct SseReader {
    stream: futures_util::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buffer: String,
}

impl SseReader {
    async fn open(env: &TestEnv, job: &str, last_event_id: Option<&str>) -> Self {
        let mut request = env.http.get(env.url(&format!("/v1/fine_tuning/jobs/{job}/events?stream=true"))).bearer_auth(&env.token);
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        Self { stream: response.bytes_stream().boxed(), buffer: String::new() }
    }

    /// The next message (keep-alive comments skipped); None at the end of the stream.
    async fn next(&mut self) -> Option<Message> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let raw: String = self.buffer.drain(..end + 2).collect();
                let mut message = Message { id: None, event: "message".into(), data: Value::Null };
                let mut is_comment = true;
                for line in raw.lines() {
                    if let Some(v) = line.strip_prefix("id: ") {
                        message.id = Some(v.to_string());
                    } else if let Some(v) = line.strip_prefix("event: ") {
                        message.event = v.to_string();
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        message.data = serde_json::from_str(v).expect("data is JSON");
                    }
                    is_comment &= line.starts_with(':');
                }
                if !is_comment {
                    return Some(message);
                }
                continue;
            }
            let chunk = tokio::time::timeout(Duration::from_secs(20), self.stream.next()).await.expect("SSE stalled")?;
            self.buffer.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
        }
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn events_stream_live_and_resume_with_last_event_id(pool: PgPool) {
    let env = TestEnv::start(pool).await;
    let file: Value = env.upload("fine-tune", "d.jsonl", b"{\"prompt\": \"a\", \"completion\": \"b\"}\n".to_vec()).await.json().await.unwrap();
    let job: Value = env.post_json("/v1/fine_tuning/jobs", json!({"model": "moetune/tiny-mixtral", "training_file": file["id"]})).await.json().await.unwrap();
    let job_id = job["id"].as_str().unwrap();

    // The events recorded so far arrive oldest first.
    let mut live = SseReader::open(&env, job_id, None).await;
    let first = live.next().await.unwrap();
    assert_eq!(first.data["message"], format!("Validating training file: {}", file["id"].as_str().unwrap()));
    assert_eq!(first.data["object"], "fine_tuning.job.event");
    assert_eq!(first.id.as_deref(), first.data["id"].as_str());
    let queued = live.next().await.unwrap();
    assert_eq!(queued.data["message"], "Files validated, job queued");

    // Something that happens while the stream is open is delivered, then the stream ends.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(env.post_json(&format!("/v1/fine_tuning/jobs/{job_id}/cancel"), json!({})).await.status(), 200);
    let cancelled = live.next().await.unwrap();
    assert_eq!((cancelled.event.as_str(), cancelled.data["message"].as_str()), ("message", Some("Job cancelled")));
    assert_eq!(live.next().await.unwrap().event, "done");
    assert!(live.next().await.is_none(), "the stream ends after a finished job's last event");

    // Reconnecting after the first event sends only what followed it.
    let mut resumed = SseReader::open(&env, job_id, first.id.as_deref()).await;
    let ids: Vec<Option<String>> = [resumed.next().await.unwrap(), resumed.next().await.unwrap()].into_iter().map(|m| m.id).collect();
    assert_eq!(ids, vec![queued.id.clone(), cancelled.id.clone()]);
    assert_eq!(resumed.next().await.unwrap().event, "done");

    // Polling shows the same events; a bad Last-Event-ID is a 400; another tenant's job is a 404.
    let polled = env.get_json(&format!("/v1/fine_tuning/jobs/{job_id}/events")).await;
    assert_eq!(polled["data"][0]["id"].as_str(), cancelled.id.as_deref());
    let bad = env.http.get(env.url(&format!("/v1/fine_tuning/jobs/{job_id}/events?stream=true"))).bearer_auth(&env.token).header("Last-Event-ID", "7").send().await.unwrap();
    assert_eq!(bad.status(), 400);
    let globex = env.token_for("globex", None).await;
    let other = env.http.get(env.url(&format!("/v1/fine_tuning/jobs/{job_id}/events?stream=true"))).bearer_auth(&globex).send().await.unwrap();
    assert_eq!(other.status(), 404);
}
