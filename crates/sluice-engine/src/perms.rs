//! Modes and owners of what Sluice writes about a database.
//!
//! SQLite creates a database's `-wal` and `-shm` with the database file's permission bits
//! (and, running as root, its owner), whatever the umask. Everything Sluice keeps about a
//! database — the meta directory, local LTX files, temp files, the journal, the lease
//! writer ID and the pid file — holds its pages or state about it, so it follows the same
//! rule: files get the database's mode, directories the same plus the execute bits where read
//! is granted, and both get its owner and group where the process may set them. Where there
//! is no local database to copy from (a restore's output), files are private: 0600.
//!
//! The mode is set when a file is created and then once more explicitly, because the umask
//! applies at creation (a 0664 database under umask 022 would otherwise give 0644 files).

use std::fs::{File, Metadata, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::error::{Error, Result};

/// The mode and owner to give files and directories about one database.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Perms {
    /// Permission bits of files (`rwx` bits only: never setuid, setgid or sticky).
    mode: u32,
    /// Owner and group, or `None` to keep the process's own.
    owner: Option<(u32, u32)>,
}

impl Perms {
    /// Only the process's user may read or write: for output that has no database to follow.
    pub const PRIVATE: Perms = Perms { mode: 0o600, owner: None };

    /// The database file's mode and owner.
    pub fn of_db(db: &Path) -> Result<Perms> {
        let m = std::fs::metadata(db).map_err(|e| Error::io("stat", db, e))?;
        Ok(Perms::from_metadata(&m))
    }

    /// Mode and owner of the file `m` describes.
    pub fn from_metadata(m: &Metadata) -> Perms {
        Perms { mode: m.mode() & 0o777, owner: Some((m.uid(), m.gid())) }
    }

    /// Permission bits for files.
    pub fn file_mode(&self) -> u32 {
        self.mode
    }

    /// Permission bits for directories: the file mode plus search where read is granted.
    pub fn dir_mode(&self) -> u32 {
        self.mode | ((self.mode & 0o444) >> 2)
    }

    /// The owner and group files get, if any.
    pub fn owner(&self) -> Option<(u32, u32)> {
        self.owner
    }

    /// Creates (or truncates) `path` for writing with these permissions.
    pub fn create(&self, path: &Path) -> std::io::Result<File> {
        let f = OpenOptions::new().write(true).create(true).truncate(true).mode(self.mode).open(path)?;
        self.apply_file(&f)?;
        Ok(f)
    }

    /// Opens `path` with `opts` (creating it if they say so) and applies these permissions.
    pub fn open(&self, path: &Path, opts: &mut OpenOptions) -> std::io::Result<File> {
        let f = opts.mode(self.mode).open(path)?;
        self.apply_file(&f)?;
        Ok(f)
    }

    /// Writes a small file whole (created or truncated) with these permissions.
    pub fn write(&self, path: &Path, data: &[u8]) -> std::io::Result<()> {
        self.create(path)?.write_all(data)
    }

    /// Gives an open file exactly these permissions.
    pub fn apply_file(&self, f: &File) -> std::io::Result<()> {
        let m = f.metadata()?;
        self.chown(&m, |uid, gid| std::os::unix::fs::fchown(f, uid, gid))?;
        if m.mode() & 0o7777 != self.mode {
            f.set_permissions(std::fs::Permissions::from_mode(self.mode))?;
        }
        Ok(())
    }

    /// Creates `dir` and any missing parents with the directory mode and owner. Directories
    /// that already exist are left as they are.
    pub fn create_dir_all(&self, dir: &Path) -> std::io::Result<()> {
        if dir.is_dir() {
            return Ok(());
        }
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            self.create_dir_all(parent)?;
        }
        match std::fs::DirBuilder::new().mode(self.dir_mode()).create(dir) {
            Ok(()) => self.apply_dir(dir),
            // Created meanwhile by another task: fine, it was created by the same rules.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Gives an existing directory exactly the directory mode and owner.
    pub fn apply_dir(&self, dir: &Path) -> std::io::Result<()> {
        self.apply_path(dir, self.dir_mode())
    }

    fn apply_path(&self, path: &Path, mode: u32) -> std::io::Result<()> {
        let m = std::fs::symlink_metadata(path)?;
        self.chown(&m, |uid, gid| std::os::unix::fs::lchown(path, uid, gid))?;
        if m.mode() & 0o7777 != mode {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
        }
        Ok(())
    }

    /// Applies these permissions to `dir` and everything below it (symbolic links are left
    /// alone): brings a meta directory written under other rules (an older version, a database
    /// recreated with another mode) in line. Returns the first error, after trying everything.
    pub fn apply_tree(&self, dir: &Path) -> std::io::Result<()> {
        let mut first_err = self.apply_dir(dir).err();
        for entry in std::fs::read_dir(dir)? {
            let Ok(entry) = entry else { continue };
            let res = match entry.file_type() {
                Ok(t) if t.is_dir() => self.apply_tree(&entry.path()),
                Ok(t) if t.is_file() => self.apply_path(&entry.path(), self.mode),
                _ => Ok(()),
            };
            if let Err(e) = res {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Sets owner and group where they differ. Changing the owner needs root; a process that
    /// may not (EPERM) still tries to set the group alone, which a member of it may do, and
    /// otherwise keeps its own: the mode is what keeps others out.
    fn chown(
        &self,
        current: &Metadata,
        set: impl Fn(Option<u32>, Option<u32>) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        let Some((uid, gid)) = self.owner else { return Ok(()) };
        let denied = |r: std::io::Result<()>| match r {
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Ok(false),
            r => r.map(|()| true),
        };
        if current.uid() != uid && denied(set(Some(uid), Some(gid)))? {
            return Ok(());
        }
        if current.gid() != gid {
            denied(set(None, Some(gid)))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode_of(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).map(|m| m.mode() & 0o7777).unwrap_or(0)
    }

    #[test]
    fn directories_get_search_where_read_is_granted() {
        let p = |mode| Perms { mode, owner: None };
        assert_eq!(p(0o600).dir_mode(), 0o700);
        assert_eq!(p(0o640).dir_mode(), 0o750);
        assert_eq!(p(0o644).dir_mode(), 0o755);
        assert_eq!(p(0o660).dir_mode(), 0o770);
        assert_eq!(p(0o200).dir_mode(), 0o200);
    }

    #[test]
    fn files_and_dirs_get_the_database_mode_exactly() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        for mode in [0o600, 0o640, 0o664] {
            let db = dir.path().join(format!("{mode:o}.db"));
            std::fs::write(&db, b"x")?;
            std::fs::set_permissions(&db, std::fs::Permissions::from_mode(mode))?;
            let perms = Perms::of_db(&db).map_err(std::io::Error::other)?;
            assert_eq!(perms.file_mode(), mode);
            let root = dir.path().join(format!(".{mode:o}-meta"));
            let l0 = root.join("ltx").join("0");
            perms.create_dir_all(&l0)?;
            let file = l0.join("f.ltx.tmp");
            perms.write(&file, b"pages")?;
            // 0664 is wider than the usual umask 022 allows at creation: the explicit chmod.
            assert_eq!(mode_of(&file), mode, "file of a {mode:o} database");
            for d in [&root, &root.join("ltx"), &l0] {
                assert_eq!(mode_of(d), perms.dir_mode(), "{} of a {mode:o} database", d.display());
            }
        }
        Ok(())
    }

    #[test]
    fn apply_tree_narrows_an_existing_tree() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let root = dir.path().join("meta");
        std::fs::create_dir_all(root.join("ltx/0"))?;
        std::fs::write(root.join("ltx/0/a.ltx"), b"a")?;
        std::fs::write(root.join("sluice.pid"), b"1")?;
        for p in [root.join("ltx/0/a.ltx"), root.join("sluice.pid")] {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644))?;
        }
        let perms = Perms { mode: 0o600, owner: None };
        perms.apply_tree(&root)?;
        for d in [root.clone(), root.join("ltx"), root.join("ltx/0")] {
            assert_eq!(mode_of(&d), 0o700, "{}", d.display());
        }
        for f in [root.join("ltx/0/a.ltx"), root.join("sluice.pid")] {
            assert_eq!(mode_of(&f), 0o600, "{}", f.display());
        }
        Ok(())
    }

    #[test]
    fn group_follows_the_database_when_permitted() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let db = dir.path().join("g.db");
        std::fs::write(&db, b"x")?;
        let me = std::fs::metadata(&db)?;
        // Only root may give a file a group it is not a member of; elsewhere the group stays
        // the process's and the call must still succeed (EPERM is not an error).
        let gid = 1234;
        let may_chown = std::os::unix::fs::chown(&db, None, Some(gid)).is_ok();
        let perms = Perms { mode: 0o640, owner: Some((me.uid(), if may_chown { gid } else { me.gid() + 1 })) };
        let f = dir.path().join("f");
        perms.write(&f, b"y")?;
        let got = std::fs::metadata(&f)?;
        if may_chown {
            assert_eq!(got.gid(), gid);
        } else {
            assert_eq!(got.gid(), me.gid(), "without permission the group stays the process's");
        }
        assert_eq!(got.mode() & 0o777, 0o640);
        Ok(())
    }
}
