//! `FaultyStore`: an `ObjectStore` wrapper that injects seeded faults and counts requests.
//!
//! Every decision comes from one seeded RNG, so a failing run replays with the same seed (use
//! [`seed_from_env`] to honour `SEED=`). Concurrency can still reorder which request draws
//! which number; tests that need exact replay should issue requests sequentially.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use object_store::ObjectStore;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// Kinds of request, as counted and targeted by [`FaultyStore`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OpKind {
    /// Whole-object GET.
    Get,
    /// Ranged GET (including `get_ranges`, counted once per call).
    GetRange,
    /// HEAD (a `get_opts` with `head: true`).
    Head,
    /// PUT, including every multipart request: initiation, each part, completion and abort.
    Put,
    /// LIST (any flavour).
    List,
    /// DELETE, one per location.
    Delete,
    /// Copy or rename.
    Copy,
}

const KINDS: [OpKind; 7] =
    [OpKind::Get, OpKind::GetRange, OpKind::Head, OpKind::Put, OpKind::List, OpKind::Delete, OpKind::Copy];

/// What an injected failure looks like to the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// A connection failure before the request reaches the store (retryable).
    Transient,
    /// The request takes effect but its response is lost (retryable; tests idempotence).
    LostResponse,
    /// 403.
    PermissionDenied,
    /// 412.
    Precondition,
    /// 404.
    NotFound,
}

/// The error source carried by injected failures.
#[derive(Debug, thiserror::Error)]
#[error("injected {fault:?} fault on {kind:?} {path}")]
pub struct InjectedFault {
    /// Request kind.
    pub kind: OpKind,
    /// Fault injected.
    pub fault: Fault,
    /// Object key.
    pub path: String,
}

/// Random fault knobs; all off by default.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FaultConfig {
    /// Probability that any request fails with [`Fault::Transient`].
    pub transient_failure_rate: f64,
    /// Delay added to every request.
    pub latency: Duration,
    /// Probability of an extra `latency_spike` on a request.
    pub latency_spike_rate: f64,
    /// Size of a latency spike.
    pub latency_spike: Duration,
    /// Flip one byte in every GET / GET-range body.
    pub corrupt_reads: bool,
    /// Probability that a GET body stops halfway with a transient error.
    pub truncate_reads_rate: f64,
}

/// Requests seen by a [`FaultyStore`], by kind (failed ones included).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RequestCounts {
    /// Whole-object GETs.
    pub get: u64,
    /// Ranged GETs.
    pub get_range: u64,
    /// HEADs.
    pub head: u64,
    /// PUTs.
    pub put: u64,
    /// LISTs.
    pub list: u64,
    /// DELETEs.
    pub delete: u64,
    /// Copies and renames.
    pub copy: u64,
}

impl RequestCounts {
    /// Sum over all kinds.
    pub fn total(&self) -> u64 {
        self.get + self.get_range + self.head + self.put + self.list + self.delete + self.copy
    }
}

struct State {
    rng: StdRng,
    config: FaultConfig,
    seen: HashMap<OpKind, u64>,
    /// (kind, absolute ordinal to fail, fault)
    nth: Vec<(OpKind, u64, Fault)>,
}

struct Shared {
    seed: u64,
    state: Mutex<State>,
    counts: [AtomicU64; KINDS.len()],
}

/// Per-request decision, drawn under the lock and acted on after it is released.
struct Plan {
    fault: Option<Fault>,
    delay: Duration,
    corrupt: Option<u64>,
    truncate: bool,
}

/// An `ObjectStore` that forwards to `T`, injecting faults. Clones share state and counters.
pub struct FaultyStore<T: ObjectStore> {
    inner: Arc<T>,
    shared: Arc<Shared>,
}

impl<T: ObjectStore> Clone for FaultyStore<T> {
    fn clone(&self) -> Self {
        Self { inner: Arc::clone(&self.inner), shared: Arc::clone(&self.shared) }
    }
}

// Not derived: `T`'s Debug could include store configuration.
impl<T: ObjectStore> fmt::Debug for FaultyStore<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultyStore({}, seed={})", self.inner, self.shared.seed)
    }
}

impl<T: ObjectStore> fmt::Display for FaultyStore<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultyStore({})", self.inner)
    }
}

/// Reads `SEED` from the environment (else `default`) and prints it, so a failing random test
/// can be replayed with `SEED=<n> cargo test ...`.
pub fn seed_from_env(default: u64) -> u64 {
    let seed = std::env::var("SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(default);
    println!("FaultyStore seed: SEED={seed}");
    seed
}

impl<T: ObjectStore> FaultyStore<T> {
    /// Wraps `inner` with no faults enabled; `seed` drives every random decision.
    pub fn new(inner: T, seed: u64) -> Self {
        let state = State {
            rng: StdRng::seed_from_u64(seed),
            config: FaultConfig::default(),
            seen: HashMap::new(),
            nth: Vec::new(),
        };
        let shared = Shared { seed, state: Mutex::new(state), counts: Default::default() };
        Self { inner: Arc::new(inner), shared: Arc::new(shared) }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock only happens in a failing test; keep going.
        self.shared.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The seed in use.
    pub fn seed(&self) -> u64 {
        self.shared.seed
    }

    /// The wrapped store.
    pub fn inner(&self) -> &T {
        &self.inner
    }

    /// Replaces all random knobs.
    pub fn set_config(&self, config: FaultConfig) {
        self.state().config = config;
    }

    /// Current random knobs.
    pub fn config(&self) -> FaultConfig {
        self.state().config.clone()
    }

    /// Probability that a request fails transiently.
    pub fn set_transient_failure_rate(&self, p: f64) {
        self.state().config.transient_failure_rate = p;
    }

    /// Fixed latency plus random spikes.
    pub fn set_latency(&self, latency: Duration, spike_rate: f64, spike: Duration) {
        let cfg = &mut self.state().config;
        (cfg.latency, cfg.latency_spike_rate, cfg.latency_spike) = (latency, spike_rate, spike);
    }

    /// Flip a byte in every GET body.
    pub fn set_corrupt_reads(&self, on: bool) {
        self.state().config.corrupt_reads = on;
    }

    /// Fail the `n`-th (1-based) request of `kind` counted from now with `fault`.
    pub fn fail_nth(&self, kind: OpKind, n: u64, fault: Fault) {
        let mut st = self.state();
        let target = st.seen.get(&kind).copied().unwrap_or(0) + n.max(1);
        st.nth.push((kind, target, fault));
    }

    /// Requests seen so far.
    pub fn counts(&self) -> RequestCounts {
        let c = |k: OpKind| self.counter(k).load(Ordering::Relaxed);
        RequestCounts {
            get: c(OpKind::Get),
            get_range: c(OpKind::GetRange),
            head: c(OpKind::Head),
            put: c(OpKind::Put),
            list: c(OpKind::List),
            delete: c(OpKind::Delete),
            copy: c(OpKind::Copy),
        }
    }

    /// Zeroes the request counters (pending `fail_nth` rules are kept).
    pub fn reset_counts(&self) {
        self.shared.counts.iter().for_each(|c| c.store(0, Ordering::Relaxed));
    }

    fn counter(&self, kind: OpKind) -> &AtomicU64 {
        let idx = KINDS.iter().position(|k| *k == kind).expect("BUG: OpKind missing from KINDS");
        &self.shared.counts[idx]
    }

    fn plan(&self, kind: OpKind) -> Plan {
        self.counter(kind).fetch_add(1, Ordering::Relaxed);
        let mut st = self.state();
        let ordinal = {
            let seen = st.seen.entry(kind).or_insert(0);
            *seen += 1;
            *seen
        };
        let mut fault = None;
        if let Some(i) = st.nth.iter().position(|(k, n, _)| *k == kind && *n == ordinal) {
            fault = Some(st.nth.remove(i).2);
        }
        let cfg = st.config.clone();
        if fault.is_none()
            && cfg.transient_failure_rate > 0.0
            && st.rng.random_bool(cfg.transient_failure_rate.min(1.0))
        {
            fault = Some(Fault::Transient);
        }
        let mut delay = cfg.latency;
        if cfg.latency_spike_rate > 0.0 && st.rng.random_bool(cfg.latency_spike_rate.min(1.0)) {
            delay += cfg.latency_spike;
        }
        let reads = matches!(kind, OpKind::Get | OpKind::GetRange);
        let corrupt = (reads && cfg.corrupt_reads).then(|| st.rng.random::<u64>());
        let truncate = reads && cfg.truncate_reads_rate > 0.0 && st.rng.random_bool(cfg.truncate_reads_rate.min(1.0));
        Plan { fault, delay, corrupt, truncate }
    }
}

mod store;
