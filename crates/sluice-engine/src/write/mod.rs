//! Writing a replica: everything after capture, shared by `sluice replicate` (which captures
//! the WAL) and the VFS's write mode (which captures its write buffer). No SQLite here.
//!
//! # Layout
//! - [`writer`]: [`ReplicaWriter`], the lease, the uploader and maintenance tasks, shutdown.
//! - [`session`]: the VFS's write mode (buffer, syncs, the writer, reads over both).
//! - [`buffer`]: the VFS write mode's on-disk write buffer (commits, rollbacks, recovery).
//! - [`local`]: the meta directory of local L0 files (what capture writes, uploads read).
//! - [`uploader`], [`compaction`]: shipping files, the level ladder, snapshots, retention.
//! - [`index`]: the in-memory view of the replica. [`lease`]: one writer per replica.
//! - [`outage`]: storage outages (backoff, logging once, what is permanent).
//! - [`metrics`]: Prometheus counters.

use std::path::{Path, PathBuf};

use futures::future::BoxFuture;
use sluice_ltx::{Header, TxId};

use crate::error::Result;
pub use crate::restore::SNAPSHOT_LEVEL;

pub mod buffer;
pub mod compaction;
pub mod index;
pub mod lease;
pub mod local;
pub mod metrics;
pub mod outage;
pub mod session;
pub mod uploader;
pub mod writer;

pub use writer::{Limits, ReplicaWriter, Tasks, WriterOptions, connect};

/// Where a level-9 snapshot comes from when the replica has none to merge one from: the
/// database the writer captures (the WAL shipper, the VFS write buffer).
pub trait ImageSource: Send + Sync {
    /// The TXID an image written now would have; `None` before anything was captured.
    fn position(&self) -> BoxFuture<'_, Result<Option<TxId>>>;
    /// Writes a level-9 image of the current position to `path`; `None` when it has to wait
    /// (the database was busy).
    fn write_image(&self, path: PathBuf) -> BoxFuture<'_, Result<Option<Header>>>;
    /// A directory for the image's temp file (the meta directory).
    fn scratch_dir(&self) -> &Path;
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}
