#!/usr/bin/env bash
# The long crash run: the suite's kill -9 test (crates/sluice-cli/tests/replicate_crash.rs)
# with many more cycles. Every few cycles the replica is restored and must be a consistent
# prefix of the committed history (bank invariant, no holes in the history sequence).
# Every 25 cycles a new database starts with SQLite settings drawn from SEED + 9 x segment
# (page size, auto_vacuum, synchronous, wal_autocheckpoint, journal_size_limit), so 200 cycles
# cover all eight page sizes and all three auto_vacuum modes. SEED=<n> replays a run.
#
#   bench/crash_soak.sh [CYCLES]     (default 500)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export SLUICE_CRASH_CYCLES="${1:-500}"
exec "$ROOT/scripts/test" -p sluice-cli --test replicate_crash crash_loop_file_replica -- --nocapture
