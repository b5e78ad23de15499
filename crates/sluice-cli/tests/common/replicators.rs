//! The two replicators the configuration-space test drives through the same workload: the
//! `sluice replicate` binary under test and the real `litestream replicate` 0.5.17, both to a
//! `file://` replica with short intervals (config files written here).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use sluice_testkit::peer;
use sluice_testkit::process::{ChildGuard, wait_until};

use super::{DAEMON_DEADLINE, Daemon, force_sync, free_port, wait_ready};

/// Intervals both replicators get: frequent syncs (many L0 files, so many restorable TXIDs),
/// compactions and snapshots within a case, every L0 file kept.
const SYNC_INTERVAL: &str = "100ms";
const LEVELS_AND_SNAPSHOTS: &str =
    "l0-retention: 1h\nlevels:\n  - interval: 1s\n  - interval: 3s\nsnapshot:\n  interval: 4s\n  retention: 1h\n";

pub trait Replicator {
    fn name(&self) -> &'static str;
    /// The replica's URL.
    fn url(&self) -> &str;
    /// Starts the replicator; with `wait`, returns once it has uploaded something.
    fn start(&mut self, wait: bool);
    /// Waits until a replicator started with `wait = false` has uploaded something.
    fn wait_ready(&mut self);
    /// Stops it cleanly; everything committed before the call is in the replica afterwards.
    fn stop(&mut self);
    /// Panics (with its log) if the replicator exited on its own.
    fn assert_running(&mut self);
}

/// `sluice replicate --config …`; stopped by `sluice sync` then SIGTERM (exit 0 asserted).
pub struct SluiceReplicator {
    dir: PathBuf,
    db: PathBuf,
    config: PathBuf,
    url: String,
    port: u16,
    daemon: Option<Daemon>,
    starts: u32,
    /// The TXID the last `sluice sync` printed.
    pub last_sync: u64,
}

impl SluiceReplicator {
    pub fn new(dir: &Path, db: &Path, checkpoint_pages: u32) -> SluiceReplicator {
        let url = format!("file://{}", dir.join("replica").display());
        let port = free_port();
        let config = dir.join("sluice.yml");
        let yaml = format!(
            "addr: 127.0.0.1:{port}\n{LEVELS_AND_SNAPSHOTS}dbs:\n  - path: {db}\n    monitor-interval: 50ms\n    \
             checkpoint-interval: 1s\n    min-checkpoint-page-count: {checkpoint_pages}\n    replica:\n      \
             url: \"{url}\"\n      sync-interval: {SYNC_INTERVAL}\n",
            db = db.display()
        );
        std::fs::write(&config, yaml).expect("write sluice config");
        SluiceReplicator {
            dir: dir.to_path_buf(),
            db: db.to_path_buf(),
            config,
            url,
            port,
            daemon: None,
            starts: 0,
            last_sync: 0,
        }
    }

    fn daemon(&mut self) -> &mut Daemon {
        self.daemon.as_mut().expect("BUG: sluice daemon not running")
    }
}

impl Replicator for SluiceReplicator {
    fn name(&self) -> &'static str {
        "sluice"
    }

    fn url(&self) -> &str {
        &self.url
    }

    fn start(&mut self, wait: bool) {
        assert!(self.daemon.is_none(), "BUG: sluice daemon already running");
        self.starts += 1;
        let log = self.dir.join(format!("sluice-{}.log", self.starts));
        self.daemon = Some(Daemon::start(&self.config, &[], &log));
        if wait {
            self.wait_ready();
        }
    }

    fn wait_ready(&mut self) {
        let port = self.port;
        wait_ready(self.daemon(), port);
    }

    fn stop(&mut self) {
        self.last_sync = force_sync(&self.db, &self.config);
        self.daemon().stop_ok();
        self.daemon = None;
    }

    fn assert_running(&mut self) {
        self.daemon().assert_running();
    }
}

/// `litestream replicate -config …` (the real 0.5.17); stopped by SIGTERM, which makes it sync
/// one last time (exit 0 asserted).
pub struct LitestreamReplicator {
    dir: PathBuf,
    config: PathBuf,
    replica: PathBuf,
    url: String,
    child: Option<ChildGuard>,
    starts: u32,
}

impl LitestreamReplicator {
    pub fn new(dir: &Path, db: &Path, checkpoint_pages: u32) -> LitestreamReplicator {
        let replica = dir.join("replica");
        let config = dir.join("litestream.yml");
        let yaml = format!(
            "{LEVELS_AND_SNAPSHOTS}dbs:\n  - path: {db}\n    monitor-interval: 50ms\n    checkpoint-interval: 1s\n    \
             min-checkpoint-page-count: {checkpoint_pages}\n    replica:\n      type: file\n      path: {replica}\n      \
             sync-interval: {SYNC_INTERVAL}\n",
            db = db.display(),
            replica = replica.display()
        );
        std::fs::write(&config, yaml).expect("write litestream config");
        LitestreamReplicator {
            dir: dir.to_path_buf(),
            config,
            url: format!("file://{}", replica.display()),
            replica,
            child: None,
            starts: 0,
        }
    }

    fn log(&self) -> PathBuf {
        self.dir.join(format!("litestream-{}.log", self.starts))
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(self.log()).unwrap_or_default()
    }

    fn level0_files(&self) -> usize {
        std::fs::read_dir(self.replica.join("ltx/0")).map(|d| d.count()).unwrap_or(0)
    }
}

impl Replicator for LitestreamReplicator {
    fn name(&self) -> &'static str {
        "litestream"
    }

    fn url(&self) -> &str {
        &self.url
    }

    fn start(&mut self, wait: bool) {
        assert!(self.child.is_none(), "BUG: litestream already running");
        self.starts += 1;
        let f = File::create(self.log()).expect("create litestream log");
        let mut cmd = peer::litestream_command();
        cmd.arg("replicate")
            .arg("-config")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(f.try_clone().expect("clone log"))
            .stderr(f);
        self.child = Some(ChildGuard::spawn(&mut cmd));
        if wait {
            self.wait_ready();
        }
    }

    fn wait_ready(&mut self) {
        // Ready: it opened the database and the replica has a level-0 file (after a restart
        // the old ones count: it replicates from where the replica is).
        let ready =
            wait_until(DAEMON_DEADLINE, || self.log_text().contains("replicating to") && self.level0_files() > 0);
        self.assert_running();
        assert!(ready, "litestream not ready within {DAEMON_DEADLINE:?}; log:\n{}", self.log_text());
    }

    fn stop(&mut self) {
        let mut child = self.child.take().expect("BUG: litestream not running");
        let (status, clean) = child.stop("TERM", DAEMON_DEADLINE);
        assert!(clean, "litestream did not exit within {DAEMON_DEADLINE:?} of SIGTERM; log:\n{}", self.log_text());
        assert!(status.success(), "litestream exit status after SIGTERM: {status:?}; log:\n{}", self.log_text());
    }

    fn assert_running(&mut self) {
        let status = self.child.as_mut().expect("BUG: litestream not running").try_wait();
        if let Some(s) = status {
            panic!("litestream exited unexpectedly ({s:?}); log:\n{}", self.log_text());
        }
    }
}

/// Waits a moment and checks that a replicator started before its database exists neither
/// exited nor created the file.
pub fn assert_waits_for_database(r: &mut dyn Replicator, db: &Path) {
    std::thread::sleep(Duration::from_millis(500));
    r.assert_running();
    assert!(!db.exists(), "{} created {} before the application did", r.name(), db.display());
}
