//! What `sluice replicate` does when storage fails at start, through the real binary: each
//! cause gets its own message; transient ones (unreachable endpoint, DNS, TLS) are retried
//! for as long as they last while the daemon keeps running; permanent ones (missing or
//! rejected credentials, a missing bucket) stop replication at once with a non-zero exit; with
//! `--exec`, a stopped replication stops the application too (it never runs unprotected).
//! Throttling's message is checked where errors are classified (`sluice-storage`'s
//! `every_cause_has_its_own_message`): moto cannot be made to throttle.
//!
//! Run via `scripts/test -p sluice-cli --test replicate_storage_errors`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::{DAEMON_DEADLINE, Daemon, free_port, open_app};
use sluice_testkit::process::{ChildGuard, wait_until};
use sluice_testkit::s3;

/// Safety net for one CLI run (not a timing assertion); used by `common::run`.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// A database with a row, and a config replicating it to `url`.
fn setup(dir: &Path, url: &str, extra_top: &str) -> (PathBuf, PathBuf) {
    let db = dir.join("app.db");
    let app = open_app(&db, Duration::from_secs(5));
    app.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);").expect("init db");
    let config = dir.join("sluice.yml");
    let y =
        format!("{extra_top}dbs:\n  - path: {}\n    replica: {{url: \"{url}\", sync-interval: 200ms}}\n", db.display());
    std::fs::write(&config, y).expect("write config");
    (db, config)
}

fn url_at(endpoint: &str, bucket: &str) -> String {
    format!("s3://{bucket}/db?endpoint={endpoint}&region=us-east-1&forcePathStyle=true")
}

/// Waits for `needle` in the daemon's log.
#[track_caller]
fn wait_for_log(d: &Daemon, needle: &str) {
    let seen = wait_until(DAEMON_DEADLINE, || d.log_text().contains(needle));
    assert!(seen, "{needle:?} not logged within {DAEMON_DEADLINE:?}; log:\n{}", d.log_text());
}

/// A transient failure: logged once with its cause, the daemon keeps trying; SIGTERM then
/// exits non-zero saying nothing was replicated.
#[track_caller]
fn transient(url: &str, cause: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (_db, config) = setup(dir.path(), url, "");
    let mut d = Daemon::start(&config, &[], &dir.path().join("daemon.log"));
    wait_for_log(&d, cause);
    // Several retries later it still runs, and the outage was logged once, not per retry.
    std::thread::sleep(Duration::from_secs(3));
    d.assert_running();
    let log = d.log_text();
    assert_eq!(log.matches("storage unavailable").count(), 1, "one line per outage; log:\n{log}");
    let status = d.stop();
    let log = d.log_text();
    assert_ne!(status.code(), Some(0), "nothing was replicated: exit non-zero; log:\n{log}");
    assert!(log.contains("nothing was replicated"), "log:\n{log}");
}

/// A permanent failure: the daemon stops by itself, non-zero, naming the cause.
#[track_caller]
fn permanent(url: &str, cause: &str, env: &[(&str, Option<&str>)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let (_db, config) = setup(dir.path(), url, "");
    let log_path = dir.path().join("daemon.log");
    let f = std::fs::File::create(&log_path).unwrap();
    let mut cmd = common::sluice();
    cmd.args(["replicate", "--config"]).arg(&config).stdin(Stdio::null()).stdout(f.try_clone().unwrap()).stderr(f);
    for (k, v) in env {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    let mut child = ChildGuard::spawn(&mut cmd);
    let status = child.wait_timeout(DAEMON_DEADLINE);
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    let status = status.unwrap_or_else(|| panic!("daemon still running on a permanent error; log:\n{log}"));
    assert_ne!(status.code(), Some(0), "log:\n{log}");
    assert!(log.contains(cause), "expected {cause:?}; log:\n{log}");
    assert!(!log.contains("storage unavailable"), "a permanent error is not an outage; log:\n{log}");
    log
}

#[test]
fn unreachable_endpoint_is_retried_and_named() {
    let port = free_port(); // bound and released: nothing listens
    transient(&url_at(&format!("http://127.0.0.1:{port}"), "bucket"), "endpoint unreachable (connection refused)");
}

#[test]
fn dns_failure_is_retried_and_named() {
    transient(&url_at("http://sluice-no-such-host.invalid:9000", "bucket"), "DNS lookup of the endpoint's host failed");
}

#[test]
fn tls_failure_is_retried_and_named() {
    // TLS to moto's plain-HTTP port.
    let https = s3::endpoint().replace("http://", "https://");
    transient(&url_at(&https, &s3::new_bucket("tls")), "TLS handshake with the endpoint failed");
}

#[test]
fn missing_bucket_stops_replication() {
    permanent(&s3::s3_url(&s3::unique_bucket("missing"), "db"), "the bucket does not exist", &[]);
}

#[test]
fn missing_credentials_stop_replication_even_when_the_endpoint_is_unreachable() {
    let port = free_port();
    let home = tempfile::tempdir().unwrap(); // no ~/.aws
    let home = home.path().to_string_lossy().into_owned();
    permanent(
        &url_at(&format!("http://127.0.0.1:{port}"), "bucket"),
        "no credentials: none configured",
        &[("AWS_ACCESS_KEY_ID", None), ("AWS_SECRET_ACCESS_KEY", None), ("HOME", Some(&home))],
    );
}

#[test]
fn rejected_credentials_stop_replication() {
    let moto = s3::start_auth_moto();
    permanent(
        &url_at(&moto.endpoint, "sluice-auth-bucket"),
        "credentials rejected by the store",
        &[("AWS_ACCESS_KEY_ID", Some("AKIASLUICEWRONGKEY00")), ("AWS_SECRET_ACCESS_KEY", Some("wrong-secret"))],
    );
}

#[test]
fn exec_application_is_stopped_when_replication_stops() {
    let dir = tempfile::tempdir().unwrap();
    let url = s3::s3_url(&s3::unique_bucket("exec"), "db");
    let (_db, config) = setup(dir.path(), &url, "");
    // The application would run for ten minutes; its argument is unique to this run, so that
    // it can be looked for among all processes (it may be stopped before it ever started).
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    let arg = format!("600.{}{nanos:09}", std::process::id());
    let exec = format!("exec sleep {arg}");
    let mut d = Daemon::start(&config, &["--exec", &exec], &dir.path().join("daemon.log"));
    let status = d.guard.wait_timeout(DAEMON_DEADLINE);
    let log = d.log_text();
    let status = status.unwrap_or_else(|| panic!("daemon kept running with a stopped replication; log:\n{log}"));
    assert_ne!(status.code(), Some(0), "log:\n{log}");
    assert!(log.contains("the bucket does not exist"), "log:\n{log}");
    assert!(log.contains("stopping the --exec command"), "log:\n{log}");
    let running: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| std::fs::read(e.path().join("cmdline")).is_ok_and(|c| String::from_utf8_lossy(&c).contains(&arg)))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(running.is_empty(), "the application (sleep {arg}) still runs: pids {running:?}");
}
