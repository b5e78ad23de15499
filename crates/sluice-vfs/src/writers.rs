//! One write session per replica per process, shared by every write-mode connection on it and
//! closed (final sync, lease released) when the last of them closes.
//!
//! Two processes on one machine must not share a buffer path either: the session recognises
//! its own lease by a writer ID kept beside the buffer, so a second process using the same
//! buffer would pass as the first. An exclusive `flock` on `<buffer>.lock` turns that into
//! the same refusal as a lease held elsewhere.

use std::collections::HashMap;
use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use sluice_engine::write::WriterOptions;
use sluice_engine::write::compaction::Retention;
use sluice_engine::write::session::{WriteOptions, WriteSession};

use crate::config::DbSettings;
use crate::engine::Replica;
use crate::error::{Error, Result};
use crate::local::{DirLease, local_name};
use crate::locks::{LockManager, Owner};
use crate::write_file::WriteBackend;

/// A replica this process writes.
pub struct SharedWriter {
    session: Arc<WriteSession>,
    replica: Arc<Replica>,
    locks: LockManager,
    next_owner: AtomicU64,
    buffer: PathBuf,
    /// Keeps the private directory (home of the default buffer) until the session closed.
    _dir: DirLease,
    /// Held for the session's life: one process per buffer.
    _flock: File,
}

type Registry = HashMap<String, (Arc<SharedWriter>, usize)>;

fn registry() -> std::sync::MutexGuard<'static, Registry> {
    static R: std::sync::LazyLock<Mutex<Registry>> = std::sync::LazyLock::new(Default::default);
    // Poisoning cannot leave the map half-updated (one insert or remove at a time).
    R.lock().unwrap_or_else(|p| p.into_inner())
}

/// A connection's use of a [`SharedWriter`]; the last one dropped closes the session.
pub struct WriterRef {
    shared: Arc<SharedWriter>,
    key: String,
}

impl WriterRef {
    /// The session of `settings.url`, opened (lease taken, crash buffer recovered) if this
    /// process has none yet. Blocking. A lease held by another writer is
    /// [`Error::WriterConflict`] naming it.
    pub fn acquire(db: &str, settings: &DbSettings, replica: Arc<Replica>) -> Result<(WriterRef, Owner)> {
        // Held while opening, so two connections never open two sessions on one replica.
        let mut reg = registry();
        if let Some((shared, users)) = reg.get_mut(&settings.url) {
            *users += 1;
            let owner = shared.next_owner.fetch_add(1, Ordering::Relaxed);
            return Ok((WriterRef { shared: shared.clone(), key: settings.url.clone() }, owner));
        }
        let shared = Arc::new(open_session(db, settings, replica)?);
        reg.insert(settings.url.clone(), (shared.clone(), 1));
        Ok((WriterRef { shared, key: settings.url.clone() }, 0))
    }

    /// The session.
    pub fn session(&self) -> &Arc<WriteSession> {
        &self.shared.session
    }

    /// The replica it writes.
    pub fn replica(&self) -> &Arc<Replica> {
        &self.shared.replica
    }
}

impl Drop for WriterRef {
    fn drop(&mut self) {
        let mut reg = registry();
        let last = match reg.get_mut(&self.key) {
            Some((_, users)) if *users > 1 => {
                *users -= 1;
                false
            }
            Some(_) => true,
            None => false,
        };
        if last {
            reg.remove(&self.key);
            // Closed under the registry lock: a connection opened meanwhile waits, then takes
            // the lease this close gives back.
            if let Err(e) = self.shared.session.close() {
                tracing::warn!(replica = %self.shared.replica.description(), buffer = %self.shared.buffer.display(),
                    error = %e, "closing write mode: the last sync failed; the buffer keeps the unsynced transactions");
            } else {
                tracing::info!(replica = %self.shared.replica.description(), "write mode closed, lease released");
            }
        }
    }
}

fn open_session(db: &str, settings: &DbSettings, replica: Arc<Replica>) -> Result<SharedWriter> {
    let dir = DirLease::acquire();
    let w = &settings.write;
    let buffer = match &w.buffer_path {
        Some(p) => p.clone(),
        None => dir.path()?.join(format!("{}.buffer", local_name(&settings.url))),
    };
    let lock_path = PathBuf::from(format!("{}.lock", buffer.display()));
    let flock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| Error::io("open", &lock_path, e))?;
    if let Err(e) = flock.try_lock() {
        let reason = format!("another process on this machine writes through the buffer {} ({e})", buffer.display());
        return Err(Error::WriterConflict {
            db: db.to_string(),
            source: Box::new(sluice_engine::Error::Conflict { replica: replica.description().to_string(), reason }),
        });
    }
    let opts = WriteOptions {
        sync_interval: w.sync_interval,
        buffer_path: buffer.clone(),
        fsync: w.fsync.engine(),
        buffer_max: w.buffer_max,
        writer: writer_options(settings),
    };
    let session = WriteSession::open(replica.clone(), opts).map_err(|e| match e {
        e @ sluice_engine::Error::Conflict { .. } => Error::WriterConflict { db: db.to_string(), source: Box::new(e) },
        e => Error::Open { db: db.to_string(), replica: replica.description().to_string(), source: Box::new(e) },
    })?;
    tracing::info!(replica = %replica.description(), buffer = %buffer.display(), "write mode: lease taken");
    Ok(SharedWriter {
        session,
        replica,
        locks: LockManager::default(),
        next_owner: AtomicU64::new(1),
        buffer,
        _dir: dir,
        _flock: flock,
    })
}

/// The replica writer's settings: `sluice replicate`'s defaults, with the intervals the VFS
/// settings give.
fn writer_options(settings: &DbSettings) -> WriterOptions {
    let w = &settings.write;
    WriterOptions {
        sync_interval: w.sync_interval,
        levels: w.levels.clone().unwrap_or_else(|| sluice_config::DEFAULT_LEVELS.to_vec()),
        snapshot_interval: w.snapshot_interval.unwrap_or(sluice_config::DEFAULT_SNAPSHOT_INTERVAL),
        retention: Retention {
            enabled: true,
            snapshot_retention: sluice_config::DEFAULT_SNAPSHOT_RETENTION,
            l0_retention: sluice_config::DEFAULT_L0_RETENTION,
        },
        shutdown_sync_timeout: sluice_config::DEFAULT_SHUTDOWN_SYNC_TIMEOUT,
        lease_ttl: w.lease_ttl.unwrap_or(sluice_config::DEFAULT_LEASE_TTL),
        limits: Default::default(),
    }
}

/// A connection's view of the shared writer, as the file state machine uses it.
impl WriteBackend for WriterRef {
    fn read_page(&self, pgno: u32, buf: &mut [u8]) -> sluice_engine::Result<()> {
        self.shared.session.read_page(pgno, buf)
    }
    fn write_page(&self, pgno: u32, data: &[u8]) -> sluice_engine::Result<()> {
        self.shared.session.write_page(pgno, data)
    }
    fn commit(&self, commit: u32) -> sluice_engine::Result<()> {
        self.shared.session.commit(commit)
    }
    fn rollback(&self) -> sluice_engine::Result<()> {
        self.shared.session.rollback()
    }
    fn commit_size(&self) -> u32 {
        self.shared.session.commit_size()
    }
    fn page_size(&self) -> u32 {
        self.shared.session.page_size()
    }
    fn locks(&self) -> &LockManager {
        &self.shared.locks
    }
    fn description(&self) -> &str {
        self.shared.replica.description()
    }
}
