//! The extension users get: `target/release/libsluice_vfs.so` from a plain `cargo build
//! --release` of the whole workspace (where `sluice-replicate` enables rusqlite's bundled
//! SQLite, the feature unification that breaks extensions built on libsqlite3-sys).
//!
//! * `nm -D`: it defines no symbol but its entry point (no `sqlite3_*` of its own), and
//!   imports none (it calls its host only through the API table);
//! * the `sqlite3` shell (`.load`, `.open file:…?vfs=sluice`, `SLUICE_REPLICA_URL`) and
//!   Python's `sqlite3` (URI parameter `replica=`) dump every fixture, and one replica on moto
//!   S3, exactly as they dump `sluice restore`'s output, with `integrity_check` ok.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::{file_url, restore};
use sluice_engine::restore::Target;
use sluice_testkit::fixtures::{all_fixture_names, copy_replica_to, load_manifest, replica_dir};
use sluice_testkit::process::output_with_timeout;
use sluice_testkit::{peer, s3, vfs};

const RUN_TIMEOUT: Duration = Duration::from_secs(120);

fn run(cmd: &mut Command) -> Output {
    output_with_timeout(cmd, RUN_TIMEOUT)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[track_caller]
fn ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{what}: {:?}\n{}\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn nm(so: &Path, which: &str) -> Vec<String> {
    let out = run(Command::new("nm").args(["-D", which]).arg(so));
    ok(&out, "nm").lines().filter_map(|l| l.split_whitespace().last()).map(str::to_string).collect()
}

#[test]
fn the_release_extension_links_no_sqlite_and_reads_every_fixture_in_the_shell_and_python() {
    let so = vfs::release_so();
    // Nothing but the entry point: no SQLite, and no dependency's C API (see build.rs).
    let defined = nm(&so, "--defined-only");
    assert_eq!(defined, ["sqlite3_sluicevfs_init"], "symbols of {}", so.display());
    let imported: Vec<String> = nm(&so, "--undefined-only").into_iter().filter(|s| s.contains("sqlite3")).collect();
    assert!(imported.is_empty(), "{} imports {imported:?}", so.display());

    let tmp = tempfile::tempdir().unwrap();
    let mut replicas: Vec<(String, String)> = all_fixture_names()
        .into_iter()
        .map(|name| {
            let url = file_url(&copy_replica_to(&name, tmp.path().join(&name)));
            (name, url)
        })
        .collect();
    let bucket = s3::new_bucket("vfs-release");
    s3::upload_replica(&replica_dir("compacted"), &bucket, "compacted");
    replicas.push(("compacted on S3".into(), s3::s3_url(&bucket, "compacted")));

    for (name, url) in &replicas {
        let restored = restore(url, Target::Latest, tmp.path());
        let reference = shell(None, &format!("file:{}?immutable=1", restored.display()), None);
        assert!(reference.ends_with("ok\n"), "{name}: restored file: {reference}");
        let seen = shell(Some(&so), "file:app.db?vfs=sluice", Some(url));
        assert_eq!(seen, reference, "{name}: sqlite3 shell, VFS vs restore");
        let txid = python(&so, url, &restored);
        assert_eq!(txid, load_manifest(name.split(' ').next().unwrap()).final_txid, "{name}: python");
        eprintln!("{name}: shell and python ok");
    }
}

/// `.dump` and `PRAGMA integrity_check` of `db` in the `sqlite3` shell, optionally through
/// the extension with `SLUICE_REPLICA_URL` set. (The shell runs each argument after the
/// database name as a command.)
fn shell(so: Option<&Path>, db: &str, replica: Option<&str>) -> String {
    let mut cmd = Command::new("sqlite3");
    cmd.args(["-bail", ":memory:"]).env_remove("SLUICE_REPLICA_URL");
    if let Some(so) = so {
        // As users type it: no file extension, no entry point.
        cmd.arg(format!(".load {}", so.with_extension("").display()));
    }
    cmd.arg(format!(".open {db}")).arg(".dump").arg("PRAGMA integrity_check;");
    if let Some(url) = replica {
        cmd.env("SLUICE_REPLICA_URL", url);
    }
    ok(&run(&mut cmd), "sqlite3")
}

const PY: &str = r#"
import sqlite3, sys
so, uri, ref = sys.argv[1:4]
loader = sqlite3.connect(":memory:")
loader.enable_load_extension(True)
loader.load_extension(so)
v = sqlite3.connect(uri, uri=True)
r = sqlite3.connect("file:" + ref + "?immutable=1", uri=True)
a, b = list(v.iterdump()), list(r.iterdump())
assert a == b, "dumps differ: %d vs %d lines" % (len(a), len(b))
assert v.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
print(v.execute("SELECT sluice_txid()").fetchone()[0])
"#;

/// Dumps the replica through the extension in Python and compares with the restored file;
/// returns `sluice_txid()`.
fn python(so: &Path, url: &str, restored: &Path) -> String {
    let uri = vfs::uri("app.db", url, &[]);
    let out =
        run(peer::python_command().arg("-c").arg(PY).arg(so).arg(&uri).arg(restored).env_remove("SLUICE_REPLICA_URL"));
    ok(&out, "python").trim().to_string()
}
