//! The typed configuration and its defaults (Litestream 0.5.17's, see spec §3.8).

use std::path::{Path, PathBuf};
use std::time::Duration;

use sluice_storage::ReplicaConfig;

/// Default compaction intervals of levels 1..=3.
pub const DEFAULT_LEVELS: [Duration; 3] =
    [Duration::from_secs(30), Duration::from_secs(5 * 60), Duration::from_secs(60 * 60)];
/// At most this many `levels:` entries (levels 1..=8; level 9 is the snapshot level).
pub const MAX_LEVELS: usize = 8;
/// Default `snapshot.interval` and `snapshot.retention`.
pub const DEFAULT_SNAPSHOT_INTERVAL: Duration = Duration::from_secs(24 * 60 * 60);
/// Default `snapshot.retention`.
pub const DEFAULT_SNAPSHOT_RETENTION: Duration = Duration::from_secs(24 * 60 * 60);
/// Default `l0-retention`.
pub const DEFAULT_L0_RETENTION: Duration = Duration::from_secs(5 * 60);
/// Default `l0-retention-check-interval`.
pub const DEFAULT_L0_RETENTION_CHECK_INTERVAL: Duration = Duration::from_secs(15);
/// Default `shutdown-sync-timeout`.
pub const DEFAULT_SHUTDOWN_SYNC_TIMEOUT: Duration = Duration::from_secs(30);
/// Default `shutdown-sync-interval`.
pub const DEFAULT_SHUTDOWN_SYNC_INTERVAL: Duration = Duration::from_millis(500);
/// Default `lease-ttl` (Sluice's): how long the replica lease outlives its last renewal.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(10 * 60);
/// Shortest `lease-ttl`: the lease is renewed by uploads, at half its lifetime, so a shorter
/// one would expire between two uploads at the default sync interval.
pub const MIN_LEASE_TTL: Duration = Duration::from_secs(2);
/// Default `heartbeat-interval` (Litestream's).
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5 * 60);
/// Shortest `heartbeat-interval` (Litestream's).
pub const MIN_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(60);
/// Default `max-pending-size` (Sluice's): local files not yet uploaded; 0 means no limit.
pub const DEFAULT_MAX_PENDING_SIZE: u64 = 0;
/// Default `max-concurrent-uploads` (Sluice's).
pub const DEFAULT_MAX_CONCURRENT_UPLOADS: usize = 32;
/// Default `max-concurrent-compactions` (Sluice's).
pub const DEFAULT_MAX_CONCURRENT_COMPACTIONS: usize = 4;
/// Default `monitor-interval`.
pub const DEFAULT_MONITOR_INTERVAL: Duration = Duration::from_secs(1);
/// Default `checkpoint-interval`.
pub const DEFAULT_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(60);
/// Default `busy-timeout`.
pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(1);
/// Default `min-checkpoint-page-count` (PASSIVE threshold).
pub const DEFAULT_MIN_CHECKPOINT_PAGE_COUNT: u64 = 1000;
/// Default `truncate-page-n` (emergency TRUNCATE threshold, ≈ 500 MB at 4 KiB pages).
pub const DEFAULT_TRUNCATE_PAGE_N: u64 = 121_359;
/// Default `max-sync-wal-bytes`.
pub const DEFAULT_MAX_SYNC_WAL_BYTES: u64 = 64 << 20;
/// Default replica `sync-interval`.
pub const DEFAULT_SYNC_INTERVAL: Duration = Duration::from_secs(1);
/// Default replica `max-sync-ltx-files`.
pub const DEFAULT_MAX_SYNC_LTX_FILES: usize = 256;

/// A parsed configuration file.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// The databases to replicate (`dbs:` entries with `path`).
    pub dbs: Vec<DbConfig>,
    /// Directories whose databases are replicated (`dbs:` entries with `dir`).
    pub dirs: Vec<DirConfig>,
    /// `socket:`: the control socket; `None` when it is off.
    pub socket: Option<SocketConfig>,
    /// `addr`: bind address of the metrics server; `None` when metrics are off.
    pub addr: Option<String>,
    /// `levels[*].interval`: compaction intervals of levels 1..=n.
    pub levels: Vec<Duration>,
    /// `snapshot.interval`.
    pub snapshot_interval: Duration,
    /// `snapshot.retention`.
    pub snapshot_retention: Duration,
    /// `l0-retention`; zero keeps L0 files forever.
    pub l0_retention: Duration,
    /// `l0-retention-check-interval`.
    pub l0_retention_check_interval: Duration,
    /// `retention.enabled`: when false, nothing is deleted remotely.
    pub retention_enabled: bool,
    /// `logging:` (with `LOG_LEVEL` from the environment applied).
    pub logging: LoggingConfig,
    /// `exec`: command to run as a child; replication stops when it exits.
    pub exec: Option<String>,
    /// `shutdown-sync-timeout`: how long to keep retrying the final sync (zero: once).
    pub shutdown_sync_timeout: Duration,
    /// `shutdown-sync-interval`: delay between those retries.
    pub shutdown_sync_interval: Duration,
    /// `lease-ttl`: how long the replica lease stays valid without renewal.
    pub lease_ttl: Duration,
    /// `max-pending-size`: bytes of local files awaiting upload past which capture and
    /// checkpoints pause (the WAL keeps the changes); 0 = no limit.
    pub max_pending_size: u64,
    /// `max-concurrent-uploads`: uploads (and connects) in flight across all databases.
    pub max_concurrent_uploads: usize,
    /// `max-concurrent-compactions`: compactions and snapshots in flight across all databases.
    pub max_concurrent_compactions: usize,
    /// `heartbeat-url`: fetched (HTTP GET) once per `heartbeat-interval` while every database
    /// replicates successfully; `None` = no heartbeat.
    pub heartbeat_url: Option<String>,
    /// `heartbeat-interval`.
    pub heartbeat_interval: Duration,
    /// `validation.interval`: how often every replica is validated unless its own
    /// `validation-interval` says otherwise; `None` = off. Already folded into each replica's
    /// [`ReplicaSettings::validation_interval`].
    pub validation_interval: Option<Duration>,
    /// Human-readable warnings about ignored keys, each starting with the key's location.
    /// The CLI prints them.
    pub warnings: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            dbs: Vec::new(),
            dirs: Vec::new(),
            socket: None,
            addr: None,
            levels: DEFAULT_LEVELS.to_vec(),
            snapshot_interval: DEFAULT_SNAPSHOT_INTERVAL,
            snapshot_retention: DEFAULT_SNAPSHOT_RETENTION,
            l0_retention: DEFAULT_L0_RETENTION,
            l0_retention_check_interval: DEFAULT_L0_RETENTION_CHECK_INTERVAL,
            retention_enabled: true,
            logging: LoggingConfig::default(),
            exec: None,
            shutdown_sync_timeout: DEFAULT_SHUTDOWN_SYNC_TIMEOUT,
            shutdown_sync_interval: DEFAULT_SHUTDOWN_SYNC_INTERVAL,
            lease_ttl: DEFAULT_LEASE_TTL,
            max_pending_size: DEFAULT_MAX_PENDING_SIZE,
            max_concurrent_uploads: DEFAULT_MAX_CONCURRENT_UPLOADS,
            max_concurrent_compactions: DEFAULT_MAX_CONCURRENT_COMPACTIONS,
            heartbeat_url: None,
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            validation_interval: None,
            warnings: Vec::new(),
        }
    }
}

/// `logging:`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggingConfig {
    /// Lower-case level: `trace`, `debug`, `info`, `warn` or `error`.
    pub level: String,
    /// `type`.
    pub format: LogFormat,
    /// `stderr`: log to stderr instead of stdout.
    pub stderr: bool,
    /// `source`: include source locations.
    pub source: bool,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        LoggingConfig { level: "info".into(), format: LogFormat::Text, stderr: false, source: false }
    }
}

/// `logging.type`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// `text` (default).
    #[default]
    Text,
    /// `json`.
    Json,
    /// `pretty`: colourful text for terminals.
    Pretty,
}

/// One entry of `dbs:`.
#[derive(Clone, Debug, PartialEq)]
pub struct DbConfig {
    /// Absolute, lexically cleaned database path.
    pub path: PathBuf,
    /// `meta-path`: local staging directory; `None` means `.<name>-litestream` beside the DB.
    pub meta_path: Option<PathBuf>,
    /// `monitor-interval`.
    pub monitor_interval: Duration,
    /// `checkpoint-interval`; zero disables time-based checkpoints.
    pub checkpoint_interval: Duration,
    /// `busy-timeout`.
    pub busy_timeout: Duration,
    /// `min-checkpoint-page-count` (alias `checkpoint-page-threshold`): PASSIVE threshold.
    pub min_checkpoint_page_count: u64,
    /// `truncate-page-n` (alias `checkpoint-hard-limit-pages`): TRUNCATE threshold.
    pub truncate_page_n: u64,
    /// `max-sync-wal-bytes`: most WAL bytes shipped in one sync.
    pub max_sync_wal_bytes: u64,
    /// `restore-if-db-not-exists`.
    pub restore_if_db_not_exists: bool,
    /// `replica:` (or the single entry of `replicas:`), with top-level defaults applied.
    pub replica: ReplicaSettings,
}

impl DbConfig {
    /// A database with every default, e.g. for `sluice replicate DB_PATH REPLICA_URL`.
    /// `path` is used as given; pass an absolute one.
    pub fn new(path: impl Into<PathBuf>, replica: ReplicaSettings) -> Self {
        DbConfig {
            path: path.into(),
            meta_path: None,
            monitor_interval: DEFAULT_MONITOR_INTERVAL,
            checkpoint_interval: DEFAULT_CHECKPOINT_INTERVAL,
            busy_timeout: DEFAULT_BUSY_TIMEOUT,
            min_checkpoint_page_count: DEFAULT_MIN_CHECKPOINT_PAGE_COUNT,
            truncate_page_n: DEFAULT_TRUNCATE_PAGE_N,
            max_sync_wal_bytes: DEFAULT_MAX_SYNC_WAL_BYTES,
            restore_if_db_not_exists: false,
            replica,
        }
    }

    /// The staging directory: `meta-path`, else `<dir>/.<file>-litestream`.
    pub fn meta_dir(&self) -> PathBuf {
        if let Some(p) = &self.meta_path {
            return p.clone();
        }
        let name = self.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        self.path.parent().unwrap_or(Path::new("/")).join(format!(".{name}-litestream"))
    }
}

/// A replica: where to (`storage`) and how often.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaSettings {
    /// Location and credentials, as `sluice-storage` consumes them.
    pub storage: ReplicaConfig,
    /// `sync-interval` (> 0).
    pub sync_interval: Duration,
    /// `max-sync-ltx-files`: most L0 files uploaded per sync.
    pub max_sync_ltx_files: usize,
    /// `auto-recover`: reset local state when LTX errors are detected.
    pub auto_recover: bool,
    /// How often to validate the replica (restore it and compare with the database): its
    /// `validation-interval`, else the top-level `validation.interval`; `None` = never (also
    /// `validation-interval: 0`, which turns validation off for this replica).
    pub validation_interval: Option<Duration>,
    /// `part-size` (S3 multipart part size in bytes); `None` = the store's default.
    pub part_size: Option<u64>,
    /// `concurrency` (S3 multipart uploads in flight); `None` = the store's default.
    pub concurrency: Option<usize>,
}

impl ReplicaSettings {
    /// Default settings for a replica URL (or bare path).
    pub fn from_url(url: impl Into<String>) -> Self {
        ReplicaSettings::new(ReplicaConfig { url: Some(url.into()), ..ReplicaConfig::default() })
    }

    /// Default settings around `storage`.
    pub fn new(storage: ReplicaConfig) -> Self {
        ReplicaSettings {
            storage,
            sync_interval: DEFAULT_SYNC_INTERVAL,
            max_sync_ltx_files: DEFAULT_MAX_SYNC_LTX_FILES,
            auto_recover: false,
            validation_interval: None,
            part_size: None,
            concurrency: None,
        }
    }
}

/// `socket:` (Litestream's control socket: an HTTP API on a Unix socket).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SocketConfig {
    /// `path` (default `/var/run/litestream.sock`).
    pub path: PathBuf,
    /// `permissions` of the socket file (default 0600).
    pub permissions: u32,
}

/// Default `socket.path`.
pub const DEFAULT_SOCKET_PATH: &str = "/var/run/litestream.sock";

/// One `dbs:` entry with `dir:`: every file in the directory whose name matches `pattern` and
/// that starts with SQLite's magic is a database, replicated with the entry's settings.
#[derive(Clone, Debug, PartialEq)]
pub struct DirConfig {
    /// `dir`: absolute, lexically cleaned.
    pub dir: PathBuf,
    /// `pattern`: a shell glob matched against file names (`*.db`).
    pub pattern: String,
    /// `recursive`: look in subdirectories too.
    pub recursive: bool,
    /// `watch`: databases created or removed at run time start and stop replicating.
    pub watch: bool,
    /// `meta-dir`: staging directories go to `<meta-dir>/<relative path>-litestream`.
    pub meta_dir: Option<PathBuf>,
    /// The entry's settings; its `path` is `dir`, its replica the base of every database's.
    pub template: DbConfig,
}

impl DirConfig {
    /// Whether a file name matches `pattern`.
    pub fn matches(&self, name: &str) -> bool {
        glob::Pattern::new(&self.pattern).is_ok_and(|p| p.matches(name))
    }

    /// The settings of the database at `path` (inside `dir`), as Litestream derives them: the
    /// replica URL or path gets the relative path appended, and the staging directory is made
    /// unique per database. `None` if `path` is not inside `dir`.
    pub fn db(&self, path: &Path) -> Option<DbConfig> {
        let rel = path.strip_prefix(&self.dir).ok()?;
        let rel_str = rel.to_str()?;
        if rel_str.is_empty() {
            return None;
        }
        let mut db = self.template.clone();
        db.path = path.to_path_buf();
        db.meta_path = match (&self.meta_dir, &self.template.meta_path) {
            (Some(dir), _) => Some(dir.join(format!("{rel_str}-litestream"))),
            (None, Some(base)) => {
                let file = rel.file_name()?.to_string_lossy();
                let sub = rel.parent().unwrap_or(Path::new(""));
                Some(base.join(sub).join(format!(".{file}-litestream")))
            }
            (None, None) => None,
        };
        let storage = &mut db.replica.storage;
        if let Some(url) = storage.url.take() {
            storage.url = Some(append_to_url(&url, rel_str));
        } else {
            let base = storage.path.take().unwrap_or_default();
            storage.path = Some(join_slash(&base, rel_str));
        }
        Some(db)
    }
}

/// `base/rel` with exactly one slash between (an empty base gives `rel`).
fn join_slash(base: &str, rel: &str) -> String {
    let base = base.trim_end_matches('/');
    if base.is_empty() { rel.to_string() } else { format!("{base}/{rel}") }
}

/// Appends `rel` to the path of a replica URL (`s3://bkt/base?endpoint=…`), or to a bare path.
fn append_to_url(url: &str, rel: &str) -> String {
    let (main, query) = match url.split_once('?') {
        Some((m, q)) => (m, Some(q)),
        None => (url, None),
    };
    let joined = match main.split_once("://") {
        // `s3://bucket` has no path yet: the relative path becomes it.
        Some((scheme, rest)) => match rest.split_once('/') {
            Some((host, path)) => format!("{scheme}://{host}/{}", join_slash(path, rel)),
            None => format!("{scheme}://{rest}/{rel}"),
        },
        None => join_slash(main, rel),
    };
    match query {
        Some(q) => format!("{joined}?{q}"),
        None => joined,
    }
}
