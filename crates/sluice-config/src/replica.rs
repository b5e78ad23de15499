//! `replica:` blocks and the top-level replica defaults they inherit.

use std::time::Duration;

use sluice_storage::ReplicaConfig;

use crate::error::{Error, Result};
use crate::model::{DEFAULT_MAX_SYNC_LTX_FILES, DEFAULT_SYNC_INTERVAL, ReplicaSettings};
use crate::section::Section;

/// Replica settings as written, before defaults: `None` (or an empty string, which
/// Litestream treats the same) means "not set here".
#[derive(Clone, Debug, Default)]
pub(crate) struct PartialReplica {
    kind: Option<String>,
    url: Option<String>,
    path: Option<String>,
    bucket: Option<String>,
    endpoint: Option<String>,
    region: Option<String>,
    force_path_style: Option<bool>,
    skip_verify: Option<bool>,
    access_key_id: Option<String>,
    secret_access_key: Option<String>,
    account_name: Option<String>,
    account_key: Option<String>,
    sas_token: Option<String>,
    sync_interval: Option<Duration>,
    max_sync_ltx_files: Option<u64>,
    auto_recover: Option<bool>,
    validation_interval: Option<Duration>,
    part_size: Option<u64>,
    concurrency: Option<u64>,
}

fn text(sec: &Section<'_>, key: &str) -> Result<Option<String>> {
    Ok(sec.string(key)?.filter(|s| !s.is_empty()))
}

impl PartialReplica {
    /// Reads the shared settings (`ReplicaSettings` in Litestream) from `sec`; with
    /// `whole`, also `type`, `url` and `path`, which only a replica block has.
    pub fn read(sec: &Section<'_>, whole: bool) -> Result<Self> {
        let only = |key: &str| if whole { text(sec, key) } else { Ok(None) };
        Ok(PartialReplica {
            kind: only("type")?,
            url: only("url")?,
            path: only("path")?,
            bucket: text(sec, "bucket")?,
            endpoint: text(sec, "endpoint")?,
            region: text(sec, "region")?,
            force_path_style: sec.bool("force-path-style")?,
            skip_verify: sec.bool("skip-verify")?,
            access_key_id: text(sec, "access-key-id")?,
            secret_access_key: text(sec, "secret-access-key")?,
            account_name: text(sec, "account-name")?,
            account_key: text(sec, "account-key")?,
            sas_token: text(sec, "sas-token")?,
            sync_interval: sec.duration("sync-interval")?,
            max_sync_ltx_files: sec.uint("max-sync-ltx-files")?,
            auto_recover: sec.bool("auto-recover")?,
            validation_interval: sec.duration("validation-interval")?,
            part_size: sec.size("part-size")?,
            concurrency: sec.uint("concurrency")?,
        })
    }

    /// `validation-interval` when this block sets none.
    pub fn with_validation_default(mut self, interval: Option<Duration>) -> Self {
        if self.validation_interval.is_none() {
            self.validation_interval = interval;
        }
        self
    }

    /// Fills what this replica leaves unset from the top-level `defaults`
    /// (Litestream's `ReplicaSettings.SetDefaults`).
    ///
    /// One deliberate difference: a default `bucket` is not given to a replica that has a
    /// `url`. Litestream copies it and then fails with "cannot specify url & bucket"; the
    /// URL names its bucket already, so Sluice lets the URL win.
    pub fn inherit(mut self, defaults: &PartialReplica) -> Self {
        fn fill<T: Clone>(slot: &mut Option<T>, default: &Option<T>) {
            if slot.is_none() {
                slot.clone_from(default);
            }
        }
        if self.url.is_none() {
            fill(&mut self.bucket, &defaults.bucket);
        }
        fill(&mut self.endpoint, &defaults.endpoint);
        fill(&mut self.region, &defaults.region);
        fill(&mut self.force_path_style, &defaults.force_path_style);
        // As in Litestream, a global `skip-verify: true` cannot be turned off per replica.
        if defaults.skip_verify == Some(true) {
            self.skip_verify = Some(true);
        }
        fill(&mut self.access_key_id, &defaults.access_key_id);
        fill(&mut self.secret_access_key, &defaults.secret_access_key);
        fill(&mut self.account_name, &defaults.account_name);
        fill(&mut self.account_key, &defaults.account_key);
        fill(&mut self.sas_token, &defaults.sas_token);
        fill(&mut self.sync_interval, &defaults.sync_interval);
        fill(&mut self.max_sync_ltx_files, &defaults.max_sync_ltx_files);
        fill(&mut self.auto_recover, &defaults.auto_recover);
        fill(&mut self.validation_interval, &defaults.validation_interval);
        fill(&mut self.part_size, &defaults.part_size);
        fill(&mut self.concurrency, &defaults.concurrency);
        self
    }

    /// Validates and applies defaults. `loc` is the replica block's location.
    pub fn finish(self, loc: &str) -> Result<ReplicaSettings> {
        let at = |key: &str| crate::section::join(loc, key);
        check_kind(self.kind.as_deref(), self.url.as_deref(), loc)?;
        if self.url.is_some() && self.path.is_some() {
            return Err(Error::invalid(loc, "cannot specify both `url` and `path`"));
        }
        if let Some(path) = &self.path
            && path.contains("://")
        {
            return Err(Error::invalid(at("path"), "replica path cannot be a URL; use `url` instead"));
        }
        let sync_interval = self.sync_interval.unwrap_or(DEFAULT_SYNC_INTERVAL);
        if sync_interval.is_zero() {
            return Err(Error::invalid(at("sync-interval"), "sync interval must be greater than 0"));
        }
        let max_sync_ltx_files = match self.max_sync_ltx_files {
            None => DEFAULT_MAX_SYNC_LTX_FILES,
            Some(0) => return Err(Error::invalid(at("max-sync-ltx-files"), "must be greater than 0")),
            Some(n) => usize::try_from(n).map_err(|_| Error::invalid(at("max-sync-ltx-files"), "too large"))?,
        };
        let concurrency = match self.concurrency {
            None => None,
            Some(0) => return Err(Error::invalid(at("concurrency"), "must be greater than 0")),
            Some(n) => Some(usize::try_from(n).map_err(|_| Error::invalid(at("concurrency"), "too large"))?),
        };
        let storage = ReplicaConfig {
            url: self.url,
            kind: self.kind,
            bucket: self.bucket,
            path: self.path,
            endpoint: self.endpoint,
            region: self.region,
            force_path_style: self.force_path_style,
            skip_verify: self.skip_verify.unwrap_or(false),
            access_key_id: self.access_key_id,
            secret_access_key: self.secret_access_key,
            account_name: self.account_name,
            account_key: self.account_key,
            sas_token: self.sas_token,
        };
        Ok(ReplicaSettings {
            storage,
            sync_interval,
            max_sync_ltx_files,
            auto_recover: self.auto_recover.unwrap_or(false),
            validation_interval: self.validation_interval.filter(|d| !d.is_zero()),
            part_size: self.part_size,
            concurrency,
        })
    }
}

/// Litestream backends Sluice has no client for.
const UNSUPPORTED_BACKENDS: &[&str] = &["sftp", "webdav", "webdavs", "nats", "oss"];

fn check_kind(kind: Option<&str>, url: Option<&str>, loc: &str) -> Result<()> {
    let unsupported = |what: &str, key: &str| {
        Error::invalid(
            crate::section::join(loc, key),
            format!("the {what} replica backend is not supported by Sluice (supported: file, s3, gs, abs)"),
        )
    };
    if let Some(kind) = kind {
        if UNSUPPORTED_BACKENDS.contains(&kind) {
            return Err(unsupported(kind, "type"));
        }
        if !["file", "s3", "gs", "abs"].contains(&kind) {
            return Err(Error::invalid(
                crate::section::join(loc, "type"),
                format!("unknown replica type {kind:?} (supported: file, s3, gs, abs)"),
            ));
        }
    }
    if let Some(scheme) = url.and_then(|u| u.split_once("://")).map(|(s, _)| s.to_ascii_lowercase())
        && UNSUPPORTED_BACKENDS.contains(&scheme.as_str())
    {
        return Err(unsupported(&scheme, "url"));
    }
    Ok(())
}
