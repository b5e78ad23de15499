//! Reading a replica's pages without restoring it: the read path of the VFS extension.
//!
//! A [`Replica`] plans the latest state as `sluice restore` does, reads each planned file's
//! page index with one ranged read of its tail, and builds a [`View`]: for every page, the
//! file, offset and size of its newest frame, cut at the final commit. Pages are then served
//! from an LRU cache of decoded pages, or fetched by ranged GETs — adjacent frames of one file
//! coalesced into one request, read ahead when reads are sequential. One poller per replica
//! per process lists only files after the known position (one request when nothing changed)
//! and publishes a new view; callers switch views between transactions, so a read
//! transaction always sees one TXID.
//!
//! The VFS calls in from arbitrary threads and must not block a runtime worker: the engine runs
//! its own small tokio runtime, and every blocking entry point hands its work to it and waits
//! on a plain channel with a deadline ([`ReadOptions::read_timeout`]).
//!
//! # Layout
//! - [`view`]: a file's page index, and the page map of one TXID.
//! - [`replica`]: opening, polling, time travel, the per-process registry.
//! - `fetch`: page reads (cache, coalescing, read-ahead, retry of corrupt frames).
//! - `cache`: the decoded-page LRU. [`time`]: parsing times given by users.
//! - [`hydrate`]: a local copy filled in the background, then read instead of the replica.

use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use crate::error::{Error, Result};

mod cache;
mod fetch;
pub mod hydrate;
pub mod replica;
pub mod time;
pub mod view;

pub use hydrate::Hydration;
pub use replica::Replica;
pub use time::parse_time;
pub use view::View;

/// Default limit of automatic hydration: 256 MiB (the copy lives in the temp directory, which
/// may be memory-backed), a download worth making to spare a workload
/// thousands of round trips.
pub const DEFAULT_AUTO_HYDRATE_BYTES: u64 = 256 << 20;

/// Settings of a replica opened for reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ReadOptions {
    /// Bytes of decoded pages kept in memory (shared by all connections to the replica).
    pub cache_bytes: u64,
    /// How often the replica is listed for new files.
    pub poll_interval: Duration,
    /// Deadline of every remote read; past it the caller gets [`Error::ReadTimeout`].
    pub read_timeout: Duration,
    /// Hydrate automatically (a private temp file) a database of at most this many bytes once
    /// reads keep going to storage; 0 turns it off.
    pub auto_hydrate_bytes: u64,
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions {
            cache_bytes: 16 << 20,
            poll_interval: Duration::from_secs(1),
            read_timeout: Duration::from_secs(10),
            auto_hydrate_bytes: DEFAULT_AUTO_HYDRATE_BYTES,
        }
    }
}

/// The engine's runtime for readers: two workers, created on first use, shared by every
/// replica of the process. SQLite's threads never run on it; they wait for its results.
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("sluice-read")
            .enable_all()
            .build()
            .expect("cannot start the reader's runtime (threads exhausted?)")
    })
}

/// Runs `fut` on the engine's runtime and waits for it on the calling thread, for at most
/// `deadline`. Safe from any thread, including another runtime's worker (which it blocks:
/// that is the caller's choice), but never from the engine's own runtime.
pub fn block_on<T: Send + 'static>(
    fut: impl Future<Output = Result<T>> + Send + 'static,
    deadline: Duration,
    replica: &str,
    what: impl FnOnce() -> String,
) -> Result<T> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let task = runtime().spawn(async move {
        let _ = tx.send(fut.await);
    });
    match rx.recv_timeout(deadline) {
        Ok(r) => r,
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            task.abort();
            Err(Error::ReadTimeout { replica: replica.to_string(), what: what(), after: deadline })
        }
        // The task ended without an answer: it panicked.
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            Err(Error::Task(format!("reading {} from replica {replica} failed unexpectedly", what())))
        }
    }
}
