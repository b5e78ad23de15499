//! Noticing a database rewritten in place under a running shipper (`cp backup.db app.db`,
//! or its `-wal`/`-shm` deleted and recreated): the inode stays, so [`check_same_file`]
//! cannot see it, and continuing the old WAL position would silently ship increments on top
//! of a history the file no longer has.
//!
//! Between two captures SQLite writes the database file only by checkpointing frames that
//! our read lock lets it copy, i.e. frames we already read. So when nothing was left to copy
//! at the last capture (`nBackfill` had reached our position), any later change of the file's
//! size or mtime was made by someone else. When frames were still to be copied, a rewrite is
//! indistinguishable from a checkpoint here; but then SQLite itself would lay those WAL
//! frames over the new file, so that is not a way to restore a database anyway.
//!
//! [`check_same_file`]: super::Shipper

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::shm;

/// What the files looked like after the last capture.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Witness {
    /// Database file (length, mtime in ns).
    db: (u64, i128),
    /// Identities of the `-wal` and `-shm` files, if they existed.
    wal: Option<FileId>,
    shm: Option<FileId>,
    /// No frame was left for a checkpoint to copy: the file may not change until we read more.
    settled: bool,
}

/// Device, inode and birth time: ext4 gives a new file the inode number of one just
/// deleted, so the number alone does not tell a re-created file from the old one.
type FileId = (u64, u64, Option<std::time::SystemTime>);

fn ino(path: &Path) -> Option<FileId> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino(), m.created().ok()))
}

fn shape(db: &File) -> std::io::Result<(u64, i128)> {
    let m = db.metadata()?;
    Ok((m.len(), i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec())))
}

impl Witness {
    /// Records the files now; `captured` is how many frames of the generation `salts` were
    /// read. The index is read before the file, so a checkpoint racing this call counts as
    /// not settled.
    pub(crate) fn take(
        db: &File,
        wal: &Path,
        shm_path: &Path,
        shm_file: Option<&File>,
        captured: Option<((u32, u32), u64)>,
    ) -> std::io::Result<Witness> {
        let settled = match shm_file {
            Some(f) => {
                let header = shm::read_header(f)?;
                let backfill = shm::read_backfill(f)?;
                match (header, backfill) {
                    (Some(h), Some(b)) => {
                        b >= h.max_frame || captured.is_some_and(|(salts, n)| salts == h.salts && b >= n)
                    }
                    _ => false,
                }
            }
            None => false,
        };
        Ok(Witness { db: shape(db)?, wal: ino(wal), shm: ino(shm_path), settled })
    }

    /// Whether the `-wal` or `-shm` file seen then is gone now (deleted, not yet recreated).
    pub(crate) fn side_file_gone(&self, wal: &Path, shm_path: &Path) -> bool {
        (self.wal.is_some() && ino(wal).is_none()) || (self.shm.is_some() && ino(shm_path).is_none())
    }

    /// Why the files now show a rewrite outside SQLite since `self`, if they do.
    pub(crate) fn rewritten(&self, db: &File, wal: &Path, shm_path: &Path) -> std::io::Result<Option<String>> {
        let replaced = |was: Option<FileId>, now: Option<FileId>| was.is_some() && now.is_some() && was != now;
        if replaced(self.wal, ino(wal)) {
            return Ok(Some("its WAL file was deleted and created anew".into()));
        }
        if replaced(self.shm, ino(shm_path)) {
            return Ok(Some("its WAL index (-shm) was deleted and created anew".into()));
        }
        let now = shape(db)?;
        if self.settled && now != self.db {
            return Ok(Some(format!(
                "the file changed (length {} → {} bytes) while SQLite had nothing to checkpoint into it",
                self.db.0, now.0
            )));
        }
        Ok(None)
    }
}
