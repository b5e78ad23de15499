//! The VFS's write mode, without FFI: writes go to the [`WriteBuffer`]; every sync interval
//! (and on demand, and at close) the committed pages become one local L0 file with the next
//! TXID, which the same [`ReplicaWriter`] as `sluice replicate`'s uploads, compacts and
//! snapshots. Reads see the buffer first, then the replica's view, which the session refreshes
//! itself after each upload (it holds the lease: nobody else adds files).

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::future::BoxFuture;
use sluice_ltx::{Header, TxId, lock_pgno};

use super::buffer::{Batch, Fsync, WriteBuffer};
use super::local::MetaDir;
use super::metrics::DbMetrics;
use super::outage::Outage;
use super::{ImageSource, ReplicaWriter, Tasks, WriterOptions, connect, now_ms};
use crate::error::{Error, Result};
use crate::perms::Perms;
use crate::read::{Replica, View, block_on, runtime};

/// Settings of write mode.
#[derive(Clone, Debug)]
pub struct WriteOptions {
    /// How often committed pages are synced to the replica.
    pub sync_interval: Duration,
    /// The write buffer; its local L0 staging is `<buffer>.sluice/` beside it.
    pub buffer_path: PathBuf,
    /// When commits reach the disk.
    pub fsync: Fsync,
    /// Most bytes the buffer may hold before writes fail with "full" (0: no limit).
    pub buffer_max: u64,
    /// The replica writer's settings (compaction, snapshots, retention, lease TTL).
    pub writer: WriterOptions,
}

struct State {
    buffer: Option<WriteBuffer>,
    /// Highest TXID written locally (the next sync takes the one after).
    last_txid: TxId,
    /// The sync in progress: the TXID it writes and how many of the buffer's transactions
    /// it holds. `last_txid` moves only once that file exists, so a failed sync leaves no
    /// gap in the TXIDs, and `wait_durable` knows which commits the sync covers.
    in_flight: Option<(TxId, u64)>,
}

/// A process's write access to one replica.
pub struct WriteSession {
    replica: Arc<Replica>,
    writer: ReplicaWriter,
    tasks: Mutex<Option<Tasks>>,
    state: Mutex<State>,
    /// Serialises syncs (the interval task, `sync_now`, close).
    syncing: tokio::sync::Mutex<()>,
    meta: MetaDir,
    opts: WriteOptions,
    stop: tokio::sync::watch::Sender<bool>,
}

impl WriteSession {
    /// Takes the replica's lease (failing with [`Error::Conflict`] naming the holder when
    /// another writer has it), recovers a buffer a crash left when the replica has not moved
    /// past it, uploads what is staged locally, and starts syncing every interval. Blocking.
    pub fn open(replica: Arc<Replica>, opts: WriteOptions) -> Result<Arc<WriteSession>> {
        let perms = Perms::PRIVATE;
        let meta_root = PathBuf::from(format!("{}.sluice", opts.buffer_path.display()));
        let meta = MetaDir::open(meta_root.clone(), perms)?;
        let metrics = Arc::new(DbMetrics { db: opts.buffer_path.display().to_string(), ..DbMetrics::default() });
        let (client, wopts, db) = (replica.client().clone(), opts.writer.clone(), opts.buffer_path.clone());
        let (stop, mut stop_rx) = tokio::sync::watch::channel(false);
        let m = metrics.clone();
        let (lease, index) = block_on(
            async move { connect(&client, &meta_root, &db, &wopts, &m, &Outage::default(), &mut stop_rx).await },
            Duration::from_secs(60),
            replica.description(),
            || "the replica lease".into(),
        )?;
        replica.set_writing(true);
        let writer = ReplicaWriter::new(
            replica.client().clone(),
            meta.clone(),
            lease,
            index,
            metrics,
            Arc::new(Outage::default()),
            opts.writer.clone(),
        );
        // Files staged before a crash go up first, so the view below includes them.
        let w = writer.clone();
        block_on(async move { w.upload_now().await }, Duration::from_secs(60), replica.description(), || {
            "files staged before a restart".into()
        })?;
        let view = replica.refresh()?;
        let local_max = meta.list_l0()?.last().map_or(TxId(0), |(_, max)| *max);
        let buffer = WriteBuffer::recover(&opts.buffer_path, opts.fsync)?.and_then(|b| {
            // The replica may be past the buffer's base by files this buffer made: a crash
            // after a sync staged its L0 file but before the buffer recorded it. The newest
            // file is then ours (staged here; TXIDs are create-only, so nobody wrote after
            // it), every file since the base came from this buffer, and replaying all its
            // committed transactions on top gives the same state (whole pages, the last
            // commit's size): they are kept.
            if b.base() == view.txid || (view.txid > b.base() && local_max == view.txid) {
                if b.pending().0 > 0 {
                    tracing::info!(buffer = %b.path().display(), txns = b.pending().0, "replaying transactions the buffer kept");
                }
                Some(b)
            } else {
                if b.pending().0 > 0 {
                    tracing::warn!(buffer = %b.path().display(), base = %b.base(), replica = %view.txid,
                        txns = b.pending().0, "the replica moved past the write buffer; discarding its unsynced transactions");
                }
                None
            }
        });
        let session = Arc::new(WriteSession {
            replica,
            writer: writer.clone(),
            tasks: Mutex::new(None),
            state: Mutex::new(State { buffer, last_txid: view.txid.max(local_max), in_flight: None }),
            syncing: tokio::sync::Mutex::new(()),
            meta,
            opts,
            stop,
        });
        let source: Arc<dyn ImageSource> =
            Arc::new(ViewImage { session: Arc::downgrade(&session), scratch: session.meta.root().to_path_buf() });
        let tasks = {
            let _rt = runtime().enter();
            writer.start(source, false, None)
        };
        *session.tasks.lock().unwrap_or_else(|p| p.into_inner()) = Some(tasks);
        runtime().spawn(sync_loop(Arc::downgrade(&session), session.opts.sync_interval, session.stop.subscribe()));
        Ok(session)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes a page of the open transaction.
    pub fn write_page(&self, pgno: u32, data: &[u8]) -> Result<()> {
        let mut st = self.state();
        if st.buffer.is_none() {
            let base = self.replica.latest().txid;
            st.buffer = Some(WriteBuffer::create(
                &self.opts.buffer_path,
                data.len() as u32,
                base,
                Perms::PRIVATE,
                self.opts.fsync,
            )?);
        }
        let b = st.buffer.as_mut().ok_or_else(|| Error::Task("BUG: no buffer".into()))?;
        if self.opts.buffer_max > 0 && b.size() >= self.opts.buffer_max {
            return Err(Error::BufferFull { path: b.path().to_path_buf(), limit: self.opts.buffer_max });
        }
        b.write_page(pgno, data)
    }

    /// Commits the open transaction; the database has `commit` pages after it.
    pub fn commit(&self, commit: u32) -> Result<()> {
        match self.state().buffer.as_mut() {
            Some(b) => b.commit(commit),
            None => Ok(()),
        }
    }

    /// Drops the open transaction.
    pub fn rollback(&self) -> Result<()> {
        match self.state().buffer.as_mut() {
            Some(b) => b.rollback(),
            None => Ok(()),
        }
    }

    /// Reads page `pgno` as of the last commit: the buffer's version if it has one, else the
    /// replica's latest view. Always the latest (no pinned view): while this process holds
    /// the lease nobody else changes the replica, and a sync only moves pages from the buffer
    /// to the view. The view is taken under the buffer's lock, after which a sync may release
    /// pages only once the view holds them.
    pub fn read_page(&self, pgno: u32, buf: &mut [u8]) -> Result<()> {
        let view = {
            let st = self.state();
            if let Some(b) = st.buffer.as_ref()
                && b.page_size() as usize == buf.len()
                && b.read_page(pgno, buf)?
            {
                return Ok(());
            }
            self.replica.latest()
        };
        if pgno > view.commit {
            buf.fill(0);
            return Ok(());
        }
        self.replica.read_page(&view, pgno, buf)
    }

    /// Database size in pages: the buffer's last commit, else the latest view's.
    pub fn commit_size(&self) -> u32 {
        let st = self.state();
        st.buffer.as_ref().and_then(WriteBuffer::commit_size).unwrap_or_else(|| self.replica.latest().commit)
    }

    /// Page size of the database written (the view's until the first write).
    pub fn page_size(&self) -> u32 {
        let st = self.state();
        st.buffer.as_ref().map_or_else(|| self.replica.latest().page_size, WriteBuffer::page_size)
    }

    /// Committed transactions and bytes not yet in the replica: those still in the buffer,
    /// plus those a sync moved into local files that are not uploaded yet (an outage).
    pub fn pending(&self) -> (u64, u64) {
        let (txns, bytes) = self.state().buffer.as_ref().map_or((0, 0), WriteBuffer::pending);
        let m = self.writer.metrics();
        let local = m.local_txid.load(std::sync::atomic::Ordering::Relaxed);
        let unuploaded = local.saturating_sub(self.writer.remote_max().0);
        let unuploaded_bytes =
            if unuploaded > 0 { m.pending_bytes.load(std::sync::atomic::Ordering::Relaxed) } else { 0 };
        (txns + unuploaded, bytes + unuploaded_bytes)
    }

    /// Syncs now and uploads; the replica's TXID afterwards. Blocking.
    pub fn sync_now(self: &Arc<Self>) -> Result<TxId> {
        let me = self.clone();
        // Its own task: a caller that stops waiting must not cancel a sync halfway (its
        // local file may be written, its TXID not yet recorded).
        let sync = runtime().spawn(async move { me.sync().await });
        block_on(
            async move { sync.await.map_err(|e| Error::Task(e.to_string()))? },
            Duration::from_secs(60),
            self.replica.description(),
            || "a sync".into(),
        )
    }

    /// Waits until everything committed so far is in the replica (riding the periodic syncs);
    /// `false` if `timeout` passed first.
    pub fn wait_durable(&self, timeout: Duration) -> bool {
        let target = {
            let st = self.state();
            let pending = st.buffer.as_ref().map_or(0, |b| b.pending().0);
            match st.in_flight {
                // Commits after the batch being written go into the TXID after it.
                Some((txid, taken)) if pending > taken => TxId(txid.0 + 1),
                Some((txid, _)) => txid,
                None if pending > 0 => TxId(st.last_txid.0 + 1),
                None => st.last_txid,
            }
        };
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if self.replica.latest().txid >= target {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Syncs what is committed, stops the writer's tasks and gives the lease back. Blocking.
    pub fn close(self: &Arc<Self>) -> Result<()> {
        let synced = self.sync_now();
        let _ = self.stop.send(true);
        let tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(tasks) = tasks {
            let w = self.writer.clone();
            let last = block_on(async move { Ok(w.finish(tasks, false).await) }, Duration::from_secs(60), "", || {
                "the final upload".into()
            })?;
            if let Some(e) = last {
                return Err(e);
            }
        }
        self.replica.set_writing(false);
        synced.map(|_| ())
    }

    /// One sync: committed pages into a local L0 file with the next TXID, uploaded, and the
    /// view refreshed to include it.
    async fn sync(&self) -> Result<TxId> {
        let _one = self.syncing.lock().await;
        if let Some((batch, txid, page_size)) = self.take_batch() {
            let written = self.write_l0(&batch, txid, page_size).await;
            let header = {
                let mut st = self.state();
                st.in_flight = None;
                // A file that exists despite an error (its directory's fsync failed) keeps
                // its TXID: the uploader may take it.
                if written.is_ok() || self.meta.l0_path(txid, txid).exists() {
                    st.last_txid = txid;
                }
                let header = written?;
                if let Some(b) = st.buffer.as_mut() {
                    b.synced(&batch, txid)?;
                }
                header
            };
            self.writer.captured(&header);
        }
        let uploaded = self.writer.upload_now().await?;
        let r = self.replica.clone();
        let view = tokio::task::spawn_blocking(move || r.refresh()).await.map_err(|e| Error::Task(e.to_string()))??;
        let mut st = self.state();
        if let Some(b) = st.buffer.as_mut() {
            // The pages leave the buffer for the view: keep them in the page cache, so the
            // writer reads its own pages back without a request (SQLite reads page 1 at every
            // transaction), also while storage is unreachable.
            let mut page = vec![0u8; b.page_size() as usize];
            for (pgno, at) in b.release(view.txid) {
                b.read_at(at, &mut page)?;
                self.replica.seed_page(&view, pgno, &page)?;
            }
            b.reset_if_idle()?;
        }
        Ok(uploaded)
    }

    fn take_batch(&self) -> Option<(Batch, TxId, u32)> {
        let mut st = self.state();
        let batch = st.buffer.as_ref()?.batch()?;
        let page_size = st.buffer.as_ref()?.page_size();
        let txid = TxId(st.last_txid.0.max(self.writer.remote_max().0) + 1);
        st.in_flight = Some((txid, batch.txns));
        Some((batch, txid, page_size))
    }

    /// Encodes the batch's pages (read from the buffer file without holding the lock, so
    /// writes go on) into local L0 `txid`.
    async fn write_l0(&self, batch: &Batch, txid: TxId, page_size: u32) -> Result<Header> {
        let path = self.opts.buffer_path.clone();
        let meta = self.meta.clone();
        let pages = batch.pages.clone();
        let commit = batch.commit;
        // The first file of a new database is a full image: pages it never wrote are zeros.
        let full = txid == TxId(1);
        tokio::task::spawn_blocking(move || {
            let file = File::open(&path).map_err(|e| Error::io("open write buffer", &path, e))?;
            let header = Header::new(page_size, commit.max(1), txid, txid, now_ms());
            let lock = lock_pgno(page_size);
            let all: BTreeMap<u32, Option<u64>> = if full {
                (1..=commit).filter(|p| *p != lock).map(|p| (p, pages.get(&p).copied())).collect()
            } else {
                pages.iter().map(|(p, at)| (*p, Some(*at))).collect()
            };
            let mut buf = vec![0u8; page_size as usize];
            meta.write_l0(header, true, |sink| {
                for (p, at) in &all {
                    match at {
                        Some(at) => WriteBuffer::read_record(&file, *at, &mut buf)
                            .map_err(|e| Error::io("read write buffer", &path, e))?,
                        None => buf.fill(0),
                    }
                    sink(*p, &buf)?;
                }
                Ok(())
            })?;
            Ok(header)
        })
        .await
        .map_err(|e| Error::Task(e.to_string()))?
    }
}

/// Syncs every interval while the session lives; failures are retried at the next one (the
/// writer logs outages once).
async fn sync_loop(
    session: std::sync::Weak<WriteSession>,
    every: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut warned: Option<String> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
        let Some(s) = session.upgrade() else { return };
        // New commits call for a sync; so does an upload the background uploader made on its
        // own (after an outage): the view, `sluice_txid()` and `wait_durable` follow it, and
        // the buffer lets go of what it holds. Failed uploads are the writer's to retry.
        let new_commits = s.state().buffer.as_ref().is_some_and(|b| b.pending().0 > 0);
        if !new_commits && s.writer.remote_max() <= s.replica.latest().txid {
            continue;
        }
        match s.sync().await {
            // Retried anyway, but said once: a conflict or damaged local files need a person.
            Err(e) if super::outage::is_permanent(&e) => {
                if warned.replace(e.to_string()).as_deref() != Some(&e.to_string()) {
                    tracing::warn!(error = %e, "sync failed; retrying at every interval");
                }
            }
            Err(e) => tracing::debug!(error = %e, "sync failed; retrying at the next interval"),
            Ok(_) => {}
        }
    }
}

/// Snapshots for a replica the session writes that has none to merge one from: every page
/// of the current view.
struct ViewImage {
    session: std::sync::Weak<WriteSession>,
    scratch: PathBuf,
}

impl ImageSource for ViewImage {
    fn position(&self) -> BoxFuture<'_, Result<Option<TxId>>> {
        Box::pin(async move { Ok(self.session.upgrade().map(|s| s.replica.latest().txid).filter(|t| t.0 > 0)) })
    }

    fn write_image(&self, path: PathBuf) -> BoxFuture<'_, Result<Option<Header>>> {
        Box::pin(async move {
            let Some(s) = self.session.upgrade() else { return Ok(None) };
            let view = s.replica.latest();
            let r = s.replica.clone();
            tokio::task::spawn_blocking(move || write_view_image(&r, &view, &path))
                .await
                .map_err(|e| Error::Task(e.to_string()))?
                .map(Some)
        })
    }

    fn scratch_dir(&self) -> &Path {
        &self.scratch
    }
}

fn write_view_image(r: &Arc<Replica>, view: &Arc<View>, path: &Path) -> Result<Header> {
    let header = Header::new(view.page_size, view.commit.max(1), TxId(1), view.txid, view.timestamp_ms);
    let file = Perms::PRIVATE.create(path).map_err(|e| Error::io("create", path, e))?;
    let ltx = |source| Error::Ltx { file: path.display().to_string(), source };
    let mut enc = sluice_ltx::Encoder::new(std::io::BufWriter::new(file), header).map_err(ltx)?;
    let mut buf = vec![0u8; view.page_size as usize];
    let lock = lock_pgno(view.page_size);
    for p in (1..=view.commit).filter(|p| *p != lock) {
        r.read_page(view, p, &mut buf)?;
        enc.encode_page(p, &buf).map_err(ltx)?;
    }
    let (w, _) = enc.finish(0).map_err(ltx)?;
    let f = w.into_inner().map_err(|e| Error::io("write", path, e.into_error()))?;
    f.sync_all().map_err(|e| Error::io("fsync", path, e))?;
    Ok(header)
}
