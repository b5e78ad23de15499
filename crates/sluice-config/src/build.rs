//! Builds a [`Config`] from the YAML tree: the top level, then each db.

use std::time::Duration;

use serde_yaml_ng::Value;

use crate::db::{Entry, build_db};
use crate::error::{Error, Result};
use crate::expand::EnvLookup;
use crate::keys;
use crate::model::*;
use crate::replica::PartialReplica;
use crate::section::Section;

pub(crate) fn build(root: &Value, env: EnvLookup<'_>) -> Result<Config> {
    let top = Section::new(Some(root), String::new())?;
    let mut warnings = Vec::new();
    top.check(&[keys::TOP, keys::REPLICA_SETTINGS], &mut warnings)?;

    let mut cfg = Config {
        addr: top.string("addr")?.filter(|s| !s.is_empty()),
        exec: top.string("exec")?.filter(|s| !s.trim().is_empty()),
        levels: levels(&top, &mut warnings)?,
        l0_retention: top.duration("l0-retention")?.unwrap_or(DEFAULT_L0_RETENTION),
        l0_retention_check_interval: positive(&top, "l0-retention-check-interval")?
            .unwrap_or(DEFAULT_L0_RETENTION_CHECK_INTERVAL),
        shutdown_sync_timeout: top.duration("shutdown-sync-timeout")?.unwrap_or(DEFAULT_SHUTDOWN_SYNC_TIMEOUT),
        shutdown_sync_interval: positive(&top, "shutdown-sync-interval")?.unwrap_or(DEFAULT_SHUTDOWN_SYNC_INTERVAL),
        logging: logging(&top, env, &mut warnings)?,
        lease_ttl: at_least(&top, "lease-ttl", MIN_LEASE_TTL)?.unwrap_or(DEFAULT_LEASE_TTL),
        heartbeat_url: heartbeat_url(&top)?,
        heartbeat_interval: at_least(&top, "heartbeat-interval", MIN_HEARTBEAT_INTERVAL)?
            .unwrap_or(DEFAULT_HEARTBEAT_INTERVAL),
        max_pending_size: top.size("max-pending-size")?.unwrap_or(DEFAULT_MAX_PENDING_SIZE),
        max_concurrent_uploads: count(&top, "max-concurrent-uploads")?.unwrap_or(DEFAULT_MAX_CONCURRENT_UPLOADS),
        max_concurrent_compactions: count(&top, "max-concurrent-compactions")?
            .unwrap_or(DEFAULT_MAX_CONCURRENT_COMPACTIONS),
        ..Config::default()
    };
    let retention = top.section("retention")?;
    retention.check(&[keys::RETENTION], &mut warnings)?;
    cfg.retention_enabled = retention.bool("enabled")?.unwrap_or(true);

    let snapshot = top.section("snapshot")?;
    snapshot.check(&[keys::SNAPSHOT], &mut warnings)?;
    let mut interval = Agreed::new(positive(&snapshot, "interval")?, snapshot.at("interval"));
    let mut retention = Agreed::new(positive(&snapshot, "retention")?, snapshot.at("retention"));

    let validation = top.section("validation")?;
    validation.check(&[keys::VALIDATION], &mut warnings)?;
    cfg.validation_interval = positive(&validation, "interval")?;
    // Litestream has both: a replica's `validation-interval` (or the top-level inline one)
    // wins over `validation.interval`.
    let defaults = PartialReplica::read(&top, false)?.with_validation_default(cfg.validation_interval);
    for (index, value) in top.seq("dbs")?.unwrap_or_default().iter().enumerate() {
        let (entry, (db_interval, db_retention)) = build_db(value, index, &defaults, env, &mut warnings)?;
        interval.merge(db_interval, format!("dbs[{index}].snapshot.interval"))?;
        retention.merge(db_retention, format!("dbs[{index}].snapshot.retention"))?;
        match entry {
            Entry::Db(db) => {
                if let Some(other) = cfg.dbs.iter().position(|d| d.path == db.path) {
                    return Err(Error::invalid(
                        format!("dbs[{index}].path"),
                        format!("{} is already configured by dbs[{other}]", db.path.display()),
                    ));
                }
                cfg.dbs.push(db);
            }
            Entry::Dir(dir) => cfg.dirs.push(dir),
        }
    }
    cfg.socket = socket(&top, env, &mut warnings)?;
    cfg.snapshot_interval = interval.value.unwrap_or(DEFAULT_SNAPSHOT_INTERVAL);
    cfg.snapshot_retention = retention.value.unwrap_or(DEFAULT_SNAPSHOT_RETENTION);
    cfg.warnings = warnings;
    Ok(cfg)
}

/// `socket:`; `None` unless `enabled: true`.
fn socket(top: &Section<'_>, env: EnvLookup<'_>, warnings: &mut Vec<String>) -> Result<Option<SocketConfig>> {
    let sec = top.section("socket")?;
    sec.check(&[keys::SOCKET], warnings)?;
    if !sec.bool("enabled")?.unwrap_or(false) {
        return Ok(None);
    }
    let path = match sec.string("path")?.filter(|p| !p.is_empty()) {
        Some(p) => crate::paths::normalize(&p, env).map_err(|reason| Error::invalid(sec.at("path"), reason))?,
        None => DEFAULT_SOCKET_PATH.into(),
    };
    let permissions = match sec.get("permissions") {
        None => 0o600,
        Some(v) => {
            // YAML reads 0600 as an octal-looking integer (600) or a string; both mean octal.
            let text = match v {
                Value::Number(n) => n.to_string(),
                Value::String(s) => s.clone(),
                _ => return Err(Error::invalid(sec.at("permissions"), "expected octal permissions such as 0600")),
            };
            let digits = text.trim_start_matches("0o");
            u32::from_str_radix(digits, 8)
                .ok()
                .filter(|m| *m <= 0o777)
                .ok_or_else(|| Error::invalid(sec.at("permissions"), format!("invalid permissions {text:?}")))?
        }
    };
    Ok(Some(SocketConfig { path, permissions }))
}

/// A count that must be ≥ 1 when given.
fn count(sec: &Section<'_>, key: &str) -> Result<Option<usize>> {
    match sec.uint(key)? {
        Some(0) => Err(Error::invalid(sec.at(key), "must be at least 1")),
        Some(n) => Ok(Some(usize::try_from(n).unwrap_or(usize::MAX))),
        None => Ok(None),
    }
}

/// A duration that must be > 0 when given.
fn positive(sec: &Section<'_>, key: &str) -> Result<Option<Duration>> {
    match sec.duration(key)? {
        Some(d) if d.is_zero() => Err(Error::invalid(sec.at(key), "must be greater than 0")),
        other => Ok(other),
    }
}

/// A duration that must be at least `min` when given.
fn at_least(sec: &Section<'_>, key: &str, min: Duration) -> Result<Option<Duration>> {
    match sec.duration(key)? {
        Some(d) if d < min => {
            Err(Error::invalid(sec.at(key), format!("must be at least {}", crate::units::format_duration(min))))
        }
        other => Ok(other),
    }
}

/// `heartbeat-url`: an http(s) URL, or absent/empty for none.
fn heartbeat_url(top: &Section<'_>) -> Result<Option<String>> {
    let Some(url) = top.string("heartbeat-url")?.filter(|u| !u.trim().is_empty()) else { return Ok(None) };
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(Error::invalid(top.at("heartbeat-url"), format!("{url:?} is not an http:// or https:// URL")));
    }
    Ok(Some(url))
}

/// A global setting that per-db blocks may repeat but not contradict.
struct Agreed {
    value: Option<Duration>,
    loc: String,
}

impl Agreed {
    fn new(value: Option<Duration>, loc: String) -> Self {
        Agreed { value, loc }
    }

    fn merge(&mut self, other: Option<Duration>, loc: String) -> Result<()> {
        let Some(other) = other else { return Ok(()) };
        if other.is_zero() {
            return Err(Error::invalid(loc, "must be greater than 0"));
        }
        match self.value {
            None => *self = Agreed { value: Some(other), loc },
            Some(v) if v != other => {
                return Err(Error::invalid(
                    loc,
                    format!(
                        "{} differs from {} set by {}; snapshot settings are global and must agree",
                        crate::units::format_duration(other),
                        crate::units::format_duration(v),
                        self.loc
                    ),
                ));
            }
            Some(_) => {}
        }
        Ok(())
    }
}

fn levels(top: &Section<'_>, warnings: &mut Vec<String>) -> Result<Vec<Duration>> {
    let Some(items) = top.seq("levels")? else {
        return Ok(DEFAULT_LEVELS.to_vec());
    };
    if items.len() > MAX_LEVELS {
        return Err(Error::invalid(
            top.at("levels"),
            format!("{} levels configured, at most {MAX_LEVELS} are allowed", items.len()),
        ));
    }
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let level = Section::new(Some(item), format!("levels[{i}]"))?;
        level.check(&[keys::LEVEL], warnings)?;
        match level.duration("interval")? {
            Some(d) if !d.is_zero() => out.push(d),
            _ => return Err(Error::invalid(level.at("interval"), "compaction interval must be greater than 0")),
        }
    }
    Ok(out)
}

fn logging(top: &Section<'_>, env: EnvLookup<'_>, warnings: &mut Vec<String>) -> Result<LoggingConfig> {
    let sec = top.section("logging")?;
    sec.check(&[keys::LOGGING], warnings)?;
    let mut out = LoggingConfig {
        stderr: sec.bool("stderr")?.unwrap_or(false),
        source: sec.bool("source")?.unwrap_or(false),
        ..LoggingConfig::default()
    };
    let from_env = ["SLUICE_LOG_LEVEL", "LITESTREAM_LOG_LEVEL", "LOG_LEVEL"]
        .iter()
        .find_map(|name| env(name).filter(|v| !v.is_empty()).map(|v| (v, format!("${name}"))));
    let level = match from_env {
        Some(found) => Some(found),
        None => sec.string("level")?.filter(|v| !v.is_empty()).map(|v| (v, sec.at("level"))),
    };
    if let Some((level, loc)) = level {
        let lower = level.to_ascii_lowercase();
        match lower.as_str() {
            "trace" | "debug" | "info" | "warn" | "error" => out.level = lower,
            "warning" => out.level = "warn".into(),
            // Litestream falls back to INFO for anything else.
            _ => warnings.push(format!("{loc}: unknown log level {level:?}; using info")),
        }
    }
    if let Some(kind) = sec.string("type")?.filter(|v| !v.is_empty()) {
        out.format = match kind.to_ascii_lowercase().as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            "pretty" => LogFormat::Pretty,
            _ => {
                warnings.push(format!("{}: unknown log type {kind:?}; using text", sec.at("type")));
                LogFormat::Text
            }
        };
    }
    Ok(out)
}
