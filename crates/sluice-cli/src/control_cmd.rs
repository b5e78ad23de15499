//! Commands that talk to a running daemon through its control socket: `register`,
//! `unregister`, `stop`, `start`, `list`, `info` (and `sync`, see `sync_cmd`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::{Value, json};
use sluice_config::{Config, DEFAULT_SOCKET_PATH};
use sluice_ltx::TxId;

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
    /// How long to wait for the daemon: a duration (`10s`) or, as Litestream's `-timeout`,
    /// whole seconds (`10`).
    #[arg(long, default_value = "30s", value_parser = parse_timeout)]
    pub timeout: Duration,
}

/// `10` (seconds, Litestream's spelling) or `10s`, `2m`, `500ms`.
pub fn parse_timeout(s: &str) -> std::result::Result<Duration, String> {
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(s).map_err(|e| format!("{e} (write seconds, or a duration such as 10s)"))
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
    /// Print the daemon's JSON reply.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    socket: SocketArgs,
}

/// `sluice unregister DB`.
#[derive(clap::Args)]
pub struct UnregisterArgs {
    /// The database to stop replicating (after a last sync) and forget.
    db_path: PathBuf,
    /// Say what would be sent, without contacting the daemon.
    #[arg(long)]
    dry_run: bool,
    /// Print the daemon's JSON reply.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    socket: SocketArgs,
}

/// `sluice stop DB` / `sluice start DB`.
#[derive(clap::Args)]
pub struct ToggleArgs {
    /// The database.
    db_path: PathBuf,
    /// Print the daemon's JSON reply.
    #[arg(long)]
    json: bool,
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

/// `timeout` in whole seconds, as the socket API takes it (at least 1).
fn timeout_secs(socket: &SocketArgs) -> u64 {
    socket.timeout.as_secs().max(1)
}

/// Prints a reply as JSON, or as `PATH: STATUS` (with the TXID when there is one).
fn print_reply(db: &Path, reply: &Value, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(reply)?);
        return Ok(());
    }
    let status = reply["status"].as_str().unwrap_or("ok").replace('_', " ");
    match reply["txid"].as_u64() {
        Some(txid) if txid > 0 => println!("{}: {status} (TXID {})", db.display(), TxId(txid)),
        _ => println!("{}: {status}", db.display()),
    }
    Ok(())
}

pub async fn register(args: RegisterArgs) -> Result<ExitCode> {
    let body = json!({ "path": absolute(&args.db_path)?, "replica_url": args.replica });
    let reply = control::call(&args.socket.require()?, "POST", "/register", Some(body), args.socket.timeout).await?;
    print_reply(&args.db_path, &reply, args.json)?;
    Ok(ExitCode::SUCCESS)
}

pub async fn unregister(args: UnregisterArgs) -> Result<ExitCode> {
    let body = json!({ "path": absolute(&args.db_path)?, "timeout": timeout_secs(&args.socket) });
    let socket = args.socket.require()?;
    if args.dry_run {
        println!("dry run: would send POST /unregister {body} to {}", socket.display());
        return Ok(ExitCode::SUCCESS);
    }
    // The daemon answers after the last sync: give it the whole timeout plus a moment.
    let wait = args.socket.timeout + Duration::from_secs(1);
    let reply = control::call(&socket, "POST", "/unregister", Some(body), wait).await?;
    print_reply(&args.db_path, &reply, args.json)?;
    Ok(ExitCode::SUCCESS)
}

/// `sluice stop DB` (after a last sync; it stays registered) and `sluice start DB`.
pub async fn toggle(args: ToggleArgs, start: bool) -> Result<ExitCode> {
    let body = json!({ "path": absolute(&args.db_path)?, "timeout": timeout_secs(&args.socket) });
    let target = if start { "/start" } else { "/stop" };
    let wait = args.socket.timeout + Duration::from_secs(1);
    let reply = control::call(&args.socket.require()?, "POST", target, Some(body), wait).await?;
    print_reply(&args.db_path, &reply, args.json)?;
    Ok(ExitCode::SUCCESS)
}

pub async fn list(args: QueryArgs) -> Result<ExitCode> {
    let reply = control::call(&args.socket.require()?, "GET", "/list", None, args.socket.timeout).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&reply)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("{:<50} {:<11} {:<18} {:<18} {:<7} replica", "path", "status", "local_txid", "replica_txid", "source");
    for db in reply["databases"].as_array().into_iter().flatten() {
        let s = |k: &str| db[k].as_str().unwrap_or("").to_string();
        println!(
            "{:<50} {:<11} {:<18} {:<18} {:<7} {}",
            s("path"),
            s("status"),
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
            println!("{k}: {}", v.as_str().map_or_else(|| v.to_string(), str::to_string));
        }
    }
    Ok(ExitCode::SUCCESS)
}
