//! The real Litestream 0.5.17 restores files that Sluice's encoder wrote: a snapshot in
//! level 9 plus an incremental L0 file on top, at several page sizes.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use rusqlite::Connection;
use sluice_ltx::{DatabaseChecksum, Encoder, Header, TxId, format_filename};
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

/// Database checksums (pre/post-apply) when `sums` is given: (before, after) of the whole image.
type Sums = Option<(u64, u64)>;

#[allow(clippy::too_many_arguments)]
fn write_ltx(
    dir: &Path,
    level: u8,
    txid: u64,
    ps: u32,
    commit: u32,
    pages: &BTreeMap<u32, Vec<u8>>,
    ts: i64,
    sums: Sums,
) {
    let d = dir.join("ltx").join(level.to_string());
    fs::create_dir_all(&d).unwrap();
    let path = d.join(format_filename(TxId(if level == 9 { 1 } else { txid }), TxId(txid)));
    let min = if level == 9 { 1 } else { txid };
    let mut h = Header::new(ps, commit, TxId(min), TxId(txid), ts);
    if let Some((pre, _)) = sums {
        h.flags = 0;
        h.pre_apply_checksum = if min == 1 { 0 } else { pre };
    }
    let mut enc = Encoder::new(Vec::new(), h).unwrap();
    for (&p, data) in pages.iter().filter(|(p, _)| **p <= commit) {
        enc.encode_page(p, data).unwrap();
    }
    fs::write(&path, enc.finish(sums.map_or(0, |(_, post)| post)).unwrap().0).unwrap();
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

fn image_checksum(pages: &BTreeMap<u32, Vec<u8>>) -> u64 {
    let mut c = DatabaseChecksum::new();
    for (p, d) in pages {
        c.add(*p, d);
    }
    c.value()
}

#[test]
fn litestream_restores_sluice_snapshot_and_incremental() {
    run(false);
}

/// Files carrying LTX database checksums (flags 0), which Litestream itself never writes:
/// Litestream 0.5.17 refuses them ("post-apply checksum not allowed": its compactor marks the
/// output NoChecksum but copies the last input's post-apply checksum). This pins that fact,
/// which is why Sluice writes NoChecksum files like Litestream does.
#[test]
fn litestream_rejects_files_with_database_checksums() {
    let err = std::panic::catch_unwind(|| run(true)).expect_err("Litestream accepted checksummed files");
    let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("post-apply checksum not allowed"), "unexpected failure: {msg}");
}

fn run(with_sums: bool) {
    for ps in [1024u32, 4096, 65536] {
        let tmp = tempfile::tempdir().unwrap();
        let (db, replica) = (tmp.path().join("src.db"), tmp.path().join("replica"));
        make_db(&db, ps);
        let before = pages(&db, ps);
        let sum_before = image_checksum(&before);
        write_ltx(
            &replica,
            9,
            1,
            ps,
            before.len() as u32,
            &before,
            1_795_000_000_000,
            with_sums.then_some((0, sum_before)),
        );

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
        let sums = with_sums.then_some((sum_before, image_checksum(&after)));
        write_ltx(&replica, 0, 2, ps, after.len() as u32, &changed, 1_795_000_001_000, sums);

        let out2 = tmp.path().join("out2.db");
        litestream_restore(&replica, &out2);
        assert_eq!(logical_sha256(&out2), logical_sha256(&db), "page size {ps}: incremental");
        assert_eq!(integrity_check(&out2), "ok");
    }
}
