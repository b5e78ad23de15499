//! The VFS's write mode without FFI (`sluice_engine::write::session`), on a `file://`
//! replica: transactions that grow and shrink the database, rollbacks, syncs; reads see the
//! buffer over the replica at every step; the replica restores exactly the model database;
//! a buffer left by a crash is replayed on reopen; a second writer is refused by the lease.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sluice_engine::Error;
use sluice_engine::read::{ReadOptions, Replica};
use sluice_engine::restore::{self, RestoreOptions};
use sluice_engine::write::WriterOptions;
use sluice_engine::write::buffer::Fsync;
use sluice_engine::write::compaction::Retention;
use sluice_engine::write::session::{WriteOptions, WriteSession};
use sluice_ltx::TxId;
use sluice_storage::ReplicaClient;

const PS: usize = 1024;

fn page(pgno: u32, version: u32) -> Vec<u8> {
    let mut p = vec![0u8; PS];
    for (i, b) in p.iter_mut().enumerate() {
        *b = (pgno.wrapping_mul(7) ^ version.wrapping_mul(13) ^ i as u32) as u8;
    }
    p
}

fn write_opts(buffer: &Path, fsync: Fsync) -> WriteOptions {
    WriteOptions {
        sync_interval: Duration::from_millis(200),
        buffer_path: buffer.to_path_buf(),
        fsync,
        buffer_max: 0,
        writer: WriterOptions {
            sync_interval: Duration::from_millis(200),
            levels: vec![Duration::from_secs(1)],
            snapshot_interval: Duration::from_secs(3600),
            retention: Retention {
                enabled: false,
                snapshot_retention: Duration::from_secs(3600),
                l0_retention: Duration::ZERO,
            },
            shutdown_sync_timeout: Duration::from_secs(10),
            lease_ttl: Duration::from_secs(600),
            limits: Default::default(),
        },
    }
}

/// For sessions the test "crashes" with `mem::forget`: their background loops go on in this
/// process, so they must not sync, upload or compact on their own while the test goes on.
fn crash_opts(buffer: &Path) -> WriteOptions {
    let mut o = write_opts(buffer, Fsync::Commit);
    o.sync_interval = Duration::from_secs(3600);
    o.writer.sync_interval = Duration::from_secs(3600);
    o.writer.levels = vec![Duration::from_secs(3600)];
    o
}

fn open_replica(dir: &Path) -> Arc<Replica> {
    let client = ReplicaClient::from_url(&format!("file://{}", dir.display())).unwrap();
    Replica::open_or_empty(client, ReadOptions { poll_interval: Duration::from_millis(100), ..ReadOptions::default() })
        .unwrap()
}

/// The model database's bytes.
fn image(model: &BTreeMap<u32, Vec<u8>>, commit: u32) -> Vec<u8> {
    let mut out = vec![0u8; commit as usize * PS];
    for (p, data) in model.range(..=commit) {
        out[(*p as usize - 1) * PS..*p as usize * PS].copy_from_slice(data);
    }
    out
}

/// Every page as the session reads it.
fn read_all(s: &WriteSession) -> Vec<u8> {
    let mut out = vec![0u8; s.commit_size() as usize * PS];
    for (i, chunk) in out.chunks_exact_mut(PS).enumerate() {
        s.read_page(i as u32 + 1, chunk).unwrap();
    }
    out
}

fn restored(replica: &Path, out: &Path) -> Vec<u8> {
    let client = ReplicaClient::from_url(&format!("file://{}", replica.display())).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(restore::restore(&client, out, &RestoreOptions { overwrite: true, ..Default::default() })).unwrap();
    std::fs::read(out).unwrap()
}

#[test]
fn transactions_syncs_and_reads_match_a_model() {
    let seed = sluice_testkit::seed();
    let tmp = tempfile::tempdir().unwrap();
    let replica_dir = tmp.path().join("replica");
    let r = open_replica(&replica_dir);
    let s = WriteSession::open(r, write_opts(&tmp.path().join("buf"), Fsync::Sync)).unwrap();
    let mut model: BTreeMap<u32, Vec<u8>> = BTreeMap::new();
    let mut commit = 0u32;
    let mut rng = seed;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for txn in 1..=120u32 {
        // Grow, shrink or rewrite; every tenth is rolled back.
        let new_commit = match next() % 5 {
            0 if commit > 4 => commit - (next() % 4) as u32 - 1,
            1 | 2 => commit + (next() % 6) as u32 + 1,
            _ => commit.max(1),
        };
        let mut writes = BTreeMap::new();
        for p in commit + 1..=new_commit {
            writes.insert(p, page(p, txn));
        }
        for _ in 0..3 {
            let p = (next() % u64::from(new_commit)) as u32 + 1;
            writes.insert(p, page(p, txn));
        }
        for (p, d) in &writes {
            s.write_page(*p, d).unwrap();
        }
        if txn % 10 == 0 {
            s.rollback().unwrap();
        } else {
            s.commit(new_commit).unwrap();
            model.extend(writes);
            model.retain(|p, _| *p <= new_commit);
            commit = new_commit;
        }
        if txn % 7 == 0 {
            s.sync_now().unwrap();
        }
        assert_same(&read_all(&s), &image(&model, commit), &format!("reads after transaction {txn} (SEED={seed})"));
    }
    s.close().unwrap();
    let got = restored(&replica_dir, &tmp.path().join("out.db"));
    assert_same(&got, &image(&model, commit), &format!("the replica restores the model (SEED={seed})"));
    // A fresh reader (another process) sees the same.
    let fresh = Replica::open(
        ReplicaClient::from_url(&format!("file://{}", replica_dir.display())).unwrap(),
        ReadOptions::default(),
    )
    .unwrap();
    let v = fresh.latest();
    let mut buf = vec![0u8; PS];
    fresh.read_page(&v, commit, &mut buf).unwrap();
    assert_eq!(buf, model[&commit]);
}

#[test]
fn a_crashed_writers_buffer_is_replayed_and_a_second_writer_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let replica_dir = tmp.path().join("replica");
    let buffer = tmp.path().join("buf");
    let r = open_replica(&replica_dir);
    let s = WriteSession::open(r.clone(), crash_opts(&buffer)).unwrap();
    for p in 1..=4 {
        s.write_page(p, &page(p, 1)).unwrap();
    }
    s.commit(4).unwrap();
    s.sync_now().unwrap();

    // Another writer (its own buffer and staging) is refused while this one holds the lease.
    match WriteSession::open(open_replica(&replica_dir), write_opts(&tmp.path().join("other"), Fsync::Commit)) {
        Err(Error::Conflict { reason, .. }) => assert!(reason.contains("another sluice daemon"), "{reason}"),
        Err(e) => panic!("expected a lease conflict, got {e}"),
        Ok(_) => panic!("a second writer was let in"),
    }

    // Committed (fsynced into the buffer) but never synced, then the process dies.
    s.write_page(2, &page(2, 2)).unwrap();
    s.write_page(5, &page(5, 2)).unwrap();
    s.commit(5).unwrap();
    s.write_page(3, &page(3, 9)).unwrap(); // open at the crash: lost
    std::mem::forget(s);
    drop(r);

    let r2 = open_replica(&replica_dir);
    let s2 = WriteSession::open(r2, write_opts(&buffer, Fsync::Commit)).unwrap();
    assert_eq!(s2.pending().0, 1, "the committed transaction came back");
    let want: Vec<u8> = [page(1, 1), page(2, 2), page(3, 1), page(4, 1), page(5, 2)].concat();
    assert_eq!(read_all(&s2), want);
    s2.close().unwrap();
    assert_eq!(restored(&replica_dir, &tmp.path().join("out.db")), want);
}

/// Equal images, or the first differing page named.
#[track_caller]
fn assert_same(got: &[u8], want: &[u8], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: database size in pages {} vs {}", got.len() / PS, want.len() / PS);
    if let Some(i) = got.chunks(PS).zip(want.chunks(PS)).position(|(a, b)| a != b) {
        panic!("{what}: page {} differs", i + 1);
    }
}

/// A crash after a sync staged its L0 file but before the buffer recorded the sync: the
/// replica is then past the buffer's base by a file this buffer made, and the transactions
/// committed after that sync began must still come back.
#[test]
fn a_crash_between_staging_a_sync_and_recording_it_keeps_later_commits() {
    let tmp = tempfile::tempdir().unwrap();
    let replica_dir = tmp.path().join("replica");
    let buffer = tmp.path().join("buf");
    let r = open_replica(&replica_dir);
    let s = WriteSession::open(r.clone(), crash_opts(&buffer)).unwrap();
    for p in 1..=3 {
        s.write_page(p, &page(p, 1)).unwrap();
    }
    s.commit(3).unwrap();
    s.sync_now().unwrap();
    s.write_page(2, &page(2, 2)).unwrap();
    s.commit(3).unwrap();
    // The buffer as it was before the next sync recorded itself in it.
    let before_sync = std::fs::read(&buffer).unwrap();
    s.sync_now().unwrap();
    std::mem::forget(s);
    drop(r);
    // The process dies after the second sync staged (and uploaded) its file, before the
    // buffer kept the sync record, with one more commit after it: the buffer as it was before
    // that sync, plus the later commit.
    std::fs::write(&buffer, &before_sync).unwrap();
    {
        let mut b = sluice_engine::write::buffer::WriteBuffer::recover(&buffer, Fsync::Commit).unwrap().unwrap();
        b.write_page(4, &page(4, 3)).unwrap();
        b.commit(4).unwrap();
    }

    let r2 = open_replica(&replica_dir);
    let s2 = WriteSession::open(r2, write_opts(&buffer, Fsync::Commit)).unwrap();
    let want: Vec<u8> = [page(1, 1), page(2, 2), page(3, 1), page(4, 3)].concat();
    assert_eq!(read_all(&s2), want, "nothing committed was lost");
    s2.close().unwrap();
    assert_eq!(restored(&replica_dir, &tmp.path().join("out.db")), want);
}

/// A sync whose local file cannot be written (here its folder is not a folder; in life a
/// full disk) fails, and the next sync takes the same TXID: the replica's TXIDs stay one
/// unbroken chain and it restores the database.
#[test]
fn a_failed_sync_leaves_no_gap_in_the_txids() {
    let tmp = tempfile::tempdir().unwrap();
    let replica_dir = tmp.path().join("replica");
    let buffer = tmp.path().join("buf");
    let s = WriteSession::open(open_replica(&replica_dir), crash_opts(&buffer)).unwrap();
    s.write_page(1, &page(1, 1)).unwrap();
    s.commit(1).unwrap();
    assert_eq!(s.sync_now().unwrap(), TxId(1));

    s.write_page(2, &page(2, 2)).unwrap();
    s.commit(2).unwrap();
    let l0 = tmp.path().join("buf.sluice").join("ltx").join("0");
    let away = tmp.path().join("l0-away");
    std::fs::rename(&l0, &away).unwrap();
    std::fs::write(&l0, b"not a folder").unwrap();
    assert!(s.sync_now().is_err(), "a sync that cannot stage its file fails");
    std::fs::remove_file(&l0).unwrap();
    std::fs::rename(&away, &l0).unwrap();
    assert_eq!(s.sync_now().unwrap(), TxId(2), "the failed sync's TXID is taken again");
    s.close().unwrap();
    let want: Vec<u8> = [page(1, 1), page(2, 2)].concat();
    assert_eq!(restored(&replica_dir, &tmp.path().join("out.db")), want);
}

/// `wait_durable` right after a commit, whenever the periodic sync happens to be (before,
/// during or after writing its file), waits for exactly that commit: it neither gives up nor
/// waits for a TXID no sync will make.
#[test]
fn wait_durable_after_each_commit_sees_it_synced() {
    let seed = sluice_testkit::seed();
    let tmp = tempfile::tempdir().unwrap();
    let replica_dir = tmp.path().join("replica");
    let mut opts = write_opts(&tmp.path().join("buf"), Fsync::Sync);
    opts.sync_interval = Duration::from_millis(1);
    let s = WriteSession::open(open_replica(&replica_dir), opts).unwrap();
    let mut rng = seed | 1;
    for txn in 1..=300u32 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let p = (txn % 8) + 1;
        for q in 1..=p {
            s.write_page(q, &page(q, txn)).unwrap();
        }
        s.commit(8.max(p)).unwrap();
        std::thread::sleep(Duration::from_micros(rng % 1500));
        assert!(s.wait_durable(Duration::from_secs(30)), "commit {txn} never became durable (SEED={seed})");
        assert_eq!(s.pending().0, 0, "commit {txn}: nothing pending once durable");
    }
    s.close().unwrap();
}
