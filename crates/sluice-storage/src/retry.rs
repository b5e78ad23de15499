//! Bounded exponential backoff with full jitter, applied to every `ReplicaClient` operation.
//!
//! Only errors with [`Error::is_retryable`] are retried; permanent ones (401/403, not-found,
//! precondition, 400) surface on the first attempt. Full jitter (sleep uniformly in
//! `0..=min(cap, base * 2^n)`) spreads out clients that failed together, e.g. after an outage.

use std::future::Future;
use std::time::Duration;

use rand::RngExt;

use crate::error::Result;

/// How [`crate::ReplicaClient`] retries transient failures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total attempts, including the first (1 disables retries).
    pub max_attempts: u32,
    /// Backoff ceiling before the first retry.
    pub base: Duration,
    /// Upper bound on any single backoff.
    pub cap: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { max_attempts: 6, base: Duration::from_millis(50), cap: Duration::from_secs(2) }
    }
}

impl RetryPolicy {
    /// A policy that never retries.
    pub fn none() -> Self {
        Self { max_attempts: 1, ..Self::default() }
    }

    /// Upper bound of the jittered sleep after failed attempt number `attempt` (1-based).
    pub fn backoff_ceiling(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.saturating_sub(1)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    pub(crate) fn jittered(&self, attempt: u32) -> Duration {
        let ceiling = self.backoff_ceiling(attempt);
        if ceiling.is_zero() {
            return ceiling;
        }
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(rand::rng().random_range(0..=nanos))
    }
}

/// Runs `op` until it succeeds, fails permanently, or `policy.max_attempts` is used up.
///
/// `op` receives the 1-based attempt number, so callers can tell a first try from a retry
/// (a create-only put needs that: see `ReplicaClient::put`).
pub(crate) async fn with_retry<T, F, Fut>(policy: &RetryPolicy, mut op: F) -> Result<T>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let max = policy.max_attempts.max(1);
    let mut attempt = 1;
    loop {
        match op(attempt).await {
            Ok(v) => return Ok(v),
            Err(e) if attempt < max && e.is_retryable() => {
                let sleep = policy.jittered(attempt);
                tracing::debug!(attempt, max, ?sleep, error = %e, "transient storage error; retrying");
                tokio::time::sleep(sleep).await;
                attempt += 1;
            }
            Err(e) => {
                if e.is_retryable() {
                    tracing::warn!(attempts = attempt, error = %e, "storage operation failed after retries");
                }
                return Err(e);
            }
        }
    }
}

/// Convenience for ops that do not care about the attempt number.
pub(crate) async fn retry<T, F, Fut>(policy: &RetryPolicy, mut op: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    with_retry(policy, |_| op()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceiling_doubles_and_caps() {
        let p = RetryPolicy::default();
        assert_eq!(p.backoff_ceiling(1), Duration::from_millis(50));
        assert_eq!(p.backoff_ceiling(2), Duration::from_millis(100));
        assert_eq!(p.backoff_ceiling(6), Duration::from_millis(1600));
        assert_eq!(p.backoff_ceiling(7), Duration::from_secs(2));
        assert_eq!(p.backoff_ceiling(100), Duration::from_secs(2));
    }
}
