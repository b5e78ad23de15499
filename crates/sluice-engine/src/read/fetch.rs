//! Page reads: the cache first, else ranged GETs of frames. Frames of consecutive pages that
//! lie back to back in one file are fetched by one request; when reads go sequentially the
//! window doubles (up to [`MAX_WINDOW_PAGES`]), so a full scan costs a few requests per
//! megabyte instead of one per page; runs in different files are fetched in parallel.

use std::sync::Mutex;

use bytes::Bytes;
use sluice_ltx::index::decode_page_frame;
use sluice_storage::ReplicaClient;

use super::cache::{PageCache, PageKey};
use super::view::{FileIndex, Loc, View};
use crate::error::{Error, Result};

/// Most pages one read brings in.
const MAX_WINDOW_PAGES: u32 = 512;
/// A random read brings in the aligned block of pages around it that lie back to back in the
/// same file (64 KiB of 4 KiB pages): neighbours of a B-tree page are often read next, and a
/// request costs a round trip while a few more kilobytes cost little.
const BLOCK_PAGES: u32 = 16;
/// Most bytes one ranged GET asks for.
const MAX_RUN_BYTES: u64 = 4 << 20;

/// How far the next read looks ahead: one page (and its block) for random reads, doubling
/// while reads go on where the sequential stream ended. A random read in between (a B-tree
/// scan's interior pages) does not end the stream.
#[derive(Debug, Default)]
pub(crate) struct ReadAhead {
    /// Last page the sequential stream brought in, and its window.
    stream_end: u32,
    window: u32,
    /// Last page any read brought in (a new stream starts where it continues).
    last_end: u32,
    /// Whether the read being made continues the stream.
    sequential: bool,
}

impl ReadAhead {
    fn next(&mut self, pgno: u32) -> u32 {
        let continues = |end: u32, window: u32| end > 0 && pgno > end && pgno - end <= window.max(1);
        self.sequential = true;
        if continues(self.stream_end, self.window) {
            self.window = (self.window * 2).clamp(2, MAX_WINDOW_PAGES);
            self.window
        } else if continues(self.last_end, 1) {
            self.window = 2;
            self.window
        } else {
            self.sequential = false;
            1
        }
    }

    /// The read that [`ReadAhead::next`] sized brought pages up to `end` in.
    fn read_to(&mut self, end: u32) {
        if self.sequential {
            self.stream_end = end;
        }
        self.last_end = end;
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
        let end = runs[0].pages.last().map_or(pgno, |(p, _)| *p);
        self.readahead.lock().unwrap_or_else(|p| p.into_inner()).read_to(end);
        let fetched = futures::future::join_all(runs.iter().map(|r| self.fetch_run(client, view, r, pgno))).await;
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

    /// The runs to fetch: the one holding the requested page first (grown backwards to its
    /// block's start for a random read), then uncached pages up to the window's or the
    /// block's end.
    fn plan_runs(&self, client: &ReplicaClient, view: &View, pgno: u32, loc: Loc, window: u32) -> Result<Vec<Run>> {
        let desc = client.description();
        let mut first = Run { loc, end: loc.offset + u64::from(loc.size), pages: vec![(pgno, loc)] };
        let block_start = pgno - (pgno - 1) % BLOCK_PAGES;
        if window == 1 {
            for p in (block_start..pgno).rev() {
                let Some(l) = view.locate(p, desc)? else { break };
                // Only a frame that ends where the run begins (so it lies before it).
                if l.file != first.loc.file || l.offset + u64::from(l.size) != first.loc.offset {
                    break;
                }
                if first.end - l.offset > MAX_RUN_BYTES {
                    break;
                }
                if self.cache.get(&key(view, p, &l)).is_some() {
                    break;
                }
                first.loc = l;
                first.pages.insert(0, (p, l));
            }
        }
        let mut runs = vec![first];
        let last = pgno.saturating_add(window - 1).max(block_start + BLOCK_PAGES - 1).min(view.commit);
        for p in pgno + 1..=last {
            let Some(l) = view.locate(p, desc)? else { continue };
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
            } else if p <= pgno.saturating_add(window - 1) {
                // Past the requested page's run only the read-ahead window goes on; the block
                // is only worth its own run where it continues that run.
                runs.push(Run { loc: l, end: l.offset + u64::from(l.size), pages: vec![(p, l)] });
            }
        }
        Ok(runs)
    }

    /// Fetches and decodes one run into the cache; returns page `wanted` if the run holds it.
    async fn fetch_run(&self, client: &ReplicaClient, view: &View, run: &Run, wanted: u32) -> Result<Option<Bytes>> {
        let f = &view.file(&run.loc).info;
        let bytes = client.get_range(f.level, f.min_txid, f.max_txid, run.loc.offset..run.end).await?;
        let mut found = None;
        for (pgno, l) in &run.pages {
            let start = (l.offset - run.loc.offset) as usize;
            let frame = bytes.get(start..start + l.size as usize);
            let page = match frame.map(|fr| decode(view, *pgno, fr)) {
                Some(Ok(p)) => p,
                // Damaged in transit or at rest: one more read of that frame alone, then the
                // error (a page read only because it was near is simply left out).
                _ if *pgno != wanted => continue,
                _ => self.refetch(client, view, *pgno, l).await?,
            };
            self.cache.insert(key(view, *pgno, l), page.clone());
            if *pgno == wanted {
                found = Some(page);
            }
        }
        Ok(found)
    }

    /// Caches the pages whose frames lie wholly in `head`, the bytes read from the start of
    /// `file` with its index (all of a small file). A frame that does not decode is left out:
    /// reading that page fetches it again and reports the damage.
    pub(crate) fn seed(&self, file: &FileIndex, head: &[u8]) {
        let f = &file.info;
        for e in &file.entries {
            let frame = usize::try_from(e.offset)
                .ok()
                .and_then(|o| Some(o..o.checked_add(usize::try_from(e.size).ok()?)?))
                .and_then(|r| head.get(r));
            if let Some(Ok(page)) = frame.map(|fr| decode_sized(file.header.page_size, e.pgno, fr)) {
                self.cache.insert((f.level, f.min_txid, f.max_txid, e.pgno), page);
            }
        }
    }

    async fn refetch(&self, client: &ReplicaClient, view: &View, pgno: u32, l: &Loc) -> Result<Bytes> {
        let f = &view.file(l).info;
        tracing::warn!(file = %view.file(l).label(), pgno, "page frame did not decode; reading it again");
        let frame = client.get_range(f.level, f.min_txid, f.max_txid, l.offset..l.offset + u64::from(l.size)).await?;
        decode(view, pgno, &frame).map_err(|source| Error::Ltx { file: view.file(l).label(), source })
    }
}

fn decode(view: &View, pgno: u32, frame: &[u8]) -> std::result::Result<Bytes, sluice_ltx::Error> {
    decode_sized(view.page_size, pgno, frame)
}

fn decode_sized(page_size: u32, pgno: u32, frame: &[u8]) -> std::result::Result<Bytes, sluice_ltx::Error> {
    let mut out = vec![0u8; page_size as usize];
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
    fn read_ahead_grows_on_sequential_reads_and_survives_random_ones() {
        let mut r = ReadAhead::default();
        assert_eq!(r.next(10), 1);
        r.read_to(16); // the block around page 10
        assert_eq!(r.next(17), 2, "reading on where the last read ended is sequential");
        r.read_to(18);
        assert_eq!(r.next(19), 4);
        r.read_to(22);
        assert_eq!(r.next(3), 1, "a jump back is a random read");
        r.read_to(16);
        assert_eq!(r.next(23), 8, "and the stream goes on after it");
        r.read_to(30);
        assert_eq!(r.next(500), 1, "a jump forward is random too");
        let mut end = 30;
        let mut w = 1;
        for _ in 0..20 {
            r.read_to(end);
            w = r.next(end + 1);
            end += w;
        }
        assert_eq!(w, MAX_WINDOW_PAGES);
    }
}
