//! Page reads: the cache first, else ranged GETs of frames. Frames of consecutive pages that
//! lie back to back in one file are fetched by one request; when reads go sequentially the
//! window doubles (up to [`MAX_WINDOW_PAGES`]), so a full scan costs a few requests per
//! megabyte instead of one per page; runs in different files are fetched in parallel.

use std::sync::Mutex;

use bytes::Bytes;
use sluice_ltx::index::decode_page_frame;
use sluice_storage::ReplicaClient;

use super::cache::{PageCache, PageKey};
use super::view::{Loc, View};
use crate::error::{Error, Result};

/// Most pages one read brings in.
const MAX_WINDOW_PAGES: u32 = 512;
/// Most bytes one ranged GET asks for.
const MAX_RUN_BYTES: u64 = 4 << 20;

/// How far the next read looks ahead: one page for random reads, doubling while they are
/// sequential.
#[derive(Debug, Default)]
pub(crate) struct ReadAhead {
    last: u32,
    window: u32,
}

impl ReadAhead {
    fn next(&mut self, pgno: u32) -> u32 {
        self.window = if pgno > self.last && pgno - self.last <= self.window.max(1) {
            (self.window * 2).clamp(2, MAX_WINDOW_PAGES)
        } else {
            1
        };
        self.last = pgno;
        self.window
    }
}

/// A contiguous byte range of one file holding the frames of `pages`.
struct Run {
    loc: Loc,
    end: u64,
    pages: Vec<(u32, Loc)>,
}

pub(crate) struct Fetcher {
    pub(crate) cache: PageCache,
    readahead: Mutex<ReadAhead>,
}

pub(crate) fn key(view: &View, pgno: u32, loc: &Loc) -> PageKey {
    let f = &view.file(loc).info;
    (f.level, f.min_txid, f.max_txid, pgno)
}

impl Fetcher {
    pub(crate) fn new(cache_bytes: u64) -> Self {
        Fetcher { cache: PageCache::new(cache_bytes), readahead: Mutex::new(ReadAhead::default()) }
    }

    /// Page `pgno` of `view` if it needs no request (a cached page, the lock page, past the
    /// end): the caller's thread serves it without a round trip through the runtime.
    pub(crate) fn page_now(&self, view: &View, pgno: u32, replica: &str) -> Result<Option<Bytes>> {
        Ok(match view.locate(pgno, replica)? {
            None => Some(Bytes::from(vec![0u8; view.page_size as usize])),
            Some(loc) => self.cache.get(&key(view, pgno, &loc)),
        })
    }

    /// Page `pgno` of `view`.
    pub(crate) async fn page(&self, client: &ReplicaClient, view: &View, pgno: u32) -> Result<Bytes> {
        let Some(loc) = view.locate(pgno, client.description())? else {
            return Ok(Bytes::from(vec![0u8; view.page_size as usize]));
        };
        if let Some(p) = self.cache.get(&key(view, pgno, &loc)) {
            return Ok(p);
        }
        let window = self.readahead.lock().unwrap_or_else(|p| p.into_inner()).next(pgno);
        let runs = self.plan_runs(client, view, pgno, loc, window)?;
        let fetched = futures::future::join_all(runs.iter().map(|r| self.fetch_run(client, view, r))).await;
        // The requested page is in the first run; later runs are read-ahead, best effort.
        let mut wanted = None;
        for (i, r) in fetched.into_iter().enumerate() {
            match r {
                Ok(Some(p)) if i == 0 => wanted = Some(p),
                Err(e) if i == 0 => return Err(e),
                _ => {}
            }
        }
        match wanted {
            Some(p) => Ok(p),
            None => Err(Error::Task(format!("BUG: page {pgno} missing from its own read"))),
        }
    }

    /// The runs to fetch: the requested page's first, then uncached pages of the window.
    fn plan_runs(&self, client: &ReplicaClient, view: &View, pgno: u32, loc: Loc, window: u32) -> Result<Vec<Run>> {
        let mut runs = vec![Run { loc, end: loc.offset + u64::from(loc.size), pages: vec![(pgno, loc)] }];
        let last = pgno.saturating_add(window - 1).min(view.commit);
        for p in pgno + 1..=last {
            let Some(l) = view.locate(p, client.description())? else { continue };
            if self.cache.get(&key(view, p, &l)).is_some() {
                continue;
            }
            let run = runs.last_mut().expect("BUG: runs start non-empty");
            if l.file == run.loc.file
                && l.offset == run.end
                && run.end + u64::from(l.size) - run.loc.offset <= MAX_RUN_BYTES
            {
                run.end += u64::from(l.size);
                run.pages.push((p, l));
            } else {
                runs.push(Run { loc: l, end: l.offset + u64::from(l.size), pages: vec![(p, l)] });
            }
        }
        Ok(runs)
    }

    /// Fetches and decodes one run into the cache; returns its first page.
    async fn fetch_run(&self, client: &ReplicaClient, view: &View, run: &Run) -> Result<Option<Bytes>> {
        let f = &view.file(&run.loc).info;
        let bytes = client.get_range(f.level, f.min_txid, f.max_txid, run.loc.offset..run.end).await?;
        let mut first = None;
        for (i, (pgno, l)) in run.pages.iter().enumerate() {
            let start = (l.offset - run.loc.offset) as usize;
            let frame = bytes.get(start..start + l.size as usize);
            let page = match frame.map(|fr| decode(view, *pgno, fr)) {
                Some(Ok(p)) => p,
                // Damaged in transit or at rest: one more read of that frame alone, then the
                // error (a read-ahead page is simply left out).
                _ if i > 0 => continue,
                _ => self.refetch(client, view, *pgno, l).await?,
            };
            self.cache.insert(key(view, *pgno, l), page.clone());
            if i == 0 {
                first = Some(page);
            }
        }
        Ok(first)
    }

    async fn refetch(&self, client: &ReplicaClient, view: &View, pgno: u32, l: &Loc) -> Result<Bytes> {
        let f = &view.file(l).info;
        tracing::warn!(file = %view.file(l).label(), pgno, "page frame did not decode; reading it again");
        let frame = client.get_range(f.level, f.min_txid, f.max_txid, l.offset..l.offset + u64::from(l.size)).await?;
        decode(view, pgno, &frame).map_err(|source| Error::Ltx { file: view.file(l).label(), source })
    }
}

fn decode(view: &View, pgno: u32, frame: &[u8]) -> std::result::Result<Bytes, sluice_ltx::Error> {
    let mut out = vec![0u8; view.page_size as usize];
    let got = decode_page_frame(frame, &mut out)?;
    if got != pgno {
        return Err(sluice_ltx::Error::CorruptFrame {
            pgno: got,
            offset: 0,
            reason: format!("frame holds page {got}, the index says {pgno}"),
        });
    }
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_ahead_grows_on_sequential_reads_and_resets_on_jumps() {
        let mut r = ReadAhead::default();
        assert_eq!(r.next(10), 1);
        assert_eq!(r.next(11), 2);
        assert_eq!(r.next(13), 4);
        assert_eq!(r.next(17), 8);
        assert_eq!(r.next(3), 1, "a jump back is a random read");
        let mut w = 1;
        for p in 4..2000 {
            w = r.next(p);
        }
        assert_eq!(w, MAX_WINDOW_PAGES);
    }
}
