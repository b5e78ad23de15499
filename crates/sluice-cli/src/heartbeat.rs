//! `heartbeat-url`: an HTTP GET once per `heartbeat-interval` while every database replicates
//! successfully (Litestream's dead man's switch for services such as healthchecks.io). A
//! database that failed since the last ping (a storage outage, a failed upload, capture or
//! local write), or that has never reached its replica, holds the ping back.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use sluice_engine::write::metrics::DbMetrics;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::registry::Registry;

/// How often the databases' health is looked at (no network involved).
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// Bound on one ping.
const PING_TIMEOUT: Duration = Duration::from_secs(10);

/// Error counters whose growth means a database failed.
fn errors(m: &DbMetrics) -> u64 {
    [&m.errors_sync, &m.errors_upload, &m.errors_capture].iter().map(|c| c.load(Ordering::Relaxed)).sum()
}

/// Why no ping may be sent now, if so.
fn unhealthy(dbs: &[Arc<DbMetrics>], seen: &mut HashMap<String, u64>) -> Option<String> {
    let mut why = None;
    // Databases come and go (directories, the control socket): forget the ones gone.
    let names: std::collections::HashSet<&str> = dbs.iter().map(|m| m.db.as_str()).collect();
    seen.retain(|db, _| names.contains(db.as_str()));
    for m in dbs {
        let now = errors(m);
        let failed = seen.insert(m.db.clone(), now).is_some_and(|before| before != now);
        if why.is_some() {
            continue;
        }
        if m.outage_since_ms.load(Ordering::Relaxed) != 0 {
            why = Some(format!("{}: its replica is unreachable", m.db));
        } else if failed {
            why = Some(format!("{}: replication failed", m.db));
        } else if m.replica_txid.load(Ordering::Relaxed) == 0 {
            why = Some(format!("{}: nothing replicated yet", m.db));
        }
    }
    why
}

/// Pings `url` until `shutdown`.
pub async fn run(url: String, interval: Duration, registry: Registry, mut shutdown: watch::Receiver<bool>) {
    let client = match reqwest::Client::builder().timeout(PING_TIMEOUT).build() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "heartbeat disabled: cannot build an HTTP client");
            return;
        }
    };
    let mut seen: HashMap<String, u64> = HashMap::new();
    unhealthy(&registry.metrics(), &mut seen);
    let failed_before = registry.failed();
    let mut last_ping: Option<Instant> = None;
    // A failure since the last ping holds the next one back.
    let mut failed_since_ping = false;
    let mut tick = tokio::time::interval(CHECK_EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            r = shutdown.changed() => if r.is_err() || *shutdown.borrow() { return },
        }
        let mut why = unhealthy(&registry.metrics(), &mut seen);
        if registry.failed() > failed_before {
            // A database whose replication ended is no longer in the registry's metrics, and
            // must hold the pings back all the same until the daemon is restarted.
            why.get_or_insert_with(|| "a database stopped replicating".to_string());
        }
        if let Some(why) = &why {
            if !failed_since_ping {
                tracing::warn!(reason = %why, "heartbeat held back: a database is not replicating");
            }
            failed_since_ping = true;
            continue;
        }
        if last_ping.is_some_and(|t| t.elapsed() < interval) {
            continue;
        }
        match client.get(&url).send().await.and_then(|r| r.error_for_status()) {
            Ok(r) => tracing::debug!(status = %r.status(), "heartbeat sent"),
            // Counted as sent: the next try waits an interval rather than hammering the URL.
            Err(e) => tracing::warn!(error = %e, "heartbeat ping failed"),
        }
        last_ping = Some(Instant::now());
        failed_since_ping = false;
    }
}
