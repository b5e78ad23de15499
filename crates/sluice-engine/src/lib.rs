//! Sluice's engine: reading a replica (restore, the VFS's read path) and writing one (the
//! replica writer both `sluice replicate` and the VFS's write mode drive), on top of the LTX
//! format and the replica client. No SQLite here: the VFS extension links this crate and must
//! run on its host's SQLite; WAL capture, which needs SQLite, is `sluice-replicate`.
//!
//! # Layout
//! - [`restore`]: plan, download ahead, apply, install atomically.
//! - [`read`]: pages of a replica on demand (the VFS's read path): views, cache, polling.
//! - [`write`]: the replica writer after capture: lease, uploads, compaction, snapshots, retention.
//! - [`validate`]: the checksums replica validation compares (local database, restored image).
//! - [`error`]: typed errors naming files, TXIDs and paths.
//! - [`perms`]: the mode and owner of everything written about a database.
#![warn(missing_docs)]

pub mod error;
pub mod perms;
pub mod read;
pub mod restore;
pub mod validate;
pub mod write;

pub use error::{Error, Result};
