//! The testkit's own view of the fixtures: manifests parse, the logical-v1 hash reproduces the
//! manifests, and replica copies carry Litestream's mtime convention.

use std::time::UNIX_EPOCH;

use sluice_testkit::fixtures::{self, load_manifest};
use sluice_testkit::hash;

#[test]
fn every_manifest_parses() {
    let names = fixtures::all_fixture_names();
    assert_eq!(names, ["basic", "compacted", "pagesize-1024", "pagesize-65536", "pitr", "shrink", "vfs-write"]);
    for name in &names {
        let m = load_manifest(name);
        assert_eq!(&m.fixture, name);
        assert_eq!(m.generator.litestream_version, "0.5.17");
        assert!(!m.ltx_files.is_empty() && !m.restores.is_empty(), "{name}");
        for f in &m.ltx_files {
            assert_eq!(f.header.page_size, m.page_size, "{name} {}", f.path);
            assert_eq!(f.pgnos().len(), f.page_count as usize, "{name} {}", f.path);
            assert!(f.path_in(&fixtures::replica_dir(name)).is_file(), "{name} {}", f.path);
        }
        assert!(m.latest_restore().succeeded());
        assert_eq!(m.latest_restore().restored_txid(), Some(m.final_txid()));
    }
    let corrupt = load_manifest("corrupt");
    assert_eq!(corrupt.cases.len(), 7);
    for case in &corrupt.cases {
        assert!(case.replica_dir().is_dir(), "{}", case.case);
        assert_eq!(case.expected_decoder_error.is_none(), case.case == "valid");
        assert_eq!(case.litestream_restore.succeeded(), case.case == "valid");
    }
}

/// The README's logical-v1 definition, checked against the real restores: `expected/latest.db`
/// of every fixture hashes to the manifest's latest restore (`restores[0]`).
#[test]
fn logical_hash_of_expected_latest_matches_manifest() {
    for name in fixtures::all_fixture_names() {
        let m = load_manifest(&name);
        let latest = &m.restores[0];
        assert!(latest.is_latest(), "{name}: restores[0] is not the latest restore");
        let result = latest.result.as_ref().expect("latest restore has a result");
        let db = fixtures::expected_latest_db(&name);
        assert_eq!(hash::logical_sha256(&db), result.logical_sha256, "{name}");
        assert_eq!(hash::file_sha256(&db), result.db_sha256, "{name}");
        assert_eq!(hash::file_sha256(&db), m.expected_files["expected/latest.db"].sha256, "{name}");
        assert_eq!(hash::integrity_check(&db), "ok", "{name}");
        assert_eq!(hash::row_counts(&db), result.row_counts, "{name}");
    }
    // Hashing must not leave -wal/-shm files in the fixture folders.
    for name in fixtures::all_fixture_names() {
        let expected = fixtures::fixture_dir(&name).join("expected");
        let extra: Vec<_> = std::fs::read_dir(&expected)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n != "latest.db")
            .collect();
        assert!(extra.is_empty(), "{name}: {extra:?}");
    }
}

#[test]
fn copied_replica_has_header_timestamps_as_mtimes() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["pitr", "vfs-write"] {
        let dest = fixtures::copy_replica_to(name, dir.path().join(name));
        let m = load_manifest(name);
        for f in &m.ltx_files {
            let path = f.path_in(&dest);
            assert_eq!(hash::file_sha256(&path), f.sha256, "{}", path.display());
            let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
            let ns = mtime.duration_since(UNIX_EPOCH).unwrap().as_nanos();
            assert_eq!(ns, u128::try_from(f.header.timestamp_ms).unwrap() * 1_000_000);
            assert_eq!(Some(ns as i64), f.mtime_ns, "{}", path.display());
            assert_eq!(f.header.timestamp.as_deref(), Some(fixtures::rfc3339_ms(f.header.timestamp_ms).as_str()));
        }
    }
    let dest = fixtures::copy_corrupt_case_to("badmagic-snapshot", dir.path().join("bad"));
    assert_eq!(fixtures::set_ltx_mtimes(&dest).unwrap(), 2);
}
