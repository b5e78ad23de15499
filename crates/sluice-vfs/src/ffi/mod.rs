//! The C boundary: the only module with `unsafe` code.
//!
//! - [`bindings`]: SQLite's C declarations (copied, MIT), no linking.
//! - this file: the entry point, the host's API table, registration.
//! - [`guard`]: `catch_unwind` around every callback; errors become SQLite codes via
//!   [`crate::error::Error::sqlite_code`] and a log line.
//! - [`host`]: the calls into the host's `sqlite3_api_routines`.
//! - [`vfs`]: the `sqlite3_vfs` methods; [`file`]: the `sqlite3_io_methods`;
//!   [`functions`]: the SQL functions and the per-connection auto-extension.
//!
//! The extension calls its host only through the `sqlite3_api_routines` pointer handed to the
//! entry point, so the `.so` defines no `sqlite3_*` symbol but its entry point and runs on
//! whichever SQLite loaded it.
#![allow(unsafe_code)]

pub mod bindings;
mod file;
mod functions;
mod guard;
mod host;
mod vfs;

use std::ffi::{c_char, c_int};
use std::sync::Mutex;

use bindings::{sqlite3, sqlite3_api_routines};

use crate::codes::rc;
use crate::error::{Error, Result};

/// The oldest SQLite the extension runs on: `SQLITE_DIRECTONLY` and every API-table entry it
/// reads exist since 3.31.0 (Litestream's VFS has the same floor).
pub const MIN_SQLITE_VERSION: i32 = 3_031_000;

/// The name of the VFS (`?vfs=sluice`).
pub const VFS_NAME: &str = "sluice";

/// The loadable extension's entry point, found by SQLite from the file name
/// (`libsluice_vfs.so` → `sqlite3_sluicevfs_init`), so no entry point needs naming.
///
/// Registers the VFS `sluice` (not as default) and an auto-extension that adds the SQL
/// functions to every later connection whose main database uses it; asks to stay loaded.
///
/// # Safety
/// Called by SQLite's `load_extension` with a valid connection, error-message slot and API
/// table.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sqlite3_sluicevfs_init(
    db: *mut sqlite3,
    pz_err_msg: *mut *mut c_char,
    p_api: *const sqlite3_api_routines,
) -> c_int {
    // SAFETY: the caller's contract is this function's.
    unsafe { init(db, pz_err_msg, p_api, rc::OK_LOAD_PERMANENTLY) }
}

/// The entry point with the pointee types of the caller's SQLite bindings (for example
/// rusqlite's `ffi::sqlite3` and `ffi::sqlite3_api_routines`), to register with that SQLite's
/// `sqlite3_auto_extension`: see [`crate::register`]. Returns `SQLITE_OK` (an auto-extension
/// must; `SQLITE_OK_LOAD_PERMANENTLY` would fail the open).
pub fn auto_extension_entry<D, A>() -> unsafe extern "C" fn(*mut D, *mut *mut c_char, *const A) -> c_int {
    generic_init::<D, A>
}

/// # Safety
/// As [`sqlite3_sluicevfs_init`]: `D` and `A` must be the C types `sqlite3` and
/// `sqlite3_api_routines` (only the pointers are used, so any Rust declaration of them works).
unsafe extern "C" fn generic_init<D, A>(db: *mut D, pz_err_msg: *mut *mut c_char, p_api: *const A) -> c_int {
    // SAFETY: the pointers are those SQLite passes to an auto-extension (see above).
    unsafe { init(db.cast(), pz_err_msg, p_api.cast(), rc::OK) }
}

/// # Safety
/// `db` is an open connection or null, `pz_err_msg` null or writable, `p_api` the host's table.
unsafe fn init(db: *mut sqlite3, pz_err_msg: *mut *mut c_char, p_api: *const sqlite3_api_routines, ok: c_int) -> c_int {
    guard::guard("extension init", rc::ERROR, || {
        // SAFETY: `p_api` is the host's API table, valid for the life of the process.
        match unsafe { register(p_api) } {
            Ok(()) => {}
            Err(e) => {
                tracing::error!("cannot load the sluice VFS: {e}");
                if !pz_err_msg.is_null() {
                    // SAFETY: SQLite gave us this slot for a sqlite3_malloc'ed message.
                    unsafe { *pz_err_msg = host::sqlite_string(&e.to_string()) };
                }
                return e.sqlite_code();
            }
        }
        // Connections opened before the load (this one) get the functions here.
        // SAFETY: `db` is the connection SQLite passed in.
        unsafe { functions::add_to_connection(db) };
        ok
    })
}

/// Registers the VFS and the auto-extension once per process (later loads, from any
/// connection, find them in place).
///
/// # Safety
/// `p_api` is null or the host's API table.
unsafe fn register(p_api: *const sqlite3_api_routines) -> Result<()> {
    static REGISTERING: Mutex<()> = Mutex::new(());
    let _serial = REGISTERING.lock().unwrap_or_else(|e| e.into_inner());
    if host::installed() {
        return Ok(());
    }
    // SAFETY: forwarded contract.
    let api = unsafe { host::install(p_api)? };
    let config = crate::config::process_config()?;
    crate::logging::init(&config);
    // Known before the auto-extension runs for any connection (it compares with it).
    host::set_vfs(vfs::register(api)?);
    functions::install_auto_extension(api)?;
    tracing::info!("sluice VFS registered (host SQLite {})", host::version());
    Ok(())
}

/// The error for a missing API-table entry.
fn missing(name: &str) -> Error {
    Error::Host(format!("the host's API table has no sqlite3_{name}"))
}
