//! Litestream's informational commands: `version`, and `databases` (the config's databases
//! and their replicas, credentials never shown; a missing config is an error naming it).

mod common;

use std::time::Duration;

use common::{ok, run, sluice, text};

/// Safety net for one CLI run (not a timing assertion); used by `common::run`.
const RUN_TIMEOUT: Duration = Duration::from_secs(30);

#[test]
fn version_prints_the_package_version() {
    let out = ok(&run(sluice().arg("version")), "sluice version");
    assert_eq!(out.trim(), format!("sluice v{}", env!("CARGO_PKG_VERSION")));
}

#[test]
fn databases_lists_the_config_without_credentials() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("litestream.yml");
    let replica = tmp.path().join("replica");
    std::fs::write(
        &config,
        format!(
            "dbs:\n  - path: /var/lib/app.db\n    replica:\n      url: file://{}\n  - path: /var/lib/other.db\n    \
             replica:\n      type: s3\n      bucket: b2\n      path: other\n      region: eu-west-1\n      \
             access-key-id: AKIAEXAMPLEKEY\n      secret-access-key: s3cr3t-value\n",
            replica.display()
        ),
    )
    .unwrap();
    // Litestream's single-dash spelling works too.
    let out = ok(&run(sluice().arg("databases").arg("-config").arg(&config)), "sluice databases");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(lines[0].starts_with("path") && lines[0].ends_with("replica"), "{out}");
    assert!(lines[1].starts_with("/var/lib/app.db") && lines[1].ends_with(&format!("file://{}", replica.display())));
    assert!(lines[2].starts_with("/var/lib/other.db") && lines[2].contains("s3://b2/other"), "{out}");
    assert!(!out.contains("s3cr3t") && !out.contains("AKIAEXAMPLEKEY"), "credentials are never printed: {out}");

    let missing = tmp.path().join("missing.yml");
    let r = run(sluice().arg("databases").arg("--config").arg(&missing));
    assert!(!r.status.success());
    let err = text(&r.stderr);
    assert!(err.contains("missing.yml") && err.contains("not found"), "{err}");
}

#[test]
fn ltx_json_lists_every_file_of_a_replica_one_object_per_line() {
    let tmp = tempfile::tempdir().unwrap();
    let replica = sluice_testkit::fixtures::copy_replica_to("basic", tmp.path().join("replica"));
    let names: Vec<(u8, String)> = (0..=9u8)
        .flat_map(|l| {
            std::fs::read_dir(replica.join("ltx").join(l.to_string()))
                .into_iter()
                .flatten()
                .flatten()
                .map(move |e| (l, e.file_name().to_string_lossy().into_owned()))
        })
        .collect();
    let url = format!("file://{}", replica.display());
    let out = ok(&run(sluice().args(["ltx", "--json", &url])), "sluice ltx --json");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), names.len(), "one line per file: {out}");
    for (level, name) in &names {
        let (min, max) = name.trim_end_matches(".ltx").split_once('-').unwrap();
        let want = format!("{{\"level\":{level},\"min_txid\":\"{min}\",\"max_txid\":\"{max}\",\"size\":");
        assert!(lines.iter().any(|l| l.starts_with(&want) && l.ends_with("Z\"}")), "{want} in {out}");
    }
    let l0 = ok(&run(sluice().args(["ltx", "-level", "0", "-json", &url])), "sluice ltx -level 0 -json");
    assert_eq!(l0.lines().count(), names.iter().filter(|(l, _)| *l == 0).count());
    assert!(l0.lines().all(|l| l.starts_with("{\"level\":0,")));
}

/// A config replicating `db` to `replica`, metrics on `port`, with `extra` keys for the db.
fn daemon_config(
    dir: &std::path::Path,
    db: &std::path::Path,
    replica: &std::path::Path,
    port: u16,
    extra: &str,
) -> std::path::PathBuf {
    let config = dir.join("sluice.yml");
    std::fs::write(
        &config,
        format!(
            "addr: 127.0.0.1:{port}\ndbs:\n  - path: {}\n{extra}    replica:\n      url: file://{}\n",
            db.display(),
            replica.display()
        ),
    )
    .unwrap();
    config
}

#[test]
fn restore_if_db_not_exists_restores_a_missing_database_before_replicating() {
    use sluice_testkit::hash;
    let tmp = tempfile::tempdir().unwrap();
    let replica = sluice_testkit::fixtures::copy_replica_to("basic", tmp.path().join("replica"));
    let expected = tmp.path().join("expected.db");
    let url = format!("file://{}", replica.display());
    ok(&run(sluice().args(["restore", "-o"]).arg(&expected).arg(&url)), "sluice restore");

    // The config key (a missing directory is created too), then the flag.
    for (n, (key, flag)) in [("    restore-if-db-not-exists: true\n", None), ("", Some("--restore-if-db-not-exists"))]
        .into_iter()
        .enumerate()
    {
        let db = tmp.path().join(format!("boot-{n}")).join("app.db");
        let port = common::free_port();
        let config = daemon_config(tmp.path(), &db, &replica, port, key);
        let extra: Vec<&str> = flag.into_iter().collect();
        let mut d = common::Daemon::start(&config, &extra, &tmp.path().join(format!("daemon-{n}.log")));
        common::wait_ready(&mut d, port);
        assert!(db.exists(), "the missing database was restored; log:\n{}", d.log_text());
        assert_eq!(hash::integrity_check(&db), "ok");
        assert_eq!(hash::logical_sha256(&db), hash::logical_sha256(&expected), "restored as `sluice restore` does");
        d.stop_ok();
    }

    // An empty replica: nothing to restore; the daemon waits for the database.
    let empty = tmp.path().join("empty-replica");
    std::fs::create_dir_all(&empty).unwrap();
    let db = tmp.path().join("new").join("app.db");
    let port = common::free_port();
    let config = daemon_config(tmp.path(), &db, &empty, port, "    restore-if-db-not-exists: true\n");
    let mut d = common::Daemon::start(&config, &[], &tmp.path().join("daemon-empty.log"));
    let waiting = sluice_testkit::process::wait_until(common::DAEMON_DEADLINE, || {
        d.log_text().contains("waiting for the database")
    });
    assert!(waiting, "the daemon waits for the database; log:\n{}", d.log_text());
    d.assert_running();
    assert!(!db.exists(), "nothing was created");
    assert!(d.log_text().contains("nothing to restore"), "{}", d.log_text());
    d.stop_ok();
}

#[test]
fn replicate_once_uploads_what_the_database_holds_and_exits() {
    use sluice_testkit::hash;
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("app.db");
    let c = rusqlite::Connection::open(&db).unwrap();
    c.execute_batch(
        "PRAGMA journal_mode=WAL; CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT);
         INSERT INTO t (v) SELECT hex(randomblob(100)) FROM (WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 500) SELECT i FROM n);",
    )
    .unwrap();
    let url = format!("file://{}", tmp.path().join("replica").display());
    let out = run(sluice().args(["replicate", "--once"]).arg(&db).arg(&url));
    ok(&out, "sluice replicate --once");
    assert!(text(&out.stderr).contains("replicated once"), "{}", text(&out.stderr));
    // Later commits go up with the next run.
    c.execute("INSERT INTO t (v) VALUES ('after')", []).unwrap();
    ok(&run(sluice().args(["replicate", "--once"]).arg(&db).arg(&url)), "sluice replicate --once, again");
    let restored = tmp.path().join("restored.db");
    ok(&run(sluice().args(["restore", "-o"]).arg(&restored).arg(&url)), "sluice restore");
    assert_eq!(hash::logical_sha256(&restored), hash::logical_sha256(&db));

    let missing = run(sluice().args(["replicate", "--once"]).arg(tmp.path().join("missing.db")).arg(&url));
    assert!(!missing.status.success());
    assert!(text(&missing.stderr).contains("missing.db") && text(&missing.stderr).contains("does not exist"));
}

/// A WAL database at `path` with `rows` rows.
fn small_db(path: &std::path::Path, rows: usize) -> rusqlite::Connection {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let c = rusqlite::Connection::open(path).unwrap();
    c.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v TEXT);").unwrap();
    for i in 0..rows {
        c.execute("INSERT INTO t (v) VALUES (?1)", [format!("row {i} {}", "x".repeat(i % 300))]).unwrap();
    }
    c
}

/// Level and max TXID of every file of a replica, per `sluice ltx --level all --json`.
fn replica_files(url: &str) -> Vec<(u64, String)> {
    let out = ok(&run(sluice().args(["ltx", "--level", "all", "--json", url])), "sluice ltx --json");
    out.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (v["level"].as_u64().unwrap(), v["max_txid"].as_str().unwrap().to_string())
        })
        .collect()
}

#[test]
fn replicate_once_can_force_a_snapshot_and_enforce_retention() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("app.db");
    let c = small_db(&db, 50);
    let url = format!("file://{}", tmp.path().join("replica").display());
    ok(&run(sluice().args(["replicate", "--once"]).arg(&db).arg(&url)), "sluice replicate --once");
    c.execute("INSERT INTO t (v) VALUES ('later')", []).unwrap();
    let out = run(sluice().args(["replicate", "--once", "--force-snapshot", "--enforce-retention"]).arg(&db).arg(&url));
    ok(&out, "sluice replicate --once --force-snapshot --enforce-retention");
    let err = text(&out.stderr);
    assert!(err.contains("snapshot taken") && err.contains("retention enforced"), "{err}");
    let files = replica_files(&url);
    let latest = files.iter().map(|(_, t)| t.clone()).max().unwrap();
    assert!(files.contains(&(9, latest.clone())), "a snapshot at the latest TXID {latest}: {files:?}");
    // Both need --once.
    let bad = run(sluice().args(["replicate", "--force-snapshot"]).arg(&db).arg(&url));
    assert!(!bad.status.success() && text(&bad.stderr).contains("--once"), "{}", text(&bad.stderr));
}

#[test]
fn status_shows_the_local_state_and_reset_removes_it() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("app.db");
    let _c = small_db(&db, 20);
    let port = common::free_port();
    let config = daemon_config(tmp.path(), &db, &tmp.path().join("replica"), port, "");
    let before = ok(&run(sluice().args(["status", "--config"]).arg(&config)), "sluice status");
    assert!(before.contains("not initialized"), "{before}");
    ok(&run(sluice().args(["replicate", "--once", "--config"]).arg(&config)), "sluice replicate --once");
    let json = ok(&run(sluice().args(["status", "--json", "--config"]).arg(&config).arg(&db)), "sluice status --json");
    let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(v["status"], "ok", "{json}");
    assert_eq!(v["local_txid"].as_str().map(str::len), Some(16), "{json}");

    // A running daemon is never reset under its feet.
    let mut d = common::Daemon::start(&config, &[], &tmp.path().join("daemon.log"));
    let held = sluice_testkit::process::wait_until(common::DAEMON_DEADLINE, || {
        ok(&run(sluice().args(["status", "--config"]).arg(&config)), "status").contains("replicating (pid")
    });
    assert!(
        held,
        "status shows the running daemon; log:
{}",
        d.log_text()
    );
    let refused = run(sluice().args(["reset", "--config"]).arg(&config).arg(&db));
    assert!(!refused.status.success() && text(&refused.stderr).contains("stop it before resetting"));
    d.stop_ok();

    let meta = tmp.path().join(".app.db-litestream");
    let dry = ok(&run(sluice().args(["reset", "--dry-run", "--config"]).arg(&config).arg(&db)), "reset --dry-run");
    assert!(dry.contains("would remove") && meta.join("ltx").exists(), "{dry}");
    ok(&run(sluice().args(["reset", "--config"]).arg(&config).arg(&db)), "sluice reset");
    assert!(!meta.join("ltx").exists());
    let after = ok(&run(sluice().args(["status", "--config"]).arg(&config)), "sluice status");
    assert!(after.contains("not initialized"), "{after}");
    // The next run starts over with a full image, and the replica still restores.
    ok(&run(sluice().args(["replicate", "--once", "--config"]).arg(&config)), "replicate --once after reset");
    let restored = tmp.path().join("restored.db");
    let url = format!("file://{}", tmp.path().join("replica").display());
    ok(&run(sluice().args(["restore", "-o"]).arg(&restored).arg(&url)), "sluice restore");
    use sluice_testkit::hash;
    assert_eq!(hash::logical_sha256(&restored), hash::logical_sha256(&db));
}

#[test]
fn a_litestream_config_using_every_key_of_the_daemon_runs_unchanged() {
    use sluice_testkit::hash;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let dbs = [data.join("a.db"), data.join("nested/b.db"), data.join("nested/deeper/c.db")];
    let conns: Vec<_> = dbs.iter().enumerate().map(|(i, p)| small_db(p, 10 + i)).collect();
    let single = tmp.path().join("single.db");
    let _s = small_db(&single, 5);
    let restored_at_boot = tmp.path().join("boot/restored.db");
    // A replica for `restore-if-db-not-exists` to restore from.
    let boot_url = format!("file://{}", tmp.path().join("boot-replica").display());
    ok(&run(sluice().args(["replicate", "--once"]).arg(&single).arg(&boot_url)), "seed the boot replica");
    let backups = tmp.path().join("backups");
    let config = tmp.path().join("litestream.yml");
    std::fs::write(
        &config,
        format!(
            "addr: 127.0.0.1:{port}\nsocket:\n  enabled: true\n  path: {sock}\n  permissions: 0600\n\
             heartbeat-url: http://127.0.0.1:9/ping\nheartbeat-interval: 5m\nvalidation:\n  interval: 1h\n\
             levels:\n  - interval: 30s\n  - interval: 5m\nsnapshot:\n  interval: 24h\n  retention: 24h\n\
             l0-retention: 5m\nl0-retention-check-interval: 15s\nretention:\n  enabled: true\n\
             shutdown-sync-timeout: 30s\nshutdown-sync-interval: 500ms\nlogging:\n  level: info\n  type: text\n\
             dbs:\n  - dir: {data}\n    pattern: '*.db'\n    recursive: true\n    watch: true\n    meta-dir: {meta}\n    \
             monitor-interval: 1s\n    checkpoint-interval: 1m\n    busy-timeout: 1s\n    \
             min-checkpoint-page-count: 1000\n    truncate-page-n: 121359\n    replica:\n      url: file://{backups}\n      \
             sync-interval: 1s\n      auto-recover: true\n      validation-interval: 1h\n  - path: {boot}\n    \
             restore-if-db-not-exists: true\n    replica:\n      url: {boot_url}\n",
            port = common::free_port(),
            sock = tmp.path().join("ctl.sock").display(),
            data = data.display(),
            meta = tmp.path().join("meta").display(),
            backups = backups.display(),
            boot = restored_at_boot.display(),
        ),
    )
    .unwrap();
    let out = run(sluice().args(["replicate", "--once", "--config"]).arg(&config));
    ok(&out, "sluice replicate --once with every key");
    let err = text(&out.stderr);
    assert!(!err.contains("not supported by Sluice"), "every key is used: {err}");
    assert_eq!(hash::logical_sha256(&restored_at_boot), hash::logical_sha256(&single), "restored at boot");
    drop(conns);
    for p in &dbs {
        let rel = p.strip_prefix(&data).unwrap();
        assert!(tmp.path().join("meta").join(format!("{}-litestream", rel.display())).is_dir(), "meta-dir");
        let url = format!("file://{}", backups.join(rel).display());
        for tool in ["sluice", "litestream"] {
            let dest = tmp.path().join(format!("{tool}-{}", rel.display().to_string().replace('/', "_")));
            common::restore(tool, &url, &dest, None);
            assert_eq!(hash::logical_sha256(&dest), hash::logical_sha256(p), "{tool} restore of {}", p.display());
        }
    }
}
