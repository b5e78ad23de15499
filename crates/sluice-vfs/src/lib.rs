//! Sluice's SQLite VFS, read mode: query a replica straight from object storage, without
//! restoring it. Built as a loadable extension (`libsluice_vfs.so`, entry point
//! `sqlite3_sluicevfs_init`) that runs on its host's SQLite, and as a Rust library.
//!
//! ```text
//! sqlite> .load target/release/libsluice_vfs
//! sqlite> .open file:app.db?vfs=sluice&replica=s3://bucket/app
//! sqlite> SELECT count(*) FROM events;   -- pages fetched on demand, cached, read ahead
//! sqlite> SELECT sluice_set_time('5 minutes ago');
//! ```
//!
//! # Layout
//! - [`config`]: environment and URI settings.
//! - `backend`: what a database file needs from the engine's read path (a trait, so the
//!   state machine is tested without storage).
//! - `db_file`: the main database file: lock levels, one view per transaction, page 1 as
//!   SQLite must see it, time travel.
//! - `local`: journals and temporary files in a private directory.
//! - `pragma`: the PRAGMAs and SQL functions as plain commands.
//! - [`error`]: errors and their SQLite codes (one function).
//! - `ffi`: the C boundary, the only `unsafe` code: entry point, VFS and file methods, SQL
//!   functions, each behind `catch_unwind`.
//!
//! # Using it from Rust
//! The crate links no SQLite: it calls the SQLite it is registered with through that
//! library's API table. A program that links SQLite itself (rusqlite with `bundled`, say)
//! hands the entry point to it as an auto-extension, see [`register`].
#![warn(missing_docs)]

pub mod config;
pub mod error;
pub mod hydrate_config;
pub mod write_config;

mod backend;
mod codes;
mod db_file;
mod engine;
mod local;
mod locks;
mod names;
mod pragma;
mod write_file;
mod writers;

mod ffi;
mod logging;

use std::ffi::{c_char, c_int};

pub use config::{Config, DbSettings};
pub use error::{Error, Result};
pub use ffi::{MIN_SQLITE_VERSION, VFS_NAME, sqlite3_sluicevfs_init};
pub use sluice_engine::read::{Hydration, ReadOptions};
pub use write_config::{FsyncMode, WriteConfig};

/// Sets the process-wide settings (instead of the environment) and returns the extension's
/// entry point, to register with the SQLite your program links as an auto-extension. The first
/// connection opened after that registers the VFS `sluice` (and each connection using it gets
/// the `sluice_*` functions); URI parameters still override `config` per database.
///
/// `D` and `A` are your bindings' `sqlite3` and `sqlite3_api_routines` types, so the result
/// fits e.g. rusqlite's `register_auto_extension` as is:
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use rusqlite::{Connection, OpenFlags};
/// let init = sluice_vfs::register(sluice_vfs::Config {
///     replica_url: Some("s3://bucket/app".into()),
///     ..Default::default()
/// });
/// // SAFETY: the entry point has the signature SQLite calls auto-extensions with.
/// unsafe { rusqlite::auto_extension::register_auto_extension(init)? };
/// Connection::open_in_memory()?; // runs the auto-extension once: the VFS now exists
/// let conn = Connection::open_with_flags(
///     "file:app.db?vfs=sluice",
///     OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI,
/// )?;
/// # Ok(()) }
/// ```
///
/// (A program that can load extensions can instead `load_extension` the `.so` and set
/// `SLUICE_*` variables.)
pub fn register<D, A>(config: Config) -> unsafe extern "C" fn(*mut D, *mut *mut c_char, *const A) -> c_int {
    config::set_process_config(config);
    ffi::auto_extension_entry::<D, A>()
}
