//! Compaction: merge a contiguous run of LTX files into one that holds only the latest
//! version of each page (ltx v0.5.2 `Compactor`), streaming with one page per input.

use std::io::{Read, Write};

use crate::decoder::Decoder;
use crate::encoder::Encoder;
use crate::error::{Error, Result};
use crate::header::{FLAG_NO_CHECKSUM, Header, Trailer};

/// Receives merged pages in ascending pgno order.
pub trait PageSink {
    /// One page, the latest version among the inputs.
    fn page(&mut self, pgno: u32, data: &[u8]) -> Result<()>;

    /// One page with the LZ4 block it was decoded from, if any (sinks that re-encode can copy
    /// it rather than compress again).
    fn page_with_block(&mut self, pgno: u32, data: &[u8], block: Option<&[u8]>) -> Result<()> {
        let _ = block;
        self.page(pgno, data)
    }
}

impl<W: Write> PageSink for Encoder<W> {
    fn page(&mut self, pgno: u32, data: &[u8]) -> Result<()> {
        self.encode_page(pgno, data)
    }

    fn page_with_block(&mut self, pgno: u32, data: &[u8], block: Option<&[u8]>) -> Result<()> {
        match block {
            Some(b) => self.encode_page_block(pgno, data, b),
            None => self.encode_page(pgno, data),
        }
    }
}

/// Checks that files sorted by TXID leave no gap: `min ≤ prev_max + 1 && max > prev_max`.
pub fn check_contiguous(headers: &[Header]) -> Result<()> {
    let Some(first) = headers.first() else {
        return Err(Error::NoInputs);
    };
    let mut prev_max = first.max_txid.0;
    for h in &headers[1..] {
        if h.page_size != first.page_size {
            return Err(Error::MixedPageSizes { expected: first.page_size, actual: h.page_size });
        }
        if h.min_txid.0 > prev_max + 1 || h.max_txid.0 <= prev_max {
            return Err(Error::NonContiguousTxid { prev_max, next_min: h.min_txid.0, next_max: h.max_txid.0 });
        }
        prev_max = h.max_txid.0;
    }
    Ok(())
}

/// The header of the merge of `headers` (already checked contiguous), as Litestream builds it.
pub fn merged_header(headers: &[Header]) -> Result<Header> {
    check_contiguous(headers)?;
    let (first, last) = (headers[0], headers[headers.len() - 1]);
    let mut h = Header::new(first.page_size, last.commit, first.min_txid, last.max_txid, last.timestamp_ms);
    h.flags = FLAG_NO_CHECKSUM;
    Ok(h)
}

/// Streams the page-wise merge of `inputs` (sorted by TXID) into `sink`: for each pgno the
/// copy from the latest input wins and pages beyond the last commit are dropped. Every input
/// is read to its end, so its checksum is verified. Returns the inputs' trailers.
pub fn merge_into<R: Read, S: PageSink>(inputs: Vec<Decoder<R>>, sink: &mut S) -> Result<Vec<Trailer>> {
    let headers: Vec<Header> = inputs.iter().map(|d| *d.header()).collect();
    let out = merged_header(&headers)?;
    let ps = out.page_size as usize;
    let mut heads: Vec<Head<R>> = inputs.into_iter().map(|dec| Head { dec, buf: vec![0; ps], pgno: None }).collect();
    for h in &mut heads {
        h.advance()?;
    }
    while let Some(pgno) = heads.iter().filter_map(|h| h.pgno).min() {
        // The latest input holding this page wins; every input at this pgno advances.
        let winner = heads.iter().rposition(|h| h.pgno == Some(pgno)).expect("BUG: min pgno has an owner");
        if pgno <= out.commit {
            let w = &heads[winner];
            sink.page_with_block(pgno, &w.buf, w.dec.last_block())?;
        }
        for h in heads.iter_mut().filter(|h| h.pgno == Some(pgno)) {
            h.advance()?;
        }
    }
    Ok(heads.iter().map(|h| h.dec.trailer().expect("BUG: drained input has a trailer")).collect())
}

struct Head<R: Read> {
    dec: Decoder<R>,
    buf: Vec<u8>,
    pgno: Option<u32>,
}

impl<R: Read> Head<R> {
    fn advance(&mut self) -> Result<()> {
        self.pgno = self.dec.next_page(&mut self.buf)?;
        Ok(())
    }
}

/// Compacts `inputs` into one LTX file written to `w`, as Litestream's compactor does.
pub fn compact<R: Read, W: Write>(inputs: Vec<Decoder<R>>, w: W) -> Result<(W, Trailer)> {
    compact_with(inputs, w, |_, _| {})
}

/// [`compact`] with the merged header adjusted by `adjust(&mut merged, &input_headers)`
/// before it is written (a local merge keeps its last input's WAL position, for example).
pub fn compact_with<R: Read, W: Write>(
    inputs: Vec<Decoder<R>>,
    w: W,
    adjust: impl FnOnce(&mut Header, &[Header]),
) -> Result<(W, Trailer)> {
    let headers: Vec<Header> = inputs.iter().map(|d| *d.header()).collect();
    let mut header = merged_header(&headers)?;
    adjust(&mut header, &headers);
    let mut enc = Encoder::new(w, header)?;
    merge_into(inputs, &mut enc)?;
    enc.finish(0)
}
