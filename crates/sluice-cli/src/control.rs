//! The control socket (`socket:` in the config): a small HTTP/1.1 JSON API on a Unix socket, to
//! register and unregister databases at run time, stop and start one, sync one now (and wait
//! for the upload), and list what the daemon replicates. One request per connection.
//!
//! Requests and replies are Litestream 0.5's, field for field (TXIDs are JSON numbers there),
//! so Litestream's own CLI and tools written against its socket work with Sluice's daemon:
//!
//! | request | body | reply |
//! |---|---|---|
//! | `GET /list` | | `{"databases": [{path, status, last_sync_at?, replica, source, local_txid, replica_txid}]}` |
//! | `GET /info` | | `{version, pid, uptime_seconds, started_at, database_count}` |
//! | `GET /txid?path=P` | | `{"txid": N}` |
//! | `POST /register` | `{path, replica_url}` | `{status: registered\|already_registered, path}` |
//! | `POST /unregister` | `{path, timeout?}` (seconds) | `{status: unregistered\|already_unregistered, path, txid}` |
//! | `POST /stop` | `{path, timeout?}` | `{status: stopped\|already_stopped, path, txid}` |
//! | `POST /start` | `{path, timeout?}` | `{status: started\|already_running, path, txid}` |
//! | `POST /sync` | `{path, wait?, timeout?}` | `{status: synced\|synced_local\|no_change, path, txid, replicated_txid}` |
//!
//! `unregister` and `stop` reply after the database's last sync. Errors are
//! `{"error": "..."}` with a 4xx/5xx status (409: the database is stopped).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use serde_json::{Value, json};
use sluice_config::{DbConfig, ReplicaSettings, SocketConfig};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::registry::{Registry, Source, Toggle};

/// Largest request body accepted.
const MAX_BODY: usize = 1 << 20;
/// Default wait of `sync` and `unregister`.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Removes the socket file when the daemon stops.
pub struct SocketGuard(PathBuf);

impl Drop for SocketGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Binds the socket and serves it in the background.
pub async fn serve(cfg: &SocketConfig, registry: Registry) -> Result<SocketGuard> {
    let path = &cfg.path;
    if path.exists() {
        // A socket nobody answers on is left over from a daemon that died: replace it.
        if UnixStream::connect(path).await.is_ok() {
            bail!("another daemon is listening on the control socket {}", path.display());
        }
        std::fs::remove_file(path).with_context(|| format!("cannot remove stale socket {}", path.display()))?;
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let listener = UnixListener::bind(path).with_context(|| format!("cannot listen on {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(cfg.permissions))
        .with_context(|| format!("cannot set permissions of {}", path.display()))?;
    tracing::info!(socket = %path.display(), "control socket listening");
    let started = Arc::new(Started {
        at: Instant::now(),
        rfc3339: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    });
    tokio::spawn(async move {
        loop {
            let sock = match listener.accept().await {
                Ok((sock, _)) => sock,
                Err(e) => {
                    // Out of descriptors, say: not a reason to spin.
                    tracing::warn!(error = %e, "control socket: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let (registry, started) = (registry.clone(), started.clone());
            tokio::spawn(async move {
                if let Err(e) = handle(sock, &registry, &started).await {
                    tracing::debug!(error = %e, "control socket request failed");
                }
            });
        }
    });
    Ok(SocketGuard(path.clone()))
}

/// One parsed request.
struct Request {
    method: String,
    target: String,
    body: Vec<u8>,
}

/// Longest request line or header accepted.
const MAX_LINE: u64 = 16 * 1024;
/// How long a client may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// One line, at most [`MAX_LINE`] bytes.
async fn read_line(sock: &mut BufReader<UnixStream>, out: &mut String) -> Result<usize> {
    let n = (&mut *sock).take(MAX_LINE).read_line(out).await?;
    if n as u64 == MAX_LINE && !out.ends_with('\n') {
        bail!("request line too long");
    }
    Ok(n)
}

async fn read_request(sock: &mut BufReader<UnixStream>) -> Result<Request> {
    let mut line = String::new();
    read_line(sock, &mut line).await?;
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or_default().to_string(), parts.next().unwrap_or("/").to_string());
    let mut length = 0usize;
    loop {
        let mut header = String::new();
        if read_line(sock, &mut header).await? == 0 || header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.trim().eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().context("bad content-length")?;
        }
    }
    if length > MAX_BODY {
        bail!("request body too large");
    }
    let mut body = vec![0u8; length];
    sock.read_exact(&mut body).await?;
    Ok(Request { method, target, body })
}

/// When the socket started listening (`info`'s uptime and `started_at`).
struct Started {
    at: Instant,
    rfc3339: String,
}

async fn handle(sock: UnixStream, registry: &Registry, started: &Started) -> Result<()> {
    let mut sock = BufReader::new(sock);
    let req = tokio::time::timeout(READ_TIMEOUT, read_request(&mut sock)).await.context("request timed out")??;
    let (status, body) = match route(&req, registry, started).await {
        Ok(v) => (200, v),
        Err((code, msg)) => (code, json!({ "error": msg })),
    };
    let text = serde_json::to_string(&body)?;
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        409 => "Conflict",
        _ => "Internal Server Error",
    };
    let resp = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
        text.len()
    );
    sock.get_mut().write_all(resp.as_bytes()).await?;
    Ok(())
}

type Reply = std::result::Result<Value, (u16, String)>;

fn bad(e: impl std::fmt::Display) -> (u16, String) {
    (400, e.to_string())
}

fn parse<T: for<'de> Deserialize<'de>>(body: &[u8]) -> std::result::Result<T, (u16, String)> {
    serde_json::from_slice(body).map_err(|e| bad(format!("invalid request body: {e}")))
}

/// A database path as the daemon registers it (absolute, cleaned).
fn db_path(raw: &str) -> std::result::Result<PathBuf, (u16, String)> {
    if raw.is_empty() {
        return Err(bad("`path` is required"));
    }
    std::path::absolute(raw).map_err(bad)
}

#[derive(Deserialize)]
struct RegisterReq {
    path: String,
    replica_url: String,
}

/// `unregister`, `stop`, `start`.
#[derive(Deserialize)]
struct PathReq {
    path: String,
    #[serde(default)]
    timeout: Option<u64>,
}

impl PathReq {
    /// The request's deadline (`timeout` seconds, 30 by default, at most a day).
    fn deadline(&self) -> Instant {
        let wait = self.timeout.filter(|t| *t > 0).map_or(DEFAULT_TIMEOUT, Duration::from_secs);
        Instant::now() + wait.min(Duration::from_secs(86_400))
    }
}

/// Local and replica TXIDs of a registered database.
fn txids(registry: &Registry, p: &Path) -> Option<(u64, u64)> {
    let info = registry.list().into_iter().find(|d| d.path == p)?;
    let n = |s: &str| u64::from_str_radix(s, 16).unwrap_or(0);
    Some((n(&info.local_txid), n(&info.replica_txid)))
}

/// Waits until `p` has no running task (its last sync done).
async fn until_stopped(registry: &Registry, p: &Path, deadline: Instant) -> std::result::Result<(), (u16, String)> {
    while registry.is_running(p) {
        if Instant::now() >= deadline {
            return Err((500, format!("{} is still stopping (its last sync is running)", p.display())));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

#[derive(Deserialize)]
struct SyncReq {
    path: String,
    #[serde(default)]
    wait: bool,
    #[serde(default)]
    timeout: Option<u64>,
}

async fn route(req: &Request, registry: &Registry, started: &Started) -> Reply {
    let (path, query) = req.target.split_once('?').unwrap_or((&req.target, ""));
    match (req.method.as_str(), path) {
        ("GET", "/list") => Ok(json!({ "databases": registry.list() })),
        ("GET", "/info") => Ok(json!({
            "version": env!("CARGO_PKG_VERSION"),
            "pid": std::process::id(),
            "uptime_seconds": started.at.elapsed().as_secs(),
            "started_at": started.rfc3339,
            "database_count": registry.registered(),
        })),
        ("GET", "/txid") => {
            let raw = query.split('&').find_map(|kv| kv.strip_prefix("path=")).unwrap_or_default();
            let p = db_path(&percent_decode(raw))?;
            let (local, _) = txids(registry, &p).ok_or((404, format!("database not found: {}", p.display())))?;
            Ok(json!({ "txid": local }))
        }
        ("POST", "/register") => {
            let r: RegisterReq = parse(&req.body)?;
            let p = db_path(&r.path)?;
            if r.replica_url.is_empty() {
                return Err(bad("`replica_url` is required"));
            }
            let db = DbConfig::new(p.clone(), ReplicaSettings::from_url(r.replica_url));
            let added = registry.add(&db, Source::Socket).map_err(|e| bad(crate::logging::chain(&e)))?;
            tracing::info!(db = %p.display(), added, "register (control socket)");
            Ok(json!({ "status": if added { "registered" } else { "already_registered" }, "path": p }))
        }
        ("POST", "/unregister") => {
            let r: PathReq = parse(&req.body)?;
            let p = db_path(&r.path)?;
            let txid = txids(registry, &p).map_or(0, |t| t.0);
            if !registry.remove(&p) {
                return Ok(json!({ "status": "already_unregistered", "path": p, "txid": 0 }));
            }
            tracing::info!(db = %p.display(), "unregister (control socket)");
            // Replies once the last sync is done, so the caller may delete the database next.
            until_stopped(registry, &p, r.deadline()).await?;
            Ok(json!({ "status": "unregistered", "path": p, "txid": txid }))
        }
        ("POST", "/stop") => {
            let r: PathReq = parse(&req.body)?;
            let p = db_path(&r.path)?;
            let status = match registry.stop(&p).map_err(|e| (404, crate::logging::chain(&e)))? {
                Toggle::Already => "already_stopped",
                Toggle::Done => {
                    tracing::info!(db = %p.display(), "stop (control socket)");
                    until_stopped(registry, &p, r.deadline()).await?;
                    "stopped"
                }
            };
            Ok(json!({ "status": status, "path": p, "txid": txids(registry, &p).map_or(0, |t| t.0) }))
        }
        ("POST", "/start") => {
            let r: PathReq = parse(&req.body)?;
            let p = db_path(&r.path)?;
            let status = match registry.start(&p) {
                Ok(Toggle::Already) => "already_running",
                Ok(Toggle::Done) => {
                    tracing::info!(db = %p.display(), "start (control socket)");
                    "started"
                }
                Err(e) if registry.paths().iter().any(|(q, _)| *q == p) => {
                    return Err((500, crate::logging::chain(&e)));
                }
                Err(e) => return Err((404, crate::logging::chain(&e))),
            };
            Ok(json!({ "status": status, "path": p, "txid": txids(registry, &p).map_or(0, |t| t.0) }))
        }
        ("POST", "/sync") => {
            let r: SyncReq = parse(&req.body)?;
            let p = db_path(&r.path)?;
            let refused = |e: anyhow::Error| {
                let code = if registry.is_stopped(&p) { 409 } else { 404 };
                (code, crate::logging::chain(&e))
            };
            // Bounded: a huge timeout would overflow the timer.
            let timeout = r.timeout.filter(|t| *t > 0).map_or(DEFAULT_TIMEOUT, Duration::from_secs);
            let timeout = timeout.min(Duration::from_secs(86_400));
            let waited = |what: &str| format!("{what} not done within {timeout:?}");
            if !r.wait {
                let rx = registry.capture(&p).map_err(refused)?;
                let captured = match tokio::time::timeout(timeout, rx).await {
                    Ok(Ok(Ok(c))) => c,
                    Ok(Ok(Err(e))) => return Err((500, format!("sync failed: {e}"))),
                    Ok(Err(_)) => return Err((500, "replication stopped".into())),
                    Err(_) => return Err((500, waited("capture"))),
                };
                let replicated = txids(registry, &p).map_or(0, |t| t.1);
                let status = if captured.changed { "synced_local" } else { "no_change" };
                return Ok(
                    json!({ "status": status, "path": p, "txid": captured.txid.0, "replicated_txid": replicated }),
                );
            }
            let rx = registry.sync(&p).map_err(refused)?;
            match tokio::time::timeout(timeout, rx).await {
                Ok(Ok(Ok(replicated))) => {
                    let local = txids(registry, &p).map_or(0, |t| t.0).max(replicated.0);
                    Ok(json!({ "status": "synced", "path": p, "txid": local, "replicated_txid": replicated.0 }))
                }
                Ok(Ok(Err(e))) => Err((500, format!("sync failed: {e}"))),
                Ok(Err(_)) => Err((500, "replication stopped".into())),
                Err(_) => Err((500, waited("upload"))),
            }
        }
        _ => Err((404, format!("no such endpoint: {} {path}", req.method))),
    }
}

/// `%2F` → `/` and so on (paths in query strings).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                match u8::from_str_radix(std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"), 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Sends one request to the daemon's socket; the reply body as JSON, or the daemon's error.
pub async fn call(socket: &Path, method: &str, target: &str, body: Option<Value>, timeout: Duration) -> Result<Value> {
    let exchange = async {
        let mut sock = UnixStream::connect(socket).await.with_context(|| {
            format!(
                "cannot connect to the control socket {} (is the daemon running with `socket:` enabled?)",
                socket.display()
            )
        })?;
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let req = format!(
            "{method} {target} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        sock.write_all(req.as_bytes()).await?;
        let mut resp = String::new();
        sock.read_to_string(&mut resp).await?;
        Ok::<_, anyhow::Error>(resp)
    };
    let resp = tokio::time::timeout(timeout, exchange)
        .await
        .with_context(|| format!("no answer from {} within {timeout:?}", socket.display()))??;
    let (head, body) = resp.split_once("\r\n\r\n").context("malformed reply from the daemon")?;
    let status: u16 = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).context("malformed reply status")?;
    let value: Value = serde_json::from_str(body).with_context(|| format!("malformed reply body: {body}"))?;
    if status != 200 {
        let msg = value.get("error").and_then(Value::as_str).unwrap_or(body);
        bail!("{msg}");
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::percent_decode;

    #[test]
    fn query_paths_are_decoded() {
        assert_eq!(percent_decode("%2Fdata%2Fa%20b.db"), "/data/a b.db");
        assert_eq!(percent_decode("/plain.db"), "/plain.db");
        assert_eq!(percent_decode("bad%zz%"), "bad%zz%");
    }
}
