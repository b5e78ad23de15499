//! Replica storage for Sluice: LTX files in a Litestream 0.5-compatible layout on any
//! `object_store` backend.
//!
//! # Layout
//!
//! - [`url`]/`config`: replica URLs and [`ReplicaConfig`] → resolved target (secrets redacted
//!   from every description, error and `Debug`).
//! - `backend`: builds the `object_store` client (S3, GCS, Azure, local files).
//! - [`layout`]: key names (`<prefix>/ltx/<L>/…` vs S3's `<prefix>/<%04x L>/…`).
//! - `client`/`put`/`stream`: [`ReplicaClient`] — list, get, ranged and streaming reads,
//!   write-once puts, deletes; every operation goes through [`RetryPolicy`].
//! - `file_transfer`: [`ReplicaClient::put_file`] (multipart above [`MULTIPART_THRESHOLD`]) and
//!   [`ReplicaClient::get_to_file`], with memory bounded independently of file size.
//! - [`error`]: [`Error`] with `is_retryable`/`is_not_found`/`is_precondition`.
//! - `faulty` (feature `testkit`): [`FaultyStore`] for fault injection and request counting.
#![warn(missing_docs)]
#![deny(clippy::unwrap_used)]

mod backend;
mod client;
mod config;
pub mod error;
mod file_transfer;
pub mod layout;
mod local_put;
mod put;
mod redact;
mod retry;
mod stream;
pub mod url;

#[cfg(any(test, feature = "testkit"))]
mod faulty;

pub use client::{FileInfo, ReplicaClient, TIMESTAMP_METADATA};
pub use config::ReplicaConfig;
pub use error::{Cause, Denial, Error, Result};
pub use file_transfer::{MULTIPART_PART_SIZE, MULTIPART_PARTS_IN_FLIGHT, MULTIPART_THRESHOLD};
pub use layout::SNAPSHOT_LEVEL;
pub use put::format_rfc3339_nano;
pub use redact::redact_url;
pub use retry::RetryPolicy;
pub use url::StoreKind;

#[cfg(any(test, feature = "testkit"))]
pub use faulty::{Fault, FaultConfig, FaultyStore, InjectedFault, OpKind, RequestCounts, seed_from_env};

#[cfg(test)]
mod tests;
