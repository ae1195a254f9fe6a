//! Keeps Redis consistent with Postgres: republishes jobs Redis lost (a flush, or an api crash
//! between commit and enqueue) and requeues jobs whose runner stopped heartbeating.

use std::time::Duration;

use moetune_types::{JobId, JobStatus, RunnerId};
use sqlx::PgPool;

use moetune_domain::queue::QueueSnapshot;
use moetune_domain::store::{self, ActiveJob};
use crate::{JobQueue, SchedulerConfig};

pub struct Reconciler {
    queue: JobQueue,
    pool: PgPool,
    config: SchedulerConfig,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
}

impl Reconciler {
    pub fn new(queue: JobQueue, pool: PgPool, config: SchedulerConfig) -> Self {
        Self { queue, pool, config, metrics: Default::default() }
    }

    pub fn with_metrics(self, metrics: std::sync::Arc<crate::metrics::Metrics>) -> Self {
        Self { metrics, ..self }
    }

    pub async fn run(&self) -> anyhow::Result<()> {
        let mut tick = tokio::time::interval(Duration::from_millis(self.config.reconcile_interval_ms));
        loop {
            tick.tick().await;
            if let Err(e) = self.reconcile_once().await {
                tracing::warn!(error = %e, "reconcile pass failed");
            }
        }
    }

    pub async fn reconcile_once(&self) -> anyhow::Result<()> {
        let jobs = store::active_jobs(&self.pool).await?;
        let snapshot = self.queue.snapshot().await?;
        self.queue.set_running(&snapshot.claimed_per_tenant()).await?;
        self.withdraw_cancelled(&jobs, &snapshot).await?;
        self.drop_finished_gangs(&jobs, &snapshot).await?;
        for job in jobs {
            self.reconcile_job(&job, &snapshot).await?;
        }
        Ok(())
    }

    /// Jobs Redis still holds (waiting or claimed) that Postgres says were cancelled: the API could not
    /// reach Redis when the tenant cancelled, so the runner never saw the flag and would train on to the
    /// end. The flag is set now; the runner stops at its next step.
    async fn withdraw_cancelled(&self, active: &[ActiveJob], snapshot: &QueueSnapshot) -> anyhow::Result<()> {
        let active: std::collections::HashSet<&JobId> = active.iter().map(|j| &j.id).collect();
        let held: Vec<&JobId> = snapshot.pending.iter().chain(snapshot.claimed.keys()).filter(|id| !active.contains(id)).collect();
        if held.is_empty() {
            return Ok(());
        }
        let cancelled: Vec<JobId> = sqlx::query_scalar("SELECT id FROM jobs WHERE id = ANY($1) AND status = 'cancelled'").bind(held.iter().map(|id| id.as_str()).collect::<Vec<_>>()).fetch_all(&self.pool).await?;
        for job in cancelled {
            if !self.queue.is_cancelled(&job).await? {
                tracing::info!(job = %job, "delivering a cancel Redis missed");
                self.queue.cancel(&job).await?;
            }
        }
        Ok(())
    }

    /// Gang records of jobs that ended (cancelled, or finished without the usual `forget`) once no rank
    /// holds them: runners may not delete keys, so their records are dropped here.
    async fn drop_finished_gangs(&self, active: &[ActiveJob], snapshot: &QueueSnapshot) -> anyhow::Result<()> {
        let active: std::collections::HashSet<&JobId> = active.iter().map(|j| &j.id).collect();
        for job in snapshot.gangs.keys().filter(|job| !active.contains(job)) {
            if !snapshot.holds.iter().any(|(held, _)| held == job) {
                self.queue.forget(None, job).await?;
            }
        }
        Ok(())
    }

    async fn reconcile_job(&self, job: &ActiveJob, snapshot: &QueueSnapshot) -> anyhow::Result<()> {
        if snapshot.pending.contains(&job.id) {
            return Ok(());
        }
        // A gang trains only while every rank still on it is alive: one lost rank sends the whole job
        // back. A rank that finished its part (rank 0 still exporting) no longer counts, and once rank 0
        // let go its report settles the job.
        let gang = snapshot.gangs.get(&job.id).filter(|gang| !gang.closed);
        let lost_rank = gang.and_then(|gang| gang.engaged.iter().find(|r| !snapshot.alive_runners.contains(*r)));
        if let Some(lost) = lost_rank {
            return match job.status {
                JobStatus::Pausing => self.settle_pause(job, Some(lost)).await,
                _ => self.requeue_lost(job, lost).await,
            };
        }
        let holder = snapshot.claimed.get(&job.id).or(job.runner_id.as_ref());
        match holder {
            Some(runner) if snapshot.alive_runners.contains(runner) => Ok(()),
            // Pausing, and nobody is left to checkpoint: paused at the latest checkpoint it has.
            _ if job.status == JobStatus::Pausing => self.settle_pause(job, holder).await,
            // Claimed, or running, on a runner that stopped heartbeating: hand it out again.
            Some(runner) => self.requeue_lost(job, runner).await,
            // Queued in Postgres but unknown to Redis: publish it again, same attempt.
            None if job.status == JobStatus::Queued => {
                let mut conn = self.pool.acquire().await?;
                let assignment = store::assignment(&mut conn, &job.id, &self.config.s3_bucket).await?;
                tracing::info!(job = %job.id, "republishing queued job missing from Redis");
                self.metrics.requeued.with_label_values(&["republished"]).inc();
                self.queue.enqueue(&assignment).await
            }
            None => Ok(()),
        }
    }

    /// Locks the job's row; None when it changed since the snapshot (the next pass looks again).
    async fn lock_unchanged(&self, job: &ActiveJob) -> anyhow::Result<Option<sqlx::Transaction<'static, sqlx::Postgres>>> {
        let mut tx = self.pool.begin().await?;
        let current: (i32, JobStatus) = sqlx::query_as("SELECT attempt, status FROM jobs WHERE id = $1 FOR UPDATE")
            .bind(&job.id)
            .fetch_one(&mut *tx)
            .await?;
        Ok((current == (job.attempt, job.status)).then_some(tx))
    }

    async fn settle_pause(&self, job: &ActiveJob, runner: Option<&RunnerId>) -> anyhow::Result<()> {
        let Some(mut tx) = self.lock_unchanged(job).await? else { return Ok(()) };
        let message = format!("Runner {} was lost while pausing; job paused at its latest checkpoint", runner.map_or("(none)", RunnerId::as_str));
        store::transition(&mut tx, &job.id, job.attempt, JobStatus::Paused, message).await?;
        tx.commit().await?;
        self.queue.forget(runner, &job.id).await
    }

    /// Bumps the attempt (fencing off the lost runner) and requeues, or fails once `max_attempts`
    /// runners were lost.
    async fn requeue_lost(&self, job: &ActiveJob, runner: &RunnerId) -> anyhow::Result<()> {
        let Some(mut tx) = self.lock_unchanged(job).await? else { return Ok(()) };
        if store::lose_runner(&mut tx, &job.id, job.attempt, self.config.max_attempts, &format!("Runner {runner} was lost")).await? {
            tx.commit().await?;
            return self.queue.forget(Some(runner), &job.id).await;
        }
        let attempt = store::requeue_as_next_attempt(&mut tx, &job.id, job.attempt, |next| format!("Runner {runner} was lost; job requeued as attempt {next}")).await?;
        let assignment = store::assignment(&mut tx, &job.id, &self.config.s3_bucket).await?;
        tx.commit().await?;
        tracing::warn!(job = %job.id, runner = %runner, attempt, "requeued job from lost runner");
        self.metrics.requeued.with_label_values(&["runner_lost"]).inc();
        self.queue.requeue_from(runner, &assignment).await
    }
}
