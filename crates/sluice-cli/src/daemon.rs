//! Daemon plumbing: one daemon per database (an exclusive lock file in its meta directory,
//! which also carries the PID for `sluice sync`), and the `/metrics` endpoint.
//!
//! The meta directory and its files get the database's mode and owner ([`Perms`]), so the
//! lock is only taken once the database exists (see `replicate_cmd`).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use sluice_engine::perms::Perms;
use sluice_engine::write::metrics::render_all;

use crate::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Name of the lock/PID file in the meta directory.
pub const LOCK_FILE: &str = "sluice.pid";
/// File the daemon writes after a forced sync (`sluice sync` waits for it to change).
pub const ACK_FILE: &str = "sluice.sync-ack";

/// Held for the daemon's lifetime; the OS releases it if the process dies.
#[derive(Clone)]
pub struct DaemonLock {
    _file: Arc<File>,
    dir: PathBuf,
    db: PathBuf,
}

impl DaemonLock {
    /// Takes the lock of the database `db` (which exists) or explains who holds it.
    pub fn acquire(meta_dir: &Path, db: &Path) -> Result<Self> {
        let perms = Perms::of_db(db)?;
        perms.create_dir_all(meta_dir).with_context(|| format!("create {}", meta_dir.display()))?;
        let path = meta_dir.join(LOCK_FILE);
        let mut file = perms
            .open(&path, OpenOptions::new().read(true).write(true).create(true).truncate(false))
            .with_context(|| format!("open {}", path.display()))?;
        // `sluice status` takes a shared lock for an instant to see whether a daemon runs:
        // a few short retries keep that from passing for another daemon.
        let mut tries = 0;
        while file.try_lock().is_err() {
            tries += 1;
            if tries < 5 {
                std::thread::sleep(std::time::Duration::from_millis(10));
                continue;
            }
            let pid = std::fs::read_to_string(&path).unwrap_or_default();
            bail!("another sluice daemon (pid {}) is already replicating this database", pid.trim());
        }
        file.set_len(0)?;
        write!(file, "{}", std::process::id())?;
        Ok(DaemonLock { _file: Arc::new(file), dir: meta_dir.to_path_buf(), db: db.to_path_buf() })
    }

    /// Records the outcome of a forced sync.
    pub fn ack(&self, outcome: &str) {
        let tmp = self.dir.join(format!("{ACK_FILE}.tmp"));
        let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
        // The database's permissions as of now: it may have been recreated since the start.
        let perms = Perms::of_db(&self.db).unwrap_or(Perms::PRIVATE);
        if perms.write(&tmp, format!("{stamp} {outcome}\n").as_bytes()).is_ok() {
            let _ = std::fs::rename(&tmp, self.dir.join(ACK_FILE));
        }
    }
}

/// Serves Prometheus text on `GET /metrics` (plain HTTP/1.1, one response per connection).
pub async fn serve_metrics(listener: tokio::net::TcpListener, registry: Registry) {
    loop {
        let Ok((mut sock, _)) = listener.accept().await else {
            // Out of descriptors, say: not a reason to spin.
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            continue;
        };
        let dbs = registry.metrics();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let n = sock.read(&mut buf).await.unwrap_or(0);
            let req = String::from_utf8_lossy(&buf[..n]);
            let (status, body) = if req.starts_with("GET /metrics") {
                ("200 OK", render_all(&dbs))
            } else {
                ("404 Not Found", "not found\n".to_string())
            };
            let resp = format!(
                "HTTP/1.1 {status}\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(resp.as_bytes()).await;
        });
    }
}
