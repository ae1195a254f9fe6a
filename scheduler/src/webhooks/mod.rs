//! Webhook delivery: events written to the Postgres outbox (`moetune_domain::webhooks::outbox`) are
//! delivered at least once by the dispatcher (`dispatch`), signed (`moetune_domain::webhooks::signing`),
//! retried on svix's schedule (`schedule`), and only to endpoints on public networks unless an operator
//! allows more (`resolver`, applying `moetune_domain::webhooks::network`).

pub mod dispatch;
pub mod resolver;
pub mod schedule;

use serde::Deserialize;

/// `[webhooks]` settings, shared by the scheduler (which delivers) and the api (which checks URLs).
#[derive(Debug, Clone, Deserialize)]
pub struct WebhookConfig {
    /// Comma-separated delays in ms before each attempt; the first is the first attempt's.
    pub retry_schedule_ms: String,
    /// Each delay is scaled by a random factor in [1 - jitter, 1 + jitter].
    pub jitter: f64,
    pub request_timeout_ms: u64,
    /// How often the dispatcher looks for due deliveries when it found none.
    pub poll_interval_ms: u64,
    /// Deliveries in flight at once, per scheduler.
    pub concurrency: usize,
    /// Deliveries in flight at once to one endpoint, per scheduler: a slow endpoint holds at most this
    /// many of the `concurrency` slots, and the rest keep serving other endpoints.
    pub per_endpoint_concurrency: usize,
    /// Comma-separated CIDRs of private networks endpoints may be on nonetheless (empty: none).
    pub allowed_private_networks: String,
    /// Events (with their deliveries and attempts) are kept this many days, pending ones longer.
    pub retention_days: i32,
}
