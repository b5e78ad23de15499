//! Continuous replica validation (`validation: {interval}`, a replica's `validation-interval`):
//! proof that the backup restores. Every interval, per database, in turn:
//!
//! 1. the database's page checksums at a TXID just captured (read by its shipper under the
//!    write barrier, like a snapshot), then a sync so the replica holds that TXID;
//! 2. the replica restored at its latest TXID into a private temp file, through the one
//!    restore path (`sluice_engine::restore`); a corrupt, missing or undecodable file fails it;
//! 3. the local checksums moved forward to that TXID with the local L0 files, and compared
//!    with the restored image's; then `PRAGMA integrity_check` on the image.
//!
//! One database at a time (a daemon with 1,000 databases never restores them at once), and
//! never while a database's replica is in an outage.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sluice_config::{Config, DbConfig};
use sluice_engine::restore::{self, RestoreOptions, Target as RestoreTarget, file_label};
use sluice_engine::validate::PageSums;
use sluice_engine::write::metrics::DbMetrics;
use sluice_ltx::TxId;
use sluice_storage::ReplicaClient;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::registry::{Registry, Source};

/// How often due validations are looked for.
const TICK: Duration = Duration::from_secs(1);
/// Wait before trying again a validation that could not start (outage, barrier busy).
const RETRY: Duration = Duration::from_secs(5);
/// Restores retried when storage fails mid-way (a file retention removed after planning).
const ATTEMPTS: usize = 3;

/// One database whose replica is validated.
#[derive(Clone)]
pub struct Target {
    path: PathBuf,
    meta_dir: PathBuf,
    interval: Duration,
    client: ReplicaClient,
    metrics: Arc<DbMetrics>,
}

impl Target {
    /// `None` when validation is off for `db`. Databases registered through the control socket
    /// have no replica settings of their own: they follow `validation.interval`.
    pub fn new(
        cfg: &Config,
        db: &DbConfig,
        source: Source,
        client: &ReplicaClient,
        metrics: &Arc<DbMetrics>,
    ) -> Option<Self> {
        let own = db.replica.validation_interval;
        let interval = if source == Source::Socket { own.or(cfg.validation_interval) } else { own }?;
        Some(Target {
            path: db.path.clone(),
            meta_dir: db.meta_dir(),
            interval,
            client: client.clone(),
            metrics: metrics.clone(),
        })
    }
}

/// A validation's outcome.
enum Verdict {
    /// Restored, same checksum as the database, integrity check ok.
    Ok { txid: TxId, pages: u32 },
    /// Restored, but the image differs from the database or fails the integrity check.
    Mismatch { txid: TxId, reason: String, files: String },
    /// The replica did not restore.
    Error { txid: TxId, file: String, reason: String },
    /// Restored, but no local checksum at that TXID to compare with (not a failure).
    Skipped { txid: TxId, reason: String },
    /// Could not start now (outage, database busy or missing); tried again soon.
    Later(String),
}

/// Validates the registry's databases until `shutdown`.
pub async fn run(registry: Registry, mut shutdown: watch::Receiver<bool>) {
    let mut next: HashMap<PathBuf, Instant> = HashMap::new();
    let mut tick = tokio::time::interval(TICK);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            r = shutdown.changed() => if r.is_err() || *shutdown.borrow() { return },
        }
        let targets = registry.validation_targets();
        next.retain(|p, _| targets.iter().any(|t| &t.path == p));
        // In turn, never concurrently: each restore reads a whole replica.
        for t in targets {
            let due = *next.entry(t.path.clone()).or_insert_with(|| Instant::now() + t.interval);
            if Instant::now() < due {
                continue;
            }
            let verdict = tokio::select! {
                v = validate(&registry, &t) => v,
                _ = shutdown.changed() => return,
            };
            let wait = if matches!(verdict, Verdict::Later(_)) { RETRY.min(t.interval) } else { t.interval };
            record(&t, verdict);
            next.insert(t.path.clone(), Instant::now() + wait);
        }
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Metrics and the log line of one verdict.
fn record(t: &Target, verdict: Verdict) {
    let m = &t.metrics;
    let db = t.path.display();
    match verdict {
        Verdict::Ok { txid, pages } => {
            bump(&m.validations_ok);
            m.validation_last_txid.store(txid.0, Ordering::Relaxed);
            m.validation_last_success_ms.store(sluice_engine::write::now_ms() as u64, Ordering::Relaxed);
            tracing::info!(db = %db, %txid, pages, "replica validated: the restored image matches the database");
        }
        Verdict::Mismatch { txid, reason, files } => {
            bump(&m.validations_mismatch);
            m.validation_last_txid.store(txid.0, Ordering::Relaxed);
            tracing::error!(db = %db, %txid, files = %files, "replica validation failed: {reason}");
        }
        Verdict::Error { txid, file, reason } => {
            bump(&m.validations_error);
            m.validation_last_txid.store(txid.0, Ordering::Relaxed);
            tracing::error!(db = %db, %txid, file = %file, "replica validation failed: the replica does not restore: {reason}");
        }
        Verdict::Skipped { txid, reason } => {
            bump(&m.validations_skipped);
            tracing::info!(db = %db, %txid, "replica validation skipped: {reason}");
        }
        Verdict::Later(why) => tracing::debug!(db = %db, "replica validation postponed: {why}"),
    }
}

fn in_outage(m: &DbMetrics) -> bool {
    m.outage_since_ms.load(Ordering::Relaxed) != 0
}

async fn validate(registry: &Registry, t: &Target) -> Verdict {
    if in_outage(&t.metrics) {
        return Verdict::Later("the replica is unreachable".into());
    }
    if t.metrics.replica_txid.load(Ordering::Relaxed) == 0 {
        return Verdict::Later("nothing replicated yet".into());
    }
    // The database at a TXID just captured, then that TXID uploaded.
    let local = match registry.page_sums(&t.path) {
        Ok(rx) => match rx.await {
            Ok(Ok(Some(sums))) => sums,
            Ok(Ok(None)) => return Verdict::Later("the database is busy or missing".into()),
            Ok(Err(e)) => return Verdict::Later(format!("cannot read the database: {e}")),
            Err(_) => return Verdict::Later("replication stopped".into()),
        },
        Err(e) => return Verdict::Later(crate::logging::chain(&e)),
    };
    match registry.sync(&t.path) {
        Ok(rx) => match rx.await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Verdict::Later(format!("sync failed: {e}")),
            Err(_) => return Verdict::Later("replication stopped".into()),
        },
        Err(e) => return Verdict::Later(crate::logging::chain(&e)),
    }
    let mut last_err = None;
    for _ in 0..ATTEMPTS {
        if in_outage(&t.metrics) {
            return Verdict::Later("the replica became unreachable".into());
        }
        match restore_and_compare(t, local.clone()).await {
            Attempt::Done(v) => return v,
            Attempt::Storage(e) => last_err = Some(e),
        }
    }
    let (txid, file, reason) = last_err.unwrap_or_else(|| (TxId(0), String::new(), "no attempt".into()));
    Verdict::Error { txid, file, reason }
}

/// One restore, or a storage failure worth another try.
enum Attempt {
    Done(Verdict),
    Storage((TxId, String, String)),
}

async fn restore_and_compare(t: &Target, mut local: PageSums) -> Attempt {
    let plan = match restore::plan_restore(&t.client, RestoreTarget::Latest).await {
        Ok(p) => p,
        Err(sluice_engine::Error::Storage(e)) => return Attempt::Storage((TxId(0), String::new(), e.to_string())),
        // An empty replica, no snapshot, a gap: the replica cannot be restored.
        Err(e) => return Attempt::Done(Verdict::Error { txid: TxId(0), file: failed_file(&e), reason: e.to_string() }),
    };
    let txid = plan.last().map(|f| f.max_txid).unwrap_or_default();
    let files = plan.iter().map(file_label).collect::<Vec<_>>().join(",");
    // Local files first: retention may remove them while the restore runs.
    let l0 = t.meta_dir.join("ltx").join("0");
    let advanced = tokio::task::spawn_blocking(move || local.advance(&l0, txid).map(|r| r.map(|()| local))).await;
    let local = match advanced {
        Ok(Ok(Ok(sums))) => Some(sums),
        Ok(Ok(Err(gap))) => {
            tracing::debug!(db = %t.path.display(), reached = %gap.reached, %txid, "no local checksum at the replica's TXID");
            None
        }
        Ok(Err(e)) => return Attempt::Done(Verdict::Later(format!("cannot read local files: {e}"))),
        Err(e) => return Attempt::Done(Verdict::Later(format!("checksum task failed: {e}"))),
    };
    let dir = match tempfile::Builder::new().prefix("sluice-validate-").tempdir() {
        Ok(d) => d,
        Err(e) => return Attempt::Done(Verdict::Later(format!("cannot create a temp directory: {e}"))),
    };
    let out = dir.path().join("restored.db");
    let opts = RestoreOptions { target: RestoreTarget::Txid(txid), durable: false, ..RestoreOptions::default() };
    let summary = match restore::restore_plan(&t.client, plan, &out, &opts).await {
        Ok(s) => s,
        // Reading failed (a file retention removed after planning, a network error): planned
        // and tried again, and a failure only if it persists.
        Err(sluice_engine::Error::Storage(e)) => return Attempt::Storage((txid, String::new(), e.to_string())),
        // Our side (the temp directory's disk), not the replica's.
        Err(e @ (sluice_engine::Error::Io { .. } | sluice_engine::Error::Task(_))) => {
            return Attempt::Done(Verdict::Later(format!("restore failed locally: {e}")));
        }
        Err(e) => return Attempt::Done(Verdict::Error { txid, file: failed_file(&e), reason: e.to_string() }),
    };
    let Some(local) = local else {
        return Attempt::Done(Verdict::Skipped { txid, reason: format!("no local checksum at TXID {txid}") });
    };
    let verdict = tokio::task::spawn_blocking(move || compare(&out, &local, summary.page_size, txid, files)).await;
    drop(dir);
    Attempt::Done(verdict.unwrap_or_else(|e| Verdict::Later(format!("compare task failed: {e}"))))
}

/// Compares the restored image with the database's checksums, then checks its integrity.
fn compare(out: &Path, local: &PageSums, page_size: u32, txid: TxId, files: String) -> Verdict {
    let restored = match PageSums::of_file(out, txid, page_size) {
        Ok(s) => s,
        Err(e) => return Verdict::Later(format!("cannot read the restored image: {e}")),
    };
    if restored.checksum() != local.checksum() || restored.commit != local.commit {
        let pages = restored.differing_pages(local, 8);
        let reason = format!(
            "restored image at TXID {txid} differs from the database: checksum {:016x} vs {:016x}, {} vs {} pages, \
             differing pages {pages:?}",
            restored.checksum(),
            local.checksum(),
            restored.commit,
            local.commit
        );
        return Verdict::Mismatch { txid, reason, files };
    }
    match crate::restore_follow::run_check(out, "integrity_check") {
        Ok(problems) if problems.is_empty() => Verdict::Ok { txid, pages: restored.commit },
        Ok(problems) => Verdict::Mismatch {
            txid,
            reason: format!("integrity_check of the restored image: {}", problems.join("; ")),
            files,
        },
        Err(e) => Verdict::Mismatch {
            txid,
            reason: format!("integrity_check of the restored image: {}", crate::logging::chain(&e)),
            files,
        },
    }
}

/// The replica file an error names, if any.
fn failed_file(e: &sluice_engine::Error) -> String {
    use sluice_engine::Error as E;
    match e {
        E::Ltx { file, .. } | E::ChecksumChain { file, .. } | E::FileMismatch { file, .. } => file.clone(),
        E::Gap { next, .. } => next.clone(),
        _ => String::new(),
    }
}
