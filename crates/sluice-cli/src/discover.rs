//! `dir:` entries: the databases of a directory, found as Litestream finds them (file name
//! matches `pattern`, file starts with SQLite's magic), and with `watch: true` followed at run
//! time: a database created there starts replicating, one removed stops.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sluice_config::DirConfig;
use sluice_replicate::fsevents::{DirEvents, FsEvents};
use tokio::sync::watch;

use crate::registry::{Registry, Source};

/// Events arrive in bursts (a database and its journal); rescan once they settle, as
/// Litestream does.
const DEBOUNCE: Duration = Duration::from_millis(250);
/// The first 16 bytes of every SQLite database file.
const MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// The databases in `dir` now, and the directories looked in (for watching). `known`
/// databases are not opened again (closing a descriptor of a file drops every POSIX lock this
/// process holds on it, SQLite's included); a directory that cannot be listed keeps the
/// `known` databases under it (a passing error must not stop their replication).
pub fn scan(dir: &DirConfig, known: &BTreeSet<PathBuf>) -> (BTreeSet<PathBuf>, Vec<PathBuf>) {
    let mut dbs = BTreeSet::new();
    let mut dirs = Vec::new();
    let mut todo = vec![dir.dir.clone()];
    while let Some(d) = todo.pop() {
        let entries = match std::fs::read_dir(&d) {
            Ok(e) => e,
            Err(e) => {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(dir = %d.display(), error = %e, "cannot list a directory of a `dir:` entry");
                    dbs.extend(known.iter().filter(|p| p.starts_with(&d)).cloned());
                }
                continue;
            }
        };
        dirs.push(d);
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else { continue };
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if kind.is_dir() {
                // Staging directories hold LTX files, never databases.
                if dir.recursive && !name.ends_with("-litestream") {
                    todo.push(entry.path());
                }
            } else if kind.is_file() && dir.matches(&name) {
                let path = entry.path();
                if known.contains(&path) || is_sqlite(&path) {
                    dbs.insert(path);
                }
            }
        }
    }
    (dbs, dirs)
}

fn is_sqlite(path: &Path) -> bool {
    let mut magic = [0u8; 16];
    std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut magic)).is_ok() && &magic == MAGIC
}

/// Registers the databases of `dir` found now (the first scan, done before the daemon
/// starts syncing); what [`watch`] needs to go on from there.
pub fn register(dir: &DirConfig, registry: &Registry) -> Found {
    let mut found = Found::default();
    found.rescan(dir, registry);
    found
}

/// What a directory held at the last scan.
#[derive(Default)]
pub struct Found {
    dbs: BTreeSet<PathBuf>,
    dirs: Vec<PathBuf>,
    /// A database found is still stopping from an earlier removal: look again soon.
    stopping: bool,
}

impl Found {
    fn rescan(&mut self, dir: &DirConfig, registry: &Registry) {
        let mut known = self.dbs.clone();
        known.extend(registry.paths().into_iter().map(|(p, _)| p));
        let (found, dirs) = scan(dir, &known);
        // Every database found, not only new ones: one that was stopping when last seen (it
        // was deleted and created again) is added once its old task has ended.
        self.stopping = false;
        for path in &found {
            if registry.is_stopping(path) {
                self.stopping = true;
                continue;
            }
            let Some(db) = dir.db(path) else { continue };
            match registry.add(&db, Source::Dir) {
                Ok(true) => tracing::info!(db = %path.display(), dir = %dir.dir.display(), "found a database"),
                Ok(false) => {}
                Err(_) if registry.is_stopping(path) => self.stopping = true,
                Err(e) => {
                    tracing::error!(db = %path.display(), "cannot replicate a database found in {}: {}", dir.dir.display(), crate::logging::chain(&e))
                }
            }
        }
        for path in self.dbs.difference(&found) {
            // Only what discovery started: a `path:` entry or a registration stays.
            let ours = registry.paths().iter().any(|(p, s)| p == path && *s == Source::Dir);
            if ours && registry.remove(path) {
                tracing::info!(db = %path.display(), "the database left its directory; stopped replicating it");
            }
        }
        self.dbs = found;
        self.dirs = dirs;
    }
}

/// `watch: true`: keeps the registry in step with the directory until `shutdown`.
pub async fn watch(
    dir: DirConfig,
    mut found: Found,
    registry: Registry,
    events: FsEvents,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut watched: Vec<(PathBuf, DirEvents)> = Vec::new();
    loop {
        // Watch every directory looked in (new subdirectories included), drop vanished ones.
        watched.retain(|(d, _)| found.dirs.contains(d));
        let before = watched.len();
        for d in &found.dirs {
            if !watched.iter().any(|(w, _)| w == d)
                && let Some(sub) = events.directory(d)
            {
                watched.push((d.clone(), sub));
            }
        }
        if watched.len() > before && before > 0 {
            // A new subdirectory: a database created in it before its watch existed would
            // raise no event, so look once more now that it is watched.
            found.rescan(&dir, &registry);
            continue;
        }
        let wait = async {
            if found.stopping || watched.is_empty() {
                // A database still stopping, or no notification (or nothing to watch yet):
                // look again on a timer.
                let pause = if found.stopping { DEBOUNCE } else { Duration::from_secs(1) };
                tokio::time::sleep(pause).await;
            } else {
                futures::future::select_all(watched.iter_mut().map(|(_, w)| Box::pin(w.changed()))).await;
                tokio::time::sleep(DEBOUNCE).await;
            }
        };
        tokio::select! {
            _ = wait => {}
            _ = shutdown.changed() => return,
        }
        found.rescan(&dir, &registry);
    }
}

/// Every database a config names now: its `path:` entries, then what its `dir:` entries hold.
pub fn configured(cfg: &sluice_config::Config) -> Vec<sluice_config::DbConfig> {
    let mut dbs = cfg.dbs.clone();
    for dir in &cfg.dirs {
        for path in scan(dir, &BTreeSet::new()).0 {
            if !dbs.iter().any(|d| d.path == path)
                && let Some(db) = dir.db(&path)
            {
                dbs.push(db);
            }
        }
    }
    dbs
}
