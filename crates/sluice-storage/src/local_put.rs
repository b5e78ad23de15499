//! Uploads to a `file://` replica without a user-space copy: the kernel copies the file
//! (`copy_file_range`) into a staging file next to its destination, which is then hard-linked
//! into place — create-only, like `LocalFileSystem`'s own put, and atomic.

use std::path::{Path as StdPath, PathBuf};

use chrono::{DateTime, Utc};
use sluice_ltx::TxId;

use crate::client::ReplicaClient;
use crate::error::Result;

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
}

/// Copy to `<dest>#<n>`, fsync, link to `dest` (fails if it exists), unlink the staging
/// name, fsync the directory.
fn copy_create_only(src: &StdPath, dest: &StdPath) -> Result<u64, (&'static str, std::io::Error)> {
    let dir = dest.parent().ok_or(("copy", std::io::Error::other("destination has no parent directory")))?;
    std::fs::create_dir_all(dir).map_err(|e| ("create directory", e))?;
    let staging = staging_path(dest);
    let result = (|| {
        let size = std::fs::copy(src, &staging).map_err(|e| ("copy", e))?;
        std::fs::File::open(&staging).and_then(|f| f.sync_all()).map_err(|e| ("fsync", e))?;
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
    use super::*;

    #[test]
    fn copies_once_and_refuses_an_existing_name() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let src = dir.path().join("src.ltx");
        std::fs::write(&src, b"ltx bytes")?;
        let dest = dir.path().join("ltx/0/0000000000000001-0000000000000001.ltx");
        assert_eq!(copy_create_only(&src, &dest).map_err(|(_, e)| e)?, 9);
        assert_eq!(std::fs::read(&dest)?, b"ltx bytes");
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
