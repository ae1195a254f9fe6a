//! The moetune scheduler: the Redis job queue (used by the api to enqueue), the Postgres job store
//! (status transitions and events), the ingester that applies runner events to Postgres with
//! attempt fencing, and the reconciler that rebuilds Redis from Postgres and requeues lost work.

pub mod config;
pub mod fair_share;
pub mod ingest;
pub mod queue;
pub mod reconcile;
pub mod registry;
pub mod store;

pub use config::SchedulerConfig;
pub use queue::JobQueue;

/// Runs the ingester and the reconciler until `shutdown` resolves.
pub async fn run(
    config: SchedulerConfig,
    pool: sqlx::PgPool,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let queue = JobQueue::connect(&config.redis_url, &config.redis_prefix).await?;
    let ingester = ingest::Ingester::new(queue.clone(), pool.clone(), config.consumer_name.clone(), config.s3_bucket.clone());
    let reconciler = reconcile::Reconciler::new(queue.clone(), pool.clone(), config.clone());
    tokio::select! {
        result = ingester.run() => result,
        result = reconciler.run() => result,
        () = dispatch(queue, pool, config.dispatch_interval_ms) => Ok(()),
        () = shutdown => Ok(()),
    }
}

/// Keeps the pending list in fair-share order (see `fair_share`).
async fn dispatch(queue: JobQueue, pool: sqlx::PgPool, interval_ms: u64) {
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(interval_ms));
    loop {
        tick.tick().await;
        if let Err(e) = fair_share::reorder_pending(&queue, &pool).await {
            tracing::warn!(error = %e, "fair-share pass failed");
        }
    }
}
