//! Every restore Litestream 0.5.17 performed on the fixtures (latest, each TXID, each
//! timestamp, and each failure) gives the same result with Sluice: the same plan and the
//! same bytes, or an error where Litestream failed.

mod common;

use common::target_of;
use sluice_engine::restore::{self, RestoreOptions, file_label};
use sluice_storage::ReplicaClient;
use sluice_testkit::fixtures::{all_fixture_names, copy_corrupt_case_to, copy_replica_to, load_manifest};
use sluice_testkit::hash::file_sha256;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fixture_restore_matches_litestream() {
    let mut ok_cases = 0;
    let mut err_cases = 0;
    for name in all_fixture_names() {
        let tmp = tempfile::tempdir().unwrap();
        let replica = copy_replica_to(&name, tmp.path().join("replica"));
        let client = ReplicaClient::from_url(&format!("file://{}", replica.display())).unwrap();
        let m = load_manifest(&name);
        for (i, case) in m.restores.iter().enumerate() {
            let target = target_of(case);
            let out = tmp.path().join(format!("out-{i}.db"));
            let opts = RestoreOptions { target, ..Default::default() };
            let res = restore::restore(&client, &out, &opts).await;
            if case.succeeded() {
                let summary = res.unwrap_or_else(|e| panic!("{name} {}: {e}", case.label));
                let want = case.result.as_ref().unwrap();
                assert_eq!(file_sha256(&out), want.db_sha256, "{name} {}", case.label);
                if let Some(plan) = &case.plan {
                    let got: Vec<String> = summary.plan.iter().map(file_label).collect();
                    assert_eq!(&got, plan, "{name} {}: plan", case.label);
                }
                ok_cases += 1;
            } else {
                let err = res.expect_err(&format!("{name} {}: Litestream failed ({:?})", case.label, case.error));
                assert!(!out.exists(), "{name} {}: failed restore left {}", case.label, out.display());
                eprintln!("{name} {}: {err}", case.label);
                err_cases += 1;
            }
        }
    }
    eprintln!("{ok_cases} successful and {err_cases} failing restores matched");
    assert!(ok_cases > 100 && err_cases > 10, "{ok_cases} ok, {err_cases} errors");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_files_fail_restores_and_leave_no_output() {
    let m = load_manifest("corrupt");
    for case in &m.cases {
        let tmp = tempfile::tempdir().unwrap();
        let replica = copy_corrupt_case_to(&case.case, tmp.path().join("replica"));
        let client = ReplicaClient::from_url(&format!("file://{}", replica.display())).unwrap();
        let out = tmp.path().join("out.db");
        let res = restore::restore(&client, &out, &RestoreOptions::default()).await;
        match &case.expected_decoder_error {
            None => {
                res.unwrap();
                let want = case.litestream_restore.result.as_ref().unwrap();
                assert_eq!(file_sha256(&out), want.db_sha256);
            }
            Some(kind) => {
                let err = res.expect_err(&case.case);
                let msg = err.to_string();
                let name_of_file = case.corrupted_file.as_deref().unwrap().rsplit('/').next().unwrap();
                assert!(msg.contains(name_of_file), "{}: error does not name the file: {msg}", case.case);
                match err {
                    sluice_engine::Error::Ltx { source, .. } => assert_eq!(source.kind_name(), kind),
                    other => panic!("{}: unexpected error {other}", case.case),
                }
                assert!(!out.exists());
                let leftovers: Vec<_> =
                    std::fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
                assert_eq!(leftovers, vec![std::ffi::OsString::from("replica")], "temp files left behind");
            }
        }
    }
}
