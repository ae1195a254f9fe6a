//! One way every moetune binary reads its settings: the commented defaults file compiled into it,
//! overridden by `MOETUNE_<KEY>` env vars (`MOETUNE_S3__ENDPOINT` for nested keys).

use serde::de::DeserializeOwned;

pub fn load<T: DeserializeOwned>(defaults_toml: &str) -> anyhow::Result<T> {
    let config = config::Config::builder()
        .add_source(config::File::from_str(defaults_toml, config::FileFormat::Toml))
        .add_source(config::Environment::with_prefix("MOETUNE").prefix_separator("_").separator("__"))
        .build()?;
    Ok(config.try_deserialize()?)
}
