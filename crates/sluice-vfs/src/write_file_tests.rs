use std::collections::BTreeMap;
use std::sync::Mutex;

use super::*;
use crate::codes::lock::{EXCLUSIVE, NONE, RESERVED, SHARED};

/// Committed pages, commit size, the open transaction's pages.
type Pages = (BTreeMap<u32, Vec<u8>>, u32, BTreeMap<u32, Vec<u8>>);

/// A write session in memory.
#[derive(Default)]
struct Fake {
    st: Mutex<Pages>,
    locks: LockManager,
    fail_writes: std::sync::atomic::AtomicBool,
}

impl WriteBackend for std::sync::Arc<Fake> {
    fn read_page(&self, pgno: u32, buf: &mut [u8]) -> sluice_engine::Result<()> {
        let st = self.st.lock().unwrap();
        match st.2.get(&pgno).or_else(|| st.0.get(&pgno)) {
            Some(p) => buf.copy_from_slice(p),
            None => buf.fill(0),
        }
        Ok(())
    }
    fn write_page(&self, pgno: u32, data: &[u8]) -> sluice_engine::Result<()> {
        if self.fail_writes.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(sluice_engine::Error::BufferFull { path: "/b".into(), limit: 1 });
        }
        self.st.lock().unwrap().2.insert(pgno, data.to_vec());
        Ok(())
    }
    fn commit(&self, commit: u32) -> sluice_engine::Result<()> {
        let mut st = self.st.lock().unwrap();
        let open = std::mem::take(&mut st.2);
        st.0.extend(open);
        st.0.retain(|p, _| *p <= commit);
        st.1 = commit;
        Ok(())
    }
    fn rollback(&self) -> sluice_engine::Result<()> {
        self.st.lock().unwrap().2.clear();
        Ok(())
    }
    fn commit_size(&self) -> u32 {
        self.st.lock().unwrap().1
    }
    fn page_size(&self) -> u32 {
        512
    }
    fn locks(&self) -> &LockManager {
        &self.locks
    }
    fn description(&self) -> &str {
        "fake"
    }
}

fn page(b: u8) -> Vec<u8> {
    vec![b; 512]
}

#[test]
fn a_transaction_commits_at_the_unlock_with_its_size() {
    let fake = std::sync::Arc::new(Fake::default());
    let mut w = WriteFile::new(fake.clone(), 1, "a.db".into());
    let mut r = WriteFile::new(fake.clone(), 2, "a.db".into());
    w.lock(SHARED).unwrap();
    assert_eq!(w.file_size(), 0);
    w.lock(RESERVED).unwrap();
    w.lock(EXCLUSIVE).unwrap();
    w.write(0, &page(1)).unwrap();
    w.write(1024, &page(3)).unwrap();
    assert_eq!(w.file_size(), 3 * 512, "the writer sees its growth");
    assert_eq!(r.lock(SHARED).unwrap_err().sqlite_code(), crate::codes::rc::BUSY, "no reader during EXCLUSIVE");
    assert_eq!(fake.commit_size(), 0, "nothing committed before the unlock");
    w.unlock(SHARED).unwrap();
    assert_eq!(fake.commit_size(), 3);
    r.lock(SHARED).unwrap();
    assert_eq!(r.file_size(), 3 * 512);
    let mut buf = vec![0u8; 512];
    assert_eq!(r.read(1024, &mut buf).unwrap(), ReadOutcome::Full);
    assert_eq!(buf, page(3));
    r.read(0, &mut buf).unwrap();
    assert_eq!((buf[18], buf[19]), (1, 1), "page 1 says rollback journal");
    r.unlock(NONE).unwrap();

    // Shrink: truncate, commit.
    w.lock(RESERVED).unwrap();
    w.lock(EXCLUSIVE).unwrap();
    w.truncate(512).unwrap();
    assert_eq!(w.file_size(), 512);
    w.unlock(NONE).unwrap();
    assert_eq!(fake.commit_size(), 1);
    assert_eq!(w.lock_level(), NONE);
}

#[test]
fn a_transaction_with_a_failed_write_rolls_back_and_partial_pages_are_refused() {
    let fake = std::sync::Arc::new(Fake::default());
    let mut w = WriteFile::new(fake.clone(), 1, "a.db".into());
    w.lock(SHARED).unwrap();
    w.lock(EXCLUSIVE).unwrap();
    w.write(0, &page(1)).unwrap();
    w.unlock(SHARED).unwrap();
    w.lock(EXCLUSIVE).unwrap();
    w.write(512, &page(2)).unwrap();
    fake.fail_writes.store(true, std::sync::atomic::Ordering::Relaxed);
    let e = w.write(1024, &page(3)).unwrap_err();
    assert_eq!(e.sqlite_code(), crate::codes::rc::FULL, "{e}");
    assert!(w.write(100, &page(3)[..100]).is_err(), "not a whole page");
    w.unlock(SHARED).unwrap();
    assert_eq!(fake.commit_size(), 1, "the failed transaction is gone");
    assert!(fake.st.lock().unwrap().2.is_empty());
    fake.fail_writes.store(false, std::sync::atomic::Ordering::Relaxed);
    drop(w);
    assert!(!fake.locks.reserved());
}
