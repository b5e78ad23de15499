//! The Rust API: a program that links SQLite itself (here rusqlite's bundled one) registers
//! the VFS with a typed config through `sluice_vfs::register` — no `.so`, no environment, and
//! still no second SQLite (the crate calls the linked one through its API table).

mod common;

use std::time::Duration;

use common::{content_of, content_of_file, file_url, restore};
use rusqlite::{Connection, OpenFlags};
use sluice_engine::restore::Target;
use sluice_testkit::fixtures::copy_replica_to;
use sluice_vfs::{Config, ReadOptions};

#[test]
// rusqlite marks auto-extension registration `unsafe` (foreign code runs for every open).
#[allow(unsafe_code)]
fn register_with_a_typed_config() {
    let tmp = tempfile::tempdir().unwrap();
    let url = file_url(&copy_replica_to("pagesize-1024", tmp.path().join("replica")));
    let expected = content_of_file(&restore(&url, Target::Latest, tmp.path()));

    let init = sluice_vfs::register(Config {
        replica_url: Some(url),
        read: ReadOptions { poll_interval: Duration::from_millis(200), ..ReadOptions::default() },
        ..Config::default()
    });
    // SAFETY: the entry point has the signature SQLite calls auto-extensions with.
    unsafe { rusqlite::auto_extension::register_auto_extension(init) }.unwrap();
    Connection::open_in_memory().unwrap(); // runs the auto-extension: the VFS now exists

    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI;
    let conn = Connection::open_with_flags("file:app.db?vfs=sluice", flags).unwrap();
    assert_eq!(content_of(&conn).unwrap(), expected);
    let txid: String = conn.query_row("SELECT sluice_txid()", [], |r| r.get(0)).unwrap();
    assert_eq!(txid.len(), 16);
    // Connections on other VFSes do not get the functions.
    let plain = Connection::open_in_memory().unwrap();
    assert!(plain.query_row("SELECT sluice_txid()", [], |r| r.get::<_, String>(0)).is_err());
}
