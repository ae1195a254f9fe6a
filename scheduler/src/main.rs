use moetune_scheduler::SchedulerConfig;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    moetune_platform::settings::init_logging("info");
    let config = SchedulerConfig::load()?;
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [command, runner_id] = args.as_slice() {
        anyhow::ensure!(command == "runner-credentials", "usage: moetune-scheduler [runner-credentials RUNNER_ID]");
        return runner_credentials(&config, runner_id).await;
    }
    anyhow::ensure!(args.is_empty(), "usage: moetune-scheduler [runner-credentials RUNNER_ID]");
    let pool = sqlx::postgres::PgPoolOptions::new().max_connections(4).connect(&config.database_url).await?;
    tracing::info!(prefix = %config.redis_prefix, "scheduler started");
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! { _ = term.recv() => {}, _ = tokio::signal::ctrl_c() => {} }
        tracing::info!("shutting down");
    };
    moetune_scheduler::run(config, pool, shutdown).await
}

/// Creates the runner's own Redis user and prints the settings to give that runner (and only it).
async fn runner_credentials(config: &SchedulerConfig, runner_id: &str) -> anyhow::Result<()> {
    let runner_id = moetune_types::RunnerId::parse(runner_id).map_err(|e| anyhow::anyhow!("{e}: use letters, digits, '-', '_' or '.'"))?;
    let queue = moetune_scheduler::JobQueue::connect(&config.redis_url, &config.redis_prefix).await?;
    // Two v4 UUIDs: 244 random bits from the OS.
    let password = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
    let user = moetune_domain::registry::create_runner_user(&queue, &runner_id, &password).await?;
    let host = config.redis_url.rsplit_once('@').map_or(config.redis_url.trim_start_matches("redis://"), |(_, host)| host);
    println!("MOETUNE_RUNNER_ID={runner_id}");
    println!("MOETUNE_REDIS_URL=redis://{user}:{password}@{host}");
    println!("MOETUNE_REDIS_PREFIX={}", config.redis_prefix);
    Ok(())
}

