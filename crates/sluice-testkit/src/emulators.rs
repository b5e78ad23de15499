//! The Azure Blob (Azurite) and GCS (fake-gcs-server) emulators `scripts/test` starts: their
//! endpoints, credentials, and creating containers and buckets on them.
//!
//! Like [`crate::s3`], no cloud SDK: a container is created with one Shared Key-signed request
//! (Azurite checks signatures), a bucket with one unauthenticated JSON API request
//! (fake-gcs-server checks nothing).

use anyhow::Result;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use sha2::{Digest, Sha256};

use crate::RUN_VIA_SCRIPTS_TEST;
use crate::s3::{http_request, unique_bucket};

/// Azurite's blob endpoint including the account, as the Azure SDKs and Litestream's
/// `endpoint` key take it: `http://127.0.0.1:PORT/devstoreaccount1`.
pub const AZURE_ENDPOINT_ENV: &str = "SLUICE_TEST_AZURE_ENDPOINT";
/// The Azurite account name (`devstoreaccount1`).
pub const AZURE_ACCOUNT_ENV: &str = "SLUICE_TEST_AZURE_ACCOUNT";
/// The Azurite account key (Azurite's well-known development key, base64).
pub const AZURE_KEY_ENV: &str = "SLUICE_TEST_AZURE_KEY";
/// fake-gcs-server's endpoint, `http://127.0.0.1:PORT` (what `STORAGE_EMULATOR_HOST` takes).
pub const GCS_ENDPOINT_ENV: &str = "SLUICE_TEST_GCS_ENDPOINT";

/// The storage API version of the requests made here (any version Azurite knows).
const AZURE_API_VERSION: &str = "2021-08-06";

fn required_env(name: &str, what: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v.trim_end_matches('/').to_string(),
        _ => panic!("{name} is not set (no {what}); {RUN_VIA_SCRIPTS_TEST}"),
    }
}

/// The Azurite instance of this test run.
#[derive(Clone, Debug)]
pub struct Azurite {
    /// `http://127.0.0.1:PORT/<account>`.
    pub endpoint: String,
    /// The account name.
    pub account: String,
    /// The account key (base64).
    pub key: String,
}

/// The Azurite `scripts/test` started.
///
/// # Panics
/// If its variables are unset.
pub fn azurite() -> Azurite {
    Azurite {
        endpoint: required_env(AZURE_ENDPOINT_ENV, "Azurite"),
        account: required_env(AZURE_ACCOUNT_ENV, "Azurite account"),
        key: required_env(AZURE_KEY_ENV, "Azurite account key"),
    }
}

impl Azurite {
    /// Creates a fresh container (name from `prefix`, see [`unique_bucket`]) and returns its name.
    ///
    /// # Panics
    /// If Azurite refuses.
    pub fn new_container(&self, prefix: &str) -> String {
        let name = unique_bucket(prefix);
        self.create_container(&name).unwrap_or_else(|e| panic!("create container {name:?} on Azurite: {e:#}"));
        name
    }

    fn create_container(&self, name: &str) -> Result<()> {
        // Path-style: the endpoint's path is `/<account>`, the container follows.
        let base_path = self.endpoint.split_once("://").and_then(|(_, rest)| rest.find('/').map(|i| &rest[i..]));
        let path = format!("{}/{name}", base_path.unwrap_or_default());
        let date = chrono::Utc::now().format("%a, %d %b %Y %H:%M:%S GMT").to_string();
        // Shared Key string-to-sign: the verb, 11 empty standard headers (a zero Content-Length
        // is signed as empty), the x-ms-* headers sorted, then /<account><path> and the query.
        let to_sign = format!(
            "PUT\n{}x-ms-date:{date}\nx-ms-version:{AZURE_API_VERSION}\n/{}{path}\nrestype:container",
            "\n".repeat(11),
            self.account
        );
        let key = BASE64.decode(&self.key)?;
        let signature = BASE64.encode(hmac_sha256(&key, to_sign.as_bytes()));
        let auth = format!("SharedKey {}:{signature}", self.account);
        let headers = [("x-ms-date", date.as_str()), ("x-ms-version", AZURE_API_VERSION), ("Authorization", &auth)];
        http_request(&self.endpoint, "PUT", &format!("{path}?restype=container"), &headers, &[])?
            .expect_success("Create Container")
    }

    /// The replica URL Sluice accepts for `container`/`prefix` here:
    /// `abs://<account>@<container>/<prefix>?endpoint=<endpoint>` (the key comes from the
    /// environment or the config).
    pub fn url(&self, container: &str, prefix: &str) -> String {
        let prefix = prefix.trim_start_matches('/');
        format!("abs://{}@{container}/{prefix}?endpoint={}", self.account, self.endpoint)
    }
}

/// The fake-gcs-server endpoint `scripts/test` started (`http://127.0.0.1:PORT`).
///
/// # Panics
/// If the variable is unset.
pub fn gcs_endpoint() -> String {
    required_env(GCS_ENDPOINT_ENV, "fake-gcs-server")
}

/// Creates a fresh bucket on fake-gcs-server (name from `prefix`, see [`unique_bucket`]) and
/// returns its name.
///
/// # Panics
/// If the server refuses.
pub fn new_gcs_bucket(prefix: &str) -> String {
    let name = unique_bucket(prefix);
    let body = format!("{{\"name\":\"{name}\"}}");
    http_request(
        &gcs_endpoint(),
        "POST",
        "/storage/v1/b?project=sluice-test",
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    )
    .and_then(|r| r.expect_success("create bucket"))
    .unwrap_or_else(|e| panic!("create bucket {name:?} on fake-gcs-server: {e:#}"));
    name
}

/// HMAC-SHA256 (RFC 2104), for the one signature above; not worth a dependency.
fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(k.map(|b| b ^ 0x36));
    inner.update(msg);
    let mut outer = Sha256::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    let mut out = [0u8; 32];
    out.copy_from_slice(&outer.finalize());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc4231() {
        // Test cases 1 and 6 (a key longer than the block).
        let tag = hmac_sha256(&[0x0b; 20], b"Hi There");
        assert_eq!(hex::encode(tag), "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
        let tag = hmac_sha256(&[0xaa; 131], b"Test Using Larger Than Block-Size Key - Hash Key First");
        assert_eq!(hex::encode(tag), "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
    }

    #[test]
    fn azure_url_names_the_endpoint() {
        let a = Azurite { endpoint: "http://127.0.0.1:1/acct".into(), account: "acct".into(), key: "a2V5".into() };
        assert_eq!(a.url("cont", "/db"), "abs://acct@cont/db?endpoint=http://127.0.0.1:1/acct");
    }
}
