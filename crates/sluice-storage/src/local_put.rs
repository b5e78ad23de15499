//! Uploads to a `file://` replica without a user-space copy: the kernel copies the file
//! (`copy_file_range`) into a staging file next to its destination, which is then hard-linked
//! into place — create-only, like `LocalFileSystem`'s own put, and atomic.
//!
//! A local replica holds the database's pages, so it is private whatever the umask: files
//! are 0600 (Litestream's file backend) from their creation on, and directories Sluice
//! creates are 0700 (`LocalFileSystem` would create them 0777 minus the umask).

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path as StdPath, PathBuf};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use object_store::{PutMode, PutOptions, PutPayload};
use sluice_ltx::TxId;

use crate::client::ReplicaClient;
use crate::error::Result;

/// Mode of the files of a local replica.
pub(crate) const LOCAL_FILE_MODE: u32 = 0o600;
/// Mode of the directories Sluice creates in a local replica.
pub(crate) const LOCAL_DIR_MODE: u32 = 0o700;

/// Creates `dir` and its missing parents with [`LOCAL_DIR_MODE`].
pub(crate) fn create_local_dirs(dir: &StdPath) -> std::io::Result<()> {
    std::fs::DirBuilder::new().recursive(true).mode(LOCAL_DIR_MODE).create(dir)
}

impl ReplicaClient {
    /// Copies `path` to the replica file of (`level`, `min`, `max`) under `root`.
    pub(crate) async fn put_local_file(
        &self,
        root: &StdPath,
        level: u8,
        min: TxId,
        max: TxId,
        path: &StdPath,
        timestamp: DateTime<Utc>,
    ) -> Result<u64> {
        let dest = self.local_path(root, level, min, max);
        let (src, dest2) = (path.to_path_buf(), dest.clone());
        let copied = tokio::task::spawn_blocking(move || copy_create_only(&src, &dest2))
            .await
            .map_err(|e| self.local_err("copy", &dest, std::io::Error::other(e)))?;
        let size = match copied {
            Ok(size) => size,
            Err((_, e)) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(self.already_exists(&self.key(level, min, max)));
            }
            Err((op, e)) => return Err(self.local_err(op, &dest, e)),
        };
        self.set_local_file_times(dest, timestamp).await?;
        Ok(size)
    }

    /// Before a put through the store into a local replica: creates the directory of `dest`
    /// private, as the store would create it with the umask's mode.
    pub(crate) async fn prepare_local_dir(&self, dest: &StdPath) -> Result<()> {
        let Some(dir) = dest.parent().map(StdPath::to_path_buf) else { return Ok(()) };
        let made = tokio::task::spawn_blocking({
            let dir = dir.clone();
            move || create_local_dirs(&dir)
        })
        .await
        .map_err(std::io::Error::other)
        .and_then(|r| r);
        made.map_err(|e| self.local_err("create directory", &dir, e))
    }

    /// Writes the small object `name` at the replica's root (beside the level folders; the
    /// lease), returning the store's own result so callers can tell create-only and
    /// conditional outcomes apart. In a local replica the file is given mode 0600 once
    /// written, inside a root directory that Sluice creates 0700.
    pub async fn put_root_object(
        &self,
        name: &str,
        body: Bytes,
        mode: PutMode,
    ) -> object_store::Result<object_store::UpdateVersion> {
        let prefix = self.prefix.as_ref().trim_end_matches('/');
        let key = if prefix.is_empty() {
            object_store::path::Path::from(name)
        } else {
            object_store::path::Path::from(format!("{prefix}/{name}"))
        };
        let local = self.local_root.as_ref().map(|root| root.join(name));
        if let Some(path) = &local {
            let generic =
                |e: std::io::Error| object_store::Error::Generic { store: "LocalFileSystem", source: e.into() };
            if let Some(dir) = path.parent() {
                create_local_dirs(dir).map_err(generic)?;
            }
        }
        let opts = PutOptions { mode, ..PutOptions::default() };
        let put = self.store.put_opts(&key, PutPayload::from_bytes(body), opts).await?;
        if let Some(path) = local {
            use std::os::unix::fs::PermissionsExt;
            let private = std::fs::Permissions::from_mode(LOCAL_FILE_MODE);
            std::fs::set_permissions(&path, private)
                .map_err(|e| object_store::Error::Generic { store: "LocalFileSystem", source: e.into() })?;
        }
        Ok(object_store::UpdateVersion { e_tag: put.e_tag, version: put.version })
    }
}

/// Copy to `<dest>#<n>`, fsync, link to `dest` (fails if it exists), unlink the staging
/// name, fsync the directory.
fn copy_create_only(src: &StdPath, dest: &StdPath) -> Result<u64, (&'static str, std::io::Error)> {
    let dir = dest.parent().ok_or(("copy", std::io::Error::other("destination has no parent directory")))?;
    create_local_dirs(dir).map_err(|e| ("create directory", e))?;
    let staging = staging_path(dest);
    let result = (|| {
        // Created 0600 rather than by `fs::copy`, which would give it the source's mode.
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(LOCAL_FILE_MODE)
            .open(&staging)
            .map_err(|e| ("create", e))?;
        let mut input = std::fs::File::open(src).map_err(|e| ("open", e))?;
        // A file-to-file `io::copy` is done by the kernel (`copy_file_range`).
        let size = std::io::copy(&mut input, &mut out).map_err(|e| ("copy", e))?;
        out.flush().and_then(|()| out.sync_all()).map_err(|e| ("fsync", e))?;
        std::fs::hard_link(&staging, dest).map_err(|e| ("link", e))?;
        Ok(size)
    })();
    let _ = std::fs::remove_file(&staging);
    let size = result?;
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| ("fsync directory", e))?;
    Ok(size)
}

/// A staging name no listing takes for an LTX file (`LocalFileSystem` uses the same `#` form).
fn staging_path(dest: &StdPath) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut name = dest.file_name().unwrap_or_default().to_os_string();
    name.push(format!("#sluice-{}-{n}", std::process::id()));
    dest.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn copies_once_and_refuses_an_existing_name() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let src = dir.path().join("src.ltx");
        std::fs::write(&src, b"ltx bytes")?;
        let dest = dir.path().join("ltx/0/0000000000000001-0000000000000001.ltx");
        std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o644))?;
        assert_eq!(copy_create_only(&src, &dest).map_err(|(_, e)| e)?, 9);
        assert_eq!(std::fs::read(&dest)?, b"ltx bytes");
        // Private from creation on, not the source's mode; new directories too.
        let mode = |p: &StdPath| std::fs::metadata(p).map(|m| m.permissions().mode() & 0o777);
        assert_eq!(mode(&dest)?, 0o600);
        assert_eq!(mode(&dir.path().join("ltx"))?, 0o700);
        assert_eq!(mode(&dir.path().join("ltx/0"))?, 0o700);
        std::fs::write(&src, b"other")?;
        let Err((op, e)) = copy_create_only(&src, &dest) else { panic!("second copy to the same name succeeded") };
        assert_eq!((op, e.kind()), ("link", std::io::ErrorKind::AlreadyExists));
        assert_eq!(std::fs::read(&dest)?, b"ltx bytes", "existing file was replaced");
        let mut names = Vec::new();
        for e in std::fs::read_dir(dir.path().join("ltx/0"))? {
            names.push(e?.file_name().to_string_lossy().into_owned());
        }
        assert_eq!(names, ["0000000000000001-0000000000000001.ltx"], "staging files left behind");
        Ok(())
    }
}
