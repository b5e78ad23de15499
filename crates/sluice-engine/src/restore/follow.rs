//! `restore --follow`: keep a restored database up to date in place, as Litestream's
//! `restore -f` does, with the same on-disk protocol so the two tools can take over from
//! each other:
//!
//! * `<out>-txid` holds the applied TXID (16 lower-case hex digits and a newline), replaced
//!   by temp file + fsync + rename after each batch of applied files;
//! * each file is applied under POSIX (`fcntl`, not OFD) write locks on SQLite's PENDING
//!   byte and SHARED range, the locks a rollback-journal writer holds for EXCLUSIVE, so a
//!   SQLite reader of the output either waits (busy) or reads a state between two files;
//! * page 1 says rollback-journal mode (bytes 18/19 = 1: a WAL-mode header would send
//!   readers to a `-wal` that never exists) and its change counter (bytes 24..27) moves on
//!   every apply, so readers drop their page caches. Litestream rewrites the counter only
//!   when a file carries page 1; here it moves on every file, since a reader's cache is as
//!   stale after a commit that left page 1 alone.
//!
//! Files are downloaded whole and verified (decoder checksums) before the lock is taken, so
//! a damaged file never leaves a half-written output. A process killed while writing does
//! leave one, until the resumed follower re-applies the same files from the sidecar's TXID
//! (pages are whole images, so re-applying converges).

use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use sluice_ltx::{Decoder, TxId};
use sluice_storage::{FileInfo, ReplicaClient};

use crate::error::{Error, Result};
use crate::restore::apply::Image;
use crate::restore::plan::{self, Target, file_label};

/// SQLite's PENDING byte (`sqlite3PendingByte`, 2^30).
pub const PENDING_BYTE: i64 = 0x4000_0000;
/// First byte of SQLite's SHARED range (PENDING + 2).
pub const SHARED_FIRST: i64 = PENDING_BYTE + 2;
/// Length of SQLite's SHARED range.
pub const SHARED_SIZE: i64 = 510;

/// Path of the TXID sidecar of `out`: `<out>-txid`.
pub fn txid_path(out: &Path) -> PathBuf {
    let mut s = out.as_os_str().to_owned();
    s.push("-txid");
    PathBuf::from(s)
}

/// Reads `<out>-txid`; `None` when it does not exist.
pub fn read_txid_file(out: &Path) -> Result<Option<TxId>> {
    let path = txid_path(out);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("read", path, e)),
    };
    let t = text.trim();
    if t.len() != 16 || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::BadTxidFile { path, content: t.chars().take(40).collect() });
    }
    u64::from_str_radix(t, 16).map(|v| Some(TxId(v))).map_err(|_| Error::BadTxidFile { path, content: t.to_string() })
}

/// Replaces `<out>-txid` with `txid` (temp file, fsync, rename, fsync the directory).
pub fn write_txid_file(out: &Path, txid: TxId) -> Result<()> {
    let path = txid_path(out);
    let mut tmp = path.clone().into_os_string();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let write = || -> std::io::Result<()> {
        let f = File::create(&tmp)?;
        f.write_all_at(format!("{:016x}\n", txid.0).as_bytes(), 0)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)
    };
    write().map_err(|e| Error::io("write", &path, e))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    File::open(&dir).and_then(|d| d.sync_all()).map_err(|e| Error::io("fsync directory", dir, e))
}

/// Removes `<out>-txid` (before a change a resume could not redo).
pub fn remove_txid_file(out: &Path) -> Result<()> {
    let path = txid_path(out);
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io("remove", path, e)),
        _ => Ok(()),
    }
}

/// SQLite's EXCLUSIVE lock on a database file, held until dropped. Classic POSIX record
/// locks (`F_SETLKW`), which are what SQLite's unix VFS uses; they belong to the process, so
/// this never conflicts with another descriptor of ours.
pub struct WriteLock<'a> {
    file: &'a File,
    path: &'a Path,
}

impl<'a> WriteLock<'a> {
    /// Waits for readers to finish, keeping new ones out meanwhile (PENDING first, as SQLite
    /// does, so a stream of readers cannot starve the writer).
    pub fn acquire(file: &'a File, path: &'a Path) -> Result<Self> {
        setlk(file, nix::libc::F_WRLCK, PENDING_BYTE, 1).map_err(|e| Error::io("lock (PENDING byte)", path, e))?;
        if let Err(e) = setlk(file, nix::libc::F_WRLCK, SHARED_FIRST, SHARED_SIZE) {
            let _ = setlk(file, nix::libc::F_UNLCK, PENDING_BYTE, 1);
            return Err(Error::io("lock (SHARED range)", path, e));
        }
        Ok(WriteLock { file, path })
    }
}

impl Drop for WriteLock<'_> {
    fn drop(&mut self) {
        for (start, len) in [(SHARED_FIRST, SHARED_SIZE), (PENDING_BYTE, 1)] {
            if let Err(e) = setlk(self.file, nix::libc::F_UNLCK, start, len) {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot release lock");
            }
        }
    }
}

fn setlk(file: &File, kind: nix::libc::c_int, start: i64, len: i64) -> std::io::Result<()> {
    let lock = nix::libc::flock {
        l_type: kind as nix::libc::c_short,
        l_whence: nix::libc::SEEK_SET as nix::libc::c_short,
        l_start: start,
        l_len: len,
        l_pid: 0,
    };
    loop {
        match nix::fcntl::fcntl(file.as_fd(), nix::fcntl::FcntlArg::F_SETLKW(&lock)) {
            Ok(_) => return Ok(()),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(std::io::Error::from(e)),
        }
    }
}

/// Makes page 1 say rollback-journal mode and moves its change counter on from `counter`
/// (the value readers may have cached). Returns the new counter.
pub fn mark_header(file: &File, path: &Path, counter: u32) -> Result<u32> {
    let next = counter.wrapping_add(1);
    file.write_all_at(&[1, 1], 18).map_err(|e| Error::io("write header of", path, e))?;
    file.write_all_at(&next.to_be_bytes(), 24).map_err(|e| Error::io("write header of", path, e))?;
    Ok(next)
}

/// The change counter in page 1.
pub fn read_counter(file: &File, path: &Path) -> Result<u32> {
    let mut b = [0u8; 4];
    file.read_exact_at(&mut b, 24).map_err(|e| Error::io("read header of", path, e))?;
    Ok(u32::from_be_bytes(b))
}

/// Page size and page count of an existing database file (for resuming).
pub fn probe_database(file: &File, path: &Path) -> Result<(u32, u32)> {
    let mut h = [0u8; 100];
    file.read_exact_at(&mut h, 0).map_err(|e| Error::io("read header of", path, e))?;
    if &h[..16] != b"SQLite format 3\0" {
        return Err(Error::NotADatabase { path: path.to_path_buf() });
    }
    let page_size = match u16::from_be_bytes([h[16], h[17]]) {
        1 => 65536,
        n => u32::from(n),
    };
    let len = file.metadata().map_err(|e| Error::io("stat", path, e))?.len();
    if page_size < 512 || !page_size.is_power_of_two() || len % u64::from(page_size) != 0 {
        return Err(Error::NotADatabase { path: path.to_path_buf() });
    }
    let commit =
        u32::try_from(len / u64::from(page_size)).map_err(|_| Error::NotADatabase { path: path.to_path_buf() })?;
    Ok((page_size, commit))
}

/// Totals of a follow session.
#[derive(Clone, Debug, Default)]
pub struct FollowStats {
    /// Files applied since the session started.
    pub files: u64,
    /// Their compressed size.
    pub bytes: u64,
}

/// A database being kept up to date from its replica.
pub struct Follower {
    client: ReplicaClient,
    out: PathBuf,
    /// `None` only while an apply runs on a blocking thread.
    image: Option<Image>,
    counter: u32,
    stats: FollowStats,
}

impl Follower {
    /// Continues `image` (the output, already marked with [`mark_header`] and at TXID
    /// `image.txid()`); `counter` is page 1's change counter.
    pub fn new(client: ReplicaClient, out: PathBuf, image: Image, counter: u32) -> Self {
        Follower { client, out, image: Some(image), counter, stats: FollowStats::default() }
    }

    /// Resumes following an output written earlier by `restore --follow` (ours or
    /// Litestream's), at the TXID of its sidecar. The TXID must be within the replica's
    /// history.
    pub async fn resume(client: ReplicaClient, out: &Path, txid: TxId) -> Result<Self> {
        let file = File::options().read(true).write(true).open(out).map_err(|e| Error::io("open", out, e))?;
        let (page_size, commit) = probe_database(&file, out)?;
        let files = client.list_all_levels().await?;
        let latest = files.iter().map(|f| f.max_txid).max().unwrap_or_default();
        if txid > latest {
            return Err(broken(
                &client,
                out,
                txid,
                format!("the replica's latest TXID is {latest}: it was reset, or it is another database's replica"),
            ));
        }
        let counter = read_counter(&file, out)?;
        let image = Image::resume(file, out.to_path_buf(), page_size, commit, txid);
        Ok(Follower::new(client, out.to_path_buf(), image, counter))
    }

    /// The TXID applied so far.
    pub fn txid(&self) -> TxId {
        self.image().txid()
    }

    /// Size in pages and page size of the output.
    pub fn size(&self) -> (u32, u32) {
        (self.image().commit(), self.image().page_size())
    }

    /// Totals so far.
    pub fn stats(&self) -> &FollowStats {
        &self.stats
    }

    fn image(&self) -> &Image {
        self.image.as_ref().expect("BUG: image is away on a blocking thread")
    }

    /// Polls every `interval` until `shutdown` completes. A poll is never interrupted: the
    /// output is only ever left between two files. Errors reading the replica are logged
    /// and retried; errors that mean the output cannot be continued end the loop.
    pub async fn run(&mut self, interval: Duration, shutdown: impl std::future::Future<Output = ()>) -> Result<()> {
        tokio::pin!(shutdown);
        let mut failures = 0u32;
        loop {
            match self.poll().await {
                Ok(_) => failures = 0,
                Err(e) if is_transient(&e) => {
                    failures += 1;
                    tracing::warn!(error = %e, failures, "follow: cannot read the replica; retrying");
                }
                Err(e) => return Err(e),
            }
            tokio::select! {
                () = &mut shutdown => return Ok(()),
                () = tokio::time::sleep(interval) => {}
            }
        }
    }

    /// Applies whatever the replica holds past our TXID; returns true if anything was applied.
    pub async fn poll(&mut self) -> Result<bool> {
        let txid = self.txid();
        // Usually the next L0 files are there: one listing that starts at our TXID.
        let l0 = self.client.list_level_from(0, TxId(txid.0 + 1)).await?;
        let mut chain = plan::chain_from(&l0, txid);
        if chain.is_empty() {
            let all = self.client.list_all_levels().await?;
            let Some(latest) = all.iter().map(|f| f.max_txid).max() else {
                return Err(broken(&self.client, &self.out, txid, "the replica is empty now".into()));
            };
            if latest < txid {
                let reason = format!("the replica's latest TXID is {latest}: it was reset");
                return Err(broken(&self.client, &self.out, txid, reason));
            }
            chain = plan::chain_from(&all, txid);
            if chain.is_empty() && latest > txid {
                // Only a snapshot leads on (the files after our TXID were compacted away).
                let plan = plan::plan(&all, Target::Latest, self.client.description())?;
                self.replace(plan).await?;
                return Ok(true);
            }
        }
        if chain.is_empty() {
            return Ok(false);
        }
        for info in chain {
            let data = self.download(&info).await?;
            self.apply(vec![(info, data)], false).await?;
        }
        write_txid_file(&self.out, self.txid())?;
        tracing::info!(txid = %self.txid(), "follow: applied updates");
        Ok(true)
    }

    async fn download(&mut self, info: &FileInfo) -> Result<Bytes> {
        let data = self.client.get(info.level, info.min_txid, info.max_txid).await?;
        let label = file_label(info);
        let data2 = data.clone();
        // Verified before anything is written: a damaged file must not leave a half-applied output.
        tokio::task::spawn_blocking(move || Decoder::new(&data2[..]).and_then(|d| d.finish()).map(|_| ()))
            .await
            .map_err(|e| Error::Task(e.to_string()))?
            .map_err(|source| Error::Ltx { file: label, source })?;
        self.stats.files += 1;
        self.stats.bytes += data.len() as u64;
        Ok(data)
    }

    /// Replaces the output's content by a full restore plan (snapshot first), under one lock.
    async fn replace(&mut self, plan: Vec<FileInfo>) -> Result<()> {
        let txid = self.txid();
        let target = plan.last().map(|f| f.max_txid).unwrap_or_default();
        if target < txid {
            let reason = format!("the replica's restorable history ends at {target}");
            return Err(broken(&self.client, &self.out, txid, reason));
        }
        tracing::warn!(from = %txid, to = %target, "follow: no file continues the output; applying the replica's latest snapshot in place");
        let mut files = Vec::with_capacity(plan.len());
        for info in plan {
            let data = self.download(&info).await?;
            files.push((info, data));
        }
        // A crash in the middle would leave neither state: no sidecar, so no resume.
        remove_txid_file(&self.out)?;
        self.apply(files, true).await?;
        write_txid_file(&self.out, self.txid())
    }

    /// Applies verified files in order under one write lock; `fresh` starts a new image
    /// over the same file (the first file is then a snapshot).
    async fn apply(&mut self, files: Vec<(FileInfo, Bytes)>, fresh: bool) -> Result<()> {
        let mut image = self.image.take().expect("BUG: image is away on a blocking thread");
        let out = self.out.clone();
        let counter = self.counter;
        let result = tokio::task::spawn_blocking(move || {
            let r = (|| -> Result<u32> {
                if fresh {
                    let f = image.file().try_clone().map_err(|e| Error::io("open", &out, e))?;
                    image = Image::new(f, out.clone());
                }
                let file = image.file().try_clone().map_err(|e| Error::io("open", &out, e))?;
                let _lock = WriteLock::acquire(&file, &out)?;
                for (info, data) in &files {
                    image.apply(info, &data[..])?;
                }
                let next = mark_header(&file, &out, counter)?;
                image.set_len(true)?;
                Ok(next)
            })();
            (image, r)
        })
        .await;
        let (image, r) = result.map_err(|e| Error::Task(e.to_string()))?;
        self.image = Some(image);
        match r {
            Ok(next) => {
                self.counter = next;
                Ok(())
            }
            Err(e) => {
                // Some pages may be written: the sidecar must not claim a state to resume from.
                remove_txid_file(&self.out)?;
                Err(broken(&self.client, &self.out, self.txid(), e.to_string()))
            }
        }
    }
}

fn broken(client: &ReplicaClient, out: &Path, txid: TxId, reason: String) -> Error {
    Error::FollowBroken { path: out.to_path_buf(), txid, replica: client.description().to_string(), reason }
}

/// Errors worth another poll: the replica was unreachable, or was mid-change.
fn is_transient(e: &Error) -> bool {
    matches!(e, Error::Storage(_) | Error::Gap { .. } | Error::ReadTimeout { .. })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sidecar_round_trip_in_litestream_format() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("db");
        assert_eq!(read_txid_file(&out).unwrap(), None);
        write_txid_file(&out, TxId(0xab)).unwrap();
        assert_eq!(std::fs::read_to_string(txid_path(&out)).unwrap(), "00000000000000ab\n");
        assert_eq!(read_txid_file(&out).unwrap(), Some(TxId(0xab)));
        std::fs::write(txid_path(&out), "12\n").unwrap();
        assert!(matches!(read_txid_file(&out), Err(Error::BadTxidFile { .. })));
        remove_txid_file(&out).unwrap();
        remove_txid_file(&out).unwrap();
        assert_eq!(read_txid_file(&out).unwrap(), None);
    }

    #[test]
    fn header_marks_rollback_mode_and_moves_the_counter() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let mut page = vec![0u8; 1024];
        page[..16].copy_from_slice(b"SQLite format 3\0");
        page[16..18].copy_from_slice(&1024u16.to_be_bytes());
        page[18] = 2;
        page[19] = 2;
        page[24..28].copy_from_slice(&u32::MAX.to_be_bytes());
        std::fs::write(&path, [page.clone(), vec![0; 1024]].concat()).unwrap();
        let f = File::options().read(true).write(true).open(&path).unwrap();
        assert_eq!(probe_database(&f, &path).unwrap(), (1024, 2));
        let c = read_counter(&f, &path).unwrap();
        assert_eq!(mark_header(&f, &path, c).unwrap(), 0, "the counter wraps");
        let b = std::fs::read(&path).unwrap();
        assert_eq!((b[18], b[19]), (1, 1));
        assert_eq!(read_counter(&f, &path).unwrap(), 0);
        std::fs::write(&path, vec![b'x'; 200]).unwrap();
        let f = File::open(&path).unwrap();
        assert!(matches!(probe_database(&f, &path), Err(Error::NotADatabase { .. })));
    }
}
