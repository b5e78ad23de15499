//! The extension's PRAGMAs and SQL functions, as plain commands on a [`DbFile`].
//!
//! | PRAGMA / function | result |
//! |---|---|
//! | `PRAGMA sluice_time = '<time>'`, `sluice_set_time('<time>')` | pins the connection to that moment (RFC 3339, `'5 minutes ago'`, `'yesterday'`), or `'latest'` to follow the replica again; takes effect at the next transaction |
//! | `PRAGMA sluice_time`, `sluice_time()` | RFC 3339 time (UTC, ms) of the state read |
//! | `PRAGMA sluice_txid`, `sluice_txid()` | its TXID, 16 lower-case hex digits |
//! | `PRAGMA sluice_lag`, `sluice_lag()` | whole seconds since the last successful poll, -1 before the first |
//! | `PRAGMA sluice_hydration_progress`, `sluice_hydration_progress()` | percent of the local copy filled (100: reads are local), -1 without hydration |

use chrono::{DateTime, SecondsFormat, Utc};

use crate::backend::Backend;
use crate::db_file::DbFile;
use crate::engine::parse_time;
use crate::error::{Error, Result};
use crate::write_file::{WriteBackend, WriteFile};
use crate::writers::WriterRef;
use std::time::Duration;

/// A request to the extension.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Time travel to the given time, or back to the latest state.
    SetTime(String),
    /// Report the time of the state read.
    Time,
    /// Report its TXID.
    Txid,
    /// Report the poll lag.
    Lag,
    /// Report hydration progress.
    HydrationProgress,
    /// Write mode: sync now, report the replica's TXID.
    Sync,
    /// Write mode: unsynced transactions and bytes.
    Pending,
    /// Write mode: wait up to this many milliseconds until all commits are in the replica.
    WaitDurable(u64),
    /// Whether this connection writes.
    WriteEnabled,
    /// `PRAGMA locking_mode = EXCLUSIVE`, which write mode refuses (its commits happen at
    /// the unlock, which that mode never does).
    LockingModeExclusive,
}

/// What a command returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Nothing (a setter): the PRAGMA returns no row, the function NULL.
    None,
    /// A text value.
    Text(String),
    /// An integer (the PRAGMA returns it as text).
    Int(i64),
    /// Not the extension's after all: SQLite handles the PRAGMA.
    Pass,
}

impl Answer {
    /// The PRAGMA result text, if any.
    pub fn pragma_text(&self) -> Option<String> {
        match self {
            Answer::None | Answer::Pass => None,
            Answer::Text(s) => Some(s.clone()),
            Answer::Int(i) => Some(i.to_string()),
        }
    }
}

/// The command a PRAGMA `name [= value]` asks for; `None` when the PRAGMA is not the
/// extension's (SQLite then handles it).
pub fn parse_pragma(name: &str, value: Option<&str>) -> Option<Command> {
    match (name.to_ascii_lowercase().as_str(), value) {
        ("sluice_time", Some(v)) => Some(Command::SetTime(v.to_string())),
        ("sluice_time", None) => Some(Command::Time),
        ("sluice_txid", _) => Some(Command::Txid),
        ("sluice_lag", _) => Some(Command::Lag),
        ("sluice_hydration_progress", _) => Some(Command::HydrationProgress),
        ("sluice_write_enabled", _) => Some(Command::WriteEnabled),
        ("sluice_pending", _) => Some(Command::Pending),
        ("locking_mode", Some(v)) if v.trim().eq_ignore_ascii_case("exclusive") => Some(Command::LockingModeExclusive),
        _ => None,
    }
}

/// Runs `cmd` on `file`.
pub fn execute<B: Backend>(file: &mut DbFile<B>, cmd: &Command) -> Result<Answer> {
    Ok(match cmd {
        Command::SetTime(input) => {
            let target = parse_time(input.trim(), Utc::now()).map_err(|source| Error::TimeTravel {
                replica: file.backend().description().to_string(),
                input: input.clone(),
                source: Box::new(source),
            })?;
            file.set_target(target, input)?;
            Answer::None
        }
        Command::Time => Answer::Text(format_time(file.status().view.timestamp_ms)),
        Command::Txid => Answer::Text(format!("{:016x}", file.status().view.txid)),
        Command::Lag => {
            Answer::Int(file.backend().lag().map_or(-1, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)))
        }
        Command::HydrationProgress => Answer::Int(file.backend().hydration_progress().map_or(-1, i64::from)),
        Command::WriteEnabled => Answer::Int(0),
        // Read mode never writes: exclusive locking changes nothing.
        Command::LockingModeExclusive => return Ok(Answer::Pass),
        Command::Sync | Command::Pending | Command::WaitDurable(_) => {
            return Err(Error::ReadOnly { db: file.name().to_string(), what: "sync (write mode is off)" });
        }
    })
}

/// Runs `cmd` on a write-mode file.
pub fn execute_write(file: &mut WriteFile<WriterRef>, cmd: &Command) -> Result<Answer> {
    let w = file.backend();
    let write_error = |op, source| Error::Write {
        db: file.name().to_string(),
        replica: w.description().to_string(),
        op,
        source: Box::new(source),
    };
    Ok(match cmd {
        Command::SetTime(_) => {
            return Err(Error::ReadOnly {
                db: file.name().to_string(),
                what: "time travel (write mode reads the latest state)",
            });
        }
        Command::Time => Answer::Text(format_time(w.replica().latest().timestamp_ms)),
        Command::Txid => Answer::Text(format!("{:016x}", w.replica().latest().txid.0)),
        // The writer refreshes its view itself: never behind.
        Command::Lag => Answer::Int(0),
        Command::HydrationProgress => Answer::Int(w.replica().hydration_progress().map_or(-1, i64::from)),
        Command::WriteEnabled => Answer::Int(1),
        Command::Sync => {
            Answer::Text(format!("{:016x}", w.session().sync_now().map_err(|e| write_error("sync", e))?.0))
        }
        Command::Pending => {
            let (txns, bytes) = w.session().pending();
            Answer::Text(format!("{txns} {bytes}"))
        }
        Command::WaitDurable(ms) => Answer::Int(i64::from(w.session().wait_durable(Duration::from_millis(*ms)))),
        Command::LockingModeExclusive => {
            return Err(Error::Host(format!(
                "{}: PRAGMA locking_mode=EXCLUSIVE is not supported in write mode (transactions commit when \
                 SQLite unlocks the database, which that mode never does)",
                file.name()
            )));
        }
    })
}

/// RFC 3339 in UTC with milliseconds, as `sluice restore --timestamp` accepts it.
pub fn format_time(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map_or_else(|| format!("{ms}ms"), |t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_extensions_pragmas_are_claimed() {
        assert_eq!(parse_pragma("SLUICE_TIME", None), Some(Command::Time));
        assert_eq!(parse_pragma("sluice_time", Some("latest")), Some(Command::SetTime("latest".into())));
        assert_eq!(parse_pragma("sluice_txid", None), Some(Command::Txid));
        assert_eq!(parse_pragma("sluice_lag", None), Some(Command::Lag));
        assert_eq!(parse_pragma("journal_mode", Some("wal")), None);
        assert_eq!(parse_pragma("litestream_txid", None), None);
    }

    #[test]
    fn times_are_rfc3339_utc_with_milliseconds() {
        assert_eq!(format_time(1_795_689_439_292), "2026-11-26T10:37:19.292Z");
        assert_eq!(Answer::Int(-1).pragma_text().as_deref(), Some("-1"));
        assert_eq!(Answer::None.pragma_text(), None);
    }
}
