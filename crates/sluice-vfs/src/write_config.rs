//! Write-mode settings: environment variables, URI parameters and their defaults.
//!
//! | environment | URI | default |
//! |---|---|---|
//! | `SLUICE_WRITE_ENABLED` (`LITESTREAM_WRITE_ENABLED`) | `write=1` | off |
//! | `SLUICE_SYNC_INTERVAL` | `sync=500ms` | `1s` |
//! | `SLUICE_BUFFER_PATH` | `buffer=/path` | a 0600 file in the VFS's private temp directory |
//! | `SLUICE_BUFFER_FSYNC` (`commit`/`sync`) | `fsync=sync` | `commit` |
//! | `SLUICE_BUFFER_MAX` (bytes, `64MB`) | `buffer_max=64MB` | no limit |
//! | `SLUICE_COMPACTION_LEVELS` (`30s,5m,1h`) | `levels=…` | `sluice replicate`'s |
//! | `SLUICE_SNAPSHOT_INTERVAL` | `snapshot=1h` | `24h` |
//! | `SLUICE_LEASE_TTL` | `lease_ttl=1m` | `10m` |

use std::path::PathBuf;
use std::time::Duration;

use sluice_config::{parse_duration, parse_size};
use sluice_engine::write::buffer::Fsync;

use crate::error::{Error, Result};

/// Write mode's settings (process defaults or one database's).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteConfig {
    /// Open databases for writing.
    pub enabled: bool,
    /// How often committed transactions are synced to the replica.
    pub sync_interval: Duration,
    /// The write buffer. `None`: a private file in the VFS's temporary directory, which does
    /// not survive the process (set a path to recover unsynced commits after a crash).
    pub buffer_path: Option<PathBuf>,
    /// When commits reach the local disk.
    pub fsync: FsyncMode,
    /// Most bytes the buffer may hold before writes fail with `SQLITE_FULL` (0: no limit).
    pub buffer_max: u64,
    /// Compaction intervals of levels 1, 2, … (`sluice replicate`'s default: 30s, 5m, 1h).
    pub levels: Option<Vec<Duration>>,
    /// Snapshot interval (default 24h).
    pub snapshot_interval: Option<Duration>,
    /// How long the replica lease stays valid without renewal (default 10m): how long a
    /// crashed writer on another machine keeps others out.
    pub lease_ttl: Option<Duration>,
}

/// `SLUICE_BUFFER_FSYNC`: the engine's [`Fsync`], with `Eq` and a default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FsyncMode {
    /// Every commit is fsynced into the buffer: durable on this machine when COMMIT returns.
    #[default]
    Commit,
    /// Only syncs fsync: a crash loses what was committed since the last sync.
    Sync,
}

impl FsyncMode {
    /// The engine's setting.
    pub fn engine(self) -> Fsync {
        match self {
            FsyncMode::Commit => Fsync::Commit,
            FsyncMode::Sync => Fsync::Sync,
        }
    }
}

/// Default sync interval (Litestream's VFS: 1 s).
pub const DEFAULT_SYNC_INTERVAL: Duration = Duration::from_secs(1);

impl Default for WriteConfig {
    fn default() -> Self {
        WriteConfig {
            enabled: false,
            sync_interval: DEFAULT_SYNC_INTERVAL,
            buffer_path: None,
            fsync: FsyncMode::Commit,
            buffer_max: 0,
            levels: None,
            snapshot_interval: None,
            lease_ttl: None,
        }
    }
}

#[derive(Clone, Copy)]
enum Field {
    Enabled,
    Sync,
    Buffer,
    Fsync,
    Max,
    Levels,
    Snapshot,
    LeaseTtl,
}

/// Each setting: its environment variables (first wins) and its URI parameter.
const SETTINGS: [(&[&str], &str, Field); 8] = [
    (&["SLUICE_WRITE_ENABLED", "LITESTREAM_WRITE_ENABLED"], "write", Field::Enabled),
    (&["SLUICE_SYNC_INTERVAL", "LITESTREAM_SYNC_INTERVAL"], "sync", Field::Sync),
    (&["SLUICE_BUFFER_PATH", "LITESTREAM_BUFFER_PATH"], "buffer", Field::Buffer),
    (&["SLUICE_BUFFER_FSYNC"], "fsync", Field::Fsync),
    (&["SLUICE_BUFFER_MAX"], "buffer_max", Field::Max),
    (&["SLUICE_COMPACTION_LEVELS"], "levels", Field::Levels),
    (&["SLUICE_SNAPSHOT_INTERVAL"], "snapshot", Field::Snapshot),
    (&["SLUICE_LEASE_TTL"], "lease_ttl", Field::LeaseTtl),
];

impl WriteConfig {
    /// Applies the environment (through `get`) to the defaults.
    pub fn from_env(get: &impl Fn(&str) -> Option<String>) -> Result<WriteConfig> {
        let mut c = WriteConfig::default();
        for (keys, _, field) in SETTINGS {
            if let Some((k, v)) = keys.iter().find_map(|k| get(k).filter(|v| !v.trim().is_empty()).map(|v| (*k, v))) {
                c.apply(field, k, &v)?;
            }
        }
        Ok(c)
    }

    /// These settings overridden by a database's URI parameters.
    pub fn with_uri(&self, param: &impl Fn(&str) -> Option<String>) -> Result<WriteConfig> {
        let mut c = self.clone();
        for (_, key, field) in SETTINGS {
            if let Some(v) = param(key).filter(|v| !v.trim().is_empty()) {
                c.apply(field, key, &v)?;
            }
        }
        Ok(c)
    }

    fn apply(&mut self, field: Field, key: &str, value: &str) -> Result<()> {
        let bad =
            |reason: &str| Error::Config { key: key.to_string(), value: value.to_string(), reason: reason.into() };
        let v = value.trim();
        let duration = |s: &str| match parse_duration(s) {
            Ok(d) if d.is_zero() => Err(bad("must be greater than zero")),
            Ok(d) => Ok(d),
            Err(e) => Err(bad(&e)),
        };
        match field {
            Field::Enabled => {
                self.enabled = crate::config::parse_bool(v).ok_or_else(|| bad("expected true or false"))?
            }
            Field::Sync => self.sync_interval = duration(v)?,
            Field::Buffer => self.buffer_path = Some(PathBuf::from(v)),
            Field::Fsync => {
                self.fsync = match v.to_ascii_lowercase().as_str() {
                    "commit" => FsyncMode::Commit,
                    "sync" => FsyncMode::Sync,
                    _ => return Err(bad("expected commit or sync")),
                }
            }
            Field::Max => self.buffer_max = parse_size(v).map_err(|e| bad(&e))?,
            Field::Levels => {
                let levels = v.split(',').map(|s| duration(s.trim())).collect::<Result<Vec<_>>>()?;
                if levels.len() > 8 {
                    return Err(bad("at most 8 levels"));
                }
                self.levels = Some(levels);
            }
            Field::Snapshot => self.snapshot_interval = Some(duration(v)?),
            Field::LeaseTtl => self.lease_ttl = Some(duration(v)?),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::lookup;

    #[test]
    fn environment_then_uri() {
        let env = WriteConfig::from_env(&lookup(&[
            ("LITESTREAM_WRITE_ENABLED", "true"),
            ("SLUICE_SYNC_INTERVAL", "250ms"),
            ("SLUICE_BUFFER_FSYNC", "sync"),
            ("SLUICE_BUFFER_MAX", "1MiB"),
        ]))
        .unwrap();
        assert!(env.enabled);
        assert_eq!(env.sync_interval, Duration::from_millis(250));
        assert_eq!((env.fsync, env.buffer_max, env.buffer_path.as_ref()), (FsyncMode::Sync, 1 << 20, None));
        let db = env.with_uri(&lookup(&[("write", "0"), ("buffer", "/b/app.buf"), ("fsync", "commit")])).unwrap();
        assert!(!db.enabled);
        assert_eq!(db.buffer_path, Some(PathBuf::from("/b/app.buf")));
        assert_eq!(db.fsync, FsyncMode::Commit);
        assert_eq!(db.sync_interval, Duration::from_millis(250));
        assert_eq!(WriteConfig::from_env(&lookup(&[])).unwrap(), WriteConfig::default());
    }

    #[test]
    fn bad_values_name_the_setting() {
        for (k, v) in [("SLUICE_WRITE_ENABLED", "maybe"), ("SLUICE_SYNC_INTERVAL", "0s"), ("SLUICE_BUFFER_FSYNC", "x")]
        {
            let e = WriteConfig::from_env(&lookup(&[(k, v)])).unwrap_err();
            assert!(e.to_string().contains(k), "{e}");
        }
        let c = WriteConfig::default().with_uri(&lookup(&[("levels", "1s, 5s"), ("lease_ttl", "30s")])).unwrap();
        assert_eq!(c.levels, Some(vec![Duration::from_secs(1), Duration::from_secs(5)]));
        assert_eq!(c.lease_ttl, Some(Duration::from_secs(30)));
        let e = WriteConfig::default().with_uri(&lookup(&[("buffer_max", "lots")])).unwrap_err();
        assert!(e.to_string().contains("buffer_max"), "{e}");
    }
}
