//! File-change notification shared by every database of a daemon, so that an idle database
//! costs no wake-ups at all: one inotify descriptor and one task for the whole process.
//!
//! - Each directory holding a database gets one persistent watch for entries appearing,
//!   disappearing or being renamed (a database, its `-wal`, `-shm` or `-journal`): that is how
//!   a database created, deleted or replaced is noticed, and how `dir:` discovery with
//!   `watch: true` sees new files. Writes are not on this watch, so a busy database does not
//!   flood it.
//! - A database that went quiet arms a one-shot watch ([`DbEvents::arm`]) on its WAL and
//!   main file: the next write wakes it once, the kernel drops the watch, and the database
//!   polls at its busy pace until it is quiet again.
//!
//! Without inotify (another OS, or the watch limit reached) [`FsEvents::enabled`] is false
//! and callers keep polling.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::os::raw::c_int;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use futures::StreamExt;
use std::os::unix::ffi::OsStrExt;

use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask, Watches};
use tokio::sync::watch;

/// How often a directory that went away is looked for again.
const DIR_RETRY: std::time::Duration = std::time::Duration::from_secs(1);
/// The sidecar files SQLite keeps next to a database.
const SIDECARS: [&str; 3] = ["-wal", "-shm", "-journal"];

/// The process's file-change notifier. Cheap to clone.
#[derive(Clone, Default)]
pub struct FsEvents {
    inner: Option<Arc<Inner>>,
}

impl std::fmt::Debug for FsEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FsEvents").field("enabled", &self.enabled()).finish()
    }
}

struct Inner {
    watches: Mutex<Watches>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Watched directories: descriptor (`None` once the directory went away; re-added when it
    /// is back) and number of users.
    dirs: HashMap<PathBuf, (Option<WatchDescriptor>, usize)>,
    dir_of: HashMap<c_int, PathBuf>,
    /// Per database path: its counter (bumped on every event about it) and its users.
    dbs: HashMap<PathBuf, (watch::Sender<u64>, usize)>,
    /// Per directory: the counter of anything happening in it (discovery).
    dir_subs: HashMap<PathBuf, (watch::Sender<u64>, usize)>,
    /// One-shot watches: descriptor → the database to wake.
    oneshots: HashMap<c_int, PathBuf>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn bump(tx: &watch::Sender<u64>) {
    tx.send_modify(|n| *n = n.wrapping_add(1));
}

impl FsEvents {
    /// Starts the notifier on the current runtime; disabled (callers poll) if inotify is
    /// unavailable.
    pub fn start() -> Self {
        match Self::try_start() {
            Ok(events) => events,
            Err(e) => {
                tracing::warn!(error = %e, "file-change notification unavailable; databases are polled instead");
                FsEvents::default()
            }
        }
    }

    fn try_start() -> std::io::Result<Self> {
        let runtime = tokio::runtime::Handle::try_current().map_err(std::io::Error::other)?;
        let inotify = Inotify::init()?;
        let stream = inotify.into_event_stream(vec![0u8; 64 * 1024])?;
        let inner = Arc::new(Inner { watches: Mutex::new(stream.watches()), state: Mutex::default() });
        let weak = Arc::downgrade(&inner);
        runtime.spawn(async move {
            let mut stream = stream;
            while let Some(event) = stream.next().await {
                let Some(inner) = weak.upgrade() else { return };
                match event {
                    Ok(e) => inner.dispatch(e.wd.get_watch_descriptor_id(), e.mask, e.name.as_deref()),
                    Err(e) => {
                        tracing::warn!(error = %e, "reading file-change events failed");
                        inner.wake_all();
                    }
                }
            }
        });
        Ok(FsEvents { inner: Some(inner) })
    }

    /// Whether notifications work: if not, callers must poll.
    pub fn enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Subscribes to events about the database at `db` (and its sidecars).
    pub fn database(&self, db: &Path) -> DbEvents {
        let Some(inner) = &self.inner else {
            return DbEvents { inner: None, db: db.to_path_buf(), rx: watch::channel(0).1 };
        };
        let dir = db.parent().unwrap_or(Path::new("/")).to_path_buf();
        let mut state = lock(&inner.state);
        if !inner.watch_dir(&mut state, &dir) {
            return DbEvents { inner: None, db: db.to_path_buf(), rx: watch::channel(0).1 };
        }
        let entry = state.dbs.entry(db.to_path_buf()).or_insert_with(|| (watch::channel(0).0, 0));
        entry.1 += 1;
        let rx = entry.0.subscribe();
        DbEvents { inner: Some(inner.clone()), db: db.to_path_buf(), rx }
    }

    /// Subscribes to entries appearing or disappearing in `dir`; `None` when that cannot be
    /// watched (the caller polls).
    pub fn directory(&self, dir: &Path) -> Option<DirEvents> {
        let inner = self.inner.as_ref()?;
        let mut state = lock(&inner.state);
        if !inner.watch_dir(&mut state, dir) {
            return None;
        }
        let entry = state.dir_subs.entry(dir.to_path_buf()).or_insert_with(|| (watch::channel(0).0, 0));
        entry.1 += 1;
        let rx = entry.0.subscribe();
        Some(DirEvents { inner: inner.clone(), dir: dir.to_path_buf(), rx })
    }
}

impl Inner {
    /// Adds a user of the directory's watch; false if it cannot be watched.
    fn watch_dir(&self, state: &mut State, dir: &Path) -> bool {
        if let Some((_, users)) = state.dirs.get_mut(dir) {
            *users += 1;
            return true;
        }
        match self.add_dir_watch(state, dir) {
            Some(wd) => {
                state.dirs.insert(dir.to_path_buf(), (Some(wd), 1));
                true
            }
            None => false,
        }
    }

    /// Re-adds the watch of a directory that went away and is back; false while it cannot be
    /// watched (the caller then polls).
    fn ensure_dir(&self, dir: &Path) -> bool {
        let mut state = lock(&self.state);
        match state.dirs.get(dir) {
            Some((Some(_), _)) => true,
            Some((None, _)) => match self.add_dir_watch(&mut state, dir) {
                Some(wd) => {
                    if let Some(entry) = state.dirs.get_mut(dir) {
                        entry.0 = Some(wd);
                    }
                    true
                }
                None => false,
            },
            None => false,
        }
    }

    fn add_dir_watch(&self, state: &mut State, dir: &Path) -> Option<WatchDescriptor> {
        let mask = WatchMask::CREATE
            | WatchMask::DELETE
            | WatchMask::MOVED_FROM
            | WatchMask::MOVED_TO
            | WatchMask::DELETE_SELF
            | WatchMask::MOVE_SELF
            | WatchMask::ONLYDIR;
        match lock(&self.watches).add(dir, mask) {
            Ok(wd) => {
                state.dir_of.insert(wd.get_watch_descriptor_id(), dir.to_path_buf());
                Some(wd)
            }
            Err(e) => {
                tracing::debug!(dir = %dir.display(), error = %e, "cannot watch directory; polling it");
                None
            }
        }
    }

    fn unwatch_dir(&self, state: &mut State, dir: &Path) {
        let Some((_, users)) = state.dirs.get_mut(dir) else { return };
        *users -= 1;
        if *users > 0 {
            return;
        }
        let Some((Some(wd), _)) = state.dirs.remove(dir) else { return };
        state.dir_of.remove(&wd.get_watch_descriptor_id());
        // Fails harmlessly if the directory (and so its watch) is gone already.
        let _ = lock(&self.watches).remove(wd);
    }

    fn dispatch(&self, wd: c_int, mask: EventMask, name: Option<&OsStr>) {
        let mut state = lock(&self.state);
        if mask.contains(EventMask::Q_OVERFLOW) {
            drop(state);
            self.wake_all();
            return;
        }
        if let Some(db) = state.oneshots.get(&wd) {
            if let Some((tx, _)) = state.dbs.get(db) {
                bump(tx);
            }
            if mask.contains(EventMask::IGNORED) {
                state.oneshots.remove(&wd);
            }
            return;
        }
        let Some(dir) = state.dir_of.get(&wd).cloned() else { return };
        if mask.contains(EventMask::IGNORED) {
            // The directory went away (or was moved): its watch is gone; users re-add it when
            // the directory is back, and poll meanwhile.
            state.dir_of.remove(&wd);
            if let Some(entry) = state.dirs.get_mut(&dir) {
                entry.0 = None;
            }
        }
        let dir = &dir;
        if let Some((tx, _)) = state.dir_subs.get(dir) {
            bump(tx);
        }
        let Some(name) = name else {
            // The directory itself went away: everything in it is gone.
            for (db, (tx, _)) in &state.dbs {
                if db.parent() == Some(dir.as_path()) {
                    bump(tx);
                }
            }
            return;
        };
        let db = dir.join(database_name(name));
        if let Some((tx, _)) = state.dbs.get(&db) {
            bump(tx);
        }
    }

    fn wake_all(&self) {
        let state = lock(&self.state);
        for (tx, _) in state.dbs.values().chain(state.dir_subs.values()) {
            bump(tx);
        }
    }
}

/// The database a directory entry belongs to (`app.db-wal` → `app.db`).
fn database_name(name: &OsStr) -> OsString {
    let bytes = name.as_bytes();
    for suffix in SIDECARS {
        if let Some(stem) = bytes.strip_suffix(suffix.as_bytes()) {
            return OsStr::from_bytes(stem).to_os_string();
        }
    }
    name.to_os_string()
}

/// Events about one database. Dropping it unsubscribes.
pub struct DbEvents {
    inner: Option<Arc<Inner>>,
    db: PathBuf,
    rx: watch::Receiver<u64>,
}

impl DbEvents {
    /// Whether events arrive (if not, poll).
    pub fn enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Arms one-shot watches on the WAL and the database file, so that the next write to
    /// either wakes [`changed`](Self::changed) once. False if nothing could be armed.
    pub fn arm(&self) -> bool {
        let Some(inner) = &self.inner else { return false };
        let mut wal = self.db.as_os_str().to_owned();
        wal.push("-wal");
        // The state lock is held across each add, so an event for the new watch cannot be
        // dispatched before the watch is known (lock order: state, then watches).
        let mut state = lock(&inner.state);
        for (path, required) in [(PathBuf::from(wal), true), (self.db.clone(), false)] {
            let added = lock(&inner.watches).add(&path, WatchMask::MODIFY | WatchMask::ONESHOT);
            match added {
                Ok(wd) => {
                    state.oneshots.insert(wd.get_watch_descriptor_id(), self.db.clone());
                }
                // No WAL yet: its creation is an entry event of the directory's watch.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                // Out of watches, say: without the WAL's watch a commit could go unnoticed.
                Err(_) if required => return false,
                Err(_) => {}
            }
        }
        true
    }

    /// Waits for the next event about the database (a write after [`arm`](Self::arm), or an
    /// entry of it created, deleted or renamed). Pending until then; forever when disabled.
    pub async fn changed(&mut self) {
        let Some(inner) = &self.inner else { return std::future::pending::<()>().await };
        let dir = self.db.parent().unwrap_or(Path::new("/"));
        if !inner.ensure_dir(dir) {
            // The directory is gone: look again in a while.
            return tokio::time::sleep(DIR_RETRY).await;
        }
        if self.rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

impl Drop for DbEvents {
    fn drop(&mut self) {
        let Some(inner) = &self.inner else { return };
        let mut state = lock(&inner.state);
        if let Some((_, users)) = state.dbs.get_mut(&self.db) {
            *users -= 1;
            if *users == 0 {
                state.dbs.remove(&self.db);
                let db = self.db.clone();
                state.oneshots.retain(|_, d| *d != db);
            }
        }
        let dir = self.db.parent().unwrap_or(Path::new("/")).to_path_buf();
        inner.unwatch_dir(&mut state, &dir);
    }
}

/// Events about entries of one directory. Dropping it unsubscribes.
pub struct DirEvents {
    inner: Arc<Inner>,
    dir: PathBuf,
    rx: watch::Receiver<u64>,
}

impl DirEvents {
    /// Waits until an entry of the directory appears, disappears or is renamed.
    pub async fn changed(&mut self) {
        if !self.inner.ensure_dir(&self.dir) {
            return tokio::time::sleep(DIR_RETRY).await;
        }
        if self.rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

impl Drop for DirEvents {
    fn drop(&mut self) {
        let mut state = lock(&self.inner.state);
        if let Some((_, users)) = state.dir_subs.get_mut(&self.dir) {
            *users -= 1;
            if *users == 0 {
                state.dir_subs.remove(&self.dir);
            }
        }
        let dir = self.dir.clone();
        self.inner.unwatch_dir(&mut state, &dir);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    async fn within(f: impl std::future::Future<Output = ()>) -> bool {
        tokio::time::timeout(Duration::from_secs(10), f).await.is_ok()
    }

    #[tokio::test]
    async fn a_quiet_database_wakes_on_its_next_write_and_on_its_entries() {
        let events = FsEvents::start();
        assert!(events.enabled());
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("app.db");
        std::fs::write(&db, b"x").unwrap();
        std::fs::write(dir.path().join("app.db-wal"), b"x").unwrap();
        let mut sub = events.database(&db);
        let mut other = events.database(&dir.path().join("other.db"));
        assert!(sub.arm());
        std::fs::OpenOptions::new().append(true).open(dir.path().join("app.db-wal")).unwrap().set_len(10).unwrap();
        assert!(within(sub.changed()).await, "a write to the WAL wakes the database");
        // Sidecars map to their database; other databases are not woken.
        std::fs::remove_file(dir.path().join("app.db-wal")).unwrap();
        assert!(within(sub.changed()).await, "deleting the WAL wakes the database");
        std::fs::write(dir.path().join("other.db-shm"), b"x").unwrap();
        assert!(within(other.changed()).await);
        let mut listing = events.directory(dir.path()).unwrap();
        std::fs::write(dir.path().join("new.db"), b"x").unwrap();
        assert!(within(listing.changed()).await, "a new entry wakes directory subscribers");
        assert_eq!(database_name(OsStr::new("a.db-journal")), OsString::from("a.db"));
        // A directory deleted and created again is watched again.
        let sub_dir = dir.path().join("tenants");
        std::fs::create_dir(&sub_dir).unwrap();
        let mut inner_db = events.database(&sub_dir.join("t.db"));
        std::fs::remove_dir(&sub_dir).unwrap();
        assert!(within(inner_db.changed()).await, "the directory's removal wakes its databases");
        std::fs::create_dir(&sub_dir).unwrap();
        // The first wait re-adds the watch (or sleeps while the directory is missing).
        let _ = tokio::time::timeout(Duration::from_secs(3), inner_db.changed()).await;
        std::fs::write(sub_dir.join("t.db"), b"x").unwrap();
        assert!(within(inner_db.changed()).await, "a database in the re-created directory wakes");
        assert_eq!(database_name(OsStr::new("a.db")), OsString::from("a.db"));
    }
}
