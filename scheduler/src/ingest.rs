//! Applies runner events from the Redis stream to Postgres, refusing stale attempts.

use moetune_types::{JobStatus, RunnerEvent, RunnerEventKind};
use redis::streams::{StreamReadOptions, StreamReadReply};
use redis::AsyncCommands;
use serde_json::json;
use sqlx::PgPool;

use crate::store::{self, NewEvent};
use crate::webhooks::{outbox, EventType};
use crate::JobQueue;

const GROUP: &str = "scheduler";

pub struct Ingester {
    queue: JobQueue,
    pool: PgPool,
    consumer: String,
    /// Bucket of job data, for the assignment of a job handed out again.
    bucket: String,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
}

/// What became of one event.
#[derive(Debug, PartialEq, Eq)]
pub enum Applied {
    Recorded,
    /// From an attempt that is no longer current, or for a finished job: refused.
    Stale,
    /// The same stream entry was applied before.
    Duplicate,
}

impl Ingester {
    pub fn new(queue: JobQueue, pool: PgPool, consumer: String, bucket: String) -> Self {
        Self { queue, pool, consumer, bucket, metrics: Default::default() }
    }

    pub fn with_metrics(self, metrics: std::sync::Arc<crate::metrics::Metrics>) -> Self {
        Self { metrics, ..self }
    }

    pub async fn run(&self) -> anyhow::Result<()> {
        // First entries delivered to us but never acknowledged (a crash mid-apply), then new ones.
        let mut cursor = "0".to_string();
        self.ensure_group().await;
        loop {
            match self.poll(&cursor).await {
                Ok(0) if cursor == "0" => cursor = ">".into(),
                Ok(_) => {}
                Err(e) => {
                    // After a Redis flush the stream and its group are gone: recreate them.
                    if e.downcast_ref::<redis::RedisError>().and_then(|r| r.code()) == Some("NOGROUP") {
                        self.ensure_group().await;
                        continue;
                    }
                    tracing::warn!(error = %e, "event ingest failed; retrying");
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
            }
        }
    }

    /// Creates the stream and consumer group if missing (BUSYGROUP, "exists already", is fine).
    async fn ensure_group(&self) {
        let mut redis = self.queue.connection();
        let created: redis::RedisResult<()> = redis.xgroup_create_mkstream(self.queue.keys().events(), GROUP, "0").await;
        if let Err(e) = created {
            if e.code() != Some("BUSYGROUP") {
                tracing::warn!(error = %e, "could not create the event consumer group");
            }
        }
    }

    async fn poll(&self, cursor: &str) -> anyhow::Result<usize> {
        let mut redis = self.queue.connection();
        let stream = self.queue.keys().events();
        let options = StreamReadOptions::default().group(GROUP, &self.consumer).count(100).block(1000);
        let reply: StreamReadReply = redis.xread_options(&[&stream], &[cursor], &options).await?;
        let mut handled = 0;
        for key in reply.keys {
            for entry in key.ids {
                handled += 1;
                let payload: Option<String> = entry.get("event");
                match payload.map(|p| serde_json::from_str::<RunnerEvent>(&p)) {
                    Some(Ok(event)) => {
                        // The job id on every span, as on the api's request spans and the runner's job span.
                        let span = tracing::info_span!("runner_event", job_id = %event.job_id, attempt = event.attempt, runner = %event.runner_id);
                        let applying = async {
                            let applied = apply(&self.pool, &event, Some(&entry.id)).await?;
                            tracing::debug!(outcome = ?applied, "runner event applied");
                            anyhow::Ok(applied)
                        };
                        let applied = tracing::Instrument::instrument(applying, span).await?;
                        self.observe(&event, &applied).await?;
                        if applied == Applied::Stale {
                            tracing::warn!(job = %event.job_id, attempt = event.attempt, "refused stale runner event");
                        }
                        if let RunnerEventKind::Succeeded { .. } | RunnerEventKind::Failed { .. } | RunnerEventKind::Paused { .. } = event.kind {
                            if applied != Applied::Stale {
                                self.queue.forget(Some(&event.runner_id), &event.job_id).await?;
                            }
                        }
                        if let RunnerEventKind::Released { .. } = event.kind {
                            self.hand_out_again(&event).await?;
                        }
                    }
                    _ => tracing::error!(id = %entry.id, "dropping malformed runner event"),
                }
                let _: () = redis.xack(&stream, GROUP, &[&entry.id]).await?;
            }
        }
        Ok(handled)
    }
}

impl Ingester {
    /// Counts the event's outcome; a job start also records how long the job waited for its runner.
    async fn observe(&self, event: &RunnerEvent, applied: &Applied) -> anyhow::Result<()> {
        let outcome = match applied {
            Applied::Recorded => "recorded",
            Applied::Stale => "stale",
            Applied::Duplicate => "duplicate",
        };
        self.metrics.runner_events.with_label_values(&[outcome]).inc();
        if let (Applied::Recorded, RunnerEventKind::Started { .. }) = (applied, &event.kind) {
            let waited: Option<f64> = sqlx::query_scalar("SELECT extract(epoch FROM now() - queued_at)::float8 FROM jobs WHERE id = $1")
                .bind(&event.job_id)
                .fetch_one(&self.pool)
                .await?;
            if let Some(seconds) = waited {
                self.metrics.placement_seconds.observe(seconds.max(0.0));
            }
        }
        Ok(())
    }

    /// After a release: a job now `queued` goes to the front of the queue for the next runner; one
    /// settled as `paused` leaves Redis. (If this fails, the reconciler republishes the queued job.)
    async fn hand_out_again(&self, event: &RunnerEvent) -> anyhow::Result<()> {
        let (status, attempt): (String, i32) = sqlx::query_as("SELECT status, attempt FROM jobs WHERE id = $1").bind(&event.job_id).fetch_one(&self.pool).await?;
        if attempt != event.attempt {
            return Ok(());
        }
        if status == JobStatus::Queued.as_str() {
            let mut conn = self.pool.acquire().await?;
            let assignment = store::assignment(&mut conn, &event.job_id, &self.bucket).await?;
            self.queue.requeue_from(&event.runner_id, &assignment).await?;
            self.metrics.requeued.with_label_values(&["released"]).inc();
        } else if status == JobStatus::Paused.as_str() {
            self.queue.forget(Some(&event.runner_id), &event.job_id).await?;
        }
        Ok(())
    }
}

/// Applies one runner event in one transaction. The job row is locked so that fencing holds even
/// against a concurrent requeue by the reconciler.
pub async fn apply(pool: &PgPool, event: &RunnerEvent, source_id: Option<&str>) -> anyhow::Result<Applied> {
    let mut tx = pool.begin().await?;
    let row: Option<(i32, String)> = sqlx::query_as("SELECT attempt, status FROM jobs WHERE id = $1 FOR UPDATE")
        .bind(&event.job_id)
        .fetch_optional(&mut *tx)
        .await?;
    let Some((attempt, status)) = row else { return Ok(Applied::Stale) };
    let finished = JobStatus::parse(&status).is_none_or(JobStatus::is_terminal);
    if attempt != event.attempt || finished {
        return Ok(Applied::Stale);
    }
    let (job_id, attempt) = (event.job_id.as_str(), event.attempt);
    let log = |level: &'static str, kind: &'static str, message: String, data| NewEvent {
        job_id,
        attempt,
        level,
        kind,
        message,
        data,
        source_id,
    };
    let fresh = match &event.kind {
        RunnerEventKind::Started { device, dtype } => {
            sqlx::query("UPDATE jobs SET runner_id = $2 WHERE id = $1")
                .bind(job_id)
                .bind(&event.runner_id)
                .execute(&mut *tx)
                .await?;
            let message = format!("Job started on runner {} ({device}, {dtype}), attempt {attempt}", event.runner_id);
            let fresh = store::insert_event(&mut tx, log("info", "message", message, None)).await?;
            // Only a queued job starts: one paused meanwhile stays paused (its runner stops at step one).
            if fresh && status == JobStatus::Queued.as_str() {
                store::transition(&mut tx, job_id, attempt, JobStatus::Running, "Fine-tuning job started".into())
                    .await?;
            }
            fresh
        }
        RunnerEventKind::Message { level, message } => {
            let level = if level == "warn" || level == "error" { level_static(level) } else { "info" };
            store::insert_event(&mut tx, log(level, "message", message.clone(), None)).await?
        }
        RunnerEventKind::Metrics { stage, step, total_steps, train_loss, .. } => {
            let message = format!("{stage} step {step}/{total_steps}: training loss={train_loss:.4}");
            let data = serde_json::to_value(&event.kind)?;
            store::insert_event(&mut tx, log("info", "metrics", message, Some(data))).await?
        }
        RunnerEventKind::Monitor { stage, step, mean_top1_share, mean_entropy_norm, alert, action, .. } => {
            let verdict = match (alert, action.as_deref()) {
                (false, _) => "healthy".to_string(),
                (true, Some(action)) => format!("ALERT (router collapse), action: {action}"),
                (true, None) => "ALERT (router collapse)".to_string(),
            };
            let message = format!("{stage} step {step}: expert usage top1_share={mean_top1_share:.3} entropy_norm={mean_entropy_norm:.3}: {verdict}");
            let data = serde_json::to_value(&event.kind)?;
            let fresh = store::insert_event(&mut tx, log(if *alert { "warn" } else { "info" }, "monitor", message.clone(), Some(data))).await?;
            if fresh && *alert {
                let data = json!({ "stage": stage, "step": step, "mean_top1_share": mean_top1_share, "mean_entropy_norm": mean_entropy_norm, "action": action, "message": message });
                outbox::publish(&mut tx, job_id, EventType::MonitorAlert, data).await?;
            }
            fresh
        }
        RunnerEventKind::Evaluation { report } => {
            let data = serde_json::to_value(&event.kind)?;
            let message = format!("Evaluation report: {}", report.get("summary").and_then(|s| s.as_str()).unwrap_or("see data"));
            store::insert_event(&mut tx, log("info", "evaluation", message, Some(data))).await?
        }
        RunnerEventKind::Checkpoint { name, stage, step, uri, bytes } => {
            let (bucket, prefix) = parse_s3_uri(uri)?;
            sqlx::query(
                "INSERT INTO checkpoints (job_id, name, attempt, stage, step, s3_bucket, s3_prefix, bytes) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                 ON CONFLICT (job_id, name) DO UPDATE SET attempt = $3, s3_bucket = $6, s3_prefix = $7, bytes = $8, created_at = now()",
            )
            .bind(job_id)
            .bind(name)
            .bind(attempt)
            .bind(stage)
            .bind(*step as i32)
            .bind(bucket)
            .bind(prefix)
            .bind(bytes)
            .execute(&mut *tx)
            .await?;
            let fresh = store::insert_event(&mut tx, log("info", "message", format!("Checkpoint {name} saved ({bytes} bytes)"), None)).await?;
            if fresh {
                let data = json!({ "checkpoint": name, "stage": stage, "step": step, "bytes": bytes });
                outbox::publish(&mut tx, job_id, EventType::CheckpointCreated, data).await?;
            }
            fresh
        }
        RunnerEventKind::Artifact { name, uri, bytes, sha256 } => {
            let (bucket, key) = parse_s3_uri(uri)?;
            sqlx::query(
                "INSERT INTO artifacts (job_id, name, s3_bucket, s3_key, bytes, sha256) VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (job_id, name) DO UPDATE SET s3_bucket = $3, s3_key = $4, bytes = $5, sha256 = $6",
            )
            .bind(job_id)
            .bind(name)
            .bind(bucket)
            .bind(key)
            .bind(bytes)
            .bind(sha256)
            .execute(&mut *tx)
            .await?;
            let message = format!("Stored artifact {name} ({bytes} bytes) at {uri}");
            store::insert_event(&mut tx, log("info", "message", message, None)).await?
        }
        RunnerEventKind::Paused { stage, step } => {
            let fresh = store::insert_event(&mut tx, log("info", "message", format!("Runner {} let the job go", event.runner_id), None)).await?;
            if fresh && status == JobStatus::Pausing.as_str() {
                let message = format!("Job paused at {stage} step {step}; resume continues from its checkpoint");
                store::transition(&mut tx, job_id, attempt, JobStatus::Paused, message).await?;
            }
            fresh
        }
        RunnerEventKind::Released { stage, step } => {
            let fresh = store::insert_event(&mut tx, log("info", "message", format!("Runner {} is shutting down and handed the job back", event.runner_id), None)).await?;
            if fresh && status == JobStatus::Pausing.as_str() {
                store::transition(&mut tx, job_id, attempt, JobStatus::Paused, format!("Job paused at {stage} step {step}; resume continues from its checkpoint")).await?;
            } else if fresh && status == JobStatus::Running.as_str() {
                // Same attempt: the releasing runner writes nothing more, so there is nothing to fence off.
                sqlx::query("UPDATE jobs SET runner_id = NULL WHERE id = $1").bind(job_id).execute(&mut *tx).await?;
                let message = format!("Job requeued from its checkpoint at {stage} step {step}");
                store::transition(&mut tx, job_id, attempt, JobStatus::Queued, message).await?;
            }
            fresh
        }
        RunnerEventKind::Succeeded { trained_tokens, result } => {
            let stop_reason = result.get("stop_reason").and_then(|r| r.as_str());
            sqlx::query("UPDATE jobs SET trained_tokens = $2, result = $3, stop_reason = $4 WHERE id = $1")
                .bind(job_id)
                .bind(trained_tokens)
                .bind(result)
                .bind(stop_reason)
                .execute(&mut *tx)
                .await?;
            store::transition(&mut tx, job_id, attempt, JobStatus::Succeeded, "The job has successfully completed".into())
                .await?;
            true
        }
        RunnerEventKind::Failed { code, message } => {
            sqlx::query("UPDATE jobs SET error_code = $2, error_message = $3 WHERE id = $1")
                .bind(job_id)
                .bind(code)
                .bind(message)
                .execute(&mut *tx)
                .await?;
            store::transition(&mut tx, job_id, attempt, JobStatus::Failed, format!("The job failed: {message}"))
                .await?;
            true
        }
    };
    tx.commit().await?;
    Ok(if fresh { Applied::Recorded } else { Applied::Duplicate })
}

fn level_static(level: &str) -> &'static str {
    if level == "error" { "error" } else { "warn" }
}

fn parse_s3_uri(uri: &str) -> anyhow::Result<(&str, &str)> {
    uri.strip_prefix("s3://")
        .and_then(|rest| rest.split_once('/'))
        .ok_or_else(|| anyhow::anyhow!("artifact uri {uri:?} is not s3://bucket/key"))
}
