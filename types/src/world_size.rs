//! `world_size` as a job request carries it: a number of ranks, or `"auto"` for the API to choose
//! the fewest ranks whose per-rank memory fits the registered runners
//! ([`crate::placement::choose_world_size`]). Held as a `u32` with [`AUTO`] standing for `"auto"`
//! until the API resolves it: a stored job and a runner's spec always carry the number.

use serde::{de, Deserialize, Deserializer};
use utoipa::ToSchema;

/// `"auto"` before the API has chosen.
pub const AUTO: u32 = 0;

/// The most ranks a job trains on.
pub const MAX: u32 = 64;

/// Reads a number of ranks or `"auto"` (as [`AUTO`]). The upper bound is checked with the other
/// options (the refusal names the field); 0, which would read as `"auto"`, is refused here.
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    match serde_json::Value::deserialize(deserializer)? {
        serde_json::Value::String(s) if s == "auto" => Ok(AUTO),
        serde_json::Value::Number(n) => n.as_u64().filter(|&v| v >= 1).and_then(|v| u32::try_from(v).ok()).ok_or_else(|| de::Error::custom(message())),
        _ => Err(de::Error::custom(message())),
    }
}

fn message() -> String {
    format!("`world_size` takes \"auto\" or an integer from 1 to {MAX}")
}

/// `world_size`: a number of ranks (1 to 64), or `"auto"` for the API to choose the fewest that fit.
#[derive(ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum WorldSizeRequest {
    Ranks(u32),
    Auto(AutoWorldSize),
}

/// `"auto"`.
#[derive(ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum AutoWorldSize {
    Auto,
}
