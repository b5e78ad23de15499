//! Hydration: a local copy of the replica's latest state, filled in the background while reads
//! are served remotely, then read instead of the replica.
//!
//! The fill is `sluice restore` of the open view's plan (parallel downloads, block-copy merge)
//! into the hydration file. Afterwards each new LTX file the poller finds is applied whole (the
//! poller reads new files in one request each, and hands the bytes over). A page read is served
//! locally only when the local copy holds exactly the version the reader's view has: the local
//! TXID is not past the view's, and the page's newest frame in the view is in a file the local
//! copy has applied. Readers of older views (time travel, a transaction begun before an apply)
//! therefore go to the replica, and no read transaction ever mixes two TXIDs.
//!
//! A kept file (`Hydration::Kept`) is locked against other processes and gets a metadata record
//! at close (TXID, page size, commit, checksum of the image, timestamp of the last file). The
//! next open reuses it when the replica still has a file ending at that TXID with that
//! timestamp, and applies only the newer files; anything else rebuilds it with a warning. While
//! open, the record is removed, so a crash leads to a rebuild rather than a stale copy.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sluice_ltx::{DatabaseChecksum, Decoder, TxId};
use tokio::sync::Notify;

use super::replica::Replica;
use super::view::View;
use crate::error::{Error, Result};
use crate::restore::{self, RestoreOptions};

/// Whether and where a replica opened for reading keeps a local copy.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub enum Hydration {
    /// Reads always go to the replica (and the page cache).
    #[default]
    Off,
    /// A private temporary file, removed when the replica is closed.
    Temp,
    /// This file, kept after close and reused at the next open.
    Kept(PathBuf),
}

/// Files identified as in the page cache key.
type FileId = (u8, TxId, TxId);

/// The local copy and its state, shared by the readers, the poller and the hydration task.
pub(crate) struct Hydrator {
    path: PathBuf,
    kept: bool,
    /// Temp mode: the private directory, removed on drop.
    _dir: Option<tempfile::TempDir>,
    /// Kept mode: the lock that keeps other processes out, and its key in [`held_here`].
    lock: Mutex<Option<(File, PathBuf)>>,
    local: RwLock<Local>,
    complete: AtomicBool,
    done_bytes: AtomicU64,
    total_bytes: AtomicU64,
    /// The poller published a new view.
    pub(crate) wake: Notify,
    stopped: AtomicBool,
    /// The last catch-up failed: the poller stops handing over whole files (they would pile
    /// up in memory); the next catch-up fetches what it needs.
    failing: AtomicBool,
    /// Whole new files the poller read, waiting to be applied.
    stash: Mutex<HashMap<FileId, Bytes>>,
}

struct Local {
    file: Option<File>,
    txid: TxId,
    page_size: u32,
    commit: u32,
    /// Header timestamp of the newest applied file (identifies the history at `txid`).
    timestamp_ms: i64,
}

/// The record a kept file carries between opens.
#[derive(Serialize, Deserialize, Debug, PartialEq, Eq)]
struct Meta {
    txid: String,
    page_size: u32,
    commit: u32,
    checksum: String,
    timestamp_ms: i64,
}

impl Hydrator {
    /// Prepares hydration as `mode` says (`None` when off). A kept file in use by another
    /// process is an error.
    pub(crate) fn new(mode: &Hydration) -> Result<Option<Hydrator>> {
        let (path, kept, dir, lock) = match mode {
            Hydration::Off => return Ok(None),
            Hydration::Temp => {
                let dir = tempfile::Builder::new()
                    .prefix("sluice-hydration.")
                    .tempdir()
                    .map_err(|e| Error::io("create temp directory in", std::env::temp_dir(), e))?;
                (dir.path().join("hydrated.db"), false, Some(dir), None)
            }
            Hydration::Kept(path) => {
                let lock_path = sidecar(path, "lock");
                let lock = OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&lock_path)
                    .map_err(|e| Error::io("create", &lock_path, e))?;
                // flock conflicts between two opens in one process too: tell the cases apart.
                let key = std::fs::canonicalize(&lock_path).unwrap_or(lock_path);
                if held_here().contains(&key) {
                    return Err(Error::HydrationInUse {
                        path: path.clone(),
                        holder: "this process (another replica URL or other read settings)",
                    });
                }
                lock.try_lock().map_err(|_| Error::HydrationInUse { path: path.clone(), holder: "another process" })?;
                held_here().insert(key.clone());
                (path.clone(), true, None, Some((lock, key)))
            }
        };
        Ok(Some(Hydrator {
            path,
            kept,
            _dir: dir,
            lock: Mutex::new(lock),
            local: RwLock::new(Local { file: None, txid: TxId(0), page_size: 0, commit: 0, timestamp_ms: 0 }),
            complete: AtomicBool::new(false),
            done_bytes: AtomicU64::new(0),
            total_bytes: AtomicU64::new(0),
            wake: Notify::new(),
            stopped: AtomicBool::new(false),
            failing: AtomicBool::new(false),
            stash: Mutex::new(HashMap::new()),
        }))
    }

    /// Percent of the local copy that is filled (100 once reads are local).
    pub(crate) fn progress(&self) -> u8 {
        if self.complete.load(Ordering::Acquire) {
            return 100;
        }
        let (done, total) = (self.done_bytes.load(Ordering::Relaxed), self.total_bytes.load(Ordering::Relaxed));
        done.saturating_mul(100).checked_div(total).map_or(0, |p| p.min(99) as u8)
    }

    /// Whether reads of the latest state are local.
    pub(crate) fn is_complete(&self) -> bool {
        self.complete.load(Ordering::Acquire)
    }

    /// Serves page `pgno` of `view` from the local copy if it holds exactly that version.
    pub(crate) fn read(&self, view: &View, pgno: u32, buf: &mut [u8], replica: &str) -> Result<bool> {
        if !self.is_complete() {
            return Ok(false);
        }
        let local = self.local.read().unwrap_or_else(|p| p.into_inner());
        let Some(file) = local.file.as_ref() else { return Ok(false) };
        if local.txid > view.txid || local.page_size != view.page_size || pgno > local.commit {
            return Ok(false);
        }
        match view.locate(pgno, replica)? {
            Some(loc) if view.file(&loc).info.max_txid <= local.txid => {}
            _ => return Ok(false),
        }
        let at = u64::from(pgno - 1) * u64::from(local.page_size);
        file.read_exact_at(buf, at).map_err(|e| Error::io("read", &self.path, e))?;
        Ok(true)
    }

    /// Whether the poller should read new files whole and hand them over.
    pub(crate) fn wants_whole_files(&self) -> bool {
        self.is_complete() && !self.failing.load(Ordering::Relaxed)
    }

    /// A new file the poller read whole.
    pub(crate) fn stash(&self, id: FileId, bytes: Bytes) {
        self.stash.lock().unwrap_or_else(|p| p.into_inner()).insert(id, bytes);
    }

    /// Stops the task and, for a kept file that is complete, writes its record.
    /// The lock goes at once, not when the aborted task lets go of this: a reopen right after
    /// a close must find the file free. (Should an apply still land after the record, the
    /// next open finds the checksum off and rebuilds.)
    pub(crate) fn close(&self) {
        self.stopped.store(true, Ordering::Release);
        self.wake.notify_one();
        if self.kept && self.is_complete() {
            let local = self.local.write().unwrap_or_else(|p| p.into_inner());
            if let Err(e) = write_meta(&self.path, &local) {
                tracing::warn!(file = %self.path.display(), error = %e, "cannot record the hydration file; the next open rebuilds it");
            }
        }
        self.unlock();
    }
}

impl Hydrator {
    /// Lets another open (here or in another process) have the kept file.
    fn unlock(&self) {
        if let Some((file, key)) = self.lock.lock().unwrap_or_else(|p| p.into_inner()).take() {
            held_here().remove(&key);
            drop(file);
        }
    }
}

impl Drop for Hydrator {
    fn drop(&mut self) {
        self.unlock();
    }
}

/// Kept files this process holds (by their lock file's canonical path).
fn held_here() -> std::sync::MutexGuard<'static, std::collections::HashSet<PathBuf>> {
    static HELD: std::sync::LazyLock<Mutex<std::collections::HashSet<PathBuf>>> =
        std::sync::LazyLock::new(Default::default);
    HELD.lock().unwrap_or_else(|p| p.into_inner())
}

/// The background task: fill (or reuse) the local copy, then apply each new file.
pub(crate) async fn run(replica: Weak<Replica>, h: Arc<Hydrator>) {
    let mut failures = 0u32;
    while !h.stopped.load(Ordering::Acquire) {
        let Some(r) = replica.upgrade() else { return };
        let step = catch_up(&r, &h).await;
        drop(r);
        match step {
            Ok(()) => {
                failures = 0;
                h.failing.store(false, Ordering::Relaxed);
                h.wake.notified().await;
            }
            Err(e) => {
                failures += 1;
                h.failing.store(true, Ordering::Relaxed);
                h.stash.lock().unwrap_or_else(|p| p.into_inner()).clear();
                if failures == 1 {
                    tracing::warn!(file = %h.path.display(), error = %e, "hydration failed; retrying (reads go to the replica meanwhile)");
                }
                let wait = std::time::Duration::from_millis(250u64 << failures.min(6));
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = h.wake.notified() => {}
                }
            }
        }
    }
}

/// Brings the local copy to the replica's latest view: reuse or fill it first, then apply the
/// files after its TXID. Marks it complete once it reaches the view.
async fn catch_up(r: &Arc<Replica>, h: &Arc<Hydrator>) -> Result<()> {
    let view = r.latest();
    if view.txid.0 == 0 {
        return Ok(());
    }
    let have_file = h.local.read().unwrap_or_else(|p| p.into_inner()).file.is_some();
    let reused = !have_file && h.kept && reuse(h, &view).await?;
    if !have_file && !reused {
        fill(r, h, &view).await?;
    }
    loop {
        let (txid, page_size) = {
            let l = h.local.read().unwrap_or_else(|p| p.into_inner());
            (l.txid, l.page_size)
        };
        let view = r.latest();
        let next: Vec<_> = view.files.iter().filter(|f| f.info.max_txid > txid).cloned().collect();
        let Some(first) = next.first() else { break };
        if first.info.min_txid.0 != txid.0 + 1 || first.header.page_size != page_size {
            // A new snapshot or a gap: the local copy cannot be brought forward file by file.
            tracing::info!(file = %h.path.display(), local = %txid, replica = %view.txid,
                "the replica's history moved past the hydration file; filling it again");
            h.complete.store(false, Ordering::Release);
            fill(r, h, &view).await?;
            continue;
        }
        for f in next {
            let id = (f.info.level, f.info.min_txid, f.info.max_txid);
            let stashed = h.stash.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
            let bytes = match stashed {
                Some(b) => b,
                None => r.client().get(f.info.level, f.info.min_txid, f.info.max_txid).await?,
            };
            let h2 = h.clone();
            let label = f.label();
            tokio::task::spawn_blocking(move || apply(&h2, &bytes, &label))
                .await
                .map_err(|e| Error::Task(e.to_string()))??;
        }
    }
    h.stash.lock().unwrap_or_else(|p| p.into_inner()).clear();
    if !h.complete.swap(true, Ordering::AcqRel) {
        let txid = h.local.read().unwrap_or_else(|p| p.into_inner()).txid;
        tracing::info!(file = %h.path.display(), %txid, "hydration complete; reads are local");
        r.release_cache();
    }
    Ok(())
}

/// Fills the local copy with `view`'s state by `sluice restore` of its plan.
async fn fill(r: &Arc<Replica>, h: &Arc<Hydrator>, view: &View) -> Result<()> {
    let plan: Vec<_> = view.files.iter().map(|f| f.info.clone()).collect();
    let total: u64 = plan.iter().map(|f| f.size).sum();
    h.total_bytes.store(total, Ordering::Relaxed);
    h.done_bytes.store(0, Ordering::Relaxed);
    let h2 = h.clone();
    let opts = RestoreOptions {
        overwrite: true,
        // A crash leaves no record, so the next open rebuilds: no fsync needed here.
        durable: false,
        progress: Some(Arc::new(move |done, _| h2.done_bytes.store(done, Ordering::Relaxed))),
        ..RestoreOptions::default()
    };
    let started = std::time::Instant::now();
    // The old copy stays readable until the new one is in place.
    let summary = restore::restore_plan(r.client(), plan, &h.path, &opts).await?;
    let file = open_rw(&h.path)?;
    if !h.kept {
        // Only the descriptor is needed: the copy goes with the process however it ends,
        // even one that never closes its connections.
        let _ = std::fs::remove_file(&h.path);
    }
    let mut local = h.local.write().unwrap_or_else(|p| p.into_inner());
    *local = Local {
        file: Some(file),
        txid: summary.txid,
        page_size: summary.page_size,
        commit: summary.commit,
        timestamp_ms: view.timestamp_ms,
    };
    tracing::info!(file = %h.path.display(), txid = %summary.txid, bytes = total, elapsed = ?started.elapsed(),
        "hydration file filled");
    Ok(())
}

/// Reuses a kept file whose record matches the replica's history; false (after a warning)
/// when it must be rebuilt.
async fn reuse(h: &Arc<Hydrator>, view: &View) -> Result<bool> {
    let meta_path = sidecar(&h.path, "meta");
    let Ok(text) = std::fs::read_to_string(&meta_path) else { return Ok(false) };
    // The record is only valid for the state it describes: gone while the file is open.
    let _ = std::fs::remove_file(&meta_path);
    let why_not = match serde_json::from_str::<Meta>(&text) {
        Err(e) => Some(format!("its record is unreadable ({e})")),
        Ok(meta) => {
            let txid = meta.txid.parse::<TxId>().unwrap_or_default();
            let boundary = view.files.iter().find(|f| f.info.max_txid == txid);
            match boundary {
                None if txid > view.txid => Some(format!("it is at TXID {txid}, past the replica's {}", view.txid)),
                None => Some(format!("the replica has no file ending at its TXID {txid}")),
                Some(f) if f.header.timestamp_ms != meta.timestamp_ms || f.header.page_size != meta.page_size => {
                    Some(format!("the replica's history at TXID {txid} is another one (a new snapshot?)"))
                }
                Some(_) => {
                    let path = h.path.clone();
                    let (checked, meta) = tokio::task::spawn_blocking(move || (verify(&path, &meta), meta))
                        .await
                        .map_err(|e| Error::Task(e.to_string()))?;
                    match checked {
                        Ok(file) => {
                            *h.local.write().unwrap_or_else(|p| p.into_inner()) = Local {
                                file: Some(file),
                                txid,
                                page_size: meta.page_size,
                                commit: meta.commit,
                                timestamp_ms: meta.timestamp_ms,
                            };
                            None
                        }
                        Err(reason) => Some(reason),
                    }
                }
            }
        }
    };
    match why_not {
        None => {
            tracing::info!(file = %h.path.display(), "reusing the hydration file");
            Ok(true)
        }
        Some(reason) => {
            tracing::warn!(file = %h.path.display(), %reason, "discarding the hydration file and rebuilding it");
            Ok(false)
        }
    }
}

/// Opens a kept file and checks it against its record.
fn verify(path: &Path, meta: &Meta) -> std::result::Result<File, String> {
    let file = open_rw(path).map_err(|e| e.to_string())?;
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    let want = u64::from(meta.commit) * u64::from(meta.page_size);
    if len != want {
        return Err(format!("it is {len} bytes, its record says {want}"));
    }
    let sum = image_checksum(&file, meta.page_size, meta.commit).map_err(|e| e.to_string())?;
    if format!("{sum:016x}") != meta.checksum {
        return Err("its pages do not match its recorded checksum".into());
    }
    Ok(file)
}

/// Applies one LTX file's pages (verified as a whole first) to the local copy.
fn apply(h: &Hydrator, bytes: &[u8], label: &str) -> Result<()> {
    let ltx = |source| Error::Ltx { file: label.to_string(), source };
    let mut dec = Decoder::new(bytes).map_err(ltx)?;
    let header = *dec.header();
    let mut pages = Vec::new();
    let mut buf = vec![0u8; header.page_size as usize];
    while let Some(pgno) = dec.next_page(&mut buf).map_err(ltx)? {
        if pgno <= header.commit {
            pages.push((pgno, buf.clone()));
        }
    }
    let mut local = h.local.write().unwrap_or_else(|p| p.into_inner());
    let file = local.file.as_ref().ok_or_else(|| Error::Task("BUG: apply before the fill".into()))?;
    let ps = u64::from(header.page_size);
    for (pgno, data) in &pages {
        file.write_all_at(data, u64::from(pgno - 1) * ps).map_err(|e| Error::io("write", &h.path, e))?;
    }
    file.set_len(u64::from(header.commit) * ps).map_err(|e| Error::io("truncate", &h.path, e))?;
    local.txid = header.max_txid;
    local.commit = header.commit;
    local.timestamp_ms = header.timestamp_ms;
    Ok(())
}

fn open_rw(path: &Path) -> Result<File> {
    OpenOptions::new().read(true).write(true).open(path).map_err(|e| Error::io("open", path, e))
}

fn image_checksum(file: &File, page_size: u32, commit: u32) -> std::io::Result<u64> {
    let mut sum = DatabaseChecksum::new();
    let mut buf = vec![0u8; page_size as usize];
    for pgno in 1..=commit {
        file.read_exact_at(&mut buf, u64::from(pgno - 1) * u64::from(page_size))?;
        sum.add(pgno, &buf);
    }
    Ok(sum.value())
}

fn write_meta(path: &Path, local: &Local) -> Result<()> {
    let Some(file) = local.file.as_ref() else { return Ok(()) };
    file.sync_all().map_err(|e| Error::io("fsync", path, e))?;
    let checksum = image_checksum(file, local.page_size, local.commit).map_err(|e| Error::io("read", path, e))?;
    let meta = Meta {
        txid: local.txid.to_string(),
        page_size: local.page_size,
        commit: local.commit,
        checksum: format!("{checksum:016x}"),
        timestamp_ms: local.timestamp_ms,
    };
    let target = sidecar(path, "meta");
    let tmp = sidecar(path, "meta.tmp");
    let text = serde_json::to_string(&meta).map_err(|e| Error::Task(e.to_string()))?;
    std::fs::write(&tmp, text)
        .and_then(|()| File::open(&tmp)?.sync_all())
        .and_then(|()| std::fs::rename(&tmp, &target))
        .map_err(|e| Error::io("write", &target, e))
}

/// `<path>-sluice-<what>`: the lock and the record beside a kept file.
fn sidecar(path: &Path, what: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!("-sluice-{what}"));
    PathBuf::from(s)
}
