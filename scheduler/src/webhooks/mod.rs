//! Webhooks, per Standard Webhooks (<https://www.standardwebhooks.com>): events are written to a
//! Postgres outbox in the transaction of the state change they announce (`outbox`), and the
//! dispatcher (`dispatch`) delivers them at least once, signed (`signing`), retried on svix's schedule
//! (`schedule`), and only to endpoints on public networks unless an operator allows more (`network`).

pub mod dispatch;
pub mod network;
pub mod outbox;
pub mod schedule;
pub mod signing;

use moetune_types::JobStatus;
use serde::Deserialize;

/// The event types a tenant's endpoint can subscribe to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    JobRunning,
    JobSucceeded,
    JobFailed,
    JobCancelled,
    CheckpointCreated,
    MonitorAlert,
}

impl EventType {
    pub const ALL: [EventType; 6] = [
        Self::JobRunning,
        Self::JobSucceeded,
        Self::JobFailed,
        Self::JobCancelled,
        Self::CheckpointCreated,
        Self::MonitorAlert,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::JobRunning => "fine_tuning.job.running",
            Self::JobSucceeded => "fine_tuning.job.succeeded",
            Self::JobFailed => "fine_tuning.job.failed",
            Self::JobCancelled => "fine_tuning.job.cancelled",
            Self::CheckpointCreated => "checkpoint.created",
            Self::MonitorAlert => "monitor.alert",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// The event a job entering `status` announces, if any.
    pub fn for_status(status: JobStatus) -> Option<Self> {
        match status {
            JobStatus::Running => Some(Self::JobRunning),
            JobStatus::Succeeded => Some(Self::JobSucceeded),
            JobStatus::Failed => Some(Self::JobFailed),
            JobStatus::Cancelled => Some(Self::JobCancelled),
            _ => None,
        }
    }
}

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
