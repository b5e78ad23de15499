//! `sluice databases`: the databases a config file replicates and their replicas (credentials
//! redacted), as `litestream databases` lists them. Makes no request.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use sluice_storage::ReplicaClient;

/// Arguments of `sluice databases`.
#[derive(clap::Args)]
pub struct Args {
    /// Config file (Litestream-compatible YAML; default as for `replicate`).
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Do not expand $VARS in the config file.
    #[arg(long)]
    no_expand_env: bool,
}

pub async fn run(args: Args) -> Result<ExitCode> {
    let cfg = sluice_config::Config::load(args.config.as_deref(), !args.no_expand_env).with_context(|| {
        let path = args.config.clone().unwrap_or_else(sluice_config::Config::default_path);
        format!("cannot read config {}", path.display())
    })?;
    let rows: Vec<(String, String)> = crate::discover::configured(&cfg)
        .iter()
        .map(|db| {
            let replica = ReplicaClient::open(&db.replica.storage)
                .map(|c| c.description().to_string())
                .unwrap_or_else(|e| format!("(invalid: {e})"));
            (db.path.display().to_string(), replica)
        })
        .collect();
    let width = rows.iter().map(|(p, _)| p.len()).chain(["path".len()]).max().unwrap_or(4);
    let mut out = std::io::stdout().lock();
    writeln!(out, "{:width$}  replica", "path")?;
    for (path, replica) in rows {
        writeln!(out, "{path:width$}  {replica}")?;
    }
    Ok(ExitCode::SUCCESS)
}
