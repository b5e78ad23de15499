//! Restore: rebuild a database from a replica, to the latest state or a point in time.
//!
//! Plan ([`plan`]), download ahead with bounded memory ([`fetch`]), apply in order on a
//! blocking thread ([`apply`]), then fsync and rename into place: the output path never
//! holds a partial file, also when the process is killed.

pub mod apply;
pub mod fetch;
pub mod follow;
pub mod plan;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::future::try_join_all;
use sluice_ltx::TxId;
use sluice_storage::{FileInfo, ReplicaClient, StoreKind};

pub use plan::{SNAPSHOT_LEVEL, Target, file_label};

use crate::error::{Error, Result};

/// Progress callback: (bytes downloaded, bytes in the plan).
pub type Progress = Arc<dyn Fn(u64, u64) + Send + Sync>;

/// Restore settings.
#[derive(Clone)]
pub struct RestoreOptions {
    /// How far to restore.
    pub target: Target,
    /// Files downloaded ahead of the applier.
    pub parallelism: usize,
    /// Replace an existing output file (and its stale `-wal`/`-shm`).
    pub overwrite: bool,
    /// Called as bytes arrive.
    pub progress: Option<Progress>,
    /// Fsync the output and its directory (off only for a disposable copy such as a
    /// hydration file, which records its state only after its own fsync).
    pub durable: bool,
}

impl Default for RestoreOptions {
    fn default() -> Self {
        RestoreOptions { target: Target::Latest, parallelism: 8, overwrite: false, progress: None, durable: true }
    }
}

/// What a restore did.
#[derive(Clone, Debug)]
pub struct RestoreSummary {
    /// Files applied, in order.
    pub plan: Vec<FileInfo>,
    /// TXID of the restored state.
    pub txid: TxId,
    /// Database size in pages.
    pub commit: u32,
    /// Page size.
    pub page_size: u32,
}

/// Lists every level of the replica (in parallel). Timestamp targets on S3 read each
/// object's `litestream-timestamp` metadata, as Litestream does.
pub async fn list_all(client: &ReplicaClient, with_timestamps: bool) -> Result<Vec<FileInfo>> {
    let metadata = with_timestamps && client.kind() == StoreKind::S3;
    if !metadata {
        return Ok(client.list_all_levels().await?);
    }
    let lists = (0..=SNAPSHOT_LEVEL).map(|level| async move {
        if metadata { client.list_level_with_timestamps(level).await } else { client.list_level(level).await }
    });
    Ok(try_join_all(lists).await?.into_iter().flatten().collect())
}

/// Computes the restore plan for `target`.
pub async fn plan_restore(client: &ReplicaClient, target: Target) -> Result<Vec<FileInfo>> {
    let files = list_all(client, matches!(target, Target::Timestamp(_))).await?;
    plan::plan(&files, target, client.description())
}

/// Restores into `out` (temp file beside it, fsync, rename, fsync the directory).
pub async fn restore(client: &ReplicaClient, out: &Path, opts: &RestoreOptions) -> Result<RestoreSummary> {
    check_output(out, opts.overwrite)?;
    let plan = plan_restore(client, opts.target).await?;
    restore_plan(client, plan, out, opts).await
}

/// Executes a plan computed by [`plan_restore`].
pub async fn restore_plan(
    client: &ReplicaClient,
    plan: Vec<FileInfo>,
    out: &Path,
    opts: &RestoreOptions,
) -> Result<RestoreSummary> {
    let (image, tmp_path) = build(client, &plan, out, opts).await?;
    let durable = opts.durable;
    let (file, commit, page_size) =
        tokio::task::spawn_blocking(move || image.finish(durable)).await.map_err(|e| Error::Task(e.to_string()))??;
    drop(file);
    place(tmp_path, out, opts).await?;
    let txid = plan.last().map(|f| f.max_txid).unwrap_or_default();
    Ok(RestoreSummary { plan, txid, commit, page_size })
}

/// Like [`restore_plan`], for `restore --follow`: page 1 is marked for rollback-journal
/// readers (see [`follow`]) before the file appears at `out`, and the image stays open to
/// be continued in place. Returns it with page 1's change counter.
pub async fn restore_for_follow(
    client: &ReplicaClient,
    plan: Vec<FileInfo>,
    out: &Path,
    opts: &RestoreOptions,
) -> Result<(RestoreSummary, apply::Image, u32)> {
    let (image, tmp_path) = build(client, &plan, out, opts).await?;
    let path = tmp_path.to_path_buf();
    let (image, counter) = tokio::task::spawn_blocking(move || {
        let commit = image.commit();
        let lock = lock_pgno_checked(image.page_size());
        for pgno in 1..=commit {
            if pgno != lock && !image.has_page(pgno) {
                return Err(Error::MissingPage { pgno, commit });
            }
        }
        let counter = follow::read_counter(image.file(), &path)?;
        let counter = follow::mark_header(image.file(), &path, counter)?;
        image.set_len(true)?;
        Ok((image, counter))
    })
    .await
    .map_err(|e| Error::Task(e.to_string()))??;
    place(tmp_path, out, opts).await?;
    let summary = RestoreSummary { txid: image.txid(), commit: image.commit(), page_size: image.page_size(), plan };
    Ok((summary, image, counter))
}

fn lock_pgno_checked(page_size: u32) -> u32 {
    sluice_ltx::lock_pgno(page_size.max(512))
}

/// Downloads and applies `plan` into a temp file beside `out`.
async fn build(
    client: &ReplicaClient,
    plan: &[FileInfo],
    out: &Path,
    opts: &RestoreOptions,
) -> Result<(apply::Image, tempfile::TempPath)> {
    check_output(out, opts.overwrite)?;
    let dir = parent_dir(out);
    let name = out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "db".into());
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".sluice-restore.tmp")
        .tempfile_in(&dir)
        .map_err(|e| Error::io("create temp file in", &dir, e))?;
    let (tmp_file, tmp_path) = tmp.into_parts();
    let file = tmp_file.try_clone().map_err(|e| Error::io("open", &*tmp_path, e))?;

    let total: u64 = plan.iter().map(|f| f.size).sum();
    let done = Arc::new(AtomicU64::new(0));
    let mut sources = fetch::prefetch(client.clone(), plan.to_vec(), opts.parallelism, done.clone());
    let mut image = apply::Image::new(file, tmp_path.to_path_buf());
    for info in plan {
        let src = sources.recv().await.ok_or_else(|| Error::Task("download task ended early".into()))??;
        let info2 = info.clone();
        image = tokio::task::spawn_blocking(move || image.apply(&info2, src).map(|()| image))
            .await
            .map_err(|e| Error::Task(e.to_string()))??;
        if let Some(p) = &opts.progress {
            p(done.load(Ordering::Relaxed), total);
        }
    }
    Ok((image, tmp_path))
}

/// Renames the finished temp file to `out` on a blocking thread.
async fn place(tmp_path: tempfile::TempPath, out: &Path, opts: &RestoreOptions) -> Result<()> {
    let out_owned = out.to_path_buf();
    let (overwrite, durable) = (opts.overwrite, opts.durable);
    tokio::task::spawn_blocking(move || install(tmp_path, &out_owned, overwrite, durable))
        .await
        .map_err(|e| Error::Task(e.to_string()))?
}

fn parent_dir(p: &Path) -> PathBuf {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn sidecars(out: &Path) -> [PathBuf; 2] {
    let s = out.as_os_str().to_owned();
    let mut wal = s.clone();
    wal.push("-wal");
    let mut shm = s;
    shm.push("-shm");
    [PathBuf::from(wal), PathBuf::from(shm)]
}

/// Refuses an existing output, and a stale `-wal` that SQLite would replay over the result.
fn check_output(out: &Path, overwrite: bool) -> Result<()> {
    if overwrite {
        return Ok(());
    }
    if out.exists() {
        return Err(Error::OutputExists { path: out.to_path_buf() });
    }
    for side in sidecars(out) {
        if side.exists() {
            return Err(Error::OutputExists { path: side });
        }
    }
    Ok(())
}

/// Renames the finished temp file into place and makes the rename durable.
fn install(tmp: tempfile::TempPath, out: &Path, overwrite: bool, durable: bool) -> Result<()> {
    if overwrite {
        for side in sidecars(out) {
            match std::fs::remove_file(&side) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(Error::io("remove", side, e)),
                _ => {}
            }
        }
        tmp.persist(out).map_err(|e| Error::io("rename into", out, e.error))?;
    } else {
        // No-clobber: a file that appeared meanwhile is never replaced.
        tmp.persist_noclobber(out).map_err(|e| match e.error.kind() {
            std::io::ErrorKind::AlreadyExists => Error::OutputExists { path: out.to_path_buf() },
            _ => Error::io("rename into", out, e.error),
        })?;
    }
    if !durable {
        return Ok(());
    }
    let dir = parent_dir(out);
    std::fs::File::open(&dir).and_then(|d| d.sync_all()).map_err(|e| Error::io("fsync directory", dir, e))
}
