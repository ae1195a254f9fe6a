//! Statuses of jobs, files and uploads: their wire names, and with the `sqlx` feature their `status` columns.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Lifecycle of a fine-tuning job; names and values follow the OpenAI fine-tuning API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "sqlx", derive(sqlx::Type), sqlx(type_name = "text", rename_all = "snake_case"))]
pub enum JobStatus {
    ValidatingFiles,
    Queued,
    Running,
    /// A pause was asked for while running: the runner checkpoints at its next step and lets go.
    Pausing,
    /// Holds no runner; `resume` continues from the latest checkpoint.
    Paused,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ValidatingFiles => "validating_files",
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Pausing => "pausing",
            Self::Paused => "paused",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::ValidatingFiles,
            Self::Queued,
            Self::Running,
            Self::Pausing,
            Self::Paused,
            Self::Succeeded,
            Self::Failed,
            Self::Cancelled,
        ]
        .into_iter()
        .find(|status| status.as_str() == s)
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}

/// A file's validation state: `uploaded` (stored, not yet validated), then `processed` or `error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "sqlx", derive(sqlx::Type), sqlx(type_name = "text", rename_all = "snake_case"))]
pub enum FileStatus {
    Uploaded,
    Processed,
    Error,
}

/// A multi-part upload's state as stored; a pending upload past its expiry shows as `expired`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "sqlx", derive(sqlx::Type), sqlx(type_name = "text", rename_all = "snake_case"))]
pub enum UploadStatus {
    Pending,
    Completed,
    Cancelled,
}

impl UploadStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Completed => "completed",
            Self::Cancelled => "cancelled",
        }
    }
}
