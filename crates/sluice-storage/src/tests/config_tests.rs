//! Replica URL / config resolution table.

use std::collections::HashMap;
use std::path::PathBuf;

use crate::config::{ReplicaConfig, Target, describe, resolve};
use crate::{Error, ReplicaClient, StoreKind};

fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    move |k: &str| map.get(k).cloned()
}

fn url_cfg(url: &str) -> ReplicaConfig {
    ReplicaConfig { url: Some(url.into()), ..ReplicaConfig::default() }
}

fn resolve_url(url: &str, env: &[(&str, &str)]) -> Result<Target, Error> {
    resolve(&url_cfg(url), &env_of(env))
}

#[test]
fn url_forms() {
    let t = resolve_url("file:///tmp/replica/db", &[]).expect("file url");
    assert_eq!((t.kind, t.file_root.clone()), (StoreKind::File, Some(PathBuf::from("/tmp/replica/db"))));
    assert_eq!(describe(&t), "file:///tmp/replica/db");

    let t = resolve_url("/var/lib/replica", &[]).expect("bare path");
    assert_eq!((t.kind, t.file_root), (StoreKind::File, Some(PathBuf::from("/var/lib/replica"))));

    let t = resolve_url(
        "s3://bkt/a/b/?endpoint=http://localhost:9000&region=eu-west-1&forcePathStyle=true&skipVerify=true",
        &[],
    )
    .expect("s3 url");
    assert_eq!((t.kind, t.bucket.as_str(), t.prefix.as_str()), (StoreKind::S3, "bkt", "a/b"));
    assert_eq!(t.endpoint.as_deref(), Some("http://localhost:9000"));
    assert_eq!(t.region.as_deref(), Some("eu-west-1"));
    assert_eq!((t.force_path_style, t.skip_verify), (Some(true), true));
    assert_eq!(describe(&t), "s3://bkt/a/b?endpoint=http://localhost:9000&region=eu-west-1");

    let t = resolve_url("s3://bkt", &[]).expect("bare bucket");
    assert_eq!((t.prefix.as_str(), t.region.as_deref()), ("", Some("us-east-1")));

    let t = resolve_url("s3://mybkt.s3.us-west-2.amazonaws.com/db", &[]).expect("aws host");
    assert_eq!((t.bucket.as_str(), t.region.as_deref()), ("mybkt", Some("us-west-2")));

    let t = resolve_url("gs://gbkt/some/prefix/", &[]).expect("gs url");
    assert_eq!((t.kind, t.bucket.as_str(), t.prefix.as_str()), (StoreKind::Gcs, "gbkt", "some/prefix"));
    assert_eq!(describe(&t), "gs://gbkt/some/prefix");

    let t = resolve_url("abs://acct@cont/p/q", &[]).expect("abs url");
    assert_eq!((t.kind, t.bucket.as_str(), t.account.as_deref()), (StoreKind::Azure, "cont", Some("acct")));
    assert_eq!(describe(&t), "abs://acct@cont/p/q");

    let t = resolve_url("abs://cont/p", &[("AZURE_STORAGE_ACCOUNT", "envacct")]).expect("abs env account");
    assert_eq!(t.account.as_deref(), Some("envacct"));
}

#[test]
fn bad_urls_have_clear_errors_without_secrets() {
    let cases: &[(&str, &str)] = &[
        ("relative/dir", "relative paths are not accepted"),
        ("sftp://host/p", "unsupported scheme \"sftp\""),
        ("s3:///prefix", "missing bucket"),
        ("s3://b/p?forcePathStyle=maybe", "not a boolean"),
        ("file://remote/p", "file URL has host"),
        ("s3://AKIAEXAMPLE:SECRETXYZ@bkt/p", "credentials in the URL"),
        ("abs://acct:KEYSECRET@cont/p", "credentials in the URL"),
        ("abs:///p", "missing container"),
    ];
    for (url, want) in cases {
        let err = match resolve_url(url, &[]) {
            Ok(_) => panic!("{url} should fail"),
            Err(e) => e,
        };
        assert!(matches!(err, Error::InvalidUrl { .. }), "{url}: {err:?}");
        let (shown, debug) = (err.to_string(), format!("{err:?}"));
        assert!(shown.contains(want), "{url}: {shown}");
        for secret in ["SECRETXYZ", "KEYSECRET"] {
            assert!(!shown.contains(secret) && !debug.contains(secret), "{url}: leaked in {debug}");
        }
    }
    // The abs account name is not a secret and stays visible in the error.
    let err = resolve_url("abs://acct:KEYSECRET@cont/p", &[]).err().map(|e| e.to_string());
    assert!(err.is_some_and(|e| e.contains("acct")));
}

#[test]
fn config_forms_and_conflicts() {
    let cfg = ReplicaConfig {
        kind: Some("s3".into()),
        bucket: Some("bkt".into()),
        path: Some("/db/".into()),
        endpoint: Some("localhost:9000".into()),
        force_path_style: Some(true),
        ..ReplicaConfig::default()
    };
    let t = resolve(&cfg, &env_of(&[])).expect("s3 config");
    assert_eq!((t.prefix.as_str(), t.endpoint.as_deref()), ("db", Some("https://localhost:9000")));

    let file = ReplicaConfig { path: Some("/srv/replica".into()), ..ReplicaConfig::default() };
    let t = resolve(&file, &env_of(&[])).expect("default type is file");
    assert_eq!(t.file_root, Some(PathBuf::from("/srv/replica")));

    let home = ReplicaConfig { path: Some("~/r".into()), ..ReplicaConfig::default() };
    let t = resolve(&home, &env_of(&[("HOME", "/home/u")])).expect("tilde");
    assert_eq!(t.file_root, Some(PathBuf::from("/home/u/r")));

    let bad: Vec<(ReplicaConfig, &str)> = vec![
        (
            ReplicaConfig { url: Some("s3://b/p".into()), path: Some("x".into()), ..ReplicaConfig::default() },
            "cannot be combined",
        ),
        (
            ReplicaConfig { kind: Some("s3".into()), path: Some("x".into()), ..ReplicaConfig::default() },
            "needs a bucket",
        ),
        (ReplicaConfig { kind: Some("sftp".into()), ..ReplicaConfig::default() }, "unsupported replica type"),
        (
            ReplicaConfig { kind: Some("gs".into()), url: Some("s3://b/p".into()), ..ReplicaConfig::default() },
            "does not match",
        ),
        (ReplicaConfig::default(), "needs `path` or `url`"),
        (
            ReplicaConfig { kind: Some("abs".into()), bucket: Some("c".into()), ..ReplicaConfig::default() },
            "needs an account",
        ),
    ];
    for (cfg, want) in bad {
        let err = resolve(&cfg, &env_of(&[])).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains(want), "{cfg:?}: {err}");
    }
}

#[test]
fn credentials_precedence() {
    let s3 = url_cfg("s3://b/p");
    let aws = [("AWS_ACCESS_KEY_ID", "A1"), ("AWS_SECRET_ACCESS_KEY", "S1"), ("AWS_SESSION_TOKEN", "T1")];
    let t = resolve(&s3, &env_of(&aws)).expect("aws env");
    assert_eq!((t.creds.access_key_id.as_deref(), t.creds.session_token.as_deref()), (Some("A1"), Some("T1")));

    let ls = [("LITESTREAM_ACCESS_KEY_ID", "A2"), ("LITESTREAM_SECRET_ACCESS_KEY", "S2"), ("AWS_SESSION_TOKEN", "T1")];
    let t = resolve(&s3, &env_of(&ls)).expect("litestream env");
    assert_eq!((t.creds.access_key_id.as_deref(), t.creds.session_token.as_deref()), (Some("A2"), None));

    let sl = [("SLUICE_ACCESS_KEY_ID", "A3"), ("SLUICE_SECRET_ACCESS_KEY", "S3"), ("AWS_DEFAULT_REGION", "ap-south-1")];
    let t = resolve(&s3, &env_of(&sl)).expect("sluice env");
    assert_eq!((t.creds.secret_access_key.as_deref(), t.region.as_deref()), (Some("S3"), Some("ap-south-1")));

    let explicit = ReplicaConfig { access_key_id: Some("A4".into()), secret_access_key: Some("S4".into()), ..s3 };
    let t = resolve(&explicit, &env_of(&aws)).expect("explicit");
    assert_eq!(t.creds.access_key_id.as_deref(), Some("A4"));

    let abs = url_cfg("abs://acct@c/p");
    let t =
        resolve(&abs, &env_of(&[("LITESTREAM_AZURE_ACCOUNT_KEY", "K1"), ("AZURE_STORAGE_KEY", "K2")])).expect("abs");
    assert_eq!(t.creds.account_key.as_deref(), Some("K1"));
    let t = resolve(&url_cfg("gs://b/p"), &env_of(&[("GOOGLE_APPLICATION_CREDENTIALS", "/k.json")])).expect("gs");
    assert_eq!(t.creds.gcs_credentials_path.as_deref(), Some("/k.json"));
}

#[test]
fn secrets_never_in_description_or_debug() {
    let cfg = ReplicaConfig {
        url: Some("s3://bkt/p?endpoint=http://127.0.0.1:1".into()),
        access_key_id: Some("AKIASECRETID".into()),
        secret_access_key: Some("VERYSECRETKEY".into()),
        ..ReplicaConfig::default()
    };
    let client = ReplicaClient::open_with_env(&cfg, &env_of(&[])).expect("builds");
    let shown = format!("{} {client:?} {cfg:?}", client.description());
    for secret in ["AKIASECRETID", "VERYSECRETKEY"] {
        assert!(!shown.contains(secret), "leaked: {shown}");
    }
    let abs = ReplicaConfig {
        url: Some("abs://acct@c/p".into()),
        sas_token: Some("sv=1&sig=SASSECRET".into()),
        ..ReplicaConfig::default()
    };
    let client = ReplicaClient::open_with_env(&abs, &env_of(&[])).expect("abs builds");
    let shown = format!("{} {client:?} {abs:?}", client.description());
    assert!(!shown.contains("SASSECRET"), "leaked: {shown}");
}

#[test]
fn every_backend_builds_with_process_env() {
    // AWS_CA_BUNDLE is set on CI machines; it must not break an http:// endpoint.
    for url in [
        "s3://bkt/p?endpoint=http://127.0.0.1:1&forcePathStyle=true",
        "s3://bkt/p?endpoint=https://minio.local:9000&forcePathStyle=false",
        "s3://bkt/p?region=eu-central-1",
        "gs://bkt/p",
        "abs://acct@cont/p",
        "file:///tmp/sluice-never-created/x",
    ] {
        let client = ReplicaClient::from_url(url).unwrap_or_else(|e| panic!("{url}: {e}"));
        assert!(!client.description().is_empty());
    }
}

#[test]
fn gcs_emulator_from_storage_emulator_host() {
    // Go's GCS client (Litestream's) reads the same variable: host:port means http.
    let t = resolve_url("gs://gbkt/db", &[("STORAGE_EMULATOR_HOST", "127.0.0.1:4443")]).expect("gs emulator");
    assert!(t.gcs_emulator);
    assert_eq!(t.endpoint.as_deref(), Some("http://127.0.0.1:4443"));
    assert_eq!(describe(&t), "gs://gbkt/db (STORAGE_EMULATOR_HOST=http://127.0.0.1:4443)");

    let env = [("STORAGE_EMULATOR_HOST", "https://gcs.local:8443/"), ("GOOGLE_APPLICATION_CREDENTIALS", "/k.json")];
    let t = resolve_url("gs://gbkt/db", &env).expect("scheme kept, slash trimmed");
    assert_eq!(t.endpoint.as_deref(), Some("https://gcs.local:8443"));
    assert_eq!(t.creds.gcs_credentials_path, None, "the emulator is never sent credentials");

    let t = resolve_url("gs://gbkt/db", &[]).expect("plain gs");
    assert!(!t.gcs_emulator);
    assert_eq!(t.endpoint, None);

    // Litestream ignores `endpoint` for gs; so does Sluice (with a warning), rather than
    // sending real credentials to a host the user did not mean for GCS.
    let cfg = ReplicaConfig {
        kind: Some("gs".into()),
        bucket: Some("gbkt".into()),
        endpoint: Some("http://127.0.0.1:1".into()),
        ..ReplicaConfig::default()
    };
    let t = resolve(&cfg, &env_of(&[])).expect("gs with endpoint key");
    assert_eq!((t.endpoint.as_deref(), t.gcs_emulator), (None, false));
}

#[test]
fn abs_endpoint_from_config_or_url() {
    let t = resolve_url(
        "abs://devstoreaccount1@cont/db?endpoint=http://127.0.0.1:10000/devstoreaccount1/",
        &[("AZURE_STORAGE_KEY", "a2V5")],
    )
    .expect("abs url endpoint");
    assert_eq!(t.endpoint.as_deref(), Some("http://127.0.0.1:10000/devstoreaccount1"));
    assert_eq!(describe(&t), "abs://devstoreaccount1@cont/db?endpoint=http://127.0.0.1:10000/devstoreaccount1");

    // Litestream's `endpoint` key (the only form Litestream 0.5.17 has) wins over the URL.
    let cfg = ReplicaConfig {
        url: Some("abs://acct@cont/db?endpoint=http://url-host:1/acct".into()),
        endpoint: Some("azurite.local:10000/acct".into()),
        ..ReplicaConfig::default()
    };
    let t = resolve(&cfg, &env_of(&[])).expect("abs config endpoint");
    assert_eq!(t.endpoint.as_deref(), Some("https://azurite.local:10000/acct"));

    let t = resolve_url("abs://acct@cont/db", &[]).expect("plain abs");
    assert_eq!(t.endpoint, None);
}

#[test]
fn emulator_targets_build() {
    let gs = ReplicaClient::open_with_env(&url_cfg("gs://b/p"), &env_of(&[("STORAGE_EMULATOR_HOST", "127.0.0.1:1")]))
        .expect("gs emulator builds");
    assert!(gs.description().contains("STORAGE_EMULATOR_HOST"), "{}", gs.description());
    let abs = ReplicaConfig {
        url: Some("abs://devstoreaccount1@c/p?endpoint=http://127.0.0.1:1/devstoreaccount1".into()),
        account_key: Some("a2V5".into()),
        ..ReplicaConfig::default()
    };
    ReplicaClient::open_with_env(&abs, &env_of(&[])).expect("abs with http endpoint builds");
}
