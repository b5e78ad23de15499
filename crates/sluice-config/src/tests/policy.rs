//! The unknown-key policy and validation errors.

use std::path::Path;

use super::{parse, parse_err};
use crate::Error;

const DB: &str = "dbs:\n  - path: /a.db\n    replica:\n      url: s3://bkt/a\n";

fn unknown_at(text: &str) -> (String, Option<String>) {
    match parse_err(text) {
        Error::UnknownKey { location, suggestion } => (location, suggestion),
        other => panic!("expected UnknownKey, got {other}"),
    }
}

fn invalid_at(text: &str) -> (String, String) {
    match parse_err(text) {
        Error::Invalid { location, reason } => (location, reason),
        other => panic!("expected Invalid, got {other}"),
    }
}

#[test]
fn unknown_keys_are_errors_naming_their_path() {
    let err = parse_err(&format!("{DB}      bukket: x\n"));
    assert_eq!(err.to_string(), "dbs[0].replica.bukket: unknown configuration key (did you mean `bucket`?)");
    assert_eq!(err.location(), Some("dbs[0].replica.bukket"));

    assert_eq!(unknown_at(&format!("{DB}    monitor_interval: 1s\n")).0, "dbs[0].monitor_interval");
    assert_eq!(unknown_at(&format!("frobnicate: 1\n{DB}")), ("frobnicate".into(), None));
    assert_eq!(unknown_at("logging:\n  lvl: debug\n").0, "logging.lvl");
    assert_eq!(unknown_at("snapshot:\n  intervall: 1h\n").0, "snapshot.intervall");
    assert_eq!(unknown_at("levels:\n  - interval: 1m\n  - every: 5m\n").0, "levels[1].every");
    assert_eq!(unknown_at("retention:\n  enable: false\n").0, "retention.enable");
    assert_eq!(
        unknown_at("dbs:\n  - path: /a.db\n    replicas:\n      - url: s3://b/a\n        typo: 1\n").0,
        "dbs[0].replicas[0].typo"
    );
    // Replica-only keys are not valid at the top level, and db keys are not valid in a replica.
    assert_eq!(unknown_at("url: s3://b/a\n").0, "url");
    assert_eq!(unknown_at(&format!("{DB}      monitor-interval: 1s\n")).0, "dbs[0].replica.monitor-interval");
    assert_eq!(unknown_at("1: x\n").0, "1");
}

#[test]
fn unsupported_litestream_keys_are_warnings() {
    let cfg = parse(&format!(
        "mcp-addr: ':3001'\n\
         verify-compaction: true\nsign-payload: true\n{DB}      \
         sse-kms-key-id: abc\n      storage-class: GLACIER\n      require-content-md5: false\n"
    ));
    let want = [
        "mcp-addr",
        "verify-compaction",
        "sign-payload",
        "dbs[0].replica.sse-kms-key-id",
        "dbs[0].replica.storage-class",
        "dbs[0].replica.require-content-md5",
    ];
    assert_eq!(cfg.warnings.len(), want.len(), "{:#?}", cfg.warnings);
    for (warning, key) in cfg.warnings.iter().zip(want) {
        assert_eq!(warning, &format!("{key}: Litestream setting not supported by Sluice yet; ignored"));
    }
    assert_eq!(cfg.dbs.len(), 1);
}

#[test]
fn v03_replica_keys_are_warnings() {
    let cfg = parse(&format!(
        "{DB}      name: main\n      retention: 24h\n      retention-check-interval: 1h\n      snapshot-interval: 4h\n"
    ));
    let keys: Vec<&str> = cfg.warnings.iter().map(|w| w.split(':').next().unwrap_or_default()).collect();
    assert_eq!(
        keys,
        [
            "dbs[0].replica.name",
            "dbs[0].replica.retention",
            "dbs[0].replica.retention-check-interval",
            "dbs[0].replica.snapshot-interval"
        ]
    );
    assert!(cfg.warnings[1].contains("Litestream 0.5 ignores it too"));
}

#[test]
fn directory_entries_derive_each_databases_settings_as_litestream() {
    let cfg = parse(
        "dbs:\n  - dir: /data\n    pattern: '*.db'\n    recursive: true\n    watch: true\n    replica:\n      \
         url: s3://bkt/dir?endpoint=http://h:9000\n  - dir: /other\n    pattern: 't?.sqlite'\n    meta-dir: /meta\n    \
         replica:\n      type: s3\n      bucket: b\n      path: base/\n  - dir: /third\n    pattern: '*'\n    \
         meta-path: /m\n    replica:\n      url: file:///backups\n  - path: /a.db\n    replica:\n      url: s3://bkt/a\n",
    );
    assert!(cfg.warnings.is_empty(), "{:#?}", cfg.warnings);
    assert_eq!(cfg.dbs.len(), 1);
    let [a, b, c] = &cfg.dirs[..] else { panic!("{:#?}", cfg.dirs) };
    assert!(a.recursive && a.watch && !b.recursive && !b.watch);
    assert!(a.matches("x.db") && !a.matches("x.db-wal") && b.matches("t1.sqlite") && !b.matches("t10.sqlite"));
    let db = a.db(Path::new("/data/t/x.db")).expect("inside");
    assert_eq!(db.path, Path::new("/data/t/x.db"));
    assert_eq!(db.replica.storage.url.as_deref(), Some("s3://bkt/dir/t/x.db?endpoint=http://h:9000"));
    assert_eq!(db.meta_dir(), Path::new("/data/t/.x.db-litestream"));
    let db = b.db(Path::new("/other/t1.sqlite")).expect("inside");
    assert_eq!(db.replica.storage.path.as_deref(), Some("base/t1.sqlite"));
    assert_eq!(db.meta_dir(), Path::new("/meta/t1.sqlite-litestream"));
    let db = c.db(Path::new("/third/d/e.db")).expect("inside");
    assert_eq!(db.replica.storage.url.as_deref(), Some("file:///backups/d/e.db"));
    assert_eq!(db.meta_dir(), Path::new("/m/d/.e.db-litestream"));
    assert!(a.db(Path::new("/elsewhere/x.db")).is_none());

    let (loc, reason) = invalid_at("dbs:\n  - path: /a.db\n    dir: /data\n    replica:\n      url: s3://b/a\n");
    assert_eq!((loc.as_str(), reason.as_str()), ("dbs[0]", "cannot specify both `path` and `dir`"));
    let (_, reason) = invalid_at("dbs:\n  - dir: /data\n    replica:\n      url: s3://b/a\n");
    assert!(reason.starts_with("`pattern` is required"), "{reason}");
    let (loc, _) = invalid_at("dbs:\n  - dir: /d\n    pattern: '[x'\n    replica:\n      url: s3://b/a\n");
    assert_eq!(loc, "dbs[0].pattern");
    let (loc, _) = invalid_at("dbs:\n  - path: /a.db\n    watch: true\n    replica:\n      url: s3://b/a\n");
    assert_eq!(loc, "dbs[0].watch");
}

#[test]
fn the_control_socket() {
    let cfg = parse(&format!("socket:\n  enabled: true\n  path: /tmp/s.sock\n  permissions: 0660\n{DB}"));
    let socket = cfg.socket.expect("enabled");
    assert_eq!((socket.path.as_path(), socket.permissions), (Path::new("/tmp/s.sock"), 0o660));
    let cfg = parse(&format!("socket:\n  enabled: true\n{DB}"));
    assert_eq!(cfg.socket.map(|s| (s.path, s.permissions)), Some(("/var/run/litestream.sock".into(), 0o600)));
    assert!(parse(&format!("socket:\n  path: /tmp/s.sock\n{DB}")).socket.is_none());
    assert_eq!(invalid_at(&format!("socket:\n  enabled: true\n  permissions: 0999\n{DB}")).0, "socket.permissions");
}

#[test]
fn age_is_rejected() {
    let (loc, reason) = invalid_at(&format!("{DB}      age:\n        recipients: [age1xyz]\n"));
    assert_eq!(loc, "dbs[0].replica.age");
    assert!(reason.contains("age encryption is not supported"), "{reason}");
    let (loc, _) = invalid_at(&format!("age:\n  identities: [/etc/key.txt]\n{DB}"));
    assert_eq!(loc, "age");
    // An empty block encrypts nothing; Litestream accepts it, so only warn.
    let cfg = parse(&format!("{DB}      age: {{}}\n"));
    assert_eq!(cfg.warnings, ["dbs[0].replica.age: empty age encryption block; ignored"]);
    assert_eq!(unknown_at(&format!("{DB}      age:\n        key: x\n")).0, "dbs[0].replica.age.key");
}

#[test]
fn replica_count_rules() {
    let two = "dbs:\n  - path: /a.db\n    replicas:\n      - url: s3://b/1\n      - url: s3://b/2\n";
    let (loc, reason) = invalid_at(two);
    assert_eq!(loc, "dbs[0] (/a.db)");
    assert!(reason.starts_with("2 replicas configured"), "{reason}");

    let one = parse("dbs:\n  - path: /a.db\n    replicas:\n      - url: s3://b/1\n");
    assert_eq!(one.dbs[0].replica.storage.url.as_deref(), Some("s3://b/1"));
    assert!(one.warnings.is_empty());

    let both = "dbs:\n  - path: /a.db\n    replica: {url: 's3://b/1'}\n    replicas:\n      - url: s3://b/2\n";
    assert_eq!(invalid_at(both).1, "cannot specify both `replica` and `replicas`");
    assert!(invalid_at("dbs:\n  - path: /a.db\n").1.starts_with("no replica configured"));
    assert!(invalid_at("dbs:\n  - path: /a.db\n    replicas: []\n").1.starts_with("no replica configured"));
    assert_eq!(
        invalid_at("dbs:\n  - replica: {url: 's3://b/1'}\n"),
        ("dbs[0]".into(), "`path` (or `dir` with `pattern`) is required".into())
    );
    let dup =
        "dbs:\n  - path: /a.db\n    replica: {url: 's3://b/1'}\n  - path: /x/../a.db\n    replica: {url: 's3://b/2'}\n";
    assert_eq!(invalid_at(dup).0, "dbs[1].path");
}

#[test]
fn bad_values_name_their_key() {
    let cases: &[(&str, &str, &str)] = &[
        ("l0-retention: 5\n", "l0-retention", "missing unit"),
        ("shutdown-sync-interval: 1d\n", "shutdown-sync-interval", "unknown unit"),
        ("shutdown-sync-interval: 0s\n", "shutdown-sync-interval", "greater than 0"),
        ("l0-retention-check-interval: -1s\n", "l0-retention-check-interval", "negative"),
        ("snapshot:\n  interval: soon\n", "snapshot.interval", "invalid duration"),
        ("snapshot:\n  retention: 0\n", "snapshot.retention", "greater than 0"),
        ("levels:\n  - interval: 0s\n", "levels[0].interval", "greater than 0"),
        ("validation:\n  interval: 0s\n", "validation.interval", "greater than 0"),
        ("validation:\n  interval: -1m\n", "validation.interval", "negative"),
        ("levels:\n  - {}\n", "levels[0].interval", "greater than 0"),
        ("retention:\n  enabled: maybe\n", "retention.enabled", "expected true or false"),
        ("logging: verbose\n", "logging", "expected a mapping"),
        ("dbs: /a.db\n", "dbs", "expected a list"),
        ("dbs:\n  - path: [a]\n", "dbs[0].path", "expected a string"),
        (
            "dbs:\n  - path: /a.db\n    busy-timeout: [1s]\n    replica: {url: 's3://b/a'}\n",
            "dbs[0].busy-timeout",
            "expected a duration",
        ),
        (
            "dbs:\n  - path: /a.db\n    min-checkpoint-page-count: -5\n    replica: {url: 's3://b/a'}\n",
            "dbs[0].min-checkpoint-page-count",
            "non-negative integer",
        ),
        (
            "dbs:\n  - path: /a.db\n    max-sync-wal-bytes: 64XB\n    replica: {url: 's3://b/a'}\n",
            "dbs[0].max-sync-wal-bytes",
            "unknown size unit",
        ),
        (
            "dbs:\n  - path: /a.db\n    replica: {url: 's3://b/a', sync-interval: 0s}\n",
            "dbs[0].replica.sync-interval",
            "greater than 0",
        ),
        (
            "dbs:\n  - path: /a.db\n    replica: {url: 's3://b/a', part-size: lots}\n",
            "dbs[0].replica.part-size",
            "unknown size unit",
        ),
        (
            "dbs:\n  - path: /a.db\n    replica: {type: sftp, path: /x}\n",
            "dbs[0].replica.type",
            "sftp replica backend is not supported",
        ),
        (
            "dbs:\n  - path: /a.db\n    replica: {url: 'nats://h/b'}\n",
            "dbs[0].replica.url",
            "nats replica backend is not supported",
        ),
        ("dbs:\n  - path: /a.db\n    replica: {type: ftp, path: /x}\n", "dbs[0].replica.type", "unknown replica type"),
        ("dbs:\n  - path: /a.db\n    replica: {url: 's3://b/a', path: x}\n", "dbs[0].replica", "both `url` and `path`"),
        ("dbs:\n  - path: /a.db\n    replica: {path: 's3://b/a'}\n", "dbs[0].replica.path", "cannot be a URL"),
    ];
    for (text, loc, reason) in cases {
        let (got_loc, got_reason) = invalid_at(text);
        assert_eq!(&got_loc, loc, "{text}");
        assert!(got_reason.contains(reason), "{text}: {got_reason}");
    }
    let nine = format!("levels:\n{}", "  - interval: 1m\n".repeat(9));
    assert_eq!(invalid_at(&nine), ("levels".into(), "9 levels configured, at most 8 are allowed".into()));
    assert!(matches!(parse_err("dbs: [\n"), Error::Yaml { .. }));
}

#[test]
fn sluice_checkpoint_aliases() {
    let cfg = parse(
        "dbs:\n  - path: /a.db\n    checkpoint-page-threshold: 500\n    checkpoint-hard-limit-pages: 9000\n    \
         replica: {url: 's3://b/a'}\n",
    );
    assert_eq!((cfg.dbs[0].min_checkpoint_page_count, cfg.dbs[0].truncate_page_n), (500, 9000));
    let zero = parse("dbs:\n  - path: /a.db\n    truncate-page-n: 0\n    replica: {url: 's3://b/a'}\n");
    assert_eq!(zero.dbs[0].truncate_page_n, 121_359);
    let (loc, reason) = invalid_at(
        "dbs:\n  - path: /a.db\n    truncate-page-n: 10\n    checkpoint-hard-limit-pages: 20\n    replica: {url: 's3://b/a'}\n",
    );
    assert_eq!(loc, "dbs[0].checkpoint-hard-limit-pages");
    assert!(reason.contains("conflicts with `truncate-page-n`"), "{reason}");
}

#[test]
fn yaml_11_booleans_and_quoted_numbers() {
    let cfg = parse(
        "retention:\n  enabled: no\ndbs:\n  - path: /a.db\n    restore-if-db-not-exists: yes\n    \
         min-checkpoint-page-count: '2000'\n    replica: {url: 's3://b/a', force-path-style: on}\n",
    );
    assert!(!cfg.retention_enabled);
    assert!(cfg.dbs[0].restore_if_db_not_exists);
    assert_eq!(cfg.dbs[0].min_checkpoint_page_count, 2000);
    assert_eq!(cfg.dbs[0].replica.storage.force_path_style, Some(true));
}

#[test]
fn per_db_snapshot_must_agree() {
    let db = |i: u8, snap: &str| {
        format!("  - path: /{i}.db\n    snapshot: {{{snap}}}\n    replica: {{url: 's3://b/{i}'}}\n")
    };
    let cfg = parse(&format!("dbs:\n{}{}", db(1, "interval: 6h"), db(2, "interval: 6h")));
    assert_eq!(cfg.snapshot_interval, std::time::Duration::from_secs(6 * 3600));
    let (loc, reason) = invalid_at(&format!("snapshot:\n  interval: 1h\ndbs:\n{}", db(1, "interval: 6h")));
    assert_eq!(loc, "dbs[0].snapshot.interval");
    assert!(reason.contains("6h0m0s differs from 1h0m0s set by snapshot.interval"), "{reason}");
}

#[test]
fn logging_variants() {
    let cfg = parse("logging:\n  level: WARNING\n  type: Pretty\n  source: true\n");
    assert_eq!(cfg.logging.level, "warn");
    assert_eq!(cfg.logging.format, crate::LogFormat::Pretty);
    assert!(cfg.logging.source);
    let odd = parse("logging:\n  type: xml\n");
    assert_eq!(odd.logging.format, crate::LogFormat::Text);
    assert_eq!(odd.warnings, ["logging.type: unknown log type \"xml\"; using text"]);
}

#[test]
fn duplicate_keys_are_yaml_errors() {
    let err = parse_err("addr: ':1'\naddr: ':2'\n");
    assert!(matches!(err, Error::Yaml { .. }), "{err}");
    assert!(err.to_string().contains("duplicate"), "{err}");
}

#[test]
fn lease_ttl_and_heartbeat() {
    use std::time::Duration;
    let d = parse(DB);
    assert_eq!(
        (d.lease_ttl, d.heartbeat_url.as_deref(), d.heartbeat_interval),
        (Duration::from_secs(600), None, Duration::from_secs(300))
    );
    let cfg = parse(&format!("lease-ttl: 30s\nheartbeat-url: http://hc.example/ping\nheartbeat-interval: 2m\n{DB}"));
    assert!(cfg.warnings.is_empty(), "{:?}", cfg.warnings);
    assert_eq!(cfg.lease_ttl, Duration::from_secs(30));
    assert_eq!(cfg.heartbeat_url.as_deref(), Some("http://hc.example/ping"));
    assert_eq!(cfg.heartbeat_interval, Duration::from_secs(120));
    assert_eq!(parse(&format!("heartbeat-url: ''\n{DB}")).heartbeat_url, None);
    for (text, loc, why) in [
        ("lease-ttl: 0s\n", "lease-ttl", "must be at least 2s"),
        ("lease-ttl: 500ms\n", "lease-ttl", "must be at least 2s"),
        ("heartbeat-interval: 30s\n", "heartbeat-interval", "must be at least 1m0s"),
        ("heartbeat-url: hc.example/ping\n", "heartbeat-url", "is not an http:// or https:// URL"),
    ] {
        let (l, reason) = invalid_at(&format!("{text}{DB}"));
        assert_eq!(l, loc, "{text}");
        assert!(reason.contains(why), "{text}: {reason}");
    }
}
