//! The moetune scheduler: the Redis job queue (used by the api to enqueue), the Postgres job store
//! (status transitions and events), the ingester that applies runner events to Postgres with
//! attempt fencing, and the reconciler that rebuilds Redis from Postgres and requeues lost work.

pub mod config;
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
    let reconciler = reconcile::Reconciler::new(queue, pool, config.clone());
    tokio::select! {
        result = ingester.run() => result,
        result = reconciler.run() => result,
        () = shutdown => Ok(()),
    }
}
