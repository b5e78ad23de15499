//! Commands that talk to a running daemon through its control socket: `register`,
//! `unregister`, `list`, `info` (and `sync --wait`, see `sync_cmd`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::{Value, json};
use sluice_config::{Config, DEFAULT_SOCKET_PATH};

use crate::control;

/// Where to find the daemon.
#[derive(clap::Args)]
pub struct SocketArgs {
    /// Control socket. Default: the config's `socket.path` if enabled, else
    /// /var/run/litestream.sock.
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Config file (to find the socket).
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// How long to wait for the daemon.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

impl SocketArgs {
    /// The socket to use: the flag, else the config's (when enabled), else Litestream's default.
    pub fn resolve(&self) -> Option<PathBuf> {
        if let Some(s) = &self.socket {
            return Some(s.clone());
        }
        let explicit = self.config.is_some();
        match Config::load(self.config.as_deref(), true) {
            Ok(cfg) => cfg.socket.map(|s| s.path),
            // Without a config the daemon may still listen at the default place.
            Err(_) if !explicit => Path::new(DEFAULT_SOCKET_PATH).exists().then(|| DEFAULT_SOCKET_PATH.into()),
            Err(_) => None,
        }
    }

    fn require(&self) -> Result<PathBuf> {
        self.resolve().context("no control socket: give --socket, or a config with `socket: {enabled: true}`")
    }
}

/// `sluice register DB --replica URL`.
#[derive(clap::Args)]
pub struct RegisterArgs {
    /// The database to start replicating.
    db_path: PathBuf,
    /// Its replica URL.
    #[arg(long, value_name = "URL")]
    replica: String,
    #[command(flatten)]
    socket: SocketArgs,
}

/// `sluice unregister DB`.
#[derive(clap::Args)]
pub struct UnregisterArgs {
    /// The database to stop replicating (after a last sync).
    db_path: PathBuf,
    #[command(flatten)]
    socket: SocketArgs,
}

/// `sluice list` / `sluice info`.
#[derive(clap::Args)]
pub struct QueryArgs {
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    socket: SocketArgs,
}

fn absolute(p: &Path) -> Result<String> {
    Ok(std::path::absolute(p).with_context(|| format!("invalid path {}", p.display()))?.display().to_string())
}

pub async fn register(args: RegisterArgs) -> Result<ExitCode> {
    let body = json!({ "path": absolute(&args.db_path)?, "replica_url": args.replica });
    let reply = control::call(&args.socket.require()?, "POST", "/register", Some(body), args.socket.timeout).await?;
    println!("{}: {}", args.db_path.display(), reply["status"].as_str().unwrap_or("registered"));
    Ok(ExitCode::SUCCESS)
}

pub async fn unregister(args: UnregisterArgs) -> Result<ExitCode> {
    let secs = args.socket.timeout.as_secs().max(1);
    let body = json!({ "path": absolute(&args.db_path)?, "timeout": secs });
    let reply = control::call(&args.socket.require()?, "POST", "/unregister", Some(body), args.socket.timeout).await?;
    println!("{}: {}", args.db_path.display(), reply["status"].as_str().unwrap_or("unregistered"));
    Ok(ExitCode::SUCCESS)
}

pub async fn list(args: QueryArgs) -> Result<ExitCode> {
    let reply = control::call(&args.socket.require()?, "GET", "/list", None, args.socket.timeout).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&reply)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("{:<50} {:<18} {:<18} {:<7} replica", "path", "local_txid", "replica_txid", "source");
    for db in reply["dbs"].as_array().into_iter().flatten() {
        let s = |k: &str| db[k].as_str().unwrap_or("").to_string();
        println!(
            "{:<50} {:<18} {:<18} {:<7} {}",
            s("path"),
            s("local_txid"),
            s("replica_txid"),
            s("source"),
            s("replica")
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn info(args: QueryArgs) -> Result<ExitCode> {
    let reply = control::call(&args.socket.require()?, "GET", "/info", None, args.socket.timeout).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&reply)?);
    } else if let Value::Object(map) = reply {
        for (k, v) in map {
            println!("{k}: {v}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
