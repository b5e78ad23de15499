//! The real Litestream 0.5.17 restores files that Sluice's encoder wrote: a snapshot in
//! level 9 plus an incremental L0 file on top, at several page sizes.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use rusqlite::Connection;
use sluice_ltx::{Encoder, Header, TxId, format_filename};
use sluice_testkit::hash::{integrity_check, logical_sha256};
use sluice_testkit::peer::litestream_command;

fn make_db(path: &Path, page_size: u32) {
    let c = Connection::open(path).unwrap();
    c.execute_batch(&format!(
        "PRAGMA page_size={page_size}; PRAGMA journal_mode=DELETE;
         CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, body BLOB);
         CREATE INDEX t_name ON t(name);"
    ))
    .unwrap();
    let tx = c.unchecked_transaction().unwrap();
    for i in 0..3000 {
        tx.execute(
            "INSERT INTO t VALUES (?1, ?2, ?3)",
            (i, format!("name-{}", i * 7919 % 1000), vec![(i % 251) as u8; (i % 300) as usize]),
        )
        .unwrap();
    }
    tx.commit().unwrap();
}

fn pages(path: &Path, ps: u32) -> BTreeMap<u32, Vec<u8>> {
    let db = fs::read(path).unwrap();
    db.chunks(ps as usize).enumerate().map(|(i, p)| (i as u32 + 1, p.to_vec())).collect()
}

fn write_ltx(dir: &Path, level: u8, txid: u64, ps: u32, commit: u32, pages: &BTreeMap<u32, Vec<u8>>, ts: i64) {
    let d = dir.join("ltx").join(level.to_string());
    fs::create_dir_all(&d).unwrap();
    let path = d.join(format_filename(TxId(if level == 9 { 1 } else { txid }), TxId(txid)));
    let min = if level == 9 { 1 } else { txid };
    let mut enc = Encoder::new(Vec::new(), Header::new(ps, commit, TxId(min), TxId(txid), ts)).unwrap();
    for (&p, data) in pages.iter().filter(|(p, _)| **p <= commit) {
        enc.encode_page(p, data).unwrap();
    }
    fs::write(&path, enc.finish(0).unwrap().0).unwrap();
    let f = fs::File::options().write(true).open(&path).unwrap();
    f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ts as u64)).unwrap();
}

fn litestream_restore(replica: &Path, out: &Path) {
    let o = litestream_command()
        .args(["restore", "-o"])
        .arg(out)
        .arg(format!("file://{}", replica.display()))
        .output()
        .unwrap();
    assert!(o.status.success(), "litestream restore failed: {}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn litestream_restores_sluice_snapshot_and_incremental() {
    for ps in [1024u32, 4096, 65536] {
        let tmp = tempfile::tempdir().unwrap();
        let (db, replica) = (tmp.path().join("src.db"), tmp.path().join("replica"));
        make_db(&db, ps);
        let before = pages(&db, ps);
        write_ltx(&replica, 9, 1, ps, before.len() as u32, &before, 1_795_000_000_000);

        let out1 = tmp.path().join("out1.db");
        litestream_restore(&replica, &out1);
        assert_eq!(logical_sha256(&out1), logical_sha256(&db), "page size {ps}: snapshot");

        // Change the database (updates, deletes, growth) and ship only the changed pages.
        let c = Connection::open(&db).unwrap();
        c.execute_batch(
            "UPDATE t SET name = 'changed' WHERE id % 500 = 0; DELETE FROM t WHERE id BETWEEN 1000 AND 1010;
             INSERT INTO t SELECT id + 100000, name, body FROM t WHERE id < 200;",
        )
        .unwrap();
        drop(c);
        let after = pages(&db, ps);
        let changed: BTreeMap<u32, Vec<u8>> =
            after.iter().filter(|(p, d)| before.get(p) != Some(d)).map(|(p, d)| (*p, d.clone())).collect();
        assert!(!changed.is_empty() && changed.len() < after.len());
        write_ltx(&replica, 0, 2, ps, after.len() as u32, &changed, 1_795_000_001_000);

        let out2 = tmp.path().join("out2.db");
        litestream_restore(&replica, &out2);
        assert_eq!(logical_sha256(&out2), logical_sha256(&db), "page size {ps}: incremental");
        assert_eq!(integrity_check(&out2), "ok");
    }
}
