//! The SQLite constants the extension uses (values from `sqlite3.h`, stable across releases).
//!
//! Kept apart from the FFI declarations so that the safe modules (the error mapping, the lock
//! state machine) can use them without touching `ffi`.

/// Result codes.
pub mod rc {
    pub const OK: i32 = 0;
    pub const ERROR: i32 = 1;
    pub const BUSY: i32 = 5;
    pub const READONLY: i32 = 8;
    pub const IOERR: i32 = 10;
    pub const NOTFOUND: i32 = 12;
    pub const FULL: i32 = 13;
    pub const CANTOPEN: i32 = 14;
    pub const MISUSE: i32 = 21;
    /// `SQLITE_IOERR_READ`.
    pub const IOERR_READ: i32 = IOERR | (1 << 8);
    /// `SQLITE_IOERR_SHORT_READ`: the caller zero-fills past the end of the file.
    pub const IOERR_SHORT_READ: i32 = IOERR | (2 << 8);
    /// `SQLITE_IOERR_WRITE`.
    pub const IOERR_WRITE: i32 = IOERR | (3 << 8);
    /// `SQLITE_IOERR_FSYNC`.
    pub const IOERR_FSYNC: i32 = IOERR | (4 << 8);
    /// `SQLITE_IOERR_TRUNCATE`.
    pub const IOERR_TRUNCATE: i32 = IOERR | (6 << 8);
    /// `SQLITE_IOERR_FSTAT`.
    pub const IOERR_FSTAT: i32 = IOERR | (7 << 8);
    /// `SQLITE_IOERR_DELETE`.
    pub const IOERR_DELETE: i32 = IOERR | (10 << 8);
    /// `SQLITE_IOERR_LOCK`.
    pub const IOERR_LOCK: i32 = IOERR | (15 << 8);
    /// `SQLITE_OK_LOAD_PERMANENTLY`: an extension's entry point asks not to be unloaded.
    pub const OK_LOAD_PERMANENTLY: i32 = OK | (1 << 8);
}

/// `xOpen` flags.
pub mod open {
    pub const READONLY: i32 = 0x0000_0001;
    pub const READWRITE: i32 = 0x0000_0002;
    pub const CREATE: i32 = 0x0000_0004;
    pub const DELETEONCLOSE: i32 = 0x0000_0008;
    pub const EXCLUSIVE: i32 = 0x0000_0010;
    pub const MAIN_DB: i32 = 0x0000_0100;
}

/// Lock levels of `xLock`/`xUnlock`.
pub mod lock {
    pub const NONE: i32 = 0;
    pub const SHARED: i32 = 1;
    pub const RESERVED: i32 = 2;
    pub const PENDING: i32 = 3;
    pub const EXCLUSIVE: i32 = 4;
}

/// `xFileControl` opcodes.
pub mod fcntl {
    /// `SQLITE_FCNTL_PRAGMA`: a PRAGMA the VFS may answer.
    pub const PRAGMA: i32 = 14;
    /// `SQLITE_FCNTL_FILE_POINTER` (`sqlite3_file_control`): the `sqlite3_file*` of a database.
    pub const FILE_POINTER: i32 = 7;
    /// `SQLITE_FCNTL_VFS_POINTER` (`sqlite3_file_control`): the `sqlite3_vfs*` of a database.
    pub const VFS_POINTER: i32 = 27;
}

/// `xDeviceCharacteristics` bits.
pub mod iocap {
    /// Writes to one sector never damage neighbouring bytes (true of every local file system
    /// SQLite cares about; for the remote main database nothing is ever written).
    pub const POWERSAFE_OVERWRITE: i32 = 0x0000_1000;
}

/// Text encodings and function flags of `sqlite3_create_function_v2`.
pub mod func {
    pub const UTF8: i32 = 1;
    /// Not callable from triggers, views or schema (SQLite ≥ 3.31).
    pub const DIRECTONLY: i32 = 0x0008_0000;
}

/// `sqlite3_value_type` results.
pub mod value {
    pub const NULL: i32 = 5;
}
