//! A database replaced under a running `sluice replicate` by restoring an older backup over
//! it, every way a user does that:
//!
//! * `cp backup.db app.db` in place (same inode), after a TRUNCATE checkpoint, the WAL left;
//! * the same with `-wal`/`-shm` removed first;
//! * `sluice restore -o app.db.tmp && mv app.db.tmp app.db` (a new inode);
//! * `sqlite3 app.db ".restore backup.db"` (SQLite's backup API, through the WAL).
//!
//! Each time the daemon must notice (and log why), and the replica must stay restorable at
//! every restorable TXID: the latest restores the replaced database's content (with Sluice and with
//! Litestream), every earlier TXID a consistent prior state, and the TXIDs recorded before the
//! replacement exactly what the database held then.
//!
//! Run via `scripts/test -p sluice-cli --test replicate_recovery`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{DAEMON_DEADLINE, Daemon, Setup, checkpoint, force_sync, ok, open_app, restore, run, sluice, sluice_ltx};
use rusqlite::Connection;
use sluice_testkit::hash;
use sluice_testkit::process::wait_until;

/// Safety net for one CLI run (not a timing assertion); used by `common::run`.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, Debug)]
enum Replace {
    CpKeepWal,
    CpRemoveWal,
    RestoreAndMove,
    SqliteRestore,
}

fn write_rows(c: &Connection, tag: &str, n: usize) {
    for i in 0..n {
        c.execute("INSERT INTO t(tag, v) VALUES (?1, randomblob(300 + ?2))", rusqlite::params![tag, i as i64])
            .expect("insert");
    }
    c.execute("UPDATE t SET v = randomblob(200) WHERE id % 7 = 0", []).expect("update");
}

/// `sluice sync` until one succeeds (it fails while a session restarts); its TXID.
#[track_caller]
fn synced(d: &mut Daemon, s: &Setup) -> u64 {
    let ok = wait_until(DAEMON_DEADLINE, || {
        run(sluice().arg("sync").arg("--config").arg(&s.config).arg(&s.db)).status.success()
    });
    d.assert_running();
    assert!(ok, "no forced sync succeeded within {DAEMON_DEADLINE:?}; log:\n{}", d.log_text());
    force_sync(&s.db, &s.config)
}

fn sha_at(s: &Setup, txid: Option<u64>, tag: &str) -> String {
    let out = s.path(&format!("r-{tag}.db"));
    let _ = std::fs::remove_file(&out);
    restore("sluice", &s.url, &out, txid);
    assert_eq!(hash::integrity_check(&out), "ok", "restore {tag} at {txid:?}: integrity_check");
    hash::logical_sha256(&out)
}

fn replace(s: &Setup, how: Replace, app: Connection, backup: &Path, backup_txid: u64) -> Connection {
    match how {
        Replace::CpKeepWal => {
            // The WAL must be empty, or SQLite would lay its frames over the copied file.
            checkpoint(&app, "TRUNCATE").expect("checkpoint");
            drop(app);
            std::fs::copy(backup, &s.db).expect("cp backup over the database");
        }
        Replace::CpRemoveWal => {
            drop(app);
            for side in ["-wal", "-shm"] {
                std::fs::remove_file(s.side(side)).expect("rm side file");
            }
            // Let the daemon look at the files while the WAL is gone (it did so by chance
            // before, and then missed the replacement).
            std::thread::sleep(Duration::from_millis(500));
            std::fs::copy(backup, &s.db).expect("cp backup over the database");
        }
        Replace::RestoreAndMove => {
            drop(app);
            let tmp = s.path("app.db.tmp");
            restore("sluice", &s.url, &tmp, Some(backup_txid));
            std::fs::rename(&tmp, &s.db).expect("mv");
        }
        Replace::SqliteRestore => {
            drop(app);
            let out = run(Command::new("sqlite3").arg(&s.db).arg(format!(".restore {}", backup.display())));
            ok(&out, "sqlite3 .restore");
        }
    }
    open_app(&s.db, Duration::from_secs(5))
}

fn scenario(how: Replace) {
    eprintln!("scenario {how:?}");
    let s = Setup::new(", auto-recover: true");
    let app = open_app(&s.db, Duration::from_secs(5));
    app.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, tag TEXT, v BLOB)").expect("schema");
    write_rows(&app, "first", 40);
    let mut d = Daemon::start(&s.config, &[], &s.path("daemon.log"));
    // TXID → what the database held then.
    let mut states = BTreeMap::new();
    let t1 = synced(&mut d, &s);
    states.insert(t1, hash::logical_sha256(&s.db));
    let backup = s.path("backup.db");
    restore("sluice", &s.url, &backup, Some(t1));
    for round in 0..3 {
        write_rows(&app, &format!("second-{round}"), 30);
        let t = synced(&mut d, &s);
        states.insert(t, hash::logical_sha256(&s.db));
    }
    let before = *states.keys().last().expect("a TXID");

    let app = replace(&s, how, app, &backup, t1);
    // A small change only: pages it does not touch must come from the replaced file, not
    // from the old history (rewriting every page would hide a replica that went on with it).
    app.execute("INSERT INTO t(tag, v) VALUES ('after', x'00')", []).expect("insert after");
    let want = hash::logical_sha256(&s.db);
    assert_ne!(Some(&want), states.get(&before), "the replacement changed nothing");

    // The replica must reach the new content (not stall, not continue the old history).
    let mut latest = 0;
    let reached = wait_until(DAEMON_DEADLINE, || {
        latest = synced(&mut d, &s);
        latest > before && sha_at(&s, None, "latest") == want
    });
    d.assert_running();
    assert!(
        reached,
        "{how:?}: the replica did not reach the replaced database's content (replica TXID {latest}, \
        before {before}); log:\n{}",
        d.log_text()
    );
    states.insert(latest, want.clone());
    if !matches!(how, Replace::SqliteRestore) {
        // The backup API writes through SQLite: the WAL carries the change, nothing to notice.
        let log = d.log_text();
        assert!(log.contains("replaced"), "{how:?}: no log line says the database was replaced; log:\n{log}");
    }

    // Every restorable point (uploads merge captures, so a file's end is one): consistent, and
    // each TXID recorded above exactly what the database held then.
    let ends: BTreeSet<u64> = sluice_ltx(&s.url).iter().map(|f| f.max).collect();
    for t in states.keys() {
        assert!(ends.contains(t), "{how:?}: TXID {t} (a forced sync) is not a restorable point: {ends:?}");
    }
    for &t in &ends {
        let got = sha_at(&s, Some(t), &format!("{t}"));
        if let Some(w) = states.get(&t) {
            assert_eq!(&got, w, "{how:?}: restore at TXID {t} differs from the database then");
        }
    }
    let lit = s.path("litestream.db");
    restore("litestream", &s.url, &lit, None);
    assert_eq!(hash::integrity_check(&lit), "ok", "{how:?}: litestream restore integrity");
    assert_eq!(hash::logical_sha256(&lit), want, "{how:?}: litestream restore differs");
    d.stop_ok();
}

#[test]
fn cp_over_the_database_with_the_wal_left() {
    scenario(Replace::CpKeepWal);
}

#[test]
fn cp_over_the_database_with_wal_and_shm_removed() {
    scenario(Replace::CpRemoveWal);
}

#[test]
fn restore_to_a_temp_file_and_rename_over() {
    scenario(Replace::RestoreAndMove);
}

#[test]
fn sqlite_restore_through_the_backup_api() {
    scenario(Replace::SqliteRestore);
}
