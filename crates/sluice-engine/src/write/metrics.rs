//! Per-database counters, rendered in the Prometheus text format on `/metrics`.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of one replicated database. All values are plain atomics: cheap to update.
#[derive(Debug, Default)]
pub struct DbMetrics {
    /// Database path (label).
    pub db: String,
    /// Last TXID captured locally.
    pub local_txid: AtomicU64,
    /// Last TXID uploaded.
    pub replica_txid: AtomicU64,
    /// Creation time (ms) of the oldest local file not yet uploaded; 0 when caught up.
    pub oldest_pending_ms: AtomicU64,
    /// Bytes uploaded.
    pub bytes_uploaded: AtomicU64,
    /// Files uploaded (all levels).
    pub files_uploaded: AtomicU64,
    /// When the last level-0 upload finished (ms since the epoch); 0 before the first.
    pub last_upload_ms: AtomicU64,
    /// WAL syncs that produced a file.
    pub syncs: AtomicU64,
    /// Compactions done.
    pub compactions: AtomicU64,
    /// Snapshots uploaded.
    pub snapshots: AtomicU64,
    /// Checkpoints run.
    pub checkpoints: AtomicU64,
    /// Files deleted by retention.
    pub files_deleted: AtomicU64,
    /// Errors by operation: sync, upload, compaction, snapshot, checkpoint, retention.
    pub errors_sync: AtomicU64,
    /// Upload errors.
    pub errors_upload: AtomicU64,
    /// Committed WAL frames found not captured after a sync.
    pub errors_capture: AtomicU64,
    /// Compaction or snapshot errors.
    pub errors_compaction: AtomicU64,
    /// Checkpoint errors.
    pub errors_checkpoint: AtomicU64,
    /// Retention errors.
    pub errors_retention: AtomicU64,
    /// WAL size in bytes at the last sync.
    pub wal_bytes: AtomicU64,
    /// Bytes of local files captured but not yet uploaded.
    pub pending_bytes: AtomicU64,
    /// When the current storage outage began (ms since the epoch); 0 when storage answers.
    pub outage_since_ms: AtomicU64,
    /// Replica validations by result (`validation.interval`): restored image matches the
    /// database and passes `integrity_check`.
    pub validations_ok: AtomicU64,
    /// Validations whose restored image differs from the database or fails `integrity_check`.
    pub validations_mismatch: AtomicU64,
    /// Validations that could not restore (a corrupt, missing or unreadable replica file).
    pub validations_error: AtomicU64,
    /// Validations skipped without a verdict (no local checksum at the replica's TXID).
    pub validations_skipped: AtomicU64,
    /// TXID of the last validation with a verdict (ok or not); 0 before the first.
    pub validation_last_txid: AtomicU64,
    /// When the last successful validation finished (ms since the epoch); 0 before the first.
    pub validation_last_success_ms: AtomicU64,
}

impl DbMetrics {
    /// Replication lag in seconds: age of the oldest captured but not uploaded change.
    pub fn lag_seconds(&self, now_ms: u64) -> f64 {
        match self.oldest_pending_ms.load(Ordering::Relaxed) {
            0 => 0.0,
            t => now_ms.saturating_sub(t) as f64 / 1000.0,
        }
    }

    /// Appends this database's series.
    pub fn render(&self, out: &mut String, now_ms: u64) {
        let db = self.db.replace('\\', "\\\\").replace('"', "\\\"");
        let g = |out: &mut String, name: &str, v: f64| {
            let _ = writeln!(out, "sluice_{name}{{db=\"{db}\"}} {v}");
        };
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
        g(out, "replication_lag_seconds", self.lag_seconds(now_ms));
        g(out, "local_txid", load(&self.local_txid));
        g(out, "replica_txid", load(&self.replica_txid));
        g(out, "last_upload_timestamp_seconds", load(&self.last_upload_ms) / 1000.0);
        g(out, "uploaded_bytes_total", load(&self.bytes_uploaded));
        g(out, "uploaded_files_total", load(&self.files_uploaded));
        g(out, "syncs_total", load(&self.syncs));
        g(out, "compactions_total", load(&self.compactions));
        g(out, "snapshots_total", load(&self.snapshots));
        g(out, "checkpoints_total", load(&self.checkpoints));
        g(out, "retention_deleted_files_total", load(&self.files_deleted));
        g(out, "wal_bytes", load(&self.wal_bytes));
        g(out, "pending_bytes", load(&self.pending_bytes));
        let outage = match self.outage_since_ms.load(Ordering::Relaxed) {
            0 => 0.0,
            t => now_ms.saturating_sub(t) as f64 / 1000.0,
        };
        g(out, "storage_outage_seconds", outage);
        for (result, a) in [
            ("ok", &self.validations_ok),
            ("mismatch", &self.validations_mismatch),
            ("error", &self.validations_error),
            ("skipped", &self.validations_skipped),
        ] {
            let _ = writeln!(out, "sluice_validation_total{{db=\"{db}\",result=\"{result}\"}} {}", load(a));
        }
        g(out, "validation_last_txid", load(&self.validation_last_txid));
        g(out, "validation_last_success_timestamp_seconds", load(&self.validation_last_success_ms) / 1000.0);
        for (op, a) in [
            ("sync", &self.errors_sync),
            ("capture", &self.errors_capture),
            ("upload", &self.errors_upload),
            ("compaction", &self.errors_compaction),
            ("checkpoint", &self.errors_checkpoint),
            ("retention", &self.errors_retention),
        ] {
            let _ = writeln!(out, "sluice_errors_total{{db=\"{db}\",operation=\"{op}\"}} {}", load(a));
        }
    }
}

/// Renders all databases with HELP/TYPE headers.
pub fn render_all(dbs: &[std::sync::Arc<DbMetrics>]) -> String {
    let now = crate::write::now_ms() as u64;
    let mut out = String::from(
        "# HELP sluice_replication_lag_seconds Age of the oldest change captured but not yet uploaded.\n\
         # TYPE sluice_replication_lag_seconds gauge\n",
    );
    for d in dbs {
        d.render(&mut out, now);
    }
    out
}
