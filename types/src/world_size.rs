//! `world_size` as a job request carries it: a number of ranks, or `"auto"` for the API to choose
//! the fewest ranks whose per-rank memory fits the registered runners
//! ([`crate::MemoryModel::choose_world_size`]). Held as a `u32` with [`AUTO`] standing for `"auto"`
//! until the API resolves it: a stored job and a runner's spec always carry the number.

use serde::{de, Deserialize, Deserializer, Serializer};
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

/// Writes a number of ranks, or `"auto"` for [`AUTO`] (which then reads back as it was).
pub fn serialize<S: Serializer>(ranks: &u32, serializer: S) -> Result<S::Ok, S::Error> {
    match *ranks {
        AUTO => serializer.serialize_str("auto"),
        n => serializer.serialize_u32(n),
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

#[cfg(test)]
mod tests {
    use crate::MoeSftQatOptions;

    #[test]
    fn auto_and_numbers_read_back_as_written() {
        let read = |world: serde_json::Value| serde_json::from_value::<MoeSftQatOptions>(serde_json::json!({"world_size": world})).map(|o| o.world_size);
        assert_eq!(read("auto".into()).unwrap(), super::AUTO);
        assert_eq!(read(8.into()).unwrap(), 8);
        for refused in [serde_json::json!(0), serde_json::json!(-1), serde_json::json!("four"), serde_json::json!(4.5)] {
            assert!(read(refused.clone()).unwrap_err().to_string().contains("takes \"auto\" or an integer"), "{refused}");
        }
        let auto = MoeSftQatOptions { world_size: super::AUTO, ..Default::default() };
        let written = serde_json::to_value(&auto).unwrap();
        assert_eq!(written["world_size"], "auto");
        assert_eq!(serde_json::from_value::<MoeSftQatOptions>(written).unwrap().world_size, super::AUTO);
    }
}
