//! Webhook events as the job domain knows them, per Standard Webhooks
//! (<https://www.standardwebhooks.com>): the event types, the outbox that writes an event in the
//! transaction of the state change it announces (`outbox`), how deliveries are signed (`signing`), and
//! which networks an endpoint may be on (`network`). Delivering them is the scheduler's dispatcher.

#[cfg(feature = "postgres")]
pub mod outbox;
pub mod network;
pub mod signing;

use moetune_types::JobStatus;

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
