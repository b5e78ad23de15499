//! Whether a configured database exists yet, and whether it is still the same file.
//!
//! The daemon never creates a database: the application decides its format (page size,
//! auto-vacuum, text encoding) when it creates it, and a file SQLite had created for the
//! daemon would have fixed all of that already. A path with no file, or with a file that
//! holds no SQLite header yet (created but not yet written), is waited for: checked again
//! after 50 ms, then at doubling intervals up to 1.6 s (sooner again when what the path holds
//! changes). A check is a stat and at most a 100-byte read — no thread, no SQLite connection,
//! no request to the replica — so a thousand missing databases cost next to nothing.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::Request;
use crate::fsevents::DbEvents;
use sluice_engine::error::Error;

/// First re-check of a missing database.
const FIRST_CHECK: Duration = Duration::from_millis(50);
/// Longest wait between checks.
const MAX_CHECK: Duration = Duration::from_millis(1600);
/// The first 16 bytes of every SQLite database file.
const MAGIC: &[u8; 16] = b"SQLite format 3\0";
/// Length of the database header.
const HEADER_LEN: usize = 100;

/// The database file a replication session runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DbFile {
    /// Device and inode: the same path naming another inode is another database.
    pub dev: u64,
    /// See `dev`.
    pub ino: u64,
    /// Page size from the header.
    pub page_size: u32,
}

/// What a database path holds.
#[derive(Debug)]
pub enum Presence {
    /// A SQLite database.
    Ready(DbFile),
    /// Nothing.
    Missing,
    /// A file without a complete header: created, not yet written by its application.
    Empty,
    /// A file that is not a SQLite database (another header, or not a regular file).
    NotSqlite,
    /// Something the daemon may not read.
    Unreadable(std::io::Error),
}

impl Presence {
    /// Why replication waits, and whether that needs the user's attention.
    fn reason(&self) -> (String, bool) {
        match self {
            Presence::Ready(_) => ("it exists".into(), false),
            Presence::Missing => ("it does not exist yet".into(), false),
            Presence::Empty => ("it is empty (created, not yet written by its application)".into(), false),
            Presence::NotSqlite => ("it is not a SQLite database (no SQLite header)".into(), true),
            Presence::Unreadable(e) => (format!("it cannot be read: {e}"), true),
        }
    }
}

/// Looks at `path` without creating anything. Opens the file for reading when it exists:
/// only call this while no SQLite connection of this process is open on it (closing a
/// descriptor drops the process's POSIX locks on the file).
pub fn probe(path: &Path) -> Presence {
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Presence::Missing,
        Err(e) => return Presence::Unreadable(e),
    };
    let m = match f.metadata() {
        Ok(m) => m,
        Err(e) => return Presence::Unreadable(e),
    };
    if !m.is_file() {
        return Presence::NotSqlite;
    }
    let mut header = Vec::with_capacity(HEADER_LEN);
    if let Err(e) = f.by_ref().take(HEADER_LEN as u64).read_to_end(&mut header) {
        return Presence::Unreadable(e);
    }
    let known = header.len().min(MAGIC.len());
    if header[..known] != MAGIC[..known] {
        return Presence::NotSqlite;
    }
    if header.len() < HEADER_LEN {
        // SQLite writes the first page whole; a shorter file is still being created.
        return Presence::Empty;
    }
    let raw = u32::from(u16::from_be_bytes([header[16], header[17]]));
    let page_size = if raw == 1 { 65536 } else { raw };
    if !(512..=65536).contains(&page_size) || !page_size.is_power_of_two() {
        return Presence::NotSqlite;
    }
    Presence::Ready(DbFile { dev: m.dev(), ino: m.ino(), page_size })
}

/// Waits until `path` holds a SQLite database; `None` once `shutdown` turns true. Says once
/// why it waits (again only when that changes). Sync requests meanwhile get
/// [`Error::DatabaseMissing`].
pub async fn wait_for_database(
    path: &Path,
    events: &mut DbEvents,
    shutdown: &mut watch::Receiver<bool>,
    requests: &mut mpsc::Receiver<Request>,
) -> Option<DbFile> {
    let mut delay = FIRST_CHECK;
    let mut said: Option<String> = None;
    let mut requests_open = true;
    loop {
        if *shutdown.borrow() {
            return None;
        }
        let presence = probe(path);
        // With file events a missing database is only looked at when its directory changes; a
        // file being written (empty, no header yet) is still checked on the timer.
        let missing = matches!(presence, Presence::Missing);
        if let Presence::Ready(file) = presence {
            if said.is_some() {
                tracing::info!(db = %path.display(), "the database exists now; replicating it");
            }
            return Some(file);
        }
        let (why, attention) = presence.reason();
        if said.as_ref() != Some(&why) {
            if attention {
                tracing::warn!(db = %path.display(), "waiting for the database: {why}");
            } else {
                tracing::info!(db = %path.display(), "waiting for the database: {why}");
            }
            if said.is_some() {
                // Something happens at the path: an application is creating its database.
                delay = FIRST_CHECK;
            }
            said = Some(why);
        }
        tokio::select! {
            _ = tokio::time::sleep(delay), if !(missing && events.enabled()) => delay = (delay * 2).min(MAX_CHECK),
            _ = events.changed() => delay = FIRST_CHECK,
            changed = shutdown.changed() => {
                if changed.is_err() {
                    return None;
                }
            }
            r = requests.recv(), if requests_open => match r {
                Some(Request::Sync(reply)) => drop(reply.send(Err(Error::DatabaseMissing { db: path.to_path_buf() }))),
                Some(Request::Capture(reply)) => drop(reply.send(Err(Error::DatabaseMissing { db: path.to_path_buf() }))),
                Some(Request::PageSums(reply)) => drop(reply.send(Ok(None))),
                Some(Request::Snapshot(reply)) => drop(reply.send(Err(Error::DatabaseMissing { db: path.to_path_buf() }))),
                Some(Request::EnforceRetention(reply)) => {
                    drop(reply.send(Err(Error::DatabaseMissing { db: path.to_path_buf() })))
                }
                None => requests_open = false,
            },
        }
    }
}

/// How a database file went away.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gone {
    /// The path names nothing.
    Deleted,
    /// The path names another file.
    Replaced,
}

/// Whether `path` still names `file`, by a stat alone (never opening it, which would drop
/// SQLite's locks). Errors other than "not found" count as unchanged.
pub fn changed(path: &Path, file: DbFile) -> Option<Gone> {
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(Gone::Deleted),
        Ok(m) if (m.dev(), m.ino()) != (file.dev, file.ino) => Some(Gone::Replaced),
        _ => None,
    }
}

/// Resolves once `path` no longer names `file`: checked on each file event about it, or every
/// `every` without events. The replicating session keeps its descriptors of the old file, so
/// its inode cannot be reused meanwhile.
pub async fn gone(path: &Path, file: DbFile, every: Duration, events: &mut DbEvents) -> Gone {
    loop {
        if events.enabled() {
            events.changed().await;
        } else {
            tokio::time::sleep(every).await;
        }
        if let Some(g) = changed(path, file) {
            return g;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db_with_page_size(path: &Path, page_size: u32) {
        let c = rusqlite::Connection::open(path).expect("open");
        c.execute_batch(&format!("PRAGMA page_size={page_size}; CREATE TABLE t(x);")).expect("create");
    }

    #[test]
    fn probe_tells_what_the_path_holds() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let p = dir.path().join("a.db");
        assert!(matches!(probe(&p), Presence::Missing));
        assert!(!p.exists(), "probing created the file");
        std::fs::write(&p, b"")?;
        assert!(matches!(probe(&p), Presence::Empty));
        std::fs::write(&p, &MAGIC[..10])?;
        assert!(matches!(probe(&p), Presence::Empty), "a header being written");
        std::fs::write(&p, b"not a database at all, just some text that is long enough")?;
        assert!(matches!(probe(&p), Presence::NotSqlite));
        assert!(matches!(probe(dir.path()), Presence::NotSqlite), "a directory");
        std::fs::remove_file(&p)?;
        for ps in [512, 4096, 65536] {
            let p = dir.path().join(format!("{ps}.db"));
            db_with_page_size(&p, ps);
            match probe(&p) {
                Presence::Ready(f) => assert_eq!(f.page_size, ps),
                other => panic!("page size {ps}: {other:?}"),
            }
        }
        Ok(())
    }

    #[test]
    fn changed_tells_deleted_from_replaced() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let p = dir.path().join("a.db");
        db_with_page_size(&p, 4096);
        let Presence::Ready(file) = probe(&p) else { panic!("not ready") };
        assert_eq!(changed(&p, file), None);
        // Keep the old inode alive (as the replicating session does), so it is not reused.
        let _held = File::open(&p)?;
        std::fs::remove_file(&p)?;
        assert_eq!(changed(&p, file), Some(Gone::Deleted));
        db_with_page_size(&p, 4096);
        assert_eq!(changed(&p, file), Some(Gone::Replaced));
        Ok(())
    }

    #[tokio::test]
    async fn waiting_answers_sync_requests_and_ends_on_shutdown() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("never.db");
        let (stop_tx, mut stop_rx) = watch::channel(false);
        let (req_tx, mut req_rx) = mpsc::channel(1);
        let waiter = tokio::spawn({
            let p = p.clone();
            async move {
                let mut events = crate::fsevents::FsEvents::start().database(&p);
                wait_for_database(&p, &mut events, &mut stop_rx, &mut req_rx).await
            }
        });
        let (reply_tx, reply_rx) = tokio::sync::oneshot::channel();
        req_tx.send(Request::Sync(reply_tx)).await.expect("send");
        let answer = reply_rx.await.expect("no answer while waiting");
        assert!(matches!(answer, Err(Error::DatabaseMissing { .. })), "{answer:?}");
        stop_tx.send(true).expect("stop");
        assert_eq!(waiter.await.expect("join"), None);
        assert!(!p.exists(), "waiting created the database");
    }
}
