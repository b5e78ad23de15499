//! What a reader knows of a replica: each file's header and page index, and the page map of
//! one TXID built from a restore plan (later files win, cut at the final commit).

use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use sluice_ltx::index::{ESTIMATED_INDEX_TAIL, TailIndex, index_from_tail, parse_index};
use sluice_ltx::{HEADER_SIZE, Header, PageIndexEntry, TxId, lock_pgno};
use sluice_storage::{FileInfo, ReplicaClient};

use crate::error::{Error, Result};
use crate::restore::plan::file_label;

/// Files whose index is read at once when building a view.
const INDEX_READS_IN_FLIGHT: usize = 16;

/// One LTX file of the replica as a reader needs it.
#[derive(Debug)]
pub struct FileIndex {
    /// Where it is.
    pub info: FileInfo,
    /// Its header.
    pub header: Header,
    /// Its page index, by ascending page number.
    pub entries: Vec<PageIndexEntry>,
}

impl FileIndex {
    /// `<level>/<min>-<max>.ltx`, for messages.
    pub fn label(&self) -> String {
        file_label(&self.info)
    }

    /// Reads the header and page index of `info`: the whole file when it is small, else its
    /// first bytes and its tail (in parallel), and the index's start if the tail missed it.
    /// Returns the bytes fetched from the start of the file too: frames wholly inside them
    /// (page 1 of a snapshot, every page of a small file) need no request of their own.
    /// `whole`: read the file in one request however large (a hydrated reader applies it).
    pub async fn fetch(client: &ReplicaClient, info: &FileInfo, whole: bool) -> Result<(FileIndex, Bytes)> {
        let (level, min, max) = (info.level, info.min_txid, info.max_txid);
        let ltx = |source| Error::Ltx { file: file_label(info), source };
        let size = info.size;
        let tail_len = tail_estimate(size);
        let (head, tail) = if whole || size <= tail_len + HEAD_BYTES {
            let all = client.get_range(level, min, max, 0..size).await?;
            (all.clone(), all)
        } else {
            futures::try_join!(
                client.get_range(level, min, max, 0..HEAD_BYTES),
                client.get_range(level, min, max, size - tail_len..size)
            )?
        };
        let header = Header::from_bytes(&head[..HEADER_SIZE.min(head.len())]).map_err(ltx)?;
        let entries = match index_from_tail(size, &tail).map_err(ltx)? {
            TailIndex::Complete(entries, _) => entries,
            TailIndex::NeedRange(loc) => {
                let bytes = client.get_range(level, min, max, loc.range).await?;
                parse_index(&bytes).map_err(ltx)?
            }
        };
        if header.min_txid != min || header.max_txid != max {
            return Err(Error::FileMismatch {
                file: file_label(info),
                reason: format!("header says TXIDs {}-{}", header.min_txid, header.max_txid),
            });
        }
        Ok((FileIndex { info: info.clone(), header, entries }, head))
    }

    /// Indexes of `plan` in order, reusing those `known` returns; `head` gets each newly
    /// fetched file with the bytes read from its start (all of it with `whole`).
    pub async fn fetch_all(
        client: &ReplicaClient,
        plan: &[FileInfo],
        known: &(dyn Fn(&FileInfo) -> Option<Arc<FileIndex>> + Sync),
        head: &(dyn Fn(&FileIndex, &Bytes) + Sync),
        whole: bool,
    ) -> Result<Vec<Arc<FileIndex>>> {
        let mut slots: Vec<Option<Arc<FileIndex>>> = plan.iter().map(known).collect();
        let missing: Vec<(usize, FileInfo)> =
            plan.iter().enumerate().filter(|(i, _)| slots[*i].is_none()).map(|(i, f)| (i, f.clone())).collect();
        let fetched: Vec<(usize, FileIndex, Bytes)> = futures::stream::iter(missing.into_iter().map(|(i, f)| {
            let client = client.clone();
            async move { FileIndex::fetch(&client, &f, whole).await.map(|(x, b)| (i, x, b)) }
        }))
        .buffer_unordered(INDEX_READS_IN_FLIGHT)
        .try_collect()
        .await?;
        for (i, x, bytes) in fetched {
            head(&x, &bytes);
            slots[i] = Some(Arc::new(x));
        }
        Ok(slots.into_iter().flatten().collect())
    }
}

/// Bytes read from the start of a large file with its header: a snapshot's first frames
/// (page 1, the schema, early root pages) come with it, saving the first query round trips.
const HEAD_BYTES: u64 = 64 << 10;

/// Tail bytes to read for the page index: Litestream's 32 KiB estimate, scaled with the file
/// (an index entry takes about 9 bytes per frame, and frames of compressed 4 KiB pages
/// average over 1 KiB), so a large snapshot's index comes in one request, not two in a row.
fn tail_estimate(size: u64) -> u64 {
    (size / 128).clamp(ESTIMATED_INDEX_TAIL, 4 << 20)
}

/// Where a page's newest frame is: a file of the view, and the frame's byte range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Loc {
    /// Position of the file in [`View::files`].
    pub file: u32,
    pub offset: u64,
    pub size: u32,
}

/// The database as of one TXID: its size and, for every page, its newest frame.
#[derive(Debug)]
pub struct View {
    /// The TXID this view shows.
    pub txid: TxId,
    /// Page size.
    pub page_size: u32,
    /// Database size in pages.
    pub commit: u32,
    /// Creation time of the newest file applied (ms since the epoch).
    pub timestamp_ms: i64,
    /// Files of the plan, in order.
    pub(crate) files: Vec<Arc<FileIndex>>,
    /// Index `pgno - 1`; `None` for the lock page (never stored).
    pub(crate) pages: Vec<Option<Loc>>,
}

impl View {
    /// Builds the view of a plan's files (in plan order).
    pub fn build(files: Vec<Arc<FileIndex>>) -> Result<View> {
        let first = files.first().ok_or_else(|| Error::Task("BUG: empty restore plan".into()))?;
        let page_size = first.header.page_size;
        let mut view =
            View { txid: TxId(0), page_size, commit: 0, timestamp_ms: 0, files: Vec::new(), pages: Vec::new() };
        for f in files {
            view.apply(f)?;
        }
        Ok(view)
    }

    /// The view of an empty replica: no pages (write mode starts a new database on it).
    pub fn empty() -> View {
        View { txid: TxId(0), page_size: 4096, commit: 0, timestamp_ms: 0, files: Vec::new(), pages: Vec::new() }
    }

    /// A copy of this view with `files` applied after it (files that continue its TXIDs).
    pub fn extend(&self, files: Vec<Arc<FileIndex>>) -> Result<View> {
        let mut v = View {
            txid: self.txid,
            page_size: self.page_size,
            commit: self.commit,
            timestamp_ms: self.timestamp_ms,
            files: self.files.clone(),
            pages: self.pages.clone(),
        };
        for f in files {
            if f.info.min_txid.0 != v.txid.0 + 1 {
                return Err(Error::Gap { after: v.txid, next: f.label(), next_min: f.info.min_txid });
            }
            v.apply(f)?;
        }
        Ok(v)
    }

    fn apply(&mut self, f: Arc<FileIndex>) -> Result<()> {
        let h = &f.header;
        if self.files.is_empty() {
            self.page_size = h.page_size;
        }
        if h.page_size != self.page_size {
            return Err(Error::FileMismatch {
                file: f.label(),
                reason: format!("page size {} differs from earlier files' {}", h.page_size, self.page_size),
            });
        }
        let file = u32::try_from(self.files.len()).map_err(|_| Error::Task("too many files in one view".into()))?;
        // A shrinking commit drops the pages past the new end; a growing one adds slots.
        self.pages.resize(h.commit as usize, None);
        for e in &f.entries {
            if e.pgno > h.commit {
                continue;
            }
            let size = u32::try_from(e.size).map_err(|_| Error::FileMismatch {
                file: f.label(),
                reason: format!("page {} has a {}-byte frame", e.pgno, e.size),
            })?;
            self.pages[e.pgno as usize - 1] = Some(Loc { file, offset: e.offset, size });
        }
        self.commit = h.commit;
        self.txid = h.max_txid;
        self.timestamp_ms = h.timestamp_ms;
        self.files.push(f);
        Ok(())
    }

    /// Size of the database file: commit × page size.
    pub fn file_size(&self) -> u64 {
        u64::from(self.commit) * u64::from(self.page_size)
    }

    /// The frame of page `pgno`: `Ok(None)` for the lock page and pages past the end (read as
    /// zeros), an error for a page no file holds.
    pub(crate) fn locate(&self, pgno: u32, replica: &str) -> Result<Option<Loc>> {
        if pgno == 0 || pgno > self.commit {
            return Ok(None);
        }
        match self.pages[pgno as usize - 1] {
            Some(l) => Ok(Some(l)),
            None if pgno == lock_pgno(self.page_size) => Ok(None),
            None => Err(Error::PageNotInReplica { pgno, txid: self.txid, replica: replica.to_string() }),
        }
    }

    /// The file of a location.
    pub(crate) fn file(&self, loc: &Loc) -> &Arc<FileIndex> {
        &self.files[loc.file as usize]
    }
}
