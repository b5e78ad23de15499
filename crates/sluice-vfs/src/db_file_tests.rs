//! The main-file state machine against an in-memory fake replica.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_engine::restore::Target;
use sluice_ltx::TxId;

use super::*;
use crate::codes::rc;

const PS: u32 = 512;

struct FakeView {
    info: ViewInfo,
    /// Page n at index n-1; every byte of page n is `txid + n` (page 1 has a header-like
    /// prefix so the patching can be checked).
    pages: Vec<Vec<u8>>,
}

fn view(txid: u64, commit: u32) -> Arc<FakeView> {
    let pages = (1..=commit)
        .map(|n| {
            let mut p = vec![(txid as u8).wrapping_add(n as u8); PS as usize];
            if n == 1 {
                p[18] = 2; // WAL
                p[19] = 2;
                p[92..96].copy_from_slice(&7u32.to_be_bytes());
            }
            p
        })
        .collect();
    Arc::new(FakeView { info: ViewInfo { txid, page_size: PS, commit, timestamp_ms: txid as i64 * 1000 }, pages })
}

#[derive(Default)]
struct Fake {
    history: Mutex<Vec<Arc<FakeView>>>,
    fail: AtomicBool,
    /// Page reads that reached the fake storage.
    reads: AtomicUsize,
}

impl Fake {
    fn publish(&self, v: Arc<FakeView>) {
        self.history.lock().unwrap().push(v);
    }
}

impl Backend for Arc<Fake> {
    type View = FakeView;

    fn info(view: &FakeView) -> ViewInfo {
        view.info
    }

    fn latest(&self) -> Arc<FakeView> {
        self.history.lock().unwrap().last().unwrap().clone()
    }

    fn view_at(&self, target: Target) -> sluice_engine::Result<Arc<FakeView>> {
        let h = self.history.lock().unwrap();
        match target {
            Target::Txid(t) => h.iter().find(|v| v.info.txid == t.0).cloned(),
            _ => None,
        }
        .ok_or_else(|| sluice_engine::Error::TxidNotAvailable { txid: TxId(0), reason: "not in fake".into() })
    }

    fn read_page(&self, view: &Arc<FakeView>, pgno: u32, buf: &mut [u8]) -> sluice_engine::Result<()> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(sluice_engine::Error::Task("storage down".into()));
        }
        self.reads.fetch_add(1, Ordering::SeqCst);
        buf.copy_from_slice(&view.pages[pgno as usize - 1]);
        Ok(())
    }

    fn lag(&self) -> Option<Duration> {
        Some(Duration::from_secs(2))
    }

    fn description(&self) -> &str {
        "mem://fake"
    }
}

fn open() -> (Arc<Fake>, DbFile<Arc<Fake>>) {
    let fake = Arc::new(Fake::default());
    fake.publish(view(1, 3));
    let file = DbFile::new(fake.clone(), "app.db".into());
    (fake, file)
}

fn page(file: &mut DbFile<Arc<Fake>>, pgno: u32) -> Vec<u8> {
    let mut buf = vec![0; PS as usize];
    assert_eq!(file.read(u64::from(pgno - 1) * u64::from(PS), &mut buf).unwrap(), ReadOutcome::Full);
    buf
}

#[test]
fn a_transaction_keeps_its_view_and_the_next_one_sees_the_latest() {
    let (fake, mut f) = open();
    f.lock(lock::SHARED).unwrap();
    fake.publish(view(2, 4));
    assert_eq!(page(&mut f, 2)[0], 3, "old view while SHARED is held");
    assert_eq!(f.file_size(), 3 * u64::from(PS));
    assert_eq!(f.status().view.txid, 1);
    f.lock(lock::SHARED).unwrap(); // a repeated request changes nothing
    assert_eq!(f.view().txid, 1);
    f.unlock(lock::NONE).unwrap();
    assert_eq!(f.status().view.txid, 2, "outside a transaction, report what the next one reads");
    f.lock(lock::SHARED).unwrap();
    assert_eq!(page(&mut f, 2)[0], 4);
    assert_eq!(f.file_size(), 4 * u64::from(PS));
}

#[test]
fn the_file_size_follows_a_shrinking_commit() {
    let (fake, mut f) = open();
    fake.publish(view(2, 1));
    f.lock(lock::SHARED).unwrap();
    assert_eq!(f.file_size(), u64::from(PS));
    let mut buf = vec![9; PS as usize * 2];
    assert_eq!(f.read(0, &mut buf).unwrap(), ReadOutcome::Short);
    assert!(buf[PS as usize..].iter().all(|b| *b == 0), "zero-filled past the end");
}

#[test]
fn page_one_is_a_rollback_database_whose_counter_follows_the_txid() {
    let (fake, mut f) = open();
    f.lock(lock::SHARED).unwrap();
    let p1 = page(&mut f, 1);
    assert_eq!((p1[18], p1[19]), (1, 1));
    assert_eq!(&p1[24..28], &1u32.to_be_bytes());
    // The pager's own check reads 16 bytes at offset 24: the same bytes.
    let mut vers = [0u8; 16];
    f.read(24, &mut vers).unwrap();
    assert_eq!(&vers[..], &p1[24..40]);
    // The header read at open (100 bytes at 0).
    let mut head = [0u8; 100];
    f.read(0, &mut head).unwrap();
    assert_eq!(&head[..], &p1[..100]);
    f.unlock(lock::NONE).unwrap();
    fake.publish(view(7, 3)); // TXID 7 = the stored version-valid-for number
    f.lock(lock::SHARED).unwrap();
    let p1b = page(&mut f, 1);
    assert_ne!(&p1b[24..28], &p1b[92..96], "never equal: SQLite must not trust the header size");
    assert_ne!(&p1b[24..28], &p1[24..28], "a new view changes the counter");
}

#[test]
fn page_one_is_fetched_once_per_view() {
    let (fake, mut f) = open();
    for _ in 0..5 {
        f.lock(lock::SHARED).unwrap();
        let mut vers = [0u8; 16];
        f.read(24, &mut vers).unwrap();
        page(&mut f, 1);
        f.unlock(lock::NONE).unwrap();
    }
    assert_eq!(fake.reads.load(Ordering::SeqCst), 1, "five transactions on one view");
    fake.publish(view(2, 3));
    f.lock(lock::SHARED).unwrap();
    assert_eq!(&page(&mut f, 1)[24..28], &2u32.to_be_bytes());
    assert_eq!(fake.reads.load(Ordering::SeqCst), 2, "a new view, a new fetch");
}

#[test]
fn change_counters_differ_between_consecutive_txids() {
    let counters: std::collections::HashSet<u32> = (1..5000u64).map(|t| change_counter(t, 0)).collect();
    assert_eq!(counters.len(), 4999);
    assert_ne!(change_counter(5, 5), 5);
}

#[test]
fn reads_spanning_pages_and_unaligned_offsets() {
    let (_fake, mut f) = open();
    let mut buf = vec![0; 20];
    f.read(u64::from(PS) * 2 - 10, &mut buf).unwrap();
    assert_eq!(&buf[..10], &[3; 10]);
    assert_eq!(&buf[10..], &[4; 10]);
}

#[test]
fn storage_failures_are_read_errors_naming_the_page_and_leave_the_file_usable() {
    let (fake, mut f) = open();
    f.lock(lock::SHARED).unwrap();
    fake.fail.store(true, Ordering::SeqCst);
    let e = f.read(u64::from(PS), &mut vec![0; PS as usize]).unwrap_err();
    assert_eq!(e.sqlite_code(), rc::IOERR_READ);
    assert!(e.to_string().contains("page 2") && e.to_string().contains("mem://fake"), "{e}");
    fake.fail.store(false, Ordering::SeqCst);
    assert_eq!(page(&mut f, 2)[0], 3);
}

#[test]
fn time_travel_pins_later_transactions_until_latest() {
    let (fake, mut f) = open();
    fake.publish(view(2, 3));
    fake.publish(view(3, 3));
    f.lock(lock::SHARED).unwrap();
    f.set_target(Target::Txid(TxId(1)), "1").unwrap();
    assert_eq!(f.view().txid, 3, "the open transaction keeps its view");
    f.unlock(lock::NONE).unwrap();
    let s = f.status();
    assert_eq!((s.view.txid, s.pinned), (1, true));
    f.lock(lock::SHARED).unwrap();
    assert_eq!(page(&mut f, 3)[0], 4);
    f.unlock(lock::NONE).unwrap();
    fake.publish(view(4, 3));
    f.lock(lock::SHARED).unwrap();
    assert_eq!(f.view().txid, 1, "pinned: new TXIDs are not followed");
    f.unlock(lock::NONE).unwrap();
    f.set_target(Target::Latest, "latest").unwrap();
    f.lock(lock::SHARED).unwrap();
    assert_eq!((f.view().txid, f.status().pinned), (4, false));
}

#[test]
fn a_bad_time_travel_target_fails_and_keeps_the_pin() {
    let (_fake, mut f) = open();
    let e = f.set_target(Target::Txid(TxId(99)), "99").unwrap_err();
    assert!(matches!(e, Error::TimeTravel { .. }), "{e}");
    assert!(!f.status().pinned);
}

#[test]
fn lock_transitions_sqlite_never_makes_are_refused() {
    let (_fake, mut f) = open();
    assert!(matches!(f.lock(lock::EXCLUSIVE), Err(Error::LockTransition { from: 0, to: 4, .. })));
    f.lock(lock::SHARED).unwrap();
    f.lock(lock::RESERVED).unwrap();
    assert!(f.unlock(lock::RESERVED).is_err());
    f.unlock(lock::SHARED).unwrap();
    assert_eq!(f.lock_level(), lock::SHARED);
    f.unlock(lock::NONE).unwrap();
    f.unlock(lock::NONE).unwrap();
    assert_eq!(f.lock_level(), lock::NONE);
}
