//! Database names in this process. Journals live in the private directory under a name
//! derived from the database name SQLite opened (SQLite derives the journal's name from it,
//! and the VFS sees nothing else), and SQLite treats a journal it finds while nobody holds
//! RESERVED as hot, to be played back. So a name open in write mode must belong to one
//! replica's write session alone: another replica written under the same name would play
//! back this one's journal, and a read-mode connection (which cannot see the write-mode
//! locks) would take a live journal for a hot one. Such opens are refused with a message
//! saying to use another name.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex, MutexGuard};

use crate::error::{Error, Result};

#[derive(Default)]
struct Entry {
    /// Replica of the write-mode connections (when `writers > 0`).
    url: String,
    writers: usize,
    readers: usize,
}

fn names() -> MutexGuard<'static, HashMap<String, Entry>> {
    static N: LazyLock<Mutex<HashMap<String, Entry>>> = LazyLock::new(Default::default);
    // Each update is complete before the guard drops: a poisoned map is consistent.
    N.lock().unwrap_or_else(|p| p.into_inner())
}

/// A connection's use of a database name; released when dropped.
#[derive(Debug)]
pub struct NameClaim {
    name: String,
    write: bool,
}

impl NameClaim {
    /// Claims `name` for a connection on `url`, writing or reading.
    pub fn claim(name: &str, url: &str, write: bool) -> Result<NameClaim> {
        let mut n = names();
        let e = n.entry(name.to_string()).or_default();
        let conflict = if write { e.readers > 0 || (e.writers > 0 && e.url != url) } else { e.writers > 0 };
        if conflict {
            let e_url = sluice_storage::redact_url(&e.url);
            let (w, r) = (e.writers, e.readers);
            if w == 0 && r == 0 {
                n.remove(name);
            }
            return Err(Error::NameInUse {
                db: name.to_string(),
                reason: if w > 0 {
                    format!("open in write mode on replica {e_url} by this process")
                } else {
                    format!("open in read mode by {r} connection(s) of this process")
                },
            });
        }
        if write {
            e.writers += 1;
            e.url = url.to_string();
        } else {
            e.readers += 1;
        }
        Ok(NameClaim { name: name.to_string(), write })
    }
}

impl Drop for NameClaim {
    fn drop(&mut self) {
        let mut n = names();
        if let Some(e) = n.get_mut(&self.name) {
            if self.write {
                e.writers = e.writers.saturating_sub(1);
            } else {
                e.readers = e.readers.saturating_sub(1);
            }
            if e.writers == 0 && e.readers == 0 {
                n.remove(&self.name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_name_belongs_to_one_replica() {
        let a = NameClaim::claim("n1.db", "file:///a", true).unwrap();
        let a2 = NameClaim::claim("n1.db", "file:///a", true).unwrap();
        assert!(NameClaim::claim("n1.db", "file:///b", true).is_err());
        let e = NameClaim::claim("n1.db", "file:///a", false).unwrap_err();
        assert!(e.to_string().contains("n1.db") && e.to_string().contains("write mode"), "{e}");
        drop((a, a2));
        let r = NameClaim::claim("n1.db", "file:///b", false).unwrap();
        let _r2 = NameClaim::claim("n1.db", "file:///c", false).unwrap();
        assert!(NameClaim::claim("n1.db", "file:///a", true).is_err());
        drop(r);
    }
}
