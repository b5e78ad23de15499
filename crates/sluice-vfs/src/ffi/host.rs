//! The host SQLite, reached only through its `sqlite3_api_routines` table.
//!
//! One host per process: the first table handed to the entry point is kept. (A process with
//! two SQLite libraries that both load the extension would register the VFS with the first.)

use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};

use super::bindings::{sqlite3, sqlite3_api_routines, sqlite3_file, sqlite3_vfs};
use super::{MIN_SQLITE_VERSION, missing};
use crate::codes::rc;
use crate::error::{Error, Result};

static API: AtomicPtr<sqlite3_api_routines> = AtomicPtr::new(ptr::null_mut());
/// Our registered `sqlite3_vfs` (null until registration completes).
static OUR_VFS: AtomicPtr<sqlite3_vfs> = AtomicPtr::new(ptr::null_mut());

/// The host's table, once installed.
pub fn api() -> Option<&'static sqlite3_api_routines> {
    let p = API.load(Ordering::Acquire);
    // SAFETY: only `install` stores here, a pointer to the host's static API table, which
    // lives as long as the process (SQLite never frees or moves it).
    unsafe { p.as_ref() }
}

/// Checks and keeps the host's table.
///
/// # Safety
/// `p_api` is null or points to the host's `sqlite3_api_routines`, valid for the process.
pub unsafe fn install(p_api: *const sqlite3_api_routines) -> Result<&'static sqlite3_api_routines> {
    if p_api.is_null() {
        return Err(Error::Host(
            "no API table was passed to the entry point (a SQLite built with SQLITE_OMIT_LOAD_EXTENSION?)".into(),
        ));
    }
    // SAFETY: non-null and, by the contract, the host's static table.
    let api: &'static sqlite3_api_routines = unsafe { &*p_api };
    let version = api.libversion_number.ok_or_else(|| missing("libversion_number"))?;
    // SAFETY: a plain getter of the host library.
    let v = unsafe { version() };
    if v < MIN_SQLITE_VERSION {
        return Err(Error::Host(format!("SQLite {v} is too old: the sluice VFS needs {MIN_SQLITE_VERSION} or newer")));
    }
    API.compare_exchange(ptr::null_mut(), p_api.cast_mut(), Ordering::AcqRel, Ordering::Acquire).ok();
    api_or_err()
}

pub fn api_or_err() -> Result<&'static sqlite3_api_routines> {
    api().ok_or_else(|| Error::Host("the extension is not initialised".into()))
}

/// True once the VFS is registered in this process.
pub fn installed() -> bool {
    !OUR_VFS.load(Ordering::Acquire).is_null()
}

pub fn set_vfs(vfs: *mut sqlite3_vfs) {
    OUR_VFS.store(vfs, Ordering::Release);
}

/// Our `sqlite3_vfs`, or null before registration.
pub fn our_vfs() -> *mut sqlite3_vfs {
    OUR_VFS.load(Ordering::Acquire)
}

/// `sqlite3_libversion_number()` of the host (0 before installation).
pub fn version() -> i32 {
    match api().and_then(|a| a.libversion_number) {
        // SAFETY: a plain getter of the host library.
        Some(f) => unsafe { f() },
        None => 0,
    }
}

/// A copy of `s` in memory from `sqlite3_malloc`, as SQLite wants for messages it frees
/// (`pzErrMsg`, PRAGMA results). Null if the host cannot allocate it. Interior NULs end it.
pub fn sqlite_string(s: &str) -> *mut c_char {
    let bytes = s.split('\0').next().unwrap_or_default().as_bytes();
    let Some(malloc) = api().and_then(|a| a.malloc) else {
        return ptr::null_mut();
    };
    let Ok(n) = c_int::try_from(bytes.len() + 1) else {
        return ptr::null_mut();
    };
    // SAFETY: sqlite3_malloc returns null or `n` writable bytes.
    let p: *mut u8 = unsafe { malloc(n) }.cast();
    if !p.is_null() {
        // SAFETY: `p` holds `n` = len + 1 bytes and does not overlap `bytes`.
        unsafe {
            ptr::copy_nonoverlapping(bytes.as_ptr(), p, bytes.len());
            *p.add(bytes.len()) = 0;
        }
    }
    p.cast()
}

/// `sqlite3_uri_parameter(filename, key)` for the filename SQLite passed to `xOpen`.
///
/// # Safety
/// `filename` is the name SQLite passed to `xOpen` for a main database (or null).
pub unsafe fn uri_parameter(filename: *const c_char, key: &str) -> Option<String> {
    if filename.is_null() {
        return None;
    }
    let f = api()?.uri_parameter?;
    let key = CString::new(key).ok()?;
    // SAFETY: a main-database filename from xOpen carries SQLite's parameter block; `key` is
    // NUL-terminated and outlives the call.
    let v = unsafe { f(filename, key.as_ptr()) };
    // SAFETY: null or a NUL-terminated string inside `filename`, which outlives this call.
    (!v.is_null()).then(|| unsafe { CStr::from_ptr(v) }.to_string_lossy().into_owned())
}

/// `sqlite3_file_control(db, "main", op, arg)`.
///
/// # Safety
/// `db` is an open connection; `arg` is what `op` expects.
pub unsafe fn file_control(db: *mut sqlite3, op: c_int, arg: *mut c_void) -> c_int {
    let Some(f) = api().and_then(|a| a.file_control) else {
        return rc::ERROR;
    };
    // SAFETY: forwarded contract; "main" is a NUL-terminated literal.
    unsafe { f(db, c"main".as_ptr(), op, arg) }
}

/// The `sqlite3_file` of `db`'s main database.
///
/// # Safety
/// `db` is an open connection.
pub unsafe fn main_file(db: *mut sqlite3) -> Option<*mut sqlite3_file> {
    let mut p: *mut sqlite3_file = ptr::null_mut();
    // SAFETY: FILE_POINTER writes one `sqlite3_file*` into the given slot.
    let r = unsafe { file_control(db, crate::codes::fcntl::FILE_POINTER, (&raw mut p).cast()) };
    (r == rc::OK && !p.is_null()).then_some(p)
}

/// The `sqlite3_vfs` of `db`'s main database.
///
/// # Safety
/// `db` is an open connection.
pub unsafe fn main_vfs(db: *mut sqlite3) -> Option<*mut sqlite3_vfs> {
    let mut p: *mut sqlite3_vfs = ptr::null_mut();
    // SAFETY: VFS_POINTER writes one `sqlite3_vfs*` into the given slot.
    let r = unsafe { file_control(db, crate::codes::fcntl::VFS_POINTER, (&raw mut p).cast()) };
    (r == rc::OK && !p.is_null()).then_some(p)
}
