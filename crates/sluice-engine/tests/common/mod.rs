//! Helpers shared by the engine's integration tests (each test file compiles this module
//! separately, so items some files do not use are allowed to be dead there).
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sluice_engine::read::{Replica, View};
use sluice_engine::restore::Target;
use sluice_ltx::TxId;
use sluice_storage::{FaultyStore, ReplicaClient, RetryPolicy, StoreKind};
use sluice_testkit::fixtures::{RestoreCase, load_manifest};

/// The restore target a fixture's manifest case asked Litestream for.
pub fn target_of(case: &RestoreCase) -> Target {
    if let Some(t) = case.txid_arg() {
        Target::Txid(TxId(t))
    } else if let Some(ts) = case.timestamp_arg() {
        Target::Timestamp(chrono::DateTime::parse_from_rfc3339(ts).expect("manifest timestamp").to_utc())
    } else {
        Target::Latest
    }
}

/// Every page of `view`, in order: the database file the view stands for.
pub fn image(r: &Arc<Replica>, v: &Arc<View>) -> Vec<u8> {
    let ps = v.page_size as usize;
    let mut out = vec![0u8; v.file_size() as usize];
    for (i, page) in out.chunks_exact_mut(ps).enumerate() {
        r.read_page(v, i as u32 + 1, page).unwrap_or_else(|e| panic!("page {} of TXID {}: {e}", i + 1, v.txid));
    }
    out
}

/// The sha256 Litestream's restore gave at `txid` on fixture `name`.
pub fn restored_sha_at(name: &str, txid: u64) -> String {
    let m = load_manifest(name);
    let case = m.restores.iter().find(|c| c.succeeded() && c.txid_arg() == Some(txid)).expect("a restore at that TXID");
    case.result.as_ref().unwrap().db_sha256.clone()
}

/// Copies `rel` from replica directory `from` to `to`.
pub fn copy_file(from: &Path, to: &Path, rel: &str) {
    std::fs::create_dir_all(to.join(rel).parent().unwrap()).unwrap();
    std::fs::copy(from.join(rel), to.join(rel)).unwrap();
}

/// A `file://` client for `dir` through a fault-injecting, request-counting store, with
/// `attempts` tries per request.
pub fn faulty_client(
    dir: &Path,
    seed: u64,
    attempts: u32,
) -> (ReplicaClient, FaultyStore<Arc<dyn object_store::ObjectStore>>) {
    let plain = ReplicaClient::from_url(&format!("file://{}", dir.display())).unwrap();
    let faulty = FaultyStore::new(plain.store().clone(), seed);
    let prefix: &str = plain.prefix().as_ref();
    let retry = RetryPolicy { max_attempts: attempts, base: Duration::from_millis(1), cap: Duration::from_millis(5) };
    let client = ReplicaClient::new(Arc::new(faulty.clone()), StoreKind::File, prefix).with_retry_policy(retry);
    (client, faulty)
}
