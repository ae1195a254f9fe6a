use moetune_scheduler::SchedulerConfig;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into())).init();
    let config = SchedulerConfig::load()?;
    let pool = sqlx::postgres::PgPoolOptions::new().max_connections(4).connect(&config.database_url).await?;
    tracing::info!(prefix = %config.redis_prefix, "scheduler started");
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! { _ = term.recv() => {}, _ = tokio::signal::ctrl_c() => {} }
        tracing::info!("shutting down");
    };
    moetune_scheduler::run(config, pool, shutdown).await
}
