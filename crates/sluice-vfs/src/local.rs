//! Journals and temporary files: real files in one private directory (mode 0700) per process,
//! created on first use and removed when the last file or connection that uses the VFS closes.
//! (Litestream's VFS leaves a `litestream-vfs-*` directory behind for every process.)

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::codes::open;
use crate::db_file::ReadOutcome;
use crate::error::{Error, Result};

struct DirState {
    /// Open leases: main database files and local files.
    users: usize,
    dir: Option<tempfile::TempDir>,
}

static DIR: Mutex<DirState> = Mutex::new(DirState { users: 0, dir: None });

fn dir_state() -> std::sync::MutexGuard<'static, DirState> {
    // A panic while holding the lock leaves consistent counters (every update is one statement).
    DIR.lock().unwrap_or_else(|e| e.into_inner())
}

/// Keeps the private directory alive; the last lease dropped removes it with its contents.
#[derive(Debug)]
pub struct DirLease(());

impl DirLease {
    /// A new lease; the directory itself is only created by [`DirLease::path`].
    pub fn acquire() -> DirLease {
        dir_state().users += 1;
        DirLease(())
    }

    /// The directory, created (mode 0700) on first use.
    pub fn path(&self) -> Result<PathBuf> {
        let mut st = dir_state();
        if let Some(d) = &st.dir {
            return Ok(d.path().to_path_buf());
        }
        let base = std::env::temp_dir();
        let dir = tempfile::Builder::new()
            .prefix("sluice-vfs-")
            .permissions(std::fs::Permissions::from_mode(0o700))
            .tempdir_in(&base)
            .map_err(|e| Error::io("create directory", &base, e))?;
        let path = dir.path().to_path_buf();
        st.dir = Some(dir);
        Ok(path)
    }

    /// The directory if it exists (for `xAccess`/`xDelete`, which must not create it).
    pub fn existing() -> Option<PathBuf> {
        dir_state().dir.as_ref().map(|d| d.path().to_path_buf())
    }
}

impl Drop for DirLease {
    fn drop(&mut self) {
        let removed = {
            let mut st = dir_state();
            st.users = st.users.saturating_sub(1);
            if st.users == 0 { st.dir.take() } else { None }
        };
        if let Some(dir) = removed {
            let path = dir.path().to_path_buf();
            if let Err(e) = dir.close() {
                tracing::warn!("cannot remove the VFS's temporary directory {}: {e}", path.display());
            }
        }
    }
}

/// The local file name for SQLite's `name`: its last component (readable in listings) and a
/// hash of the whole name (unique, since several databases may share a base name).
pub fn local_name(name: &str) -> String {
    let base: String = Path::new(name)
        .file_name()
        .map(|b| b.to_string_lossy().chars().filter(|c| c.is_ascii_alphanumeric() || "-_.".contains(*c)).collect())
        .unwrap_or_default();
    format!("{base}-{:016x}", fnv1a64(name.as_bytes()))
}

fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3))
}

/// Where SQLite's `name` lives locally, if the private directory exists.
pub fn existing_path(name: &str) -> Option<PathBuf> {
    DirLease::existing().map(|d| d.join(local_name(name)))
}

/// A journal or temporary file.
#[derive(Debug)]
pub struct LocalFile {
    file: File,
    path: PathBuf,
    _lease: DirLease,
}

impl LocalFile {
    /// Opens `name` (or a fresh anonymous file for `None`) with SQLite's `xOpen` flags.
    /// Delete-on-close files are unlinked at once: the open descriptor keeps them readable.
    pub fn open(name: Option<&str>, flags: i32) -> Result<LocalFile> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let lease = DirLease::acquire();
        let dir = lease.path()?;
        let path = match name {
            Some(n) => dir.join(local_name(n)),
            None => dir.join(format!("temp-{}", NEXT.fetch_add(1, Ordering::Relaxed))),
        };
        let anonymous = name.is_none();
        let writable = anonymous || flags & open::READWRITE != 0;
        let mut opts = OpenOptions::new();
        opts.read(true).write(writable);
        if anonymous || flags & open::EXCLUSIVE != 0 {
            opts.create_new(true);
        } else if flags & open::CREATE != 0 {
            opts.create(true);
        }
        let file = opts.open(&path).map_err(|e| Error::io("open", &path, e))?;
        if anonymous || flags & open::DELETEONCLOSE != 0 {
            std::fs::remove_file(&path).map_err(|e| Error::io("delete", &path, e))?;
        }
        Ok(LocalFile { file, path, _lease: lease })
    }

    /// Reads at `offset`, zero-filling past the end of the file.
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<ReadOutcome> {
        let mut done = 0;
        while done < buf.len() {
            match self.file.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => {
                    buf[done..].fill(0);
                    return Ok(ReadOutcome::Short);
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io("read", &self.path, e)),
            }
        }
        Ok(ReadOutcome::Full)
    }

    /// Writes all of `buf` at `offset`.
    pub fn write(&self, offset: u64, buf: &[u8]) -> Result<()> {
        self.file.write_all_at(buf, offset).map_err(|e| Error::io("write", &self.path, e))
    }

    /// Sets the length.
    pub fn truncate(&self, size: u64) -> Result<()> {
        self.file.set_len(size).map_err(|e| Error::io("truncate", &self.path, e))
    }

    /// Nothing to do: these files never need to survive a crash. A read-only database's
    /// journal protects nothing; in write mode a transaction's atomicity and durability come
    /// from the write buffer's commit record, and a crash leaves no hot journal behind (the
    /// private directory is this process's own and goes with it). Two fsyncs per commit were
    /// most of a write-mode commit's time.
    pub fn sync(&self) -> Result<()> {
        Ok(())
    }

    /// Current length.
    pub fn size(&self) -> Result<u64> {
        self.file.metadata().map(|m| m.len()).map_err(|e| Error::io("stat", &self.path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // One test, because the directory is process-wide state.
    #[test]
    fn files_live_in_a_private_directory_removed_with_the_last_lease() {
        let conn = DirLease::acquire(); // a main database: no directory yet
        assert!(DirLease::existing().is_none());
        let temp = LocalFile::open(None, open::READWRITE | open::CREATE | open::DELETEONCLOSE).unwrap();
        let dir = DirLease::existing().expect("created by the first local file");
        assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
        temp.write(10, b"abc").unwrap();
        let mut buf = [7u8; 16];
        assert_eq!(temp.read(8, &mut buf).unwrap(), ReadOutcome::Short);
        assert_eq!(&buf[..5], &[0, 0, b'a', b'b', b'c']);
        assert!(buf[5..].iter().all(|b| *b == 0));
        assert_eq!(temp.size().unwrap(), 13);
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0, "delete-on-close files are unlinked at once");

        let journal = LocalFile::open(Some("/data/app.db-journal"), open::READWRITE | open::CREATE).unwrap();
        let jpath = existing_path("/data/app.db-journal").unwrap();
        assert!(jpath.exists() && jpath.file_name().unwrap().to_string_lossy().starts_with("app.db-journal-"));
        assert_ne!(local_name("/a/app.db-journal"), local_name("/b/app.db-journal"));
        journal.truncate(0).unwrap();
        journal.sync().unwrap();
        drop((temp, journal));
        assert!(dir.exists(), "a connection is still open");
        drop(conn);
        assert!(!dir.exists(), "removed with the last lease");
        assert!(DirLease::existing().is_none());
    }
}
