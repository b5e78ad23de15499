//! Storage outages as one database's replication sees them. Transient failures are retried
//! forever with capped, jittered exponential backoff while capture goes on locally; an outage
//! is logged once when it begins and once when it ends, not once per retry. Only errors no
//! retry can fix (see [`is_permanent`]) stop replication.

use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rand::RngExt;
use tokio::time::Instant;

use crate::error::Error;
use crate::write::metrics::DbMetrics;
use crate::write::now_ms;

/// True for errors that no retry can fix: a conflict with another writer, a bad URL or
/// config, missing or rejected credentials, a bucket that does not exist.
pub fn is_permanent(e: &Error) -> bool {
    match e {
        Error::Storage(s) => s.is_permanent(),
        Error::Conflict { .. } | Error::LocalState { .. } => true,
        _ => false,
    }
}

/// Whether storage is failing, and since when; shared by the tasks of one database.
#[derive(Debug, Default)]
pub struct Outage {
    state: Mutex<Option<State>>,
}

#[derive(Debug)]
struct State {
    since: Instant,
    failures: u64,
}

impl Outage {
    /// Records a failed storage operation `op`; logs only the first of an outage.
    pub fn failed(&self, metrics: &DbMetrics, op: &str, e: &Error) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match state.as_mut() {
            Some(s) => {
                s.failures += 1;
                tracing::debug!(db = %metrics.db, op, error = %e, failures = s.failures, "storage still unavailable");
            }
            None => {
                *state = Some(State { since: Instant::now(), failures: 1 });
                metrics.outage_since_ms.store(now_ms() as u64, Ordering::Relaxed);
                tracing::warn!(db = %metrics.db, op, error = %e,
                    "storage unavailable; retrying with backoff until it answers (changes are kept locally meanwhile)");
            }
        }
    }

    /// Whether an outage is going on (the last storage operation failed).
    pub fn is_active(&self) -> bool {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).is_some()
    }

    /// Records a successful storage operation; logs the end of an outage.
    pub fn succeeded(&self, metrics: &DbMetrics) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = state.take() {
            metrics.outage_since_ms.store(0, Ordering::Relaxed);
            tracing::info!(db = %metrics.db, after = ?s.since.elapsed(), failed_attempts = s.failures,
                "storage available again; catching up");
        }
    }
}

/// Capped exponential backoff with jitter: the n-th consecutive failure waits a random time
/// between half and all of `min(cap, base * 2^n)`, so daemons that failed together do not
/// retry together.
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    failures: u32,
}

impl Backoff {
    /// A backoff starting at `base`, never waiting longer than `cap`.
    pub fn new(base: Duration, cap: Duration) -> Self {
        Backoff { base, cap: cap.max(base), failures: 0 }
    }

    /// The wait before the next attempt after one more failure.
    pub fn next_delay(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let factor = 1u32.checked_shl(self.failures - 1).unwrap_or(u32::MAX);
        let ceiling = self.base.saturating_mul(factor).min(self.cap);
        // At least half the ceiling: full jitter from zero would retry at once half the time.
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(rand::rng().random_range(nanos / 2..=nanos))
    }

    /// Forgets earlier failures after a success.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let first = b.next_delay();
        assert!((Duration::from_millis(50)..=Duration::from_millis(100)).contains(&first), "{first:?}");
        for _ in 0..20 {
            assert!(b.next_delay() <= Duration::from_secs(2));
        }
        assert!(b.next_delay() >= Duration::from_secs(1), "stays near the cap once reached");
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
