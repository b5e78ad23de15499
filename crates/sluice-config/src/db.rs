//! One `dbs:` entry.

use std::time::Duration;

use serde_yaml_ng::Value;

use crate::error::{Error, Result};
use crate::expand::EnvLookup;
use crate::keys;
use crate::model::*;
use crate::paths;
use crate::replica::PartialReplica;
use crate::section::Section;

/// A db's own `snapshot:` block, which must agree with the global one.
pub(crate) type DbSnapshot = (Option<Duration>, Option<Duration>);

/// One `dbs:` entry: a database, or a directory of them.
pub(crate) enum Entry {
    Db(DbConfig),
    Dir(DirConfig),
}

/// Builds `dbs[index]`.
pub(crate) fn build_db(
    value: &Value,
    index: usize,
    defaults: &PartialReplica,
    env: EnvLookup<'_>,
    warnings: &mut Vec<String>,
) -> Result<(Entry, DbSnapshot)> {
    let sec = Section::new(Some(value), format!("dbs[{index}]"))?;
    sec.check(&[keys::DB], warnings)?;
    let raw_path = sec.string("path")?.filter(|p| !p.is_empty());
    let raw_dir = sec.string("dir")?.filter(|p| !p.is_empty());
    let (raw_path, is_dir) = match (raw_path, raw_dir) {
        (Some(_), Some(_)) => return Err(Error::invalid(sec.loc, "cannot specify both `path` and `dir`")),
        (Some(p), None) => (p, false),
        (None, Some(d)) => (d, true),
        (None, None) => return Err(Error::invalid(sec.loc, "`path` (or `dir` with `pattern`) is required")),
    };
    let key = if is_dir { "dir" } else { "path" };
    let path = paths::normalize(&raw_path, env).map_err(|reason| Error::invalid(sec.at(key), reason))?;
    let who = format!("{} ({})", sec.loc, path.display());
    let meta_path = match sec.string("meta-path")?.filter(|p| !p.is_empty()) {
        Some(p) => Some(paths::normalize(&p, env).map_err(|reason| Error::invalid(sec.at("meta-path"), reason))?),
        None => None,
    };

    let replica = replica_block(&sec, &who)?;
    replica.check(&[keys::REPLICA_SETTINGS, keys::REPLICA_ONLY], warnings)?;
    let replica = PartialReplica::read(&replica, true)?.inherit(defaults).finish(&replica.loc)?;

    let mut db = DbConfig::new(path, replica);
    db.meta_path = meta_path;
    db.monitor_interval = sec.duration("monitor-interval")?.unwrap_or(DEFAULT_MONITOR_INTERVAL);
    if db.monitor_interval.is_zero() {
        return Err(Error::invalid(sec.at("monitor-interval"), "must be greater than 0"));
    }
    db.checkpoint_interval = sec.duration("checkpoint-interval")?.unwrap_or(DEFAULT_CHECKPOINT_INTERVAL);
    db.busy_timeout = sec.duration("busy-timeout")?.unwrap_or(DEFAULT_BUSY_TIMEOUT);
    db.min_checkpoint_page_count = aliased_uint(&sec, "min-checkpoint-page-count", "checkpoint-page-threshold")?
        .unwrap_or(DEFAULT_MIN_CHECKPOINT_PAGE_COUNT);
    // Zero means "the default" for the hard limit (spec §3.4).
    db.truncate_page_n = aliased_uint(&sec, "truncate-page-n", "checkpoint-hard-limit-pages")?
        .filter(|n| *n > 0)
        .unwrap_or(DEFAULT_TRUNCATE_PAGE_N);
    db.max_sync_wal_bytes = sec.size("max-sync-wal-bytes")?.unwrap_or(DEFAULT_MAX_SYNC_WAL_BYTES);
    if db.max_sync_wal_bytes == 0 {
        return Err(Error::invalid(sec.at("max-sync-wal-bytes"), "must be greater than 0"));
    }
    db.restore_if_db_not_exists = sec.bool("restore-if-db-not-exists")?.unwrap_or(false);

    let snapshot = sec.section("snapshot")?;
    snapshot.check(&[keys::SNAPSHOT], warnings)?;
    let snapshot = (snapshot.duration("interval")?, snapshot.duration("retention")?);
    if !is_dir {
        for key in ["pattern", "recursive", "watch", "meta-dir"] {
            if sec.get(key).is_some() {
                return Err(Error::invalid(sec.at(key), "only applies to a `dir` entry"));
            }
        }
        return Ok((Entry::Db(db), snapshot));
    }
    let pattern = sec
        .string("pattern")?
        .filter(|p| !p.is_empty())
        .ok_or_else(|| Error::invalid(sec.loc.clone(), "`pattern` is required with `dir` (for example \"*.db\")"))?;
    if let Err(e) = glob::Pattern::new(&pattern) {
        return Err(Error::invalid(sec.at("pattern"), format!("invalid pattern {pattern:?}: {e}")));
    }
    let meta_dir = match sec.string("meta-dir")?.filter(|p| !p.is_empty()) {
        Some(p) => Some(paths::normalize(&p, env).map_err(|reason| Error::invalid(sec.at("meta-dir"), reason))?),
        None => None,
    };
    let dir = DirConfig {
        dir: db.path.clone(),
        pattern,
        recursive: sec.bool("recursive")?.unwrap_or(false),
        watch: sec.bool("watch")?.unwrap_or(false),
        meta_dir,
        template: db,
    };
    Ok((Entry::Dir(dir), snapshot))
}

/// The db's single replica block: `replica:` or the one entry of the deprecated `replicas:`.
fn replica_block<'a>(sec: &Section<'a>, who: &str) -> Result<Section<'a>> {
    let list = sec.seq("replicas")?;
    let block = match (sec.get("replica"), list) {
        (Some(_), Some(_)) => return Err(Error::invalid(who, "cannot specify both `replica` and `replicas`")),
        (Some(v), None) => Section::new(Some(v), sec.at("replica"))?,
        (None, Some([one])) => Section::new(Some(one), format!("{}[0]", sec.at("replicas")))?,
        (None, Some(many)) if many.len() > 1 => {
            return Err(Error::invalid(
                who,
                format!(
                    "{} replicas configured, but a database can have only one (Litestream 0.5 dropped \
                     multiple replicas too); keep a single `replica:`",
                    many.len()
                ),
            ));
        }
        (None, _) => return Err(Error::invalid(who, "no replica configured (add a `replica:` block)")),
    };
    Ok(block)
}

/// A value that may be written under either of two names; both is fine if they agree.
fn aliased_uint(sec: &Section<'_>, name: &str, alias: &str) -> Result<Option<u64>> {
    match (sec.uint(name)?, sec.uint(alias)?) {
        (Some(a), Some(b)) if a != b => {
            Err(Error::invalid(sec.at(alias), format!("conflicts with `{name}` ({a} vs {b}); set only one")))
        }
        (a, b) => Ok(a.or(b)),
    }
}
