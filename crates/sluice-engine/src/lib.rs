//! Sluice's engine: restore (and, later, replication) on top of the LTX format and the
//! replica client.
//!
//! # Layout
//! - [`restore`]: plan, download ahead, apply, install atomically.
//! - [`error`]: typed errors naming files, TXIDs and paths.
//! - [`perms`]: the mode and owner of everything written about a database.
#![warn(missing_docs)]

pub mod error;
pub mod perms;
pub mod replicate;
pub mod restore;

pub use error::{Error, Result};
