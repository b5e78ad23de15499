//! The environment `scripts/test` provides: the real Litestream and moto. These tests fail (never
//! skip) when run outside `scripts/test`.

use std::time::Duration;

use sluice_testkit::process::output_with_timeout;
use sluice_testkit::{fixtures, hash, peer, s3};

#[test]
fn litestream_version_is_0_5_17() {
    let out = output_with_timeout(peer::litestream_command().arg("version"), Duration::from_secs(60));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout.contains("0.5.17"), "litestream version printed {stdout:?}");
}

#[test]
fn venv_python_can_load_extensions() {
    let so = peer::litestream_vfs_so();
    assert!(so.is_file());
    let out = output_with_timeout(
        peer::python_command().args([
            "-c",
            "import sqlite3; c = sqlite3.connect(':memory:'); c.enable_load_extension(True); print('ok')",
        ]),
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn moto_bucket_roundtrip() {
    let bucket = s3::new_bucket("testkit-roundtrip");
    s3::put_object(&bucket, "a/b c.txt", b"hello");
    s3::put_object(&bucket, "a/d", b"");
    s3::put_object(&bucket, "z", b"!");
    assert_eq!(s3::list_keys(&bucket, "a/"), ["a/b c.txt", "a/d"]);
    assert_eq!(s3::get_object(&bucket, "a/b c.txt").as_deref(), Some(&b"hello"[..]));
    s3::delete_object(&bucket, "a/d");
    assert_eq!(s3::get_object(&bucket, "a/d"), None);
    assert!(s3::try_create_bucket(&bucket).is_err() || s3::list_keys(&bucket, "").len() == 2);
    let url = s3::s3_url(&bucket, "db");
    assert!(url.starts_with(&format!("s3://{bucket}/db?endpoint=http://")), "{url}");
    assert!(url.ends_with("&region=us-east-1&forcePathStyle=true"), "{url}");
}

/// The whole peer path over S3: a fixture replica uploaded in Litestream's S3 layout restores
/// with the real binary to the expected bytes (latest and `-txid`).
#[test]
fn litestream_restores_fixture_from_moto() {
    let bucket = s3::new_bucket("testkit-restore");
    let keys = s3::upload_replica(&fixtures::replica_dir("pitr"), &bucket, "pitr");
    assert!(keys.contains(&"pitr/0009/0000000000000001-0000000000000001.ltx".to_string()));
    let m = fixtures::load_manifest("pitr");
    let cases = m.restores.iter().filter(|r| r.is_latest() || r.txid_arg() == Some(0x1a));
    let n = run_restores(cases, &s3::s3_url(&bucket, "pitr"));
    assert_eq!(n, 2);
}

/// `copy_replica_to` re-applies the mtimes, so every `-timestamp` case of `pitr` (including the
/// `.564`/`.565` ms boundaries and the expected failures) behaves as recorded on the copy.
#[test]
fn litestream_timestamp_restores_on_replica_copy() {
    let dir = tempfile::tempdir().unwrap();
    let replica = fixtures::copy_replica_to("pitr", dir.path().join("replica"));
    let m = fixtures::load_manifest("pitr");
    let cases = m.restores.iter().filter(|r| r.timestamp_arg().is_some());
    let url = format!("file://{}", replica.display());
    assert!(run_restores(cases, &url) >= 10);
}

/// Runs each case with the real `litestream restore` against `url` and checks the recorded
/// outcome (bytes on success, the error line on failure). Returns how many ran.
fn run_restores<'a>(cases: impl Iterator<Item = &'a fixtures::RestoreCase>, url: &str) -> usize {
    let dir = tempfile::tempdir().unwrap();
    let mut n = 0;
    for (i, case) in cases.enumerate() {
        n += 1;
        let out_db = dir.path().join(format!("restored-{i}.db"));
        let out = output_with_timeout(
            peer::litestream_command().arg("restore").args(&case.args).arg("-o").arg(&out_db).arg(url),
            Duration::from_secs(120),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        match &case.result {
            Some(result) => {
                assert!(out.status.success(), "{}: {stderr}", case.label);
                assert_eq!(hash::file_sha256(&out_db), result.db_sha256, "{}", case.label);
            }
            None => {
                assert!(!out.status.success(), "{}: restore should fail", case.label);
                let error = case.error.as_deref().unwrap();
                assert!(stderr.contains(error), "{}: {stderr:?} lacks {error:?}", case.label);
            }
        }
    }
    n
}
