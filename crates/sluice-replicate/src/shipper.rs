//! The WAL shipper: turns newly committed WAL frames into local L0 files, builds full images,
//! and runs checkpoints only after the frames they discard are captured. Synchronous; one
//! thread per database owns its SQLite connections.
//!
//! Why no frame is ever lost: a read transaction of ours is always open, and we move it
//! forward by opening the next one *before* closing the previous. An open read transaction
//! stops SQLite from restarting the WAL past frames it might need, so frames can only be
//! overwritten after we have read them. Full checkpoints happen under a brief write barrier,
//! after reading every frame, so the restart that follows discards nothing unread.

use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::Connection;
use sluice_ltx::{Header, TxId, lock_pgno};

use crate::conn::{eager_busy, open_conn, sqlite_err};
use crate::shm;
use crate::wal::{self, FRAME_HEADER_SIZE, WAL_HEADER_SIZE, WalHeader};
use sluice_engine::error::{Error, Result};
use sluice_engine::perms::Perms;
use sluice_engine::write::local::MetaDir;

// Checkpoints and the write barrier, and snapshots, in their own files.
mod checkpoint;
pub(crate) mod journal;
mod snapshot;
pub(crate) mod stamp;
mod witness;

pub use snapshot::SnapshotView;

/// Where replication stands in the WAL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    /// Last TXID written locally.
    pub txid: TxId,
    /// WAL offset just after the last frame captured.
    pub end: u64,
    /// WAL salts of that generation.
    pub salts: (u32, u32),
    /// Running WAL checksum at `end`.
    pub checksum: (u32, u32),
    /// Database size in pages at `txid`.
    pub commit: u32,
}

/// Knobs of the shipper.
#[derive(Clone, Debug)]
pub struct ShipperOptions {
    /// How long to wait for SQLite locks.
    pub busy_timeout: Duration,
    /// Stop a sync after this many WAL bytes (at a commit boundary); 0 = unlimited.
    pub max_sync_wal_bytes: u64,
    /// Resume from the position of the newest local L0 file when the WAL matches it. False
    /// for a database that replaced the one replicated before: its WAL may never continue
    /// the old history, so its first sync writes a full image.
    pub resume: bool,
}

/// What a sync produced.
#[derive(Clone, Debug)]
pub struct Synced {
    /// The new local L0 file's header.
    pub header: Header,
    /// Pages in it.
    pub pages: usize,
    /// Whether it holds every page (a "snapshotting" L0).
    pub full: bool,
    /// The sync stopped at the byte limit; more committed frames are waiting.
    pub more: bool,
}

/// Result of a checkpoint attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Checkpoint {
    /// The write barrier could not be taken within the busy timeout (the app is writing).
    Busy,
    /// The WAL was fully copied into the database; SQLite restarts it on the next write.
    Done {
        /// WAL frames at the time.
        frames: u64,
    },
    /// Only part of the WAL could be copied (another reader holds an older snapshot).
    Partial,
}

/// Replicates one database into its meta directory.
pub struct Shipper {
    db_path: PathBuf,
    wal_path: PathBuf,
    meta: MetaDir,
    readers: [Connection; 2],
    active: usize,
    barrier: Connection,
    db_file: Arc<File>,
    /// The read transaction that pins a snapshot's position while it is encoded elsewhere.
    snap_reader: Connection,
    page_size: u32,
    opts: ShipperOptions,
    pos: Option<Position>,
    /// Latest committed frame per page in the current WAL generation, up to `pos.end`.
    wal_map: HashMap<u32, u64>,
    /// Salts of the generation `wal_map` points into.
    wal_salts: (u32, u32),
    /// The WAL header last read frames from (the journal records its checkpoint sequence).
    wal_header: Option<WalHeader>,
    /// Next TXID never to go below (the replica's max + 1).
    floor: TxId,
    /// Set after the first sync of this process: from then on every WAL restart happened
    /// after we read the whole old WAL (see the module comment), so it needs no snapshot.
    running: bool,
    /// Frames read but not yet written to a local file (see [`Deferred`]).
    deferred: Option<Deferred>,
    /// The WAL file was missing at the last sync (warned once).
    wal_missing: bool,
    /// Committed frames read since the shipper opened, across WAL generations.
    frames_read: u64,
    /// SQLite's WAL index, open for good: closing a descriptor of it would drop this
    /// process's POSIX locks on it, which are our read locks.
    shm: Option<File>,
    shm_path: PathBuf,
    /// The files as of the last read-lock move, to notice a rewrite in place.
    witness: Option<witness::Witness>,
    /// TXID of the last quiet stamp written (see [`stamp`]).
    stamped: Option<TxId>,
}

/// Pages changed by frames read but not yet written to a local file. Checkpoints only read
/// ahead; one local file per sync interval holds everything read since the last one, across
/// WAL restarts, instead of a file (and fsyncs) per checkpoint.
///
/// Writing it later is exact because our read mark never passes the position (see
/// [`Shipper::handoff`]): no checkpoint can have copied a frame past the position into the
/// database file, so a page read from the current WAL generation's frames up to the position,
/// or else from the database file, is the page as of the position. Pages of earlier
/// generations are in the database file: a restart needs every frame copied first.
struct Deferred {
    /// WAL offset and salts where the span starts (a later generation's frames start at its header).
    start: u64,
    salts: (u32, u32),
    /// Database size before the span (pages it grew by are included).
    prev_commit: u32,
    pgnos: HashSet<u32>,
}

impl Shipper {
    /// Opens the database (which must exist; converting it to WAL mode, as Litestream does),
    /// takes the first read lock and recovers the local position. `remote_max` is the
    /// replica's highest TXID.
    pub fn open(db_path: &Path, meta_root: PathBuf, remote_max: TxId, opts: ShipperOptions) -> Result<Self> {
        let first = open_conn(db_path, opts.busy_timeout)?;
        let meta = MetaDir::open(meta_root, Perms::of_db(db_path)?)?;
        let was: String = first
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .map_err(|e| sqlite_err("read journal mode of", db_path, e))?;
        if !was.eq_ignore_ascii_case("wal") {
            // Replication reads the WAL. A lasting change to the application's database, so
            // it is said (and documented).
            tracing::info!(db = %db_path.display(), from = %was, "switching the database to WAL journal mode");
        }
        let mode: String = first
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .map_err(|e| sqlite_err("set WAL mode on", db_path, e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(Error::io(
                "set WAL mode on",
                db_path,
                std::io::Error::other(format!("journal mode is {mode}")),
            ));
        }
        let page_size: u32 = first
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .map_err(|e| sqlite_err("read page size of", db_path, e))?;
        let readers = [first, open_conn(db_path, opts.busy_timeout)?];
        let mut barrier = open_conn(db_path, opts.busy_timeout)?;
        barrier.busy_handler(Some(eager_busy(opts.busy_timeout))).map_err(|e| sqlite_err("configure", db_path, e))?;
        let snap_reader = open_conn(db_path, opts.busy_timeout)?;
        // Shared, never closed before the shipper: closing any descriptor of the database
        // file would drop this process's POSIX locks on it.
        let db_file = Arc::new(File::open(db_path).map_err(|e| Error::io("open", db_path, e))?);
        let mut wal_path = db_path.as_os_str().to_owned();
        wal_path.push("-wal");
        let mut shm_path = db_path.as_os_str().to_owned();
        shm_path.push("-shm");
        let shm_path = PathBuf::from(shm_path);
        let mut s = Shipper {
            db_path: db_path.to_path_buf(),
            wal_path: PathBuf::from(wal_path),
            meta,
            readers,
            active: 0,
            barrier,
            db_file,
            snap_reader,
            page_size,
            opts,
            pos: None,
            wal_map: HashMap::default(),
            wal_salts: (0, 0),
            wal_header: None,
            floor: TxId(remote_max.0 + 1),
            running: false,
            deferred: None,
            wal_missing: false,
            frames_read: 0,
            shm: File::open(&shm_path).ok(),
            shm_path,
            witness: None,
            stamped: None,
        };
        s.begin_read(0)?;
        s.recover_position(remote_max)?;
        Ok(s)
    }

    /// The meta directory.
    pub fn meta(&self) -> &MetaDir {
        &self.meta
    }

    /// Page size of the database.
    pub fn page_size(&self) -> u32 {
        self.page_size
    }

    /// The current position, if any.
    pub fn position(&self) -> Option<Position> {
        self.pos
    }

    fn begin_read(&mut self, i: usize) -> Result<()> {
        begin_read(&self.readers[i]).map_err(|e| sqlite_err("begin read transaction on", &self.db_path, e))
    }

    fn end_read(&mut self, i: usize) {
        let _ = self.readers[i].prepare_cached("ROLLBACK").and_then(|mut st| st.execute([]));
    }

    /// Moves our read lock forward without ever dropping it, and never past the position:
    /// the new read transaction may see frames committed since the last read, so those are
    /// read before the old one ends (otherwise a checkpoint could copy them into the
    /// database file before they are captured, and deferred pages read from it later would
    /// be newer than the position).
    fn handoff(&mut self) -> Result<()> {
        let next = 1 - self.active;
        self.begin_read(next)?;
        if let Err(e) = self.catch_up() {
            self.end_read(next);
            return Err(e);
        }
        self.end_read(self.active);
        self.active = next;
        self.note_witness();
        Ok(())
    }

    /// Records the files after moving the read lock (see [`witness`]).
    fn note_witness(&mut self) {
        if self.shm.is_none() {
            // Created by SQLite after we opened: keep it open from now on (see `shm`).
            self.shm = File::open(&self.shm_path).ok();
        }
        if self.witness.as_ref().is_some_and(|w| w.side_file_gone(&self.wal_path, &self.shm_path)) {
            // Deleted under us: keep what they were, so that their return as new files (with
            // the database rewritten meanwhile) is seen as the replacement it is.
            return;
        }
        let fs = FRAME_HEADER_SIZE + u64::from(self.page_size);
        let captured = self.pos.map(|p| (p.salts, p.end.saturating_sub(WAL_HEADER_SIZE) / fs));
        // Unreadable now: no witness, so no false alarm; the next move tries again.
        self.witness =
            witness::Witness::take(&self.db_file, &self.wal_path, &self.shm_path, self.shm.as_ref(), captured).ok();
    }

    /// Fails once the database was rewritten in place since the last capture.
    fn check_in_place(&self) -> Result<()> {
        let Some(w) = &self.witness else { return Ok(()) };
        match w.rewritten(&self.db_file, &self.wal_path, &self.shm_path) {
            Ok(Some(reason)) => Err(Error::ReplacedInPlace { db: self.db_path.clone(), reason }),
            Ok(None) => Ok(()),
            Err(e) => Err(Error::io("stat", &self.db_path, e)),
        }
    }

    /// Reads committed frames up to the WAL's end into the deferred set, following a restart
    /// into the new generation; nothing to do without a running position.
    fn catch_up(&mut self) -> Result<()> {
        let Some(pos) = self.pos.filter(|_| self.running) else { return Ok(()) };
        let Ok(f) = File::open(&self.wal_path) else { return Ok(()) };
        match wal::read_header(&f).map_err(|e| Error::io("read", &self.wal_path, e))? {
            Some(h) if (h.salt1, h.salt2) == pos.salts => {
                self.read_frames(&f, &h, pos.end, pos.checksum, None)?;
            }
            Some(h) => {
                // Restarted: we read the whole old generation before any restart could happen.
                self.read_frames(&f, &h, WAL_HEADER_SIZE, h.checksum, None)?;
            }
            None => {}
        }
        Ok(())
    }

    /// Resumes from the newest local L0 file when it matches the WAL; otherwise the next sync
    /// writes a full image. The local file must also agree with the replica's position.
    fn recover_position(&mut self, remote_max: TxId) -> Result<()> {
        let Some(h) = self.meta.latest()? else { return Ok(()) };
        if h.max_txid < remote_max || h.page_size != self.page_size {
            tracing::info!(local = %h.max_txid, remote = %remote_max, "local state is behind the replica; starting a new snapshot");
            self.meta.clear()?;
            return Ok(());
        }
        // Files awaiting upload must go on from the replica's end, TXID by TXID. They do not
        // when the replica was emptied or replaced while the daemon was down, or a file was
        // removed from here: a new snapshot then loses nothing (the database holds it all),
        // where uploading them would leave a gap.
        let pending: Vec<(TxId, TxId)> =
            self.meta.list_l0()?.into_iter().filter(|(min, _)| *min > remote_max).collect();
        if sluice_engine::write::local::first_gap(remote_max, &pending).is_some() {
            tracing::warn!(local = %h.max_txid, remote = %remote_max, "the local files awaiting upload do not continue the \
                replica; starting a new snapshot");
            self.meta.clear()?;
            self.clear_journal();
            return Ok(());
        }
        self.floor = TxId(h.max_txid.0 + 1).max(self.floor);
        if !self.opts.resume {
            // Another database than the one the local files describe: TXIDs go on, the WAL
            // position and the journal mean nothing.
            self.clear_journal();
            return Ok(());
        }
        let wal_file = File::open(&self.wal_path).ok();
        let hdr = match &wal_file {
            Some(f) => wal::read_header(f).map_err(|e| Error::io("read", &self.wal_path, e))?,
            None => None,
        };
        let (Some(wal_file), Some(hdr)) = (wal_file, hdr) else {
            self.resume_quiet(h.max_txid, h.commit);
            return Ok(());
        };
        let end = (h.wal_offset + h.wal_size) as u64;
        if h.wal_offset == 0 || (hdr.salt1, hdr.salt2) != (h.wal_salt1, h.wal_salt2) {
            if !self.resume_from_journal(h.max_txid, &hdr) {
                tracing::info!("WAL changed while replication was stopped; starting a new snapshot");
            }
            return Ok(());
        }
        let Some(checksum) =
            wal::stored_checksum_before(&wal_file, &hdr, end).map_err(|e| Error::io("read", &self.wal_path, e))?
        else {
            return Ok(());
        };
        // Rebuild the page map of this WAL generation up to the position.
        let scan = wal::scan(&wal_file, &hdr, WAL_HEADER_SIZE, hdr.checksum, None)
            .map_err(|e| Error::io("read", &self.wal_path, e))?;
        if scan.end < end {
            tracing::info!("WAL is shorter than the local position; starting a new snapshot");
            return Ok(());
        }
        let prefix = wal::scan(&wal_file, &hdr, WAL_HEADER_SIZE, hdr.checksum, Some(end - WAL_HEADER_SIZE))
            .map_err(|e| Error::io("read", &self.wal_path, e))?;
        if prefix.end != end || prefix.checksum != checksum {
            return Ok(());
        }
        self.wal_map = prefix.pages;
        self.wal_salts = (hdr.salt1, hdr.salt2);
        self.pos = Some(Position { txid: h.max_txid, end, salts: (hdr.salt1, hdr.salt2), checksum, commit: h.commit });
        Ok(())
    }

    /// Captures one chunk of newly committed WAL frames into a local L0 file (or a full image
    /// when there is no usable position). Returns `None` when nothing was committed. Does not
    /// move the read lock: that may only happen once the whole backlog is captured.
    fn sync_once(&mut self) -> Result<Option<Synced>> {
        self.check_same_file()?;
        self.check_in_place()?;
        let wal_file = match File::open(&self.wal_path) {
            Ok(f) => Some(f),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // SQLite deletes the WAL only when its last connection closes, and ours stay
                // open: someone removed it. Writers that still hold it open write into the
                // deleted file, which nobody can replicate; say so instead of idling.
                if self.pos.is_some() && !self.wal_missing {
                    tracing::warn!(wal = %self.wal_path.display(), "the WAL file was deleted while the database is open; \
                        changes written to it cannot be replicated until the application reopens the database");
                }
                self.wal_missing = true;
                None
            }
            Err(e) => return Err(Error::io("open", &self.wal_path, e)),
        };
        if wal_file.is_some() && std::mem::take(&mut self.wal_missing) && self.pos.is_some() {
            // Deleted under us and back: whatever SQLite left in it, our position is in the
            // old file (its inode number may well be reused, so the witness cannot tell).
            return Err(Error::ReplacedInPlace {
                db: self.db_path.clone(),
                reason: "its WAL file was deleted and created anew".into(),
            });
        }
        let hdr = match &wal_file {
            Some(f) => wal::read_header(f).map_err(|e| Error::io("read", &self.wal_path, e))?,
            None => None,
        };
        tracing::debug!(header = ?hdr.map(|h| (h.salt1, h.salt2)), pos = ?self.pos, running = self.running, "sync");
        if self.deferred.is_some() && hdr.is_none() {
            // The WAL is gone (or empty) with frames read ahead: every restart follows a full
            // checkpoint, so their pages are in the database file (see `Deferred`).
            self.wal_map.clear();
            if let Err(e) = self.materialize(None) {
                tracing::warn!(error = %e, "could not write read-ahead frames; starting a new snapshot");
                self.forget_position();
            }
        }
        let res = match (hdr, self.pos) {
            (None, Some(_)) => {
                if wal_file.is_some() {
                    // Empty WAL, everything captured: the database file is the position's state.
                    self.stamp_quiet();
                }
                None
            }
            (None, None) => Some(self.write_full(None, None)?),
            (Some(h), Some(p)) if (h.salt1, h.salt2) == p.salts => {
                self.write_incremental(wal_file.as_ref().expect("BUG: header without file"), &h, p.end, p.checksum)?
            }
            (Some(h), Some(_)) if self.running => {
                // A restart we could not have missed frames of: continue in the new generation.
                self.wal_map.clear();
                self.wal_salts = (h.salt1, h.salt2);
                self.write_incremental(
                    wal_file.as_ref().expect("BUG: header without file"),
                    &h,
                    WAL_HEADER_SIZE,
                    h.checksum,
                )?
            }
            (Some(h), _) => {
                let f = wal_file.as_ref().expect("BUG: header without file");
                let scan = wal::scan(f, &h, WAL_HEADER_SIZE, h.checksum, None)
                    .map_err(|e| Error::io("read", &self.wal_path, e))?;
                Some(self.write_full(Some((f, &h)), Some(scan))?)
            }
        };
        self.running = true;
        Ok(res)
    }

    /// Resumes at `txid` (database of `commit` pages) with nothing read yet of the WAL
    /// generation `salts`, whose header checksum is `checksum`.
    fn resume_at_header(&mut self, txid: TxId, salts: (u32, u32), checksum: (u32, u32), commit: u32) {
        self.wal_map.clear();
        self.wal_salts = salts;
        self.pos = Some(Position { txid, end: WAL_HEADER_SIZE, salts, checksum, commit });
        // Restarts from here on are ours to follow, as after any first sync.
        self.running = true;
    }

    /// Drops the position (and frames read ahead): the next sync writes a full image, under
    /// a new TXID.
    pub(crate) fn forget_position(&mut self) {
        if let Some(p) = self.pos.take() {
            self.floor = TxId(p.txid.0 + 1).max(self.floor);
        }
        self.deferred = None;
        self.wal_map.clear();
        self.running = false;
    }

    /// The database file must still be the one we opened (not replaced by a rename).
    fn check_same_file(&self) -> Result<()> {
        use std::os::unix::fs::MetadataExt;
        let now = std::fs::metadata(&self.db_path).map_err(|e| Error::io("stat", &self.db_path, e))?;
        let ours = self.db_file.metadata().map_err(|e| Error::io("stat", &self.db_path, e))?;
        if (now.dev(), now.ino()) != (ours.dev(), ours.ino()) {
            return Err(Error::io(
                "replicate",
                &self.db_path,
                std::io::Error::other("the database file was replaced while replicating"),
            ));
        }
        Ok(())
    }

    /// Captures every committed frame (several files if the byte limit splits the backlog),
    /// then moves the read lock forward. Moving it after a partial capture could let a
    /// checkpoint copy, and a restart discard, frames not yet read.
    pub fn sync_all(&mut self) -> Result<Option<Synced>> {
        let before = self.index_header()?;
        let mut last = None;
        loop {
            match self.sync_once()? {
                Some(s) if s.more => last = Some(s),
                Some(s) => {
                    last = Some(s);
                    break;
                }
                None => break,
            }
        }
        self.handoff()?;
        self.check_captured(before)?;
        Ok(last)
    }

    /// SQLite's WAL index header, if it can be read.
    fn index_header(&self) -> Result<Option<shm::IndexHeader>> {
        let Some(shm) = &self.shm else { return Ok(None) };
        shm::read_header(shm).map_err(|e| Error::io("read", &self.shm_path, e))
    }

    /// Fails when frames that SQLite's WAL index counted as committed `before` a sync are
    /// not captured after it: replication must never idle silently while the database moves
    /// on (a WAL header we cannot parse, a WAL deleted under us, a bug).
    fn check_captured(&self, before: Option<shm::IndexHeader>) -> Result<()> {
        let Some(b) = before.filter(|b| b.max_frame > 0) else { return Ok(()) };
        // A restart since `before` needed every frame checkpointed, which needs our read
        // mark past them: those frames were read (see the module comment).
        if self.index_header()?.is_none_or(|now| now.salts != b.salts) {
            return Ok(());
        }
        let fs = FRAME_HEADER_SIZE + u64::from(self.page_size);
        let need = WAL_HEADER_SIZE + b.max_frame * fs;
        let reached = match self.pos {
            Some(p) if p.salts == b.salts => {
                if p.end >= need {
                    return Ok(());
                }
                (p.end.saturating_sub(WAL_HEADER_SIZE) / fs).to_string()
            }
            _ => "none".into(),
        };
        let why = match File::open(&self.wal_path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                "the WAL file was deleted while the database is open".to_string()
            }
            Err(e) => format!("cannot open the WAL: {e}"),
            Ok(f) => match wal::read_header(&f) {
                Ok(None) => format!(
                    "the WAL header is not readable (length {} bytes, database page size {})",
                    f.metadata().map_or(0, |m| m.len()),
                    self.page_size
                ),
                Ok(Some(h)) if (h.salt1, h.salt2) != b.salts => {
                    "the WAL header's salts differ from the WAL index's".into()
                }
                Ok(Some(_)) => "frames were not read".into(),
                Err(e) => format!("cannot read the WAL header: {e}"),
            },
        };
        Err(Error::Uncaptured {
            db: self.db_path.clone(),
            reason: format!(
                "the WAL index counts {} committed frames (salts {:08x} {:08x}), {reached} captured; {why}",
                b.max_frame, b.salts.0, b.salts.1
            ),
        })
    }

    fn next_txid(&self) -> TxId {
        let after = self.pos.map_or(0, |p| p.txid.0 + 1);
        TxId(after.max(self.floor.0))
    }

    fn write_incremental(&mut self, f: &File, h: &WalHeader, start: u64, seed: (u32, u32)) -> Result<Option<Synced>> {
        let max = (self.opts.max_sync_wal_bytes > 0).then_some(self.opts.max_sync_wal_bytes);
        let limited = self.read_frames(f, h, start, seed, max)?;
        let synced = self.materialize(Some(f))?;
        Ok(synced.map(|s| Synced { more: limited, ..s }))
    }

    /// Reads committed frames from `start` into the deferred set and moves the position past
    /// them (its TXID moves when they are written). Returns whether the byte limit stopped it.
    fn read_frames(&mut self, f: &File, h: &WalHeader, start: u64, seed: (u32, u32), max: Option<u64>) -> Result<bool> {
        let scan = match self.index_scan(h, start, max)? {
            Some(s) => s,
            None => wal::scan(f, h, start, seed, max).map_err(|e| Error::io("read", &self.wal_path, e))?,
        };
        self.wal_header = Some(*h);
        if self.wal_salts != (h.salt1, h.salt2) {
            // Offsets of another generation mean nothing in this one.
            self.wal_map.clear();
            self.wal_salts = (h.salt1, h.salt2);
        }
        if scan.frames == 0 {
            if start == WAL_HEADER_SIZE
                && let Some(p) = self.pos.as_mut()
            {
                // New generation with no frames yet: remember its salts.
                *p = Position { end: start, salts: (h.salt1, h.salt2), checksum: seed, ..*p };
            }
            return Ok(false);
        }
        self.frames_read += scan.frames;
        for (p, o) in &scan.pages {
            self.wal_map.insert(*p, *o);
        }
        self.wal_map.retain(|p, _| *p <= scan.commit);
        let prev_commit = self.pos.map_or(0, |p| p.commit);
        let d = self.deferred.get_or_insert_with(|| Deferred {
            start,
            salts: (h.salt1, h.salt2),
            prev_commit,
            pgnos: HashSet::default(),
        });
        d.pgnos.extend(scan.pages.keys().copied());
        let txid = self.pos.map_or(TxId(0), |p| p.txid);
        self.pos = Some(Position {
            txid,
            end: scan.end,
            salts: (h.salt1, h.salt2),
            checksum: scan.checksum,
            commit: scan.commit,
        });
        Ok(scan.limited)
    }

    /// The committed frames after `start` per SQLite's WAL index rather than the WAL: page
    /// numbers without reading pages or checksums. `None` when the index cannot answer (not
    /// there, another generation, or a byte limit that needs commit boundaries): then the WAL
    /// is scanned. Stable while we read it: a restart needs all frames copied and none of
    /// our read marks above 0, and mark 0 forbids copying the frames we have yet to read.
    fn index_scan(&self, h: &WalHeader, start: u64, max: Option<u64>) -> Result<Option<wal::Scan>> {
        let Some(shm) = &self.shm else { return Ok(None) };
        let io = |e| Error::io("read", &self.shm_path, e);
        let Some(ih) = shm::read_header(shm).map_err(io)? else { return Ok(None) };
        let fs = h.frame_size();
        let first = (start - WAL_HEADER_SIZE) / fs + 1;
        if ih.salts != (h.salt1, h.salt2) || ih.max_frame + 1 < first {
            return Ok(None);
        }
        let frames = ih.max_frame + 1 - first;
        if max.is_some_and(|m| frames * fs > m) {
            return Ok(None);
        }
        let mut scan = wal::Scan { end: start, checksum: ih.frame_checksum, ..wal::Scan::default() };
        if frames == 0 {
            return Ok(Some(scan));
        }
        let pgnos = shm::read_pgnos(shm, first, ih.max_frame).map_err(io)?;
        if pgnos.contains(&0) {
            return Ok(None);
        }
        for (i, p) in pgnos.iter().enumerate() {
            scan.pages.insert(*p, WAL_HEADER_SIZE + (first - 1 + i as u64) * fs);
        }
        scan.pages.retain(|p, _| *p <= ih.db_pages);
        scan.end = WAL_HEADER_SIZE + ih.max_frame * fs;
        scan.commit = ih.db_pages;
        scan.frames = frames;
        Ok(Some(scan))
    }

    /// Writes the deferred pages, as of the position, into one local L0 file.
    fn materialize(&mut self, wal: Option<&File>) -> Result<Option<Synced>> {
        let (Some(d), Some(pos)) = (self.deferred.as_ref(), self.pos) else { return Ok(None) };
        let commit = pos.commit;
        let mut pgnos: Vec<u32> = d.pgnos.iter().copied().filter(|p| *p <= commit).collect();
        // Pages the database grew by that no frame of the span carried come from older frames
        // of this generation or the database file (Litestream's "walgrowth" read).
        for p in d.prev_commit + 1..=commit {
            if !d.pgnos.contains(&p) && p != lock_pgno(self.page_size) {
                pgnos.push(p);
            }
        }
        pgnos.sort_unstable();
        // The header records where the position is in the WAL: the span's start, or the
        // current generation's first frame if the span crossed a restart.
        let start = if d.salts == pos.salts { d.start } else { WAL_HEADER_SIZE };
        let txid = self.next_txid();
        let mut header = Header::new(self.page_size, commit, txid, txid, now_ms());
        header.wal_offset = start as i64;
        header.wal_size = pos.end.saturating_sub(start) as i64;
        (header.wal_salt1, header.wal_salt2) = pos.salts;
        self.emit(header, &pgnos, wal, true)?;
        self.deferred = None;
        self.clear_journal();
        self.pos = Some(Position { txid, ..pos });
        Ok(Some(Synced { header, pages: pgnos.len(), full: false, more: false }))
    }

    /// Reads every committed frame into the deferred set without writing a file, following
    /// WAL restarts; without a running position it takes a full [`sync_all`] instead.
    /// `handoff` then moves the read lock to the end read.
    ///
    /// [`sync_all`]: Shipper::sync_all
    fn read_ahead(&mut self, handoff: bool) -> Result<Option<Synced>> {
        if self.pos.is_none() || !self.running || !self.wal_path.exists() {
            return self.sync_all();
        }
        self.check_same_file()?;
        self.check_in_place()?;
        if handoff {
            self.handoff()?
        } else {
            self.catch_up()?
        }
        Ok(None)
    }

    /// Writes every page 1..commit as of the end of `scan` (or of the database file alone).
    fn write_full(&mut self, wal: Option<(&File, &WalHeader)>, scan: Option<wal::Scan>) -> Result<Synced> {
        let commit = match &scan {
            Some(s) if s.commit != 0 => s.commit,
            _ => {
                let len = self.db_file.metadata().map_err(|e| Error::io("stat", &self.db_path, e))?.len();
                (len / u64::from(self.page_size)) as u32
            }
        };
        if let (Some(s), Some((_, h))) = (&scan, wal) {
            self.wal_map = s.pages.clone();
            self.wal_salts = (h.salt1, h.salt2);
        } else {
            self.wal_map.clear();
        }
        // A full image supersedes frames read ahead.
        self.deferred = None;
        let txid = self.next_txid();
        let mut header = Header::new(self.page_size, commit.max(1), txid, txid, now_ms());
        let lock = lock_pgno(self.page_size);
        let pgnos: Vec<u32> = (1..=commit).filter(|p| *p != lock).collect();
        if let (Some((f, h)), Some(s)) = (wal, &scan) {
            header.wal_offset = WAL_HEADER_SIZE as i64;
            header.wal_size = (s.end - WAL_HEADER_SIZE) as i64;
            (header.wal_salt1, header.wal_salt2) = (h.salt1, h.salt2);
            self.emit(header, &pgnos, Some(f), false)?;
            self.pos = Some(Position { txid, end: s.end, salts: (h.salt1, h.salt2), checksum: s.checksum, commit });
        } else {
            self.emit(header, &pgnos, None, false)?;
            // No WAL yet: the next generation starts at the header whatever its salts.
            self.pos = Some(Position { txid, end: WAL_HEADER_SIZE, salts: (0, 0), checksum: (0, 0), commit });
            self.running = true;
        }
        tracing::info!(txid = %txid, pages = pgnos.len(), "wrote full database image");
        Ok(Synced { header, pages: pgnos.len(), full: true, more: false })
    }

    /// Encodes `pgnos` (sorted) into local L0, reading each page from the WAL map or the file;
    /// `stored`: uncompressed, for frequent small captures (see [`MetaDir::write_l0`]).
    fn emit(&mut self, header: Header, pgnos: &[u32], wal: Option<&File>, stored: bool) -> Result<()> {
        let ps = self.page_size as usize;
        let mut buf = vec![0u8; ps];
        let (db_file, wal_map, db_path, wal_path) = (&self.db_file, &self.wal_map, &self.db_path, &self.wal_path);
        let salts = self.wal_salts;
        self.meta.write_l0(header, stored, |sink| {
            for &p in pgnos {
                read_page(db_file, wal, wal_map, salts, p, &mut buf).map_err(|e| {
                    Error::io("read page from", if wal_map.contains_key(&p) { wal_path } else { db_path }, e)
                })?;
                sink(p, &buf)?;
            }
            Ok(())
        })?;
        Ok(())
    }

    /// WAL frames of the current generation that replication has captured.
    pub fn wal_frames(&self) -> u64 {
        self.pos.map_or(0, |p| p.end.saturating_sub(WAL_HEADER_SIZE) / (FRAME_HEADER_SIZE + u64::from(self.page_size)))
    }
}

/// Opens a read transaction that holds a read mark (a plain `BEGIN` takes none until the
/// first read). Statements are cached: this runs hundreds of times a second under load.
pub(crate) fn begin_read(c: &Connection) -> rusqlite::Result<()> {
    c.prepare_cached("BEGIN")?.execute([])?;
    c.prepare_cached("SELECT count(*) FROM sqlite_schema")?.query_row([], |_| Ok(())).inspect_err(|_| {
        let _ = c.execute_batch("ROLLBACK");
    })
}

/// Reads a page from its WAL frame (per `map`) or else from the database file.
///
/// A WAL read is checked afterwards: the frame header must still carry this page and the
/// generation's salts. SQLite writes a frame's header before its data, so an unchanged header
/// read *after* the data proves the data was not overwritten by a WAL restart meanwhile.
fn read_page(
    db: &File,
    wal: Option<&File>,
    map: &HashMap<u32, u64>,
    salts: (u32, u32),
    pgno: u32,
    buf: &mut [u8],
) -> std::io::Result<()> {
    if let Some(off) = map.get(&pgno) {
        let Some(w) = wal else {
            return Err(std::io::Error::other(format!("WAL is gone while page {pgno} is only in it")));
        };
        if let Some((found, found_salts)) = read_wal_frame(w, *off, pgno, salts, buf)? {
            return Err(std::io::Error::other(format!(
                "WAL frame at offset {off} for page {pgno} was overwritten while reading it (WAL restarted): \
                 it now holds page {found} with salts {:08x} {:08x}, expected {:08x} {:08x}",
                found_salts.0, found_salts.1, salts.0, salts.1
            )));
        }
        return Ok(());
    }
    read_db_page(db, pgno, buf)
}

/// Reads the page of the WAL frame at `off`, then its header: `Some((pgno, salts))` found
/// there if the frame no longer holds `pgno` of the generation `salts` (the WAL restarted).
/// SQLite writes a frame's header before its data, so an unchanged header read *after* the
/// data proves the data was not overwritten meanwhile.
pub(crate) fn read_wal_frame(
    w: &File,
    off: u64,
    pgno: u32,
    salts: (u32, u32),
    buf: &mut [u8],
) -> std::io::Result<Option<(u32, (u32, u32))>> {
    match w.read_exact_at(buf, off + FRAME_HEADER_SIZE) {
        // Truncated under us (a TRUNCATE checkpoint while our read mark was 0): the frame is
        // gone, as if overwritten.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(Some((0, (0, 0)))),
        r => r?,
    }
    let mut fh = [0u8; FRAME_HEADER_SIZE as usize];
    w.read_exact_at(&mut fh, off)?;
    let be = |i: usize| u32::from_be_bytes([fh[i], fh[i + 1], fh[i + 2], fh[i + 3]]);
    Ok((be(0) != pgno || (be(8), be(12)) != salts).then(|| (be(0), (be(8), be(12)))))
}

/// Reads a page from the database file; pages past its end read as zeros (never written).
pub(crate) fn read_db_page(db: &File, pgno: u32, buf: &mut [u8]) -> std::io::Result<()> {
    let off = u64::from(pgno - 1) * buf.len() as u64;
    match db.read_exact_at(buf, off) {
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            buf.fill(0);
            Ok(())
        }
        r => r,
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}
