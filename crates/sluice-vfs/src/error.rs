//! The extension's errors, and the one function that turns them into SQLite result codes.

use std::path::PathBuf;

use crate::codes::rc;

/// Errors of the VFS: each names the setting, replica, page or path involved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No replica URL in the environment nor in the database URI.
    #[error(
        "no replica URL for {db}: set SLUICE_REPLICA_URL (or LITESTREAM_REPLICA_URL), or open \
         file:{db}?vfs=sluice&replica=<url>"
    )]
    NoReplicaUrl {
        /// The database name SQLite opened.
        db: String,
    },
    /// A setting has a value the extension cannot use.
    #[error("invalid {key}={value:?}: {reason}")]
    Config {
        /// The environment variable or URI parameter.
        key: String,
        /// What was given.
        value: String,
        /// What is wrong.
        reason: String,
    },
    /// The replica could not be opened (missing, empty, unreachable, damaged).
    #[error("cannot open replica {replica} for {db}: {source}")]
    Open {
        /// The database name SQLite opened.
        db: String,
        /// Redacted replica URL.
        replica: String,
        /// Why.
        #[source]
        source: Box<sluice_engine::Error>,
    },
    /// A page could not be read (storage failure, deadline, damaged file).
    #[error("reading page {pgno} of TXID {txid:016x} from replica {replica}: {source}")]
    Read {
        /// Redacted replica URL.
        replica: String,
        /// The page.
        pgno: u32,
        /// The view's TXID.
        txid: u64,
        /// Why.
        #[source]
        source: Box<sluice_engine::Error>,
    },
    /// The replica is read-only in this mode.
    #[error("{what} on {db}: the sluice VFS is read-only")]
    ReadOnly {
        /// The database.
        db: String,
        /// The refused operation.
        what: &'static str,
    },
    /// A time-travel target could not be parsed or planned.
    #[error("cannot read replica {replica} as of {input:?}: {source}")]
    TimeTravel {
        /// Redacted replica URL.
        replica: String,
        /// The time as given.
        input: String,
        /// Why.
        #[source]
        source: Box<sluice_engine::Error>,
    },
    /// A lock transition SQLite never asks for (a bug in the caller or here).
    #[error("invalid lock transition on {db}: {from} -> {to}")]
    LockTransition {
        /// The database.
        db: String,
        /// Held level.
        from: i32,
        /// Requested level.
        to: i32,
    },
    /// A local journal or temporary file operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The local path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Another connection of this process holds a conflicting lock (SQLite retries through
    /// its busy handler).
    #[error("{db} on replica {replica}: locked by another connection of this process")]
    Busy {
        /// The database.
        db: String,
        /// Redacted replica URL.
        replica: String,
    },
    /// Write mode could not take the replica: another writer holds it.
    #[error("{db}: write mode refused: {source}")]
    WriterConflict {
        /// The database.
        db: String,
        /// The engine's conflict, naming the holder.
        #[source]
        source: Box<sluice_engine::Error>,
    },
    /// A write-mode operation failed (the buffer is full, a disk error, a sync).
    #[error("{op} on {db} (replica {replica}): {source}")]
    Write {
        /// The database.
        db: String,
        /// Redacted replica URL.
        replica: String,
        /// What was being done.
        op: &'static str,
        /// Why.
        #[source]
        source: Box<sluice_engine::Error>,
    },
    /// A database name this process uses for another replica or mode (journals are named
    /// after the database).
    #[error(
        "cannot open {db}: the name is {reason}; give each replica written through the VFS its own \
         database name (file:<name>?vfs=sluice&…)"
    )]
    NameInUse {
        /// The database name.
        db: String,
        /// Who has it.
        reason: String,
    },
    /// The host's SQLite lacks something the extension needs.
    #[error("host SQLite: {0}")]
    Host(String),
    /// A callback panicked; the panic was caught at the C boundary.
    #[error("internal error (panic caught) in {0}")]
    Panic(&'static str),
}

/// `Result` with the extension's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A local file operation `op` on `path` failed.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { op, path: path.into(), source }
    }

    /// The SQLite result code for this error: the only place codes are chosen.
    ///
    /// Remote read failures and deadlines are I/O errors of the read (`SQLITE_IOERR_READ`), so
    /// the statement fails and the connection stays usable; writes are `SQLITE_READONLY`;
    /// anything that stops a database from opening is `SQLITE_CANTOPEN`.
    pub fn sqlite_code(&self) -> i32 {
        match self {
            // Settings are read when a database opens (or the extension loads, where the
            // message matters more than the code).
            Error::NoReplicaUrl { .. } | Error::Open { .. } | Error::Config { .. } | Error::NameInUse { .. } => {
                rc::CANTOPEN
            }
            Error::TimeTravel { .. } => rc::ERROR,
            Error::Read { .. } => rc::IOERR_READ,
            Error::ReadOnly { .. } => rc::READONLY,
            Error::Busy { .. } => rc::BUSY,
            Error::WriterConflict { .. } => rc::READONLY,
            Error::Write { source, .. } => match **source {
                sluice_engine::Error::BufferFull { .. } => rc::FULL,
                _ => rc::IOERR_WRITE,
            },
            Error::LockTransition { .. } => rc::IOERR_LOCK,
            Error::Io { op, .. } => match *op {
                "read" => rc::IOERR_READ,
                "write" => rc::IOERR_WRITE,
                "truncate" => rc::IOERR_TRUNCATE,
                "sync" => rc::IOERR_FSYNC,
                "stat" => rc::IOERR_FSTAT,
                "delete" => rc::IOERR_DELETE,
                "open" | "create directory" => rc::CANTOPEN,
                _ => rc::IOERR,
            },
            Error::Host(_) => rc::ERROR,
            Error::Panic(_) => rc::IOERR,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_failures_are_read_io_errors_and_writes_are_readonly() {
        let read = Error::Read {
            replica: "s3://b/p".into(),
            pgno: 7,
            txid: 3,
            source: Box::new(sluice_engine::Error::Task("boom".into())),
        };
        assert_eq!(read.sqlite_code(), rc::IOERR_READ);
        assert_eq!(read.sqlite_code() & 0xff, rc::IOERR, "extended code of SQLITE_IOERR");
        assert!(read.to_string().contains("page 7 of TXID 0000000000000003"), "{read}");
        assert_eq!(Error::ReadOnly { db: "a".into(), what: "write" }.sqlite_code(), rc::READONLY);
        assert_eq!(Error::NoReplicaUrl { db: "a".into() }.sqlite_code(), rc::CANTOPEN);
        let io = Error::io("write", "/tmp/x", std::io::Error::other("full"));
        assert_eq!(io.sqlite_code(), rc::IOERR_WRITE);
    }
}
