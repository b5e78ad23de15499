//! SQLite's rollback-journal locks between the connections of this process that write one
//! replica (other processes are kept out by the replica lease): any number of SHARED, one
//! RESERVED beside them, PENDING stops new SHARED, EXCLUSIVE only when no other SHARED is
//! left. So a reader never sees half a transaction, as with files on a local disk.
//!
//! The levels follow `os_unix.c`: a failed EXCLUSIVE leaves the caller at PENDING, and
//! SQLite retries (through its busy handler) until the readers have gone.

use std::sync::Mutex;

use crate::codes::lock;

/// Whose locks: one number per open main-database file.
pub type Owner = u64;

#[derive(Debug, Default)]
struct State {
    /// Connections holding SHARED or more.
    shared: usize,
    /// The holder of RESERVED, PENDING or EXCLUSIVE (one at a time).
    writer: Option<Owner>,
    /// The writer's level: RESERVED, PENDING or EXCLUSIVE.
    level: i32,
}

/// The locks of one replica.
#[derive(Debug, Default)]
pub struct LockManager {
    state: Mutex<State>,
}

/// The lock could not be taken now (`SQLITE_BUSY`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Busy;

impl LockManager {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // Every update below leaves the counters consistent, so a poisoned lock is usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Raises `owner` from `held` to `want`; returns the level now held (PENDING when
    /// EXCLUSIVE has to wait for readers, which is also reported as [`Busy`]).
    pub fn lock(&self, owner: Owner, held: i32, want: i32) -> Result<i32, (i32, Busy)> {
        if want <= held {
            return Ok(held);
        }
        let mut st = self.state();
        let other_writer = st.writer.is_some_and(|w| w != owner);
        if held == lock::NONE {
            // A new reader: refused while a writer waits for or holds EXCLUSIVE.
            if other_writer && st.level >= lock::PENDING {
                return Err((held, Busy));
            }
            st.shared += 1;
            return if want == lock::SHARED {
                Ok(lock::SHARED)
            } else {
                self.raise(&mut st, owner, lock::SHARED, want)
            };
        }
        self.raise(&mut st, owner, held, want)
    }

    fn raise(&self, st: &mut State, owner: Owner, held: i32, want: i32) -> Result<i32, (i32, Busy)> {
        if st.writer.is_some_and(|w| w != owner) {
            return Err((held, Busy));
        }
        if want == lock::RESERVED {
            st.writer = Some(owner);
            st.level = lock::RESERVED;
            return Ok(lock::RESERVED);
        }
        // PENDING or EXCLUSIVE: PENDING at once, EXCLUSIVE once we are the only reader.
        st.writer = Some(owner);
        st.level = st.level.max(lock::PENDING);
        if want == lock::PENDING {
            return Ok(lock::PENDING);
        }
        if st.shared > 1 {
            return Err((lock::PENDING, Busy));
        }
        st.level = lock::EXCLUSIVE;
        Ok(lock::EXCLUSIVE)
    }

    /// Lowers `owner` from `held` to `to` (SHARED or NONE).
    pub fn unlock(&self, owner: Owner, held: i32, to: i32) {
        if to >= held {
            return;
        }
        let mut st = self.state();
        if held > lock::SHARED && st.writer == Some(owner) {
            st.writer = None;
            st.level = lock::NONE;
        }
        if to == lock::NONE && held >= lock::SHARED {
            st.shared = st.shared.saturating_sub(1);
        }
    }

    /// Whether any connection holds RESERVED or more (`xCheckReservedLock`).
    pub fn reserved(&self) -> bool {
        self.state().writer.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codes::lock::{EXCLUSIVE, NONE, PENDING, RESERVED, SHARED};

    #[test]
    fn readers_and_one_writer() {
        let m = LockManager::default();
        assert_eq!(m.lock(1, NONE, SHARED), Ok(SHARED));
        assert_eq!(m.lock(2, NONE, SHARED), Ok(SHARED));
        assert_eq!(m.lock(1, SHARED, RESERVED), Ok(RESERVED));
        assert!(m.reserved());
        assert_eq!(m.lock(2, SHARED, RESERVED), Err((SHARED, Busy)), "one RESERVED at a time");
        assert_eq!(m.lock(1, RESERVED, EXCLUSIVE), Err((PENDING, Busy)), "a reader is still there");
        assert_eq!(m.lock(3, NONE, SHARED), Err((NONE, Busy)), "PENDING keeps new readers out");
        m.unlock(2, SHARED, NONE);
        assert_eq!(m.lock(1, PENDING, EXCLUSIVE), Ok(EXCLUSIVE));
        assert_eq!(m.lock(3, NONE, SHARED), Err((NONE, Busy)));
        m.unlock(1, EXCLUSIVE, SHARED);
        assert!(!m.reserved());
        assert_eq!(m.lock(3, NONE, SHARED), Ok(SHARED));
        m.unlock(3, SHARED, NONE);
        m.unlock(1, SHARED, NONE);
        assert_eq!(m.lock(2, NONE, SHARED), Ok(SHARED));
        assert_eq!(m.lock(2, SHARED, EXCLUSIVE), Ok(EXCLUSIVE), "alone: straight to EXCLUSIVE");
        m.unlock(2, EXCLUSIVE, NONE);
        assert_eq!(m.state().shared, 0);
    }
}
