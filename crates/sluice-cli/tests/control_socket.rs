//! The control socket speaks Litestream 0.5's API: the real `litestream` CLI (list, info,
//! sync, register, unregister, stop, start) drives a Sluice daemon, Sluice's CLI drives a
//! real `litestream replicate`, and `sluice stop` /
//! `sluice start` pause and resume one database while the others go on. A stopped database
//! uploads nothing, stays listed, and is not picked up again by `dir:` discovery.

mod common;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Daemon, create_wal_db, ok, restore, run, sluice, text, write_rows};
use serde_json::Value;
use sluice_testkit::hash::logical_sha256;
use sluice_testkit::peer::litestream_command;
use sluice_testkit::process::{ChildGuard, wait_until};

/// Safety net for one CLI run (not a timing assertion); used by `common::run`.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);
/// Upper bound for the daemon to notice something (not an expectation).
const NOTICE: Duration = Duration::from_secs(60);

/// `sluice list --json`: each database's status by path.
fn statuses(socket: &Path) -> Vec<(PathBuf, String)> {
    let out = run(sluice().args(["list", "--json", "--socket"]).arg(socket));
    if !out.status.success() {
        return Vec::new();
    }
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let dbs = v["databases"].as_array().unwrap();
    dbs.iter().map(|d| (PathBuf::from(d["path"].as_str().unwrap()), d["status"].as_str().unwrap().into())).collect()
}

fn status_of(socket: &Path, db: &Path) -> Option<String> {
    statuses(socket).into_iter().find(|(p, _)| p == db).map(|(_, s)| s)
}

/// The real `litestream` CLI with `-socket`.
fn litestream(socket: &Path, args: &[&str], db: Option<&Path>) -> std::process::Output {
    let mut cmd = litestream_command();
    cmd.arg(args[0]).arg("-socket").arg(socket).args(&args[1..]);
    if let Some(db) = db {
        cmd.arg(db);
    }
    run(&mut cmd)
}

fn url(dir: &Path) -> String {
    format!("file://{}", dir.display())
}

/// A config with the control socket at `socket` and one database `db` replicated to `replica`.
fn socket_config(dir: &Path, socket: &Path, db: &Path, replica: &Path) -> PathBuf {
    let config = dir.join("litestream.yml");
    let yaml = format!(
        "socket:\n  enabled: true\n  path: {}\ndbs:\n  - path: {}\n    replica:\n      url: {}\n",
        socket.display(),
        db.display(),
        url(replica)
    );
    std::fs::write(&config, yaml).unwrap();
    config
}

fn restored_sha(tmp: &Path, replica: &Path, name: &str) -> String {
    let out = tmp.join(name);
    restore("sluice", &url(replica), &out, None);
    logical_sha256(&out)
}

#[test]
fn litestreams_cli_drives_a_sluice_daemon_through_the_control_socket() {
    let tmp = tempfile::tempdir().unwrap();
    let socket = tmp.path().join("ctl.sock");
    let (a, b) = (tmp.path().join("a.db"), tmp.path().join("b.db"));
    let (ca, cb) = (create_wal_db(&a, 1), create_wal_db(&b, 2));
    let (ra, rb) = (tmp.path().join("r-a"), tmp.path().join("r-b"));
    let config = socket_config(tmp.path(), &socket, &a, &ra);
    let mut daemon = Daemon::start(&config, &[], &tmp.path().join("daemon.log"));
    assert!(wait_until(NOTICE, || status_of(&socket, &a).as_deref() == Some("replicating")), "{}", daemon.log_text());

    // list and info parse Sluice's replies (Litestream's client rejects unknown shapes).
    let listed = ok(&litestream(&socket, &["list"], None), "litestream list");
    assert!(listed.contains(&a.display().to_string()) && listed.contains("replicating"), "{listed}");
    let info = ok(&litestream(&socket, &["info", "-json"], None), "litestream info");
    let info: Value = serde_json::from_str(&info).unwrap();
    assert_eq!(info["database_count"], 1, "{info}");
    assert_eq!(info["pid"], daemon.guard.id(), "{info}");

    // sync -wait: the replica holds every row committed before it.
    write_rows(&ca, 10, 20);
    let synced = ok(&litestream(&socket, &["sync", "-wait", "-json"], Some(&a)), "litestream sync -wait");
    let synced: Value = serde_json::from_str(&synced).unwrap();
    assert!(synced["replica_txid"].as_u64().unwrap() >= 2, "{synced}");
    assert_eq!(restored_sha(tmp.path(), &ra, "a1.db"), logical_sha256(&a));

    // register / unregister at run time.
    ok(&litestream(&socket, &["register", "-replica", &url(&rb)], Some(&b)), "litestream register");
    assert!(wait_until(NOTICE, || status_of(&socket, &b).as_deref() == Some("replicating")), "{}", daemon.log_text());
    write_rows(&cb, 20, 10);
    ok(&litestream(&socket, &["unregister"], Some(&b)), "litestream unregister");
    assert_eq!(status_of(&socket, &b), None);
    // Unregister replies after the last sync.
    assert_eq!(restored_sha(tmp.path(), &rb, "b1.db"), logical_sha256(&b));

    // stop: the last sync runs, then nothing is uploaded until start.
    let stopped = ok(&litestream(&socket, &["stop", "-json"], Some(&a)), "litestream stop");
    assert!(stopped.contains("stopped"), "{stopped}");
    assert_eq!(status_of(&socket, &a).as_deref(), Some("stopped"));
    let at_stop = logical_sha256(&a);
    write_rows(&ca, 30, 20);
    let refused = litestream(&socket, &["sync", "-wait"], Some(&a));
    assert!(!refused.status.success(), "a stopped database cannot sync");
    let refused = run(sluice().args(["sync", "--wait", "--socket"]).arg(&socket).arg(&a));
    assert!(!refused.status.success());
    assert!(text(&refused.stderr).contains("is stopped"), "{}", text(&refused.stderr));
    assert_eq!(restored_sha(tmp.path(), &ra, "a2.db"), at_stop, "a stopped database uploaded");
    let again = ok(&run(sluice().args(["stop", "--socket"]).arg(&socket).arg(&a)), "sluice stop again");
    assert!(again.contains("already stopped"), "{again}");

    // start: replication resumes where it stopped.
    ok(&litestream(&socket, &["start"], Some(&a)), "litestream start");
    let again = ok(&run(sluice().args(["start", "--socket"]).arg(&socket).arg(&a)), "sluice start again");
    assert!(again.contains("already running"), "{again}");
    ok(&litestream(&socket, &["sync", "-wait"], Some(&a)), "litestream sync after start");
    assert_eq!(restored_sha(tmp.path(), &ra, "a3.db"), logical_sha256(&a));

    // Errors name the database.
    let unknown = run(sluice().args(["stop", "--socket"]).arg(&socket).arg(tmp.path().join("nope.db")));
    assert!(!unknown.status.success());
    assert!(text(&unknown.stderr).contains("is not replicated by this daemon"), "{}", text(&unknown.stderr));

    // A restarted daemon that resumes with nothing new to capture still lists where it is.
    let before = txids_of(&socket, &a);
    assert_ne!(before.0, "0000000000000000");
    daemon.stop_ok();
    let mut daemon = Daemon::start(&config, &[], &tmp.path().join("daemon-2.log"));
    assert!(wait_until(NOTICE, || status_of(&socket, &a).as_deref() == Some("replicating")), "{}", daemon.log_text());
    assert!(wait_until(NOTICE, || txids_of(&socket, &a) == before), "{:?} != {before:?}", txids_of(&socket, &a));
    daemon.stop_ok();
    drop((ca, cb));
}

/// `sluice list --json`: a database's local and replica TXIDs.
fn txids_of(socket: &Path, db: &Path) -> (String, String) {
    let out = ok(&run(sluice().args(["list", "--json", "--socket"]).arg(socket)), "sluice list");
    let v: Value = serde_json::from_str(&out).unwrap();
    let d = v["databases"].as_array().unwrap().iter().find(|d| d["path"].as_str() == db.to_str()).unwrap().clone();
    (d["local_txid"].as_str().unwrap().to_string(), d["replica_txid"].as_str().unwrap().to_string())
}

#[test]
fn a_stopped_database_of_a_watched_directory_stays_stopped_across_rescans() {
    let tmp = tempfile::tempdir().unwrap();
    let socket = tmp.path().join("ctl.sock");
    let data = tmp.path().join("data");
    let backups = tmp.path().join("backups");
    let first = data.join("first.db");
    let c1 = create_wal_db(&first, 3);
    let config = tmp.path().join("litestream.yml");
    std::fs::write(
        &config,
        format!(
            "socket:\n  enabled: true\n  path: {}\ndbs:\n  - dir: {}\n    pattern: \"*.db\"\n    watch: true\n    replica:\n      url: {}\n",
            socket.display(),
            data.display(),
            url(&backups)
        ),
    )
    .unwrap();
    let mut daemon = Daemon::start(&config, &[], &tmp.path().join("daemon.log"));
    assert!(
        wait_until(NOTICE, || status_of(&socket, &first).as_deref() == Some("replicating")),
        "{}",
        daemon.log_text()
    );
    let out = ok(&run(sluice().args(["stop", "--timeout", "20", "--socket"]).arg(&socket).arg(&first)), "sluice stop");
    assert!(out.contains("stopped"), "{out}");

    // A new database makes discovery rescan the directory: it must not restart the stopped one.
    let second = data.join("second.db");
    let c2 = create_wal_db(&second, 4);
    assert!(
        wait_until(NOTICE, || status_of(&socket, &second).as_deref() == Some("replicating")),
        "{}",
        daemon.log_text()
    );
    assert_eq!(status_of(&socket, &first).as_deref(), Some("stopped"), "{}", daemon.log_text());

    // Started again, it catches up with what was written while stopped.
    write_rows(&c1, 40, 10);
    ok(&run(sluice().args(["start", "--socket"]).arg(&socket).arg(&first)), "sluice start");
    ok(&run(sluice().args(["sync", "--wait", "--socket"]).arg(&socket).arg(&first)), "sluice sync --wait");
    assert_eq!(restored_sha(tmp.path(), &backups.join("first.db"), "f.db"), logical_sha256(&first));
    // A stopped database whose file is deleted leaves the list.
    ok(&run(sluice().args(["stop", "--socket"]).arg(&socket).arg(&second)), "sluice stop second");
    drop(c2);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", second.display()));
    }
    assert!(wait_until(NOTICE, || status_of(&socket, &second).is_none()), "{:?}", statuses(&socket));
    daemon.stop_ok();
    drop(c1);
}

#[test]
fn sluices_cli_drives_a_litestream_daemon() {
    let tmp = tempfile::tempdir().unwrap();
    let socket = tmp.path().join("ls.sock");
    let (a, b) = (tmp.path().join("a.db"), tmp.path().join("b.db"));
    let (ca, _cb) = (create_wal_db(&a, 5), create_wal_db(&b, 6));
    let (ra, rb) = (tmp.path().join("r-a"), tmp.path().join("r-b"));
    let config = socket_config(tmp.path(), &socket, &a, &ra);
    let log = File::create(tmp.path().join("litestream.log")).unwrap();
    let mut daemon = ChildGuard::spawn(
        litestream_command().arg("replicate").arg("-config").arg(&config).stdout(log.try_clone().unwrap()).stderr(log),
    );
    assert!(wait_until(NOTICE, || status_of(&socket, &a).as_deref() == Some("replicating")));

    write_rows(&ca, 50, 20);
    let synced = ok(&run(sluice().args(["sync", "--wait", "--socket"]).arg(&socket).arg(&a)), "sluice sync --wait");
    assert!(synced.contains("synced"), "{synced}");
    assert_eq!(restored_sha(tmp.path(), &ra, "a1.db"), logical_sha256(&a));
    let info = ok(&run(sluice().args(["info", "--json", "--socket"]).arg(&socket)), "sluice info");
    let info: Value = serde_json::from_str(&info).unwrap();
    assert_eq!(info["pid"], daemon.id(), "{info}");

    let stopped = ok(&run(sluice().args(["stop", "--socket"]).arg(&socket).arg(&a)), "sluice stop");
    assert!(stopped.contains("stopped"), "{stopped}");
    assert_eq!(status_of(&socket, &a).as_deref(), Some("stopped"));
    ok(&run(sluice().args(["start", "--socket"]).arg(&socket).arg(&a)), "sluice start");

    let reg = run(sluice().args(["register", "--replica", &url(&rb), "--socket"]).arg(&socket).arg(&b));
    assert!(ok(&reg, "sluice register").contains("registered"));
    ok(&run(sluice().args(["sync", "--wait", "--socket"]).arg(&socket).arg(&b)), "sluice sync --wait b");
    let un = run(sluice().args(["unregister", "--socket"]).arg(&socket).arg(&b));
    assert!(ok(&un, "sluice unregister").contains("unregistered"));
    assert_eq!(restored_sha(tmp.path(), &rb, "b1.db"), logical_sha256(&b));
    let (_, clean) = daemon.stop("TERM", Duration::from_secs(30));
    assert!(clean, "litestream did not stop on SIGTERM");
}
