//! Settings: the process defaults (environment or [`crate::register`]) and the per-database
//! overrides from URI parameters (`file:app.db?vfs=sluice&replica=s3://…&poll=500ms`).

use std::path::PathBuf;
use std::sync::RwLock;
use std::time::Duration;

use crate::engine::{Hydration, ReadOptions};
use sluice_config::{parse_duration, parse_size};

use crate::error::{Error, Result};
use crate::write_config::WriteConfig;

/// Process-wide settings of the extension.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// The replica every database opened with `vfs=sluice` reads unless its URI names another
    /// (`?replica=`). Any URL `sluice restore` accepts.
    pub replica_url: Option<String>,
    /// Cache size, poll interval and read deadline.
    pub read: ReadOptions,
    /// A `tracing` filter (`warn`, `info`, `debug`, `sluice_engine=debug`…). Default: `warn`.
    pub log_level: Option<String>,
    /// Append logs to this file instead of stderr.
    pub log_file: Option<PathBuf>,
    /// Write mode (off unless enabled).
    pub write: WriteConfig,
    /// Hydration (off unless enabled): a local copy, then local reads.
    pub hydration: Hydration,
}

/// What one database uses: its replica and read options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DbSettings {
    /// The replica URL.
    pub url: String,
    /// Cache, poll and deadline.
    pub read: ReadOptions,
    /// Write mode.
    pub write: WriteConfig,
    /// Hydration.
    pub hydration: Hydration,
}

/// Environment variables, each with the Litestream name it also accepts (so a deployment
/// switches by changing the extension and the `vfs=` name only).
const ENV_URL: [&str; 2] = ["SLUICE_REPLICA_URL", "LITESTREAM_REPLICA_URL"];
const ENV_CACHE: [&str; 1] = ["SLUICE_CACHE_SIZE"];
const ENV_POLL: [&str; 1] = ["SLUICE_POLL_INTERVAL"];
const ENV_TIMEOUT: [&str; 1] = ["SLUICE_READ_TIMEOUT"];
const ENV_AUTO_HYDRATE: [&str; 1] = ["SLUICE_AUTO_HYDRATE"];
const ENV_LOG_LEVEL: [&str; 2] = ["SLUICE_LOG_LEVEL", "LITESTREAM_LOG_LEVEL"];
const ENV_LOG_FILE: [&str; 2] = ["SLUICE_LOG_FILE", "LITESTREAM_LOG_FILE"];

/// URI parameters of one database.
pub const URI_REPLICA: &str = "replica";
/// Cache size in bytes (`64MB`, `16MiB`, `1048576`). Not `cache`: SQLite reserves that
/// parameter (`cache=shared|private`) and fails the open on any other value.
pub const URI_CACHE: &str = "cache_size";
/// Poll interval (`500ms`, `2s`).
pub const URI_POLL: &str = "poll";
/// Read deadline (`10s`).
pub const URI_TIMEOUT: &str = "timeout";
/// Automatic hydration limit (`256MiB`, `0` or `off`).
pub const URI_AUTO_HYDRATE: &str = "auto_hydrate";

impl Config {
    /// Reads the settings from the process environment.
    pub fn from_env() -> Result<Config> {
        Config::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads the settings through `get` (the environment in production, a map in tests).
    /// Empty values count as unset.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Config> {
        let first = |keys: &[&str]| {
            keys.iter().find_map(|k| get(k).filter(|v| !v.trim().is_empty()).map(|v| (k.to_string(), v)))
        };
        let mut read = ReadOptions::default();
        apply_read_setting(&mut read, first(&ENV_CACHE), Field::Cache)?;
        apply_read_setting(&mut read, first(&ENV_POLL), Field::Poll)?;
        apply_read_setting(&mut read, first(&ENV_TIMEOUT), Field::Timeout)?;
        apply_read_setting(&mut read, first(&ENV_AUTO_HYDRATE), Field::AutoHydrate)?;
        Ok(Config {
            replica_url: first(&ENV_URL).map(|(_, v)| v.trim().to_string()),
            read,
            log_level: first(&ENV_LOG_LEVEL).map(|(_, v)| v.trim().to_string()),
            log_file: first(&ENV_LOG_FILE).map(|(_, v)| PathBuf::from(v)),
            write: WriteConfig::from_env(&get)?,
            hydration: crate::hydrate_config::from_env(&get)?,
        })
    }

    /// The settings of database `db`, whose URI parameters `param` returns: they override the
    /// process defaults one by one.
    pub fn for_database(&self, db: &str, param: impl Fn(&str) -> Option<String>) -> Result<DbSettings> {
        let given = |key: &str| param(key).filter(|v| !v.trim().is_empty()).map(|v| (key.to_string(), v));
        let url = given(URI_REPLICA)
            .map(|(_, v)| v.trim().to_string())
            .or_else(|| self.replica_url.clone())
            .ok_or_else(|| Error::NoReplicaUrl { db: db.to_string() })?;
        let mut read = self.read;
        apply_read_setting(&mut read, given(URI_CACHE), Field::Cache)?;
        apply_read_setting(&mut read, given(URI_POLL), Field::Poll)?;
        apply_read_setting(&mut read, given(URI_TIMEOUT), Field::Timeout)?;
        apply_read_setting(&mut read, given(URI_AUTO_HYDRATE), Field::AutoHydrate)?;
        let write = self.write.with_uri(&param)?;
        let hydration = crate::hydrate_config::with_uri(&self.hydration, &param)?;
        Ok(DbSettings { url, read, write, hydration })
    }
}

enum Field {
    Cache,
    Poll,
    Timeout,
    AutoHydrate,
}

fn apply_read_setting(read: &mut ReadOptions, setting: Option<(String, String)>, field: Field) -> Result<()> {
    let Some((key, value)) = setting else {
        return Ok(());
    };
    let bad = |reason: String| Error::Config { key: key.clone(), value: value.clone(), reason };
    match field {
        Field::Cache => read.cache_bytes = parse_size(&value).map_err(bad)?,
        Field::Poll => read.poll_interval = positive(parse_duration(&value).map_err(bad)?).map_err(bad)?,
        Field::Timeout => read.read_timeout = positive(parse_duration(&value).map_err(bad)?).map_err(bad)?,
        Field::AutoHydrate => {
            read.auto_hydrate_bytes = match parse_bool(&value) {
                Some(false) => 0,
                _ => parse_size(value.trim()).map_err(bad)?,
            }
        }
    }
    Ok(())
}

/// `true`/`false` as settings spell them (`1`/`0`, `yes`/`no`, `on`/`off` too).
pub(crate) fn parse_bool(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// Settings looked up in a map instead of the environment (the modules' tests).
#[cfg(test)]
pub(crate) fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: std::collections::HashMap<String, String> =
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    move |k| map.get(k).cloned()
}

/// A zero poll interval would spin and a zero deadline would fail every read.
fn positive(d: Duration) -> std::result::Result<Duration, String> {
    if d.is_zero() { Err("must be greater than zero".into()) } else { Ok(d) }
}

/// The process defaults: set by [`crate::register`], else read from the environment the first
/// time a database is opened or the extension is loaded.
static PROCESS: RwLock<Option<Config>> = RwLock::new(None);

/// Replaces the process defaults (databases opened afterwards use them).
pub(crate) fn set_process_config(config: Config) {
    *PROCESS.write().unwrap_or_else(|e| e.into_inner()) = Some(config);
}

/// The process defaults, reading the environment on first use.
pub(crate) fn process_config() -> Result<Config> {
    if let Some(c) = PROCESS.read().unwrap_or_else(|e| e.into_inner()).as_ref() {
        return Ok(c.clone());
    }
    let mut slot = PROCESS.write().unwrap_or_else(|e| e.into_inner());
    if let Some(c) = slot.as_ref() {
        return Ok(c.clone());
    }
    let c = Config::from_env()?;
    *slot = Some(c.clone());
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_with_litestream_aliases_and_units() {
        let c = Config::from_lookup(lookup(&[
            ("LITESTREAM_REPLICA_URL", "s3://b/ls"),
            ("SLUICE_CACHE_SIZE", "64MB"),
            ("SLUICE_POLL_INTERVAL", "500ms"),
            ("SLUICE_READ_TIMEOUT", "2s"),
            ("LITESTREAM_LOG_LEVEL", "debug"),
        ]))
        .unwrap();
        assert_eq!(c.replica_url.as_deref(), Some("s3://b/ls"));
        assert_eq!(c.read.cache_bytes, 64_000_000);
        assert_eq!(c.read.poll_interval, Duration::from_millis(500));
        assert_eq!(c.read.read_timeout, Duration::from_secs(2));
        assert_eq!(c.log_level.as_deref(), Some("debug"));
        assert_eq!(c.log_file, None);
    }

    #[test]
    fn sluice_names_win_and_empty_values_are_unset() {
        let c = Config::from_lookup(lookup(&[
            ("SLUICE_REPLICA_URL", "file:///a"),
            ("LITESTREAM_REPLICA_URL", "file:///b"),
            ("SLUICE_CACHE_SIZE", " "),
        ]))
        .unwrap();
        assert_eq!(c.replica_url.as_deref(), Some("file:///a"));
        assert_eq!(c.read, ReadOptions::default());
        assert_eq!(Config::from_lookup(lookup(&[])).unwrap(), Config::default());
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (k, v) in [("SLUICE_CACHE_SIZE", "lots"), ("SLUICE_POLL_INTERVAL", "0s"), ("SLUICE_READ_TIMEOUT", "10")] {
            let e = Config::from_lookup(lookup(&[(k, v)])).unwrap_err();
            assert!(matches!(&e, Error::Config { key, .. } if key == k), "{k}: {e}");
            assert!(e.to_string().contains(k), "{e}");
        }
    }

    #[test]
    fn uri_parameters_override_the_defaults_one_by_one() {
        let base =
            Config::from_lookup(lookup(&[("SLUICE_REPLICA_URL", "s3://b/a"), ("SLUICE_CACHE_SIZE", "1MiB")])).unwrap();
        let s = base.for_database("app.db", lookup(&[("replica", "file:///r"), ("poll", "250ms")])).unwrap();
        assert_eq!(s.url, "file:///r");
        assert_eq!(s.read.cache_bytes, 1 << 20);
        assert_eq!(s.read.poll_interval, Duration::from_millis(250));
        assert_eq!(s.read.read_timeout, ReadOptions::default().read_timeout);
        let s = base.for_database("app.db", lookup(&[("cache_size", "2MiB"), ("timeout", "3s")])).unwrap();
        assert_eq!((s.url.as_str(), s.read.cache_bytes), ("s3://b/a", 2 << 20));
        assert_eq!(s.read.read_timeout, Duration::from_secs(3));
        assert_eq!(s.read.auto_hydrate_bytes, 256 << 20, "automatic hydration up to 256 MiB by default");
        let s = base.for_database("app.db", lookup(&[("auto_hydrate", "off")])).unwrap();
        assert_eq!(s.read.auto_hydrate_bytes, 0);
        let env = Config::from_lookup(lookup(&[("SLUICE_AUTO_HYDRATE", "64MB")])).unwrap();
        assert_eq!(env.read.auto_hydrate_bytes, 64_000_000);
    }

    #[test]
    fn a_database_without_any_url_is_an_error_naming_it() {
        let e = Config::default().for_database("app.db", lookup(&[])).unwrap_err();
        assert!(matches!(e, Error::NoReplicaUrl { .. }));
        assert!(e.to_string().contains("app.db") && e.to_string().contains("SLUICE_REPLICA_URL"), "{e}");
        let e = Config::default().for_database("x", lookup(&[("replica", "s3://b/p"), ("poll", "soon")])).unwrap_err();
        assert!(matches!(&e, Error::Config { key, .. } if key == "poll"), "{e}");
    }
}
