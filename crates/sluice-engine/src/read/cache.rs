//! Decoded pages, least recently used out first, within a byte budget. Keyed by the file a
//! frame came from and the page number: a page version in a file never changes, so an entry
//! stays right for every view, before and after polls and time travel.

use std::sync::Mutex;

use bytes::Bytes;
use lru::LruCache;
use sluice_ltx::TxId;

/// A page version: (level, min TXID, max TXID) of its file, and its number.
pub(crate) type PageKey = (u8, TxId, TxId, u32);

pub(crate) struct PageCache {
    budget: u64,
    inner: Mutex<Inner>,
}

struct Inner {
    lru: LruCache<PageKey, Bytes>,
    bytes: u64,
}

impl PageCache {
    pub(crate) fn new(budget: u64) -> Self {
        PageCache { budget, inner: Mutex::new(Inner { lru: LruCache::unbounded(), bytes: 0 }) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn get(&self, key: &PageKey) -> Option<Bytes> {
        self.lock().lru.get(key).cloned()
    }

    pub(crate) fn insert(&self, key: PageKey, page: Bytes) {
        if page.len() as u64 > self.budget {
            return;
        }
        let mut inner = self.lock();
        inner.bytes += page.len() as u64;
        if let Some(old) = inner.lru.put(key, page) {
            inner.bytes -= old.len() as u64;
        }
        while inner.bytes > self.budget {
            match inner.lru.pop_lru() {
                Some((_, p)) => inner.bytes -= p.len() as u64,
                None => break,
            }
        }
    }

    /// Drops every page (reads no longer need them: the hydrated copy serves them).
    pub(crate) fn clear(&self) {
        let mut inner = self.lock();
        inner.lru.clear();
        inner.bytes = 0;
    }

    #[cfg(test)]
    pub(crate) fn bytes(&self) -> u64 {
        self.lock().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stays_within_budget_and_evicts_least_recent() {
        let c = PageCache::new(3 * 4096);
        let key = |p| (0u8, TxId(1), TxId(1), p);
        for p in 1..=3 {
            c.insert(key(p), Bytes::from(vec![p as u8; 4096]));
        }
        assert!(c.get(&key(1)).is_some()); // 1 is now the most recent
        c.insert(key(4), Bytes::from(vec![4; 4096]));
        assert!(c.get(&key(2)).is_none(), "the least recently used page goes first");
        assert!(c.get(&key(1)).is_some() && c.get(&key(3)).is_some() && c.get(&key(4)).is_some());
        assert_eq!(c.bytes(), 3 * 4096);
        c.insert(key(4), Bytes::from(vec![5; 4096]));
        assert_eq!(c.bytes(), 3 * 4096, "replacing an entry does not count it twice");
    }
}
