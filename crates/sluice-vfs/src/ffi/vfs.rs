//! The `sqlite3_vfs` methods. Files are opened by [`super::file`]; everything that is not
//! about files (dynamic loading, randomness, sleep, time) is the host's default VFS's job.

use std::ffi::{CStr, c_char, c_int, c_void};
use std::ptr;

use super::bindings::{sqlite3_api_routines, sqlite3_int64, sqlite3_vfs};
use super::guard::{guard, report};
use super::{VFS_NAME, file, missing};
use crate::codes::rc;
use crate::error::{Error, Result};
use crate::local;

/// Longest path SQLite may hand us (it allocates `mxPathname + 1` for `xFullPathname`).
const MAX_PATHNAME: c_int = 1024;

/// Builds our `sqlite3_vfs` and registers it (not as the default).
pub fn register(api: &'static sqlite3_api_routines) -> Result<*mut sqlite3_vfs> {
    let vfs_find = api.vfs_find.ok_or_else(|| missing("vfs_find"))?;
    let vfs_register = api.vfs_register.ok_or_else(|| missing("vfs_register"))?;
    // SAFETY: null asks for the default VFS.
    let default = unsafe { vfs_find(ptr::null()) };
    if default.is_null() {
        return Err(Error::Host("the host has no default VFS".into()));
    }
    // SAFETY: the name is a NUL-terminated literal.
    if !unsafe { vfs_find(c"sluice".as_ptr()) }.is_null() {
        return Err(Error::Host(format!(
            "a VFS named {VFS_NAME:?} is already registered (another copy of the extension?)"
        )));
    }
    let vfs = Box::new(sqlite3_vfs {
        // Version 2: no xSetSystemCall & co., which only SQLite's own test harness calls.
        iVersion: 2,
        szOsFile: file::SIZE,
        mxPathname: MAX_PATHNAME,
        pNext: ptr::null_mut(),
        zName: c"sluice".as_ptr(),
        // The default VFS, for the methods delegated to it.
        pAppData: default.cast(),
        xOpen: Some(file::x_open),
        xDelete: Some(x_delete),
        xAccess: Some(x_access),
        xFullPathname: Some(x_full_pathname),
        xDlOpen: Some(x_dl_open),
        xDlError: Some(x_dl_error),
        xDlSym: Some(x_dl_sym),
        xDlClose: Some(x_dl_close),
        xRandomness: Some(x_randomness),
        xSleep: Some(x_sleep),
        xCurrentTime: Some(x_current_time),
        xGetLastError: Some(x_get_last_error),
        xCurrentTimeInt64: Some(x_current_time_int64),
        xSetSystemCall: None,
        xGetSystemCall: None,
        xNextSystemCall: None,
    });
    // Registered VFSes must live as long as the process: leaked on purpose.
    let vfs = Box::into_raw(vfs);
    // SAFETY: `vfs` is a complete, never-freed sqlite3_vfs; 0 = not the default.
    let r = unsafe { vfs_register(vfs, 0) };
    if r != rc::OK {
        return Err(Error::Host(format!("sqlite3_vfs_register failed with code {r}")));
    }
    Ok(vfs)
}

/// The host's default VFS, kept in our `pAppData`.
///
/// # Safety
/// `vfs` is our registered VFS.
unsafe fn default_vfs(vfs: *mut sqlite3_vfs) -> *mut sqlite3_vfs {
    // SAFETY: `register` stored the default VFS (a static of the host) in pAppData.
    unsafe { (*vfs).pAppData.cast() }
}

/// # Safety
/// `name` is null or NUL-terminated.
unsafe fn name_of(name: *const c_char) -> Option<String> {
    // SAFETY: forwarded contract.
    (!name.is_null()).then(|| unsafe { CStr::from_ptr(name) }.to_string_lossy().into_owned())
}

unsafe extern "C" fn x_delete(_vfs: *mut sqlite3_vfs, name: *const c_char, _sync_dir: c_int) -> c_int {
    guard("xDelete", rc::IOERR_DELETE, || {
        // SAFETY: SQLite passes a NUL-terminated name.
        let Some(path) = unsafe { name_of(name) }.and_then(|n| local::existing_path(&n)) else {
            return rc::OK; // Never created locally: nothing to delete.
        };
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => report("xDelete", &Error::io("delete", path, e)),
            _ => rc::OK,
        }
    })
}

unsafe extern "C" fn x_access(_vfs: *mut sqlite3_vfs, name: *const c_char, flags: c_int, out: *mut c_int) -> c_int {
    guard("xAccess", rc::IOERR, || {
        // SAFETY: SQLite passes a NUL-terminated name.
        let name = unsafe { name_of(name) }.unwrap_or_default();
        // No WAL ever exists: SQLite must not look for one. Other names exist only if they
        // are journals or temporary files created here.
        // (EXISTS, READWRITE and READ all mean "is there such a local file": ours are always
        // readable and writable.)
        let _ = flags;
        let exists = !name.ends_with("-wal") && local::existing_path(&name).is_some_and(|p| p.exists());
        // SAFETY: SQLite passes a writable int.
        unsafe { *out = c_int::from(exists) };
        rc::OK
    })
}

unsafe extern "C" fn x_full_pathname(
    _vfs: *mut sqlite3_vfs,
    name: *const c_char,
    n_out: c_int,
    out: *mut c_char,
) -> c_int {
    guard("xFullPathname", rc::CANTOPEN, || {
        // The name only labels logs and local journals: it is kept as given.
        // SAFETY: SQLite passes a NUL-terminated name.
        let bytes = unsafe { CStr::from_ptr(name) }.to_bytes_with_nul();
        if bytes.len() > usize::try_from(n_out).unwrap_or(0) {
            return rc::CANTOPEN;
        }
        // SAFETY: `out` has `n_out` ≥ len bytes and does not overlap `name`.
        unsafe { ptr::copy_nonoverlapping(bytes.as_ptr().cast(), out, bytes.len()) };
        rc::OK
    })
}

// Delegated to the default VFS. These carry no Rust logic that could panic; each forwards the
// arguments SQLite passed, which is the default VFS's own contract, so every `unsafe` below
// is sound exactly when SQLite's call to us is.

unsafe extern "C" fn x_dl_open(vfs: *mut sqlite3_vfs, filename: *const c_char) -> *mut c_void {
    // SAFETY: see above.
    unsafe {
        let d = default_vfs(vfs);
        (*d).xDlOpen.map_or(ptr::null_mut(), |f| f(d, filename))
    }
}

unsafe extern "C" fn x_dl_error(vfs: *mut sqlite3_vfs, n: c_int, msg: *mut c_char) {
    // SAFETY: see above.
    unsafe {
        let d = default_vfs(vfs);
        if let Some(f) = (*d).xDlError {
            f(d, n, msg);
        }
    }
}

type DlSym = unsafe extern "C" fn(*mut sqlite3_vfs, *mut c_void, *const c_char);

unsafe extern "C" fn x_dl_sym(vfs: *mut sqlite3_vfs, handle: *mut c_void, symbol: *const c_char) -> Option<DlSym> {
    // SAFETY: see above.
    unsafe {
        let d = default_vfs(vfs);
        (*d).xDlSym.and_then(|f| f(d, handle, symbol))
    }
}

unsafe extern "C" fn x_dl_close(vfs: *mut sqlite3_vfs, handle: *mut c_void) {
    // SAFETY: see above.
    unsafe {
        let d = default_vfs(vfs);
        if let Some(f) = (*d).xDlClose {
            f(d, handle);
        }
    }
}

unsafe extern "C" fn x_randomness(vfs: *mut sqlite3_vfs, n: c_int, out: *mut c_char) -> c_int {
    // SAFETY: see above.
    unsafe {
        let d = default_vfs(vfs);
        (*d).xRandomness.map_or(0, |f| f(d, n, out))
    }
}

unsafe extern "C" fn x_sleep(vfs: *mut sqlite3_vfs, micros: c_int) -> c_int {
    // SAFETY: see above.
    unsafe {
        let d = default_vfs(vfs);
        (*d).xSleep.map_or(0, |f| f(d, micros))
    }
}

unsafe extern "C" fn x_current_time(vfs: *mut sqlite3_vfs, out: *mut f64) -> c_int {
    // SAFETY: see above.
    unsafe {
        let d = default_vfs(vfs);
        (*d).xCurrentTime.map_or(rc::ERROR, |f| f(d, out))
    }
}

unsafe extern "C" fn x_get_last_error(_vfs: *mut sqlite3_vfs, _n: c_int, _out: *mut c_char) -> c_int {
    0 // Errors are logged with their cause instead.
}

unsafe extern "C" fn x_current_time_int64(vfs: *mut sqlite3_vfs, out: *mut sqlite3_int64) -> c_int {
    // SAFETY: see above. A version-1 default VFS has no xCurrentTimeInt64: use xCurrentTime.
    unsafe {
        let d = default_vfs(vfs);
        match (*d).xCurrentTimeInt64 {
            Some(f) if (*d).iVersion >= 2 => f(d, out),
            _ => {
                let mut days = 0.0;
                let r = x_current_time(vfs, &mut days);
                *out = (days * 86_400_000.0) as sqlite3_int64;
                r
            }
        }
    }
}
