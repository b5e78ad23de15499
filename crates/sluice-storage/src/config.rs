//! `ReplicaConfig` (what the CLI reads from Litestream YAML) and its resolution against the
//! URL and the environment.
//!
//! Precedence, as in Litestream: explicit config field > URL query value > environment >
//! default. Secrets only ever come from config fields or the environment, never the URL.

use std::fmt;
use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::redact::secret_marker;
use crate::url::{StoreKind, UrlParts, parse_replica_url};

/// One replica's settings, with the keys of Litestream's YAML `replica:` block.
///
/// Either `url` is set, or `kind` (YAML `type`, default `file`) with `path` and, for cloud
/// stores, `bucket` (the container for `abs`).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ReplicaConfig {
    /// `url`: a replica URL or bare absolute path.
    pub url: Option<String>,
    /// `type`: file, s3, gs or abs.
    pub kind: Option<String>,
    /// `bucket` (S3/GCS bucket or Azure container).
    pub bucket: Option<String>,
    /// `path`: directory for `file`, key prefix otherwise.
    pub path: Option<String>,
    /// `endpoint` of an S3-compatible service or of Azure Blob Storage (e.g. Azurite:
    /// `http://127.0.0.1:10000/devstoreaccount1`). Ignored for `gs`, as in Litestream: GCS
    /// emulators are named by `STORAGE_EMULATOR_HOST`.
    pub endpoint: Option<String>,
    /// `region` (S3).
    pub region: Option<String>,
    /// `force-path-style` (S3).
    pub force_path_style: Option<bool>,
    /// `skip-verify`: accept invalid TLS certificates.
    pub skip_verify: bool,
    /// `access-key-id` (S3).
    pub access_key_id: Option<String>,
    /// `secret-access-key` (S3).
    pub secret_access_key: Option<String>,
    /// `account-name` (Azure).
    pub account_name: Option<String>,
    /// `account-key` (Azure).
    pub account_key: Option<String>,
    /// `sas-token` (Azure).
    pub sas_token: Option<String>,
}

// Hand-written so that secrets never reach a log through `{:?}`.
impl fmt::Debug for ReplicaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplicaConfig")
            .field("url", &self.url.as_deref().map(crate::redact::redact_url))
            .field("kind", &self.kind)
            .field("bucket", &self.bucket)
            .field("path", &self.path)
            .field("endpoint", &self.endpoint.as_deref().map(crate::redact::redact_url))
            .field("region", &self.region)
            .field("force_path_style", &self.force_path_style)
            .field("skip_verify", &self.skip_verify)
            .field("access_key_id", &secret_marker(&self.access_key_id))
            .field("secret_access_key", &secret_marker(&self.secret_access_key))
            .field("account_name", &self.account_name)
            .field("account_key", &secret_marker(&self.account_key))
            .field("sas_token", &secret_marker(&self.sas_token))
            .finish()
    }
}

/// Credentials after resolution. Never printed (no `Debug`).
#[derive(Default, Clone, PartialEq, Eq)]
pub(crate) struct Credentials {
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
    pub account_key: Option<String>,
    pub sas_token: Option<String>,
    pub gcs_credentials_path: Option<String>,
}

/// A fully resolved replica target, ready to build a store from.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Target {
    pub kind: StoreKind,
    /// Bucket or container; empty for `file`.
    pub bucket: String,
    /// Key prefix without leading/trailing '/'; empty for `file` (the root is `file_root`).
    pub prefix: String,
    pub file_root: Option<PathBuf>,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub force_path_style: Option<bool>,
    pub skip_verify: bool,
    pub account: Option<String>,
    /// GCS via `STORAGE_EMULATOR_HOST`: `endpoint` is the emulator, requests go unauthenticated.
    pub gcs_emulator: bool,
    pub creds: Credentials,
}

/// Environment lookup; tests pass a fake one. Empty values count as unset.
pub(crate) type EnvFn<'a> = &'a dyn Fn(&str) -> Option<String>;

pub(crate) fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

fn first_env(env: EnvFn<'_>, names: &[&str]) -> Option<String> {
    names.iter().find_map(|n| env(n).filter(|v| !v.is_empty()))
}

fn nonempty(v: &Option<String>) -> Option<String> {
    v.clone().filter(|s| !s.is_empty())
}

fn config_err(reason: impl Into<String>) -> Error {
    Error::InvalidConfig { reason: reason.into() }
}

/// Merges config, URL and environment into a [`Target`].
pub(crate) fn resolve(cfg: &ReplicaConfig, env: EnvFn<'_>) -> Result<Target> {
    let parts = match nonempty(&cfg.url) {
        Some(url) => {
            if nonempty(&cfg.path).is_some() || nonempty(&cfg.bucket).is_some() {
                return Err(config_err("replica `url` cannot be combined with `path` or `bucket`"));
            }
            parse_replica_url(&url)?
        }
        None => UrlParts::default(),
    };
    let kind = match (nonempty(&cfg.kind), parts.kind) {
        (Some(k), Some(u)) if k.parse::<StoreKind>()? != u => {
            return Err(config_err(format!("replica type {k:?} does not match its URL ({u})")));
        }
        (Some(k), _) => k.parse()?,
        (None, Some(u)) => u,
        (None, None) => StoreKind::File,
    };
    let mut target = Target {
        kind,
        bucket: nonempty(&cfg.bucket).or(parts.bucket).unwrap_or_default(),
        prefix: parts.prefix,
        file_root: parts.file_root,
        endpoint: nonempty(&cfg.endpoint).or(parts.endpoint),
        region: nonempty(&cfg.region).or(parts.region),
        force_path_style: cfg.force_path_style.or(parts.force_path_style),
        skip_verify: cfg.skip_verify || parts.skip_verify.unwrap_or(false),
        account: nonempty(&cfg.account_name).or(parts.account),
        gcs_emulator: false,
        creds: Credentials::default(),
    };
    if let Some(path) = nonempty(&cfg.path) {
        match kind {
            StoreKind::File => target.file_root = Some(file_path(&path, env)?),
            _ => target.prefix = path.trim_matches('/').to_string(),
        }
    }
    match kind {
        StoreKind::File => resolve_file(&mut target)?,
        StoreKind::S3 => resolve_s3(&mut target, cfg, env)?,
        StoreKind::Gcs => resolve_gcs(&mut target, env)?,
        StoreKind::Azure => resolve_azure(&mut target, cfg, env)?,
    }
    Ok(target)
}

/// `~/` is expanded and relative paths are made absolute, as Litestream does for config paths.
fn file_path(path: &str, env: EnvFn<'_>) -> Result<PathBuf> {
    let expanded = match path.strip_prefix("~/") {
        Some(rest) => match first_env(env, &["HOME"]) {
            Some(home) => PathBuf::from(home).join(rest),
            None => return Err(config_err(format!("cannot expand {path:?}: HOME is not set"))),
        },
        None => PathBuf::from(path),
    };
    std::path::absolute(&expanded).map_err(|e| config_err(format!("cannot make replica path {path:?} absolute: {e}")))
}

fn resolve_file(target: &mut Target) -> Result<()> {
    let root = target.file_root.as_ref().ok_or_else(|| config_err("file replica needs `path` or `url`"))?;
    if !root.is_absolute() {
        return Err(config_err(format!("file replica path {} is not absolute", root.display())));
    }
    Ok(())
}

fn require_bucket(target: &Target) -> Result<()> {
    if target.bucket.is_empty() {
        return Err(config_err(format!("{} replica needs a bucket", target.kind)));
    }
    Ok(())
}

fn resolve_s3(target: &mut Target, cfg: &ReplicaConfig, env: EnvFn<'_>) -> Result<()> {
    require_bucket(target)?;
    if target.endpoint.is_none() {
        target.endpoint = first_env(env, &["LITESTREAM_S3_ENDPOINT"]);
    }
    // Litestream accepts a bare host:port endpoint and assumes https.
    target.endpoint = target.endpoint.take().map(|ep| with_scheme(&ep, "https"));
    if target.region.is_none() {
        // object_store needs a region to sign; without one Litestream asks the bucket's
        // location, which we do not, so plain AWS buckets outside us-east-1 need `region`.
        target.region = first_env(env, &["AWS_REGION", "AWS_DEFAULT_REGION"]).or_else(|| Some("us-east-1".to_string()));
    }
    let creds = &mut target.creds;
    if let (Some(id), Some(secret)) = (nonempty(&cfg.access_key_id), nonempty(&cfg.secret_access_key)) {
        (creds.access_key_id, creds.secret_access_key) = (Some(id), Some(secret));
        return Ok(());
    }
    // Pairs are taken together so a key id from one source never meets a secret from another.
    for (id, secret, token) in [
        ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", Some("AWS_SESSION_TOKEN")),
        ("LITESTREAM_ACCESS_KEY_ID", "LITESTREAM_SECRET_ACCESS_KEY", None),
        ("SLUICE_ACCESS_KEY_ID", "SLUICE_SECRET_ACCESS_KEY", None),
    ] {
        if let (Some(i), Some(s)) = (first_env(env, &[id]), first_env(env, &[secret])) {
            creds.access_key_id = Some(i);
            creds.secret_access_key = Some(s);
            creds.session_token = token.and_then(|t| first_env(env, &[t]));
            return Ok(());
        }
    }
    Ok(())
}

/// `host:port` → `<scheme>://host:port`, without a trailing `/` (object_store appends path
/// segments to the endpoint, and a trailing `/` would leave an empty one: `…//container`).
fn with_scheme(endpoint: &str, scheme: &str) -> String {
    let ep = endpoint.trim().trim_end_matches('/');
    if ep.contains("://") { ep.to_string() } else { format!("{scheme}://{ep}") }
}

/// Go's GCS client, which Litestream uses, sends every request to `STORAGE_EMULATOR_HOST`
/// (http unless it names a scheme) without credentials; Sluice does the same, so one variable
/// points both tools at fake-gcs-server. Litestream ignores `endpoint` for gs; so do we, loudly.
fn resolve_gcs(target: &mut Target, env: EnvFn<'_>) -> Result<()> {
    require_bucket(target)?;
    if target.endpoint.take().is_some() {
        tracing::warn!(
            "ignoring `endpoint` for a gs replica (as Litestream does); set STORAGE_EMULATOR_HOST for an emulator"
        );
    }
    if let Some(host) = first_env(env, &["STORAGE_EMULATOR_HOST"]) {
        target.endpoint = Some(with_scheme(&host, "http"));
        target.gcs_emulator = true;
        return Ok(());
    }
    target.creds.gcs_credentials_path = first_env(env, &["GOOGLE_APPLICATION_CREDENTIALS"]);
    Ok(())
}

fn resolve_azure(target: &mut Target, cfg: &ReplicaConfig, env: EnvFn<'_>) -> Result<()> {
    require_bucket(target)?;
    // As for S3, a bare host:port means https. Azurite's endpoint carries the account as its
    // first path segment (`http://127.0.0.1:10000/devstoreaccount1`), as the Azure SDKs expect.
    target.endpoint = target.endpoint.take().map(|ep| with_scheme(&ep, "https"));
    if target.account.is_none() {
        target.account = first_env(env, &["AZURE_STORAGE_ACCOUNT"]);
    }
    if target.account.is_none() {
        return Err(config_err(
            "abs replica needs an account: abs://ACCOUNT@container/path, account-name or AZURE_STORAGE_ACCOUNT",
        ));
    }
    target.creds.account_key =
        nonempty(&cfg.account_key).or_else(|| first_env(env, &["LITESTREAM_AZURE_ACCOUNT_KEY", "AZURE_STORAGE_KEY"]));
    target.creds.sas_token = nonempty(&cfg.sas_token).or_else(|| first_env(env, &["LITESTREAM_AZURE_SAS_TOKEN"]));
    Ok(())
}

/// The redacted, human-readable name of a target: no credential can appear in it.
pub(crate) fn describe(t: &Target) -> String {
    let prefix = if t.prefix.is_empty() { String::new() } else { format!("/{}", t.prefix) };
    match t.kind {
        StoreKind::File => {
            let root = t.file_root.as_deref().map(|p| p.display().to_string()).unwrap_or_default();
            format!("file://{root}")
        }
        StoreKind::S3 => {
            let mut s = format!("s3://{}{prefix}", t.bucket);
            let mut query = Vec::new();
            if let Some(ep) = &t.endpoint {
                query.push(format!("endpoint={}", shown_endpoint(ep)));
            }
            if let Some(region) = &t.region {
                query.push(format!("region={region}"));
            }
            if !query.is_empty() {
                s.push('?');
                s.push_str(&query.join("&"));
            }
            s
        }
        StoreKind::Gcs => match (&t.endpoint, t.gcs_emulator) {
            (Some(ep), true) => format!("gs://{}{prefix} (STORAGE_EMULATOR_HOST={})", t.bucket, shown_endpoint(ep)),
            _ => format!("gs://{}{prefix}", t.bucket),
        },
        StoreKind::Azure => {
            let account = t.account.as_deref().map(|a| format!("{a}@")).unwrap_or_default();
            let query = t.endpoint.as_deref().map(|ep| format!("?endpoint={}", shown_endpoint(ep))).unwrap_or_default();
            format!("abs://{account}{}{prefix}{query}", t.bucket)
        }
    }
}

/// An endpoint as shown in a description. Only round-trips through the URL parser when there
/// may be something to hide: it would otherwise add a trailing '/'.
fn shown_endpoint(ep: &str) -> String {
    if ep.contains(['@', '?']) { crate::redact::redact_url(ep) } else { ep.to_string() }
}
