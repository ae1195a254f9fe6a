//! `GET /v1/fine_tuning/jobs/{id}/events?stream=true`: the job's events as Server-Sent Events, oldest
//! first, as they are recorded. Each event carries `id: ftevent-N`, so a client that reconnects with
//! `Last-Event-ID` continues where it left off. The stream ends after the job's last event once the
//! job has finished.
//!
//! Events are read from Postgres (the source of truth) every `POLL`: a reconnecting or late client
//! sees exactly what polling `GET …/events` shows, and no event can be delivered that is not stored.

use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use moetune_types::JobStatus;
use serde_json::Value;
use sqlx::PgPool;

use crate::error::ApiError;
use crate::jobs::JobEvent;

const POLL: Duration = Duration::from_millis(400);
/// A comment line this often keeps proxies from closing an idle stream.
const KEEPALIVE_EVERY: u32 = 38;
const BATCH: i64 = 200;

/// Parses `Last-Event-ID` (or `after`): `ftevent-N` → N.
pub fn parse_event_id(id: &str, param: &str) -> Result<i64, ApiError> {
    id.strip_prefix("ftevent-")
        .and_then(|s| s.parse::<i64>().ok())
        .ok_or_else(|| ApiError::invalid("invalid_cursor", param, format!("`{param}` must be an event id like 'ftevent-12', got '{id}'.")))
}

struct Cursor {
    db: PgPool,
    job_id: String,
    last_seq: i64,
    idle_polls: u32,
    finished: bool,
}

type Row = (i64, chrono::DateTime<chrono::Utc>, String, String, String, Option<Value>);

impl Cursor {
    async fn next_batch(&self) -> Result<Vec<Row>, sqlx::Error> {
        sqlx::query_as("SELECT seq, created_at, level, message, type, data FROM job_events WHERE job_id = $1 AND seq > $2 ORDER BY seq LIMIT $3")
            .bind(&self.job_id)
            .bind(self.last_seq)
            .bind(BATCH)
            .fetch_all(&self.db)
            .await
    }

    async fn job_finished(&self) -> Result<bool, sqlx::Error> {
        let status: String = sqlx::query_scalar("SELECT status FROM jobs WHERE id = $1").bind(&self.job_id).fetch_one(&self.db).await?;
        Ok(JobStatus::parse(&status).is_some_and(JobStatus::is_terminal))
    }

    /// The next chunk to send: a batch of events, a keep-alive, or None when the stream is over.
    async fn next_chunk(&mut self) -> Option<Result<Bytes, actix_web::Error>> {
        loop {
            if self.finished {
                return None;
            }
            // Read the status before the events: a job seen finished has no events after this read.
            let finished = match self.job_finished().await {
                Ok(finished) => finished,
                Err(e) => return Some(Err(ApiError::internal(e).into())),
            };
            let rows = match self.next_batch().await {
                Ok(rows) => rows,
                Err(e) => return Some(Err(ApiError::internal(e).into())),
            };
            if !rows.is_empty() {
                self.idle_polls = 0;
                return Some(Ok(self.render(rows)));
            }
            if finished {
                self.finished = true;
                return Some(Ok(Bytes::from_static(b"event: done\ndata: {}\n\n")));
            }
            self.idle_polls += 1;
            if self.idle_polls % KEEPALIVE_EVERY == 0 {
                return Some(Ok(Bytes::from_static(b": keep-alive\n\n")));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    fn render(&mut self, rows: Vec<Row>) -> Bytes {
        let mut out = String::new();
        for (seq, created_at, level, message, kind, data) in rows {
            self.last_seq = seq;
            let event = JobEvent { id: format!("ftevent-{seq}"), object: "fine_tuning.job.event", created_at: created_at.into(), level, message, kind, data };
            let json = serde_json::to_string(&event).expect("event serializes");
            out.push_str(&format!("id: ftevent-{seq}\nevent: {}\ndata: {json}\n\n", event.kind));
        }
        Bytes::from(out)
    }
}

/// The SSE body for a job the caller owns, continuing after `last_seq` (0 = from the first event).
pub fn stream(db: PgPool, job_id: String, last_seq: i64) -> impl Stream<Item = Result<Bytes, actix_web::Error>> {
    let cursor = Cursor { db, job_id, last_seq, idle_polls: 0, finished: false };
    futures_util::stream::unfold(cursor, |mut cursor| async move { cursor.next_chunk().await.map(|chunk| (chunk, cursor)) })
}
