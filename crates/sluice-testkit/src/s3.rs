//! The moto S3 server `scripts/test` starts, and a minimal unsigned HTTP client for it.
//!
//! moto does not check signatures, so buckets and objects can be managed with plain HTTP/1.1 over
//! a `TcpStream` (no AWS SDK in the test dependency tree). Path-style addressing only. Requests
//! carry a dummy `Authorization` header: moto treats requests without one as anonymous and
//! answers 403 to GET/HEAD of private objects.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::RUN_VIA_SCRIPTS_TEST;

/// Environment variable holding the moto endpoint, e.g. `http://127.0.0.1:40123`.
pub const ENDPOINT_ENV: &str = "SLUICE_TEST_S3_ENDPOINT";

/// The region every test bucket lives in.
pub const REGION: &str = "us-east-1";

/// The moto endpoint from `$SLUICE_TEST_S3_ENDPOINT`, without a trailing `/`.
///
/// # Panics
/// If the variable is unset or empty.
pub fn endpoint() -> String {
    match std::env::var(ENDPOINT_ENV) {
        Ok(e) if !e.is_empty() => e.trim_end_matches('/').to_string(),
        _ => panic!("{ENDPOINT_ENV} is not set (no moto S3 server); {RUN_VIA_SCRIPTS_TEST}"),
    }
}

/// A fresh bucket name: `prefix` lower-cased and reduced to `[a-z0-9-]`, then a random suffix.
/// Always a valid S3 bucket name (3..=63 chars). Does not create the bucket.
pub fn unique_bucket(prefix: &str) -> String {
    let mut p: String = prefix
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    p.truncate(40);
    let p = p.trim_matches('-');
    let p = if p.is_empty() { "sluice" } else { p };
    format!("{p}-{:016x}", crate::seed::random_u64())
}

/// Creates `name` on moto.
///
/// # Panics
/// If the request fails (see [`try_create_bucket`]).
pub fn create_bucket(name: &str) {
    try_create_bucket(name).unwrap_or_else(|e| panic!("create bucket {name:?} on moto: {e:#}"));
}

/// Creates `name` on moto with an unsigned `PUT /<name>`.
pub fn try_create_bucket(name: &str) -> Result<()> {
    let resp = request("PUT", &format!("/{name}"), &[])?;
    resp.expect_success("PUT bucket")
}

/// [`unique_bucket`] + [`create_bucket`]: returns the name of a new, empty bucket.
pub fn new_bucket(prefix: &str) -> String {
    let name = unique_bucket(prefix);
    create_bucket(&name);
    name
}

/// The Litestream replica URL for `bucket`/`prefix` on moto:
/// `s3://bucket/prefix?endpoint=<endpoint>&region=us-east-1&forcePathStyle=true`.
pub fn s3_url(bucket: &str, prefix: &str) -> String {
    let prefix = prefix.trim_start_matches('/');
    format!("s3://{bucket}/{prefix}?endpoint={}&region={REGION}&forcePathStyle=true", endpoint())
}

/// All keys in `bucket` that start with `prefix`, sorted (ListObjectsV2, paginated).
pub fn list_keys(bucket: &str, prefix: &str) -> Vec<String> {
    try_list_keys(bucket, prefix).unwrap_or_else(|e| panic!("list s3://{bucket}/{prefix}: {e:#}"))
}

fn try_list_keys(bucket: &str, prefix: &str) -> Result<Vec<String>> {
    let mut keys = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut path = format!("/{bucket}?list-type=2&prefix={}", encode(prefix, false));
        if let Some(t) = &token {
            path.push_str(&format!("&continuation-token={}", encode(t, false)));
        }
        let resp = request("GET", &path, &[])?;
        resp.expect_success("ListObjectsV2")?;
        let body = String::from_utf8_lossy(&resp.body).into_owned();
        keys.extend(xml_values(&body, "Key").into_iter().map(|k| xml_unescape(&k)));
        token = xml_values(&body, "NextContinuationToken").into_iter().next();
        if token.is_none() || !body.contains("<IsTruncated>true</IsTruncated>") {
            break;
        }
    }
    keys.sort();
    Ok(keys)
}

/// The bytes of `bucket/key`, or `None` if it does not exist.
pub fn get_object(bucket: &str, key: &str) -> Option<Vec<u8>> {
    let resp = request("GET", &format!("/{bucket}/{}", encode(key, true)), &[])
        .unwrap_or_else(|e| panic!("GET s3://{bucket}/{key}: {e:#}"));
    match resp.status {
        404 => None,
        200 => Some(resp.body),
        s => panic!("GET s3://{bucket}/{key}: HTTP {s}: {}", resp.text()),
    }
}

/// Writes `bytes` to `bucket/key` (e.g. to plant a corrupt object).
pub fn put_object(bucket: &str, key: &str, bytes: &[u8]) {
    put_object_with_metadata(bucket, key, bytes, &[]);
}

/// Writes `bytes` to `bucket/key` with user metadata (`x-amz-meta-<name>: <value>`).
pub fn put_object_with_metadata(bucket: &str, key: &str, bytes: &[u8], metadata: &[(&str, &str)]) {
    let headers: Vec<(String, &str)> =
        metadata.iter().map(|(name, value)| (format!("x-amz-meta-{name}"), *value)).collect();
    let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (n.as_str(), *v)).collect();
    request_with_headers("PUT", &format!("/{bucket}/{}", encode(key, true)), &headers, bytes)
        .and_then(|r| r.expect_success("PUT object"))
        .unwrap_or_else(|e| panic!("PUT s3://{bucket}/{key}: {e:#}"));
}

/// Uploads a file-layout replica (`<src>/ltx/<level>/<min>-<max>.ltx`, e.g. from
/// [`crate::fixtures::copy_replica_to`] or [`crate::fixtures::replica_dir`]) to
/// `bucket/<prefix>` in Litestream's **S3 layout**: `<prefix>/<level as %04x>/<name>` (no `ltx/`
/// component), each object carrying the `litestream-timestamp` metadata Litestream sets (the
/// header timestamp, RFC 3339). Returns the keys.
///
/// Litestream 0.5.17 can restore such a copy by latest or `-txid`, but **not by `-timestamp`**
/// for times before the upload: `Replica.TimeBounds` lists with `useMetadata=false`, so its bounds
/// come from the objects' `LastModified` (the upload time) and earlier targets fail with
/// `timestamp does not exist`; only the plan itself reads `litestream-timestamp`. Use a `file://`
/// copy ([`crate::fixtures::copy_replica_to`]) for timestamp cases.
pub fn upload_replica(src: &Path, bucket: &str, prefix: &str) -> Vec<String> {
    let prefix = prefix.trim_matches('/');
    let ltx = src.join("ltx");
    let mut keys = Vec::new();
    let mut levels: Vec<_> = std::fs::read_dir(&ltx)
        .unwrap_or_else(|e| panic!("read {}: {e}", ltx.display()))
        .filter_map(|e| e.ok())
        .collect();
    levels.sort_by_key(|e| e.file_name());
    for level_dir in levels {
        let level: u32 = level_dir
            .file_name()
            .to_str()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("unexpected level dir {}", level_dir.path().display()));
        let mut files: Vec<_> = std::fs::read_dir(level_dir.path())
            .unwrap_or_else(|e| panic!("read {}: {e}", level_dir.path().display()))
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "ltx"))
            .collect();
        files.sort();
        for file in files {
            let name = file.file_name().and_then(|n| n.to_str()).expect("BUG: utf-8 name");
            let key =
                if prefix.is_empty() { format!("{level:04x}/{name}") } else { format!("{prefix}/{level:04x}/{name}") };
            let bytes = std::fs::read(&file).unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
            let ts = crate::fixtures::ltx_header_timestamp_ms(&file)
                .unwrap_or_else(|e| panic!("{e:#}"))
                .map(crate::fixtures::rfc3339_ms);
            let meta: Vec<(&str, &str)> = ts.as_deref().map(|t| vec![("litestream-timestamp", t)]).unwrap_or_default();
            put_object_with_metadata(bucket, &key, &bytes, &meta);
            keys.push(key);
        }
    }
    keys
}

/// Deletes `bucket/key` (absent keys are not an error, as in S3).
pub fn delete_object(bucket: &str, key: &str) {
    request("DELETE", &format!("/{bucket}/{}", encode(key, true)), &[])
        .and_then(|r| r.expect_success("DELETE object"))
        .unwrap_or_else(|e| panic!("DELETE s3://{bucket}/{key}: {e:#}"));
}

/// An HTTP response (body de-chunked).
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) body: Vec<u8>,
}

impl Response {
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub(crate) fn expect_success(&self, what: &str) -> Result<()> {
        if (200..300).contains(&self.status) { Ok(()) } else { bail!("{what}: HTTP {}: {}", self.status, self.text()) }
    }
}

const DUMMY_AUTHORIZATION: &str =
    "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0";

/// One unsigned HTTP/1.1 request to the moto endpoint (`Connection: close`).
fn request(method: &str, path_and_query: &str, body: &[u8]) -> Result<Response> {
    request_with_headers(method, path_and_query, &[], body)
}

fn request_with_headers(method: &str, path_and_query: &str, headers: &[(&str, &str)], body: &[u8]) -> Result<Response> {
    // moto does not verify signatures, but it treats a request without an `Authorization`
    // header as anonymous and then refuses GET/HEAD of objects whose ACL is private (403).
    let mut all = vec![("Authorization", DUMMY_AUTHORIZATION)];
    all.extend_from_slice(headers);
    http_request(&endpoint(), method, path_and_query, &all, body)
}

/// One HTTP/1.1 request (`Connection: close`) to `endpoint` (`http://host:port`, any path in it
/// is ignored: `path_and_query` is sent as is). Also used for the other emulators.
pub(crate) fn http_request(
    endpoint: &str,
    method: &str,
    path_and_query: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Response> {
    let host = endpoint
        .strip_prefix("http://")
        .with_context(|| format!("{endpoint}: only http:// endpoints are supported"))?;
    let host = host.split('/').next().unwrap_or(host);
    let mut stream = TcpStream::connect(host).with_context(|| format!("connect to {host}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.set_write_timeout(Some(Duration::from_secs(30)))?;
    let mut head = format!(
        "{method} {path_and_query} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> Result<Response> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").context("HTTP response without end of headers")?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let body = &raw[split + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad HTTP status line {status_line:?}"))?;
    let chunked = lines.any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked { dechunk(body)? } else { body.to_vec() };
    Ok(Response { status, body })
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = data.windows(2).position(|w| w == b"\r\n").context("truncated chunk size line")?;
        let size_str = String::from_utf8_lossy(&data[..eol]);
        let size_str = size_str.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_str, 16).with_context(|| format!("bad chunk size {size_str:?}"))?;
        data = &data[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size {
            bail!("truncated chunk");
        }
        out.extend_from_slice(&data[..size]);
        data = data.get(size + 2..).unwrap_or_default();
    }
}

/// Percent-encodes everything but unreserved characters (and `/` when `keep_slash`).
pub(crate) fn encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        let unreserved = b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~');
        if unreserved || (keep_slash && b == b'/') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn xml_values(body: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out = Vec::new();
    let mut rest = body;
    while let Some(i) = rest.find(&open) {
        rest = &rest[i + open.len()..];
        let Some(j) = rest.find(&close) else { break };
        out.push(rest[..j].to_string());
        rest = &rest[j + close.len()..];
    }
    out
}

fn xml_unescape(s: &str) -> String {
    s.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"").replace("&apos;", "'").replace("&amp;", "&")
}

/// A second moto server with IAM auth enforced from the first request
/// (`INITIAL_NO_AUTH_ACTION_COUNT=0`): unknown access keys get 403 InvalidAccessKeyId.
/// Stopped when dropped.
pub struct AuthMoto {
    _guard: crate::process::ChildGuard,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
}

/// Starts an [`AuthMoto`] on a free port.
///
/// # Panics
/// If it does not start in three attempts.
pub fn start_auth_moto() -> AuthMoto {
    use std::process::{Command, Stdio};
    let moto = crate::peer::venv().join("bin/moto_server");
    assert!(moto.is_file(), "moto_server not found at {}; {}", moto.display(), RUN_VIA_SCRIPTS_TEST);
    for _attempt in 0..3 {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
            l.local_addr().expect("local addr").port()
        };
        let mut cmd = Command::new(&moto);
        cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env("INITIAL_NO_AUTH_ACTION_COUNT", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut guard = crate::process::ChildGuard::spawn(&mut cmd);
        let up = crate::process::wait_until(Duration::from_secs(30), || {
            guard.try_wait().is_some() || TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        if up && guard.try_wait().is_none() {
            return AuthMoto { _guard: guard, endpoint: format!("http://127.0.0.1:{port}") };
        }
    }
    panic!("could not start a second moto_server with INITIAL_NO_AUTH_ACTION_COUNT=0");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_names_are_valid_and_unique() {
        let a = unique_bucket("My_Test.Bucket");
        let b = unique_bucket("My_Test.Bucket");
        assert_ne!(a, b);
        assert!(a.starts_with("my-test-bucket-"), "{a}");
        assert!((3..=63).contains(&a.len()));
        let long = unique_bucket(&"x".repeat(200));
        assert!(long.len() <= 63, "{long}");
        assert!(unique_bucket("__").starts_with("sluice-"));
    }

    #[test]
    fn parses_chunked_response() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        let r = parse_response(raw).unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.body, b"abcde");
    }

    #[test]
    fn encodes_keys() {
        assert_eq!(encode("a b/c+d", true), "a%20b/c%2Bd");
        assert_eq!(encode("a/b", false), "a%2Fb");
        assert_eq!(xml_values("<K>1</K><K>2</K>", "K"), vec!["1", "2"]);
    }
}
