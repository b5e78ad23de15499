//! Parser tests over whole documents (unit tests of the pieces live beside them).

mod fixtures;
mod policy;

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::{Config, Error, LogFormat};

const HOME: &str = "/home/sam";

/// A fixed environment: no test depends on (or changes) the real one.
fn env(name: &str) -> Option<String> {
    match name {
        "HOME" => Some(HOME.into()),
        "BUCKET" => Some("prod-backups".into()),
        "AWS_KEY" => Some("AKIAEXAMPLE".into()),
        "DATA" => Some("/srv/data".into()),
        _ => None,
    }
}

fn parse(text: &str) -> Config {
    Config::parse_with_env(text, true, &env).unwrap_or_else(|e| panic!("parse failed: {e}\n{text}"))
}

fn parse_err(text: &str) -> Error {
    match Config::parse_with_env(text, true, &env) {
        Ok(cfg) => panic!("expected an error, got {cfg:?}\n{text}"),
        Err(e) => e,
    }
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

const FULL: &str = r#"
# Global replica settings: apply to every replica unless overridden.
access-key-id: ${AWS_KEY}
secret-access-key: s3cr3t
region: eu-west-1

addr: ":9090"
exec: "myapp serve --port 8080"
logging:
  level: debug
  type: json
  stderr: true
levels:
  - interval: 1m
  - interval: 10m
snapshot:
  interval: 12h
  retention: 72h
l0-retention: 10m
l0-retention-check-interval: 30s
retention:
  enabled: false
shutdown-sync-timeout: 10s
shutdown-sync-interval: 250ms

dbs:
  # Field style: type + bucket + endpoint.
  - path: $DATA/app.db
    meta-path: /var/lib/sluice/app-meta
    monitor-interval: 500ms
    checkpoint-interval: 2m
    busy-timeout: 5s
    min-checkpoint-page-count: 2000
    truncate-page-n: 200000
    max-sync-wal-bytes: 32MB
    restore-if-db-not-exists: true
    replica:
      type: s3
      bucket: ${BUCKET}
      path: app
      endpoint: http://minio:9000
      force-path-style: true
      skip-verify: true
      sync-interval: 10s
      max-sync-ltx-files: 64
      auto-recover: true
      part-size: 8MiB
      concurrency: 4

  # URL style, overriding one global setting.
  - path: sqlite:///srv/data/other.db
    replica:
      url: s3://other-bucket/other?endpoint=s3.example.com
      region: us-east-1
      secret-access-key: other-secret
"#;

#[test]
fn full_litestream_config_parses() {
    let cfg = parse(FULL);
    assert!(cfg.warnings.is_empty(), "{:?}", cfg.warnings);
    assert_eq!(cfg.addr.as_deref(), Some(":9090"));
    assert_eq!(cfg.exec.as_deref(), Some("myapp serve --port 8080"));
    assert_eq!(cfg.logging.level, "debug");
    assert_eq!(cfg.logging.format, LogFormat::Json);
    assert!(cfg.logging.stderr);
    assert_eq!(cfg.levels, vec![secs(60), secs(600)]);
    assert_eq!((cfg.snapshot_interval, cfg.snapshot_retention), (secs(12 * 3600), secs(72 * 3600)));
    assert_eq!((cfg.l0_retention, cfg.l0_retention_check_interval), (secs(600), secs(30)));
    assert!(!cfg.retention_enabled);
    assert_eq!((cfg.shutdown_sync_timeout, cfg.shutdown_sync_interval), (secs(10), Duration::from_millis(250)));

    let app = &cfg.dbs[0];
    assert_eq!(app.path, PathBuf::from("/srv/data/app.db"));
    assert_eq!(app.meta_path.as_deref(), Some(Path::new("/var/lib/sluice/app-meta")));
    assert_eq!(app.meta_dir(), PathBuf::from("/var/lib/sluice/app-meta"));
    assert_eq!(app.monitor_interval, Duration::from_millis(500));
    assert_eq!((app.checkpoint_interval, app.busy_timeout), (secs(120), secs(5)));
    assert_eq!((app.min_checkpoint_page_count, app.truncate_page_n), (2000, 200_000));
    assert_eq!(app.max_sync_wal_bytes, 32_000_000);
    assert!(app.restore_if_db_not_exists);
    let r = &app.replica;
    assert_eq!((r.sync_interval, r.max_sync_ltx_files, r.auto_recover), (secs(10), 64, true));
    assert_eq!((r.part_size, r.concurrency), (Some(8 << 20), Some(4)));
    let s = &r.storage;
    assert_eq!(s.kind.as_deref(), Some("s3"));
    assert_eq!(s.bucket.as_deref(), Some("prod-backups"));
    assert_eq!(s.path.as_deref(), Some("app"));
    assert_eq!(s.endpoint.as_deref(), Some("http://minio:9000"));
    assert_eq!((s.force_path_style, s.skip_verify), (Some(true), true));
    assert_eq!(s.region.as_deref(), Some("eu-west-1"));
    assert_eq!(s.access_key_id.as_deref(), Some("AKIAEXAMPLE"));
    assert_eq!(s.secret_access_key.as_deref(), Some("s3cr3t"));
    assert_eq!(s.url, None);

    let other = &cfg.dbs[1];
    assert_eq!(other.path, PathBuf::from("/srv/data/other.db"));
    assert_eq!(other.meta_dir(), PathBuf::from("/srv/data/.other.db-litestream"));
    let s = &other.replica.storage;
    assert_eq!(s.url.as_deref(), Some("s3://other-bucket/other?endpoint=s3.example.com"));
    assert_eq!(s.region.as_deref(), Some("us-east-1"));
    assert_eq!(s.access_key_id.as_deref(), Some("AKIAEXAMPLE"));
    assert_eq!(s.secret_access_key.as_deref(), Some("other-secret"));
    assert_eq!(s.bucket, None);
    assert_eq!(other.replica.sync_interval, secs(1));

    assert_eq!(cfg.db(Path::new("/srv/data/other.db")).map(|d| &d.path), Some(&other.path));
    assert_eq!(cfg.db(Path::new("/srv/data/../data/app.db")).map(|d| &d.path), Some(&app.path));
    assert!(cfg.db(Path::new("/srv/data/missing.db")).is_none());
}

#[test]
fn defaults() {
    let cfg = parse("dbs:\n  - path: /db.sqlite\n    replica:\n      path: /backup\n");
    let d = Config::default();
    assert_eq!(cfg.levels, vec![secs(30), secs(300), secs(3600)]);
    assert_eq!((cfg.snapshot_interval, cfg.snapshot_retention), (secs(86_400), secs(86_400)));
    assert_eq!((cfg.l0_retention, cfg.l0_retention_check_interval), (secs(300), secs(15)));
    assert!(cfg.retention_enabled);
    assert_eq!((cfg.addr.clone(), cfg.exec.clone()), (None, None));
    assert_eq!((cfg.logging.level.as_str(), cfg.logging.format), ("info", LogFormat::Text));
    assert_eq!((cfg.shutdown_sync_timeout, cfg.shutdown_sync_interval), (secs(30), Duration::from_millis(500)));
    assert_eq!(Config { dbs: Vec::new(), ..cfg.clone() }, d);

    let db = &cfg.dbs[0];
    assert_eq!(db.meta_path, None);
    assert_eq!(db.meta_dir(), PathBuf::from("/.db.sqlite-litestream"));
    assert_eq!((db.monitor_interval, db.checkpoint_interval, db.busy_timeout), (secs(1), secs(60), secs(1)));
    assert_eq!((db.min_checkpoint_page_count, db.truncate_page_n), (1000, 121_359));
    assert_eq!(db.max_sync_wal_bytes, 64 << 20);
    assert!(!db.restore_if_db_not_exists);
    let r = &db.replica;
    assert_eq!((r.sync_interval, r.max_sync_ltx_files, r.auto_recover), (secs(1), 256, false));
    assert_eq!((r.validation_interval, r.part_size, r.concurrency), (None, None, None));
    assert_eq!(r.storage.path.as_deref(), Some("/backup"));
    assert_eq!(r.storage.kind, None);
}

#[test]
fn empty_document_and_empty_sections_use_defaults() {
    for text in ["", "---\n", "snapshot:\nlogging:\nlevels:\ndbs:\n"] {
        let cfg = parse(text);
        assert_eq!(cfg, Config::default(), "{text:?}");
    }
    assert_eq!(parse("levels: []\n").levels, Vec::<Duration>::new());
    assert_eq!(parse("l0-retention: 0\n").l0_retention, Duration::ZERO);
}

#[test]
fn env_expansion() {
    let text = "dbs:\n  - path: ${DATA}/a.db\n    replica:\n      url: s3://$BUCKET/a${UNSET}\n";
    let cfg = parse(text);
    assert_eq!(cfg.dbs[0].path, PathBuf::from("/srv/data/a.db"));
    assert_eq!(cfg.dbs[0].replica.storage.url.as_deref(), Some("s3://prod-backups/a"));

    let raw = Config::parse_with_env(text, false, &env).expect("parse");
    assert_eq!(raw.dbs[0].replica.storage.url.as_deref(), Some("s3://$BUCKET/a${UNSET}"));

    let escaped =
        parse("dbs:\n  - path: /a.db\n    replica:\n      url: s3://b/a\n      secret-access-key: pa$$word\n");
    assert_eq!(escaped.dbs[0].replica.storage.secret_access_key.as_deref(), Some("pa$word"));
}

#[test]
fn inline_settings_are_inherited_unless_overridden() {
    let cfg = parse(
        r#"
bucket: shared
endpoint: https://s3.example.com
force-path-style: true
skip-verify: true
sync-interval: 5s
account-name: acct
dbs:
  - path: /a.db
    replica:
      type: s3
      path: a
  - path: /b.db
    replica:
      type: s3
      bucket: own
      path: b
      endpoint: https://other.example.com
      force-path-style: false
      sync-interval: 1s
  - path: /c.db
    replica:
      url: s3://from-url/c
"#,
    );
    let [a, b, c] = &cfg.dbs[..] else { panic!("3 dbs") };
    let sa = &a.replica.storage;
    assert_eq!((sa.bucket.as_deref(), sa.endpoint.as_deref()), (Some("shared"), Some("https://s3.example.com")));
    assert_eq!((sa.force_path_style, sa.skip_verify, sa.account_name.as_deref()), (Some(true), true, Some("acct")));
    assert_eq!(a.replica.sync_interval, secs(5));
    let sb = &b.replica.storage;
    assert_eq!((sb.bucket.as_deref(), sb.endpoint.as_deref()), (Some("own"), Some("https://other.example.com")));
    assert_eq!((sb.force_path_style, sb.skip_verify), (Some(false), true));
    assert_eq!(b.replica.sync_interval, secs(1));
    // A URL names its own bucket; the global one is not forced on it.
    assert_eq!(c.replica.storage.bucket, None);
    assert_eq!(c.replica.storage.endpoint.as_deref(), Some("https://s3.example.com"));
}

#[test]
fn merge_keys_share_replica_settings() {
    let cfg = parse(
        "dbs:\n  - path: /a.db\n    replica: &r\n      type: s3\n      bucket: bkt\n      path: a\n  \
         - path: /b.db\n    replica:\n      <<: *r\n      path: b\n",
    );
    assert_eq!(cfg.dbs[1].replica.storage.bucket.as_deref(), Some("bkt"));
    assert_eq!(cfg.dbs[1].replica.storage.path.as_deref(), Some("b"));
}

#[test]
fn path_normalisation() {
    let cfg = parse(
        "dbs:\n  - path: ~/app.db\n    replica: {url: 'file:///b1'}\n  \
         - path: sqlite3:///srv/./x/../b.db\n    meta-path: ~/meta\n    replica: {url: 'file:///b2'}\n  \
         - path: rel/c.db\n    replica: {url: 'file:///b3'}\n",
    );
    assert_eq!(cfg.dbs[0].path, PathBuf::from("/home/sam/app.db"));
    assert_eq!(cfg.dbs[1].path, PathBuf::from("/srv/b.db"));
    assert_eq!(cfg.dbs[1].meta_path.as_deref(), Some(Path::new("/home/sam/meta")));
    let cwd = std::env::current_dir().expect("cwd");
    assert_eq!(cfg.dbs[2].path, cwd.join("rel/c.db"));
    assert!(cfg.db(Path::new("rel/c.db")).is_some());
}

#[test]
fn config_db_matches_through_symlinks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let real = dir.path().join("real");
    std::fs::create_dir(&real).expect("mkdir");
    std::fs::write(real.join("app.db"), b"").expect("write");
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&real, &link).expect("symlink");
    let text = format!("dbs:\n  - path: {}/app.db\n    replica:\n      url: file:///backup\n", link.display());
    let cfg = parse(&text);
    assert!(cfg.db(&real.join("app.db")).is_some());
    assert!(cfg.db(&link.join("app.db")).is_some());
}

#[test]
fn log_level_from_environment() {
    let text = "logging:\n  level: debug\n";
    let with = |vars: &'static [(&'static str, &'static str)]| {
        let lookup = move |name: &str| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string());
        Config::parse_with_env(text, true, &lookup).expect("parse")
    };
    assert_eq!(with(&[]).logging.level, "debug");
    assert_eq!(with(&[("LOG_LEVEL", "WARN")]).logging.level, "warn");
    assert_eq!(with(&[("LOG_LEVEL", "warn"), ("LITESTREAM_LOG_LEVEL", "error")]).logging.level, "error");
    assert_eq!(with(&[("LITESTREAM_LOG_LEVEL", "error"), ("SLUICE_LOG_LEVEL", "trace")]).logging.level, "trace");
    let odd = with(&[("LOG_LEVEL", "loud")]);
    assert_eq!(odd.logging.level, "info");
    assert_eq!(odd.warnings, vec!["$LOG_LEVEL: unknown log level \"loud\"; using info".to_string()]);
}

#[test]
fn load_reports_missing_and_reads_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("nope.yml");
    let err = Config::load(Some(&missing), false).expect_err("missing");
    assert!(err.is_not_found(), "{err}");
    assert!(err.to_string().contains("nope.yml"));

    let file = dir.path().join("sluice.yml");
    std::fs::write(&file, "addr: ':9090'\n").expect("write");
    assert_eq!(Config::load(Some(&file), true).expect("load").addr.as_deref(), Some(":9090"));
}

#[test]
fn validation_interval_top_level_and_per_replica() {
    // Off by default.
    let cfg = parse("dbs:\n  - path: /a.db\n    replica: {path: /b}\n");
    assert_eq!((cfg.validation_interval, cfg.dbs[0].replica.validation_interval), (None, None));
    // `validation.interval` applies to every replica; a replica's own `validation-interval`
    // wins, and 0 turns it off for that replica only.
    let cfg = parse(
        "validation:\n  interval: 1h\ndbs:\n  - path: /a.db\n    replica: {path: /a}\n  \
         - path: /b.db\n    replica: {path: /b, validation-interval: 10m}\n  \
         - path: /c.db\n    replica: {path: /c, validation-interval: 0s}\n  \
         - dir: /d\n    pattern: '*.db'\n    replica: {path: /d}\n",
    );
    assert!(cfg.warnings.is_empty(), "{:?}", cfg.warnings);
    assert_eq!(cfg.validation_interval, Some(secs(3600)));
    let got: Vec<_> = cfg.dbs.iter().map(|d| d.replica.validation_interval).collect();
    assert_eq!(got, [Some(secs(3600)), Some(secs(600)), None]);
    assert_eq!(cfg.dirs[0].template.replica.validation_interval, Some(secs(3600)));
    // The inline top-level `validation-interval` is a replica default too, and beats
    // `validation.interval`; sub-minute intervals are allowed.
    let cfg =
        parse("validation-interval: 2s\nvalidation:\n  interval: 1h\ndbs:\n  - path: /a.db\n    replica: {path: /a}\n");
    assert_eq!(cfg.dbs[0].replica.validation_interval, Some(secs(2)));
    let cfg = parse("validation:\n  interval: 500ms\ndbs:\n  - path: /a.db\n    replica: {path: /a}\n");
    assert_eq!(cfg.dbs[0].replica.validation_interval, Some(Duration::from_millis(500)));
}
