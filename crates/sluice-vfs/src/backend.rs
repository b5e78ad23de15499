//! What a database file needs from the engine, as a trait: the engine's `Replica` in
//! production, an in-memory fake in the state machine's unit tests (no storage, no FFI).

use std::sync::Arc;
use std::time::Duration;

use sluice_engine::restore::Target;

use crate::engine::{Replica, View};

/// The facts of one view (one TXID of the replica) the VFS presents to SQLite.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ViewInfo {
    /// The TXID of the state.
    pub txid: u64,
    /// Bytes per page.
    pub page_size: u32,
    /// Size of the database in pages.
    pub commit: u32,
    /// When the file that ends at this TXID was created (ms since the Unix epoch).
    pub timestamp_ms: i64,
}

impl ViewInfo {
    /// The database file size in bytes: always commit × page size, also after a shrink.
    pub fn file_size(&self) -> u64 {
        u64::from(self.commit) * u64::from(self.page_size)
    }
}

/// A replica opened for reading, shared by every connection that reads it.
pub trait Backend: Send + Sync + 'static {
    /// One immutable state of the replica.
    type View: Send + Sync + 'static;

    /// The facts of `view`.
    fn info(view: &Self::View) -> ViewInfo;
    /// The newest view the poller has published (cheap).
    fn latest(&self) -> Arc<Self::View>;
    /// The view as of `target`, planned as `sluice restore` plans it (blocking).
    fn view_at(&self, target: Target) -> sluice_engine::Result<Arc<Self::View>>;
    /// Reads page `pgno` (1-based) of `view` into `buf` (exactly one page; blocking, bounded
    /// by the read deadline).
    fn read_page(&self, view: &Arc<Self::View>, pgno: u32, buf: &mut [u8]) -> sluice_engine::Result<()>;
    /// Time since the last successful poll (`None` before the first).
    fn lag(&self) -> Option<Duration>;
    /// The redacted replica URL, for messages.
    fn description(&self) -> &str;
    /// Hydration progress in percent; `None` without hydration.
    fn hydration_progress(&self) -> Option<u8> {
        None
    }
}

impl Backend for Arc<Replica> {
    type View = View;

    fn info(view: &View) -> ViewInfo {
        ViewInfo { txid: view.txid.0, page_size: view.page_size, commit: view.commit, timestamp_ms: view.timestamp_ms }
    }

    fn latest(&self) -> Arc<View> {
        Replica::latest(self)
    }

    fn view_at(&self, target: Target) -> sluice_engine::Result<Arc<View>> {
        Replica::view_at(self, target)
    }

    fn read_page(&self, view: &Arc<View>, pgno: u32, buf: &mut [u8]) -> sluice_engine::Result<()> {
        Replica::read_page(self, view, pgno, buf)
    }

    fn lag(&self) -> Option<Duration> {
        Replica::lag(self)
    }

    fn description(&self) -> &str {
        Replica::description(self)
    }

    fn hydration_progress(&self) -> Option<u8> {
        Replica::hydration_progress(self)
    }
}
