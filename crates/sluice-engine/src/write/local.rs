//! The meta directory beside the database (`.<name>-litestream/`, as Litestream's): local L0
//! files are the only replication state. Each carries the WAL offset, size and salts it was
//! read from, which is where the next sync resumes. Everything in it takes the database's
//! mode and owner ([`Perms`]).

use std::fs::{self, File};
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use sluice_ltx::{Encoder, Header, TxId, format_filename, parse_filename};

use crate::error::{Error, Result};
use crate::perms::Perms;

/// Local staging for one database.
#[derive(Clone, Debug)]
pub struct MetaDir {
    root: PathBuf,
    perms: Perms,
}

impl MetaDir {
    /// Creates the directory tree if needed, removes stale temp files, and gives everything
    /// in it `perms` (the database's).
    pub fn open(root: PathBuf, perms: Perms) -> Result<Self> {
        let l0 = root.join("ltx").join("0");
        perms.create_dir_all(&l0).map_err(|e| Error::io("create meta directory", &l0, e))?;
        // Leftovers of a crash: temp files of L0 writes, merged uploads, snapshots, and
        // compaction work directories.
        for dir in [&l0, &root] {
            for e in fs::read_dir(dir).into_iter().flatten().flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.ends_with(".tmp") {
                    let _ = fs::remove_file(e.path());
                } else if name.starts_with("compact-") && e.path().is_dir() {
                    let _ = fs::remove_dir_all(e.path());
                }
            }
        }
        // Files an older version or an earlier database at this path left with other modes
        // (best effort: one that cannot be changed is reported, not fatal).
        if let Err(e) = perms.apply_tree(&root) {
            tracing::warn!(dir = %root.display(), error = %e, "cannot give the meta directory the database's permissions");
        }
        Ok(MetaDir { root, perms })
    }

    /// The mode and owner of everything in the directory.
    pub fn perms(&self) -> Perms {
        self.perms
    }

    /// Creates a work directory inside (compaction inputs).
    pub fn create_dir(&self, dir: &Path) -> Result<()> {
        self.perms.create_dir_all(dir).map_err(|e| Error::io("create", dir, e))
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn l0_dir(&self) -> PathBuf {
        self.root.join("ltx").join("0")
    }

    /// Path of local L0 file `min-max`.
    pub fn l0_path(&self, min: TxId, max: TxId) -> PathBuf {
        self.l0_dir().join(format_filename(min, max))
    }

    /// Local L0 files as (min, max), sorted. Files whose range a wider file covers (inputs
    /// of a merge of pending files that a crash kept from being removed) are removed.
    pub fn list_l0(&self) -> Result<Vec<(TxId, TxId)>> {
        let dir = self.l0_dir();
        let mut all: Vec<(TxId, TxId)> = fs::read_dir(&dir)
            .map_err(|e| Error::io("list", &dir, e))?
            .flatten()
            .filter_map(|e| parse_filename(&e.file_name().to_string_lossy()))
            .collect();
        // By min, the widest first: a covered file then follows the one covering it.
        all.sort_by_key(|&(min, max)| (min, std::cmp::Reverse(max)));
        let mut out: Vec<(TxId, TxId)> = Vec::with_capacity(all.len());
        for (min, max) in all {
            if out.last().is_some_and(|&(_, top)| max <= top) {
                let _ = fs::remove_file(self.l0_path(min, max));
                continue;
            }
            out.push((min, max));
        }
        Ok(out)
    }

    /// Header of the newest local L0 file that verifies; damaged newest files are removed
    /// (a crash mid-write leaves only `.tmp` files, so this is belt and braces).
    pub fn latest(&self) -> Result<Option<Header>> {
        for (min, max) in self.list_l0()?.into_iter().rev() {
            let path = self.l0_path(min, max);
            let verified = File::open(&path).map_err(open_err(&path)).and_then(|f| {
                sluice_ltx::verify(std::io::BufReader::new(f))
                    .map_err(|source| Error::Ltx { file: path.display().to_string(), source })
            });
            match verified {
                Ok(s) => return Ok(Some(s.header)),
                // Only a damaged file goes; an I/O failure (EMFILE, EIO…) is reported instead.
                Err(e @ Error::Ltx { .. }) => {
                    tracing::warn!(file = %path.display(), error = %e, "removing damaged local L0 file");
                    let _ = fs::remove_file(&path);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// Removes every local L0 file (the local position is being reset).
    pub fn clear(&self) -> Result<()> {
        for (min, max) in self.list_l0()? {
            let p = self.l0_path(min, max);
            fs::remove_file(&p).map_err(|e| Error::io("remove", &p, e))?;
        }
        Ok(())
    }

    /// Writes an L0 file atomically: encode to `.tmp`, fsync, rename, fsync the directory.
    /// `pages` yields (pgno, data) in ascending order. `stored` writes pages uncompressed
    /// (a copy instead of a compression): the uploader compresses each page version once,
    /// when it merges a sync interval's captures into one upload.
    pub fn write_l0(
        &self,
        header: Header,
        stored: bool,
        pages: impl FnMut(&mut dyn FnMut(u32, &[u8]) -> Result<()>) -> Result<()>,
    ) -> Result<PathBuf> {
        let path = self.l0_path(header.min_txid, header.max_txid);
        let tmp = path.with_extension("ltx.tmp");
        let written = self.write_l0_tmp(&tmp, header, stored, pages).and_then(|()| {
            fs::rename(&tmp, &path).map_err(|e| Error::io("rename", &path, e))?;
            sync_dir(&self.l0_dir())
        });
        if written.is_err() {
            // A full disk must not keep the partial file's space taken until the next start.
            let _ = fs::remove_file(&tmp);
        }
        written.map(|()| path)
    }

    fn write_l0_tmp(
        &self,
        tmp: &Path,
        header: Header,
        stored: bool,
        mut pages: impl FnMut(&mut dyn FnMut(u32, &[u8]) -> Result<()>) -> Result<()>,
    ) -> Result<()> {
        let file = self.perms.create(tmp).map_err(|e| Error::io("create", tmp, e))?;
        let ltx_err = |source| Error::Ltx { file: tmp.display().to_string(), source };
        let mut enc = Encoder::new(BufWriter::with_capacity(256 << 10, file), header).map_err(ltx_err)?;
        pages(&mut |pgno, data| {
            if stored { enc.encode_page_stored(pgno, data) } else { enc.encode_page(pgno, data) }.map_err(ltx_err)
        })?;
        let (w, _) = enc.finish(0).map_err(ltx_err)?;
        let file = w.into_inner().map_err(|e| Error::io("write", tmp, e.into_error()))?;
        file.sync_all().map_err(|e| Error::io("fsync", tmp, e))
    }
}

/// The first break in `files` (sorted `(min, max)` ranges) as a chain going on from `end`:
/// `(the TXID reached, the min of the file after it)`, or `None` if each file starts right
/// after the one before and the first right after `end`.
pub fn first_gap(end: TxId, files: &[(TxId, TxId)]) -> Option<(TxId, TxId)> {
    let mut reached = end;
    for &(min, max) in files {
        if min.0 != reached.0 + 1 {
            return Some((reached, min));
        }
        reached = max;
    }
    None
}

/// Makes a rename durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| Error::io("fsync directory", dir, e))
}

fn open_err(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::io("open", path, e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_gap_finds_the_first_break_of_the_chain() {
        let t = |a: u64, b: u64| (TxId(a), TxId(b));
        assert_eq!(first_gap(TxId(4), &[]), None);
        assert_eq!(first_gap(TxId(4), &[t(5, 5), t(6, 9), t(10, 10)]), None);
        assert_eq!(first_gap(TxId(4), &[t(6, 6)]), Some((TxId(4), TxId(6))), "after the end");
        assert_eq!(first_gap(TxId(0), &[t(1, 3), t(5, 5), t(7, 7)]), Some((TxId(3), TxId(5))), "in the middle");
        assert_eq!(first_gap(TxId(2), &[t(2, 4)]), Some((TxId(2), TxId(2))), "an overlap is a break too");
    }
}
