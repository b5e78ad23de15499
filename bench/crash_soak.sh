#!/usr/bin/env bash
# The long crash run: the suite's kill -9 test (crates/sluice-cli/tests/replicate_crash.rs)
# with many more cycles. Every few cycles the replica is restored and must be a consistent
# prefix of the committed history (bank invariant, no holes in the history sequence).
#
#   bench/crash_soak.sh [CYCLES]     (default 500)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export SLUICE_CRASH_CYCLES="${1:-500}"
exec "$ROOT/scripts/test" -p sluice-cli --test replicate_crash crash_loop_file_replica -- --nocapture
