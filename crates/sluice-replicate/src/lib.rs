//! Replication: WAL frames → local L0 files → the replica, with snapshots, compaction,
//! retention and checkpoints. The only crate that links SQLite (bundled, for read locks and
//! checkpoints); restore and the read path live in `sluice-engine`.
//!
//! # Layout
//! - [`wal`]: reading SQLite's WAL (checksums, committed transactions); `shm`: its index.
//! - [`shipper`]: the synchronous core (read locks, local L0 files, checkpoints, images);
//!   `conn`: its SQLite connection helpers.
//! - [`actor`]: the shipper on its own thread, driven by async commands.
//! - [`local`]: the meta directory of local L0 files.
//! - [`uploader`], [`compaction`]: shipping files, the level ladder, snapshots, retention.
//! - [`index`]: the in-memory view of the replica. [`metrics`]: Prometheus counters.
//! - [`outage`]: storage outages (backoff, logging once, what is permanent).
//! - [`fsevents`]: file-change notification, so idle databases cost no wake-ups.
//! - [`service`]: the three tasks of one database; [`poll`]: watching the WAL index.
//! - [`lifecycle`]: [`replicate`], one database from its appearance on, across deletions;
//!   [`presence`]: waiting for a database file and noticing it go; `recover`: starting over
//!   after a database was replaced in place.

pub mod actor;
mod conn;
pub mod fsevents;
pub mod lifecycle;
pub mod poll;
pub mod presence;
pub mod recover;
pub mod service;
pub mod shipper;
mod shm;
pub mod wal;

pub use lifecycle::replicate;
pub use service::{Captured, ReplicateOptions, Request};

/// How long committed frames may fail to be captured before replication of a database stops.
pub const DEFAULT_STALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
