//! The moetune scheduler daemon: the ingester that applies runner events to Postgres with attempt
//! fencing, the reconciler that rebuilds Redis from Postgres and requeues lost work, the webhook
//! dispatcher, the placement pass and the metrics endpoint. The job queue, the job store and the
//! runner registry they act on are the job domain's (`moetune_domain`), which the api and the runners
//! share.

pub mod config;
pub mod ingest;
pub mod lease;
pub mod metrics;
pub mod placement;
pub mod reconcile;
pub mod webhooks;

pub use config::SchedulerConfig;
pub use moetune_domain::JobQueue;

/// Runs the ingester, the reconciler, the webhook dispatcher, the placement pass and the metrics endpoint until `shutdown` resolves.
pub async fn run(
    config: SchedulerConfig,
    pool: sqlx::PgPool,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let queue = JobQueue::connect(&config.redis_url, &config.redis_prefix).await?;
    let metrics = std::sync::Arc::new(metrics::Metrics::default());
    let ingester = ingest::Ingester::new(queue.clone(), pool.clone(), config.consumer_name.clone(), config.s3_bucket.clone()).with_metrics(metrics.clone()).with_max_attempts(config.max_attempts);
    let reconciler = reconcile::Reconciler::new(queue.clone(), pool.clone(), config.clone()).with_metrics(metrics.clone());
    let webhooks = webhooks::dispatch::Dispatcher::new(pool.clone(), config.webhooks.clone(), metrics.clone())?;
    let metrics_server = match config.metrics_addr.as_str() {
        "" => None,
        addr => Some(metrics::serve(addr, metrics.clone())?),
    };
    let serve_metrics = async move {
        match metrics_server {
            Some(server) => server.await.map_err(anyhow::Error::from),
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        result = ingester.run() => result,
        result = reconciler.run() => result,
        result = webhooks.run() => result,
        result = serve_metrics => result,
        () = explain(queue, pool, metrics.clone(), config.placement_interval_ms) => Ok(()),
        () = shutdown => Ok(()),
    }
}

/// Keeps queued jobs' `status_details` saying why they wait when no runner fits them (see `placement`)
/// and samples the metrics' gauges, both from one read of the runner registry per pass.
async fn explain(queue: JobQueue, pool: sqlx::PgPool, metrics: std::sync::Arc<metrics::Metrics>, interval_ms: u64) {
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(interval_ms));
    loop {
        tick.tick().await;
        let runners = match queue.runners().await {
            Ok(runners) => runners,
            Err(e) => {
                tracing::warn!(error = %e, "reading the runner registry failed");
                continue;
            }
        };
        if let Err(e) = placement::explain_waiting(&runners, &pool).await {
            tracing::warn!(error = %e, "placement pass failed");
        }
        if let Err(e) = metrics.sample(&queue, &pool, &runners).await {
            tracing::warn!(error = %e, "sampling metrics failed");
        }
    }
}
