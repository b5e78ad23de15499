//! The SQL functions `sluice_set_time`, `sluice_time`, `sluice_txid`, `sluice_lag`,
//! `sluice_hydration_progress` and write mode's, added to
//! every connection whose main database uses the VFS (by an auto-extension, as Litestream does).
//! Each function finds the connection's main file through `SQLITE_FCNTL_FILE_POINTER` and runs
//! a [`pragma::Command`] on it.

use std::ffi::{CStr, c_char, c_int};
use std::ptr;

use super::bindings::{sqlite3, sqlite3_api_routines, sqlite3_context, sqlite3_value};
use super::file::{Kind, state};
use super::guard::{guard, report};
use super::{host, missing};
use crate::codes::{func, rc, value};
use crate::error::{Error, Result};
use crate::pragma::{Answer, Command};

type SqlFn = unsafe extern "C" fn(*mut sqlite3_context, c_int, *mut *mut sqlite3_value);

/// (name, number of arguments, extra flags, implementation)
const FUNCTIONS: [(&CStr, c_int, c_int, SqlFn); 8] = [
    // Changes what the connection reads: not callable from triggers or views.
    (c"sluice_set_time", 1, func::DIRECTONLY, sql_set_time),
    (c"sluice_time", 0, 0, sql_time),
    (c"sluice_txid", 0, 0, sql_txid),
    (c"sluice_lag", 0, 0, sql_lag),
    (c"sluice_hydration_progress", 0, 0, sql_hydration_progress),
    // Side effects (uploads, waiting): not from triggers or views either.
    (c"sluice_sync", 0, func::DIRECTONLY, sql_sync),
    (c"sluice_pending", 0, 0, sql_pending),
    (c"sluice_wait_durable", 1, func::DIRECTONLY, sql_wait_durable),
];

/// Registers [`connection_init`] to run for every connection opened from now on.
pub fn install_auto_extension(api: &'static sqlite3_api_routines) -> Result<()> {
    let auto_extension = api.auto_extension.ok_or_else(|| missing("auto_extension"))?;
    // SAFETY: sqlite3_auto_extension takes `void(*)(void)` and calls it back with the
    // signature of an extension entry point, which `connection_init` has; the C API declares
    // it this way, so the cast is how every C caller registers one.
    let entry = unsafe {
        std::mem::transmute::<
            unsafe extern "C" fn(*mut sqlite3, *mut *mut c_char, *const sqlite3_api_routines) -> c_int,
            unsafe extern "C" fn(),
        >(connection_init)
    };
    // SAFETY: registering a function pointer that lives as long as the process (the extension
    // stays loaded: SQLITE_OK_LOAD_PERMANENTLY).
    let r = unsafe { auto_extension(Some(entry)) };
    if r != rc::OK {
        return Err(Error::Host(format!("sqlite3_auto_extension failed with code {r}")));
    }
    Ok(())
}

/// Runs for each new connection; returns `SQLITE_OK` whatever happens, since a failure here
/// must not stop unrelated connections from opening.
unsafe extern "C" fn connection_init(
    db: *mut sqlite3,
    _err: *mut *mut c_char,
    _api: *const sqlite3_api_routines,
) -> c_int {
    // SAFETY: SQLite passes the connection being opened.
    guard("connection init", rc::OK, || unsafe {
        add_to_connection(db);
        rc::OK
    })
}

/// Adds the functions to `db` if its main database uses the VFS.
///
/// # Safety
/// `db` is null or an open connection.
pub unsafe fn add_to_connection(db: *mut sqlite3) {
    // SAFETY: an open connection (checked non-null).
    if db.is_null() || unsafe { host::main_vfs(db) } != Some(host::our_vfs()) {
        return;
    }
    let Some(create) = host::api().and_then(|a| a.create_function_v2) else {
        tracing::warn!("the host's API table has no sqlite3_create_function_v2: no sluice_* functions");
        return;
    };
    for (name, n_arg, flags, f) in FUNCTIONS {
        // SAFETY: valid connection, NUL-terminated name, a function with SQLite's signature and
        // no user data to free.
        let r =
            unsafe { create(db, name.as_ptr(), n_arg, func::UTF8 | flags, ptr::null_mut(), Some(f), None, None, None) };
        if r != rc::OK {
            tracing::warn!("cannot add {name:?} to a connection: code {r}");
        }
    }
}

unsafe extern "C" fn sql_set_time(ctx: *mut sqlite3_context, argc: c_int, argv: *mut *mut sqlite3_value) {
    // SAFETY: SQLite passes `argc` (= 1) values.
    let input = (argc == 1).then(|| unsafe { value_text(*argv) }).flatten();
    // SAFETY: SQLite's function context.
    unsafe {
        match input {
            Some(t) => run(ctx, "sluice_set_time", Command::SetTime(t)),
            None => result_error(ctx, "sluice_set_time needs a time (RFC 3339, '5 minutes ago') or 'latest'"),
        }
    }
}

unsafe extern "C" fn sql_time(ctx: *mut sqlite3_context, _argc: c_int, _argv: *mut *mut sqlite3_value) {
    // SAFETY: SQLite's function context.
    unsafe { run(ctx, "sluice_time", Command::Time) }
}

unsafe extern "C" fn sql_txid(ctx: *mut sqlite3_context, _argc: c_int, _argv: *mut *mut sqlite3_value) {
    // SAFETY: SQLite's function context.
    unsafe { run(ctx, "sluice_txid", Command::Txid) }
}

unsafe extern "C" fn sql_lag(ctx: *mut sqlite3_context, _argc: c_int, _argv: *mut *mut sqlite3_value) {
    // SAFETY: SQLite's function context.
    unsafe { run(ctx, "sluice_lag", Command::Lag) }
}

unsafe extern "C" fn sql_hydration_progress(ctx: *mut sqlite3_context, _argc: c_int, _argv: *mut *mut sqlite3_value) {
    // SAFETY: SQLite's function context.
    unsafe { run(ctx, "sluice_hydration_progress", Command::HydrationProgress) }
}

unsafe extern "C" fn sql_sync(ctx: *mut sqlite3_context, _argc: c_int, _argv: *mut *mut sqlite3_value) {
    // SAFETY: SQLite's function context.
    unsafe { run(ctx, "sluice_sync", Command::Sync) }
}

unsafe extern "C" fn sql_pending(ctx: *mut sqlite3_context, _argc: c_int, _argv: *mut *mut sqlite3_value) {
    // SAFETY: SQLite's function context.
    unsafe { run(ctx, "sluice_pending", Command::Pending) }
}

unsafe extern "C" fn sql_wait_durable(ctx: *mut sqlite3_context, argc: c_int, argv: *mut *mut sqlite3_value) {
    // SAFETY: SQLite passes `argc` (= 1) values.
    let ms = (argc == 1).then(|| unsafe { value_text(*argv) }).flatten().and_then(|t| t.trim().parse::<u64>().ok());
    // SAFETY: SQLite's function context.
    unsafe {
        match ms {
            Some(ms) => run(ctx, "sluice_wait_durable", Command::WaitDurable(ms)),
            None => result_error(ctx, "sluice_wait_durable needs a timeout in milliseconds (0 or more)"),
        }
    }
}

/// Runs `cmd` on the main file of the function's connection and sets the result.
///
/// # Safety
/// `ctx` is the context SQLite passed to a function call.
unsafe fn run(ctx: *mut sqlite3_context, what: &'static str, cmd: Command) {
    guard(what, rc::OK, || {
        let Some(api) = host::api() else { return rc::OK };
        // SAFETY: a live context; the connection is open while its function runs.
        let db = unsafe { api.context_db_handle.map_or(ptr::null_mut(), |f| f(ctx)) };
        // SAFETY: the connection's main file; SQLite holds the connection's mutex during the
        // call, so no VFS method runs on that file meanwhile.
        let file = unsafe { host::main_file(db) }.and_then(|f| unsafe { state(f) });
        let Some(kind) = file.map(|s| &mut s.kind).filter(|k| !matches!(k, Kind::Local(_))) else {
            // SAFETY: a live context.
            unsafe { result_error(ctx, &format!("{what}: the main database does not use the sluice VFS")) };
            return rc::OK;
        };
        let answer = super::file::execute(kind, &cmd);
        if let Err(e) = &answer {
            report(what, e);
        }
        // SAFETY: a live context.
        unsafe { set_result(ctx, answer) };
        rc::OK
    });
}

/// # Safety
/// `ctx` is a live function context.
unsafe fn set_result(ctx: *mut sqlite3_context, answer: Result<Answer>) {
    // SAFETY: a live context, by the contract (every arm).
    unsafe {
        match answer {
            Ok(Answer::None | Answer::Pass) => result_null(ctx),
            Ok(Answer::Int(i)) => result_int64(ctx, i),
            Ok(Answer::Text(t)) => result_text(ctx, &t),
            Err(e) => result_error(ctx, &e.to_string()),
        }
    }
}

/// # Safety
/// `v` is a live value.
unsafe fn value_text(v: *mut sqlite3_value) -> Option<String> {
    let api = host::api()?;
    // SAFETY: a live value.
    if unsafe { api.value_type?(v) } == value::NULL {
        return None;
    }
    // SAFETY: a live value; the text stays valid until the value changes, after the copy.
    let p = unsafe { api.value_text?(v) };
    // SAFETY: null or NUL-terminated UTF-8 text.
    (!p.is_null()).then(|| unsafe { CStr::from_ptr(p.cast()) }.to_string_lossy().into_owned())
}

/// # Safety
/// `ctx` is a live function context.
unsafe fn result_text(ctx: *mut sqlite3_context, t: &str) {
    let Some(api) = host::api() else { return };
    let (Some(set), Some(free)) = (api.result_text, api.free) else { return };
    let p = host::sqlite_string(t);
    if p.is_null() {
        // SAFETY: a live context.
        unsafe { result_error(ctx, "out of memory") };
        return;
    }
    // SAFETY: `p` is sqlite3_malloc'ed and NUL-terminated; SQLite frees it with sqlite3_free.
    unsafe { set(ctx, p, -1, Some(free)) };
}

/// # Safety
/// `ctx` is a live function context.
unsafe fn result_int64(ctx: *mut sqlite3_context, i: i64) {
    if let Some(f) = host::api().and_then(|a| a.result_int64) {
        // SAFETY: a live context.
        unsafe { f(ctx, i) };
    }
}

/// # Safety
/// `ctx` is a live function context.
unsafe fn result_null(ctx: *mut sqlite3_context) {
    if let Some(f) = host::api().and_then(|a| a.result_null) {
        // SAFETY: a live context.
        unsafe { f(ctx) };
    }
}

/// # Safety
/// `ctx` is a live function context.
unsafe fn result_error(ctx: *mut sqlite3_context, msg: &str) {
    let Some(f) = host::api().and_then(|a| a.result_error) else { return };
    let Ok(n) = c_int::try_from(msg.len()) else { return };
    // SAFETY: SQLite copies `n` bytes of the message before returning.
    unsafe { f(ctx, msg.as_ptr().cast(), n) };
}
