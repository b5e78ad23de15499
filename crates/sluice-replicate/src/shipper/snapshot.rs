//! Level-9 snapshots off the shipper thread. A third read transaction, begun under the write
//! barrier right after a sync, holds the synced position while another thread encodes the
//! image; the shipper meanwhile keeps capturing and checkpointing (checkpoints cannot copy
//! past the snapshot's read mark until it ends, so the WAL grows for the snapshot's duration).

use rustc_hash::FxHashMap as HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sluice_ltx::{Encoder, Header, TxId, lock_pgno};

use super::{Position, Shipper, now_ms, read_db_page, read_wal_frame};
use sluice_engine::error::{Error, Result};
use sluice_engine::perms::Perms;
use sluice_engine::validate::PageSums;

/// Everything needed to read the database as of one position, without the shipper.
pub struct SnapshotView {
    db: Arc<File>,
    db_path: PathBuf,
    wal_path: PathBuf,
    wal_map: HashMap<u32, u64>,
    salts: (u32, u32),
    pos: Position,
    page_size: u32,
    /// The database's mode and owner, for the image file.
    perms: Perms,
}

impl Shipper {
    /// Syncs under the write barrier and pins the result with the snapshot read transaction.
    /// `None` when the barrier was busy or there is nothing to snapshot yet. Call
    /// [`Shipper::end_snapshot`] when done.
    pub fn snapshot_view(&mut self) -> Result<Option<SnapshotView>> {
        if !self.take_barrier()? {
            return Ok(None);
        }
        let pinned = self.sync_all().and_then(|_| {
            super::begin_read(&self.snap_reader)
                .map_err(|e| super::sqlite_err("begin snapshot read on", &self.db_path, e))
        });
        let _ = self.barrier.execute_batch("ROLLBACK");
        pinned?;
        let Some(pos) = self.pos else {
            self.end_snapshot();
            return Ok(None);
        };
        Ok(Some(SnapshotView {
            db: self.db_file.clone(),
            db_path: self.db_path.clone(),
            wal_path: self.wal_path.clone(),
            wal_map: self.wal_map.clone(),
            salts: self.wal_salts,
            perms: self.meta.perms(),
            pos,
            page_size: self.page_size,
        }))
    }

    /// Ends the snapshot read transaction.
    pub fn end_snapshot(&mut self) {
        let _ = self.snap_reader.execute_batch("ROLLBACK");
    }
}

impl SnapshotView {
    /// Encodes the image as snapshot `1-T` into `path` (fsynced); returns its header.
    pub fn write(&self, path: &Path) -> Result<Header> {
        let pos = self.pos;
        let header = Header::new(self.page_size, pos.commit.max(1), TxId(1), pos.txid, now_ms());
        let file = self.perms.create(path).map_err(|e| Error::io("create", path, e))?;
        let ltx = |source| Error::Ltx { file: path.display().to_string(), source };
        let mut enc = Encoder::new(std::io::BufWriter::with_capacity(256 << 10, file), header).map_err(ltx)?;
        let wal = File::open(&self.wal_path).ok();
        let mut buf = vec![0u8; self.page_size as usize];
        let lock = lock_pgno(self.page_size);
        for p in (1..=pos.commit).filter(|p| *p != lock) {
            self.read(wal.as_ref(), p, &mut buf)?;
            enc.encode_page(p, &buf).map_err(ltx)?;
        }
        let (w, _) = enc.finish(0).map_err(ltx)?;
        let f = w.into_inner().map_err(|e| Error::io("write", path, e.into_error()))?;
        f.sync_all().map_err(|e| Error::io("fsync", path, e))?;
        Ok(header)
    }

    /// The database as of the position, one checksum per page (replica validation).
    pub fn page_sums(&self) -> Result<PageSums> {
        let pos = self.pos;
        let mut sums = PageSums::new(pos.txid, self.page_size, pos.commit);
        let wal = File::open(&self.wal_path).ok();
        let mut buf = vec![0u8; self.page_size as usize];
        let lock = lock_pgno(self.page_size);
        for p in (1..=pos.commit).filter(|p| *p != lock) {
            self.read(wal.as_ref(), p, &mut buf)?;
            sums.set(p, &buf);
        }
        Ok(sums)
    }

    /// A page as of the position. A WAL frame found overwritten proves a restart, which needs
    /// every reader off the WAL: our snapshot read then sits on read mark 0, taken when the
    /// WAL was fully copied, and no checkpoint can change the database file while it lasts —
    /// so the database file holds the page as of the position.
    fn read(&self, wal: Option<&File>, pgno: u32, buf: &mut [u8]) -> Result<()> {
        let wal_err = |e| Error::io("read page from", &self.wal_path, e);
        if let (Some(off), Some(w)) = (self.wal_map.get(&pgno), wal)
            && read_wal_frame(w, *off, pgno, self.salts, buf).map_err(wal_err)?.is_none()
        {
            return Ok(());
        }
        read_db_page(&self.db, pgno, buf).map_err(|e| Error::io("read page from", &self.db_path, e))
    }
}
