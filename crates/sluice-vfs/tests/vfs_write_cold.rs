//! Write mode on a cold 20 MB replica on S3 (moto behind a byte-counting proxy): Python and the
//! `sqlite3` shell each open it for writing and commit a row long before the database could
//! have been downloaded — the proxy counts every byte the storage sent — and the row is then
//! in `sluice restore`'s output.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::Stdio;

use common::restore;
use sluice_engine::restore::Target;
use sluice_ltx::{Encoder, Header, TxId};
use sluice_testkit::proxy::Proxy;
use sluice_testkit::{peer, s3, vfs};

/// Pages of the source database (4 KiB each): 20 MB.
const PAGES: u32 = 5000;

/// A 20 MB database of incompressible rows, as a one-snapshot replica in `dir`.
fn cold_replica(dir: &Path) -> u64 {
    let db = dir.join("source.db");
    let c = rusqlite::Connection::open(&db).unwrap();
    c.execute_batch(
        "PRAGMA page_size = 4096; CREATE TABLE big (id INTEGER PRIMARY KEY, v BLOB);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5000)
         INSERT INTO big SELECT i, randomblob(3800) FROM n;
         CREATE TABLE notes (id INTEGER PRIMARY KEY, who TEXT);",
    )
    .unwrap();
    drop(c);
    let image = std::fs::read(&db).unwrap();
    let commit = (image.len() / 4096) as u32;
    assert!(commit >= PAGES, "{commit} pages");
    let snapshot = dir.join("replica/ltx/9/0000000000000001-0000000000000001.ltx");
    std::fs::create_dir_all(snapshot.parent().unwrap()).unwrap();
    let header = Header::new(4096, commit, TxId(1), TxId(1), 1_764_000_000_000);
    let mut enc = Encoder::new(std::fs::File::create(&snapshot).unwrap(), header).unwrap();
    for (i, page) in image.chunks_exact(4096).enumerate() {
        let pgno = i as u32 + 1;
        if pgno != sluice_ltx::lock_pgno(4096) {
            enc.encode_page(pgno, page).unwrap();
        }
    }
    enc.finish(0).unwrap();
    let l0 = dir.join("replica/ltx/0/0000000000000001-0000000000000001.ltx");
    std::fs::create_dir_all(l0.parent().unwrap()).unwrap();
    std::fs::copy(&snapshot, &l0).unwrap();
    image.len() as u64
}

struct Setup {
    _tmp: tempfile::TempDir,
    dir: std::path::PathBuf,
    proxy: Proxy,
    bucket: String,
    url: String,
    size: u64,
}

fn setup(name: &str) -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let size = cold_replica(&dir);
    let bucket = s3::new_bucket(name);
    s3::upload_replica(&dir.join("replica"), &bucket, "db");
    let upstream = s3::endpoint().trim_start_matches("http://").to_string();
    let proxy = Proxy::start(&upstream).expect("start proxy");
    let url = format!("s3://{bucket}/db?endpoint={}&region={}&forcePathStyle=true", proxy.endpoint(), s3::REGION);
    Setup { _tmp: tmp, dir, proxy, bucket, url, size }
}

impl Setup {
    fn uri(&self, buffer: &str) -> String {
        let buffer = self.dir.join(buffer);
        vfs::uri("app.db", &self.url, &[("write", "1"), ("buffer", buffer.to_str().unwrap()), ("sync", "1h")])
    }

    /// The restore's `notes` rows.
    fn restored_notes(&self) -> Vec<String> {
        let db = restore(&s3::s3_url(&self.bucket, "db"), Target::Latest, &self.dir);
        let c = rusqlite::Connection::open(&db).unwrap();
        assert_eq!(vfs::integrity_check(&c).unwrap(), "ok");
        let big: i64 = c.query_row("SELECT count(*) FROM big", [], |r| r.get(0)).unwrap();
        assert_eq!(big, i64::from(PAGES), "the 20 MB table is intact");
        let mut stmt = c.prepare("SELECT who FROM notes ORDER BY id").unwrap();
        stmt.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
    }

    #[track_caller]
    fn assert_small(&self, fetched: u64, who: &str) {
        eprintln!("{who}: first commit after {fetched} bytes from storage ({} MB database)", self.size >> 20);
        assert!(
            fetched < self.size / 10,
            "{who}: {fetched} bytes fetched before the first commit of a {} byte database",
            self.size
        );
    }
}

const PY_WRITER: &str = r#"
import sqlite3, sys
b = sqlite3.connect(":memory:"); b.enable_load_extension(True); b.load_extension(sys.argv[1])
c = sqlite3.connect(sys.argv[2], uri=True, isolation_level=None)
c.execute("INSERT INTO notes (who) VALUES ('python')")
print("committed", flush=True)
sys.stdin.readline()
print(c.execute("SELECT sluice_sync()").fetchone()[0], flush=True)
c.close()
"#;

#[test]
fn python_commits_on_a_cold_20_mb_replica_before_downloading_it() {
    let s = setup("vfs-write-cold-py");
    let so = vfs::debug_so();
    let before = s.proxy.bytes_down();
    let mut child = peer::python_command()
        .arg("-c")
        .arg(PY_WRITER)
        .arg(so.with_extension(""))
        .arg(s.uri("py.buffer"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn python");
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(out.next().expect("a line").unwrap(), "committed");
    s.assert_small(s.proxy.bytes_down() - before, "python");
    writeln!(child.stdin.as_mut().unwrap()).unwrap();
    let txid = out.next().expect("the sync's TXID").unwrap();
    assert_eq!(txid.len(), 16, "{txid}");
    assert!(child.wait().unwrap().success());
    assert_eq!(s.restored_notes(), vec!["python".to_string()]);
}

#[test]
fn the_sqlite3_shell_commits_on_a_cold_20_mb_replica_before_downloading_it() {
    let s = setup("vfs-write-cold-shell");
    let so = vfs::debug_so();
    // The first statement's output tells when the commit returned; the shell then waits on
    // its input until the test has read the proxy's count.
    let mut shell = std::process::Command::new("sqlite3")
        .arg(":memory:")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sqlite3");
    let before = s.proxy.bytes_down();
    let stdin = shell.stdin.as_mut().unwrap();
    writeln!(stdin, ".bail on\n.load {}\n.open '{}'", so.with_extension("").display(), s.uri("shell.buffer")).unwrap();
    writeln!(stdin, "INSERT INTO notes (who) VALUES ('shell');\nSELECT 'committed';").unwrap();
    stdin.flush().unwrap();
    let mut out = BufReader::new(shell.stdout.take().unwrap()).lines();
    assert_eq!(out.next().expect("a line").unwrap(), "committed");
    s.assert_small(s.proxy.bytes_down() - before, "sqlite3 shell");
    let stdin = shell.stdin.as_mut().unwrap();
    writeln!(stdin, "SELECT sluice_sync();\n.quit").unwrap();
    let txid = out.next().expect("the sync's TXID").unwrap();
    assert_eq!(txid.len(), 16, "{txid}");
    assert!(shell.wait().unwrap().success());
    assert_eq!(s.restored_notes(), vec!["shell".to_string()]);
}
