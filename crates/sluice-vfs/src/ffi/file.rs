//! `xOpen` and the `sqlite3_io_methods` of both kinds of file: the main database
//! ([`crate::db_file::DbFile`]) and journals/temporary files ([`crate::local::LocalFile`]).
//!
//! SQLite allocates [`SIZE`] bytes per file; we place a [`FileWrapper`] there: the base
//! struct SQLite reads `pMethods` from, then a pointer to our boxed state.

use std::ffi::{CStr, c_char, c_int, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::ptr;
use std::sync::Arc;

use super::bindings::{sqlite3_file, sqlite3_int64, sqlite3_io_methods, sqlite3_vfs};
use super::guard::{guard, log_panic, report};
use super::host;
use crate::codes::{fcntl, iocap, open, rc};
use crate::db_file::{DbFile, ReadOutcome};
use crate::engine::Replica;
use crate::error::{Error, Result};
use crate::local::{DirLease, LocalFile};
use crate::names::NameClaim;
use crate::pragma;
use crate::write_file::WriteFile;
use crate::writers::WriterRef;

/// What SQLite allocates for each file.
pub const SIZE: c_int = std::mem::size_of::<FileWrapper>() as c_int;

/// Our `sqlite3_file` "subclass".
#[repr(C)]
struct FileWrapper {
    base: sqlite3_file,
    state: *mut FileState,
}

/// The state behind one open file.
pub struct FileState {
    pub kind: Kind,
    /// Set when a callback panicked: the state may be inconsistent, so every later call fails
    /// (with an I/O error) until SQLite closes the file.
    poisoned: bool,
}

pub enum Kind {
    /// The main database (read mode).
    Db {
        file: Box<DbFile<Arc<Replica>>>,
        _held: Held,
    },
    /// The main database in write mode.
    Write {
        file: Box<WriteFile<WriterRef>>,
        _held: Held,
    },
    Local(LocalFile),
}

/// What a main database keeps while open: the private directory (its journals) and its name.
#[derive(Debug)]
pub struct Held {
    _dir: DirLease,
    _name: NameClaim,
}

impl Held {
    fn new(name: NameClaim) -> Held {
        Held { _dir: DirLease::acquire(), _name: name }
    }
}

/// One table for both kinds; version 1: no shared memory (so no WAL) and no mmap.
static METHODS: sqlite3_io_methods = sqlite3_io_methods {
    iVersion: 1,
    xClose: Some(x_close),
    xRead: Some(x_read),
    xWrite: Some(x_write),
    xTruncate: Some(x_truncate),
    xSync: Some(x_sync),
    xFileSize: Some(x_file_size),
    xLock: Some(x_lock),
    xUnlock: Some(x_unlock),
    xCheckReservedLock: Some(x_check_reserved_lock),
    xFileControl: Some(x_file_control),
    xSectorSize: Some(x_sector_size),
    xDeviceCharacteristics: Some(x_device_characteristics),
    xShmMap: None,
    xShmLock: None,
    xShmBarrier: None,
    xShmUnmap: None,
    xFetch: None,
    xUnfetch: None,
};

pub unsafe extern "C" fn x_open(
    _vfs: *mut sqlite3_vfs,
    name: *const c_char,
    file: *mut sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    // SAFETY: SQLite passes `SIZE` writable bytes. A null pMethods tells SQLite not to call
    // xClose if the open fails.
    unsafe { (*file).pMethods = ptr::null() };
    guard("xOpen", rc::CANTOPEN, || {
        // SAFETY: SQLite's name is null (temporary file) or NUL-terminated and outlives the file.
        let label = (!name.is_null()).then(|| unsafe { CStr::from_ptr(name) }.to_string_lossy().into_owned());
        let opened = if flags & open::MAIN_DB != 0 {
            // SAFETY: `name` is the main database's name as SQLite passed it.
            unsafe { open_main(name, label.unwrap_or_default()) }.map(|k| match k {
                Kind::Write { .. } => (k, flags),
                // The replica is read-only: SQLite's pager then refuses writes itself.
                k => (k, (flags & !(open::READWRITE | open::CREATE)) | open::READONLY),
            })
        } else {
            LocalFile::open(label.as_deref(), flags).map(|f| (Kind::Local(f), flags))
        };
        match opened {
            Ok((kind, granted)) => {
                let state = Box::into_raw(Box::new(FileState { kind, poisoned: false }));
                // SAFETY: `file` has room for a FileWrapper (szOsFile = SIZE).
                unsafe {
                    file.cast::<FileWrapper>().write(FileWrapper { base: sqlite3_file { pMethods: &METHODS }, state })
                };
                if !out_flags.is_null() {
                    // SAFETY: non-null out-parameter from SQLite.
                    unsafe { *out_flags = granted };
                }
                rc::OK
            }
            Err(e) => report("xOpen", &e),
        }
    })
}

/// # Safety
/// `name` is the main database's name as SQLite passed it to `xOpen`.
unsafe fn open_main(name: *const c_char, label: String) -> Result<Kind> {
    let config = crate::config::process_config()?;
    // SAFETY: forwarded contract.
    let settings = config.for_database(&label, |k| unsafe { host::uri_parameter(name, k) })?;
    let open_error = |source| Error::Open {
        db: label.clone(),
        replica: sluice_storage::redact_url(&settings.url),
        source: Box::new(source),
    };
    if settings.write.enabled {
        // An empty replica is a new database in write mode.
        let claim = NameClaim::claim(&label, &settings.url, true)?;
        let replica = Replica::open_shared_hydrated(&settings.url, settings.read, true, &settings.hydration)
            .map_err(open_error)?;
        match WriterRef::acquire(&label, &settings, replica.clone()) {
            Ok((w, owner)) => {
                tracing::info!("opened {label} for writing on replica {}", replica.description());
                return Ok(Kind::Write { file: Box::new(WriteFile::new(w, owner, label)), _held: Held::new(claim) });
            }
            // Another writer has the replica: this connection reads it, and its writes fail
            // with SQLITE_READONLY; the log names the holder.
            Err(e @ Error::WriterConflict { .. }) => {
                tracing::warn!(target: "sluice_vfs", "{e}; {label} is opened read-only");
                drop(claim);
                let claim = NameClaim::claim(&label, &settings.url, false)?;
                return Ok(Kind::Db { file: Box::new(DbFile::new(replica, label)), _held: Held::new(claim) });
            }
            Err(e) => return Err(e),
        }
    }
    let claim = NameClaim::claim(&label, &settings.url, false)?;
    let replica =
        Replica::open_shared_hydrated(&settings.url, settings.read, false, &settings.hydration).map_err(open_error)?;
    tracing::info!("opened {label} on replica {}", replica.description());
    Ok(Kind::Db { file: Box::new(DbFile::new(replica, label)), _held: Held::new(claim) })
}

/// Our state of `file`, if it is one of ours.
///
/// # Safety
/// `file` is a file SQLite opened through our VFS or got from `SQLITE_FCNTL_FILE_POINTER`;
/// the caller holds SQLite's guarantee that no other call uses it at the same time.
pub unsafe fn state<'a>(file: *mut sqlite3_file) -> Option<&'a mut FileState> {
    // SAFETY: reading pMethods of a live sqlite3_file.
    if file.is_null() || !ptr::eq(unsafe { (*file).pMethods }, &METHODS) {
        return None;
    }
    // SAFETY: our methods table means our wrapper, whose state is live until xClose.
    unsafe { (*file.cast::<FileWrapper>()).state.as_mut() }
}

/// Runs `f` on the file's state, guarded: errors are reported, a panic poisons the file.
fn with_file(file: *mut sqlite3_file, what: &'static str, f: impl FnOnce(&mut Kind) -> Result<c_int>) -> c_int {
    // SAFETY: SQLite calls the methods of an open file one at a time.
    let Some(st) = (unsafe { state(file) }) else {
        return rc::MISUSE;
    };
    if st.poisoned {
        return rc::IOERR;
    }
    match catch_unwind(AssertUnwindSafe(|| f(&mut st.kind))) {
        Ok(Ok(code)) => code,
        Ok(Err(e)) => report(what, &e),
        Err(payload) => {
            st.poisoned = true;
            log_panic(what, payload.as_ref());
            rc::IOERR
        }
    }
}

fn offset(o: sqlite3_int64) -> Result<u64> {
    u64::try_from(o).map_err(|_| Error::Host(format!("negative file offset {o}")))
}

fn outcome(o: ReadOutcome) -> c_int {
    match o {
        ReadOutcome::Full => rc::OK,
        ReadOutcome::Short => rc::IOERR_SHORT_READ,
    }
}

unsafe extern "C" fn x_close(file: *mut sqlite3_file) -> c_int {
    guard("xClose", rc::IOERR, || {
        // SAFETY: SQLite closes an open file once; no other call runs on it.
        if unsafe { state(file) }.is_none() {
            return rc::OK;
        }
        // SAFETY: ours (checked above); the state pointer came from Box::into_raw in x_open.
        let st = unsafe { Box::from_raw((*file.cast::<FileWrapper>()).state) };
        // SAFETY: as above; clearing makes a second close harmless.
        unsafe {
            (*file.cast::<FileWrapper>()).state = ptr::null_mut();
            (*file).pMethods = ptr::null();
        }
        drop(st);
        rc::OK
    })
}

unsafe extern "C" fn x_read(file: *mut sqlite3_file, buf: *mut c_void, amt: c_int, ofs: sqlite3_int64) -> c_int {
    let len = if buf.is_null() { 0 } else { usize::try_from(amt).unwrap_or(0) };
    let buf: &mut [u8] = if len == 0 {
        &mut []
    } else {
        // SAFETY: SQLite passes `amt` writable bytes at a non-null `buf`.
        unsafe { std::slice::from_raw_parts_mut(buf.cast::<u8>(), len) }
    };
    with_file(file, "xRead", |k| {
        let o = offset(ofs)?;
        Ok(outcome(match k {
            Kind::Db { file: db, .. } => db.read(o, buf)?,
            Kind::Write { file: w, .. } => w.read(o, buf)?,
            Kind::Local(f) => f.read(o, buf)?,
        }))
    })
}

unsafe extern "C" fn x_write(file: *mut sqlite3_file, buf: *const c_void, amt: c_int, ofs: sqlite3_int64) -> c_int {
    let len = if buf.is_null() { 0 } else { usize::try_from(amt).unwrap_or(0) };
    let buf: &[u8] = if len == 0 {
        &[]
    } else {
        // SAFETY: SQLite passes `amt` readable bytes at a non-null `buf`.
        unsafe { std::slice::from_raw_parts(buf.cast::<u8>(), len) }
    };
    with_file(file, "xWrite", |k| match k {
        Kind::Db { file: db, .. } => Err(Error::ReadOnly { db: db.name().to_string(), what: "write" }),
        Kind::Write { file: w, .. } => w.write(offset(ofs)?, buf).map(|()| rc::OK),
        Kind::Local(f) => f.write(offset(ofs)?, buf).map(|()| rc::OK),
    })
}

unsafe extern "C" fn x_truncate(file: *mut sqlite3_file, size: sqlite3_int64) -> c_int {
    with_file(file, "xTruncate", |k| match k {
        Kind::Db { file: db, .. } => Err(Error::ReadOnly { db: db.name().to_string(), what: "truncate" }),
        Kind::Write { file: w, .. } => w.truncate(offset(size)?).map(|()| rc::OK),
        Kind::Local(f) => f.truncate(offset(size)?).map(|()| rc::OK),
    })
}

unsafe extern "C" fn x_sync(file: *mut sqlite3_file, _flags: c_int) -> c_int {
    with_file(file, "xSync", |k| match k {
        Kind::Db { .. } => Ok(rc::OK), // Nothing is ever written to it.
        // Commits reach the buffer's disk at the commit point (the unlock), fsynced there
        // with SLUICE_BUFFER_FSYNC=commit; nothing is durable earlier.
        Kind::Write { .. } => Ok(rc::OK),
        Kind::Local(f) => f.sync().map(|()| rc::OK),
    })
}

unsafe extern "C" fn x_file_size(file: *mut sqlite3_file, out: *mut sqlite3_int64) -> c_int {
    with_file(file, "xFileSize", |k| {
        let size = match k {
            Kind::Db { file: db, .. } => db.file_size(),
            Kind::Write { file: w, .. } => w.file_size(),
            Kind::Local(f) => f.size()?,
        };
        // SAFETY: SQLite passes a writable i64. Sizes are below 2^63 (u32 pages × 64 KiB).
        unsafe { *out = size as sqlite3_int64 };
        Ok(rc::OK)
    })
}

unsafe extern "C" fn x_lock(file: *mut sqlite3_file, level: c_int) -> c_int {
    with_file(file, "xLock", |k| match k {
        Kind::Db { file: db, .. } => db.lock(level).map(|()| rc::OK),
        Kind::Write { file: w, .. } => w.lock(level).map(|()| rc::OK),
        Kind::Local(_) => Ok(rc::OK), // Private to this connection.
    })
}

unsafe extern "C" fn x_unlock(file: *mut sqlite3_file, level: c_int) -> c_int {
    with_file(file, "xUnlock", |k| match k {
        Kind::Db { file: db, .. } => db.unlock(level).map(|()| rc::OK),
        Kind::Write { file: w, .. } => w.unlock(level).map(|()| rc::OK),
        Kind::Local(_) => Ok(rc::OK),
    })
}

unsafe extern "C" fn x_check_reserved_lock(file: *mut sqlite3_file, out: *mut c_int) -> c_int {
    with_file(file, "xCheckReservedLock", |k| {
        // Only write-mode connections of this process can hold RESERVED.
        let reserved = matches!(k, Kind::Write { file: w, .. } if w.reserved());
        // SAFETY: SQLite passes a writable int.
        unsafe { *out = c_int::from(reserved) };
        Ok(rc::OK)
    })
}

unsafe extern "C" fn x_file_control(file: *mut sqlite3_file, op: c_int, arg: *mut c_void) -> c_int {
    with_file(file, "xFileControl", |k| match op {
        // SAFETY: for SQLITE_FCNTL_PRAGMA, `arg` is SQLite's `char *azArg[3]`.
        fcntl::PRAGMA if !matches!(k, Kind::Local(_)) => Ok(unsafe { pragma_control(k, arg.cast()) }),
        _ => Ok(rc::NOTFOUND),
    })
}

/// `SQLITE_FCNTL_PRAGMA`: `az[1]` is the name, `az[2]` the value or null; the answer or an
/// error message goes to `az[0]` (SQLite frees it).
///
/// # Safety
/// `az` is the three-slot array SQLite passes with `SQLITE_FCNTL_PRAGMA`.
unsafe fn pragma_control(file: &mut Kind, az: *mut *mut c_char) -> c_int {
    // SAFETY: slots 1 and 2 hold null or NUL-terminated strings owned by SQLite.
    let (name, value) = unsafe {
        let text = |p: *mut c_char| (!p.is_null()).then(|| CStr::from_ptr(p).to_string_lossy().into_owned());
        (text(*az.add(1)), text(*az.add(2)))
    };
    let Some(cmd) = name.as_deref().and_then(|n| pragma::parse_pragma(n, value.as_deref())) else {
        return rc::NOTFOUND;
    };
    let (code, text) = match execute(file, &cmd) {
        Ok(pragma::Answer::Pass) => return rc::NOTFOUND,
        Ok(answer) => (rc::OK, answer.pragma_text()),
        Err(e) => (report("PRAGMA", &e), Some(e.to_string())),
    };
    if let Some(t) = text {
        // SAFETY: slot 0 is SQLite's out-parameter for a sqlite3_malloc'ed string.
        unsafe { *az = host::sqlite_string(&t) };
    }
    code
}

/// Runs a PRAGMA or SQL function's command on the main database file.
pub fn execute(file: &mut Kind, cmd: &pragma::Command) -> Result<pragma::Answer> {
    match file {
        Kind::Db { file: db, .. } => pragma::execute(db, cmd),
        Kind::Write { file: w, .. } => pragma::execute_write(w, cmd),
        Kind::Local(_) => Err(Error::Host("not a main database".into())),
    }
}

unsafe extern "C" fn x_sector_size(_file: *mut sqlite3_file) -> c_int {
    4096
}

unsafe extern "C" fn x_device_characteristics(_file: *mut sqlite3_file) -> c_int {
    iocap::POWERSAFE_OVERWRITE
}
