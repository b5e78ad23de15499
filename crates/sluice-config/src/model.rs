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
    /// The databases to replicate (`dbs:`).
    pub dbs: Vec<DbConfig>,
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
    /// `heartbeat-url`: fetched (HTTP GET) once per `heartbeat-interval` while every database
    /// replicates successfully; `None` = no heartbeat.
    pub heartbeat_url: Option<String>,
    /// `heartbeat-interval`.
    pub heartbeat_interval: Duration,
    /// Human-readable warnings about ignored keys, each starting with the key's location.
    /// The CLI prints them.
    pub warnings: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            dbs: Vec::new(),
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
            heartbeat_url: None,
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
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
    /// `validation-interval`: how often to validate the replica; `None` = never.
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
