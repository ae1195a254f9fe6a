//! Applies runner events from the runners' Redis streams to Postgres, refusing what a runner may not
//! say.
//!
//! Each runner writes only its own stream (`{prefix}:runner:{id}:events`; its Redis user may touch no
//! other runner's keys), so the stream an event arrives on names its sender, whatever the event says.
//! An event is applied only for the job's current attempt, from the runner holding it: `Started` from
//! a runner whose claimed list has the job, everything after from the runner that started it; stored
//! URIs must lie under the attempt's own prefix. One entry that cannot be applied is retried, then
//! dead-lettered (kept in `{prefix}:events:dead` with the error) and its job failed with a clear
//! message; the rest of the batch goes on. While Postgres is unreachable nothing is dead-lettered:
//! the entry waits until it can be applied.

use std::collections::HashSet;
use std::time::Duration;

use moetune_types::results::ResultTimings;
use moetune_types::{ErrorCode, JobId, JobStatus, RunnerEvent, RunnerEventKind, RunnerId};
use serde::Deserialize;
use redis::streams::{StreamReadOptions, StreamReadReply};
use redis::AsyncCommands;
use serde_json::json;
use sqlx::PgPool;

use moetune_domain::store::{self, NewEvent};
use moetune_domain::webhooks::{outbox, EventType};
use moetune_domain::JobQueue;

pub use crate::lease::Lease;
use crate::lease::{check_lease, gang_ranks, parse_s3_uri};

const GROUP: &str = "scheduler";
/// Tries of one entry, with Postgres reachable, before it is dead-lettered.
const MAX_ENTRY_TRIES: u32 = 5;

pub struct Ingester {
    queue: JobQueue,
    pool: PgPool,
    consumer: String,
    /// Bucket of job data: for the assignment of a job handed out again, and the only bucket runners'
    /// URIs may name.
    bucket: String,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
    /// Lost runners (a gang's lost rank included) after which a job fails.
    max_attempts: i32,
}

/// What became of one event.
#[derive(Debug, PartialEq, Eq)]
pub enum Applied {
    Recorded,
    /// From an attempt that is no longer current, or for a finished job: refused.
    Stale,
    /// The same stream entry was applied before.
    Duplicate,
    /// From a runner that does not hold the job, or naming storage outside the attempt's prefix.
    Refused(String),
}

impl Ingester {
    pub fn new(queue: JobQueue, pool: PgPool, consumer: String, bucket: String) -> Self {
        Self { queue, pool, consumer, bucket, metrics: Default::default(), max_attempts: 3 }
    }

    pub fn with_max_attempts(self, max_attempts: i32) -> Self {
        Self { max_attempts, ..self }
    }

    pub fn with_metrics(self, metrics: std::sync::Arc<crate::metrics::Metrics>) -> Self {
        Self { metrics, ..self }
    }

    pub async fn run(&self) -> anyhow::Result<()> {
        // Streams whose group exists; and those whose pending entries (delivered, never acknowledged:
        // a crash mid-apply) are read again before new ones.
        let mut known: HashSet<String> = HashSet::new();
        let mut unsettled: HashSet<String> = HashSet::new();
        loop {
            if let Err(e) = self.discover(&mut known, &mut unsettled).await {
                tracing::warn!(error = %e, "reading the runner registry failed; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            if known.is_empty() {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            if let Err(e) = self.poll(&known, &mut unsettled).await {
                // After a Redis flush the streams and their groups are gone: recreate them.
                if e.downcast_ref::<redis::RedisError>().and_then(|r| r.code()) == Some("NOGROUP") {
                    known.clear();
                    continue;
                }
                tracing::warn!(error = %e, "event ingest failed; retrying");
                unsettled.extend(known.iter().cloned());
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }

    /// Adds the streams of runners registered since the last look (creating their groups).
    async fn discover(&self, known: &mut HashSet<String>, unsettled: &mut HashSet<String>) -> anyhow::Result<()> {
        let mut redis = self.queue.connection();
        let runners: Vec<String> = redis.smembers(self.queue.keys().runners()).await?;
        for runner in runners {
            if known.contains(&runner) {
                continue;
            }
            let created: redis::RedisResult<()> = redis.xgroup_create_mkstream(self.queue.keys().runner_events(&runner), GROUP, "0").await;
            match created {
                Err(e) if e.code() != Some("BUSYGROUP") => tracing::warn!(runner, error = %e, "could not create a runner's event group"),
                _ => {
                    unsettled.insert(runner.clone());
                    known.insert(runner);
                }
            }
        }
        Ok(())
    }

    async fn poll(&self, known: &HashSet<String>, unsettled: &mut HashSet<String>) -> anyhow::Result<()> {
        let mut redis = self.queue.connection();
        let runners: Vec<&String> = known.iter().collect();
        let streams: Vec<String> = runners.iter().map(|r| self.queue.keys().runner_events(r)).collect();
        let cursors: Vec<&str> = runners.iter().map(|r| if unsettled.contains(*r) { "0" } else { ">" }).collect();
        let options = StreamReadOptions::default().group(GROUP, &self.consumer).count(100).block(1000);
        let reply: StreamReadReply = redis.xread_options(&streams, &cursors, &options).await?;
        // A stream read from "0" that returned nothing has no pending entries left.
        for (runner, stream) in runners.iter().zip(&streams) {
            if unsettled.contains(*runner) && reply.keys.iter().find(|k| &k.key == stream).is_none_or(|k| k.ids.is_empty()) {
                unsettled.remove(*runner);
            }
        }
        for key in reply.keys {
            let Some(runner) = runners.iter().find(|r| self.queue.keys().runner_events(r) == key.key) else { continue };
            for entry in key.ids {
                let payload: Option<String> = entry.get("event");
                // The stream names the sender; what the event claims does not count.
                match (payload.map(|p| serde_json::from_str::<RunnerEvent>(&p)), RunnerId::parse(runner)) {
                    (Some(Ok(mut event)), Ok(sender)) => {
                        event.runner_id = sender;
                        self.handle_entry(&event, &entry.id).await?;
                    }
                    _ => tracing::error!(id = %entry.id, runner = %runner, "dropping malformed runner event"),
                }
                let _: () = redis.xack(&key.key, GROUP, &[&entry.id]).await?;
            }
        }
        Ok(())
    }

    /// Applies one entry, retrying it while it fails; Err only for what should stop the batch (Redis).
    /// A failure the entry itself causes (a value Postgres refuses, a URI that does not parse) is tried
    /// a few times and then dead-lettered; any other (Postgres down, read-only after a failover, out of
    /// disk, a deadlock, a timeout) is waited out, however long it takes, and nothing is lost.
    async fn handle_entry(&self, event: &RunnerEvent, entry_id: &str) -> anyhow::Result<()> {
        let mut tries = 0;
        let mut waited = 0u32;
        loop {
            match self.handle(event, entry_id).await {
                Ok(()) => return Ok(()),
                Err(e) if e.downcast_ref::<redis::RedisError>().is_some() => return Err(e),
                Err(e) if caused_by_the_entry(&e) => {
                    tries += 1;
                    if tries >= MAX_ENTRY_TRIES {
                        return self.dead_letter(event, entry_id, &e).await;
                    }
                    tracing::warn!(tries, error = %format!("{e:#}"), "applying a runner event failed; retrying");
                    tokio::time::sleep(Duration::from_millis(100 << tries)).await;
                }
                Err(e) => {
                    waited += 1;
                    tracing::warn!(waited, error = %format!("{e:#}"), "postgres cannot take a runner event now; waiting");
                    tokio::time::sleep(Duration::from_millis(250 << waited.min(3))).await;
                }
            }
        }
    }

    async fn handle(&self, event: &RunnerEvent, entry_id: &str) -> anyhow::Result<()> {
        // The job id on every span, as on the api's request spans and the runner's job span.
        let span = tracing::info_span!("runner_event", job_id = %event.job_id, attempt = event.attempt, runner = %event.runner_id);
        let applying = async {
            let holds_claim = match event.kind {
                // A gang's rank 0 must list the gang the queue formed.
                RunnerEventKind::Started { ref ranks, .. } => {
                    let gang_matches = ranks.len() <= 1 || self.queue.gang(&event.job_id).await?.iter().map(RunnerId::as_str).eq(ranks.iter().map(String::as_str));
                    gang_matches && self.queue.holds(&event.runner_id, &event.job_id).await?
                }
                _ => false,
            };
            // Entry ids are unique per stream, and every runner has its own: the runner makes the
            // recorded id unique across them (two runners may write in the same millisecond).
            let source_id = format!("{}/{entry_id}", event.runner_id);
            let applied = apply_as(&self.pool, event, Some(&source_id), &Lease { bucket: Some(&self.bucket), holds_claim, max_attempts: self.max_attempts }).await?;
            tracing::debug!(outcome = ?applied, "runner event applied");
            anyhow::Ok(applied)
        };
        let applied = tracing::Instrument::instrument(applying, span).await?;
        self.observe(event, &applied).await?;
        match &applied {
            Applied::Stale => tracing::warn!(job = %event.job_id, attempt = event.attempt, "refused stale runner event"),
            Applied::Refused(why) => tracing::error!(job = %event.job_id, runner = %event.runner_id, why, "refused a runner event"),
            _ => {}
        }
        let accepted = matches!(applied, Applied::Recorded | Applied::Duplicate);
        if let RunnerEventKind::Succeeded { .. } | RunnerEventKind::Failed { .. } | RunnerEventKind::Paused { .. } = event.kind {
            if accepted {
                self.queue.forget(Some(&event.runner_id), &event.job_id).await?;
            }
        }
        if let (RunnerEventKind::Released { .. }, true) = (&event.kind, accepted) {
            self.hand_out_again(event).await?;
        }
        Ok(())
    }

    /// Keeps an entry that cannot be applied beside its error, and fails its job with a message saying
    /// so, instead of holding up every later event.
    async fn dead_letter(&self, event: &RunnerEvent, entry_id: &str, error: &anyhow::Error) -> anyhow::Result<()> {
        tracing::error!(job = %event.job_id, entry = entry_id, error = %format!("{error:#}"), "dead-lettering a runner event");
        let mut redis = self.queue.connection();
        let fields = [("event", serde_json::to_string(event)?), ("entry", entry_id.to_string()), ("error", format!("{error:#}"))];
        let _: String = redis.xadd_maxlen(self.queue.keys().dead_events(), redis::streams::StreamMaxlen::Approx(10_000), "*", &fields).await?;
        self.metrics.runner_events.with_label_values(&["dead_lettered"]).inc();
        let message = format!("An event from the job's runner ({}) could not be recorded; the job was stopped so that its results are not incomplete. Retry the job.", event.kind.name());
        let failed = fail_job(&self.pool, &event.job_id, event.attempt, ErrorCode::EventNotRecorded, &message).await;
        match failed {
            Ok(true) => {
                self.queue.cancel(&event.job_id).await?;
                self.queue.forget(Some(&event.runner_id), &event.job_id).await
            }
            Ok(false) => Ok(()),
            Err(e) => {
                tracing::error!(job = %event.job_id, error = %e, "could not fail the job of a dead-lettered event");
                Ok(())
            }
        }
    }
}

/// Whether applying the entry failed because of what it carries, so that trying again cannot help:
/// Postgres' data exceptions and constraint violations (classes 22 and 23), and what our own code
/// refused (an error that is not a database or connection error at all).
fn caused_by_the_entry(error: &anyhow::Error) -> bool {
    match error.chain().find_map(|cause| cause.downcast_ref::<sqlx::Error>()) {
        Some(sqlx::Error::Database(db)) => db.code().is_some_and(|code| code.starts_with("22") || code.starts_with("23")),
        Some(sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) | sqlx::Error::Encode(_)) => true,
        Some(_) => false,
        None => true,
    }
}

/// Fails the job's current attempt if it is still that attempt and unfinished; true when it did.
async fn fail_job(pool: &PgPool, job_id: &JobId, attempt: i32, code: ErrorCode, message: &str) -> sqlx::Result<bool> {
    let mut tx = pool.begin().await?;
    let row: Option<(i32, JobStatus)> = sqlx::query_as("SELECT attempt, status FROM jobs WHERE id = $1 FOR UPDATE").bind(job_id).fetch_optional(&mut *tx).await?;
    let Some((current, status)) = row else { return Ok(false) };
    if current != attempt || status.is_terminal() {
        return Ok(false);
    }
    sqlx::query("UPDATE jobs SET error_code = $2, error_message = $3 WHERE id = $1").bind(job_id).bind(code.as_str()).bind(message).execute(&mut *tx).await?;
    store::transition(&mut tx, job_id, attempt, JobStatus::Failed, format!("The job failed: {message}")).await?;
    tx.commit().await?;
    Ok(true)
}

impl Ingester {
    /// Counts the event's outcome; a job start also records how long the job waited for its runner.
    async fn observe(&self, event: &RunnerEvent, applied: &Applied) -> anyhow::Result<()> {
        let outcome = match applied {
            Applied::Recorded => "recorded",
            Applied::Stale => "stale",
            Applied::Duplicate => "duplicate",
            Applied::Refused(_) => "refused",
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
        let (status, attempt): (JobStatus, i32) = sqlx::query_as("SELECT status, attempt FROM jobs WHERE id = $1").bind(&event.job_id).fetch_one(&self.pool).await?;
        // A released running job was requeued as the next attempt; a pausing one settled as paused.
        // A gang that claimed a later attempt meanwhile (this entry redelivered) is left alone.
        let gang_attempt = self.queue.gang_note(&event.job_id, "attempt").await?.and_then(|a| a.parse::<i32>().ok());
        if gang_attempt.is_some_and(|a| a > event.attempt) {
            return Ok(());
        }
        if status == JobStatus::Queued && attempt == event.attempt + 1 {
            let mut conn = self.pool.acquire().await?;
            let assignment = store::assignment(&mut conn, &event.job_id, &self.bucket).await?;
            self.queue.requeue_from(&event.runner_id, &assignment).await?;
            self.metrics.requeued.with_label_values(&["released"]).inc();
        } else if matches!(status, JobStatus::Paused | JobStatus::Failed) && attempt == event.attempt {
            // Paused, or failed after one lost rank too many.
            self.queue.forget(Some(&event.runner_id), &event.job_id).await?;
        }
        Ok(())
    }
}

/// Periodic checkpoints a job keeps (besides its stage finals); older ones are marked deleted for
/// the API's sweeper to remove from storage.
pub const CHECKPOINTS_KEPT: i64 = 3;

/// Applies one runner event whose sender has been checked to hold the job's claim (tests, and callers
/// that verified it themselves); see [`apply_as`].
pub async fn apply(pool: &PgPool, event: &RunnerEvent, source_id: Option<&str>) -> anyhow::Result<Applied> {
    apply_as(pool, event, source_id, &Lease { bucket: None, holds_claim: true, max_attempts: 3 }).await
}

/// The job row an event is applied to, locked.
#[derive(sqlx::FromRow)]
struct LockedJob {
    attempt: i32,
    status: JobStatus,
    runner_id: Option<RunnerId>,
}

/// Applies one runner event in one transaction. The job row is locked so that fencing holds even
/// against a concurrent requeue by the reconciler.
pub async fn apply_as(pool: &PgPool, event: &RunnerEvent, source_id: Option<&str>, lease: &Lease<'_>) -> anyhow::Result<Applied> {
    let mut tx = pool.begin().await?;
    let row: Option<LockedJob> = sqlx::query_as("SELECT attempt, status, runner_id FROM jobs WHERE id = $1 FOR UPDATE")
        .bind(&event.job_id)
        .fetch_optional(&mut *tx)
        .await?;
    let Some(LockedJob { attempt, status, runner_id: holder }) = row else { return Ok(Applied::Stale) };
    let finished = status.is_terminal();
    if attempt != event.attempt || finished {
        return Ok(Applied::Stale);
    }
    if let Err(why) = check_lease(event, holder.as_ref(), lease) {
        return Ok(Applied::Refused(why));
    }
    let (job_id, attempt) = (&event.job_id, event.attempt);
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
        RunnerEventKind::Started { device, dtype, ranks } => {
            let ranks = gang_ranks(&event.runner_id, ranks)?;
            sqlx::query("UPDATE jobs SET runner_id = $2, ranks = $3 WHERE id = $1")
                .bind(job_id)
                .bind(&event.runner_id)
                .bind(&ranks)
                .execute(&mut *tx)
                .await?;
            let message = match &ranks {
                Some(ranks) => format!("Job started on {} runners ({device}, {dtype}), attempt {attempt}: {}", ranks.len(), ranks.iter().enumerate().map(|(r, id)| format!("rank {r} {id}")).collect::<Vec<_>>().join(", ")),
                None => format!("Job started on runner {} ({device}, {dtype}), attempt {attempt}", event.runner_id),
            };
            let fresh = store::insert_event(&mut tx, log("info", "message", message, None)).await?;
            // Only a queued job starts: one paused meanwhile stays paused (its runner stops at step one).
            if fresh && status == JobStatus::Queued {
                store::transition(&mut tx, job_id, attempt, JobStatus::Running, "Fine-tuning job started".into())
                    .await?;
            }
            fresh
        }
        RunnerEventKind::Message { level, message } => {
            let level = if level == "warn" || level == "error" { level_static(level) } else { "info" };
            store::insert_event(&mut tx, log(level, "message", moetune_types::text::for_tenants(message), None)).await?
        }
        RunnerEventKind::Metrics { stage, step, total_steps, train_loss, .. } => {
            let message = format!("{stage} step {step}/{total_steps}: training loss={train_loss:.4}");
            let data = serde_json::to_value(&event.kind)?;
            store::insert_event(&mut tx, log("info", "metrics", message, Some(data))).await?
        }
        RunnerEventKind::Monitor { stage, step, mean_top1_share, mean_entropy_norm, alert, action, routing_drift, drift_exceeded, .. } => {
            let alerts: Vec<&str> = [(*alert, "router collapse"), (*drift_exceeded, "routing drift over monitor.max_routing_drift")].into_iter().filter_map(|(on, what)| on.then_some(what)).collect();
            let verdict = match (alerts.is_empty(), action.as_deref()) {
                (true, _) => "healthy".to_string(),
                (false, Some(action)) => format!("ALERT ({}), action: {action}", alerts.join(", ")),
                (false, None) => format!("ALERT ({})", alerts.join(", ")),
            };
            let drift = routing_drift.map(|d| format!(" routing_drift={d:.3}")).unwrap_or_default();
            let message = format!("{stage} step {step}: expert usage top1_share={mean_top1_share:.3} entropy_norm={mean_entropy_norm:.3}{drift}: {verdict}");
            let data = serde_json::to_value(&event.kind)?;
            let warn = *alert || *drift_exceeded;
            let fresh = store::insert_event(&mut tx, log(if warn { "warn" } else { "info" }, "monitor", message.clone(), Some(data))).await?;
            if fresh && *drift_exceeded && status == JobStatus::Running {
                // The runner pauses the job after a checkpoint of this step. Pausing from here on: if
                // the runner is lost before it reports, the job is settled as paused, not requeued.
                store::transition(&mut tx, job_id, attempt, JobStatus::Pausing, format!("The routing-drift guardrail is pausing the job at {stage} step {step}")).await?;
            }
            if fresh && warn {
                let kind = if *drift_exceeded { "routing_drift" } else { "router_collapse" };
                let data = json!({ "kind": kind, "stage": stage, "step": step, "mean_top1_share": mean_top1_share, "mean_entropy_norm": mean_entropy_norm,
                    "routing_drift": routing_drift, "action": action, "message": message });
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
                 ON CONFLICT (job_id, name) DO UPDATE SET attempt = $3, s3_bucket = $6, s3_prefix = $7, bytes = $8, created_at = now(), deleted_at = NULL",
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
            // Retention: the newest periodic checkpoints and every stage final; older ones go.
            sqlx::query(
                "UPDATE checkpoints SET deleted_at = now() WHERE job_id = $1 AND deleted_at IS NULL AND name NOT LIKE '%-final'
                   AND name NOT IN (SELECT name FROM checkpoints WHERE job_id = $1 AND deleted_at IS NULL AND name NOT LIKE '%-final'
                                    ORDER BY created_at DESC, step DESC LIMIT $2)",
            )
            .bind(job_id)
            .bind(CHECKPOINTS_KEPT)
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
        RunnerEventKind::Paused { stage, step, reason } => {
            let fresh = store::insert_event(&mut tx, log("info", "message", format!("Runner {} let the job go", event.runner_id), None)).await?;
            match reason {
                // The runner paused a running job itself (the routing-drift guardrail).
                Some(reason) if fresh && matches!(status, JobStatus::Running | JobStatus::Pausing) => {
                    let reason = moetune_types::text::for_tenants(reason);
                    let message = format!("Job paused at {stage} step {step}: {reason}. Inspect it (expert_usage, the report, the checkpoint); resume accepts this drift and continues, cancel ends the job");
                    store::transition(&mut tx, job_id, attempt, JobStatus::Paused, message).await?;
                }
                _ if fresh && status == JobStatus::Pausing => {
                    let message = format!("Job paused at {stage} step {step}; resume continues from its checkpoint");
                    store::transition(&mut tx, job_id, attempt, JobStatus::Paused, message).await?;
                }
                _ => {}
            }
            fresh
        }
        // `stage` and `step` are rank 0's latest checkpoint as it knew it; the next attempt resumes from
        // the newest one recorded here either way.
        RunnerEventKind::Released { stage, step, rank_lost: Some(lost) } => {
            let lost = moetune_types::text::for_tenants(lost);
            let fresh = store::insert_event(&mut tx, log("warn", "message", format!("A rank of the job's gang was lost: {lost}"), None)).await?;
            if fresh && matches!(status, JobStatus::Running | JobStatus::Pausing) && !store::lose_runner(&mut tx, job_id, attempt, lease.max_attempts, "A rank was lost").await? {
                if status == JobStatus::Pausing {
                    store::transition(&mut tx, job_id, attempt, JobStatus::Paused, format!("Job paused at {stage} step {step}; resume continues from its checkpoint")).await?;
                } else {
                    store::requeue_as_next_attempt(&mut tx, job_id, attempt, |next| format!("Job requeued as attempt {next}, to resume from its latest checkpoint on a new gang")).await?;
                }
            }
            fresh
        }
        RunnerEventKind::Released { stage, step, rank_lost: None } => {
            let fresh = store::insert_event(&mut tx, log("info", "message", format!("Runner {} is shutting down and handed the job back", event.runner_id), None)).await?;
            if fresh && status == JobStatus::Pausing {
                store::transition(&mut tx, job_id, attempt, JobStatus::Paused, format!("Job paused at {stage} step {step}; resume continues from its checkpoint")).await?;
            } else if fresh && status == JobStatus::Running {
                store::requeue_as_next_attempt(&mut tx, job_id, attempt, |next| format!("Job requeued from its checkpoint at {stage} step {step} as attempt {next}")).await?;
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
            record_measurement(&mut tx, job_id, *trained_tokens, result).await?;
            true
        }
        RunnerEventKind::Failed { code, message } => {
            // Only the table's codes reach a tenant: anything else a runner sends is a training error.
            let code = ErrorCode::parse(code).unwrap_or(ErrorCode::TrainingError).as_str();
            let message = moetune_types::text::for_tenants(message);
            sqlx::query("UPDATE jobs SET error_code = $2, error_message = $3 WHERE id = $1")
                .bind(job_id)
                .bind(code)
                .bind(&message)
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

/// Whether the sender may say this about the job: start it only with the claim in hand, say anything
/// else only as the runner that started it, and name storage only under the attempt's own prefixes.
/// Keeps what a succeeded job measured for the estimates of jobs like it (`moetune_types::estimate`):
/// the runner's class and its time in training steps from its result, the plan from the job's spec
/// and training file. A result without them (a runner older than the estimates) records nothing.
async fn record_measurement(tx: &mut sqlx::Transaction<'_, sqlx::Postgres>, job_id: &JobId, trained_tokens: i64, result: &serde_json::Value) -> anyhow::Result<()> {
    let timings = ResultTimings::deserialize(result).unwrap_or_default();
    let (Some(class), Some(training_seconds)) = (timings.runner_class.as_deref(), timings.training_seconds) else { return Ok(()) };
    if !training_seconds.is_finite() || training_seconds < 0.0 || class.is_empty() || class.len() > 64 || class.chars().any(char::is_control) {
        tracing::warn!(job = %job_id, class, training_seconds, "not recording a measurement the runner reported oddly");
        return Ok(());
    }
    type Row = (serde_json::Value, String, i64, i64, bool, i32, Option<f64>);
    let (spec, model, examples, estimated_tokens, validation_file, attempt, wall_seconds): Row = sqlx::query_as(
        "SELECT j.spec, j.model, coalesce(f.example_count, 0), coalesce(f.estimated_tokens, 0), j.validation_file IS NOT NULL, j.attempt,
                extract(epoch FROM now() - j.started_at)::float8
         FROM jobs j JOIN files f ON f.id = j.training_file WHERE j.id = $1",
    )
    .bind(job_id)
    .fetch_one(&mut **tx)
    .await?;
    let Ok(spec) = serde_json::from_value::<moetune_types::TrainingSpec>(spec) else {
        tracing::warn!(job = %job_id, "not recording a measurement: the job's spec does not parse");
        return Ok(());
    };
    let plan = moetune_types::estimate::plan(&spec, examples.max(0) as u64, estimated_tokens.max(0) as u64, validation_file);
    sqlx::query(
        "INSERT INTO job_measurements (job_id, model, method, runner_class, estimated_tokens, trained_tokens, training_seconds, wall_seconds)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (job_id) DO NOTHING",
    )
    .bind(job_id)
    .bind(&model)
    .bind(spec.moe.sft_method.as_str())
    .bind(class)
    .bind(plan.estimated_tokens as i64)
    .bind(trained_tokens)
    .bind(training_seconds)
    .bind(wall_seconds.filter(|_| attempt == 1))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn level_static(level: &str) -> &'static str {
    if level == "error" { "error" } else { "warn" }
}
