//! Finding the replica a command means: a URL, a replica directory, or a database path
//! looked up in the config file.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use sluice_storage::ReplicaClient;

/// Returns the replica client and, when a database path selected it, that path.
pub fn resolve_replica(
    target: &str,
    config: Option<&Path>,
    expand_env: bool,
) -> Result<(ReplicaClient, Option<PathBuf>)> {
    if target.contains("://") {
        let client = ReplicaClient::from_url(target).with_context(|| "invalid replica URL".to_string())?;
        return Ok((client, None));
    }
    let path = std::path::absolute(target).with_context(|| format!("invalid path {target}"))?;
    let cfg = sluice_config::Config::load(config, expand_env);
    match cfg {
        Ok(cfg) => {
            for w in &cfg.warnings {
                tracing::warn!("{w}");
            }
            if let Some(db) = cfg.db(&path) {
                let client = ReplicaClient::open(&db.replica.storage)
                    .with_context(|| format!("invalid replica for {}", path.display()))?;
                return Ok((client, Some(db.path.clone())));
            }
            if path.join("ltx").is_dir() {
                return Ok((ReplicaClient::from_url(&path.to_string_lossy())?, None));
            }
            Err(anyhow!("database {} is not in the config file", path.display()))
        }
        // Without a config, a bare replica directory still works.
        Err(_) if config.is_none() && path.join("ltx").is_dir() => {
            Ok((ReplicaClient::from_url(&path.to_string_lossy())?, None))
        }
        Err(e) => Err(anyhow::Error::new(e)
            .context(format!("{} is not a replica URL, so a config file must name its replica", path.display()))),
    }
}
