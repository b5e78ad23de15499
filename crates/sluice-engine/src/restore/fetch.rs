//! Downloads plan files ahead of the (synchronous) applier, with bounded memory: small
//! files are fetched whole, `parallelism` at a time; large ones stream through a bounded
//! channel. The applier reads both through [`Source`], a blocking `Read`.

use std::io::{self, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Buf, Bytes};
use futures::StreamExt;
use sluice_storage::{FileInfo, ReplicaClient};
use tokio::sync::mpsc;

/// Files up to this size are fetched whole; bigger ones stream.
const WHOLE_FILE_LIMIT: u64 = 1 << 20;
/// Chunks buffered per streaming file.
const STREAM_CHUNKS: usize = 32;

/// One plan file's bytes, readable from a blocking thread.
pub struct Source(Inner);

enum Inner {
    /// The whole file, already downloaded.
    Whole(bytes::buf::Reader<Bytes>),
    /// Chunks arriving from a download task.
    Stream { rx: mpsc::Receiver<io::Result<Bytes>>, cur: Bytes },
}

impl Read for Source {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.0 {
            Inner::Whole(r) => r.read(buf),
            Inner::Stream { rx, cur } => {
                while cur.is_empty() {
                    // Only ever called on a blocking-pool thread, never on a runtime worker.
                    match rx.blocking_recv() {
                        Some(Ok(b)) => *cur = b,
                        Some(Err(e)) => return Err(e),
                        None => return Ok(0),
                    }
                }
                let n = buf.len().min(cur.len());
                buf[..n].copy_from_slice(&cur[..n]);
                cur.advance(n);
                Ok(n)
            }
        }
    }
}

/// Starts fetching `plan` in order; sources arrive on the returned channel in plan order.
/// `done` counts bytes downloaded, for progress reporting.
pub fn prefetch(
    client: ReplicaClient,
    plan: Vec<FileInfo>,
    parallelism: usize,
    done: Arc<AtomicU64>,
) -> mpsc::Receiver<sluice_storage::Result<Source>> {
    // Memory bound: `parallelism` downloads in flight plus two finished ones queued.
    let (tx, rx) = mpsc::channel(2);
    tokio::spawn(async move {
        let fetches =
            futures::stream::iter(plan).map(|f| fetch(client.clone(), f, done.clone())).buffered(parallelism.max(1));
        futures::pin_mut!(fetches);
        while let Some(src) = fetches.next().await {
            let failed = src.is_err();
            if tx.send(src).await.is_err() || failed {
                break;
            }
        }
    });
    rx
}

async fn fetch(client: ReplicaClient, f: FileInfo, done: Arc<AtomicU64>) -> sluice_storage::Result<Source> {
    if f.size <= WHOLE_FILE_LIMIT {
        let b = client.get(f.level, f.min_txid, f.max_txid).await?;
        done.fetch_add(b.len() as u64, Ordering::Relaxed);
        return Ok(Source(Inner::Whole(b.reader())));
    }
    let (tx, rx) = mpsc::channel(STREAM_CHUNKS);
    let mut stream = client.get_stream(f.level, f.min_txid, f.max_txid);
    tokio::spawn(async move {
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(io::Error::other);
            let stop = chunk.is_err();
            if let Ok(b) = &chunk {
                done.fetch_add(b.len() as u64, Ordering::Relaxed);
            }
            if tx.send(chunk).await.is_err() || stop {
                break;
            }
        }
    });
    Ok(Source(Inner::Stream { rx, cur: Bytes::new() }))
}
