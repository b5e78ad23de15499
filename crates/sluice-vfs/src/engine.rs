//! TEMPORARY: the signatures of `sluice_engine::read` (the engine's read path, landing on
//! main), so this crate compiles before it lands. Replaced by `pub use sluice_engine::read::*`.
#![allow(missing_docs, clippy::missing_errors_doc, dead_code)]

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sluice_engine::restore::Target;
use sluice_engine::{Error, Result};
use sluice_ltx::TxId;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ReadOptions {
    pub cache_bytes: u64,
    pub poll_interval: Duration,
    pub read_timeout: Duration,
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions {
            cache_bytes: 16 << 20,
            poll_interval: Duration::from_secs(1),
            read_timeout: Duration::from_secs(10),
        }
    }
}

pub struct Replica;

impl Replica {
    pub fn open_shared(_url: &str, _opts: ReadOptions) -> Result<Arc<Replica>> {
        Err(Error::Task("engine read path not merged yet".into()))
    }
    pub fn latest(&self) -> Arc<View> {
        unimplemented!()
    }
    pub fn view_at(self: &Arc<Self>, _target: Target) -> Result<Arc<View>> {
        unimplemented!()
    }
    pub fn read_page(self: &Arc<Self>, _view: &Arc<View>, _pgno: u32, _buf: &mut [u8]) -> Result<()> {
        unimplemented!()
    }
    pub fn lag(&self) -> Option<Duration> {
        None
    }
    pub fn description(&self) -> &str {
        ""
    }
}

pub struct View {
    pub txid: TxId,
    pub page_size: u32,
    pub commit: u32,
    pub timestamp_ms: i64,
}

impl View {
    pub fn file_size(&self) -> u64 {
        u64::from(self.commit) * u64::from(self.page_size)
    }
}

pub fn parse_time(_input: &str, _now: DateTime<Utc>) -> Result<Target> {
    unimplemented!()
}
