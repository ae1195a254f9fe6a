//! Where the CLI keeps the API URL and credential: `$MOETUNE_CONFIG_DIR` or the platform config dir
//! (`~/.config/moetune/credentials.toml`), readable by the user only. `MOETUNE_API_URL` and
//! `MOETUNE_API_KEY` (or `--base-url`, `--token`) override it.

use std::path::PathBuf;

use anyhow::Context;
use serde::{Deserialize, Serialize};

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Credentials {
    pub base_url: String,
    pub token: String,
}

fn path() -> anyhow::Result<PathBuf> {
    let dir = match std::env::var_os("MOETUNE_CONFIG_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => dirs::config_dir().context("no config directory: set MOETUNE_CONFIG_DIR")?.join("moetune"),
    };
    Ok(dir.join("credentials.toml"))
}

pub fn load() -> anyhow::Result<Option<Credentials>> {
    let path = path()?;
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(Some(toml::from_str(&text).with_context(|| format!("{} is not valid; log in again", path.display()))?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Writes the file with mode 0600 (created so, never world-readable in between).
pub fn save(credentials: &Credentials) -> anyhow::Result<PathBuf> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = path()?;
    std::fs::create_dir_all(path.parent().expect("a file in a directory"))?;
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&path).with_context(|| format!("writing {}", path.display()))?;
    file.write_all(toml::to_string(credentials)?.as_bytes())?;
    Ok(path)
}
