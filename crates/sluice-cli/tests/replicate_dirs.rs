//! Many databases per daemon: `dir:` discovery (nested folders, `watch` adding and removing
//! databases at run time), and the control socket (`register`, `unregister`, `list`, `info`,
//! `sync --wait`). Every database must restore equal to its source with `sluice restore` and
//! with the real `litestream restore`.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Daemon, create_wal_db, ok, restore, run, sluice, text, write_rows};
use rusqlite::Connection;
use sluice_testkit::hash::logical_sha256;
use sluice_testkit::process::wait_until;

/// Safety net for one CLI run (not a timing assertion); used by `common::run`.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);
/// Upper bound for the daemon to notice something (not an expectation).
const NOTICE: Duration = Duration::from_secs(60);

/// The daemon's databases per `sluice list --json`.
fn listed(socket: &Path) -> Vec<PathBuf> {
    let out = run(sluice().args(["list", "--json", "--socket"]).arg(socket));
    if !out.status.success() {
        return Vec::new();
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["databases"].as_array().unwrap().iter().map(|d| PathBuf::from(d["path"].as_str().unwrap())).collect()
}

/// The replica URL `dir:` derives for `db` (base + path relative to the directory).
fn replica_of(base: &Path, dir: &Path, db: &Path) -> String {
    format!("file://{}", base.join(db.strip_prefix(dir).unwrap()).display())
}

#[test]
fn a_watched_directory_of_fifty_databases_replicates_each_one_including_those_created_at_run_time() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let backups = tmp.path().join("backups");
    let socket = tmp.path().join("ctl.sock");
    let folders = ["", "tenants/a", "tenants/b", "tenants/a/deep/er"];
    let path_of = |i: usize| data.join(folders[i % folders.len()]).join(format!("t{i:02}.db"));
    let mut conns: Vec<Option<Connection>> = (0..30).map(|i| Some(create_wal_db(&path_of(i), i as u64))).collect();
    // Not databases to the pattern or by content: never replicated.
    std::fs::write(data.join("notes.txt"), b"hello").unwrap();
    std::fs::write(data.join("fake.db"), b"this is not a SQLite file, only text long enough to tell").unwrap();
    let config = tmp.path().join("litestream.yml");
    std::fs::write(
        &config,
        format!(
            "socket:\n  enabled: true\n  path: {}\ndbs:\n  - dir: {}\n    pattern: '*.db'\n    recursive: true\n    \
             watch: true\n    replica:\n      url: file://{}\n      sync-interval: 100ms\n",
            socket.display(),
            data.display(),
            backups.display()
        ),
    )
    .unwrap();
    let mut daemon = Daemon::start(&config, &[], &tmp.path().join("daemon.log"));
    assert!(
        wait_until(NOTICE, || listed(&socket).len() == 30),
        "initial scan: {:?}\n{}",
        listed(&socket),
        daemon.log_text()
    );

    // At run time: 20 new databases (some in new folders), 5 deleted, writes everywhere.
    for i in 30..50 {
        conns.push(Some(create_wal_db(&path_of(i), i as u64)));
    }
    let deleted = [1usize, 7, 12, 33, 40];
    for &i in &deleted {
        conns[i] = None;
        for suffix in ["", "-wal", "-shm"] {
            let mut p = path_of(i).into_os_string();
            p.push(suffix);
            let _ = std::fs::remove_file(p);
        }
    }
    for (i, c) in conns.iter().enumerate() {
        if let Some(c) = c {
            write_rows(c, 1000 + i as u64, 3);
        }
    }
    let live: Vec<PathBuf> = (0..50).filter(|i| !deleted.contains(i)).map(path_of).collect();
    assert!(
        wait_until(NOTICE, || {
            let mut l = listed(&socket);
            l.sort();
            let mut want = live.clone();
            want.sort();
            l == want
        }),
        "after creating and deleting: {:?}\n{}",
        listed(&socket),
        daemon.log_text()
    );
    // Each one synced through the socket, waiting for its upload.
    for p in &live {
        let out = run(sluice().args(["sync", "--wait", "--socket"]).arg(&socket).arg(p));
        let said = ok(&out, "sluice sync --wait");
        assert!(said.contains("synced") && said.contains("TXID"), "{said}");
    }
    let info = ok(&run(sluice().args(["info", "--json", "--socket"]).arg(&socket)), "sluice info");
    let info: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert_eq!(info["database_count"], live.len());
    daemon.stop_ok();
    drop(conns);

    let out = tmp.path().join("restored");
    std::fs::create_dir_all(&out).unwrap();
    for (n, p) in live.iter().enumerate() {
        let url = replica_of(&backups, &data, p);
        for tool in ["sluice", "litestream"] {
            let dest = out.join(format!("{tool}-{n}.db"));
            restore(tool, &url, &dest, None);
            assert_eq!(logical_sha256(&dest), logical_sha256(p), "{tool} restore of {}", p.display());
        }
    }
    assert!(!backups.join("notes.txt").exists() && !backups.join("fake.db").exists());
}

#[test]
fn the_control_socket_registers_and_unregisters_databases_at_run_time() {
    let tmp = tempfile::tempdir().unwrap();
    let socket = tmp.path().join("run/ctl.sock");
    let fixed = tmp.path().join("fixed.db");
    let extra = tmp.path().join("extra.db");
    let (c1, c2) = (create_wal_db(&fixed, 1), create_wal_db(&extra, 2));
    let config = tmp.path().join("litestream.yml");
    std::fs::write(
        &config,
        format!(
            "socket:\n  enabled: true\n  path: {}\n  permissions: 0600\ndbs:\n  - path: {}\n    replica:\n      \
             url: file://{}\n",
            socket.display(),
            fixed.display(),
            tmp.path().join("r-fixed").display()
        ),
    )
    .unwrap();
    let mut daemon = Daemon::start(&config, &[], &tmp.path().join("daemon.log"));
    assert!(wait_until(NOTICE, || listed(&socket).len() == 1), "{}", daemon.log_text());
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777, 0o600);

    let extra_url = format!("file://{}", tmp.path().join("r-extra").display());
    let reg = run(sluice().args(["register", "--replica", &extra_url, "--socket"]).arg(&socket).arg(&extra));
    assert!(ok(&reg, "sluice register").contains("registered"));
    // Registering twice is harmless.
    let again = run(sluice().args(["register", "--replica", &extra_url, "--socket"]).arg(&socket).arg(&extra));
    assert!(ok(&again, "sluice register again").contains("already registered"));
    write_rows(&c2, 20, 10);
    // `--config` finds the socket the same way the daemon does.
    ok(&run(sluice().args(["sync", "--wait", "--config"]).arg(&config).arg(&extra)), "sluice sync --wait");
    let r = tmp.path().join("extra-restored.db");
    restore("sluice", &extra_url, &r, None);
    assert_eq!(logical_sha256(&r), logical_sha256(&extra));

    // Unregister returns after the last sync: everything committed before it is in the replica.
    write_rows(&c2, 21, 10);
    let un = run(sluice().args(["unregister", "--socket"]).arg(&socket).arg(&extra));
    assert!(ok(&un, "sluice unregister").contains("unregistered"));
    assert_eq!(listed(&socket), vec![fixed.clone()]);
    let r2 = tmp.path().join("extra-restored-2.db");
    restore("litestream", &extra_url, &r2, None);
    assert_eq!(logical_sha256(&r2), logical_sha256(&extra));
    // Unregistering again is harmless, as in Litestream.
    let missing = run(sluice().args(["unregister", "--socket"]).arg(&socket).arg(&extra));
    assert!(ok(&missing, "sluice unregister again").contains("already unregistered"));
    // Errors name what failed.
    let nowhere = run(sluice().args(["list", "--socket"]).arg(tmp.path().join("nope.sock")));
    assert!(!nowhere.status.success());
    assert!(text(&nowhere.stderr).contains("cannot connect to the control socket"), "{}", text(&nowhere.stderr));
    write_rows(&c1, 30, 5);
    daemon.stop_ok();
    let r3 = tmp.path().join("fixed-restored.db");
    restore("sluice", &format!("file://{}", tmp.path().join("r-fixed").display()), &r3, None);
    assert_eq!(logical_sha256(&r3), logical_sha256(&fixed));
    assert!(!socket.exists(), "the socket file is removed at exit");
}
