//! The extension (`libsluice_vfs.so` loaded into rusqlite's bundled SQLite) on the Litestream
//! 0.5.17 fixtures, against `sluice restore` of the same replica:
//!
//! * every fixture (including shrink, 1 KiB and 64 KiB pages) reads with the same logical
//!   content, row counts, page size and `PRAGMA integrity_check` as its restore, and as
//!   Litestream's restore recorded in the manifest; `sluice_txid()` is the final TXID;
//! * a fixture uploaded to moto S3 reads the same;
//! * time travel: `sluice_set_time` to each manifest timestamp (and `PRAGMA sluice_time` to
//!   each TXID) of every fixture shows that moment's content, as Litestream's and
//!   `sluice restore --timestamp` show it, and fails where Litestream's restore failed;
//! * damaged replicas give SQLite errors, never a successful read of different content;
//! * the connection behaves as a read-only rollback-journal database: writes are refused,
//!   `journal_mode=wal` changes nothing, temporary tables work.

mod common;

use common::{content_of, content_of_file, file_url, restore, target_of};
use rusqlite::{Connection, ErrorCode};
use sluice_engine::restore::Target;
use sluice_testkit::fixtures::{all_fixture_names, copy_corrupt_case_to, copy_replica_to, load_manifest};
use sluice_testkit::{s3, vfs};

#[test]
fn every_fixture_reads_as_its_restore() {
    for name in all_fixture_names() {
        let tmp = tempfile::tempdir().unwrap();
        let url = file_url(&copy_replica_to(&name, tmp.path().join("replica")));
        let expected = content_of_file(&restore(&url, Target::Latest, tmp.path()));
        let conn = vfs::open(&url, &[]).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        let seen = content_of(&conn).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        assert_eq!(seen, expected, "{name}: VFS vs sluice restore");
        let manifest = load_manifest(&name);
        let litestream = manifest.latest_restore().result.as_ref().expect("latest restore result");
        assert_eq!(seen.logical_sha256, litestream.logical_sha256, "{name}: VFS vs litestream restore");
        assert_eq!(seen.row_counts, litestream.row_counts, "{name}");
        assert_eq!(seen.integrity, "ok", "{name}");
        assert_eq!(seen.page_size, manifest.page_size, "{name}");
        assert_eq!(vfs::txid(&conn).unwrap(), manifest.final_txid, "{name}: sluice_txid()");
        eprintln!("{name}: ok ({} pages of {})", manifest.page_size, seen.row_counts.len());
    }
}

#[test]
fn a_replica_on_s3_reads_as_its_restore() {
    for name in ["pagesize-65536", "shrink"] {
        let bucket = s3::new_bucket(&format!("vfs-{name}"));
        s3::upload_replica(&sluice_testkit::fixtures::replica_dir(name), &bucket, "db");
        let url = s3::s3_url(&bucket, "db");
        let tmp = tempfile::tempdir().unwrap();
        let expected = content_of_file(&restore(&url, Target::Latest, tmp.path()));
        let conn = vfs::open(&url, &[]).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        assert_eq!(content_of(&conn).unwrap(), expected, "{name} on S3");
        assert_eq!(
            expected.logical_sha256,
            load_manifest(name).latest_restore().result.as_ref().unwrap().logical_sha256
        );
    }
}

/// Moves `conn` to the state a manifest restore case names (`-timestamp` through the SQL
/// function, `-txid` through the PRAGMA).
fn travel(conn: &Connection, case: &sluice_testkit::fixtures::RestoreCase) -> rusqlite::Result<()> {
    match case.timestamp_arg() {
        Some(ts) => conn.query_row("SELECT sluice_set_time(?1)", [ts], |r| r.get::<_, Option<String>>(0)).map(drop),
        None => {
            let txid = sluice_testkit::fixtures::format_txid(case.txid_arg().expect("a -txid case"));
            conn.execute_batch(&format!("PRAGMA sluice_time = '{txid}'"))
        }
    }
}

#[test]
fn time_travel_to_every_manifest_moment() {
    let mut checked = 0;
    for name in all_fixture_names() {
        let tmp = tempfile::tempdir().unwrap();
        let url = file_url(&copy_replica_to(&name, tmp.path().join("replica")));
        // One connection travels back and forth (across shrinking commits too).
        let conn = vfs::open(&url, &[]).unwrap();
        let latest = content_of(&conn).unwrap();
        for case in load_manifest(&name).restores.iter().filter(|c| !c.is_latest()) {
            let label = format!("{name} {:?}", case.args);
            let Some(expected) = case.result.as_ref().filter(|_| case.succeeded()) else {
                let err = travel(&conn, case).expect_err(&label);
                assert!(!err.to_string().is_empty(), "{label}: Litestream failed, so must the VFS");
                continue;
            };
            travel(&conn, case).unwrap_or_else(|e| panic!("{label}: {e}"));
            let seen = content_of(&conn).unwrap();
            assert_eq!(seen.logical_sha256, expected.logical_sha256, "{label}");
            assert_eq!(seen.integrity, "ok", "{label}");
            assert_eq!(Some(vfs::txid(&conn).unwrap()), case.restored_txid.clone(), "{label}");
            let size: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0)).unwrap();
            assert_eq!(Some(size as u32), expected.page_count, "{label}: page count");
            if case.timestamp_arg().is_some() {
                let restored = content_of_file(&restore(&url, target_of(case), tmp.path()));
                assert_eq!(seen, restored, "{label}: VFS vs sluice restore --timestamp");
            }
            checked += 1;
        }
        conn.query_row("SELECT sluice_set_time('LATEST')", [], |r| r.get::<_, Option<String>>(0)).unwrap();
        assert_eq!(content_of(&conn).unwrap(), latest, "{name}: back to the latest state");
    }
    assert!(checked >= 100, "only {checked} manifest cases");
    eprintln!("{checked} manifest moments checked");
}

#[test]
fn state_functions_and_pragmas_agree() {
    let tmp = tempfile::tempdir().unwrap();
    let url = file_url(&copy_replica_to("pitr", tmp.path().join("replica")));
    let conn = vfs::open(&url, &[]).unwrap();
    let (txid, time, lag): (String, String, i64) = conn
        .query_row("SELECT sluice_txid(), sluice_time(), sluice_lag()", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap();
    assert_eq!(txid, "0000000000000033");
    assert_eq!(time, "2026-11-26T10:38:32.564Z", "the header time of the file ending at TXID 0x33");
    assert!(lag >= 0, "polled at open");
    let pragma = |p: &str| conn.query_row(&format!("PRAGMA {p}"), [], |r| r.get::<_, String>(0)).unwrap();
    assert_eq!(pragma("sluice_txid"), txid);
    assert_eq!(pragma("sluice_time"), time);
    assert!(pragma("sluice_lag").parse::<i64>().unwrap() >= 0);
    conn.execute_batch("PRAGMA sluice_time = '2026-11-26T10:37:43.565Z'").unwrap();
    assert_eq!(pragma("sluice_txid"), "0000000000000003");
    assert_eq!(pragma("sluice_time"), "2026-11-26T10:37:43.564Z");
    let err = conn.execute_batch("PRAGMA sluice_time = 'the day after tomorrow'").unwrap_err();
    assert!(err.to_string().contains("the day after tomorrow"), "{err}");
    assert_eq!(pragma("sluice_txid"), "0000000000000003", "a failed time travel keeps the pin");
    let err = conn.query_row("SELECT sluice_set_time(NULL)", [], |r| r.get::<_, Option<String>>(0)).unwrap_err();
    assert!(err.to_string().contains("latest"), "{err}");
    // Time travel changes what the connection reads: not allowed from a schema's view. (A
    // connection opened read-write, as most programs do: the main database stays read-only.)
    let conn = Connection::open(vfs::uri("app.db", &url, &[])).unwrap();
    assert_eq!(vfs::txid(&conn).unwrap(), txid);
    conn.execute_batch("ATTACH ':memory:' AS m; CREATE VIEW m.tt AS SELECT sluice_set_time('latest')").unwrap();
    let err = conn.query_row("SELECT * FROM m.tt", [], |r| r.get::<_, Option<String>>(0)).unwrap_err();
    assert!(err.to_string().contains("unsafe use"), "{err}");
}

#[test]
fn the_database_is_a_read_only_rollback_database() {
    let tmp = tempfile::tempdir().unwrap();
    let url = file_url(&copy_replica_to("basic", tmp.path().join("replica")));
    let conn = vfs::open(&url, &[]).unwrap();
    let before = content_of(&conn).unwrap();
    let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
    assert_eq!(mode, "delete");
    let _ = conn.query_row("PRAGMA journal_mode = wal", [], |r| r.get::<_, String>(0));
    assert_eq!(content_of(&conn).unwrap(), before, "journal_mode=wal does not break reads");
    let table: String =
        conn.query_row("SELECT name FROM sqlite_schema WHERE type = 'table' LIMIT 1", [], |r| r.get(0)).unwrap();
    let err = conn.execute_batch(&format!("DELETE FROM \"{table}\"")).unwrap_err();
    assert_eq!(err.sqlite_error_code(), Some(ErrorCode::ReadOnly), "{err}");
    // Temporary tables and large sorts use local files.
    conn.execute_batch(
        "PRAGMA temp_store = FILE; CREATE TEMP TABLE t(x); \
         INSERT INTO t SELECT value FROM generate_series(1, 50000);",
    )
    .unwrap_or_else(|e| {
        // generate_series is an extension some builds lack: fall back to a recursive CTE.
        assert!(e.to_string().contains("generate_series"), "{e}");
        conn.execute_batch(
            "WITH RECURSIVE s(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM s WHERE x < 50000) \
             INSERT INTO t SELECT x FROM s;",
        )
        .unwrap();
    });
    let n: i64 = conn.query_row("SELECT count(*) FROM (SELECT x FROM t ORDER BY -x)", [], |r| r.get(0)).unwrap();
    assert_eq!(n, 50000);
    assert_eq!(content_of(&conn).unwrap(), before);
}

#[test]
fn missing_and_damaged_replicas_give_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let err = vfs::open(&file_url(&empty), &[]).unwrap_err();
    let err = err.downcast_ref::<rusqlite::Error>().expect("a SQLite error");
    assert_eq!(err.sqlite_error_code(), Some(ErrorCode::CannotOpen), "{err}");

    for case in load_manifest("corrupt").cases.iter().filter(|c| c.expected_decoder_error.is_some()) {
        let replica = copy_corrupt_case_to(&case.case, tmp.path().join(&case.case));
        let outcome = vfs::open(&file_url(&replica), &[]).and_then(|c: Connection| content_of(&c));
        match outcome {
            Err(e) => eprintln!("{}: error as expected: {e:#}", case.case),
            Ok(c) => panic!("{}: a damaged replica read successfully: {c:?}", case.case),
        }
    }
}

#[test]
fn one_process_reads_several_replicas_named_by_uri() {
    let tmp = tempfile::tempdir().unwrap();
    let names = ["basic", "pagesize-65536", "shrink"];
    let conns: Vec<(&str, Connection)> = names
        .iter()
        .map(|n| {
            let url = file_url(&copy_replica_to(n, tmp.path().join(n)));
            (*n, vfs::open(&url, &[("poll", "250ms"), ("cache_size", "2MiB"), ("timeout", "5s")]).unwrap())
        })
        .collect();
    for (name, conn) in &conns {
        let manifest = load_manifest(name);
        let seen = content_of(conn).unwrap();
        assert_eq!(seen.logical_sha256, manifest.latest_restore().result.as_ref().unwrap().logical_sha256, "{name}");
        assert_eq!(vfs::txid(conn).unwrap(), manifest.final_txid, "{name}");
    }
    let err = vfs::open(&file_url(tmp.path()), &[("poll", "soon")]).unwrap_err();
    assert!(format!("{err:#}").contains("unable to open"), "{err:#}");
}

#[test]
fn temporary_files_live_in_a_private_directory_removed_at_close() {
    let tmp = tempfile::tempdir().unwrap();
    let url = file_url(&copy_replica_to("basic", tmp.path().join("replica")));
    let private_tmp = tmp.path().join("tmp");
    std::fs::create_dir(&private_tmp).unwrap();
    let so = vfs::debug_so();
    // In the shell, with TMPDIR pointing at an empty directory: spill a temporary table to
    // disk, list the directory while the connection is open, close it, list again.
    let out = std::process::Command::new("sqlite3")
        .env("TMPDIR", &private_tmp)
        .env("SLUICE_REPLICA_URL", &url)
        .args([":memory:", &format!(".load {}", so.display()), ".open file:app.db?vfs=sluice"])
        .args(["PRAGMA temp_store = FILE;", "PRAGMA temp.cache_size = 2;", "CREATE TEMP TABLE t(x);"])
        .arg("WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 300) INSERT INTO t SELECT randomblob(4000) FROM s;")
        .arg("SELECT 'rows', count(*) FROM t;")
        .arg(format!(".system stat -c 'open: %a %F' {}/sluice-vfs-*", private_tmp.display()))
        .arg(".open :memory:")
        .arg(format!(".system echo closed: $(ls -A {})", private_tmp.display()))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("rows|300"), "{stdout}");
    assert!(stdout.contains("open: 700 directory"), "one private directory, mode 0700: {stdout}");
    // (`.system` output is not ordered with the shell's own buffered output.)
    assert!(stdout.lines().any(|l| l == "closed:"), "removed with the last connection: {stdout}");
}

#[test]
fn logs_name_the_replica_in_the_configured_file() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("no-such-replica");
    let log = tmp.path().join("vfs.log");
    let out = std::process::Command::new("sqlite3")
        .env("SLUICE_LOG_FILE", &log)
        .env("SLUICE_LOG_LEVEL", "info")
        .env("SLUICE_REPLICA_URL", file_url(&missing))
        .args([":memory:", &format!(".load {}", vfs::debug_so().display()), ".open file:app.db?vfs=sluice"])
        .arg("SELECT 1;")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unable to open"), "{stderr}");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(text.contains("sluice VFS registered"), "info level: {text}");
    let line = text.lines().find(|l| l.contains("cannot open replica")).unwrap_or_else(|| panic!("{text}"));
    assert!(line.contains("WARN") && line.contains(&missing.display().to_string()), "{line}");
    assert!(!stderr.contains("cannot open replica"), "logs go to the file, not stderr: {stderr}");
}
