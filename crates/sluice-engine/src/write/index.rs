//! The daemon's view of the replica: listed once at start, then kept up to date from its own
//! writes and deletes. As the replica's only writer it needs no further LISTs, which keeps an
//! idle database free of requests.

use std::sync::{Arc, Mutex, MutexGuard};

use sluice_ltx::TxId;
use sluice_storage::{FileInfo, ReplicaClient};

use crate::error::Result;
use crate::restore::{SNAPSHOT_LEVEL, list_all};

/// Files per level, sorted by (min, max).
#[derive(Clone, Debug)]
pub struct ReplicaIndex {
    levels: Vec<Vec<FileInfo>>,
}

impl Default for ReplicaIndex {
    /// An empty replica.
    fn default() -> Self {
        ReplicaIndex { levels: vec![Vec::new(); usize::from(SNAPSHOT_LEVEL) + 1] }
    }
}

/// Shared, synchronously locked (never held across an await).
pub type SharedIndex = Arc<Mutex<ReplicaIndex>>;

impl ReplicaIndex {
    /// Lists every level once.
    pub async fn load(client: &ReplicaClient) -> Result<Self> {
        let mut idx = ReplicaIndex::default();
        for f in list_all(client, false).await? {
            idx.add(f);
        }
        Ok(idx)
    }

    /// Files of a level.
    pub fn files(&self, level: u8) -> &[FileInfo] {
        &self.levels[usize::from(level)]
    }

    /// Highest TXID at a level (0 if empty).
    pub fn level_max(&self, level: u8) -> TxId {
        self.files(level).iter().map(|f| f.max_txid).max().unwrap_or_default()
    }

    /// Highest TXID the level-0..8 chain reaches: what has been uploaded from local L0.
    /// Snapshots are left out on purpose: one may be taken at a local position whose L0
    /// file is still waiting to be uploaded.
    pub fn uploaded_max(&self) -> TxId {
        (0..SNAPSHOT_LEVEL).map(|l| self.level_max(l)).max().unwrap_or_default()
    }

    /// Highest TXID anywhere.
    pub fn max_txid(&self) -> TxId {
        (0..=SNAPSHOT_LEVEL).map(|l| self.level_max(l)).max().unwrap_or_default()
    }

    /// Records a new file.
    pub fn add(&mut self, f: FileInfo) {
        let v = &mut self.levels[usize::from(f.level)];
        v.push(f);
        v.sort_by_key(|f| (f.min_txid, f.max_txid));
    }

    /// Forgets deleted files.
    pub fn remove(&mut self, gone: &[FileInfo]) {
        for g in gone {
            self.levels[usize::from(g.level)].retain(|f| !(f.min_txid == g.min_txid && f.max_txid == g.max_txid));
        }
    }
}

/// Locks the index; a poisoned lock still holds consistent data (updates are single pushes).
pub fn lock(idx: &SharedIndex) -> MutexGuard<'_, ReplicaIndex> {
    idx.lock().unwrap_or_else(|p| p.into_inner())
}
