//! Test support for Sluice. Used only as a dev-dependency (`publish = false`).
//!
//! # Layout
//!
//! - [`peer`]: the real Litestream 0.5.17 (`litestream` binary, `litestream-vfs.so`, the venv's
//!   Python) installed by `scripts/test` into `.venv-test`.
//! - [`s3`]: the moto S3 server started by `scripts/test` (endpoint, buckets, `s3://` URLs).
//! - [`emulators`]: the Azurite (Azure Blob) and fake-gcs-server (GCS) emulators it also starts.
//! - [`fixtures`]: the Litestream fixtures in `fixtures/litestream-0.5.17`, their manifests, and
//!   copies of replicas with Litestream's mtime convention re-applied.
//! - [`hash`]: the fixtures' `logical-v1` content hash, file sha256, `PRAGMA integrity_check`.
//! - [`seed`]: the seed every randomized test prints and that `SEED=` overrides.
//! - [`process`]: child processes that are killed on drop, waits with timeouts.
//! - [`proxy`]: a TCP proxy that can be switched off, for storage outages.
//! - [`vfs`]: the Sluice VFS extension: building and loading the `.so`, URIs naming a replica.
//! - [`vfs_worker`]: a Python process on the extension driven one command at a time.
//!
//! # No silent skips
//!
//! Every helper that needs the environment `scripts/test` sets up (the venv, moto, the emulators) **panics**
//! with a message that says to run the tests via `scripts/test` when it is missing. A test that
//! needs the peer never passes by skipping.

pub mod emulators;
pub mod fixtures;
pub mod hash;
pub mod peer;
pub mod process;
pub mod proxy;
pub mod s3;
pub mod seed;
pub mod vfs;
pub mod vfs_worker;

use std::path::PathBuf;

pub use seed::seed;

/// The message every "environment missing" panic carries.
pub const RUN_VIA_SCRIPTS_TEST: &str = "run tests via scripts/test (it installs the Litestream peer into .venv-test, starts moto, Azurite and fake-gcs-server and sets SLUICE_TEST_* variables)";

/// The workspace root (the directory holding `crates/`, `fixtures/`, `scripts/`).
///
/// Computed from this crate's `CARGO_MANIFEST_DIR`, so it is the same whichever crate's tests
/// call it.
pub fn repo_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .and_then(|crates| crates.parent())
        .map(PathBuf::from)
        .expect("BUG: sluice-testkit lives at <repo>/crates/sluice-testkit")
}
