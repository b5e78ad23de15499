//! Seeds for randomized tests: every randomized test prints its seed and honours `SEED=`.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The seed for a randomized test: `$SEED` (decimal, or hex with `0x`) if set, else random.
/// Always printed as `SEED=<n>` on stderr so a failure can be replayed with `SEED=<n>`.
///
/// # Panics
/// If `$SEED` is set but is not a number.
pub fn seed() -> u64 {
    let seed = match std::env::var("SEED") {
        Ok(s) if !s.trim().is_empty() => {
            parse_seed(s.trim()).unwrap_or_else(|| panic!("SEED={s:?} is not a u64 (decimal or 0x-hex)"))
        }
        _ => random_u64(),
    };
    eprintln!("SEED={seed}");
    seed
}

fn parse_seed(s: &str) -> Option<u64> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

/// A non-reproducible random `u64` (for names, not for test data: use [`seed`] for that).
pub fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    // RandomState is seeded from the OS per process; the counter and clock make
    // successive calls in one process differ.
    let mut h = RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u128(SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or_default());
    h.write_u32(std::process::id());
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_decimal_and_hex() {
        assert_eq!(parse_seed("42"), Some(42));
        assert_eq!(parse_seed("0x2a"), Some(42));
        assert_eq!(parse_seed("nope"), None);
        assert_ne!(random_u64(), random_u64());
    }
}
