//! The moetune HTTP API: files, fine-tuning jobs, events and artifacts over actix-web.

pub mod auth;
pub mod config;
pub mod console;
pub mod dataset_sink;
pub mod error;
pub mod estimate;
pub mod event_stream;
pub mod files;
pub mod idempotency;
pub mod jobs;
pub mod metrics;
pub mod models;
pub mod pagination;
pub mod quotas;
pub mod rate_limit;
pub mod report;
pub mod routes;
pub mod routing_profiles;
pub mod storage;
pub mod sweeper;
pub mod telemetry;
pub mod unix_time;
pub mod uploads;
pub mod webhooks;

/// The OpenAPI contract, derived from the route table.
pub use routes::openapi;

use std::net::TcpListener;

use actix_web::dev::Server;
use actix_web::{web, App, HttpServer};
use moetune_domain::JobQueue;
use sqlx::PgPool;

pub use config::ApiConfig;

/// Shared by every handler.
pub struct AppState {
    pub config: ApiConfig,
    pub db: PgPool,
    pub s3: aws_sdk_s3::Client,
    pub queue: JobQueue,
    pub models: models::ModelCache,
    pub tenants: auth::KnownTenants,
    pub streams: rate_limit::StreamSlots,
    pub notifier: event_stream::Notifier,
}

/// A bound, migrated, ready-to-run server. Owns its listener so tests can bind port 0.
pub struct Application {
    port: u16,
    server: Server,
}

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

impl Application {
    pub async fn build(config: ApiConfig) -> anyhow::Result<Self> {
        let db = sqlx::postgres::PgPoolOptions::new().max_connections(16).connect(&config.database_url).await?;
        Self::build_with_pool(config, db).await
    }

    pub async fn build_with_pool(config: ApiConfig, db: PgPool) -> anyhow::Result<Self> {
        MIGRATOR.run(&db).await?;
        // A weak JWT secret stops the start before anything listens or runs.
        let keys = web::Data::new(auth::TokenKeys::from_config(&config)?);
        let listener = TcpListener::bind(&config.bind_addr)?;
        let port = listener.local_addr()?.port();
        let state = web::Data::new(AppState {
            s3: config.s3.client(),
            queue: JobQueue::connect(&config.redis_url, &config.redis_prefix).await?,
            notifier: event_stream::Notifier::start(db.clone()),
            db,
            models: Default::default(),
            tenants: Default::default(),
            streams: Default::default(),
            config: config.clone(),
        });
        tokio::spawn(sweeper::sweep_forever(state.clone().into_inner()));
        let metrics = web::Data::new(metrics::ApiMetrics::default());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .app_data(keys.clone())
                .app_data(metrics.clone())
                .app_data(error::json_config())
                .app_data(error::query_config())
                .wrap(actix_web::middleware::from_fn(metrics::record))
                .wrap(actix_web::middleware::from_fn(telemetry::request_id_header))
                .wrap(tracing_actix_web::TracingLogger::<telemetry::RequestSpan>::new())
                .configure(routes::configure)
        })
        .listen(listener)?
        .run();
        Ok(Self { port, server })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}
