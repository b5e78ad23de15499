//! Engine errors: each names the file, TXID or path involved.

use std::path::PathBuf;

use sluice_ltx::TxId;

/// Errors from restore and replication.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The replica could not be read or written.
    #[error(transparent)]
    Storage(#[from] sluice_storage::Error),
    /// An LTX file in the replica is damaged or invalid.
    #[error("{file}: {source}")]
    Ltx {
        /// The file, as `<level>/<name>`.
        file: String,
        /// What is wrong with it.
        #[source]
        source: sluice_ltx::Error,
    },
    /// The replica holds no LTX files at all.
    #[error("replica {replica} is empty: no LTX files in any level")]
    EmptyReplica {
        /// Redacted replica URL.
        replica: String,
    },
    /// No file chain ends exactly at the requested TXID.
    #[error("TXID {txid} is not restorable: {reason}")]
    TxidNotAvailable {
        /// The requested TXID.
        txid: TxId,
        /// Why, including the replica's latest TXID where known.
        reason: String,
    },
    /// The requested time lies outside the replica's history.
    #[error("timestamp {ts} is outside the replica's history ({earliest} .. {latest})")]
    TimestampOutOfRange {
        /// Requested time.
        ts: String,
        /// Oldest file time.
        earliest: String,
        /// Newest file time.
        latest: String,
    },
    /// No file was created before the requested time.
    #[error("no backup files before {ts}")]
    NothingBefore {
        /// Requested time.
        ts: String,
    },
    /// The chain does not start with a snapshot.
    #[error("restore plan starts at TXID {first}, not with a snapshot (TXID 0000000000000001)")]
    NoSnapshot {
        /// First TXID the plan would apply.
        first: TxId,
    },
    /// Files leave a gap in the TXID sequence.
    #[error("non-contiguous LTX files: chain ends at {after}, next file {next} starts at {next_min}")]
    Gap {
        /// Last TXID the chain reaches.
        after: TxId,
        /// The next file, `<level>/<name>`.
        next: String,
        /// Its first TXID.
        next_min: TxId,
    },
    /// A file's header disagrees with its name or with the chain.
    #[error("{file}: {reason}")]
    FileMismatch {
        /// The file, `<level>/<name>`.
        file: String,
        /// What disagrees.
        reason: String,
    },
    /// A rolling database checksum in the chain does not match the applied pages.
    #[error("{file}: {which} database checksum mismatch: stored {expected:016x}, computed {actual:016x}")]
    ChecksumChain {
        /// The file, `<level>/<name>`.
        file: String,
        /// `pre-apply` or `post-apply`.
        which: &'static str,
        /// Stored value.
        expected: u64,
        /// Computed value.
        actual: u64,
    },
    /// The restored image lacks a page that no file provided.
    #[error("restored database is missing page {pgno} of {commit}")]
    MissingPage {
        /// Missing page.
        pgno: u32,
        /// Final size in pages.
        commit: u32,
    },
    /// A kept hydration file is in use by another process, or in this one by another
    /// replica or other read settings.
    #[error("hydration file {path} is in use by {holder} (each kept file serves one replica in one process)")]
    HydrationInUse {
        /// The hydration file.
        path: PathBuf,
        /// Who holds it.
        holder: &'static str,
    },
    /// The output already exists.
    #[error("output {path} already exists; refusing to overwrite it")]
    OutputExists {
        /// The output path.
        path: PathBuf,
    },
    /// A local file operation failed.
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
    /// Another writer is replicating to the same replica.
    #[error("replica {replica}: {reason}")]
    Conflict {
        /// Redacted replica URL.
        replica: String,
        /// What was found.
        reason: String,
    },
    /// SQLite committed WAL frames that replication could not capture.
    #[error("{db}: committed transactions are not being replicated: {reason}")]
    Uncaptured {
        /// The database.
        db: PathBuf,
        /// What the WAL index says was committed and why it was not read.
        reason: String,
    },
    /// A read of the replica did not finish within its deadline.
    #[error("reading {what} from replica {replica} took longer than {after:?}; giving up")]
    ReadTimeout {
        /// Redacted replica URL.
        replica: String,
        /// What was being read.
        what: String,
        /// The deadline.
        after: std::time::Duration,
    },
    /// A page within the database size is in no file of the plan.
    #[error("page {pgno} of TXID {txid} is in no file of replica {replica}")]
    PageNotInReplica {
        /// The page.
        pgno: u32,
        /// The view's TXID.
        txid: TxId,
        /// Redacted replica URL.
        replica: String,
    },
    /// A time or TXID given by a user could not be understood.
    #[error("cannot parse time {input:?}: {reason}")]
    BadTime {
        /// What was given.
        input: String,
        /// What is wrong.
        reason: String,
    },
    /// The write buffer reached its size limit (storage has been unreachable for long).
    #[error(
        "write buffer {path} is full ({limit} bytes, SLUICE_BUFFER_MAX): writes wait until syncs reach the replica"
    )]
    BufferFull {
        /// The buffer.
        path: PathBuf,
        /// The limit.
        limit: u64,
    },
    /// Replication stopped before the replica ever answered.
    #[error("stopped before the replica could be reached, nothing was replicated: {0}")]
    NeverConnected(Box<Error>),
    /// The database is not there (yet): replication waits for it.
    #[error("{db} does not exist or is not yet a SQLite database; replication starts when it is")]
    DatabaseMissing {
        /// The database.
        db: PathBuf,
    },
    /// The database was recreated with another page size than the history in its replica.
    #[error(
        "{db} was recreated with page size {now}, but its replica holds history of page size {was}; \
         replicate it to a new replica (or remove the old replica's files), then restart"
    )]
    PageSizeChanged {
        /// The database.
        db: PathBuf,
        /// Page size of the database replicated before.
        was: u32,
        /// Page size of the new database.
        now: u32,
    },
    /// The database file (or its WAL or WAL index) was rewritten outside SQLite while being
    /// replicated: restored over in place, say. Its WAL position means nothing any more.
    #[error("{db} was replaced in place while replicating: {reason}")]
    ReplacedInPlace {
        /// The database.
        db: PathBuf,
        /// What gave it away.
        reason: String,
    },
    /// The local files waiting for upload (in the meta directory) are damaged or missing,
    /// so they no longer continue the replica: uploading them would leave a gap or fork.
    #[error("local replication state in {dir} is damaged: {reason}")]
    LocalState {
        /// The directory of local level-0 files.
        dir: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// `restore --follow` cannot continue its output from the replica.
    #[error(
        "cannot continue {path} (at TXID {txid}) from replica {replica}: {reason}; \
         delete it and its -txid file to restore again"
    )]
    FollowBroken {
        /// The output database.
        path: PathBuf,
        /// TXID the output was at.
        txid: TxId,
        /// Redacted replica URL.
        replica: String,
        /// Why.
        reason: String,
    },
    /// A `<db>-txid` sidecar does not hold a TXID.
    #[error("{path} does not hold a TXID (16 hex digits): {content:?}")]
    BadTxidFile {
        /// The sidecar.
        path: PathBuf,
        /// What it holds (start of).
        content: String,
    },
    /// A file that should be a SQLite database is not one.
    #[error("{path} is not a SQLite database (bad header or size)")]
    NotADatabase {
        /// The file.
        path: PathBuf,
    },
    /// A background task panicked or was cancelled.
    #[error("internal task failed: {0}")]
    Task(String),
}

/// `Result` with the engine's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A local file operation `op` on `path` failed.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { op, path: path.into(), source }
    }
}
