//! Replica URLs and config, as Litestream accepts them.
//!
//! Accepted forms: `file:///abs/path`, a bare absolute path,
//! `s3://bucket/prefix?endpoint=..&region=..&forcePathStyle=..&skipVerify=..`, `gs://bucket/prefix`
//! and `abs://[account@]container/prefix?endpoint=..`. Explicit config fields win over URL query
//! values, which win over the environment (see `config::resolve`).
//!
//! `?endpoint=` on `abs://` is a Sluice extension (Litestream takes the ABS endpoint only from its
//! config file's `endpoint` key): URL-only callers such as the VFS have no other way to name one.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use percent_encoding::percent_decode_str;
use url::Url;

use crate::error::{Error, Result};
use crate::redact::redact_url;

/// The storage backend of a replica (Litestream's replica `type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StoreKind {
    /// Local directory (`file`).
    File,
    /// Amazon S3 or an S3-compatible service (`s3`).
    S3,
    /// Google Cloud Storage (`gs`).
    Gcs,
    /// Azure Blob Storage (`abs`).
    Azure,
}

impl StoreKind {
    /// Litestream's name for the type, also the URL scheme.
    pub fn as_str(self) -> &'static str {
        match self {
            StoreKind::File => "file",
            StoreKind::S3 => "s3",
            StoreKind::Gcs => "gs",
            StoreKind::Azure => "abs",
        }
    }
}

impl fmt::Display for StoreKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for StoreKind {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "file" => Ok(StoreKind::File),
            "s3" => Ok(StoreKind::S3),
            "gs" | "gcs" => Ok(StoreKind::Gcs),
            "abs" | "azure" => Ok(StoreKind::Azure),
            other => Err(Error::InvalidConfig {
                reason: format!("unsupported replica type {other:?} (Sluice supports file, s3, gs and abs)"),
            }),
        }
    }
}

/// What a URL contributes; `None` means "not given here".
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct UrlParts {
    pub kind: Option<StoreKind>,
    pub bucket: Option<String>,
    pub prefix: String,
    pub file_root: Option<PathBuf>,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub force_path_style: Option<bool>,
    pub skip_verify: Option<bool>,
    pub account: Option<String>,
}

fn invalid(raw: &str, reason: impl Into<String>) -> Error {
    Error::InvalidUrl { url: redact_url(raw), reason: reason.into() }
}

/// Parses a replica URL or bare absolute path.
pub(crate) fn parse_replica_url(raw: &str) -> Result<UrlParts> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Err(invalid(raw, "empty URL"));
    }
    if raw.starts_with('/') {
        return Ok(file_parts(PathBuf::from(raw)));
    }
    let url = Url::parse(raw).map_err(|e| {
        let hint = if e == url::ParseError::RelativeUrlWithoutBase {
            "relative paths are not accepted; use an absolute path or file:///abs/path".to_string()
        } else {
            format!("{e}; expected file:///path, s3://bucket/path, gs://bucket/path or abs://container/path")
        };
        invalid(raw, hint)
    })?;
    match url.scheme() {
        "file" => parse_file(raw, &url),
        "s3" => parse_s3(raw, &url),
        "gs" => parse_bucket_url(raw, &url, StoreKind::Gcs),
        "abs" => parse_abs(raw, &url),
        other => Err(invalid(raw, format!("unsupported scheme {other:?} (Sluice supports file, s3, gs and abs)"))),
    }
}

fn file_parts(path: PathBuf) -> UrlParts {
    UrlParts { kind: Some(StoreKind::File), file_root: Some(path), ..UrlParts::default() }
}

fn parse_file(raw: &str, url: &Url) -> Result<UrlParts> {
    match url.host_str() {
        None | Some("") | Some("localhost") => {}
        Some(host) => {
            return Err(invalid(raw, format!("file URL has host {host:?}; use file:///abs/path")));
        }
    }
    let path = url.to_file_path().map_err(|()| invalid(raw, "file URL does not hold an absolute path"))?;
    if url.query().is_some() {
        return Err(invalid(raw, "file URLs take no query parameters"));
    }
    Ok(file_parts(path))
}

/// Decoded URL path without leading/trailing slashes (Go's `url.Path` is decoded too).
fn url_prefix(raw: &str, url: &Url) -> Result<String> {
    let decoded = percent_decode_str(url.path())
        .decode_utf8()
        .map_err(|_| invalid(raw, "path is not valid UTF-8 after percent-decoding"))?;
    Ok(decoded.trim_matches('/').to_string())
}

fn reject_credentials(raw: &str, url: &Url) -> Result<()> {
    if url.password().is_some() {
        return Err(invalid(raw, "credentials in the URL are not supported; use the config file or environment"));
    }
    Ok(())
}

fn parse_bucket_url(raw: &str, url: &Url, kind: StoreKind) -> Result<UrlParts> {
    reject_credentials(raw, url)?;
    if !url.username().is_empty() {
        return Err(invalid(raw, format!("{kind}:// URLs take no user name")));
    }
    let bucket = url.host_str().unwrap_or_default();
    if bucket.is_empty() {
        return Err(invalid(raw, format!("missing bucket: expected {kind}://bucket/path")));
    }
    Ok(UrlParts {
        kind: Some(kind),
        bucket: Some(bucket.to_string()),
        prefix: url_prefix(raw, url)?,
        ..UrlParts::default()
    })
}

fn parse_s3(raw: &str, url: &Url) -> Result<UrlParts> {
    let mut parts = parse_bucket_url(raw, url, StoreKind::S3)?;
    if let Some(host) = parts.bucket.clone() {
        let (bucket, region) = split_aws_host(&host);
        parts.bucket = Some(bucket);
        parts.region = region;
    }
    for (key, value) in url.query_pairs() {
        match key.as_ref() {
            "endpoint" => parts.endpoint = Some(value.into_owned()).filter(|v| !v.is_empty()),
            "region" => parts.region = Some(value.into_owned()).filter(|v| !v.is_empty()),
            "forcePathStyle" => parts.force_path_style = Some(parse_go_bool(raw, &key, &value)?),
            "skipVerify" => parts.skip_verify = Some(parse_go_bool(raw, &key, &value)?),
            // Litestream ignores unknown keys; warn (name only: the value may be secret).
            other => tracing::warn!(key = other, "ignoring unknown s3 replica URL parameter"),
        }
    }
    Ok(parts)
}

fn parse_abs(raw: &str, url: &Url) -> Result<UrlParts> {
    reject_credentials(raw, url)?;
    let container = url.host_str().unwrap_or_default();
    if container.is_empty() {
        return Err(invalid(raw, "missing container: expected abs://[account@]container/path"));
    }
    let account = percent_decode_str(url.username()).decode_utf8_lossy().into_owned();
    let mut endpoint = None;
    for (key, value) in url.query_pairs() {
        match key.as_ref() {
            "endpoint" => endpoint = Some(value.into_owned()).filter(|v| !v.is_empty()),
            other => tracing::warn!(key = other, "ignoring unknown abs replica URL parameter"),
        }
    }
    Ok(UrlParts {
        kind: Some(StoreKind::Azure),
        bucket: Some(container.to_string()),
        prefix: url_prefix(raw, url)?,
        account: Some(account).filter(|a| !a.is_empty()),
        endpoint,
        ..UrlParts::default()
    })
}

/// `bucket.s3.amazonaws.com`, `bucket.s3.REGION.amazonaws.com` and `bucket.s3-REGION.amazonaws.com`
/// name the bucket (and region) the way Litestream's `s3.ParseHost` accepts; anything else is
/// taken verbatim as the bucket name (bucket names may contain dots).
fn split_aws_host(host: &str) -> (String, Option<String>) {
    let Some(rest) = host.strip_suffix(".amazonaws.com") else {
        return (host.to_string(), None);
    };
    if let Some((bucket, region)) = rest.rsplit_once(".s3.") {
        return (bucket.to_string(), Some(region.to_string()));
    }
    if let Some(bucket) = rest.strip_suffix(".s3") {
        return (bucket.to_string(), None);
    }
    if let Some((bucket, region)) = rest.rsplit_once(".s3-") {
        return (bucket.to_string(), Some(region.to_string()));
    }
    (host.to_string(), None)
}

/// Go's `strconv.ParseBool`, which Litestream uses for URL flags.
fn parse_go_bool(raw: &str, key: &str, value: &str) -> Result<bool> {
    match value {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(invalid(raw, format!("{key}={value:?} is not a boolean (use true or false)"))),
    }
}
