//! What a reader knows of a replica: each file's header and page index, and the page map of
//! one TXID built from a restore plan (later files win, cut at the final commit).

use std::sync::Arc;

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
    /// header and its tail (in parallel), and the index's start if the tail missed it.
    pub async fn fetch(client: &ReplicaClient, info: &FileInfo) -> Result<FileIndex> {
        let (level, min, max) = (info.level, info.min_txid, info.max_txid);
        let ltx = |source| Error::Ltx { file: file_label(info), source };
        let size = info.size;
        let small = size <= ESTIMATED_INDEX_TAIL + HEADER_SIZE as u64;
        let (head, tail) = if small {
            let all = client.get_range(level, min, max, 0..size).await?;
            (all.slice(..HEADER_SIZE.min(all.len())), all)
        } else {
            let tail_start = size - ESTIMATED_INDEX_TAIL;
            futures::try_join!(
                client.get_range(level, min, max, 0..HEADER_SIZE as u64),
                client.get_range(level, min, max, tail_start..size)
            )?
        };
        let header = Header::from_bytes(&head).map_err(ltx)?;
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
        Ok(FileIndex { info: info.clone(), header, entries })
    }

    /// Indexes of `plan` in order, reusing those `known` returns.
    pub async fn fetch_all(
        client: &ReplicaClient,
        plan: &[FileInfo],
        known: &(dyn Fn(&FileInfo) -> Option<Arc<FileIndex>> + Sync),
    ) -> Result<Vec<Arc<FileIndex>>> {
        let mut slots: Vec<Option<Arc<FileIndex>>> = plan.iter().map(known).collect();
        let missing: Vec<(usize, FileInfo)> =
            plan.iter().enumerate().filter(|(i, _)| slots[*i].is_none()).map(|(i, f)| (i, f.clone())).collect();
        let fetched: Vec<(usize, FileIndex)> = futures::stream::iter(missing.into_iter().map(|(i, f)| {
            let client = client.clone();
            async move { FileIndex::fetch(&client, &f).await.map(|x| (i, x)) }
        }))
        .buffer_unordered(INDEX_READS_IN_FLIGHT)
        .try_collect()
        .await?;
        for (i, x) in fetched {
            slots[i] = Some(Arc::new(x));
        }
        Ok(slots.into_iter().flatten().collect())
    }
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
