//! A replica opened for reading: one per URL per process, shared by every connection, with
//! one poller that publishes a new [`View`] whenever new files appear.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use sluice_ltx::TxId;
use sluice_storage::{FileInfo, ReplicaClient};

use super::fetch::Fetcher;
use super::hydrate::{self, Hydration, Hydrator};
use super::view::{FileIndex, View};
use super::{ReadOptions, block_on, runtime};
use crate::error::{Error, Result};
use crate::restore::{self, Target};

/// Pages read from storage after which automatic hydration starts: about one per 4 MiB of
/// database (a round trip costs about what a few megabytes of a download do), at least 16 —
/// a workload, not a glance — and at most 1,024.
fn auto_hydrate_after(db_bytes: u64) -> u64 {
    (db_bytes / (4 << 20)).clamp(16, 1024)
}

/// Open replicas of this process, by URL and options.
type Registry = Mutex<HashMap<(String, ReadOptions, Hydration), Weak<Replica>>>;

fn registry() -> &'static Registry {
    static R: std::sync::OnceLock<Registry> = std::sync::OnceLock::new();
    R.get_or_init(Default::default)
}

/// A replica opened for reading.
pub struct Replica {
    client: ReplicaClient,
    opts: ReadOptions,
    latest: RwLock<Arc<View>>,
    /// Headers and indexes of files seen, so re-plans (time travel) fetch only new ones.
    known: Mutex<HashMap<(u8, TxId, TxId), Arc<FileIndex>>>,
    /// Shared with the open's index reads, which seed the cache.
    fetcher: Arc<Fetcher>,
    last_poll: Mutex<Option<Instant>>,
    /// The last poll failed (logged once until one succeeds).
    poll_failing: Mutex<bool>,
    /// This process writes the replica (it holds the lease): nobody else adds files, so the
    /// writer refreshes the view itself after each upload instead of polling.
    writing: std::sync::atomic::AtomicBool,
    /// The local copy, when hydration is on, and its background task.
    hydrator: std::sync::OnceLock<Arc<Hydrator>>,
    /// Pages read from storage (for automatic hydration).
    remote_reads: std::sync::atomic::AtomicU64,
    hydrate_task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for Replica {
    fn drop(&mut self) {
        if let Some(h) = self.hydrator.get() {
            if let Some(t) = self.hydrate_task.lock().unwrap_or_else(|p| p.into_inner()).take() {
                t.abort();
            }
            h.close();
        }
    }
}

impl Replica {
    /// The replica at `url` with `opts`, opened once per process and shared; its poller runs
    /// while any caller holds it. Blocking; errors name what failed (URL, listing, a file).
    pub fn open_shared(url: &str, opts: ReadOptions) -> Result<Arc<Replica>> {
        Replica::open_shared_with(url, opts, false)
    }

    /// Like [`Replica::open_shared`]; with `allow_empty`, an empty replica opens as an empty
    /// database (for write mode, which starts a new database there).
    pub fn open_shared_with(url: &str, opts: ReadOptions, allow_empty: bool) -> Result<Arc<Replica>> {
        Replica::open_shared_hydrated(url, opts, allow_empty, &Hydration::Off)
    }

    /// Like [`Replica::open_shared_with`], keeping a local copy as `hydration` says.
    pub fn open_shared_hydrated(
        url: &str,
        opts: ReadOptions,
        allow_empty: bool,
        hydration: &Hydration,
    ) -> Result<Arc<Replica>> {
        let mut reg = registry().lock().unwrap_or_else(|p| p.into_inner());
        let key = (url.to_string(), opts, hydration.clone());
        if let Some(r) = reg.get(&key).and_then(Weak::upgrade) {
            return Ok(r);
        }
        let client = ReplicaClient::from_url(url)?;
        let replica = Replica::open_inner(client, opts, allow_empty, hydration)?;
        reg.retain(|_, w| w.strong_count() > 0);
        reg.insert(key, Arc::downgrade(&replica));
        Ok(replica)
    }

    /// Opens `client`'s replica (not shared): plans the latest state and starts the poller.
    pub fn open(client: ReplicaClient, opts: ReadOptions) -> Result<Arc<Replica>> {
        Replica::open_inner(client, opts, false, &Hydration::Off)
    }

    /// Like [`Replica::open`], keeping a local copy as `hydration` says.
    pub fn open_hydrated(client: ReplicaClient, opts: ReadOptions, hydration: &Hydration) -> Result<Arc<Replica>> {
        Replica::open_inner(client, opts, false, hydration)
    }

    /// Like [`Replica::open`], but an empty replica opens as an empty database (write mode
    /// starts a new database there).
    pub fn open_or_empty(client: ReplicaClient, opts: ReadOptions) -> Result<Arc<Replica>> {
        Replica::open_inner(client, opts, true, &Hydration::Off)
    }

    fn open_inner(
        client: ReplicaClient,
        opts: ReadOptions,
        allow_empty: bool,
        hydration: &Hydration,
    ) -> Result<Arc<Replica>> {
        // First: a kept file in use elsewhere fails the open before any request.
        let hydrator = Hydrator::new(hydration)?.map(Arc::new);
        let desc = client.description().to_string();
        let c = client.clone();
        let fetcher = Arc::new(Fetcher::new(opts.cache_bytes));
        let f = fetcher.clone();
        let files = block_on(
            async move {
                let plan = match restore::plan_restore(&c, Target::Latest).await {
                    Err(Error::EmptyReplica { .. }) if allow_empty => return Ok(Vec::new()),
                    r => r?,
                };
                FileIndex::fetch_all(&c, &plan, &|_| None, &|x, head| f.seed(x, head), false).await
            },
            opts.read_timeout.max(Duration::from_secs(30)),
            &desc,
            || "the restore plan and page indexes".into(),
        )?;
        let known = files.iter().map(|f| (id(&f.info), f.clone())).collect();
        let view = if files.is_empty() { View::empty() } else { View::build(files)? };
        tracing::info!(replica = %desc, txid = %view.txid, pages = view.commit, "opened replica for reading");
        let replica = Arc::new(Replica {
            client,
            opts,
            latest: RwLock::new(Arc::new(view)),
            known: Mutex::new(known),
            fetcher,
            last_poll: Mutex::new(Some(Instant::now())),
            poll_failing: Mutex::new(false),
            writing: std::sync::atomic::AtomicBool::new(false),
            hydrator: hydrator.clone().map(std::sync::OnceLock::from).unwrap_or_default(),
            remote_reads: std::sync::atomic::AtomicU64::new(0),
            hydrate_task: Mutex::new(None),
        });
        runtime().spawn(poll_loop(Arc::downgrade(&replica), opts.poll_interval));
        if let Some(h) = hydrator {
            replica.start_hydration(h);
        }
        Ok(replica)
    }

    /// Hydration progress in percent of the plan's bytes (100 once reads are local); `None`
    /// without hydration.
    pub fn hydration_progress(&self) -> Option<u8> {
        self.hydrator.get().map(|h| h.progress())
    }

    fn start_hydration(self: &Arc<Self>, h: Arc<Hydrator>) {
        let task = runtime().spawn(hydrate::run(Arc::downgrade(self), h));
        *self.hydrate_task.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
    }

    /// Automatic hydration ([`ReadOptions::auto_hydrate_bytes`]): a database no larger than
    /// the limit that keeps needing pages from storage is copied to a private temp file in
    /// the background, as with `Hydration::Temp`.
    fn note_remote_read(self: &Arc<Self>, view: &View) {
        let limit = self.opts.auto_hydrate_bytes;
        if limit == 0 || self.hydrator.get().is_some() || view.file_size() > limit {
            return;
        }
        let n = self.remote_reads.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        if n != auto_hydrate_after(view.file_size()) {
            return;
        }
        match Hydrator::new(&Hydration::Temp) {
            Ok(Some(h)) => {
                let h = Arc::new(h);
                if self.hydrator.set(h.clone()).is_ok() {
                    tracing::info!(replica = %self.description(), bytes = view.file_size(), reads = n,
                        "hydrating in the background: the database is within auto-hydrate and keeps being read from storage");
                    self.start_hydration(h);
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(replica = %self.description(), error = %e, "cannot start automatic hydration"),
        }
    }

    /// The hydrated copy serves reads: the page cache is no longer needed.
    pub(crate) fn release_cache(&self) {
        self.fetcher.cache.clear();
    }

    /// The redacted URL.
    pub fn description(&self) -> &str {
        self.client.description()
    }

    /// The newest view: what a new read transaction should see.
    pub fn latest(&self) -> Arc<View> {
        self.latest.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The view as of `target`, planned exactly as `sluice restore` plans it. Blocking.
    pub fn view_at(self: &Arc<Self>, target: Target) -> Result<Arc<View>> {
        if target == Target::Latest {
            return Ok(self.latest());
        }
        let me = self.clone();
        block_on(
            async move {
                let plan = restore::plan_restore(&me.client, target).await?;
                let files = FileIndex::fetch_all(
                    &me.client,
                    &plan,
                    &|f| me.known_index(f),
                    &|x, head| me.fetcher.seed(x, head),
                    false,
                )
                .await?;
                me.remember(&files);
                View::build(files).map(Arc::new)
            },
            self.opts.read_timeout,
            self.description(),
            || format!("the restore plan for {target:?}"),
        )
    }

    /// Reads page `pgno` of `view` into `buf` (one page). Blocking, bounded by the read
    /// timeout; zeros for the lock page and pages past the end.
    pub fn read_page(self: &Arc<Self>, view: &Arc<View>, pgno: u32, buf: &mut [u8]) -> Result<()> {
        if buf.len() != view.page_size as usize {
            return Err(Error::Task(format!("read of {} bytes from {}-byte pages", buf.len(), view.page_size)));
        }
        if let Some(h) = self.hydrator.get()
            && h.read(view, pgno, buf, self.description())?
        {
            return Ok(());
        }
        // Cache hits cost a lookup, not a hand-off to the runtime and back (the hand-off is
        // most of a warm point query's time).
        if let Some(page) = self.fetcher.page_now(view, pgno, self.description())? {
            buf.copy_from_slice(&page);
            return Ok(());
        }
        self.note_remote_read(view);
        let (me, v) = (self.clone(), view.clone());
        let page = block_on(
            async move { me.fetcher.page(&me.client, &v, pgno).await },
            self.opts.read_timeout,
            self.description(),
            || format!("page {pgno} of TXID {}", view.txid),
        )?;
        buf.copy_from_slice(&page);
        Ok(())
    }

    /// Puts `data`, page `pgno` as `view` has it, into the page cache: a writer's own pages
    /// are then read back without a request (and while storage is unreachable).
    pub fn seed_page(&self, view: &View, pgno: u32, data: &[u8]) -> Result<()> {
        if data.len() == view.page_size as usize
            && let Some(loc) = view.locate(pgno, self.description())?
        {
            self.fetcher.cache.insert(super::fetch::key(view, pgno, &loc), bytes::Bytes::copy_from_slice(data));
        }
        Ok(())
    }

    /// Lists the replica for new files now and publishes the new view (a writer does this
    /// after its uploads). Blocking.
    pub fn refresh(self: &Arc<Self>) -> Result<Arc<View>> {
        let me = self.clone();
        block_on(
            async move {
                me.poll().await?;
                *me.last_poll.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
                Ok(me.latest())
            },
            self.opts.read_timeout,
            self.description(),
            || "new files".into(),
        )
    }

    /// Stops (or resumes) the background poller while this process writes the replica.
    pub fn set_writing(&self, writing: bool) {
        self.writing.store(writing, std::sync::atomic::Ordering::Relaxed);
    }

    /// The client (for a writer of the same replica).
    pub fn client(&self) -> &ReplicaClient {
        &self.client
    }

    /// Time since the last successful poll.
    pub fn lag(&self) -> Option<Duration> {
        self.last_poll.lock().unwrap_or_else(|p| p.into_inner()).map(|t| t.elapsed())
    }

    fn known_index(&self, f: &FileInfo) -> Option<Arc<FileIndex>> {
        self.known.lock().unwrap_or_else(|p| p.into_inner()).get(&id(f)).cloned()
    }

    fn remember(&self, files: &[Arc<FileIndex>]) {
        let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        for f in files {
            known.entry(id(&f.info)).or_insert_with(|| f.clone());
        }
    }

    /// One poll: level-0 files after the current TXID (one LIST when nothing changed). Files
    /// that continue the view extend it; anything else (a gap left by retention, a new
    /// snapshot) re-plans from a full listing.
    async fn poll(&self) -> Result<()> {
        let current = self.latest();
        let next = TxId(current.txid.0 + 1);
        let new = self.client.list_level_from(0, next).await?;
        if new.is_empty() {
            return Ok(());
        }
        // A hydrated reader applies new files whole: one request per file, bytes handed over.
        let hydrated = self.hydrator.get().filter(|h| h.wants_whole_files());
        let head = |x: &FileIndex, bytes: &bytes::Bytes| {
            self.fetcher.seed(x, bytes);
            if let Some(h) = hydrated
                && bytes.len() as u64 == x.info.size
            {
                h.stash(id(&x.info), bytes.clone());
            }
        };
        let view = if current.txid.0 > 0
            && new[0].min_txid == next
            && new.windows(2).all(|w| w[1].min_txid.0 == w[0].max_txid.0 + 1)
        {
            let files =
                FileIndex::fetch_all(&self.client, &new, &|f| self.known_index(f), &head, hydrated.is_some()).await?;
            self.remember(&files);
            current.extend(files)?
        } else {
            let plan = restore::plan_restore(&self.client, Target::Latest).await?;
            let files = FileIndex::fetch_all(&self.client, &plan, &|f| self.known_index(f), &head, false).await?;
            self.remember(&files);
            View::build(files)?
        };
        if view.txid > current.txid {
            tracing::debug!(replica = %self.description(), txid = %view.txid, pages = view.commit, "new view");
            *self.latest.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(view);
            if let Some(h) = self.hydrator.get() {
                h.wake.notify_one();
            }
        }
        Ok(())
    }
}

fn id(f: &FileInfo) -> (u8, TxId, TxId) {
    (f.level, f.min_txid, f.max_txid)
}

/// Polls while anyone holds the replica. A failed poll keeps the current view: it is still
/// a consistent state, only older; `lag` tells how much.
async fn poll_loop(replica: Weak<Replica>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let Some(r) = replica.upgrade() else { return };
        if r.writing.load(std::sync::atomic::Ordering::Relaxed) {
            continue;
        }
        let result = tokio::time::timeout(r.opts.read_timeout, r.poll()).await;
        let mut failing = r.poll_failing.lock().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok(Ok(())) => {
                *r.last_poll.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
                if std::mem::take(&mut *failing) {
                    tracing::info!(replica = %r.description(), "polling the replica works again");
                }
            }
            Ok(Err(e)) if !*failing => {
                *failing = true;
                tracing::warn!(replica = %r.description(), error = %e, "polling the replica failed; serving the last state");
            }
            Err(_) if !*failing => {
                *failing = true;
                tracing::warn!(replica = %r.description(), "polling the replica timed out; serving the last state");
            }
            _ => {}
        }
    }
}
