//! Timestamps as OpenAI's objects carry them.

use serde::Serialize;
use utoipa::ToSchema;

/// Seconds since the Unix epoch, as OpenAI's objects carry timestamps.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(transparent)]
pub struct UnixTime(pub i64);

impl From<chrono::DateTime<chrono::Utc>> for UnixTime {
    fn from(t: chrono::DateTime<chrono::Utc>) -> Self {
        Self(t.timestamp())
    }
}
