//! SQLite connection helpers of the shipper: opening our connections, the eager busy
//! handler of the write barrier, and PASSIVE checkpoints that wait out the application's own.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use crate::error::{Error, Result};

/// Opens a connection to an existing database. Never with `SQLITE_OPEN_CREATE`: the
/// application decides its database's format (page size, auto-vacuum…) by creating it.
pub(crate) fn open_conn(path: &Path, busy: Duration) -> Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_URI | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let c = Connection::open_with_flags(path, flags).map_err(|e| sqlite_err("open", path, e))?;
    c.busy_timeout(busy).map_err(|e| sqlite_err("set busy timeout on", path, e))?;
    c.execute_batch("PRAGMA wal_autocheckpoint=0;").map_err(|e| sqlite_err("configure", path, e))?;
    // Closing our last connection must not checkpoint and delete the WAL (Litestream sets
    // PERSIST_WAL for the same reason): the next start resumes from it instead of uploading
    // a full image.
    c.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)
        .map_err(|e| sqlite_err("configure", path, e))?;
    Ok(c)
}

/// A PASSIVE checkpoint; (busy, WAL frames, frames copied). PASSIVE never waits: when the
/// application's own auto-checkpoint holds the checkpoint lock (frames = -1), it is tried
/// again briefly, since that checkpoint finishes within milliseconds.
pub(crate) fn passive(c: &Connection) -> rusqlite::Result<(i64, i64, i64)> {
    let deadline = std::time::Instant::now() + Duration::from_millis(250);
    let mut retries = 0u32;
    loop {
        let r = c
            .prepare_cached("PRAGMA wal_checkpoint(PASSIVE)")
            .and_then(|mut st| st.query_row([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))));
        match r {
            Ok((_, -1, _)) if std::time::Instant::now() < deadline => {
                retries += 1;
                std::thread::sleep(Duration::from_micros(100))
            }
            other => {
                tracing::debug!(retries, "passive");
                return other;
            }
        }
    }
}

/// A busy handler that retries every ~50 µs instead of SQLite's 1, 2, 5, 10… ms back-off.
/// An application committing in a tight loop frees the write lock only for microseconds
/// between transactions; with the default back-off the barrier would almost never get in,
/// checkpoints would be skipped and the WAL would grow without bound.
pub(crate) fn eager_busy(timeout: Duration) -> impl FnMut(i32) -> bool + Send + 'static {
    let mut started = std::time::Instant::now();
    move |count| {
        if count == 0 {
            started = std::time::Instant::now();
        }
        if started.elapsed() >= timeout {
            return false;
        }
        std::thread::sleep(Duration::from_micros(50));
        true
    }
}

pub(crate) fn sqlite_err(op: &'static str, path: &Path, e: rusqlite::Error) -> Error {
    Error::io(op, path, std::io::Error::other(e))
}
