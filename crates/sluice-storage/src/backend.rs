//! Building an `object_store` client for a resolved [`Target`].

use std::sync::Arc;
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::{GcpCredential, GoogleCloudStorageBuilder};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{BackoffConfig, ClientOptions, ObjectStore, RetryConfig, StaticCredentialProvider};

use crate::config::{EnvFn, Target};
use crate::error::{Error, Result};
use crate::url::StoreKind;

/// object_store's own retry loop is switched off: [`crate::RetryPolicy`] is the single place
/// that retries. Stacking both would multiply attempts (object_store defaults to 10 retries
/// within 3 minutes, per *each* of our attempts), make the worst-case latency of one call
/// unbounded in practice, and make request counts seen through `FaultyStore` differ from
/// what real backends see.
fn no_inner_retries() -> RetryConfig {
    RetryConfig { backoff: BackoffConfig::default(), max_retries: 0, retry_timeout: Duration::from_secs(60) }
}

fn client_options(t: &Target, env: EnvFn<'_>) -> ClientOptions {
    let mut opts = ClientOptions::new().with_allow_invalid_certificates(t.skip_verify);
    if let Some(ep) = &t.endpoint {
        if ep.starts_with("http://") {
            opts = opts.with_allow_http(true);
        } else if !t.skip_verify {
            opts = with_ca_bundle(opts, env);
        }
    }
    opts
}

/// `AWS_CA_BUNDLE` matters only for a custom https endpoint signed by a private CA. It is never
/// read for http:// endpoints or plain AWS (system roots apply), and a bundle that cannot be
/// read is logged and skipped rather than failing the replica.
fn with_ca_bundle(mut opts: ClientOptions, env: EnvFn<'_>) -> ClientOptions {
    let Some(path) = env("AWS_CA_BUNDLE").filter(|p| !p.is_empty()) else {
        return opts;
    };
    let certs = std::fs::read(&path)
        .map_err(|e| e.to_string())
        .and_then(|pem| object_store::Certificate::from_pem_bundle(&pem).map_err(|e| e.to_string()));
    match certs {
        Ok(certs) => {
            for cert in certs {
                opts = opts.with_root_certificate(cert);
            }
        }
        Err(e) => tracing::warn!(path, error = %e, "ignoring unreadable AWS_CA_BUNDLE"),
    }
    opts
}

/// Builds the store; returns it with the key prefix the layout should use.
pub(crate) fn build_store(t: &Target, description: &str, env: EnvFn<'_>) -> Result<(Arc<dyn ObjectStore>, Path)> {
    let build_err = |source| Error::Build { store: description.to_string(), source: Box::new(source) };
    let prefix = Path::from(t.prefix.as_str());
    match t.kind {
        StoreKind::File => {
            let root = t
                .file_root
                .as_ref()
                .ok_or_else(|| Error::InvalidConfig { reason: "file replica has no path".into() })?;
            // Rooted at "/" with the directory as key prefix, so the directory need not exist
            // until the first write (LocalFileSystem::new_with_prefix canonicalizes it).
            let prefix = Path::from_absolute_path(root).map_err(|e| Error::InvalidUrl {
                url: description.to_string(),
                reason: format!("cannot use {} as a replica directory: {e}", root.display()),
            })?;
            let store = LocalFileSystem::new().with_fsync(true);
            Ok((Arc::new(store), prefix))
        }
        StoreKind::S3 => {
            let mut b = AmazonS3Builder::new()
                .with_bucket_name(&t.bucket)
                .with_client_options(client_options(t, env))
                .with_retry(no_inner_retries());
            if let Some(region) = &t.region {
                b = b.with_region(region);
            }
            b = match (&t.endpoint, t.force_path_style) {
                // Custom endpoints (MinIO, moto, R2...) default to path style, as Litestream does.
                (Some(ep), None | Some(true)) => b.with_endpoint(ep),
                // Virtual-hosted on a custom endpoint: object_store expects the bucket in the host.
                (Some(ep), Some(false)) => {
                    b.with_endpoint(bucket_host_endpoint(ep, &t.bucket)).with_virtual_hosted_style_request(true)
                }
                (None, Some(true)) => b,
                (None, _) => b.with_virtual_hosted_style_request(true),
            };
            // Over TLS the body needs no SHA-256 in the signature (TLS protects it, LTX files
            // carry their own CRCs); hashing was 3.5% of the daemon's CPU at 100 tx/s to S3.
            // A plain-HTTP endpoint keeps the signed payload, its only integrity check.
            let tls = t.endpoint.as_deref().is_none_or(|ep| ep.starts_with("https://"));
            b = b.with_unsigned_payload(tls);
            let c = &t.creds;
            if let (Some(id), Some(secret)) = (&c.access_key_id, &c.secret_access_key) {
                b = b.with_access_key_id(id).with_secret_access_key(secret);
                if let Some(token) = &c.session_token {
                    b = b.with_token(token);
                }
            }
            Ok((Arc::new(b.build().map_err(build_err)?), prefix))
        }
        StoreKind::Gcs => {
            let mut b = GoogleCloudStorageBuilder::new()
                .with_bucket_name(&t.bucket)
                .with_client_options(client_options(t, env))
                .with_retry(no_inner_retries());
            match (&t.endpoint, t.gcs_emulator) {
                // An explicit (empty) credential stops object_store from reading the user's
                // application-default credentials or asking the metadata server; skipping the
                // signature sends requests without `Authorization`, as Go's client does.
                (Some(ep), true) => {
                    b = b.with_base_url(ep).with_skip_signature(true).with_credentials(Arc::new(
                        StaticCredentialProvider::new(GcpCredential { bearer: String::new() }),
                    ));
                }
                _ => {
                    if let Some(path) = &t.creds.gcs_credentials_path {
                        b = b.with_application_credentials(path);
                    }
                }
            }
            Ok((Arc::new(b.build().map_err(build_err)?), prefix))
        }
        StoreKind::Azure => Ok((Arc::new(build_azure(t, env).map_err(build_err)?), prefix)),
    }
}

fn build_azure(t: &Target, env: EnvFn<'_>) -> object_store::Result<object_store::azure::MicrosoftAzure> {
    let mut b = MicrosoftAzureBuilder::new()
        .with_container_name(&t.bucket)
        .with_client_options(client_options(t, env))
        .with_retry(no_inner_retries());
    if let Some(account) = &t.account {
        b = b.with_account(account);
    }
    if let Some(ep) = &t.endpoint {
        b = b.with_endpoint(ep.clone());
    }
    if let Some(key) = &t.creds.account_key {
        b = b.with_access_key(key);
    } else if let Some(sas) = &t.creds.sas_token {
        let pairs = url::form_urlencoded::parse(sas.trim_start_matches('?').as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect::<Vec<_>>();
        b = b.with_sas_authorization(pairs);
    }
    b.build()
}

/// `https://host:port` + `bucket` → `https://bucket.host:port`.
fn bucket_host_endpoint(endpoint: &str, bucket: &str) -> String {
    match endpoint.split_once("://") {
        Some((scheme, rest)) => format!("{scheme}://{bucket}.{rest}"),
        None => format!("https://{bucket}.{endpoint}"),
    }
}
