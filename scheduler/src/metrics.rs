//! Prometheus metrics of the queue and placement, served at `GET /metrics` on `metrics_addr`.
//!
//! Gauges are sampled from Redis and Postgres each placement pass (so every scheduler replica reports
//! the same fleet-wide values); counters and the placement-latency histogram count what this replica did.

use std::sync::Arc;

use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use sqlx::PgPool;

use moetune_domain::registry::{RunnerState, RunnerView};
use moetune_domain::JobQueue;

pub struct Metrics {
    registry: Registry,
    pub waiting_jobs: IntGauge,
    pub waiting_tenants: IntGauge,
    pub unplaceable_jobs: IntGauge,
    pub jobs_by_status: IntGaugeVec,
    pub runners_by_state: IntGaugeVec,
    /// Seconds from entering the queue to a runner starting the job.
    pub placement_seconds: Histogram,
    pub requeued: IntCounterVec,
    pub runner_events: IntCounterVec,
    /// Webhook delivery attempts by outcome: succeeded, failed, gone (410, endpoint disabled).
    pub webhook_attempts: IntCounterVec,
    /// Deliveries waiting for their next attempt (Postgres).
    pub webhook_pending: IntGauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new().expect("metric definitions are valid")
    }
}

impl Metrics {
    fn new() -> prometheus::Result<Self> {
        let registry = Registry::new();
        let gauge = |name: &str, help: &str| IntGauge::new(name, help);
        let metrics = Self {
            waiting_jobs: gauge("moetune_queue_waiting_jobs", "Jobs waiting in the Redis queue for a runner")?,
            waiting_tenants: gauge("moetune_queue_waiting_tenants", "Tenants with at least one waiting job")?,
            unplaceable_jobs: gauge("moetune_queue_unplaceable_jobs", "Queued jobs that no registered runner fits")?,
            jobs_by_status: IntGaugeVec::new(Opts::new("moetune_jobs", "Jobs by status (Postgres)"), &["status"])?,
            runners_by_state: IntGaugeVec::new(Opts::new("moetune_runners", "Registered runners by state"), &["state"])?,
            placement_seconds: Histogram::with_opts(
                HistogramOpts::new("moetune_placement_latency_seconds", "From entering the queue to a runner starting the job")
                    .buckets(vec![0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 7200.0]),
            )?,
            requeued: IntCounterVec::new(Opts::new("moetune_jobs_requeued_total", "Jobs handed out again"), &["reason"])?,
            runner_events: IntCounterVec::new(Opts::new("moetune_runner_events_total", "Runner events ingested, by outcome"), &["outcome"])?,
            webhook_attempts: IntCounterVec::new(Opts::new("moetune_webhook_attempts_total", "Webhook delivery attempts, by outcome"), &["outcome"])?,
            webhook_pending: gauge("moetune_webhook_pending_deliveries", "Webhook deliveries waiting for their next attempt")?,
            registry,
        };
        metrics.registry.register(Box::new(metrics.waiting_jobs.clone()))?;
        metrics.registry.register(Box::new(metrics.waiting_tenants.clone()))?;
        metrics.registry.register(Box::new(metrics.unplaceable_jobs.clone()))?;
        metrics.registry.register(Box::new(metrics.jobs_by_status.clone()))?;
        metrics.registry.register(Box::new(metrics.runners_by_state.clone()))?;
        metrics.registry.register(Box::new(metrics.placement_seconds.clone()))?;
        metrics.registry.register(Box::new(metrics.requeued.clone()))?;
        metrics.registry.register(Box::new(metrics.runner_events.clone()))?;
        metrics.registry.register(Box::new(metrics.webhook_attempts.clone()))?;
        metrics.registry.register(Box::new(metrics.webhook_pending.clone()))?;
        Ok(metrics)
    }

    /// Refreshes the gauges from Redis, Postgres and the registry as read (`runners`).
    pub async fn sample(&self, queue: &JobQueue, pool: &PgPool, runners: &[RunnerView]) -> anyhow::Result<()> {
        let waiting = queue.waiting_counts().await?;
        self.waiting_tenants.set(waiting.len() as i64);
        self.waiting_jobs.set(waiting.iter().map(|(_, n)| n).sum());
        let statuses: Vec<(String, i64)> = sqlx::query_as("SELECT status, count(*) FROM jobs GROUP BY status").fetch_all(pool).await?;
        self.jobs_by_status.reset();
        for (status, count) in statuses {
            self.jobs_by_status.with_label_values(&[&status]).set(count);
        }
        let unplaceable: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE status = 'queued' AND status_details IS NOT NULL").fetch_one(pool).await?;
        self.unplaceable_jobs.set(unplaceable);
        let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM webhook_deliveries WHERE status = 'pending'").fetch_one(pool).await?;
        self.webhook_pending.set(pending);
        for state in [RunnerState::Idle, RunnerState::Busy, RunnerState::Draining, RunnerState::Lost] {
            let count = runners.iter().filter(|r| r.state == state).count();
            self.runners_by_state.with_label_values(&[state.as_str()]).set(count as i64);
        }
        Ok(())
    }
}

/// Binds `GET /metrics` (and `GET /healthz`) on `addr`; the returned server runs when awaited.
pub fn serve(addr: &str, metrics: Arc<Metrics>) -> anyhow::Result<moetune_platform::metrics::Server> {
    let server = moetune_platform::metrics::serve(addr, metrics.registry.clone())?;
    tracing::info!(addr, "serving scheduler metrics");
    Ok(server)
}
