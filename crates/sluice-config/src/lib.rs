//! Litestream-compatible YAML configuration for Sluice.
//!
//! A Litestream 0.5 config file works unchanged: every key Litestream knows is either
//! used or reported in [`Config::warnings`]. Unlike Litestream (whose YAML parser ignores
//! unknown keys), a key nobody knows is an error naming where it is, so typos such as
//! `bukket:` fail loudly instead of replicating somewhere unexpected.
//!
//! ```
//! let cfg = sluice_config::Config::parse(
//!     "dbs:\n  - path: /var/lib/app.db\n    replica:\n      url: s3://bkt/app\n",
//!     false,
//! )?;
//! assert_eq!(cfg.dbs[0].replica.storage.url.as_deref(), Some("s3://bkt/app"));
//! # Ok::<(), sluice_config::Error>(())
//! ```
//!
//! # Layout
//!
//! - `lib.rs`: [`Config::load`]/[`Config::parse`], the default file location, [`env_var`].
//! - `model`: the typed output ([`Config`], [`DbConfig`], [`ReplicaSettings`]) and defaults.
//! - `expand`: `$VAR`/`${VAR}` expansion (Go `os.Expand` rules).
//! - `keys`: the known-key tables behind the unknown-key policy.
//! - `section`: typed reads from one YAML mapping, with its dotted location.
//! - `build`, `db`, `replica`: the top level, `dbs[*]` and `replica:` blocks.
//! - `units`: Go durations (`1h30m`) and byte sizes (`64MB`); `paths`: DB path rules.
//! - [`error`]: [`Error`], whose variants carry the file or key location.
#![warn(missing_docs)]
#![deny(clippy::unwrap_used)]

mod build;
mod db;
pub mod error;
mod expand;
mod keys;
mod model;
mod paths;
mod replica;
mod section;
mod units;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

pub use error::{Error, Result};
pub use expand::expand_env;
pub use model::*;
pub use units::{format_duration, parse_duration, parse_size};

/// Looks up `SLUICE_<name>`, else `LITESTREAM_<name>`; empty values count as unset.
///
/// Both prefixes are honoured so that scripts written for Litestream keep working.
pub fn env_var(name: &str) -> Option<String> {
    [format!("SLUICE_{name}"), format!("LITESTREAM_{name}")]
        .iter()
        .find_map(|var| std::env::var(var).ok().filter(|v| !v.is_empty()))
}

fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

impl Config {
    /// The config file used when none is given: `$SLUICE_CONFIG`, else
    /// `$LITESTREAM_CONFIG`, else `/etc/sluice.yml` if it exists, else `/etc/litestream.yml`.
    pub fn default_path() -> PathBuf {
        if let Some(path) = env_var("CONFIG") {
            return PathBuf::from(path);
        }
        let sluice = Path::new("/etc/sluice.yml");
        if sluice.exists() { sluice.to_path_buf() } else { PathBuf::from("/etc/litestream.yml") }
    }

    /// Reads and parses `path`, or [`Config::default_path`] when `None`. A leading `~/` in
    /// the file name is expanded. With `expand_env`, `$VAR`/`${VAR}` in the text are
    /// replaced first (the CLI's `-no-expand-env` turns that off).
    ///
    /// A missing file is [`Error::NotFound`].
    pub fn load(path: Option<&Path>, expand_env: bool) -> Result<Config> {
        let path = match path {
            Some(p) => match p.to_str().filter(|s| *s == "~" || s.starts_with("~/")) {
                Some(s) => paths::normalize(s, &process_env).map_err(|reason| Error::invalid("-config", reason))?,
                None => p.to_path_buf(),
            },
            None => Config::default_path(),
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Error::NotFound { path }),
            Err(source) => return Err(Error::Read { path, source }),
        };
        let cfg = Config::parse(&text, expand_env)?;
        tracing::debug!(path = %path.display(), dbs = cfg.dbs.len(), warnings = cfg.warnings.len(), "config loaded");
        Ok(cfg)
    }

    /// Parses config text, using the process environment for expansion, `~` and
    /// `LOG_LEVEL`.
    pub fn parse(text: &str, expand_env: bool) -> Result<Config> {
        Config::parse_with_env(text, expand_env, &process_env)
    }

    /// [`Config::parse`] with an explicit environment lookup (for tests and embedders).
    ///
    /// The environment supplies `$VAR` values, `HOME` for `~/`, and the log level
    /// override (`SLUICE_LOG_LEVEL`, `LITESTREAM_LOG_LEVEL`, then `LOG_LEVEL`).
    pub fn parse_with_env(text: &str, expand_env: bool, env: &dyn Fn(&str) -> Option<String>) -> Result<Config> {
        let expanded;
        let text = if expand_env {
            expanded = expand::expand_env(text, env);
            expanded.as_str()
        } else {
            text
        };
        let mut root: serde_yaml_ng::Value = serde_yaml_ng::from_str(text).map_err(|source| Error::Yaml { source })?;
        // `<<: *anchor` merge keys, a common way to share replica settings.
        root.apply_merge().map_err(|source| Error::Yaml { source })?;
        build::build(&root, env)
    }

    /// The database configured at `path`, compared as absolute paths (canonical where the
    /// files exist, so symlinks and `..` match).
    pub fn db(&self, path: &Path) -> Option<&DbConfig> {
        if let Some(db) = self.dbs.iter().find(|d| d.path == path) {
            return Some(db);
        }
        let want = paths::identity(path);
        self.dbs.iter().find(|d| paths::identity(&d.path) == want)
    }
}

impl Error {
    /// True for [`Error::NotFound`] (e.g. to fall back to command-line arguments).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound { .. })
    }
}
