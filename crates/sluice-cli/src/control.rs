//! The control socket (`socket:` in the config, as Litestream's): a small HTTP/1.1 JSON API on
//! a Unix socket, to register and unregister databases at run time, sync one now and wait
//! for the upload, and list what the daemon replicates. One request per connection.
//!
//! | request | body | reply |
//! |---|---|---|
//! | `GET /list` | | `{"dbs": [{path, replica, source, local_txid, replica_txid}]}` |
//! | `GET /info` | | `{version, pid, uptime_seconds, databases}` |
//! | `GET /txid?path=P` | | `{"txid": N}` |
//! | `POST /register` | `{path, replica_url}` | `{status, path}` |
//! | `POST /unregister` | `{path, timeout?}` (seconds) | `{status, path}` |
//! | `POST /sync` | `{path, wait?, timeout?}` | `{status, path, txid?}` |
//!
//! Errors are `{"error": "..."}` with a 4xx/5xx status.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use serde_json::{Value, json};
use sluice_config::{DbConfig, ReplicaSettings, SocketConfig};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::registry::{Registry, Source};

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
    let started = Instant::now();
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
            let registry = registry.clone();
            tokio::spawn(async move {
                if let Err(e) = handle(sock, &registry, started).await {
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

async fn handle(sock: UnixStream, registry: &Registry, started: Instant) -> Result<()> {
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

#[derive(Deserialize)]
struct UnregisterReq {
    path: String,
    #[serde(default)]
    timeout: Option<u64>,
}

#[derive(Deserialize)]
struct SyncReq {
    path: String,
    #[serde(default)]
    wait: bool,
    #[serde(default)]
    timeout: Option<u64>,
}

async fn route(req: &Request, registry: &Registry, started: Instant) -> Reply {
    let (path, query) = req.target.split_once('?').unwrap_or((&req.target, ""));
    match (req.method.as_str(), path) {
        ("GET", "/list") => Ok(json!({ "dbs": registry.list() })),
        ("GET", "/info") => Ok(json!({
            "version": env!("CARGO_PKG_VERSION"),
            "pid": std::process::id(),
            "uptime_seconds": started.elapsed().as_secs(),
            "databases": registry.len(),
        })),
        ("GET", "/txid") => {
            let raw = query.split('&').find_map(|kv| kv.strip_prefix("path=")).unwrap_or_default();
            let raw = percent_decode(raw);
            let p = db_path(&raw)?;
            let info = registry.list().into_iter().find(|d| d.path == p);
            let info = info.ok_or((404, format!("{} is not replicated by this daemon", p.display())))?;
            let txid = u64::from_str_radix(&info.local_txid, 16).unwrap_or(0);
            Ok(json!({ "txid": txid }))
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
            Ok(json!({ "status": if added { "registered" } else { "already registered" }, "path": p }))
        }
        ("POST", "/unregister") => {
            let r: UnregisterReq = parse(&req.body)?;
            let p = db_path(&r.path)?;
            if !registry.remove(&p) {
                return Err((404, format!("{} is not replicated by this daemon", p.display())));
            }
            tracing::info!(db = %p.display(), "unregister (control socket)");
            let wait = r.timeout.map(Duration::from_secs).unwrap_or(DEFAULT_TIMEOUT);
            let deadline = Instant::now().checked_add(wait).unwrap_or_else(|| Instant::now() + DEFAULT_TIMEOUT);
            // Replies once the last sync is done, so the caller may delete the database next.
            while registry.paths().iter().any(|(q, _)| *q == p) {
                if Instant::now() >= deadline {
                    return Err((500, format!("{} is still stopping (its last sync is running)", p.display())));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok(json!({ "status": "unregistered", "path": p }))
        }
        ("POST", "/sync") => {
            let r: SyncReq = parse(&req.body)?;
            let p = db_path(&r.path)?;
            let rx = registry.sync(&p).map_err(|e| (404, crate::logging::chain(&e)))?;
            if !r.wait {
                return Ok(json!({ "status": "sync requested", "path": p }));
            }
            // Bounded: a huge timeout would overflow the timer.
            let timeout =
                r.timeout.map(Duration::from_secs).unwrap_or(DEFAULT_TIMEOUT).min(Duration::from_secs(86_400));
            match tokio::time::timeout(timeout, rx).await {
                Ok(Ok(Ok(txid))) => Ok(json!({ "status": "synced", "path": p, "txid": txid.to_string() })),
                Ok(Ok(Err(e))) => Err((500, format!("sync failed: {e}"))),
                Ok(Err(_)) => Err((500, "replication stopped".into())),
                Err(_) => Err((500, format!("not synced within {timeout:?}"))),
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
