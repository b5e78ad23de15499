//! The extension's log output: `tracing` events to `SLUICE_LOG_FILE` (appended) or stderr,
//! filtered by `SLUICE_LOG_LEVEL` (default `warn`: only problems, such as a failed read naming
//! its object, reach the host's stderr).
//!
//! Installed once per process and only if the host has no global subscriber yet: a Rust program
//! that links the crate and logs with `tracing` keeps its own.

use std::io::IsTerminal;
use std::sync::Once;

use tracing_subscriber::EnvFilter;

use crate::config::Config;

/// Installs the subscriber (first call only).
pub fn init(config: &Config) {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| install(config));
}

fn install(config: &Config) {
    let level = config.log_level.as_deref().unwrap_or("warn");
    let (filter, bad_level) = match EnvFilter::try_new(level) {
        Ok(f) => (f, None),
        Err(e) => (EnvFilter::new("warn"), Some(e)),
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(true);
    let mut bad_file = None;
    let installed = match &config.log_file {
        Some(path) => match std::fs::OpenOptions::new().create(true).append(true).open(path) {
            Ok(file) => builder.with_ansi(false).with_writer(std::sync::Mutex::new(file)).try_init(),
            Err(e) => {
                bad_file = Some((path.clone(), e));
                builder.with_ansi(std::io::stderr().is_terminal()).with_writer(std::io::stderr).try_init()
            }
        },
        None => builder.with_ansi(std::io::stderr().is_terminal()).with_writer(std::io::stderr).try_init(),
    };
    if installed.is_err() {
        return; // The host has its own subscriber; our events go there.
    }
    if let Some(e) = bad_level {
        tracing::warn!("SLUICE_LOG_LEVEL={level:?} is not a valid filter ({e}); using warn");
    }
    if let Some((path, e)) = bad_file {
        tracing::warn!("cannot open SLUICE_LOG_FILE {}: {e}; logging to stderr", path.display());
    }
}
