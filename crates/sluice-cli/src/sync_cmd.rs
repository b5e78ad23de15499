//! `sluice sync DB`: asks the running daemon to capture and upload now. Through the control
//! socket when the daemon has one (`--wait` then waits for the upload); otherwise by a signal
//! to the daemon whose lock file the database's meta directory holds, waiting for its reply.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use sluice_ltx::TxId;

use crate::control;
use crate::control_cmd::SocketArgs;
use crate::daemon::{ACK_FILE, LOCK_FILE};
use crate::replicate_cmd::meta_dir_of;

/// Arguments of `sluice sync`.
#[derive(clap::Args)]
pub struct Args {
    /// The database whose daemon should sync.
    db_path: PathBuf,
    /// Config file (to find the database's meta directory).
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// How long to wait for the daemon: a duration (`10s`) or whole seconds (`10`).
    #[arg(long, default_value = "30s", value_parser = crate::control_cmd::parse_timeout)]
    timeout: Duration,
    /// Wait until the upload is done (always the case without a control socket).
    #[arg(long)]
    wait: bool,
    /// Print the daemon's JSON reply (control socket only).
    #[arg(long)]
    json: bool,
    /// Control socket of the daemon (default: the config's, if enabled).
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
}

pub async fn run(args: Args) -> Result<ExitCode> {
    let sock = SocketArgs { socket: args.socket.clone(), config: args.config.clone(), timeout: args.timeout };
    if let Some(socket) = sock.resolve().filter(|s| args.socket.is_some() || s.exists()) {
        let path = std::path::absolute(&args.db_path)?.display().to_string();
        let body = serde_json::json!({ "path": path, "wait": args.wait, "timeout": args.timeout.as_secs().max(1) });
        let reply = control::call(&socket, "POST", "/sync", Some(body), args.timeout + Duration::from_secs(1)).await?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&reply)?);
            return Ok(ExitCode::SUCCESS);
        }
        let txid = |k: &str| TxId(reply[k].as_u64().unwrap_or(0));
        let db = args.db_path.display();
        match reply["status"].as_str().unwrap_or("") {
            "synced" => println!("synced {db} to TXID {}", txid("replicated_txid")),
            "no_change" => {
                println!("no change: {db} is at TXID {} (replica at {})", txid("txid"), txid("replicated_txid"))
            }
            _ => println!("captured {db} at TXID {} (the upload follows; --wait waits for it)", txid("txid")),
        }
        return Ok(ExitCode::SUCCESS);
    }
    let meta = meta_dir_of(&args.db_path, args.config.as_deref(), true)?;
    let pid_text = std::fs::read_to_string(meta.join(LOCK_FILE)).with_context(|| {
        if !args.db_path.exists() {
            // A daemon waits for a database that does not exist, without a lock file yet.
            return format!("{} does not exist: there is nothing to sync", args.db_path.display());
        }
        format!("no sluice daemon found for {} (no {LOCK_FILE} in {})", args.db_path.display(), meta.display())
    })?;
    let pid: u32 = pid_text.trim().parse().with_context(|| format!("bad pid file in {}", meta.display()))?;
    let ack = meta.join(ACK_FILE);
    let before = std::fs::read_to_string(&ack).unwrap_or_default();
    let status = std::process::Command::new("kill").arg("-USR1").arg(pid.to_string()).status()?;
    if !status.success() {
        bail!("sluice daemon pid {pid} for {} is not running", args.db_path.display());
    }
    let deadline = Instant::now() + args.timeout;
    loop {
        let now = std::fs::read_to_string(&ack).unwrap_or_default();
        if now != before && !now.is_empty() {
            let outcome = now.split_once(' ').map(|(_, o)| o.trim()).unwrap_or("");
            if let Some(err) = outcome.strip_prefix("error: ") {
                bail!("sync failed: {err}");
            }
            println!("synced {} to TXID {outcome}", args.db_path.display());
            return Ok(ExitCode::SUCCESS);
        }
        if Instant::now() >= deadline {
            bail!("daemon pid {pid} did not sync within {:?}", args.timeout);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
