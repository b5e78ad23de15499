//! Helpers shared by the engine's integration tests (each test file compiles this module
//! separately, so items some files do not use are allowed to be dead there).
#![allow(dead_code)]

use sluice_engine::restore::Target;
use sluice_ltx::TxId;
use sluice_testkit::fixtures::RestoreCase;

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
