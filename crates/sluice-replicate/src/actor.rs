//! Runs a [`Shipper`] on its own thread: SQLite connections are not `Send`-friendly across
//! await points and its calls block, so the async side sends commands and awaits replies
//! instead of blocking a runtime worker.

use std::path::PathBuf;
use std::sync::mpsc as std_mpsc;

use sluice_ltx::{Header, TxId};
use tokio::sync::oneshot;

use crate::shipper::{Checkpoint, Position, Shipper, ShipperOptions, SnapshotView, Synced};
use sluice_engine::error::{Error, Result};
use sluice_engine::validate::PageSums;
use sluice_engine::write::local::MetaDir;

enum Cmd {
    Sync(oneshot::Sender<Result<Option<Synced>>>),
    Checkpoint(bool, oneshot::Sender<Result<(Checkpoint, Option<Synced>)>>),
    SnapshotView(oneshot::Sender<Result<Option<SnapshotView>>>),
    EndSnapshot(oneshot::Sender<()>),
    Position(oneshot::Sender<Option<Position>>),
}

/// Handle to the shipper thread. Dropping it stops the thread (releasing SQLite locks).
pub struct ShipperHandle {
    tx: std_mpsc::Sender<Cmd>,
    /// One pinned snapshot read at a time (snapshots and validation share it).
    snap: tokio::sync::Mutex<()>,
    page_size: u32,
    meta: MetaDir,
}

impl ShipperHandle {
    /// Opens the shipper on a new thread.
    pub async fn spawn(db_path: PathBuf, meta_root: PathBuf, remote_max: TxId, opts: ShipperOptions) -> Result<Self> {
        let (tx, rx) = std_mpsc::channel::<Cmd>();
        let (ready_tx, ready_rx) = oneshot::channel();
        let root = meta_root;
        let name = format!("sluice-wal-{}", db_path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default());
        std::thread::Builder::new()
            .name(name)
            .spawn(move || {
                let mut s = match Shipper::open(&db_path, root, remote_max, opts) {
                    Ok(s) => {
                        let _ = ready_tx.send(Ok((s.page_size(), s.meta().clone())));
                        s
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                while let Ok(cmd) = rx.recv() {
                    match cmd {
                        Cmd::Sync(r) => drop(r.send(s.sync_all())),
                        Cmd::Checkpoint(t, r) => drop(r.send(s.checkpoint(t))),
                        Cmd::SnapshotView(r) => drop(r.send(s.snapshot_view())),
                        Cmd::EndSnapshot(r) => {
                            s.end_snapshot();
                            let _ = r.send(());
                        }
                        Cmd::Position(r) => drop(r.send(s.position())),
                    }
                }
            })
            .map_err(|e| Error::Task(format!("spawn shipper thread: {e}")))?;
        let (page_size, meta) = ready_rx.await.map_err(|_| Error::Task("shipper thread died".into()))??;
        Ok(ShipperHandle { tx, snap: tokio::sync::Mutex::new(()), page_size, meta })
    }

    async fn call<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Cmd) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(make(tx)).map_err(|_| Error::Task("shipper thread stopped".into()))?;
        rx.await.map_err(|_| Error::Task("shipper thread stopped".into()))
    }

    /// Captures new WAL frames into a local L0 file.
    pub async fn sync(&self) -> Result<Option<Synced>> {
        self.call(Cmd::Sync).await?
    }

    /// Checkpoints under a write barrier (TRUNCATE afterwards if `truncate`).
    pub async fn checkpoint(&self, truncate: bool) -> Result<(Checkpoint, Option<Synced>)> {
        self.call(|r| Cmd::Checkpoint(truncate, r)).await?
    }

    /// Writes a level-9 snapshot of the current position to `path`, encoded on a blocking
    /// thread while the shipper goes on capturing. `None` when there is nothing to snapshot
    /// yet or the write barrier was busy.
    pub async fn snapshot(&self, path: PathBuf) -> Result<Option<Header>> {
        let _one = self.snap.lock().await;
        let Some(view) = self.call(Cmd::SnapshotView).await?? else { return Ok(None) };
        let written = tokio::task::spawn_blocking(move || view.write(&path)).await;
        // Always end the pinning read, or checkpoints stay partial for good.
        self.call(Cmd::EndSnapshot).await?;
        Ok(Some(written.map_err(|e| Error::Task(format!("snapshot task failed: {e}")))??))
    }

    /// The database's page checksums at a TXID just captured (replica validation), read off
    /// the shipper thread like a snapshot. `None` when the write barrier was busy or nothing
    /// was captured yet.
    pub async fn page_sums(&self) -> Result<Option<PageSums>> {
        let _one = self.snap.lock().await;
        let Some(view) = self.call(Cmd::SnapshotView).await?? else { return Ok(None) };
        let sums = tokio::task::spawn_blocking(move || view.page_sums()).await;
        self.call(Cmd::EndSnapshot).await?;
        Ok(Some(sums.map_err(|e| Error::Task(format!("checksum task failed: {e}")))??))
    }

    /// Current position.
    pub async fn position(&self) -> Result<Option<Position>> {
        self.call(Cmd::Position).await
    }

    /// Database page size.
    pub fn page_size(&self) -> u32 {
        self.page_size
    }

    /// Meta directory root.
    pub fn meta_root(&self) -> &std::path::Path {
        self.meta.root()
    }

    /// The meta directory, as the shipper opened (and cleaned) it.
    pub fn meta(&self) -> &MetaDir {
        &self.meta
    }
}

/// Snapshots read from the database, for a replica that has none to merge one from.
impl sluice_engine::write::ImageSource for ShipperHandle {
    fn position(&self) -> futures::future::BoxFuture<'_, Result<Option<TxId>>> {
        Box::pin(async move { Ok(ShipperHandle::position(self).await?.map(|p| p.txid)) })
    }

    fn write_image(&self, path: PathBuf) -> futures::future::BoxFuture<'_, Result<Option<Header>>> {
        Box::pin(self.snapshot(path))
    }

    fn scratch_dir(&self) -> &std::path::Path {
        self.meta_root()
    }
}
