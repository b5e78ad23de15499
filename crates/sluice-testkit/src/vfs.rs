//! The Sluice VFS extension in tests: building the `.so`, loading it into the bundled SQLite of
//! rusqlite, and database URIs that name a replica.
//!
//! Tests load the real `.so` (never the rlib), so they exercise what users load. The `.so` is
//! built by `cargo build -p sluice-vfs` (once per test process), which keeps the workspace's
//! test features out of it; [`release_so`] builds it the way users do, with a plain
//! `cargo build --release` of the whole workspace.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context, Result};
use rusqlite::{Connection, OpenFlags};

/// The debug extension `target/debug/libsluice_vfs.so`, built on first use.
pub fn debug_so() -> PathBuf {
    static SO: OnceLock<PathBuf> = OnceLock::new();
    SO.get_or_init(|| build(&["build", "-p", "sluice-vfs"], "debug")).clone()
}

/// The release extension as users build it: `cargo build --release` of the whole workspace
/// (where another member enables rusqlite's `bundled`, the case that must still give a working
/// `.so`). Built on first use; slow the first time.
pub fn release_so() -> PathBuf {
    static SO: OnceLock<PathBuf> = OnceLock::new();
    SO.get_or_init(|| build(&["build", "--release"], "release")).clone()
}

fn build(args: &[&str], profile: &str) -> PathBuf {
    let target = target_dir();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = crate::process::output_with_timeout(
        Command::new(cargo).args(args).arg("--target-dir").arg(&target).current_dir(crate::repo_root()),
        Duration::from_secs(1800),
    );
    assert!(
        out.status.success(),
        "cargo {} failed ({}):\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let so = target.join(profile).join("libsluice_vfs.so");
    assert!(so.is_file(), "cargo {} did not produce {}", args.join(" "), so.display());
    so
}

/// The target directory of the running test binary (`<target>/<profile>/deps/<test>`).
fn target_dir() -> PathBuf {
    if let Some(t) = std::env::var_os("CARGO_TARGET_DIR").filter(|t| !t.is_empty()) {
        return crate::repo_root().join(t);
    }
    let exe = std::env::current_exe().expect("current_exe");
    exe.ancestors().nth(3).map(Path::to_path_buf).unwrap_or_else(|| crate::repo_root().join("target"))
}

/// Loads `so` into this process's (rusqlite-bundled) SQLite, once per path: the extension stays
/// loaded (`SQLITE_OK_LOAD_PERMANENTLY`), so every later connection can use `vfs=sluice`.
// rusqlite marks extension loading `unsafe` (foreign code runs in-process): the one exception to
// the workspace's no-unsafe rule outside the VFS's FFI module.
#[allow(unsafe_code)]
pub fn load(so: &Path) {
    static LOADED: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());
    let mut loaded = LOADED.lock().unwrap_or_else(|p| p.into_inner());
    if loaded.iter().any(|p| p == so) {
        return;
    }
    let conn = Connection::open_in_memory().expect("open :memory:");
    // SAFETY: loading our own extension, built by this test run.
    unsafe {
        conn.load_extension_enable().expect("enable extension loading");
        conn.load_extension(so, None::<&str>).unwrap_or_else(|e| panic!("load {}: {e}", so.display()));
        conn.load_extension_disable().expect("disable extension loading");
    }
    loaded.push(so.to_path_buf());
}

/// A SQLite URI for database `name` through the VFS, reading `replica` with extra URI
/// parameters (`("poll", "200ms")`, …). Values are percent-encoded (a replica URL carries
/// its own `?` and `&`).
pub fn uri(name: &str, replica: &str, params: &[(&str, &str)]) -> String {
    let mut u = format!("file:{}?vfs=sluice&replica={}", encode(name), encode(replica));
    for (k, v) in params {
        u.push_str(&format!("&{k}={}", encode(v)));
    }
    u
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' | b':' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Opens `replica` read-only through the debug `.so` (loaded on first use).
pub fn open(replica: &str, params: &[(&str, &str)]) -> Result<Connection> {
    load(&debug_so());
    open_loaded(replica, params)
}

/// Opens `replica` through an already loaded extension.
pub fn open_loaded(replica: &str, params: &[(&str, &str)]) -> Result<Connection> {
    let u = uri("app.db", replica, params);
    Connection::open_with_flags(&u, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI)
        .with_context(|| format!("open {u}"))
}

/// `PRAGMA integrity_check` rows joined by `\n`.
pub fn integrity_check(conn: &Connection) -> Result<String> {
    let mut stmt = conn.prepare("PRAGMA integrity_check")?;
    let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?.join("\n"))
}

/// `sluice_txid()` of the connection (16 hex digits).
pub fn txid(conn: &Connection) -> Result<String> {
    Ok(conn.query_row("SELECT sluice_txid()", [], |r| r.get(0))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_encode_the_replica_url() {
        assert_eq!(
            uri("app.db", "s3://b/p?endpoint=http://h:1&region=x", &[("poll", "200ms")]),
            "file:app.db?vfs=sluice&replica=s3://b/p%3Fendpoint%3Dhttp://h:1%26region%3Dx&poll=200ms"
        );
    }
}
